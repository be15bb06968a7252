//! The client loop of one worker thread, the same over io_uring and epoll.
//!
//! A [`Transport`] moves bytes and reports what happened as [`Event`]s; the [`Client`] decides
//! everything else: when to connect (paced), what to send (from each connection's
//! [`Flow`]), when a connection failed and why, when the run stops, and when to close. After
//! every wait the client *reconciles*: for each connection touched, it compares what the flow
//! wants (bytes to send, a half-close) with what is outstanding and asks the transport for the
//! difference.
//!
//! # A connection's life
//!
//! ```text
//!  Waiting ──connect──▶ Connecting ──Connected──▶ Open ──(stop, all echoed)── shutdown(WR) ──EOF──▶ Closing ──Closed──▶ Closed
//!                           │                      │  fault / error / timeout                         ▲
//!                           └── ConnectFailed ─────┴───────────────────────────────────────────────────┘
//! ```

use std::io;
use std::time::Duration;

use super::flow::Flow;
use super::framing::Pieces;
use super::worker::{Failure, FromWorker, Recorder, Tally, Ticker, Timeline, ToWorker, WorkerCtx};
use crate::error::Error;

/// Most connects one worker has outstanding at once, besides the rate limit: enough to hide
/// the handshake round trip, few enough that a slow acceptor is not flooded.
const MAX_CONNECTING: usize = 64;
/// Timeouts are checked this often.
const HOUSEKEEPING_NS: u64 = 50_000_000;
/// After our half-close, how long to wait for the server's FIN before closing anyway.
const LINGER_NS: u64 = 1_000_000_000;
/// Largest single send: what one slice of the pattern table holds. A window of 64 KiB goes in
/// one send; a framed one (`--framed`: a 4-byte header per message) is a little longer and
/// still goes as 64 KiB and then a short tail.
const MAX_SEND: u64 = super::pattern::MAX_SPAN as u64;

/// What a transport reports.
#[derive(Debug)]
pub enum Event<'a> {
    /// Connection `i` is established.
    Connected(usize),
    /// Connection `i` could not be established.
    ConnectFailed(usize, io::Error),
    /// Bytes arrived on connection `i`.
    Data(usize, &'a [u8]),
    /// The server ended connection `i`'s stream.
    Eof(usize),
    /// The outstanding asynchronous send on `i` wrote this many bytes.
    Sent(usize, usize),
    /// Connection `i` can take more bytes after a short synchronous send.
    Writable(usize),
    /// A send or receive on `i` failed.
    Failed(usize, io::Error),
    /// Connection `i` is closed and nothing on it is outstanding.
    Closed(usize),
}

/// How a send went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStart {
    /// Submitted; an [`Event::Sent`] follows.
    Pending,
    /// Done synchronously, this many bytes written; fewer than asked means the socket is full
    /// and an [`Event::Writable`] follows.
    Done(usize),
}

/// What the client needs from a byte mover. Connection `i` is the worker's `i`-th connection.
pub trait Transport {
    /// Starts connecting connection `i`. `Err` only if no socket could be made (nothing is
    /// outstanding then); connect errors arrive as [`Event::ConnectFailed`].
    fn connect(&mut self, i: usize) -> io::Result<()>;
    /// Sends `bytes` (pieces sent back to back) on `i`. At most one send per connection is
    /// outstanding.
    fn send(&mut self, i: usize, bytes: &Pieces) -> io::Result<SendStart>;
    /// Half-closes `i` (we send no more; the server sees end of stream).
    fn shutdown_write(&mut self, i: usize) -> io::Result<()>;
    /// Stops everything on `i` and closes it; [`Event::Closed`] follows, and no other event
    /// for `i` after this call.
    fn close(&mut self, i: usize);
    /// Submits what is queued, waits up to `timeout` for something to happen, and reports it.
    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(Event<'_>)) -> Result<(), Error>;
    /// Syscalls made so far.
    fn syscalls(&self) -> u64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Waiting,
    Connecting,
    Open,
    Closing,
    Closed,
}

struct Conn {
    flow: Flow,
    phase: Phase,
    /// When the current phase (or the half-close) started, ns.
    since: u64,
    shut_wr: bool,
    write_blocked: bool,
    dirty: bool,
}

/// Everything the client knows except the transport (so events can update it while the
/// transport is borrowed for the wait).
struct State<'a> {
    ctx: &'a WorkerCtx,
    conns: Vec<Conn>,
    dirty: Vec<usize>,
    rec: Recorder,
    tally: Tally,
    /// Connections not yet `Closed`.
    live: usize,
    connecting: usize,
    /// Connections ended by the client that the transport still has to close.
    to_close: Vec<usize>,
}

/// One worker's client loop. See the module docs.
pub struct Client<'a, T: Transport> {
    io: T,
    st: State<'a>,
}

impl<'a, T: Transport> Client<'a, T> {
    /// A client for `ctx`'s connections over `io`.
    pub fn new(ctx: &'a WorkerCtx, io: T) -> Client<'a, T> {
        let plan = &ctx.plan;
        let conns = ctx
            .conns
            .clone()
            .map(|c| Conn {
                flow: Flow::new(c, plan.size, plan.depth, plan.verify, plan.framed),
                phase: Phase::Waiting,
                since: 0,
                shut_wr: false,
                write_blocked: false,
                dirty: false,
            })
            .collect::<Vec<_>>();
        let live = conns.len();
        Client {
            io,
            st: State {
                ctx,
                rec: Recorder::new(ctx.index, ctx.tx.clone()),
                conns,
                dirty: Vec::new(),
                tally: Tally::default(),
                live,
                connecting: 0,
                to_close: Vec::new(),
            },
        }
    }

    /// Runs the worker: connect, report, wait for the go, run traffic, drain, close, report.
    /// Returns the transport so its owner can release kernel resources in the right order.
    pub fn run(mut self) -> Result<T, Error> {
        let ctx = self.st.ctx;
        self.connect_all()?;
        let _ = ctx.tx.send(FromWorker::Connected {
            worker: ctx.index,
            established: self.st.tally.established,
        });
        let go = match ctx.rx.recv() {
            Ok(ToWorker::Go {
                timeline,
                rate,
                phase,
            }) => Some((timeline, rate, phase)),
            Ok(ToWorker::Stop) | Err(_) => None,
        };
        match go {
            Some((timeline, rate, phase)) => self.traffic(timeline, rate, phase)?,
            None => {
                let now = ctx.now();
                self.end_all(now);
                self.drain_closes(now + 2 * LINGER_NS)?;
            }
        }
        self.finish();
        Ok(self.io)
    }

    /// The connect phase: opens every connection at the paced rate until each one is
    /// established or failed.
    fn connect_all(&mut self) -> Result<(), Error> {
        let ctx = self.st.ctx;
        let gap = (1e9 / ctx.plan.connect_rate.max(1e-3)) as u64;
        let mut next = 0usize;
        let mut next_at = ctx.now();
        let mut housekeeping_at = next_at + HOUSEKEEPING_NS;
        loop {
            let now = ctx.now();
            if ctx.aborted() {
                self.end_all(now);
                return self.drain_closes(now + 2 * LINGER_NS);
            }
            while next < self.st.conns.len()
                && self.st.connecting < MAX_CONNECTING
                && now >= next_at
            {
                self.st.start_connect(&mut self.io, next, now);
                next += 1;
                // A token bucket with a burst of one: a late turn does not unleash a storm.
                next_at = next_at.max(now.saturating_sub(gap)) + gap;
            }
            if now >= housekeeping_at {
                self.st.housekeeping(now, false);
                housekeeping_at = now + HOUSEKEEPING_NS;
            }
            self.st.close_ended(&mut self.io);
            if next == self.st.conns.len() && self.st.connecting == 0 {
                return Ok(());
            }
            let mut wake = housekeeping_at;
            if next < self.st.conns.len() && self.st.connecting < MAX_CONNECTING {
                wake = wake.min(next_at);
            }
            self.wait_until(wake)?;
        }
    }

    /// Traffic from `t0` to `t_end`, then the drain and the closes.
    fn traffic(&mut self, tl: Timeline, rate: Option<f64>, phase: f64) -> Result<(), Error> {
        let ctx = self.st.ctx;
        self.st.rec.start(&tl);
        let open: Vec<usize> = (0..self.st.conns.len())
            .filter(|&i| self.st.conns[i].phase == Phase::Open)
            .collect();
        let mut ticker = rate
            .filter(|r| *r > 0.0)
            .map(|r| Ticker::new(tl.t0, r, open.len(), phase));
        if let Some(t) = &ticker {
            for (pos, &i) in open.iter().enumerate() {
                self.st.conns[i].flow.set_schedule(t.schedule_for(pos));
            }
        }
        let now = ctx.now();
        for &i in &open {
            self.st.conns[i].flow.fill(now);
            self.st.mark(i);
        }
        let mut syscalls_at_warm = None;
        let mut stopped_at = None;
        let mut housekeeping_at = now + HOUSEKEEPING_NS;
        loop {
            let now = ctx.now();
            self.st.rec.tick(now);
            if syscalls_at_warm.is_none() && now >= tl.t_warm {
                syscalls_at_warm = Some(self.io.syscalls());
            }
            if stopped_at.is_none() && (now >= tl.t_end || ctx.aborted() || ctx.stop_requested()) {
                stopped_at = Some(now);
                self.st.rec.end_window(now);
                let from = syscalls_at_warm.unwrap_or_else(|| self.io.syscalls());
                self.st.tally.window_syscalls = self.io.syscalls() - from;
                if ctx.aborted() {
                    self.end_all(now);
                } else {
                    self.stop_all();
                }
                ticker = None;
            }
            if let Some(t) = &mut ticker {
                let conns = &mut self.st.conns;
                let dirty = &mut self.st.dirty;
                t.advance(now, |pos| {
                    let c = &mut conns[open[pos]];
                    c.flow.make_due(1);
                    if !c.dirty {
                        c.dirty = true;
                        dirty.push(open[pos]);
                    }
                });
            }
            if now >= housekeeping_at {
                self.st.housekeeping(now, stopped_at.is_some());
                housekeeping_at = now + HOUSEKEEPING_NS;
            }
            self.st.sync_dirty(&mut self.io, now);
            self.st.close_ended(&mut self.io);
            if self.st.live == 0 {
                if stopped_at.is_none() {
                    // Every connection died before the end: the window ends here.
                    let from = syscalls_at_warm.unwrap_or_else(|| self.io.syscalls());
                    self.st.tally.window_syscalls = self.io.syscalls() - from;
                }
                return Ok(());
            }
            // Give up on connections that neither drain nor time out (should not happen:
            // every outstanding byte is under the timeout).
            if let Some(s) = stopped_at
                && now >= s + ctx.plan.timeout.as_nanos() as u64 + 2 * LINGER_NS
            {
                return Ok(());
            }
            let mut wake = housekeeping_at;
            if stopped_at.is_none() {
                wake = wake.min(tl.t_end);
            }
            if let Some(b) = self.st.rec.next_boundary() {
                wake = wake.min(b);
            }
            if let Some(t) = &ticker {
                wake = wake.min(t.next_at());
            }
            self.wait_until(wake)?;
        }
    }

    /// Waits for the closes asked for to complete, until `deadline`.
    fn drain_closes(&mut self, deadline: u64) -> Result<(), Error> {
        loop {
            self.st.close_ended(&mut self.io);
            let now = self.st.ctx.now();
            if self.st.live == 0 || now >= deadline {
                return Ok(());
            }
            self.wait_until(deadline.min(now + HOUSEKEEPING_NS))?;
        }
    }

    fn wait_until(&mut self, wake: u64) -> Result<(), Error> {
        let ctx = self.st.ctx;
        let timeout = Duration::from_nanos(wake.saturating_sub(ctx.now()));
        let st = &mut self.st;
        let mut now = None;
        self.io.wait(timeout, &mut |ev| {
            // Every event of one wait was ready when the wait returned: one clock read for all.
            let t = match now {
                Some(t) => t,
                None => {
                    let t = ctx.now();
                    // A second boundary may have passed during the wait.
                    st.rec.tick(t);
                    *now.insert(t)
                }
            };
            st.on_event(ev, t);
        })
    }

    /// No more messages; connections half-close once everything came back.
    fn stop_all(&mut self) {
        for i in 0..self.st.conns.len() {
            if self.st.conns[i].phase == Phase::Open {
                self.st.conns[i].flow.stop();
                self.st.mark(i);
            }
        }
    }

    /// Ends every connection now (abort, or no go).
    fn end_all(&mut self, now: u64) {
        for i in 0..self.st.conns.len() {
            self.st.conns[i].flow.stop();
            self.st.end(i, now);
        }
    }

    fn finish(&mut self) {
        let now = self.st.ctx.now();
        self.st.rec.finish(now);
        let t = &mut self.st.tally;
        for c in &self.st.conns {
            t.msgs_sent += c.flow.msgs_sent();
            t.msgs_received += c.flow.msgs_received();
        }
        let _ = self.st.ctx.tx.send(FromWorker::Finished {
            worker: self.st.ctx.index,
            tally: Box::new(self.st.tally.clone()),
        });
    }
}

impl State<'_> {
    fn mark(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    fn start_connect(&mut self, io: &mut impl Transport, i: usize, now: u64) {
        let c = &mut self.conns[i];
        c.phase = Phase::Connecting;
        c.since = now;
        match io.connect(i) {
            Ok(()) => self.connecting += 1,
            Err(e) => {
                c.phase = Phase::Closed;
                self.live -= 1;
                self.tally.connect_failed(self.ctx.plan.addr, &e);
            }
        }
    }

    /// Ends connection `i`: the transport closes it at the end of this turn.
    fn end(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        match c.phase {
            Phase::Closing | Phase::Closed => return,
            Phase::Waiting => {
                c.phase = Phase::Closed;
                self.live -= 1;
                return;
            }
            Phase::Connecting => self.connecting -= 1,
            Phase::Open => {}
        }
        c.phase = Phase::Closing;
        c.since = now;
        self.to_close.push(i);
    }

    fn close_ended(&mut self, io: &mut impl Transport) {
        for i in self.to_close.drain(..) {
            io.close(i);
        }
    }

    fn on_event(&mut self, ev: Event<'_>, now: u64) {
        match ev {
            Event::Connected(i) => {
                if self.conns[i].phase == Phase::Connecting {
                    self.connecting -= 1;
                    self.tally.established += 1;
                    let c = &mut self.conns[i];
                    c.phase = Phase::Open;
                    c.since = now;
                }
            }
            Event::ConnectFailed(i, e) => {
                if self.conns[i].phase == Phase::Connecting {
                    self.tally.connect_failed(self.ctx.plan.addr, &e);
                    self.end(i, now);
                }
            }
            Event::Data(i, bytes) => {
                let c = &mut self.conns[i];
                if c.phase != Phase::Open {
                    return;
                }
                let rec = &mut self.rec;
                match c.flow.on_recv(bytes, now, |start| rec.record(now, start)) {
                    Ok(_) => self.mark(i),
                    Err(fault) => {
                        self.tally.fault(&fault);
                        if fault.is_verification() {
                            // Wrong bytes invalidate the whole run, not one connection.
                            self.ctx.abort();
                        }
                        self.end(i, now);
                    }
                }
            }
            Event::Eof(i) => {
                let c = &mut self.conns[i];
                if c.phase != Phase::Open {
                    return;
                }
                if let Err(fault) = c.flow.on_eof() {
                    self.tally.fault(&fault);
                }
                self.end(i, now);
            }
            Event::Sent(i, n) => {
                let c = &mut self.conns[i];
                if c.phase == Phase::Open {
                    c.flow.on_sent(n as u64);
                    self.mark(i);
                }
            }
            Event::Writable(i) => {
                if self.conns[i].write_blocked {
                    self.conns[i].write_blocked = false;
                    self.mark(i);
                }
            }
            Event::Failed(i, e) => {
                let c = &mut self.conns[i];
                if c.phase != Phase::Open {
                    return;
                }
                c.flow.on_send_failed();
                let conn = c.flow.conn();
                self.tally.conn_failed(conn, &e);
                self.end(i, now);
            }
            Event::Closed(i) => {
                if self.conns[i].phase != Phase::Closed {
                    self.conns[i].phase = Phase::Closed;
                    self.live -= 1;
                }
            }
        }
    }

    /// Reconciles every connection touched this turn.
    fn sync_dirty(&mut self, io: &mut impl Transport, now: u64) {
        let mut k = 0;
        // `sync` may fail a connection but never marks another dirty, so this list only shrinks.
        while k < self.dirty.len() {
            let i = self.dirty[k];
            self.conns[i].dirty = false;
            self.sync(io, i, now);
            k += 1;
        }
        self.dirty.clear();
    }

    fn sync(&mut self, io: &mut impl Transport, i: usize, now: u64) {
        let c = &mut self.conns[i];
        if c.phase != Phase::Open {
            return;
        }
        c.flow.fill(now);
        while !c.write_blocked
            && let Some(bytes) = c.flow.next_send(MAX_SEND)
        {
            c.flow.begin_send(bytes.len());
            match io.send(i, &bytes) {
                Ok(SendStart::Pending) => break,
                Ok(SendStart::Done(n)) => {
                    c.flow.on_sent(n as u64);
                    if (n as u64) < bytes.len() {
                        c.write_blocked = true;
                    }
                }
                Err(e) => {
                    c.flow.on_send_failed();
                    let conn = c.flow.conn();
                    self.tally.conn_failed(conn, &e);
                    return self.end(i, now);
                }
            }
        }
        if c.flow.is_drained() && !c.flow.send_outstanding() && !c.shut_wr {
            c.shut_wr = true;
            c.since = now;
            if let Err(e) = io.shutdown_write(i) {
                let conn = c.flow.conn();
                self.tally.conn_failed(conn, &e);
                self.end(i, now);
            }
        }
    }

    /// Fails connections that made no progress for `--timeout`; closes half-closed ones the
    /// server does not close.
    fn housekeeping(&mut self, now: u64, stopping: bool) {
        let timeout = self.ctx.plan.timeout.as_nanos() as u64;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            match c.phase {
                Phase::Connecting if now.saturating_sub(c.since) > timeout => {
                    let addr = self.ctx.plan.addr;
                    let secs = self.ctx.plan.timeout.as_secs_f64();
                    self.tally.fail(Failure::ConnectTimeout, || {
                        format!(
                            "connecting to {addr} timed out after {secs}s (is the server \
                             accepting? is its listen backlog full?)"
                        )
                    });
                    self.end(i, now);
                }
                Phase::Open if c.shut_wr && now.saturating_sub(c.since) > LINGER_NS => {
                    // The server need not close after our FIN; we waited long enough.
                    self.end(i, now);
                }
                Phase::Open
                    if c.flow.outstanding() > 0
                        && now.saturating_sub(c.flow.last_progress()) > timeout =>
                {
                    let conn = c.flow.conn();
                    let owed = c.flow.outstanding();
                    let secs = self.ctx.plan.timeout.as_secs_f64();
                    self.tally.fail(Failure::Timeout, || {
                        format!(
                            "connection {conn}: no echo for {secs}s with {owed} bytes outstanding"
                        )
                    });
                    self.end(i, now);
                }
                Phase::Open if stopping && c.flow.outstanding() == 0 && !c.shut_wr => {
                    // Stopped with nothing owed: reconcile will half-close it.
                    self.mark(i);
                }
                _ => {}
            }
        }
    }
}
