//! Request/response latency on held connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::Pattern;

/// Round trips of `size` bytes, one in flight per connection, all connections at once, for
/// at least `rounds` rounds and at least `min_time`; returns every round trip's time.
pub fn round_trips(
    conns: &mut [TcpStream],
    size: usize,
    rounds: usize,
    min_time: Duration,
) -> Vec<Duration> {
    let t0 = Instant::now();
    let mut rtts = Vec::with_capacity(conns.len() * rounds);
    let mut buf = vec![0u8; size];
    let mut offsets = vec![0u64; conns.len()];
    let mut round = 0;
    while round < rounds || t0.elapsed() < min_time {
        round += 1;
        let mut sent_at = Vec::with_capacity(conns.len());
        for (i, c) in conns.iter_mut().enumerate() {
            let msg = Pattern::new(i as u64).bytes(offsets[i], size);
            sent_at.push(Instant::now());
            c.write_all(&msg).unwrap();
        }
        let mut got = vec![0usize; conns.len()];
        let mut left = conns.len();
        while left > 0 {
            let mut pfds: Vec<libc::pollfd> = conns
                .iter()
                .map(|c| libc::pollfd {
                    fd: c.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
            // Generous: under heavy packet loss TCP's retransmission back-off alone can take
            // several seconds (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s for five losses in a row).
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 30_000) };
            assert!(n > 0, "held connections stopped answering for 30 s");
            for (i, p) in pfds.iter().enumerate() {
                if p.revents == 0 || got[i] == size {
                    continue;
                }
                let n = conns[i].read(&mut buf[..size - got[i]]).unwrap();
                assert!(n > 0, "held connection {i} closed");
                Pattern::new(i as u64)
                    .check(offsets[i] + got[i] as u64, &buf[..n])
                    .unwrap();
                got[i] += n;
                if got[i] == size {
                    rtts.push(sent_at[i].elapsed());
                    left -= 1;
                }
            }
        }
        for o in &mut offsets {
            *o += size as u64;
        }
    }
    rtts
}

/// The `p` quantile (0..1) of `v` (sorted in place).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}
