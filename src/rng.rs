//! SplitMix64, the one pseudo-random generator of ringecho's tests: the unit tests (through the
//! protocol testkit) and the integration tests in `tests/` draw from it.
//!
//! Deterministic on purpose: a failing test prints its seed, and the same seed replays the same
//! case. Tests rely on that, so the sequence a seed gives must never change. Not for anything
//! that needs unpredictability.

/// SplitMix64: tiny, deterministic, good enough to pick splits, sizes and garbage bytes.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A size in `0..=max` biased to the small end and to powers of two and their neighbours,
    /// where length-handling bugs live.
    pub fn size(&mut self, max: usize) -> usize {
        match self.below(4) {
            0 => self.below(4.min(max + 1)),
            1 => {
                let p = 1usize << self.below(usize::BITS as usize - 1);
                (p.saturating_add(self.below(3)).saturating_sub(1)).min(max)
            }
            _ => self.below(max + 1),
        }
    }

    /// Cuts `len` bytes into random pieces: many tiny ones, some large.
    pub fn splits(&mut self, len: usize) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < len {
            let max = match self.below(4) {
                0 => 1,
                1 => 8,
                2 => 64,
                _ => 4096,
            };
            let n = (1 + self.below(max)).min(len - at);
            out.push(at..at + n);
            at += n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    /// The published SplitMix64 reference sequence for seed 0 (Vigna's `splitmix64.c`): tests
    /// that replay a seed depend on exactly these numbers.
    #[test]
    fn matches_the_reference_sequence() {
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn range_and_below_stay_in_bounds() {
        let mut r = SplitMix64::new(7);
        for _ in 0..1000 {
            assert!((3..=9).contains(&r.range(3, 9)));
            assert!(r.below(5) < 5);
            assert!(r.size(100) <= 100);
        }
        let pieces = r.splits(10_000);
        assert_eq!(pieces.first().map(|p| p.start), Some(0));
        assert_eq!(pieces.last().map(|p| p.end), Some(10_000));
        assert!(pieces.windows(2).all(|w| w[0].end == w[1].start));
    }
}
