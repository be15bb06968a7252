//! The baseline the other transports are measured against (`--backend threads`, hidden from
//! `--help`): a plain blocking client, one OS thread per connection, a `write` and a `read`
//! per message. It shares the [`Flow`] (so it checks and times exactly what the others do);
//! only the way bytes move differs.
//!
//! It cannot send on schedule while blocked in a read, so in open loop its late sends are
//! charged to latency like anyone's; it is here for CPU-per-message comparisons, closed loop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use super::flow::Flow;
use super::worker::{Failure, FromWorker, Recorder, Tally, Ticker, ToWorker, WorkerCtx};

/// A blocked read wakes this often to look at the clock (stop, abort, interval boundaries).
const READ_TICK: Duration = Duration::from_millis(50);

/// Runs worker `ctx`, which owns exactly one connection.
pub fn run(ctx: &WorkerCtx, connect_at: u64) {
    let plan = &ctx.plan;
    let mut tally = Tally::default();
    let mut rec = Recorder::new(ctx.index, ctx.tx.clone());
    let mut flow = Flow::new(
        ctx.conns.start,
        plan.size,
        plan.depth,
        plan.verify,
        plan.framed,
    );
    // Pacing the connect storm: this thread's turn comes at `connect_at`.
    let wait = connect_at.saturating_sub(ctx.now());
    if wait > 0 {
        std::thread::sleep(Duration::from_nanos(wait));
    }
    let stream = match TcpStream::connect_timeout(&plan.addr, plan.timeout) {
        Ok(s) => Some(s),
        Err(e) => {
            if e.kind() == io::ErrorKind::TimedOut {
                tally.connect_failed(plan.addr, &io::Error::from_raw_os_error(libc::ETIMEDOUT));
            } else {
                tally.connect_failed(plan.addr, &e);
            }
            None
        }
    };
    if stream.is_some() {
        tally.established = 1;
    }
    let _ = ctx.tx.send(FromWorker::Connected {
        worker: ctx.index,
        established: tally.established,
    });
    let go = ctx.rx.recv();
    if let (
        Some(mut s),
        Ok(ToWorker::Go {
            timeline,
            rate,
            phase,
        }),
    ) = (stream, go)
    {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(READ_TICK));
        rec.start(&timeline);
        let mut ticker = rate
            .filter(|r| *r > 0.0)
            .map(|r| Ticker::new(timeline.t0, r, 1, phase));
        if let Some(t) = &ticker {
            flow.set_schedule(t.schedule_for(0));
        }
        let mut buf = vec![0u8; 1 << 16];
        let timeout = plan.timeout.as_nanos() as u64;
        let in_window = |t: u64| t >= timeline.t_warm && t < timeline.t_end;
        loop {
            let now = ctx.now();
            // Roughly one syscall per write or read (write_all may loop; it rarely does).
            if in_window(now) {
                tally.window_syscalls += 1;
            }
            rec.tick(now);
            if ctx.aborted() {
                break;
            }
            if now >= timeline.t_end || ctx.stop_requested() {
                rec.end_window(now);
                flow.stop();
                ticker = None;
            }
            if let Some(t) = &mut ticker {
                t.advance(now, |_| flow.make_due(1));
            }
            flow.fill(now);
            if let Some(bytes) = flow.next_send(1 << 16) {
                flow.begin_send(bytes.len());
                if let Err(e) = bytes.iter().try_for_each(|p| s.write_all(p)) {
                    flow.on_send_failed();
                    tally.conn_failed(flow.conn(), &e);
                    break;
                }
                flow.on_sent(bytes.len());
                continue;
            }
            if flow.is_drained() {
                // Half-close and wait briefly for the server's FIN, as the other clients do.
                let _ = s.shutdown(Shutdown::Write);
                let _ = s.read(&mut buf);
                break;
            }
            if flow.outstanding() == 0 {
                // Open loop, nothing due: sleep until the next message (or interval) is.
                let next = ticker.as_ref().map_or(now, |t| t.next_at());
                let next = rec.next_boundary().map_or(next, |b| b.min(next));
                std::thread::sleep(Duration::from_nanos(
                    next.saturating_sub(now).min(50_000_000),
                ));
                continue;
            }
            match s.read(&mut buf) {
                Ok(0) => {
                    if let Err(f) = flow.on_eof() {
                        tally.fault(&f);
                    }
                    break;
                }
                Ok(n) => {
                    let now = ctx.now();
                    rec.tick(now);
                    if let Err(f) = flow.on_recv(&buf[..n], now, |start| rec.record(now, start)) {
                        tally.fault(&f);
                        if f.is_verification() {
                            ctx.abort();
                        }
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if now.saturating_sub(flow.last_progress()) > timeout {
                        let (conn, owed) = (flow.conn(), flow.outstanding());
                        let secs = plan.timeout.as_secs_f64();
                        tally.fail(Failure::Timeout, || {
                            format!("connection {conn}: no echo for {secs}s with {owed} bytes outstanding")
                        });
                        break;
                    }
                }
                Err(e) => {
                    tally.conn_failed(flow.conn(), &e);
                    break;
                }
            }
        }
    }
    rec.finish(ctx.now());
    tally.msgs_sent = flow.msgs_sent();
    tally.msgs_received = flow.msgs_received();
    let _ = ctx.tx.send(FromWorker::Finished {
        worker: ctx.index,
        tally: Box::new(tally),
    });
}
