//! Syscall batching: with many connections busy, one `io_uring_enter` must handle many
//! completions. Measured from the server's own counters; the bound is loose on purpose (the
//! machine is shared and noisy), and wall-clock speed is reported, never asserted.

mod common;

use std::time::{Duration, Instant};

use common::{Flow, FlowSpec, drive_for, exclusive, for_each_backend};

#[test]
fn fifty_connections_one_message_in_flight_share_enters() {
    const CONNS: u64 = 50;
    const MSG: u64 = 128;
    for_each_backend(|b| {
        let _g = exclusive();
        let mut server = b.start(&[]);
        let spec = FlowSpec {
            total: u64::MAX,
            window: MSG,
            max_write: MSG as usize,
            fixed_writes: true,
            half_close: false,
        };
        let mut flows: Vec<Flow> = (0..CONNS)
            .map(|id| Flow::connect(server.addr, id, spec).unwrap())
            .collect();
        let start = server.wait_stats("all connected", Duration::from_secs(5), |c| {
            c.accepted >= CONNS
        });
        let t = Instant::now();
        drive_for(&mut flows, Duration::from_secs(2)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let echoed: u64 = flows.iter().map(|f| f.received).sum();
        drop(flows);
        let end = server.wait_stats("the run echoed", Duration::from_secs(5), |c| {
            c.bytes_out >= start.bytes_out + echoed
        });
        let fin = server.stop(libc::SIGTERM).assert_clean();

        let msgs = (end.bytes_out - start.bytes_out) / MSG;
        let enters = end.enters - start.enters;
        let syscalls = end.syscalls - start.syscalls;
        let events = end.events - start.events;
        let per_msg = enters as f64 / msgs as f64;
        eprintln!(
            "{CONNS} x {MSG} B x 1 in flight, {secs:.1} s: {msgs} messages ({:.0}/s); {enters} \
             enters = {per_msg:.3} per message ({:.3} syscalls per message), {:.1} completions \
             per enter; whole run: {:.3} enters per message",
            msgs as f64 / secs,
            syscalls as f64 / msgs as f64,
            events as f64 / enters.max(1) as f64,
            fin.enters as f64 / (fin.bytes_out / MSG) as f64
        );
        assert!(msgs >= 1000, "too few messages to judge ({msgs})");
        assert!(
            per_msg < 0.5,
            "{per_msg:.3} enters per echoed message: completions are not being batched"
        );
    });
}
