//! Many connections: 10,000 short-lived ones must leak nothing (slots, sockets, buffers,
//! memory), and 10,000 idle ones must cost little memory. Both run in a private network
//! namespace (where the test may make one), so the kernel's socket counts are this test's own.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{
    Pattern, Server, exclusive, for_each_backend, in_fresh_netns, raise_nofile_limit, slab,
};

/// `n` connect / echo 64 bytes / close cycles from `threads` client threads.
fn cycles(addr: SocketAddr, n: u64, threads: u64) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut buf = [0u8; 64];
                for i in (t..n).step_by(threads as usize) {
                    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        .unwrap_or_else(|e| panic!("cycle {i}: connect: {e}"));
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    c.set_nodelay(true).unwrap();
                    let pat = Pattern::new(i);
                    let msg = pat.bytes(0, 64);
                    c.write_all(&msg).unwrap();
                    c.read_exact(&mut buf)
                        .unwrap_or_else(|e| panic!("cycle {i}: echo: {e}"));
                    pat.check(0, &buf)
                        .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
                }
            });
        }
    });
}

/// Polls (with a deadline) until the server holds no connection socket: only its listener.
fn wait_no_server_sockets(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = server.server_sockets();
        if s.open() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "server-side sockets left: {s:?}");
        std::thread::sleep(Duration::from_millis(20)); // polling /proc with a deadline
    }
}

#[test]
fn ten_thousand_short_connections_leak_nothing() {
    /// More cycles than the default --buf-count (1024): each receives into one buffer.
    const WARM_UP: u64 = 5000;
    for_each_backend(|b| {
        let _g = exclusive();
        in_fresh_netns(|isolated| {
            let mut server = b.start(&[]);
            // Warm-up: the slab, the allocator and the kernel's caches reach their working size,
            // and every provided buffer has been received into once. The buffer ring hands
            // buffers out in FIFO order, so RSS climbs by one buffer per receive until the whole
            // ring (1024 x 4 KiB = 4 MiB by default) is resident; that is not a leak.
            cycles(server.addr, WARM_UP, 4);
            server.wait_stats("warm-up closed", Duration::from_secs(10), |c| {
                c.closed >= WARM_UP
            });
            wait_no_server_sockets(&server);
            let rss0 = server.rss_kib();
            let sock0 = server.sockstat();

            let t = Instant::now();
            cycles(server.addr, 10_000, 4);
            let secs = t.elapsed().as_secs_f64();
            let c = server.wait_stats("10,000 cycles closed", Duration::from_secs(10), |c| {
                c.closed >= WARM_UP + 10_000
            });
            assert_eq!(c.active, 0, "a slot leaked: {c}");
            assert_eq!(c.bufs_held, 0, "a provided buffer leaked: {c}");
            wait_no_server_sockets(&server);
            // TIME_WAIT sockets (the clients closed first) are not `inuse`; everything else
            // must be gone. In a private namespace the count is exact.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut sock1 = server.sockstat();
            while isolated && sock1.tcp_inuse > sock0.tcp_inuse && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20)); // polling /proc with a deadline
                sock1 = server.sockstat();
            }
            let rss1 = server.rss_kib();
            eprintln!(
                "10,000 cycles in {secs:.2} s ({:.0}/s); server RSS {rss0} -> {rss1} KiB; TCP \
                 inuse {} -> {} (tw {}, isolated namespace: {isolated})",
                10_000.0 / secs,
                sock0.tcp_inuse,
                sock1.tcp_inuse,
                sock1.tcp_tw
            );
            if isolated {
                assert_eq!(sock1.tcp_inuse, sock0.tcp_inuse, "TCP sockets leaked");
            }
            assert!(
                rss1 <= rss0 + 1024,
                "server RSS grew {} KiB over 10,000 connections",
                rss1 as i64 - rss0 as i64
            );
            let fin = server.stop(libc::SIGTERM).assert_clean();
            let n = WARM_UP + 10_000;
            assert_eq!((fin.accepted, fin.closed, fin.active), (n, n, 0));
            assert_eq!(fin.bytes_out, 64 * n);
            assert_eq!(fin.stale_cqes, 0);
            assert_eq!(fin.conn_errors, 0);
            assert_eq!(fin.accept_errors, 0);
        });
    });
}

/// `Slab:` of `/proc/meminfo` in KiB (whole machine).
fn slab_kib() -> u64 {
    ringecho::sys::proc::meminfo_kib("Slab").unwrap_or(0)
}

#[test]
fn ten_thousand_idle_connections_cost_little_memory() {
    const N: usize = 10_000;
    for_each_backend(|b| {
        let _g = exclusive();
        let nofile = raise_nofile_limit();
        assert!(
            nofile >= N as u64 + 100,
            "RLIMIT_NOFILE hard limit {nofile} is too low for {N} client sockets"
        );
        in_fresh_netns(|isolated| {
            let mut server = b.start(&[]);
            let mut warm = server.connect();
            assert_eq!(common::echo_once(&mut warm, b"warm").unwrap(), b"warm");
            drop(warm);
            server.wait_stats("warm-up closed", Duration::from_secs(5), |c| c.closed >= 1);
            let rss0 = server.rss_kib();
            let sock0 = server.sockstat();
            let slab0 = slab_kib();
            let tcp_slab0 = slab("TCP");

            let t = Instant::now();
            let conns: Vec<TcpStream> = (0..N)
                .map(|i| {
                    TcpStream::connect_timeout(&server.addr, Duration::from_secs(5))
                        .unwrap_or_else(|e| panic!("connection {i}: {e}"))
                })
                .collect();
            let c = server.wait_stats(
                "10,000 connections accepted",
                Duration::from_secs(20),
                |c| c.accepted > N as u64 && c.active == N as u64,
            );
            let secs = t.elapsed().as_secs_f64();
            let rss1 = server.rss_kib();
            let sock1 = server.sockstat();
            let slab1 = slab_kib();
            let tcp_slab1 = slab("TCP");

            // Idle connections are live: a few of them, and a newcomer, still echo.
            for i in [0, N / 2, N - 1] {
                let mut s = conns[i].try_clone().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                assert_eq!(common::echo_once(&mut s, b"ping").unwrap(), b"ping");
            }
            let mut s = server.connect();
            assert_eq!(common::echo_once(&mut s, b"new").unwrap(), b"new");
            drop(s);

            let mib = (rss1 as f64 - rss0 as f64) / 1024.0;
            let tcp_slab = match (tcp_slab0, tcp_slab1) {
                (Some((a, size)), Some((b, _))) => format!(
                    "; TCP slab {} objects x {size} B = {:.1} MiB",
                    b as i64 - a as i64,
                    (b as f64 - a as f64) * size as f64 / 1048576.0
                ),
                _ => String::new(),
            };
            eprintln!(
                "{N} idle connections (opened in {secs:.2} s): server RSS {rss0} -> {rss1} KiB \
                 (+{mib:.1} MiB, {:.0} B per connection); kernel: TCP inuse {} -> {}, TCP mem \
                 {} -> {} pages, machine Slab {slab0} -> {slab1} KiB (+{:.1} MiB for both ends \
                 of {N} connections){tcp_slab}; isolated namespace: {isolated}; {c}",
                (rss1 as f64 - rss0 as f64) * 1024.0 / N as f64,
                sock0.tcp_inuse,
                sock1.tcp_inuse,
                sock0.tcp_mem_pages,
                sock1.tcp_mem_pages,
                (slab1 as f64 - slab0 as f64) / 1024.0,
            );
            if isolated {
                assert!(
                    sock1.tcp_inuse >= sock0.tcp_inuse + 2 * N as u64,
                    "both ends of every connection should be in use"
                );
            }
            assert!(
                mib < 64.0,
                "server RSS grew {mib:.1} MiB for {N} idle connections"
            );

            drop(conns);
            server.wait_stats("all closed", Duration::from_secs(20), |c| {
                c.closed > N as u64 + 1
            });
            wait_no_server_sockets(&server);
            let fin = server.stop(libc::SIGTERM).assert_clean();
            assert_eq!(fin.active, 0);
            assert_eq!(fin.accepted, N as u64 + 2);
            assert_eq!(fin.bufs_held, 0);
        });
    });
}
