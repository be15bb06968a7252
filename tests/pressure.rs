//! Behaviour under pressure: the connection cap, an empty buffer ring, slow readers, and a tiny
//! completion queue. In each, every byte must still come back, in order, to the right peer.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    Flow, FlowSpec, Pattern, Rng, clock_ticks_per_sec, drive, echo_once, exclusive,
    for_each_backend, push_until_blocked, with_backend,
};

/// One client of the connection-cap test: sends a 32-byte greeting at once and waits for it.
struct Waiting {
    stream: TcpStream,
    greeting: Vec<u8>,
    got: Vec<u8>,
    served_at: Option<Instant>,
    closed: bool,
}

impl Waiting {
    fn open_and_served(&self) -> bool {
        self.served_at.is_some() && !self.closed
    }
}

/// Reads what is there for every waiting client (up to `wait`); returns how many became served.
fn poll_greetings(clients: &mut [Waiting], wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    let mut newly = 0;
    loop {
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut idx = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            if c.served_at.is_none() && !c.closed {
                pfds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                idx.push(i);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if pfds.is_empty() || left.is_zero() {
            return newly;
        }
        // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                left.as_millis().max(1) as i32,
            )
        };
        assert!(n >= 0, "poll: {}", io::Error::last_os_error());
        for (p, &i) in pfds.iter().zip(&idx) {
            if p.revents == 0 {
                continue;
            }
            let c = &mut clients[i];
            let mut buf = [0u8; 64];
            match c.stream.read(&mut buf) {
                Ok(0) => panic!("client {i}: EOF before its greeting came back (dropped?)"),
                Ok(n) => c.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client {i}: {e} before its greeting came back (dropped?)"),
            }
            if c.got.len() >= c.greeting.len() {
                assert_eq!(c.got, c.greeting, "client {i} got someone else's bytes");
                c.served_at = Some(Instant::now());
                newly += 1;
            }
        }
    }
}

/// What the connection-cap run saw.
struct CapRun {
    /// Most clients that had their greeting back and were still connected, at any check.
    max_served_at_once: usize,
    /// Most `active` in the server's stats, sampled once per round.
    max_active: u64,
    fin: ringecho::stats::Counters,
}

/// 40 clients connect and send a greeting at once against `--max-conns 16`. Each round waits
/// until the free slots are filled, watches 300 ms more for anyone served beyond the cap, then
/// the longest-served half leave. Ends when all 40 were served.
fn run_connection_cap(b: common::Backend) -> CapRun {
    const CAP: usize = 16;
    const CLIENTS: usize = 40;
    let mut server = b.start(&["--max-conns", "16"]);
    // Every client connects (the kernel completes the handshake into the listen backlog) and
    // sends its greeting before anyone is served.
    let mut clients: Vec<Waiting> = (0..CLIENTS)
        .map(|i| {
            let mut stream = server.connect();
            let greeting = Pattern::new(i as u64).bytes(0, 32);
            stream.write_all(&greeting).unwrap();
            stream.set_nonblocking(true).unwrap();
            Waiting {
                stream,
                greeting,
                got: Vec::new(),
                served_at: None,
                closed: false,
            }
        })
        .collect();

    let mut max_served_at_once = 0;
    let mut max_active = 0;
    let mut rounds = 0;
    while clients.iter().any(|c| c.served_at.is_none()) {
        rounds += 1;
        assert!(rounds < 20, "clients stopped being served");
        let waiting = clients.iter().filter(|c| c.served_at.is_none()).count();
        let open = clients.iter().filter(|c| c.open_and_served()).count();
        let expect = CAP.saturating_sub(open).min(waiting);
        // Wait for the free slots to be filled...
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < expect && Instant::now() < deadline {
            got += poll_greetings(&mut clients, deadline - Instant::now());
        }
        assert!(
            got >= expect,
            "round {rounds}: only {got} of {expect} waiting clients served with {open} open"
        );
        // ...and then a little longer, to see whether anybody beyond the cap is served.
        poll_greetings(&mut clients, Duration::from_millis(300));
        let served = clients.iter().filter(|c| c.open_and_served()).count();
        max_served_at_once = max_served_at_once.max(served);
        // The server's own count, sampled while those clients are still connected.
        max_active = max_active.max(server.next_stats().active);
        // The longest-served half leave; their slots go to clients still waiting.
        let mut by_age: Vec<usize> = (0..CLIENTS)
            .filter(|&i| clients[i].open_and_served())
            .collect();
        by_age.sort_by_key(|&i| clients[i].served_at);
        for &i in by_age.iter().take(CAP / 2) {
            clients[i].closed = true;
            clients[i]
                .stream
                .shutdown(std::net::Shutdown::Both)
                .unwrap();
        }
    }
    drop(clients);
    server.wait_stats("all 40 closed", Duration::from_secs(5), |c| c.closed >= 40);
    let stopped = server.stop(libc::SIGTERM);
    let fin = stopped.assert_clean();
    eprintln!(
        "max-conns {CAP}, {CLIENTS} clients: served at once <= {max_served_at_once}, server \
         active up to {max_active}; {fin}"
    );
    CapRun {
        max_served_at_once,
        max_active,
        fin,
    }
}

/// `--max-conns 16` with 40 clients: every client is served eventually, none is dropped.
#[test]
fn max_conns_16_with_40_clients_serves_every_client_eventually() {
    for_each_backend(|b| {
        let run = run_connection_cap(b);
        assert_eq!(run.fin.accepted, 40, "every client accepted exactly once");
        assert_eq!(
            run.fin.accept_errors, 0,
            "no client dropped by a full file table"
        );
        assert_eq!(run.fin.bytes_out, 32 * 40);
        assert_eq!(run.fin.active, 0);
    });
}

/// `--max-conns 16` with 40 clients: at most 16 are served at once; the rest wait in the listen
/// backlog until a slot frees.
///
/// Ignored: fails on the io_uring backend (24 to 40 served at once across runs, varying with
/// timing; the server's own `active` agrees). A multishot accept, once triggered, accepts every
/// connection queued on the listener in one go inside the kernel (it loops while the accept
/// queue is non-empty), so the server's `AsyncCancel` of the accept, issued when the first
/// completions show the cap reached, lands after the whole backlog is already accepted. Near
/// the cap the server must use single-shot accepts, no more outstanding than free slots (see
/// the test report).
#[test]
fn max_conns_16_serves_at_most_16_at_once() {
    for_each_backend(|b| {
        let run = run_connection_cap(b);
        assert!(
            run.max_served_at_once <= 16,
            "{} clients served at once with --max-conns 16",
            run.max_served_at_once
        );
        assert!(
            run.max_active <= 16,
            "the server held {} connections with --max-conns 16",
            run.max_active
        );
    });
}

/// `--max-conns 16` and a burst of 200 clients: each is served in turn (served clients leave
/// at once); none may be reset unserved.
///
/// Ignored: fails on the io_uring backend (2 of 200 clients reset, `accept_errors=2`). Past the
/// cap, the multishot accept keeps taking the backlog until the registered file table (16 + 64
/// slots) is full; the next connection is already accepted by then, so the kernel closes it and
/// ends the accept with `-ENFILE`: that client gets ECONNRESET without ever being served. Same
/// root cause as `max_conns_16_serves_at_most_16_at_once`.
#[test]
fn max_conns_burst_of_200_resets_nobody() {
    const CLIENTS: usize = 200;
    for_each_backend(|b| {
        let mut server = b.start(&["--max-conns", "16"]);
        let mut clients: Vec<Option<TcpStream>> = (0..CLIENTS)
            .map(|i| {
                let mut s = server.connect();
                s.write_all(&Pattern::new(i as u64).bytes(0, 8)).unwrap();
                s.set_nonblocking(true).unwrap();
                Some(s)
            })
            .collect();
        let mut served = 0;
        let mut reset = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while served + reset.len() < CLIENTS {
            assert!(
                Instant::now() < deadline,
                "{served} served, {reset:?} reset"
            );
            let open: Vec<usize> = (0..CLIENTS).filter(|&i| clients[i].is_some()).collect();
            let mut pfds: Vec<libc::pollfd> = open
                .iter()
                .map(|&i| libc::pollfd {
                    fd: clients[i].as_ref().unwrap().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
            for (p, &i) in pfds.iter().zip(&open) {
                if p.revents == 0 {
                    continue;
                }
                let mut buf = [0u8; 8];
                match clients[i].as_mut().unwrap().read(&mut buf) {
                    Ok(8) => {
                        Pattern::new(i as u64).check(0, &buf).unwrap();
                        served += 1;
                        clients[i] = None; // leave, freeing a slot
                    }
                    Ok(n) => {
                        reset.push(format!("client {i}: {n} bytes then EOF"));
                        clients[i] = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        reset.push(format!("client {i}: {e}"));
                        clients[i] = None;
                    }
                }
            }
        }
        let fin = server.stop(libc::SIGTERM).assert_clean();
        eprintln!("burst of {CLIENTS}: {served} served, reset: {reset:?}; {fin}");
        assert!(
            reset.is_empty(),
            "clients reset instead of waiting: {reset:?}"
        );
        assert_eq!(fin.accepted, CLIENTS as u64);
        assert_eq!(fin.accept_errors, 0);
    });
}

/// `--buf-count 8`: receives regularly find the buffer ring empty (`-ENOBUFS` ends a multishot
/// receive). The connection must wait and be re-armed when buffers come back; no data lost, and
/// no busy loop while it waits or afterwards.
#[test]
fn empty_buffer_ring_parks_receives_without_losing_data_or_spinning() {
    with_backend("uring", |b| {
        let _g = exclusive();
        let mut server = b.start(&["--buf-count", "8"]);
        let mut total = 0;
        let mut flows: Vec<Flow> = (0..6)
            .map(|id| {
                let spec = FlowSpec {
                    total: 2 << 20,
                    window: 128 * 1024,
                    max_write: 32 * 1024,
                    fixed_writes: false,
                    half_close: id % 2 == 0,
                };
                total += spec.total;
                Flow::connect(server.addr, id, spec).unwrap()
            })
            .collect();
        drive(&mut flows, Duration::from_secs(30)).unwrap();
        let after = server.wait_stats("the burst echoed", Duration::from_secs(5), |c| {
            c.bytes_out >= total
        });
        assert!(after.enobufs > 0, "8 buffers never ran out? {after}");

        // Idle for a second with the connections still open: a loop that spins on a parked
        // receive would burn a CPU and count thousands of enters.
        let hz = clock_ticks_per_sec();
        let cpu0 = server.cpu_ticks();
        let t0 = Instant::now();
        let s0 = server.next_stats();
        let s1 = server.wait_stats("a second of idling", Duration::from_secs(5), |_| {
            t0.elapsed() >= Duration::from_secs(1)
        });
        let cpu_ms = (server.cpu_ticks() - cpu0) * 1000 / hz;
        let idle_ms = t0.elapsed().as_millis();
        eprintln!(
            "buf-count 8: enobufs={} recv_rearms={}; idle {idle_ms} ms: enters +{}, cpu \
             {cpu_ms} ms",
            after.enobufs,
            after.recv_rearms,
            s1.enters - s0.enters
        );
        assert!(
            s1.enters - s0.enters <= 20,
            "enters while idle: {s0} -> {s1}"
        );
        assert!(
            cpu_ms <= 100,
            "server used {cpu_ms} ms CPU in {idle_ms} ms of idling"
        );

        drop(flows);
        server.wait_stats("6 closed", Duration::from_secs(5), |c| c.closed >= 6);
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!(fin.bytes_in, total);
        assert_eq!(fin.bytes_out, total);
        assert_eq!(fin.bufs_held, 0);
        assert_eq!(fin.conn_errors, 0);
    });
}

/// Keeps `streams` (clients that never read) pushing until `stop` is set: each write goes in
/// when the kernel takes it; `pushed` counts the bytes.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn push_forever(streams: &mut [TcpStream], stop: &AtomicBool, pushed: &AtomicU64) {
    let mut offsets = vec![0u64; streams.len()];
    while !stop.load(Ordering::Relaxed) {
        let mut pfds: Vec<libc::pollfd> = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            continue;
        }
        for (i, p) in pfds.iter().enumerate() {
            if p.revents & libc::POLLOUT != 0 {
                let pat = Pattern::new(1000 + i as u64);
                let n = push_until_blocked(&mut streams[i], &pat, offsets[i], 256 * 1024);
                offsets[i] += n;
                pushed.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// 50 clients, 64-512 KiB each: returns (bytes each way, seconds).
fn active_clients(server: &common::Server) -> (u64, f64) {
    let t0 = Instant::now();
    let mut rng = Rng::new(4);
    let mut total = 0;
    let mut flows: Vec<Flow> = (0..50)
        .map(|id| {
            let bytes = rng.range(64 * 1024, 512 * 1024);
            total += bytes;
            Flow::connect(server.addr, id, FlowSpec::bulk(bytes)).unwrap()
        })
        .collect();
    drive(&mut flows, Duration::from_secs(20)).unwrap();
    (total, t0.elapsed().as_secs_f64())
}

/// 300 clients that send but never read, beside 50 that do: the slow readers must not eat the
/// shared buffer ring (`--buf-count 256`), and the active clients complete with every byte.
#[test]
fn slow_readers_do_not_starve_active_clients() {
    for_each_backend(|b| {
        let _g = exclusive();
        let mut server = b.start(&["--buf-count", "256", "--drain-timeout", "1"]);
        let rss0 = server.rss_kib();
        let (base_bytes, base_secs) = active_clients(&server);

        // Slow readers with small buffers and MSS (see `connect_small`), so each is stuck after
        // a few hundred KiB instead of pinning megabytes of kernel memory.
        let mut slow: Vec<TcpStream> = (0..300)
            .map(|_| {
                let s = common::connect_small(server.addr, 8 * 1024, 536);
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        let stop = AtomicBool::new(false);
        let pushed = AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| push_forever(&mut slow, &stop, &pushed));
            // Stops the pusher even if an assertion below fails (the scope joins it).
            let _stop_on_exit = StopOnDrop(&stop);
            // Stuck: the server paused every slow reader and nothing more goes in for 300 ms.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut last = (u64::MAX, Instant::now());
            loop {
                let c = server.next_stats();
                let p = pushed.load(Ordering::Relaxed);
                if p != last.0 {
                    last = (p, Instant::now());
                } else if c.accepted >= 350
                    && c.paused >= 300
                    && last.1.elapsed() >= Duration::from_millis(300)
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "slow readers never got stuck: pushed {p}; {c}"
                );
            }
            let stuck = server.next_stats();
            let sock = server.sockstat();
            eprintln!(
                "300 slow readers stuck after {} bytes pushed; kernel TCP mem {} pages; {stuck}",
                pushed.load(Ordering::Relaxed),
                sock.tcp_mem_pages
            );
            assert!(
                stuck.bufs_held <= 128,
                "owed data may hold at most half the ring (the budget): {stuck}"
            );
            assert!(
                stuck.copied_bytes > 0,
                "past the budget, owed bytes are copied out"
            );

            let (bytes, secs) = active_clients(&server);

            // Still responsive: a new connection's round trip.
            let t1 = Instant::now();
            let mut probe = server.connect();
            assert_eq!(
                echo_once(&mut probe, b"still there?").unwrap(),
                b"still there?"
            );
            let rtt = t1.elapsed();
            let rss = server.rss_kib();
            stop.store(true, Ordering::Relaxed);
            eprintln!(
                "50 active clients: alone {base_bytes} B in {base_secs:.2} s ({:.0} MB/s); \
                 beside 300 stuck slow readers {bytes} B in {secs:.2} s ({:.0} MB/s); new \
                 connection round trip {rtt:?}; server RSS {rss0} -> {rss} KiB",
                base_bytes as f64 / base_secs / 1e6,
                bytes as f64 / secs / 1e6,
            );
            assert!(
                rss - rss0 < 128 * 1024,
                "server RSS grew {} KiB with 300 slow readers",
                rss - rss0
            );
        });
        // The slow readers still owe data: SIGTERM drains for --drain-timeout (1 s), then closes.
        let stopped = server.stop(libc::SIGTERM);
        let fin = stopped.assert_clean();
        drop(slow);
        assert_eq!(fin.active, 0);
        assert_eq!(fin.bufs_held, 0);
        assert_eq!(fin.accepted, 50 + 300 + 50 + 1);
    });
}

/// `--sq-entries 16 --cq-entries 16` under load: multishot requests end when the CQ is full and
/// must be re-armed; overflowed completions must be flushed, not lost.
#[test]
fn tiny_completion_queue_loses_nothing_and_does_not_stall() {
    with_backend("uring", |b| {
        let mut server = b.start(&["--sq-entries", "16", "--cq-entries", "16"]);
        let banner = server.wait_stderr_line("ringecho: io_uring", Duration::from_secs(5));
        assert!(banner.contains("cq=16"), "{banner}");
        let mut rng = Rng::new(7);
        let mut total = 0;
        let mut flows: Vec<Flow> = (0..100)
            .map(|id| {
                let spec = FlowSpec {
                    total: rng.range(1, 256 * 1024),
                    window: 64 * 1024,
                    max_write: rng.range(1, 8 * 1024) as usize,
                    fixed_writes: false,
                    half_close: id % 3 == 0,
                };
                total += spec.total;
                Flow::connect(server.addr, id, spec).unwrap()
            })
            .collect();
        drive(&mut flows, Duration::from_secs(30)).unwrap();
        drop(flows);
        server.wait_stats("100 closed", Duration::from_secs(5), |c| c.closed >= 100);
        let fin = server.stop(libc::SIGTERM).assert_clean();
        eprintln!(
            "cq=16: cq_overflows={} cq_dropped={} recv_rearms={} accept_rearms={} enters={} \
             events={}",
            fin.cq_overflows,
            fin.cq_dropped,
            fin.recv_rearms,
            fin.accept_rearms,
            fin.enters,
            fin.events
        );
        assert_eq!(fin.bytes_in, total);
        assert_eq!(fin.bytes_out, total);
        assert_eq!((fin.accepted, fin.active), (100, 0));
        assert_eq!(fin.bufs_held, 0);
        assert_eq!(fin.stale_cqes, 0);
        assert_eq!(fin.conn_errors, 0);
    });
}
