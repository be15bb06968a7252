//! Socket options and addresses take effect on the server's *accepted* sockets.
//!
//! A client's `getsockopt` reads only the client's own socket, and io_uring direct descriptors
//! cannot be queried from outside, so each option is observed where it shows: Nagle on the
//! server's listener and (epoll) accepted sockets through `pidfd_getfd`, keepalive by the timer the kernel runs on the server's socket (`/proc/PID/net/tcp`),
//! buffer sizes by the server socket's memory limits (`ss -tm`), linger 0 by the reset a
//! close then sends.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::for_each_backend;
use ringecho::sys::proc::{self, TcpSocket};

/// `TCP_NODELAY` on each of `pid`'s sockets with local port `port` in TCP state `state` that
/// sit in its descriptor table, read through a duplicate of the descriptor taken with
/// `pidfd_getfd` (5.6; the test is the server's parent, which may). io_uring's accepted
/// connections are direct descriptors, in no descriptor table, so for that backend only the
/// listener shows.
fn nodelay_of(pid: u32, port: u16, state: u8) -> Vec<bool> {
    let inodes: Vec<String> = proc::tcp_sockets(pid)
        .iter()
        .filter(|s| s.local_port == port && s.state == state)
        .map(|s| format!("socket:[{}]", s.inode))
        .collect();
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !inodes.iter().any(|i| link.to_str() == Some(i.as_str())) {
            continue;
        }
        let target: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
        // SAFETY: pidfd_getfd takes descriptors and flags; the result is a new descriptor of
        // ours (or -1), closed below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, target, 0) } as i32;
        assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `on` and `len` are valid for writing and sized for TCP_NODELAY's int.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw mut on).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
        found.push(on != 0);
        // SAFETY: `fd` is our duplicate, closed once.
        unsafe { libc::close(fd) };
    }
    // SAFETY: `pidfd` is ours, closed once.
    unsafe { libc::close(pidfd as i32) };
    found
}

/// The option is set on the listener (so io_uring's direct descriptors get it with no syscall
/// per connection) and every accepted socket inherits it: read on the server's own sockets.
/// (Observing Nagle by its delay no longer works on io_uring: everything a connection owes
/// goes out in one send, so a pipelined pair of replies never leaves a small second write for
/// Nagle to hold.)
#[test]
fn nodelay_is_on_by_default_and_can_be_turned_off() {
    for_each_backend(|b| {
        for (flags, want) in [(&[][..], true), (&["--nodelay", "false"][..], false)] {
            let server = b.start(flags);
            let mut s = server.connect();
            s.write_all(b"x").unwrap();
            s.read_exact(&mut [0u8; 1]).unwrap();
            let (pid, port) = (server.pid(), server.addr.port());
            let listeners = nodelay_of(pid, port, TcpSocket::LISTEN);
            assert!(!listeners.is_empty(), "{flags:?}: no listener found");
            assert!(
                listeners.iter().all(|&on| on == want),
                "{flags:?}: listener TCP_NODELAY {listeners:?}, want {want}"
            );
            if b.name == "epoll" {
                let accepted = nodelay_of(pid, port, TcpSocket::ESTABLISHED);
                assert_eq!(
                    accepted,
                    [want],
                    "{flags:?}: the accepted socket inherits it"
                );
            }
        }
    });
}

/// The keepalive timer of the server-side sockets on `port`, from `/proc/PID/net/tcp`: the
/// timer kind ("2" is keepalive) and the seconds until it fires.
fn server_timers(pid: u32, port: u16) -> Vec<(u8, f64)> {
    proc::tcp_sockets(pid)
        .iter()
        .filter(|s| s.local_port == port && s.state == TcpSocket::ESTABLISHED)
        .map(|s| (s.timer.0, s.timer.1 as f64 / jiffies_per_sec()))
        .collect()
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

/// With default flags every legal datagram comes back whole, on both backends: up to 65,507
/// bytes over IPv4 and 65,527 over IPv6, jumbo-frame sizes included.
#[test]
fn udp_default_flags_echo_every_legal_datagram_whole() {
    for_each_backend(|b| {
        for (addr, max) in [("127.0.0.1:0", 65_507), ("[::1]:0", 65_527)] {
            let mut server = b.start(&["--udp", "--addr", addr]);
            let bind = if addr.starts_with('[') {
                "[::1]:0"
            } else {
                "127.0.0.1:0"
            };
            let sock = UdpSocket::bind(bind).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            sock.connect(server.addr).unwrap();
            let mut buf = vec![0u8; 65_536];
            for (i, len) in [0usize, 1, 1400, 3953, 9000, 32_768, max]
                .into_iter()
                .enumerate()
            {
                let d = common::Pattern::new(i as u64).bytes(0, len);
                sock.send(&d).unwrap();
                let n = sock
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("{addr}: no echo of {len} bytes: {e}"));
                assert!(buf[..n] == d[..], "{addr}: {len} bytes came back as {n}");
            }
            let fin = server.stop(libc::SIGTERM).assert_clean();
            assert_eq!((fin.dgram_truncated, fin.sends), (0, 7), "{addr}: {fin}");
        }
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
