//! UDP abuse (issue 9): floods of maximum-size datagrams, of zero-length datagrams, of
//! datagrams larger than a buffer, and a mix, against `--udp` on both backends.
//!
//! UDP may drop under a flood, so "nothing lost" means "nothing unaccounted for": the test runs
//! in a private network namespace, where the kernel's UDP counters (`/proc/net/snmp`) count only
//! this test's datagrams, and checks that every datagram sent by anyone (the clients and the
//! server) was either delivered to a socket or counted by the kernel as dropped. Every echo that
//! arrives must be whole, byte-exact, one the client sent, and not a duplicate; oversized
//! datagrams are counted (`dgram_truncated`) and never echoed short; and once the flood is over
//! the server echoes a paced exchange with no loss at all.

mod common;

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Backend, Pattern, Rng, exclusive, for_each_backend, in_fresh_netns};

/// The kernel's UDP counters for the calling thread's network namespace.
#[derive(Clone, Copy, Debug, Default)]
struct UdpSnmp {
    in_datagrams: u64,
    no_ports: u64,
    in_errors: u64,
    out_datagrams: u64,
    rcvbuf_errors: u64,
    sndbuf_errors: u64,
}

fn udp_snmp() -> UdpSnmp {
    // The namespace this test thread entered, not the process's.
    let udp = ringecho::sys::proc::thread_snmp("Udp");
    assert!(
        !udp.is_empty(),
        "no Udp counters in /proc/thread-self/net/snmp"
    );
    let get = |n: &str| udp.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
    UdpSnmp {
        in_datagrams: get("InDatagrams"),
        no_ports: get("NoPorts"),
        in_errors: get("InErrors"),
        out_datagrams: get("OutDatagrams"),
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
    }
}

/// What one flooding socket sends.
#[derive(Clone, Copy, Debug)]
enum Mix {
    MaxSize,
    Empty,
    Oversized,
    /// Anything from 0 to oversized, with the boundaries (max, max + 1) often.
    Mixed,
}

/// A datagram's bytes: an 8-byte sequence number, then the socket's pattern from `seq * 8`.
fn datagram(pat: &Pattern, seq: u64, len: usize) -> Vec<u8> {
    let mut d = pat.bytes(seq * 8, len);
    if len >= 8 {
        d[..8].copy_from_slice(&seq.to_le_bytes());
    }
    d
}

/// What one flooding socket saw.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    sent_oversized: u64,
    sent_empty: u64,
    echoed: u64,
    echoed_empty: u64,
}

/// Sends `count` datagrams of `mix` as fast as the socket takes them, reading echoes in
/// between and checking each; then reads stragglers for `linger`.
fn flood(sock: &UdpSocket, id: u64, mix: Mix, max: usize, count: u64, linger: Duration) -> Tally {
    let pat = Pattern::new(id);
    let mut rng = Rng::new(id ^ 0xf100d);
    let mut t = Tally::default();
    let mut seen = HashSet::new();
    let mut sizes = Vec::with_capacity(count as usize);
    let mut buf = vec![0u8; 65536];
    let mut quiet_until: Option<Instant> = None;
    loop {
        // Send a burst while the socket takes it.
        let mut burst = 0;
        while t.sent < count && burst < 64 {
            let len = match mix {
                Mix::MaxSize => max,
                Mix::Empty => 0,
                Mix::Oversized => rng.range(max as u64 + 1, 65507) as usize,
                Mix::Mixed => match rng.range(0, 5) {
                    0 => 0,
                    1 => max,
                    2 => max + 1,
                    3 => rng.range(max as u64 + 1, 65507) as usize,
                    _ => rng.range(8, max as u64) as usize,
                },
            };
            let d = datagram(&pat, t.sent, len);
            match sock.send(&d) {
                Ok(_) => {
                    sizes.push(len as u32);
                    t.sent += 1;
                    burst += 1;
                    if len > max {
                        t.sent_oversized += 1;
                    }
                    if len == 0 {
                        t.sent_empty += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error from an earlier datagram may surface here; not ours to judge.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("socket {id}: send: {e}"),
            }
        }
        // Read every echo that is there.
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    t.echoed += 1;
                    if n == 0 {
                        t.echoed_empty += 1;
                        continue;
                    }
                    assert!(
                        n <= max,
                        "socket {id}: echo of {n} B, over the {max} B limit"
                    );
                    assert!(
                        n >= 8,
                        "socket {id}: a {n}-byte echo; every datagram sent is 0 or >= 8"
                    );
                    let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                    assert!(
                        seq < t.sent,
                        "socket {id}: echo of datagram {seq}, never sent"
                    );
                    assert_eq!(
                        sizes[seq as usize] as usize, n,
                        "socket {id}: datagram {seq} echoed with another length"
                    );
                    assert_eq!(
                        &buf[..n],
                        &datagram(&pat, seq, n)[..],
                        "socket {id}: datagram {seq} echoed with other bytes"
                    );
                    assert!(seen.insert(seq), "socket {id}: datagram {seq} echoed twice");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("socket {id}: recv: {e}"),
            }
        }
        if t.sent == count {
            let until = *quiet_until.get_or_insert_with(|| Instant::now() + linger);
            if Instant::now() >= until {
                return t;
            }
        }
        let mut p = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN | if t.sent < count { libc::POLLOUT } else { 0 },
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, 10) };
    }
}

/// Mixed sizes (never over the limit) one at a time, each waited for: nothing may be lost.
fn paced(sock: &UdpSocket, id: u64, max: usize, count: u64) {
    let pat = Pattern::new(id);
    let mut rng = Rng::new(id);
    let mut buf = vec![0u8; 65536];
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for seq in 0..count {
        let len = rng.range(8, max as u64) as usize;
        let d = datagram(&pat, seq, len);
        sock.send(&d).unwrap();
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("paced datagram {seq} lost: {e}"));
        assert_eq!(&buf[..n], &d[..], "paced datagram {seq}");
    }
}

fn client(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(server).unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

fn udp_abuse(b: Backend, per_socket: u64) {
    let _g = exclusive();
    in_fresh_netns(|isolated| {
        let mut server = b.start(&["--udp", "--buf-size", "4096"]);
        let max = ringecho::backend::udp_max_payload(4096) as usize;
        let rss0 = server.rss_kib();
        let snmp0 = udp_snmp();
        let mixes = [Mix::MaxSize, Mix::Empty, Mix::Oversized, Mix::Mixed];
        let socks: Vec<UdpSocket> = mixes.iter().map(|_| client(server.addr)).collect();
        let t0 = Instant::now();
        let tallies: Vec<Tally> = std::thread::scope(|sc| {
            let hs: Vec<_> = mixes
                .iter()
                .zip(&socks)
                .enumerate()
                .map(|(i, (&mix, sock))| {
                    sc.spawn(move || {
                        flood(
                            sock,
                            i as u64,
                            mix,
                            max,
                            per_socket,
                            Duration::from_millis(500),
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let secs = t0.elapsed().as_secs_f64();
        let rss1 = server.rss_kib();
        // After the flood the server still echoes everything.
        paced(&socks[3], 100, max, 200);
        // The server reads its socket in order, so by now every flood echo has been sent:
        // read the last stragglers, so the kernel's counts are complete.
        let mut late = 0u64;
        let mut buf = vec![0u8; 65536];
        for s in &socks[..3] {
            while let Ok(n) = s.recv(&mut buf) {
                assert!(n <= max);
                late += 1;
            }
        }
        let snmp1 = udp_snmp();
        drop(socks);
        let fin = server.stop(libc::SIGTERM).assert_clean();
        let sent: u64 = tallies.iter().map(|t| t.sent).sum::<u64>() + 200;
        let echoed: u64 = tallies.iter().map(|t| t.echoed).sum::<u64>() + 200 + late;
        let oversized: u64 = tallies.iter().map(|t| t.sent_oversized).sum();
        let d = |f: fn(&UdpSnmp) -> u64| f(&snmp1) - f(&snmp0);
        for (m, t) in mixes.iter().zip(&tallies) {
            eprintln!("[{}] {m:?}: {t:?}", b.name);
        }
        eprintln!(
            "[{}] UDP flood: {sent} datagrams sent in {secs:.2} s ({oversized} oversized), \
             {echoed} echoes back ({late} late); server: received {} (truncated {}, dropped for budget {}), \
             sent {}; kernel (isolated: {isolated}): delivered {} rcvbuf drops {} in_errors {} \
             no_ports {} out {} sndbuf errors {}; server RSS {rss0} -> {rss1} KiB",
            b.name,
            fin.recv_cqes,
            fin.dgram_truncated,
            fin.dgram_dropped,
            fin.sends,
            d(|s| s.in_datagrams),
            d(|s| s.rcvbuf_errors),
            d(|s| s.in_errors),
            d(|s| s.no_ports),
            d(|s| s.out_datagrams),
            d(|s| s.sndbuf_errors),
        );
        // The server echoes what it kept, never a truncated datagram.
        assert!(
            fin.dgram_truncated > 0,
            "oversized datagrams reached the server: {fin}"
        );
        assert!(
            fin.dgram_truncated <= oversized,
            "only oversized datagrams count as truncated: {fin}"
        );
        assert_eq!(
            fin.sends + fin.dgram_truncated + fin.dgram_dropped + fin.conn_errors,
            fin.recv_cqes,
            "every datagram the server received was echoed or counted: {fin}"
        );
        assert!(echoed <= fin.sends);
        assert!(fin.recv_cqes <= sent);
        if isolated {
            // Everything anyone sent was delivered to a socket or counted dropped by the kernel.
            assert_eq!(
                d(|s| s.out_datagrams),
                sent + fin.sends,
                "kernel saw every send"
            );
            assert_eq!(
                d(|s| s.in_datagrams) + d(|s| s.in_errors) + d(|s| s.no_ports),
                sent + fin.sends,
                "datagrams unaccounted for"
            );
            assert_eq!(
                d(|s| s.in_datagrams),
                fin.recv_cqes + echoed,
                "delivered = received by the server + echoes read by the clients"
            );
        }
        assert!(rss1 < rss0 + 32 * 1024, "RSS {rss0} -> {rss1} KiB");
    });
}

#[test]
fn udp_floods_of_max_empty_and_oversized_datagrams_lose_nothing_unaccounted() {
    for_each_backend(|b| udp_abuse(b, 20_000));
}

#[test]
#[ignore = "torture: make torture"]
fn torture_udp_floods() {
    for_each_backend(|b| udp_abuse(b, 500_000));
}
