//! Network faults (issue 9), each in a private network namespace this test creates (its own
//! loopback, MTU 1500 like a real link; no other address is ever touched):
//!
//! - **loss**: nftables drops a random 1% (and 5%) of TCP packets (`numgen random`);
//! - **rate limit**: a `tbf` qdisc on the loopback;
//! - **delay**: a small userspace relay that holds every byte for a fixed time each way
//!   (this kernel has no `netem`).
//!
//! Echo must stay correct: every byte back, in order, despite retransmissions. The round-trip
//! p50/p99 of small messages under loss is reported. These run under `make torture`
//! (`#[ignore]`d here); without a private namespace, `nft` or `tc` they skip with the reason.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    Backend, Flow, FlowSpec, drive, for_each_backend, in_fresh_netns, pct, round_trips, skipped,
};

/// Runs a command (in the calling thread's namespace); `Err` with its stderr if it fails.
fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `body` in a fresh namespace with `lo` at MTU 1500, after `setup` commands; skips
/// (with the reason) where there is no private namespace or a command fails.
fn with_faulty_loopback(what: &str, setup: &[(&str, &[&str])], body: impl FnOnce() + Send) {
    in_fresh_netns(|isolated| {
        if !isolated {
            // Never shape or drop traffic on the machine's real loopback.
            skipped(&format!("{what}: no private network namespace"));
            return;
        }
        let mut all: Vec<(&str, &[&str])> = vec![("ip", &["link", "set", "lo", "mtu", "1500"])];
        all.extend_from_slice(setup);
        for (cmd, args) in all {
            if let Err(e) = run(cmd, args) {
                skipped(&format!("{what}: {e} (install nftables / iproute2?)"));
                return;
            }
        }
        body();
    });
}

fn nft_loss(percent: u32) -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("nft", vec!["add table inet faults".into()]),
        (
            "nft",
            vec!["add chain inet faults out { type filter hook output priority 0 ; }".into()],
        ),
        (
            "nft",
            vec!["add rule inet faults out meta l4proto tcp counter".into()],
        ),
        (
            "nft",
            vec![format!(
                "add rule inet faults out meta l4proto tcp numgen random mod 100 < {percent} \
                 counter drop"
            )],
        ),
    ]
}

/// (packets seen, packets dropped) from the two nft counters.
fn nft_counts() -> (u64, u64) {
    let text = run("nft", &["list", "table", "inet", "faults"]).unwrap_or_default();
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let i = w.iter().position(|x| *x == "packets")?;
            w.get(i + 1)?.parse().ok()
        })
        .collect();
    (
        counts.first().copied().unwrap_or(0),
        counts.get(1).copied().unwrap_or(0),
    )
}

/// Bulk flows plus small round trips through `addr`; returns (bytes, round-trip times).
fn verified_load(addr: SocketAddr, flows: u64, bytes: u64, rtt_for: Duration) -> Vec<Duration> {
    let mut f: Vec<Flow> = (0..flows)
        .map(|id| Flow::connect(addr, id, FlowSpec::bulk(bytes)).unwrap())
        .collect();
    let mut small: Vec<TcpStream> = (0..16)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    std::thread::scope(|sc| {
        let h = sc.spawn(|| drive(&mut f, Duration::from_secs(600)));
        let rtts = round_trips(&mut small, 128, 10, rtt_for);
        h.join()
            .unwrap()
            .expect("every byte back, in order, despite the fault");
        rtts
    })
}

fn loss(b: Backend, percent: u32, secs: u64) {
    let setup = nft_loss(percent);
    let setup: Vec<(&str, Vec<&str>)> = setup
        .iter()
        .map(|(c, a)| (*c, a.iter().flat_map(|s| s.split(' ')).collect()))
        .collect();
    let setup: Vec<(&str, &[&str])> = setup.iter().map(|(c, a)| (*c, &a[..])).collect();
    with_faulty_loopback(&format!("{percent}% loss"), &setup, || {
        let mut server = b.start(&[]);
        let t0 = Instant::now();
        let mut rtts = verified_load(server.addr, 16, 4 << 20, Duration::from_secs(secs));
        let secs = t0.elapsed().as_secs_f64();
        let (seen, dropped) = nft_counts();
        let fin = server.stop(libc::SIGTERM).assert_clean();
        let (p50, p99, max) = (
            pct(&mut rtts, 0.5),
            pct(&mut rtts, 0.99),
            pct(&mut rtts, 1.0),
        );
        eprintln!(
            "[{}] {percent}% loss (nft dropped {dropped} of {seen} TCP packets, {:.2}%): 16 x 4 \
             MiB intact in {secs:.1} s; 16 x 128 B round trips ({} of them): p50 {p50:?} p99 \
             {p99:?} max {max:?}; server conn_errors={} short_sends={}",
            b.name,
            dropped as f64 * 100.0 / seen.max(1) as f64,
            rtts.len(),
            fin.conn_errors,
            fin.short_sends
        );
        assert!(dropped > 0, "the nft rule dropped nothing");
        assert_eq!((fin.conn_errors, fin.stale_cqes), (0, 0));
        assert_eq!(fin.bytes_out, fin.bytes_in);
    });
}

#[test]
#[ignore = "torture: make torture (needs a private netns and nft)"]
fn one_percent_loss_keeps_echo_exact_and_reports_p99() {
    for_each_backend(|b| loss(b, 1, 20));
}

#[test]
#[ignore = "torture: make torture (needs a private netns and nft)"]
fn five_percent_loss_keeps_echo_exact() {
    for_each_backend(|b| loss(b, 5, 10));
}

#[test]
#[ignore = "torture: make torture (needs a private netns and tc)"]
fn rate_limit_keeps_echo_exact() {
    for_each_backend(|b| {
        let setup: &[(&str, &[&str])] = &[(
            "tc",
            &[
                "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "40mbit", "burst", "64kb",
                "latency", "100ms",
            ],
        )];
        with_faulty_loopback("tbf rate limit", setup, || {
            let mut server = b.start(&[]);
            let t0 = Instant::now();
            let bytes = 8u64 << 20;
            let mut rtts = verified_load(server.addr, 8, bytes >> 3, Duration::from_secs(5));
            let secs = t0.elapsed().as_secs_f64();
            let fin = server.stop(libc::SIGTERM).assert_clean();
            eprintln!(
                "[{}] tbf 40 Mbit/s: 8 x 1 MiB each way intact in {secs:.1} s ({:.1} Mbit/s of \
                 echo both ways on the wire); 128 B round trips p50 {:?} p99 {:?}; {fin}",
                b.name,
                (2 * fin.bytes_out) as f64 * 8.0 / secs / 1e6,
                pct(&mut rtts, 0.5),
                pct(&mut rtts, 0.99),
            );
            assert_eq!((fin.conn_errors, fin.stale_cqes), (0, 0));
        });
    });
}

// ---- a delaying relay ------------------------------------------------------------------------

/// Copies `from` to `to`, holding each read back until `delay` after it arrived.
fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    for (due, bytes) in rx {
        // The delay is the fault being simulated, not synchronisation.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if to.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = reader.join();
}

/// A relay on a free port that forwards every connection to `upstream` with `delay` each way.
fn delay_relay(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let Ok(u) = TcpStream::connect(upstream) else {
                return;
            };
            c.set_nodelay(true).unwrap();
            u.set_nodelay(true).unwrap();
            let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
            std::thread::spawn(move || delayed_pipe(c, u, delay));
            std::thread::spawn(move || delayed_pipe(u2, c2, delay));
        }
    });
    addr
}

/// 25 ms each way through a relay: a long fat pipe for the server's back-pressure, and echo
/// stays exact; round trips take at least the 50 ms the relay adds.
#[test]
#[ignore = "torture: make torture"]
fn delay_through_a_relay_keeps_echo_exact() {
    for_each_backend(|b| {
        let mut server = b.start(&[]);
        let delay = Duration::from_millis(25);
        let relay = delay_relay(server.addr, delay);
        let mut rtts = verified_load(relay, 8, 2 << 20, Duration::from_secs(5));
        let fin = server.stop(libc::SIGTERM).assert_clean();
        let (p50, p99) = (pct(&mut rtts, 0.5), pct(&mut rtts, 0.99));
        eprintln!(
            "[{}] relay with {delay:?} each way: 8 x 2 MiB intact; 128 B round trips p50 {p50:?} \
             p99 {p99:?}; {fin}",
            b.name
        );
        assert!(p50 >= delay * 2, "the relay did not delay? p50 {p50:?}");
        assert_eq!((fin.conn_errors, fin.stale_cqes), (0, 0));
    });
}
