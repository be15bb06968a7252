//! `ringecho bench --udp`: the client loop of one worker thread over datagram sockets, the
//! same over io_uring ([`uring`]) and epoll ([`epoll`]).
//!
//! Each of the worker's connections is a UDP socket `connect`ed to the server (so the kernel
//! filters out anyone else's datagrams and reports ICMP port-unreachable as `ECONNREFUSED`),
//! with a [`DgramFlow`] deciding what to send and checking what comes back. The loop follows
//! the TCP client's ([`client`](super::client)): open everything, report, wait for the go, run
//! traffic on the common timeline, drain, close, report. What differs is the end of a message:
//! a datagram ends when its echo arrives *or* when `--udp-loss-timeout` passes, so the drain
//! after the window takes at most that long, and a server that drops everything costs a
//! counted loss per datagram, never a hang.
//!
//! # A socket's life
//!
//! ```text
//!  open ──▶ Open ──(stop, every datagram settled)──▶ Closing ──Closed──▶ Closed
//!             │  fault / error                          ▲
//!             └─────────────────────────────────────────┘
//! ```

pub mod epoll;
pub mod flow;
pub mod uring;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub use flow::{DgramCounts, DgramFault, DgramFlow};

use super::worker::{Failure, FromWorker, Recorder, Tally, Ticker, Timeline, ToWorker, WorkerCtx};
use crate::error::Error;

/// After the loss timeout of the last datagram, how long to wait for closes to complete.
const LINGER_NS: u64 = 1_000_000_000;

/// What a datagram transport reports.
#[derive(Debug)]
pub enum DgramEvent<'a> {
    /// A datagram arrived on socket `i`.
    Datagram(usize, &'a [u8]),
    /// The asynchronous send from slot `slot` of socket `i` completed (`Err`: it failed).
    Sent(usize, u16, io::Result<()>),
    /// Socket `i` can take datagrams again after a send was refused for want of room.
    Writable(usize),
    /// A receive on socket `i` failed (`ECONNREFUSED`: nobody listens at the server address).
    Failed(usize, io::Error),
    /// Socket `i` is closed and nothing on it is outstanding.
    Closed(usize),
}

/// How a datagram send went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DgramSend {
    /// Submitted; a [`DgramEvent::Sent`] follows.
    Pending,
    /// Sent.
    Done,
    /// The socket's send buffer is full; nothing was sent, a [`DgramEvent::Writable`] follows.
    Blocked,
}

/// What the UDP client needs from a byte mover. Socket `i` is the worker's `i`-th.
pub trait DgramTransport {
    /// Opens socket `i`, connected to the server. `Err` if no socket could be made.
    fn open(&mut self, i: usize) -> io::Result<()>;
    /// Sends one datagram from slot `slot` of socket `i`: `head`, then `body`. The transport
    /// keeps its own copy of `head` until the send completes.
    fn send(
        &mut self,
        i: usize,
        slot: u16,
        head: &[u8; flow::HEADER],
        body: &'static [u8],
    ) -> io::Result<DgramSend>;
    /// Stops everything on `i` and closes it; [`DgramEvent::Closed`] follows, and no other
    /// event for `i` after this call.
    fn close(&mut self, i: usize);
    /// Submits what is queued, waits up to `timeout` for something to happen, and reports it.
    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(DgramEvent<'_>)) -> Result<(), Error>;
    /// Syscalls made so far.
    fn syscalls(&self) -> u64;
}

/// A UDP socket on an ephemeral local port, `connect`ed to `target`: three syscalls (socket,
/// bind, connect).
fn connected_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(target)?;
    Ok(sock)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Closed,
}

struct Sock {
    flow: DgramFlow,
    phase: Phase,
    /// Some echo came back: a later `ECONNREFUSED` means the server went away, not that it
    /// was never there.
    answered: bool,
    write_blocked: bool,
    dirty: bool,
}

struct State<'a> {
    ctx: &'a WorkerCtx,
    socks: Vec<Sock>,
    dirty: Vec<usize>,
    rec: Recorder,
    tally: Tally,
    live: usize,
    to_close: Vec<usize>,
    /// Loss timeout, ns.
    loss_ns: u64,
    /// When to look for lost datagrams next (no datagram in flight is due before).
    sweep_at: u64,
}

/// Runs worker `ctx` over transport `io`; returns the transport so its owner can release
/// kernel resources in the right order.
pub fn run<T: DgramTransport>(ctx: &WorkerCtx, mut io: T) -> Result<T, Error> {
    let plan = &ctx.plan;
    let socks: Vec<Sock> = ctx
        .conns
        .clone()
        .map(|c| Sock {
            flow: DgramFlow::new(c, plan.size, plan.depth, plan.verify),
            phase: Phase::Open,
            answered: false,
            write_blocked: false,
            dirty: false,
        })
        .collect();
    let mut st = State {
        ctx,
        live: socks.len(),
        socks,
        dirty: Vec::new(),
        rec: Recorder::new(ctx.index, ctx.tx.clone()),
        tally: Tally::default(),
        to_close: Vec::new(),
        loss_ns: plan.loss_timeout.as_nanos() as u64,
        sweep_at: u64::MAX,
    };
    // No handshake: opening a connected UDP socket is immediate.
    for i in 0..st.socks.len() {
        match io.open(i) {
            Ok(()) => st.tally.established += 1,
            Err(e) => {
                st.socks[i].phase = Phase::Closed;
                st.live -= 1;
                st.tally.connect_failed(plan.addr, &e);
            }
        }
    }
    let _ = ctx.tx.send(FromWorker::Connected {
        worker: ctx.index,
        established: st.tally.established,
    });
    match ctx.rx.recv() {
        Ok(ToWorker::Go {
            timeline,
            rate,
            phase,
        }) => traffic(&mut st, &mut io, timeline, rate, phase)?,
        Ok(ToWorker::Stop) | Err(_) => {
            let now = ctx.now();
            for i in 0..st.socks.len() {
                st.end(i);
            }
            drain_closes(&mut st, &mut io, now + LINGER_NS)?;
        }
    }
    st.rec.finish(ctx.now());
    let t = &mut st.tally;
    for s in &st.socks {
        let c = s.flow.counts();
        t.msgs_sent += c.sent;
        t.msgs_received += c.received;
        t.dgrams_lost += c.lost;
        t.dgrams_late += c.late;
        t.dgrams_duplicate += c.duplicate;
        t.dgrams_reordered += c.reordered;
    }
    let _ = ctx.tx.send(FromWorker::Finished {
        worker: ctx.index,
        tally: Box::new(st.tally.clone()),
    });
    Ok(io)
}

/// Traffic from `t0` to `t_end`, then the drain (every datagram echoed or lost) and the closes.
fn traffic<T: DgramTransport>(
    st: &mut State<'_>,
    io: &mut T,
    tl: Timeline,
    rate: Option<f64>,
    phase: f64,
) -> Result<(), Error> {
    let ctx = st.ctx;
    st.rec.start(&tl);
    let open: Vec<usize> = (0..st.socks.len())
        .filter(|&i| st.socks[i].phase == Phase::Open)
        .collect();
    let mut ticker = rate
        .filter(|r| *r > 0.0)
        .map(|r| Ticker::new(tl.t0, r, open.len(), phase));
    if let Some(t) = &ticker {
        for (pos, &i) in open.iter().enumerate() {
            st.socks[i].flow.set_schedule(t.schedule_for(pos));
        }
    }
    let now = ctx.now();
    for &i in &open {
        st.socks[i].flow.fill(now);
        st.mark(i);
    }
    st.sweep_at = now + st.loss_ns;
    let mut syscalls_at_warm = None;
    let mut stopped_at = None;
    loop {
        let now = ctx.now();
        st.rec.tick(now);
        if syscalls_at_warm.is_none() && now >= tl.t_warm {
            syscalls_at_warm = Some(io.syscalls());
        }
        if stopped_at.is_none() && (now >= tl.t_end || ctx.aborted() || ctx.stop_requested()) {
            stopped_at = Some(now);
            st.rec.end_window(now);
            let from = syscalls_at_warm.unwrap_or_else(|| io.syscalls());
            st.tally.window_syscalls = io.syscalls() - from;
            for i in 0..st.socks.len() {
                if ctx.aborted() {
                    st.end(i);
                } else if st.socks[i].phase == Phase::Open {
                    st.socks[i].flow.stop();
                    st.mark(i);
                }
            }
            ticker = None;
        }
        if let Some(t) = &mut ticker {
            let socks = &mut st.socks;
            let dirty = &mut st.dirty;
            t.advance(now, |pos| {
                let s = &mut socks[open[pos]];
                s.flow.make_due(1);
                if !s.dirty {
                    s.dirty = true;
                    dirty.push(open[pos]);
                }
            });
        }
        if now >= st.sweep_at {
            st.sweep(now);
        }
        st.sync_dirty(io, now);
        for i in st.to_close.drain(..) {
            io.close(i);
        }
        if st.live == 0 {
            if stopped_at.is_none() {
                let from = syscalls_at_warm.unwrap_or_else(|| io.syscalls());
                st.tally.window_syscalls = io.syscalls() - from;
            }
            return Ok(());
        }
        // Every datagram settles within the loss timeout of its send; closes take a moment.
        if let Some(s) = stopped_at
            && now >= s + st.loss_ns + LINGER_NS
        {
            return Ok(());
        }
        let mut wake = st.sweep_at;
        if stopped_at.is_none() {
            wake = wake.min(tl.t_end);
        }
        if let Some(b) = st.rec.next_boundary() {
            wake = wake.min(b);
        }
        if let Some(t) = &ticker {
            wake = wake.min(t.next_at());
        }
        wait_until(st, io, wake)?;
    }
}

/// Waits for the closes asked for to complete, until `deadline`.
fn drain_closes<T: DgramTransport>(
    st: &mut State<'_>,
    io: &mut T,
    deadline: u64,
) -> Result<(), Error> {
    loop {
        for i in st.to_close.drain(..) {
            io.close(i);
        }
        let now = st.ctx.now();
        if st.live == 0 || now >= deadline {
            return Ok(());
        }
        wait_until(st, io, deadline)?;
    }
}

fn wait_until<T: DgramTransport>(st: &mut State<'_>, io: &mut T, wake: u64) -> Result<(), Error> {
    let ctx = st.ctx;
    let timeout = Duration::from_nanos(wake.saturating_sub(ctx.now()));
    let mut now = None;
    io.wait(timeout, &mut |ev| {
        // Every event of one wait was ready when the wait returned: one clock read for all.
        let t = match now {
            Some(t) => t,
            None => {
                let t = ctx.now();
                st.rec.tick(t);
                *now.insert(t)
            }
        };
        st.on_event(ev, t);
    })
}

impl State<'_> {
    fn mark(&mut self, i: usize) {
        let s = &mut self.socks[i];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Ends socket `i`: the transport closes it at the end of this turn.
    fn end(&mut self, i: usize) {
        let s = &mut self.socks[i];
        if s.phase == Phase::Open {
            s.phase = Phase::Closing;
            s.flow.stop();
            self.to_close.push(i);
        }
    }

    /// Counts lost datagrams on every open socket and plans the next look.
    fn sweep(&mut self, now: u64) {
        let mut next = None::<u64>;
        for i in 0..self.socks.len() {
            let s = &mut self.socks[i];
            if s.phase != Phase::Open {
                continue;
            }
            let before = s.flow.counts().lost;
            if let Some(at) = s.flow.expire(now, self.loss_ns) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            if s.flow.counts().lost != before {
                self.mark(i);
            }
        }
        // Datagrams sent from now on are due a full timeout away, after every one in flight:
        // the earliest deadline in flight (or a timeout from now) is the next one.
        self.sweep_at = next.unwrap_or(now + self.loss_ns);
    }

    fn fail(&mut self, i: usize, e: &io::Error) {
        let s = &self.socks[i];
        let conn = s.flow.conn();
        if e.raw_os_error() == Some(libc::ECONNREFUSED) {
            let addr = self.ctx.plan.addr;
            if s.answered {
                self.tally.fail(Failure::Other, || {
                    format!(
                        "socket {conn}: the server at {addr} stopped answering (ICMP port \
                         unreachable: connection refused)"
                    )
                });
            } else {
                // Never reached a server: this socket was not established after all.
                self.tally.established = self.tally.established.saturating_sub(1);
                self.tally.fail(Failure::Refused, || {
                    format!("connection refused: is a UDP echo server listening on {addr}?")
                });
            }
        } else {
            self.tally.conn_failed(conn, e);
        }
        self.end(i);
    }

    fn on_event(&mut self, ev: DgramEvent<'_>, now: u64) {
        match ev {
            DgramEvent::Datagram(i, data) => {
                let s = &mut self.socks[i];
                if s.phase != Phase::Open {
                    return;
                }
                let rec = &mut self.rec;
                match s
                    .flow
                    .on_datagram(data, now, |start| rec.record(now, start))
                {
                    Ok(()) => {
                        s.answered = true;
                        self.mark(i);
                    }
                    Err(fault) => {
                        self.tally.fail(Failure::Verify, || fault.to_string());
                        // Wrong bytes invalidate the whole run, not one socket.
                        self.ctx.abort();
                        self.end(i);
                    }
                }
            }
            DgramEvent::Sent(i, slot, res) => {
                let s = &mut self.socks[i];
                s.flow.on_sent(slot, res.is_ok());
                if s.phase != Phase::Open {
                    return;
                }
                match res {
                    Ok(()) => self.mark(i),
                    Err(e) => self.fail(i, &e),
                }
            }
            DgramEvent::Writable(i) => {
                if self.socks[i].write_blocked {
                    self.socks[i].write_blocked = false;
                    self.mark(i);
                }
            }
            DgramEvent::Failed(i, e) => {
                if self.socks[i].phase == Phase::Open {
                    self.fail(i, &e);
                }
            }
            DgramEvent::Closed(i) => {
                if self.socks[i].phase != Phase::Closed {
                    self.socks[i].phase = Phase::Closed;
                    self.live -= 1;
                }
            }
        }
    }

    /// Sends what each socket touched this turn has queued; closes drained ones.
    fn sync_dirty(&mut self, io: &mut impl DgramTransport, now: u64) {
        let mut k = 0;
        while k < self.dirty.len() {
            let i = self.dirty[k];
            self.socks[i].dirty = false;
            self.sync(io, i, now);
            k += 1;
        }
        self.dirty.clear();
    }

    fn sync(&mut self, io: &mut impl DgramTransport, i: usize, now: u64) {
        let s = &mut self.socks[i];
        if s.phase != Phase::Open {
            return;
        }
        s.flow.fill(now);
        while !s.write_blocked
            && let Some((slot, head, body)) = s.flow.peek_send()
        {
            match io.send(i, slot, &head, body) {
                Ok(DgramSend::Pending) => s.flow.begin_send(now, true),
                Ok(DgramSend::Done) => s.flow.begin_send(now, false),
                Ok(DgramSend::Blocked) => s.write_blocked = true,
                Err(e) => return self.fail(i, &e),
            }
        }
        if s.flow.is_drained() {
            self.end(i);
        }
    }
}
