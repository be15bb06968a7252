//! Every example in `examples/` runs as `cargo run --example NAME` would, against real sockets.
//!
//! The examples are built once per run with the cargo that runs the tests (in this test's
//! profile), then started like the server: on `127.0.0.1:0`, ready when they print
//! `listening on ADDR`. Servers that serve a protocol run on every backend this machine has;
//! the raw io_uring examples need io_uring and are skipped (saying why) without it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use common::{Flow, FlowSpec, Rng, Server, drive, for_each_backend, read_to_end_or_error};

/// The executable of example `name`.
fn example(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // This test runs from target/PROFILE/deps; the examples land in target/PROFILE/examples.
        let exe = std::env::current_exe().expect("test executable");
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target/PROFILE");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--examples", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
            None => panic!("unexpected test path {exe:?}"),
        }
        let out = cmd.output().expect("run cargo build --examples");
        assert!(
            out.status.success(),
            "cargo build --examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("examples")
    });
    dir.join(name)
}

/// Starts example `name` on `127.0.0.1:0` with `args`; `b` names the backend in messages and,
/// for examples that take one, is passed as `--backend`.
fn start(name: &str, b: common::Backend, args: &[&str]) -> Server {
    let mut cmd = Command::new(example(name));
    cmd.args(["--addr", "127.0.0.1:0"]).args(args);
    Server::spawn(b, cmd).unwrap_or_else(|e| panic!("example {name} ({}): {e}", b.name))
}

fn connect(server: &Server) -> TcpStream {
    server.connect()
}

/// Reads exactly `n` bytes.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read the reply");
    buf
}

// ---- uring_echo ----------------------------------------------------------------------------

#[test]
fn uring_echo_echoes_every_byte_in_order_and_recycles_buffers_and_slots() {
    common::with_backend("uring", |b| {
        let server = start("uring_echo", b, &[]);
        // Two waves of 24 connections x 1 MiB, up to 256 KiB in flight each: far more than
        // its 64 x 4 KiB buffers, so receives run the ring dry (-ENOBUFS) and park. Each flow
        // half-closes and must get every byte back, then EOF: the close path. If a wave leaked
        // buffers, the next would stall.
        for wave in 0..2u64 {
            let mut flows: Vec<Flow> = (0..24)
                .map(|i| {
                    let spec = FlowSpec {
                        half_close: true,
                        ..FlowSpec::bulk(1 << 20)
                    };
                    Flow::connect(server.addr, wave * 100 + i, spec).expect("connect")
                })
                .collect();
            drive(&mut flows, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("wave {wave}: {e}"));
        }
        // More connections, one after another, than the file table has slots (1024): each
        // slot must come back when its connection closes.
        for i in 0..1100 {
            let mut s = connect(&server);
            s.write_all(b"ping").unwrap();
            assert_eq!(read_n(&mut s, 4), b"ping", "connection {i}");
            s.shutdown(Shutdown::Write).unwrap();
            let (rest, err) = read_to_end_or_error(&mut s);
            assert!(
                rest.is_empty() && err.is_none(),
                "connection {i}: {rest:?} {err:?}"
            );
        }
    });
}

#[test]
fn uring_echo_survives_a_peer_that_resets() {
    common::with_backend("uring", |b| {
        let server = start("uring_echo", b, &[]);
        for _ in 0..50 {
            let mut s = connect(&server);
            s.write_all(&[7; 100_000]).unwrap();
            common::set_linger_zero(&s);
            drop(s); // RST, with echoes in flight.
        }
        let mut s = connect(&server);
        s.write_all(b"still here").unwrap();
        assert_eq!(read_n(&mut s, 10), b"still here");
    });
}

// ---- line_protocol -------------------------------------------------------------------------

/// The line protocol's answer to `input` (whole lines, no QUIT).
fn shouted(input: &[u8]) -> Vec<u8> {
    input.to_ascii_uppercase()
}

#[test]
fn line_protocol_answers_lines_split_anywhere_on_every_backend() {
    for_each_backend(|b| {
        let server = start("line_protocol", b, b.flags);
        let mut s = connect(&server);
        s.write_all(b"hello\nWorld 42\r\n").unwrap();
        assert_eq!(read_n(&mut s, 16), b"HELLO\nWORLD 42\r\n");
        // One line in single bytes: nothing comes back until its newline.
        for &byte in b"split" {
            s.write_all(&[byte]).unwrap();
        }
        s.write_all(b"\nx\n").unwrap();
        assert_eq!(read_n(&mut s, 8), b"SPLIT\nX\n");

        // Many clients at once, each sending its own lines in random pieces.
        let clients: Vec<_> = (0..16u64)
            .map(|id| {
                let mut s = connect(&server);
                thread::spawn(move || {
                    let mut rng = Rng::new(id);
                    let mut text = Vec::new();
                    for n in 0..2000 {
                        let len = rng.range(0, 80) as usize;
                        text.extend((0..len).map(|_| b'a' + rng.range(0, 25) as u8));
                        text.extend_from_slice(format!(" {id}/{n}\n").as_bytes());
                    }
                    let expect = shouted(&text);
                    let mut writer = s.try_clone().unwrap();
                    let send = thread::spawn(move || {
                        let mut rng = Rng::new(id ^ 0x5eed);
                        let mut at = 0;
                        while at < text.len() {
                            let n = (rng.range(1, 3000) as usize).min(text.len() - at);
                            writer.write_all(&text[at..at + n]).unwrap();
                            at += n;
                        }
                        writer.shutdown(Shutdown::Write).unwrap();
                    });
                    let (got, err) = read_to_end_or_error(&mut s);
                    send.join().unwrap();
                    assert!(err.is_none(), "client {id}: {err:?}");
                    assert!(
                        got == expect,
                        "client {id}: {} bytes back, {} expected",
                        got.len(),
                        expect.len()
                    );
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    });
}

/// Connects, sends `input` (then FIN, with `half_close`), reads until the server closes, and
/// closes: the bytes that came back and how the stream ended (`None`: a clean EOF).
fn conversation(
    server: &Server,
    input: &[u8],
    half_close: bool,
) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut s = connect(server);
    s.write_all(input).unwrap();
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let (got, err) = read_to_end_or_error(&mut s);
    (got, err.map(|e| e.kind()))
}

#[test]
fn line_protocol_closes_on_quit_on_a_too_long_line_and_on_shutdown() {
    for_each_backend(|b| {
        let mut server = start("line_protocol", b, b.flags);
        // QUIT: the lines before it are answered, then BYE, then the server closes; what
        // follows QUIT is dropped.
        let (got, end) = conversation(&server, b"one\nQUIT\r\nnot answered\n", false);
        assert_eq!((got.as_slice(), end), (&b"ONE\nBYE\n"[..], None));

        // A line longer than 4096 bytes: closed without an answer.
        let (got, _) = conversation(&server, &[b'a'; 5000], false);
        assert!(got.is_empty(), "{} bytes came back", got.len());

        // The client half-closes: owed answers arrive, then EOF.
        let (got, end) = conversation(&server, b"last\n", true);
        assert_eq!((got.as_slice(), end), (&b"LAST\n"[..], None));

        // SIGTERM with an idle client connected: the server closes it at once (it owes
        // nothing) and `serve` returns, so the process exits 0 well inside the drain timeout.
        let mut idle = connect(&server);
        let stopped = server.stop(libc::SIGTERM);
        assert!(
            stopped.status.success(),
            "exit {}; stderr:\n{}",
            stopped.status,
            stopped.stderr.join("\n")
        );
        assert!(
            stopped.elapsed < Duration::from_secs(3),
            "{:?}",
            stopped.elapsed
        );
        let (got, _) = read_to_end_or_error(&mut idle);
        assert!(got.is_empty());
    });
}

#[test]
fn line_protocol_is_under_40_lines_of_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/line_protocol.rs");
    let src = std::fs::read_to_string(path).expect("read the example");
    let code = src
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count();
    assert!(
        code < 40,
        "examples/line_protocol.rs has {code} lines of code"
    );
}

// ---- buf_ring ------------------------------------------------------------------------------

#[test]
fn buf_ring_example_receives_returns_and_runs_dry() {
    common::with_backend("uring", |_| {
        let (status, out, err) = common::run_to_exit(
            &mut Command::new(example("buf_ring")),
            Duration::from_secs(20),
        );
        assert!(
            status.success(),
            "exit {status}\nstdout:\n{out}\nstderr:\n{err}"
        );
        for expected in [
            "4 buffers in the ring, 0 held",
            "\"message 9\" (held 1)",
            "receive 4: -ENOBUFS, the ring is empty (4 held)",
            "after one came back, buffer",
            "\"held 4\"",
            "done: 4 buffers available, 0 held",
        ] {
            assert!(out.contains(expected), "no {expected:?} in:\n{out}");
        }
    });
}

// ---- udp_echo ------------------------------------------------------------------------------

#[test]
fn udp_echo_returns_each_datagram_to_its_sender_on_every_backend() {
    for_each_backend(|b| {
        let mut server = start("udp_echo", b, b.flags);
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.connect(server.addr).unwrap();
                c
            })
            .collect();
        let mut buf = [0u8; 4096];
        let mut rng = Rng::new(3);
        for n in 0..300u32 {
            let c = &clients[n as usize % clients.len()];
            let len = rng.range(1, 1904) as usize;
            let msg: Vec<u8> = (0..len).map(|i| (i as u32 ^ n) as u8).collect();
            c.send(&msg).unwrap();
            let got = c.recv(&mut buf).expect("the echo");
            assert_eq!(&buf[..got], &msg[..], "datagram {n}");
        }
        // The largest that fits a 2048-byte buffer comes back; one byte more is dropped.
        let c = &clients[0];
        c.send(&[1; 1904]).unwrap();
        assert_eq!(c.recv(&mut buf).unwrap(), 1904);
        c.send(&[2; 1905]).unwrap();
        c.send(b"after").unwrap();
        let got = c.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..got],
            b"after",
            "the oversized datagram was not dropped"
        );

        let stopped = server.stop(libc::SIGTERM);
        assert!(
            stopped.status.success(),
            "exit {}; stderr:\n{}",
            stopped.status,
            stopped.stderr.join("\n")
        );
    });
}
