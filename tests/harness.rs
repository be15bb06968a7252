//! Checks the test harness itself against a trivially correct echo server (std, one thread per
//! connection), so a failure elsewhere in the suite points at ringecho, not at the harness.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::Duration;

use common::{Flow, FlowSpec, Pattern, Rng, drive};

#[test]
fn pattern_pieces_match_the_whole_and_differ_between_connections() {
    let p = Pattern::new(1);
    let whole = p.bytes(0, 300_000);
    let mut rng = Rng::new(3);
    let mut off = 0u64;
    while off < 300_000 {
        let n = rng.range(1, 20_000).min(300_000 - off) as usize;
        let range = off as usize..off as usize + n;
        assert_eq!(p.bytes(off, n), whole[range.clone()], "at {off} len {n}");
        p.check(off, &whole[range]).unwrap();
        off += n as u64;
    }
    let other = Pattern::new(2).bytes(4096, 4096);
    let err = p.check(4096, &other).unwrap_err();
    assert!(err.contains("byte 4096"), "{err}");
    assert!(
        err.contains("pattern 2"),
        "names the connection the bytes belong to: {err}"
    );
}

/// A reference echo server on a free port; with `corrupt_at`, it flips that byte of every
/// connection's stream.
fn reference_echo(corrupt_at: Option<u64>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut total = 0u64;
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = s.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => n,
                    };
                    if let Some(at) = corrupt_at
                        && (total..total + n as u64).contains(&at)
                    {
                        buf[(at - total) as usize] ^= 1;
                    }
                    total += n as u64;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn flows_pass_against_a_reference_echo_server() {
    let addr = reference_echo(None);
    let mut rng = Rng::new(200);
    let mut flows: Vec<Flow> = (0..50)
        .map(|id| {
            let spec = FlowSpec {
                total: rng.range(1, 256 * 1024),
                window: 64 * 1024,
                max_write: rng.range(1, 16 * 1024) as usize,
                fixed_writes: false,
                half_close: id % 2 == 0,
            };
            Flow::connect(addr, id, spec).unwrap()
        })
        .collect();
    drive(&mut flows, Duration::from_secs(30)).unwrap();
    assert!(flows.iter().filter(|f| f.id % 2 == 0).all(|f| f.eof));
}

#[test]
fn flows_catch_one_wrong_byte() {
    let addr = reference_echo(Some(5000));
    let mut flows = vec![Flow::connect(addr, 3, FlowSpec::bulk(100_000)).unwrap()];
    let err = drive(&mut flows, Duration::from_secs(10)).unwrap_err();
    assert!(err.contains("flow 3: byte 5000"), "{err}");
}
