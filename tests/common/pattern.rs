//! Per-connection byte patterns: a connection that receives another connection's bytes (or its
//! own out of order) is caught at the first wrong byte.

use ringecho::loadgen::pattern;

/// The bytes connection `seed` sends: the load generator's stream for connection `seed`
/// (`ringecho::loadgen::pattern`: one shared table of random bytes, a different starting point
/// per connection), so the tests and `ringecho bench` check echoes the same way. Filling and
/// checking are memcpy and memcmp, so verifying every byte costs little even in a debug build.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    base: u32,
}

impl Pattern {
    /// The pattern of connection `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            base: pattern::stream_base(seed),
        }
    }

    /// Up to `pattern::MAX_SPAN` of the bytes at `offset..offset + len`, as one slice.
    fn window(&self, offset: u64, len: usize) -> &'static [u8] {
        pattern::span(self.base, offset, len as u64)
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
                    if p.base != self.base
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
