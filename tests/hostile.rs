//! Hostile and broken clients (issue 9): resets in the middle of a large send, short sends
//! forced by a tiny `SO_SNDBUF`, a reader that takes one byte at a time, clients that connect
//! and never send, clients that send and never read, and slowloris crowds against
//! `--idle-timeout`. In every case the well-behaved clients beside them get every byte back, in
//! order, and the server's memory stays bounded.
//!
//! These are the quick versions `cargo test` runs; `make torture` runs longer ones (`#[ignore]`d
//! here, sized by `TORTURE_SCALE`).

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{
    Backend, Flow, FlowSpec, Pattern, Rng, Server, clock_ticks_per_sec, connect_small, drive,
    echo_once, exclusive, for_each_backend, in_fresh_netns, push_until_blocked, raise_nofile_limit,
    set_linger_zero, with_backend,
};

/// `TORTURE_SCALE` (default 1): how much longer and larger the `#[ignore]`d versions run.
fn torture_scale() -> u64 {
    std::env::var("TORTURE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// `n` verified flows of `bytes` each, random write sizes.
fn bystanders(server: &Server, first_id: u64, n: u64, bytes: u64) -> Vec<Flow> {
    (first_id..first_id + n)
        .map(|id| Flow::connect(server.addr, id, FlowSpec::bulk(bytes)).unwrap())
        .collect()
}

/// Milliseconds of CPU the server used while `f` ran, and `f`'s result.
fn server_cpu_ms<T>(server: &Server, f: impl FnOnce() -> T) -> (u64, T) {
    let hz = clock_ticks_per_sec();
    let before = server.cpu_ticks();
    let r = f();
    ((server.cpu_ticks() - before) * 1000 / hz, r)
}

/// Waits (polling `/proc` with a deadline) until the server holds no connection socket.
fn wait_no_server_sockets(server: &Server, limit: Duration) {
    let deadline = Instant::now() + limit;
    while server.server_sockets().open() > 0 {
        assert!(
            Instant::now() < deadline,
            "server-side sockets left: {:?}",
            server.server_sockets()
        );
        std::thread::sleep(Duration::from_millis(20)); // polling /proc with a deadline
    }
}

// ---- resets during large sends -----------------------------------------------------------

/// One client that makes the server owe it a large reply, lets part of it through, then
/// resets. Returns the bytes it read back (all checked).
fn reset_mid_send(server: &Server, seed: u64, rng: &mut Rng) -> u64 {
    let mut s = server.connect();
    s.set_nonblocking(true).unwrap();
    let pat = Pattern::new(seed);
    // Push until the server stops reading (it paused at --max-pending with a send stuck on our
    // full receive buffer).
    let pushed = push_until_blocked(&mut s, &pat, 0, 4 << 20);
    // Let part of the reply through, so the reset lands with a send half done.
    let want = rng.range(1, (pushed / 2).max(1));
    let mut got = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < want && Instant::now() < deadline {
        let n = buf.len().min((want - got) as usize);
        match s.read(&mut buf[..n]) {
            Ok(0) => panic!("EOF from the server before the reset"),
            Ok(n) => {
                pat.check(got, &buf[..n]).unwrap();
                got += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
            }
            Err(e) => panic!("read: {e}"),
        }
    }
    set_linger_zero(&s);
    drop(s);
    got
}

fn resets_during_large_sends(b: Backend, resets: u64, extra: &[&str]) {
    let mut args = vec!["--drain-timeout", "1"];
    args.extend_from_slice(extra);
    let mut server = b.start(&args);
    let rss0 = server.rss_kib();
    let addr = server.addr;
    let mut flows = bystanders(&server, 0, 16, 1 << 20);
    let resetter = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut rng = Rng::new(0x4e5e7);
            (0..resets)
                .map(|i| reset_mid_send(&server, 1000 + i, &mut rng))
                .sum::<u64>()
        });
        drive(&mut flows, Duration::from_secs(60)).expect("bystanders unharmed");
        h.join().unwrap()
    });
    drop(flows);
    let n = 16 + resets;
    let c = server.wait_stats("every connection closed", Duration::from_secs(10), |c| {
        c.closed >= n
    });
    assert_eq!(c.active, 0, "{c}");
    assert_eq!(
        c.bufs_held, 0,
        "buffers of reset connections came back: {c}"
    );
    wait_no_server_sockets(&server, Duration::from_secs(5));
    let mut probe = TcpStream::connect(addr).unwrap();
    assert_eq!(echo_once(&mut probe, b"after").unwrap(), b"after");
    drop(probe);
    let rss1 = server.rss_kib();
    let fin = server.stop(libc::SIGTERM).assert_clean();
    eprintln!(
        "[{}] {resets} resets mid-send {extra:?} ({resetter} bytes read back first, all \
         checked), 16 x 1 MiB bystanders intact; RSS {rss0} -> {rss1} KiB; conn_errors={} \
         short_sends={} stale_cqes={}",
        b.name, fin.conn_errors, fin.short_sends, fin.stale_cqes
    );
    assert!(fin.conn_errors >= 1, "resets are counted: {fin}");
    assert_eq!(fin.accepted, n + 1);
    assert_eq!(fin.stale_cqes, 0);
}

/// Clients reset while the server is in the middle of sending them a large reply; on io_uring
/// both from provided buffers and (with `--buf-budget 0`) from large copied chunks.
#[test]
fn resets_during_large_sends_close_only_those_connections() {
    for_each_backend(|b| {
        resets_during_large_sends(b, 12, &[]);
        if b.name == "uring" {
            resets_during_large_sends(b, 12, &["--buf-budget", "0"]);
            // Zero-copy sends: memory kept until each notification, also when reset mid-send.
            resets_during_large_sends(b, 12, &["--zc-threshold", "1024"]);
        }
    });
}

#[test]
#[ignore = "torture: make torture"]
fn torture_resets_during_large_sends() {
    for_each_backend(|b| {
        resets_during_large_sends(b, 200 * torture_scale(), &[]);
        if b.name == "uring" {
            resets_during_large_sends(b, 200 * torture_scale(), &["--buf-budget", "0"]);
            // The 5.19 path: single-shot receives.
            resets_during_large_sends(b, 200 * torture_scale(), &["--no-multishot-recv"]);
        }
    });
}

// ---- short sends ---------------------------------------------------------------------------

fn tiny_sndbuf(b: Backend, flows: u64, bytes: u64, extra: &[&str]) -> u64 {
    let mut args = vec!["--sndbuf", "4096"];
    args.extend_from_slice(extra);
    let mut server = b.start(&args);
    let mut f = bystanders(&server, 0, flows, bytes);
    drive(&mut f, Duration::from_secs(120)).expect("every byte back in order");
    drop(f);
    server.wait_stats("all closed", Duration::from_secs(10), |c| c.closed >= flows);
    let fin = server.stop(libc::SIGTERM).assert_clean();
    eprintln!(
        "[{}] --sndbuf 4096 {extra:?}: {flows} x {bytes} B echoed intact; sends={} \
         short_sends={} ({:.1}%)",
        b.name,
        fin.sends,
        fin.short_sends,
        fin.short_sends as f64 * 100.0 / fin.sends.max(1) as f64
    );
    assert_eq!(fin.bytes_out, flows * bytes);
    assert_eq!((fin.active, fin.bufs_held, fin.conn_errors), (0, 0, 0));
    fin.short_sends
}

/// A send into a socket buffer of 8 KiB comes back short all the time, on both backends, and
/// the rest goes out from where it stopped. On io_uring a connection's send covers everything
/// it owes (many provided buffers, or large copied chunks with `--buf-budget 0`), so it is
/// usually larger than the socket takes at once.
fn tiny_sndbuf_both_ways(b: Backend, flows: u64, bytes: u64) {
    let variants: &[&[&str]] = if b.name == "uring" {
        &[&[], &["--buf-budget", "0"]]
    } else {
        &[&[]]
    };
    for extra in variants {
        let short = tiny_sndbuf(b, flows, bytes, extra);
        assert!(
            short > 0,
            "{extra:?}: a 4 KiB send buffer forced no short send"
        );
    }
}

/// `--sndbuf 4096` (the kernel doubles it to 8 KiB, and turns off autotuning): sends come back
/// short all the time, and each is resubmitted from where it stopped.
#[test]
fn tiny_send_buffer_forces_short_sends_and_keeps_order() {
    for_each_backend(|b| tiny_sndbuf_both_ways(b, 24, 1 << 20));
}

#[test]
#[ignore = "torture: make torture"]
fn torture_tiny_send_buffer() {
    for_each_backend(|b| tiny_sndbuf_both_ways(b, 200, (4 << 20) * torture_scale().min(4)));
}

// ---- a reader that takes one byte at a time ------------------------------------------------

/// A client with tiny buffers makes the server owe it `owed` bytes, then reads one byte every
/// `every` for `dur` while 8 bystanders run; then reads the rest at once, checking every byte.
fn trickle_reader(b: Backend, every: Duration, dur: Duration) {
    let _g = exclusive();
    let mut server = b.start(&[]);
    let mut s = connect_small(server.addr, 4096, 536);
    s.set_nonblocking(true).unwrap();
    let pat = Pattern::new(77);
    // Make the server owe us as much as it will hold for us, and get stuck sending it.
    let mut pushed = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet_since = Instant::now();
    loop {
        let n = push_until_blocked(&mut s, &pat, pushed, 1 << 20);
        pushed += n;
        if n > 0 {
            quiet_since = Instant::now();
        }
        if quiet_since.elapsed() > Duration::from_millis(300) {
            break;
        }
        assert!(Instant::now() < deadline, "never got stuck");
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, 100) };
    }
    let stuck = server.next_stats();
    let mut flows = bystanders(&server, 0, 8, 512 << 10);
    let mut got = 0u64;
    let mut one = [0u8; 1];
    let t0 = Instant::now();
    // Once the bystanders are done, the trickle is all the server has to do: its CPU and loop
    // turns from then on show whether it waits for the reader or polls it.
    let mut alone: Option<(Instant, u64, u64)> = None;
    std::thread::scope(|sc| {
        let h = sc.spawn(|| drive(&mut flows, Duration::from_secs(60)));
        let mut next = Instant::now();
        while t0.elapsed() < dur {
            next += every;
            // Pacing the reader is the scenario itself, not synchronisation.
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            match s.read(&mut one) {
                Ok(1) => {
                    pat.check(got, &one).unwrap();
                    got += 1;
                }
                Ok(_) => panic!("EOF while owed bytes"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("trickle read: {e}"),
            }
            if alone.is_none() && h.is_finished() {
                let c = server.next_stats();
                alone = Some((Instant::now(), server.cpu_ticks(), c.enters));
            }
        }
        h.join().unwrap().expect("bystanders unharmed");
    });
    let (since, cpu0, enters0) = alone.expect("the bystanders finished before the trickle did");
    let alone_for = since.elapsed();
    let cpu_ms = (server.cpu_ticks() - cpu0) * 1000 / clock_ticks_per_sec();
    let enters = server.next_stats().enters - enters0;
    let reads = (alone_for.as_secs_f64() / every.as_secs_f64()).ceil() as u64;
    let trickled = got;
    // Now read everything that is still owed, all checked.
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    while got < pushed {
        let n = s.read(&mut buf).expect("the rest of the reply");
        assert!(n > 0, "EOF after {got} of {pushed}");
        pat.check(got, &buf[..n]).unwrap();
        got += n as u64;
    }
    drop(s);
    drop(flows);
    let fin = server.stop(libc::SIGTERM).assert_clean();
    eprintln!(
        "[{}] trickle reader: owed up to {pushed} B (server paused={} bytes_in-out={}), read 1 B \
         every {every:?} for {dur:?} ({trickled} B) beside 8 x 512 KiB bystanders; trickle \
         alone for {alone_for:.1?}: server CPU {cpu_ms} ms, {enters} loop turns for {reads} \
         reads; then the rest: all {pushed} B intact",
        b.name,
        stuck.paused,
        stuck.bytes_in - stuck.bytes_out
    );
    assert!(
        stuck.paused >= 1,
        "the server paused the slow reader: {stuck}"
    );
    assert_eq!(fin.bytes_out, pushed + 8 * (512 << 10));
    assert_eq!((fin.active, fin.bufs_held), (0, 0));
}

/// A peer that reads one byte at a time: its connection is paused, the server does not poll it
/// in a loop, the bystanders are unaffected, and not a byte is lost.
#[test]
fn one_byte_at_a_time_reader_is_paused_not_polled() {
    for_each_backend(|b| trickle_reader(b, Duration::from_millis(20), Duration::from_secs(2)));
}

/// The real thing: one byte per second.
#[test]
#[ignore = "torture: make torture"]
fn torture_one_byte_per_second_reader() {
    for_each_backend(|b| {
        trickle_reader(
            b,
            Duration::from_secs(1),
            Duration::from_secs(30 * torture_scale()),
        )
    });
}

// ---- connect and never send; send and never read; slowloris -------------------------------

/// Polls `streams` until every one has seen EOF or an error; returns when each did, relative
/// to `t0`. Panics after `limit`, or if any is sent data unless `data_ok` (then it is drained).
fn wait_closed(
    streams: &mut [TcpStream],
    t0: Instant,
    limit: Duration,
    data_ok: bool,
) -> Vec<Duration> {
    let mut closed_at: Vec<Option<Duration>> = vec![None; streams.len()];
    let deadline = t0 + limit;
    loop {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&i| closed_at[i].is_none())
            .collect();
        if open.is_empty() {
            return closed_at.into_iter().map(Option::unwrap).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} idle connections still open after {limit:?}",
            open.len(),
            streams.len()
        );
        let mut pfds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| libc::pollfd {
                fd: streams[i].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        let now = t0.elapsed();
        for (p, &i) in pfds.iter().zip(&open) {
            if p.revents == 0 {
                continue;
            }
            let mut buf = [0u8; 16 << 10];
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => closed_at[i] = Some(now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => closed_at[i] = Some(now),
                    Ok(_) if data_ok => continue,
                    Ok(n) => panic!("idle connection {i} was sent {n} bytes"),
                }
                break;
            }
        }
    }
}

/// `n` clients connect and never send, beside one that echoes every 100 ms, against
/// `--idle-timeout idle`: the server holds them at no CPU cost, closes each within the
/// timeout plus one sweep (a quarter of it) plus scheduling slack, spares the busy one, and
/// gives back the memory.
fn slowloris(b: Backend, n: usize, idle: Duration) {
    let _g = exclusive();
    let nofile = raise_nofile_limit();
    if nofile < n as u64 + 200 {
        common::skipped(&format!(
            "slowloris with {n} connections needs RLIMIT_NOFILE >= {}, the hard limit is {nofile}",
            n + 200
        ));
        return;
    }
    in_fresh_netns(|isolated| {
        let idle_s = format!("{}", idle.as_secs_f64());
        let mut server = b.start(&["--idle-timeout", &idle_s]);
        let mut warm = server.connect();
        assert_eq!(echo_once(&mut warm, b"warm").unwrap(), b"warm");
        drop(warm);
        server.wait_stats("warm-up closed", Duration::from_secs(5), |c| c.closed >= 1);
        let rss0 = server.rss_kib();
        let sock0 = server.sockstat();
        let t0 = Instant::now();
        let mut crowd: Vec<TcpStream> = (0..n)
            .map(|i| {
                let s = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let connected = t0.elapsed();
        let held = server.wait_stats("the crowd accepted", Duration::from_secs(10), |c| {
            c.accepted > n as u64
        });
        let rss1 = server.rss_kib();
        let sock1 = server.sockstat();
        // A busy client, echoing every 100 ms (a tenth of the timeout at most), must survive.
        let busy = std::thread::scope(|sc| {
            let busy = sc.spawn(|| {
                let mut s = server.connect();
                let mut rounds = 0;
                while t0.elapsed() < idle * 2 + Duration::from_millis(500) {
                    assert_eq!(echo_once(&mut s, b"alive").unwrap(), b"alive");
                    rounds += 1;
                    std::thread::sleep((idle / 10).min(Duration::from_millis(100))); // pacing
                }
                rounds
            });
            let (cpu_ms, closed_at) = server_cpu_ms(&server, || {
                wait_closed(&mut crowd, t0, idle * 3 + Duration::from_secs(10), false)
            });
            let first = *closed_at.iter().min().unwrap();
            let last = *closed_at.iter().max().unwrap();
            let sweep = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
            eprintln!(
                "[{}] slowloris: {n} silent connections (opened in {connected:?}; server held \
                 {}) with --idle-timeout {idle:?}: closed between {first:?} and {last:?} after \
                 the first connect (sweep {sweep:?}); server CPU {cpu_ms} ms meanwhile; RSS \
                 {rss0} -> {rss1} KiB while held (+{} B per connection); TCP inuse {} -> {}, \
                 mem {} -> {} pages (isolated: {isolated})",
                b.name,
                held.active,
                (rss1 as i64 - rss0 as i64) * 1024 / n as i64,
                sock0.tcp_inuse,
                sock1.tcp_inuse,
                sock0.tcp_mem_pages,
                sock1.tcp_mem_pages,
            );
            // Nobody before the timeout; everybody by the timeout + a sweep + slack for the
            // time it took to connect them all and for a busy machine.
            assert!(
                first + Duration::from_millis(50) >= idle,
                "closed after {first:?}, before the {idle:?} timeout"
            );
            assert!(
                last <= connected + idle + sweep + Duration::from_millis(1500),
                "last closed after {last:?}"
            );
            assert!(
                rss1 - rss0 < 24 * 1024,
                "RSS grew {} KiB for {n} idle connections",
                rss1 - rss0
            );
            busy.join().unwrap()
        });
        assert!(busy >= 5, "the busy client echoed {busy} times");
        let c = server.wait_stats("the busy client closed", Duration::from_secs(5), |c| {
            c.closed >= n as u64 + 2
        });
        assert_eq!(c.idle_closes, n as u64, "only the silent ones: {c}");
        drop(crowd);
        wait_no_server_sockets(&server, Duration::from_secs(10));
        let rss2 = server.rss_kib();
        let fin = server.stop(libc::SIGTERM).assert_clean();
        eprintln!("[{}] slowloris: RSS after all closed {rss2} KiB", b.name);
        assert_eq!((fin.active, fin.bufs_held), (0, 0));
    });
}

#[test]
fn slowloris_crowd_is_closed_on_time_with_bounded_memory() {
    for_each_backend(|b| slowloris(b, 2000, Duration::from_secs(1)));
}

#[test]
#[ignore = "torture: make torture"]
fn torture_slowloris_ten_thousand() {
    for_each_backend(|b| slowloris(b, 10_000, Duration::from_secs(3)));
}

/// Clients that send without ever reading: each is paused at `--max-pending` with the server's
/// memory bounded, and since nothing moves, `--idle-timeout` closes them. Bystanders unharmed.
#[test]
fn send_and_never_read_is_paused_then_timed_out() {
    for_each_backend(|b| {
        let mut server = b.start(&["--idle-timeout", "1"]);
        let rss0 = server.rss_kib();
        let mut hogs: Vec<TcpStream> = (0..20)
            .map(|_| {
                let s = connect_small(server.addr, 16 << 10, 1460);
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let t0 = Instant::now();
        let mut pushed = vec![0u64; hogs.len()];
        let mut flows = bystanders(&server, 0, 8, 1 << 20);
        std::thread::scope(|sc| {
            let h = sc.spawn(|| drive(&mut flows, Duration::from_secs(30)));
            // Keep pushing until the server stops taking (paused), then let it time us out.
            let deadline = Instant::now() + Duration::from_secs(10);
            let stuck = loop {
                let mut moved = 0;
                for (i, s) in hogs.iter_mut().enumerate() {
                    let pat = Pattern::new(500 + i as u64);
                    let n = push_until_blocked(s, &pat, pushed[i], 1 << 22);
                    pushed[i] += n;
                    moved += n;
                }
                let c = server.next_stats();
                if c.paused >= 20 && moved == 0 {
                    break c;
                }
                assert!(Instant::now() < deadline, "hogs never all paused: {c}");
            };
            h.join().unwrap().expect("bystanders unharmed");
            let rss = server.rss_kib();
            eprintln!(
                "[{}] 20 never-reading clients pushed {} B in all; server paused them, owing {} B, \
                 RSS {rss0} -> {rss} KiB",
                b.name,
                pushed.iter().sum::<u64>(),
                stuck.bytes_in - stuck.bytes_out
            );
            assert!(rss - rss0 < 32 * 1024, "RSS grew {} KiB", rss - rss0);
        });
        let closed_at = wait_closed(&mut hogs, t0, Duration::from_secs(15), true);
        let last = *closed_at.iter().max().unwrap();
        let c = server.wait_stats("hogs timed out", Duration::from_secs(5), |c| c.closed >= 28);
        eprintln!(
            "[{}] never-reading clients closed by the idle timeout by {last:?}: {c}",
            b.name
        );
        assert!(c.idle_closes >= 20, "{c}");
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!((fin.active, fin.bufs_held), (0, 0));
    });
}

/// A slowloris that dribbles one byte of an HTTP head every 200 ms, under `--idle-timeout 1`:
/// the idle timeout does not close it (bytes keep moving), so such clients are bounded by
/// `--max-conns` and by the 8 KiB head limit, not by time. The server holds them at a bounded
/// cost and keeps serving others; when they stop dribbling the timeout closes them.
#[test]
fn dribbling_http_heads_are_bounded_by_the_head_limit_not_by_time() {
    for_each_backend(|b| {
        let mut server = b.start(&["--protocol", "http", "--idle-timeout", "1"]);
        let rss0 = server.rss_kib();
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut dribblers: Vec<TcpStream> = (0..100).map(|_| server.connect()).collect();
        let t0 = Instant::now();
        let mut at = 0;
        while t0.elapsed() < Duration::from_secs(2) {
            for s in &mut dribblers {
                s.write_all(&head[at % head.len()..at % head.len() + 1])
                    .unwrap();
            }
            at += 1;
            std::thread::sleep(Duration::from_millis(200)); // the dribble's pace
        }
        let c = server.next_stats();
        assert_eq!(c.idle_closes, 0, "dribblers are not idle: {c}");
        assert_eq!(c.active, 100, "{c}");
        let mut s = server.connect();
        s.write_all(b"GET / HTTP/1.1\r\nHost: y\r\n\r\n").unwrap();
        let mut buf = [0u8; 15];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200 OK");
        drop(s);
        let rss = server.rss_kib();
        // Stop dribbling: now they are idle and get closed.
        let closed = wait_closed(&mut dribblers, Instant::now(), Duration::from_secs(5), true);
        eprintln!(
            "[{}] 100 dribbling HTTP heads held for 2 s (idle_closes=0, RSS {rss0} -> {rss} KiB); \
             closed {:?} after they stopped",
            b.name,
            closed.iter().max().unwrap()
        );
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!(fin.idle_closes, 100);
    });
}

/// SQPOLL with a small submission queue: when the idle timeout closes a crowd at once, the
/// cancellations and closes overflow the queue, and the shard must wait for the kernel's
/// poller to make room, waking it first if it has gone to sleep (it sleeps after
/// `--sqpoll=10` ms without work). A shard that waits without waking it froze until some
/// other client happened to connect.
#[test]
fn sqpoll_with_a_full_submission_queue_wakes_its_poller() {
    with_backend("uring", |b| {
        let mut server = b.start(&["--sqpoll=10", "--sq-entries", "16", "--idle-timeout", "1"]);
        let crowd: Vec<TcpStream> = (0..100).map(|_| server.connect()).collect();
        server.wait_stats("the crowd accepted", Duration::from_secs(10), |c| {
            c.accepted >= 100
        });
        // Nothing else happens now: the poller goes to sleep, and only the timer can close.
        let t0 = Instant::now();
        server.wait_stats("the crowd timed out", Duration::from_secs(10), |c| {
            c.idle_closes >= 100
        });
        eprintln!(
            "100 idle connections closed {:?} after the last accept",
            t0.elapsed()
        );
        drop(crowd);
        server.stop(libc::SIGTERM).assert_clean();
    });
}
