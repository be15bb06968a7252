//! The baseline the other transports are measured against (`--backend threads`, hidden from
//! `--help`): a plain blocking client, one OS thread per connection, a `write` and a `read`
//! per message. It shares the [`Flow`] (so it checks and times exactly what the others do);
//! only the way bytes move differs.
//!
//! It cannot send on schedule while blocked in a read, so in open loop its late sends are
//! charged to latency like anyone's; it is here for CPU-per-message comparisons, closed loop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::ControlFlow;
use std::time::Duration;

use super::flow::Flow;
use super::framing::Pieces;
use super::worker::{Failure, FromWorker, Recorder, Tally, Ticker, Timeline, ToWorker, WorkerCtx};

/// A blocked read wakes this often to look at the clock (stop, abort, interval boundaries).
const READ_TICK: Duration = Duration::from_millis(50);
/// Largest single write, and the read buffer's size.
const MAX_IO: usize = 1 << 16;

/// Runs worker `ctx`, which owns exactly one connection.
pub fn run(ctx: &WorkerCtx, connect_at: u64) {
    let plan = &ctx.plan;
    let mut conn = Connection {
        ctx,
        flow: Flow::new(
            ctx.conns.start,
            plan.size,
            plan.depth,
            plan.verify,
            plan.framed,
        ),
        rec: Recorder::new(ctx.index, ctx.tx.clone()),
        tally: Tally::default(),
        buf: vec![0u8; MAX_IO],
    };
    let stream = conn.connect(connect_at);
    let _ = ctx.tx.send(FromWorker::Connected {
        worker: ctx.index,
        established: conn.tally.established,
    });
    let go = ctx.rx.recv();
    if let (
        Some(mut stream),
        Ok(ToWorker::Go {
            timeline,
            rate,
            phase,
        }),
    ) = (stream, go)
    {
        conn.traffic(&mut stream, timeline, rate, phase);
    }
    conn.rec.finish(ctx.now());
    let mut tally = conn.tally;
    tally.msgs_sent = conn.flow.msgs_sent();
    tally.msgs_received = conn.flow.msgs_received();
    let _ = ctx.tx.send(FromWorker::Finished {
        worker: ctx.index,
        tally: Box::new(tally),
    });
}

/// The worker's one connection: its conversation, and what is recorded about it.
struct Connection<'a> {
    ctx: &'a WorkerCtx,
    flow: Flow,
    rec: Recorder,
    tally: Tally,
    buf: Vec<u8>,
}

impl Connection<'_> {
    /// Connects when this thread's turn in the paced connect storm comes (`connect_at`).
    fn connect(&mut self, connect_at: u64) -> Option<TcpStream> {
        let plan = &self.ctx.plan;
        let wait = connect_at.saturating_sub(self.ctx.now());
        if wait > 0 {
            std::thread::sleep(Duration::from_nanos(wait));
        }
        match TcpStream::connect_timeout(&plan.addr, plan.timeout) {
            Ok(s) => {
                self.tally.established = 1;
                Some(s)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    let timed_out = io::Error::from_raw_os_error(libc::ETIMEDOUT);
                    self.tally.connect_failed(plan.addr, &timed_out);
                } else {
                    self.tally.connect_failed(plan.addr, &e);
                }
                None
            }
        }
    }

    /// Traffic on `timeline` until the flow is drained (or the connection fails, or the run
    /// is aborted): one write per send, one blocking read otherwise.
    fn traffic(&mut self, s: &mut TcpStream, timeline: Timeline, rate: Option<f64>, phase: f64) {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(READ_TICK));
        self.rec.start(&timeline);
        let mut ticker = rate
            .filter(|r| *r > 0.0)
            .map(|r| Ticker::new(timeline.t0, r, 1, phase));
        if let Some(t) = &ticker {
            self.flow.set_schedule(t.schedule_for(0));
        }
        let in_window = |t: u64| t >= timeline.t_warm && t < timeline.t_end;
        loop {
            let now = self.ctx.now();
            // Roughly one syscall per write or read (write_all may loop; it rarely does).
            if in_window(now) {
                self.tally.window_syscalls += 1;
            }
            self.rec.tick(now);
            if self.ctx.aborted() {
                return;
            }
            if now >= timeline.t_end || self.ctx.stop_requested() {
                self.rec.end_window(now);
                self.flow.stop();
                ticker = None;
            }
            if let Some(t) = &mut ticker {
                t.advance(now, |_| self.flow.make_due(1));
            }
            self.flow.fill(now);
            if let Some(bytes) = self.flow.next_send(MAX_IO as u64) {
                if self.send(s, bytes).is_break() {
                    return;
                }
                continue;
            }
            if self.flow.is_drained() {
                // Half-close and wait briefly for the server's FIN, as the other clients do.
                let _ = s.shutdown(Shutdown::Write);
                let _ = s.read(&mut self.buf);
                return;
            }
            if self.flow.outstanding() == 0 {
                // Open loop, nothing due: sleep until the next message (or interval) is.
                let next = ticker.as_ref().map_or(now, |t| t.next_at());
                let next = self.rec.next_boundary().map_or(next, |b| b.min(next));
                std::thread::sleep(Duration::from_nanos(
                    next.saturating_sub(now).min(50_000_000),
                ));
                continue;
            }
            if self.read(s, now).is_break() {
                return;
            }
        }
    }

    /// Writes `bytes`; breaks if the write failed.
    fn send(&mut self, s: &mut TcpStream, bytes: Pieces) -> ControlFlow<()> {
        self.flow.begin_send(bytes.len());
        if let Err(e) = bytes.iter().try_for_each(|p| s.write_all(p)) {
            self.flow.on_send_failed();
            self.tally.conn_failed(self.flow.conn(), &e);
            return ControlFlow::Break(());
        }
        self.flow.on_sent(bytes.len());
        ControlFlow::Continue(())
    }

    /// One read (it gives up after `READ_TICK`, so the loop can look at the clock); checks
    /// what came. Breaks at end of stream, on a fault, an error, or `--timeout` without an
    /// echo (`now` is when the turn began).
    fn read(&mut self, s: &mut TcpStream, now: u64) -> ControlFlow<()> {
        match s.read(&mut self.buf) {
            Ok(0) => {
                if let Err(f) = self.flow.on_eof() {
                    self.tally.fault(&f);
                }
                ControlFlow::Break(())
            }
            Ok(n) => {
                let now = self.ctx.now();
                self.rec.tick(now);
                let rec = &mut self.rec;
                if let Err(f) = self
                    .flow
                    .on_recv(&self.buf[..n], now, |start| rec.record(now, start))
                {
                    self.tally.fault(&f);
                    if f.is_verification() {
                        self.ctx.abort();
                    }
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                let timeout = self.ctx.plan.timeout;
                if now.saturating_sub(self.flow.last_progress()) > timeout.as_nanos() as u64 {
                    let (conn, owed) = (self.flow.conn(), self.flow.outstanding());
                    let secs = timeout.as_secs_f64();
                    self.tally.fail(Failure::Timeout, || {
                        format!(
                            "connection {conn}: no echo for {secs}s with {owed} bytes outstanding"
                        )
                    });
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Err(e) => {
                self.tally.conn_failed(self.flow.conn(), &e);
                ControlFlow::Break(())
            }
        }
    }
}
