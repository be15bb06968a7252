//! Per-connection byte patterns: a connection that receives another connection's bytes (or its
//! own out of order) is caught at the first wrong byte.

use std::sync::OnceLock;

use super::Rng;

/// Period of every pattern: a prime, so it lines up with no buffer size.
const PERIOD: usize = 65_521;

fn table() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut rng = Rng::new(0x5eed_f00d);
        let mut t: Vec<u8> = (0..PERIOD).map(|_| rng.next_u64() as u8).collect();
        // Stored twice, so any window of up to PERIOD bytes is one contiguous slice.
        t.extend_from_within(..);
        t
    })
}

/// The bytes connection `seed` sends: byte `i` is `table[(i + seed * STRIDE) % PERIOD]`, a
/// random sequence with a different phase per connection. Filling and checking are memcpy and
/// memcmp, so verifying every byte costs little even in a debug build.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    phase: usize,
}

impl Pattern {
    /// The pattern of connection `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            phase: (seed.wrapping_mul(7_919) % PERIOD as u64) as usize,
        }
    }

    fn window(&self, offset: u64, len: usize) -> &'static [u8] {
        let start = ((offset % PERIOD as u64) as usize + self.phase) % PERIOD;
        &table()[start..start + len.min(PERIOD)]
    }

    /// Fills `buf` with the bytes at stream offset `offset`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let w = self.window(offset + done as u64, buf.len() - done);
            buf[done..done + w.len()].copy_from_slice(w);
            done += w.len();
        }
    }

    /// The bytes at `offset..offset + len`.
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(offset, &mut v);
        v
    }

    /// Checks `buf` against the bytes at `offset`; `Err` names the first wrong byte.
    pub fn check(&self, offset: u64, buf: &[u8]) -> Result<(), String> {
        let mut done = 0;
        while done < buf.len() {
            let w = self.window(offset + done as u64, buf.len() - done);
            let got = &buf[done..done + w.len()];
            if got != w {
                let i = got.iter().zip(w).position(|(a, b)| a != b).unwrap();
                let at = offset + (done + i) as u64;
                let mut which = String::new();
                for s in 0..1024u64 {
                    let p = Pattern::new(s);
                    if p.phase != self.phase
                        && got[i..].starts_with(p.window(at, 16.min(got.len() - i)))
                    {
                        which = format!(" (these are the bytes connection pattern {s} has there)");
                        break;
                    }
                }
                return Err(format!(
                    "byte {at} is {:#04x}, expected {:#04x}{which}",
                    got[i], w[i]
                ));
            }
            done += w.len();
        }
        Ok(())
    }
}
