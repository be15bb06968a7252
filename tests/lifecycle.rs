//! Connections ending badly (resets, broken pipes) and the server ending (SIGINT/SIGTERM with
//! bytes still owed, the drain timeout, a second signal).

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    EXIT_TIMEOUT, Flow, FlowSpec, Pattern, Server, drive, echo_once, for_each_backend,
    push_until_blocked, read_to_end_or_error, set_linger_zero,
};

/// Waits up to `limit` for `s` to become readable (data, EOF or error).
fn wait_readable(s: &TcpStream, limit: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as i32) > 0 }
}

/// One round of the ways a client can vanish mid-conversation. Returns connections made.
fn misbehave(server_addr: std::net::SocketAddr, round: u64) -> io::Result<u64> {
    let connect = || -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    };
    // Reset while the server owes this client bytes: send up to 1 MiB without reading (the
    // server pauses at --max-pending with sends outstanding), then RST.
    let mut s = connect()?;
    s.set_nonblocking(true)?;
    push_until_blocked(&mut s, &Pattern::new(500 + round), 0, 1 << 20);
    set_linger_zero(&s);
    drop(s);

    // Reset on an idle connection after a completed echo.
    let mut s = connect()?;
    echo_once(&mut s, b"about to vanish")?;
    set_linger_zero(&s);
    drop(s);

    // A plain close() with echoed bytes left unread: the client's kernel answers with RST, and
    // the server's next send on it fails (ECONNRESET, then EPIPE).
    let mut s = connect()?;
    let msg = Pattern::new(600 + round).bytes(0, 200_000);
    s.write_all(&msg[..100_000])?;
    wait_readable(&s, Duration::from_secs(5));
    s.set_nonblocking(true)?;
    let _ = s.write(&msg[100_000..]);
    drop(s);

    // Reset straight after connecting, before sending anything.
    let s = connect()?;
    set_linger_zero(&s);
    drop(s);
    Ok(4)
}

#[test]
fn client_resets_close_only_that_connection() {
    for_each_backend(|b| {
        let mut server = b.start(&[]);
        let addr = server.addr;
        let mut flows: Vec<Flow> = (0..20)
            .map(|id| Flow::connect(addr, id, FlowSpec::bulk(512 * 1024)).unwrap())
            .collect();
        let resets = std::thread::spawn(move || {
            let mut n = 0;
            for round in 0..10 {
                n += misbehave(addr, round).expect("misbehaving client");
            }
            n
        });
        drive(&mut flows, Duration::from_secs(30)).expect("well-behaved clients unharmed");
        let vanished = resets.join().unwrap();
        drop(flows);
        let n = vanished + 20;
        server.wait_stats("every connection closed", Duration::from_secs(10), |c| {
            c.closed >= n
        });
        // The server still serves, and holds no socket of the vanished clients.
        let mut s = server.connect();
        assert_eq!(echo_once(&mut s, b"next").unwrap(), b"next");
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.server_sockets().open() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20)); // polling /proc with a deadline
        }
        assert_eq!(
            server.server_sockets().open(),
            0,
            "server-side sockets left open"
        );
        let fin = server.stop(libc::SIGTERM).assert_clean();
        eprintln!("{vanished} vanishing clients: {fin}");
        assert_eq!(fin.accepted, n + 1);
        assert_eq!(fin.active, 0);
        assert!(
            fin.conn_errors > 0,
            "resets should be counted as connection errors"
        );
        assert_eq!(fin.bufs_held, 0, "buffers of reset connections returned");
        assert_eq!(fin.stale_cqes, 0);
    });
}

/// A client that sends without reading until the server owes it bytes it cannot send: the
/// server's own counters show it paused with `bytes_in > bytes_out`, and `bytes_out` has
/// stopped moving for 300 ms (its socket send buffer, which autotunes up to `tcp_wmem` max, is
/// full). With the back-pressure hysteresis the owed amount then sits anywhere between half
/// of --max-pending and a little over it. Returns the client (nonblocking) and its bytes sent.
fn owed_client(server: &Server, seed: u64) -> (TcpStream, u64) {
    let mut x = server.connect();
    x.set_nonblocking(true).unwrap();
    let pat = Pattern::new(seed);
    let mut pushed = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_out = (u64::MAX, Instant::now());
    loop {
        pushed += push_until_blocked(&mut x, &pat, pushed, 64 << 20);
        let c = server.next_stats();
        if c.bytes_out != last_out.0 {
            last_out = (c.bytes_out, Instant::now());
        } else if c.paused >= 1
            && c.bytes_in > c.bytes_out
            && last_out.1.elapsed() >= Duration::from_millis(300)
        {
            return (x, pushed);
        }
        assert!(
            Instant::now() < deadline,
            "server never settled owing bytes (pushed {pushed}): {c}"
        );
    }
}

/// An idle client with one echo done; when the server starts draining, it owes this one
/// nothing, so it closes it at once: its EOF is the sign the drain has begun.
fn idle_client(server: &Server) -> TcpStream {
    let mut y = server.connect();
    assert_eq!(echo_once(&mut y, b"y").unwrap(), b"y");
    y
}

fn expect_eof(y: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 16];
    match y.read(&mut buf) {
        Ok(0) => {}
        other => panic!("{what}: expected EOF, got {other:?}"),
    }
}

/// SIGTERM with a client that never reads: the server stops accepting at once (it closes its
/// listeners, so a newcomer is refused, or reset if it slipped into the backlog first, and is
/// never served), drains for --drain-timeout (1 s), then closes and exits 0.
#[test]
fn sigterm_stops_accepting_and_honours_the_drain_timeout() {
    for_each_backend(|b| {
        let mut server = b.start(&["--drain-timeout", "1"]);
        let (x, _) = owed_client(&server, 2);
        let mut y = idle_client(&server);
        server.signal(libc::SIGTERM);
        expect_eof(&mut y, "idle client at shutdown");

        // The drain has begun: a newcomer is refused, or reset, and never served.
        let newcomer = TcpStream::connect_timeout(&server.addr, Duration::from_secs(5));
        let mut z = match newcomer {
            Ok(z) => Some(z),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => None,
            Err(e) => panic!("a client connecting during the drain got {e}"),
        };
        if let Some(z) = z.as_mut() {
            let _ = z.write_all(b"anyone?");
            z.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 16];
            match z.read(&mut buf) {
                Ok(0) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionReset
                    ) => {}
                other => panic!("a client connecting during the drain got {other:?}"),
            }
        }

        let stopped = server.wait_exit(EXIT_TIMEOUT);
        let fin = stopped.assert_clean();
        eprintln!("drain timeout 1 s: exit after {:?}; {fin}", stopped.elapsed);
        assert!(
            stopped.elapsed >= Duration::from_millis(900),
            "exited after {:?}, before the drain timeout, while owing bytes",
            stopped.elapsed
        );
        assert!(
            stopped.elapsed < Duration::from_secs(4),
            "exited after {:?} with --drain-timeout 1",
            stopped.elapsed
        );
        assert!(
            fin.bytes_in > fin.bytes_out,
            "the never-reading client was owed bytes"
        );
        assert_eq!(fin.accepted, 2, "nobody accepted after SIGTERM");
        assert_eq!(fin.active, 0);
        assert_eq!(fin.bufs_held, 0);
        if let Some(z) = z.as_mut() {
            z.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (late, _) = read_to_end_or_error(z);
            assert!(late.is_empty(), "the newcomer was never served");
        }
        drop(x);
    });
}

/// SIGTERM while the server owes a client bytes and that client is reading: every byte the
/// server counts as sent reaches the client, then FIN.
///
/// This once failed: the server stopped receiving and closed as soon as the owed bytes were
/// handed to the kernel. The client kept sending, so the socket held unread input, and closing
/// such a socket makes Linux send RST and discard the send queue: the client lost up to a send
/// buffer of bytes the server counted as sent. Now an ending connection reads (and drops) input
/// until the peer's FIN, shutting down its write side once nothing is owed.
#[test]
fn sigterm_drain_delivers_every_owed_byte_then_fin() {
    for_each_backend(|b| {
        let mut server = b.start(&["--drain-timeout", "5"]);
        let (mut x, pushed) = owed_client(&server, 1);
        let mut y = idle_client(&server);
        server.signal(libc::SIGTERM);
        expect_eof(&mut y, "idle client at shutdown");
        x.set_nonblocking(false).unwrap();
        let (back, err) = read_to_end_or_error(&mut x);
        Pattern::new(1).check(0, &back).unwrap();
        let stopped = server.wait_exit(EXIT_TIMEOUT);
        let fin = stopped.assert_clean();
        eprintln!(
            "drain: client pushed {pushed}, got {} back, ended with {err:?}; {fin}",
            back.len()
        );
        assert_eq!(
            fin.bytes_out, fin.bytes_in,
            "every byte received before the shutdown was echoed (later ones are discarded)"
        );
        assert_eq!(
            back.len() as u64 + 1,
            fin.bytes_out,
            "the client should get every byte the server sent it"
        );
        assert!(err.is_none(), "the stream should end with FIN, not {err:?}");
    });
}

#[test]
fn sigint_stops_an_idle_server_at_once() {
    for_each_backend(|b| {
        let mut server = b.start(&[]);
        let mut s = server.connect();
        assert_eq!(echo_once(&mut s, b"hi").unwrap(), b"hi");
        let stopped = server.stop(libc::SIGINT);
        let fin = stopped.assert_clean();
        assert!(
            stopped.elapsed < Duration::from_secs(2),
            "{:?}",
            stopped.elapsed
        );
        assert_eq!((fin.accepted, fin.closed, fin.active), (1, 1, 0));
        expect_eof(&mut s, "client of a stopped server");
    });
}

#[test]
fn a_second_signal_exits_without_draining() {
    for_each_backend(|b| {
        let mut server = b.start(&["--drain-timeout", "60"]);
        let (_x, _) = owed_client(&server, 3);
        let mut y = idle_client(&server);
        server.signal(libc::SIGTERM);
        expect_eof(&mut y, "idle client at shutdown");
        let t = Instant::now();
        let stopped = server.stop(libc::SIGINT);
        assert_eq!(stopped.status.code(), Some(130), "{:?}", stopped.stderr);
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(
            stopped.stderr.iter().any(|l| l.contains("second signal")),
            "{:?}",
            stopped.stderr
        );
    });
}

/// With one idle connection holding an armed receive, connections that end after it are
/// really closed: each client that half-closes gets every byte back and then EOF (the server's
/// FIN), and its socket leaves the server. Before Linux 6.13 a closed *direct* descriptor stays
/// open behind the idle connection's older receive (no FIN, CLOSE_WAIT on the server), which is
/// why the io_uring backend uses ordinary descriptors there; `--no-direct-descriptors` runs
/// that path on any kernel. `make kernel-test` runs the same scenario on 6.1 and 6.12.
#[test]
fn connections_closed_beside_an_idle_one_get_fin_and_leave() {
    for_each_backend(|b| {
        let variants: &[&[&str]] = if b.name == "uring" {
            &[&[], &["--no-direct-descriptors"]]
        } else {
            &[&[]]
        };
        for flags in variants {
            let mut server = b.start(flags);
            let idle = idle_client(&server);
            for i in 0..20u8 {
                let mut s = server.connect();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(&[i; 100]).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got)
                    .unwrap_or_else(|e| panic!("{flags:?}: client {i} got no FIN: {e}"));
                assert_eq!(got, [i; 100], "{flags:?}: client {i}");
            }
            server.wait_stats("all 20 closed", Duration::from_secs(5), |c| c.closed >= 20);
            let port = server.addr.port();
            let open = common::port_sockets(server.pid(), port).open();
            assert!(
                open <= 2,
                "{flags:?}: {open} server-side sockets still open beside the idle one (CLOSE_WAIT?)"
            );
            drop(idle);
            server.stop(libc::SIGTERM).assert_clean();
        }
    });
}
