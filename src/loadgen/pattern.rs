//! The bytes each connection sends, and the check of what comes back.
//!
//! Every connection sends an endless byte *stream*; its byte at stream offset `i` is
//! `TABLE[(base + i) % PERIOD]`, where `TABLE` is one shared table of pseudo-random bytes and
//! `base` depends on the connection number. So:
//!
//! - sending never builds a message: a send points straight into the table (which is `'static`
//!   and never written after it is built, so it outlives any operation the kernel holds);
//! - checking an echo is a `memcmp` against the table at the stream offset the bytes should
//!   have, so verification costs about as much as reading the bytes once;
//! - a server that reorders, drops, duplicates or cross-wires bytes is caught, because the same
//!   bytes at a different offset (or from another connection's stream) differ from the table
//!   unless the offsets agree modulo `PERIOD`, a prime, which no message size is a multiple of
//!   in practice.
//!
//! The table holds the period and [`MAX_SPAN`] bytes more, so any run of up to `MAX_SPAN`
//! stream bytes is one contiguous slice whatever its starting point: a send of a whole 64 KiB
//! window is one send, not 65,521 bytes and then a 15-byte tail (which every server would have
//! to receive and echo as a segment of its own).

use std::sync::OnceLock;

/// Length of the repeating pattern: the largest prime below 2^16.
pub const PERIOD: usize = 65521;

/// The longest run of stream bytes one slice holds (and so the most one send hands over).
pub const MAX_SPAN: usize = 1 << 16;

static TABLE: OnceLock<Box<[u8]>> = OnceLock::new();

/// The shared table, built on first use: `PERIOD + MAX_SPAN` bytes, byte `i` equal to byte
/// `i % PERIOD`.
fn table() -> &'static [u8] {
    TABLE.get_or_init(|| {
        // xorshift64*: deterministic, so every run (and every client machine) sends the same
        // streams, and a captured failure can be reproduced.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut t = vec![0u8; PERIOD + MAX_SPAN];
        for b in t.iter_mut().take(PERIOD) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            *b = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
        for i in PERIOD..t.len() {
            t[i] = t[i - PERIOD];
        }
        t.into_boxed_slice()
    })
}

/// Where connection `conn`'s stream starts in the table. Consecutive connections start far
/// apart (a multiplier coprime with the prime period), so no two connections below `PERIOD`
/// share a stream.
pub fn stream_base(conn: u64) -> u32 {
    ((conn % PERIOD as u64) * 40_503 % PERIOD as u64) as u32
}

/// Stream byte `offset` of the stream starting at `base`.
pub fn byte_at(base: u32, offset: u64) -> u8 {
    table()[((u64::from(base) + offset) % PERIOD as u64) as usize]
}

/// The contiguous stream bytes `offset..offset + len` of the stream starting at `base`, where
/// `len` is cut to at most [`MAX_SPAN`]. The slice is `'static`: the kernel may read it for as long
/// as it likes.
pub fn span(base: u32, offset: u64, len: u64) -> &'static [u8] {
    let start = ((u64::from(base) + offset) % PERIOD as u64) as usize;
    let len = len.min(MAX_SPAN as u64) as usize;
    &table()[start..start + len]
}

/// The first byte that differs from the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Stream offset of the byte.
    pub offset: u64,
    /// What the stream has there.
    pub expected: u8,
    /// What arrived.
    pub got: u8,
}

/// Checks that `data` equals the stream starting at `base`, from stream offset `offset` on.
pub fn check(base: u32, offset: u64, data: &[u8]) -> Result<(), Mismatch> {
    let mut at = offset;
    for chunk in data.chunks(MAX_SPAN) {
        let want = span(base, at, chunk.len() as u64);
        // The equal case is the hot one: one memcmp. Only a failure pays for the byte search.
        if chunk != want {
            let i = chunk
                .iter()
                .zip(want)
                .position(|(g, w)| g != w)
                .unwrap_or(0);
            return Err(Mismatch {
                offset: at + i as u64,
                expected: want[i],
                got: chunk[i],
            });
        }
        at += chunk.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_matches_byte_at_across_the_period_boundary() {
        let base = stream_base(3);
        let off = PERIOD as u64 - 10 - u64::from(base);
        let s = span(base, off, 50);
        assert_eq!(s.len(), 50);
        for (i, &b) in s.iter().enumerate() {
            assert_eq!(b, byte_at(base, off + i as u64));
        }
        assert_eq!(span(base, 0, 1 << 20).len(), MAX_SPAN, "cut to MAX_SPAN");
        // A whole 64 KiB window from the worst starting point (the last byte of the period)
        // is one slice, wrapping the period once.
        let off = PERIOD as u64 - 1 - u64::from(base);
        let s = span(base, off, MAX_SPAN as u64);
        assert_eq!(s.len(), MAX_SPAN);
        for (i, &b) in s.iter().enumerate() {
            assert_eq!(b, byte_at(base, off + i as u64), "byte {i}");
        }
    }

    #[test]
    fn check_accepts_the_stream_and_names_the_first_bad_byte() {
        let base = stream_base(7);
        let good: Vec<u8> = (0..200_000u64).map(|i| byte_at(base, 1000 + i)).collect();
        assert_eq!(check(base, 1000, &good), Ok(()));
        let mut bad = good.clone();
        bad[150_000] ^= 0x01;
        assert_eq!(
            check(base, 1000, &bad),
            Err(Mismatch {
                offset: 151_000,
                expected: good[150_000],
                got: good[150_000] ^ 0x01
            })
        );
    }

    #[test]
    fn reordered_or_foreign_bytes_fail() {
        let base = stream_base(1);
        let first: Vec<u8> = (0..128).map(|i| byte_at(base, i)).collect();
        let second: Vec<u8> = (128..256).map(|i| byte_at(base, i)).collect();
        assert!(
            check(base, 0, &second).is_err(),
            "message 1 where 0 belongs"
        );
        assert!(
            check(base, 128, &first).is_err(),
            "message 0 where 1 belongs"
        );
        assert!(
            check(stream_base(2), 0, &first).is_err(),
            "connection 1's bytes on connection 2"
        );
    }

    #[test]
    fn bases_are_distinct_for_many_connections() {
        let mut seen = std::collections::HashSet::new();
        for c in 0..50_000 {
            assert!(seen.insert(stream_base(c)));
        }
    }
}
