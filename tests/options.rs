//! Socket options and addresses take effect on the server's *accepted* sockets.
//!
//! A client's `getsockopt` reads only the client's own socket, and io_uring direct descriptors
//! cannot be queried from outside, so each option is observed where it shows: Nagle by its
//! delay, keepalive by the timer the kernel runs on the server's socket (`/proc/PID/net/tcp`),
//! buffer sizes by the server socket's memory limits (`ss -tm`), linger 0 by the reset a
//! close then sends.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, for_each_backend};

/// How long two pipelined HTTP requests take to answer, `trials` times.
///
/// With `--protocol http --http-body 5000`, each response is one 5 KB reply sent on its own, so
/// one client write of two requests makes the server send twice. With Nagle on the server's
/// socket the second send, smaller than a segment, waits until the client acknowledges the
/// first, and the client, which has nothing to send, delays that ACK (about 40 ms on Linux).
/// With TCP_NODELAY both go out at once.
fn pipelined_http_times(server: &Server, trials: usize) -> Vec<Duration> {
    let mut s = server.connect();
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut one = Vec::new();
    // Ordinary round trips first, so the client's TCP leaves its quick-ACK start-up mode; the
    // first also tells how long one response is.
    for i in 0..32 {
        s.write_all(request).unwrap();
        if i == 0 {
            one = read_http_response(&mut s);
        } else {
            let mut buf = vec![0u8; one.len()];
            s.read_exact(&mut buf).unwrap();
        }
    }
    let two = [&request[..], &request[..]].concat();
    let mut times = Vec::new();
    let mut buf = vec![0u8; 2 * one.len()];
    for _ in 0..trials {
        let t = Instant::now();
        s.write_all(&two).unwrap();
        s.read_exact(&mut buf).unwrap();
        times.push(t.elapsed());
        assert_eq!(&buf[..one.len()], &one[..]);
    }
    times
}

/// Reads one HTTP response with a `Content-Length` body.
fn read_http_response(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Content-Length header");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    got.extend(body);
    got
}

#[test]
fn nodelay_is_on_by_default_and_can_be_turned_off() {
    for_each_backend(|b| {
        let http = ["--protocol", "http", "--http-body", "5000"];
        let server = b.start(&http);
        let mut on = pipelined_http_times(&server, 5);
        on.sort();
        drop(server);
        let server = b.start(&[&http[..], &["--nodelay", "false"]].concat());
        let mut off = pipelined_http_times(&server, 5);
        off.sort();
        eprintln!("two pipelined responses: nodelay {on:?}; nagle {off:?}");
        // Generous bounds: the effect is a ~40 ms delayed-ACK timer against sub-millisecond
        // loopback round trips; the median is robust to a noisy machine.
        assert!(
            on[2] < Duration::from_millis(20),
            "with TCP_NODELAY both responses go at once: {on:?}"
        );
        assert!(
            off[2] >= Duration::from_millis(20),
            "without TCP_NODELAY the second waits for the delayed ACK: {off:?}"
        );
    });
}

/// The keepalive timer of the server-side sockets on `port`, from `/proc/PID/net/tcp`: the
/// timer kind ("2" is keepalive) and the seconds until it fires.
fn server_timers(pid: u32, port: u16) -> Vec<(u8, f64)> {
    let mut out = Vec::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(timer)) = (f.get(1), f.get(3), f.get(5)) else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if lport != Some(port) || *st != "01" {
                continue;
            }
            // "tr:tm->when": timer kind, then jiffies until it fires.
            let Some((kind, when)) = timer.split_once(':') else {
                continue;
            };
            let kind = u8::from_str_radix(kind, 16).unwrap_or(0);
            let jiffies = u64::from_str_radix(when, 16).unwrap_or(0);
            out.push((kind, jiffies as f64 / jiffies_per_sec()));
        }
    }
    out
}

/// The kernel's timer frequency as /proc/net/tcp reports it (USER_HZ-independent: the file
/// prints jiffies converted with `jiffies_delta_to_clock_t`, i.e. USER_HZ).
fn jiffies_per_sec() -> f64 {
    common::clock_ticks_per_sec() as f64
}

#[test]
fn keepalive_reaches_accepted_sockets() {
    for_each_backend(|b| {
        let server = b.start(&["--keepalive", "7,3,2"]);
        let mut s = server.connect();
        s.write_all(b"k").unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).unwrap();
        let timers = server_timers(server.pid(), server.addr.port());
        eprintln!("server socket timers: {timers:?}");
        assert!(
            timers
                .iter()
                .any(|&(kind, secs)| kind == 2 && secs > 4.0 && secs <= 7.5),
            "a keepalive timer of about 7 s on the server's socket: {timers:?}"
        );
        drop(server);
        let server = b.start(&[]);
        let mut s = server.connect();
        s.write_all(b"k").unwrap();
        s.read_exact(&mut buf).unwrap();
        let timers = server_timers(server.pid(), server.addr.port());
        assert!(
            !timers.iter().any(|&(kind, _)| kind == 2),
            "no keepalive by default: {timers:?}"
        );
    });
}

/// `rb`/`tb` (receive and send buffer limits) of the server-side sockets on `port`, via `ss`.
fn server_buffer_limits(pid: u32, port: u16) -> Option<Vec<(u64, u64)>> {
    // Enter the server's network namespace view through /proc is not possible for ss; the
    // tests run in the default namespace, which ss sees.
    let _ = pid;
    let out = Command::new("ss")
        .args(["-tmnH", "state", "established", &format!("sport = :{port}")])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |s: &str, key: &str| -> Option<u64> {
        let i = s.find(key)?;
        s[i + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(
        text.lines()
            .filter(|l| l.contains("skmem:"))
            .filter_map(|l| Some((field(l, ",rb")?, field(l, ",tb")?)))
            .collect(),
    )
}

#[test]
fn buffer_sizes_reach_accepted_sockets() {
    if Command::new("ss").arg("-V").output().is_err() {
        common::skipped("`ss` (iproute2) is not installed");
        return;
    }
    for_each_backend(|b| {
        let server = b.start(&["--rcvbuf", "65536", "--sndbuf", "131072"]);
        let mut s = server.connect();
        s.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).unwrap();
        let Some(limits) = server_buffer_limits(server.pid(), server.addr.port()) else {
            common::skipped("ss could not list sockets here");
            return;
        };
        eprintln!("server socket (rb, tb): {limits:?}");
        // The kernel doubles what SO_RCVBUF/SO_SNDBUF ask for (bookkeeping overhead).
        assert_eq!(limits, vec![(131072, 262144)], "set on the accepted socket");
    });
}

#[test]
fn linger_zero_resets_instead_of_closing_gracefully() {
    for_each_backend(|b| {
        // The idle timeout makes the server close; linger 0 turns its FIN into a reset.
        let server = b.start(&["--linger", "0", "--idle-timeout", "0.2"]);
        let mut s = server.connect();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        match s.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected a reset from linger 0, got {other:?}"),
        }
        drop(server);
        let server = b.start(&["--idle-timeout", "0.2"]);
        let mut s = server.connect();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 0, "a graceful FIN by default");
    });
}

#[test]
fn idle_timeout_closes_idle_connections_on_time_and_spares_busy_ones() {
    for_each_backend(|b| {
        let mut server = b.start(&["--idle-timeout", "0.5"]);
        // Slowloris: many connections that never send.
        let idle: Vec<TcpStream> = (0..500).map(|_| server.connect()).collect();
        let mut busy = server.connect();
        let t = Instant::now();
        let mut buf = [0u8; 1];
        // Keep one connection busy past the timeout.
        while t.elapsed() < Duration::from_millis(1500) {
            busy.write_all(b"z").unwrap();
            busy.read_exact(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = server.wait_stats("idle connections closed", Duration::from_secs(5), |c| {
            c.idle_closes >= 500
        });
        assert_eq!(c.idle_closes, 500, "the busy connection was spared: {c}");
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert_eq!(s.read(&mut buf).unwrap(), 0, "closed with FIN");
        }
        busy.write_all(b"y").unwrap();
        busy.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"y");
        drop(busy);
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!(fin.idle_closes, 500);
    });
}

#[test]
fn several_addresses_and_dual_stack() {
    for_each_backend(|b| {
        let mut server = b.start(&["--addr", "127.0.0.1:0", "--addr", "[::]:0"]);
        assert_eq!(server.addrs.len(), 2, "one line per address");
        let v6 = server.addrs[1];
        for target in [
            server.addr,
            format!("[::1]:{}", v6.port()).parse().unwrap(),
            // Dual stack: an IPv4 client reaches the [::] listener.
            format!("127.0.0.1:{}", v6.port()).parse().unwrap(),
        ] {
            let mut s = TcpStream::connect(target).unwrap();
            s.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello", "via {target}");
        }
        server.stop(libc::SIGTERM).assert_clean();

        let server = b.start(&["--addr", "[::]:0", "--ipv6-only"]);
        let port = server.addr.port();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "--ipv6-only refuses IPv4 clients"
        );
        let mut s = TcpStream::connect(("::1", port)).unwrap();
        s.write_all(b"6").unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).unwrap();
    });
}

#[test]
fn udp_echoes_datagrams_whole_and_drops_oversized_ones() {
    for_each_backend(|b| {
        let mut server = b.start(&["--udp", "--buf-size", "2048"]);
        let max = 2048 - 144;
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.connect(server.addr).unwrap();
        let mut buf = vec![0u8; 65536];
        for (i, len) in [1usize, 64, 1400, max, 0].into_iter().enumerate() {
            let d = common::Pattern::new(i as u64).bytes(0, len);
            sock.send(&d).unwrap();
            let n = sock.recv(&mut buf).unwrap();
            assert_eq!(
                &buf[..n],
                &d[..],
                "datagram of {len} bytes comes back whole"
            );
        }
        // One byte over the limit: counted and dropped, never echoed short; the next one is
        // served as usual.
        sock.send(&vec![7u8; max + 1]).unwrap();
        sock.send(b"after").unwrap();
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!(fin.dgram_truncated, 1, "{fin}");
        assert_eq!(fin.sends, 6, "{fin}");
    });
}
