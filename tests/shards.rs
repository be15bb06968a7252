//! Thread-per-core shards: SO_REUSEPORT listeners on one port, counters summed, one shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{BIN, for_each_backend, run_to_exit};

#[test]
fn two_shards_share_one_port_and_sum_their_counters() {
    for_each_backend(|b| {
        let mut server = b.start(&["--threads", "2"]);
        // Enough connections that SO_REUSEPORT's hash sends some to each shard.
        let mut conns: Vec<TcpStream> = (0..64).map(|_| server.connect()).collect();
        for (i, s) in conns.iter_mut().enumerate() {
            let msg = format!("shard test {i}");
            s.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg.as_bytes());
        }
        drop(conns);
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!((fin.accepted, fin.closed, fin.active), (64, 64, 0), "{fin}");
        let line = server_startup_line(&server);
        assert!(line.contains("shards=2"), "{line}");
    });
}

fn server_startup_line(server: &common::Server) -> String {
    server
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("shards="))
        .unwrap_or_default()
}

#[test]
fn a_second_server_on_a_busy_port_fails_unless_asked_to_share_it() {
    for_each_backend(|b| {
        let first = b.start(&["--threads", "2"]);
        let addr = first.addr.to_string();
        let mut cmd = b.command(&["--threads", "2", "--addr", &addr]);
        let (status, stdout, stderr) = run_to_exit(&mut cmd, std::time::Duration::from_secs(10));
        assert!(!status.success(), "must not silently join the group");
        assert!(!stdout.contains("listening on"), "{stdout}");
        assert!(stderr.contains("address in use"), "{stderr}");
        // With --reuseport on both sides, sharing the port is what the user asked for.
        drop(first);
        let first = b.start(&["--threads", "2", "--reuseport"]);
        let addr = first.addr.to_string();
        let second = b.start(&["--threads", "1", "--reuseport", "--addr", &addr]);
        assert_eq!(second.addr, first.addr);
    });
}

#[test]
fn threads_zero_is_a_usage_error() {
    let out = std::process::Command::new(BIN)
        .args(["--threads", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}
