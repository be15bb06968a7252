//! The io_uring backend: one ring per shard, one completion dispatcher, one loop.
//!
//! Each loop turn: publish returned buffers, move queued SQEs into the submission ring, make
//! **one** `io_uring_enter` that submits them and waits for completions, then handle every
//! completion. Handling a completion updates the connection's [`Conn`] and then *reconciles*:
//! compares what the connection wants (a send, a receive, a close) with what is in flight, and
//! queues the SQEs that close the gap (see `UringShard::sync`).

mod buf_ring;
mod ops;
mod setup;

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Submitter, cqueue, squeue, types};
use slab::Slab;

pub use buf_ring::{BufRing, BufRingError};
pub use setup::{Features, RingConfig, RingMode, build_ring};

use crate::conn::{Conn, Limits, SendSpan};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::server::{ServerConfig, ShardContext, ShardEvent, table_headroom};
use crate::stats::Counters;
use crate::token::{GENERATION_MASK, Op, Token};

/// Buffer group id of the shard's buffer ring.
const BGID: u16 = 0;
/// A turn that handled at least this many completions counts as busy (batch the next wait).
const BUSY_TURN: usize = 8;
/// After an accept ended on an error, wait this long before re-arming it.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// Where a connection's receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvState {
    /// Nothing armed.
    Idle,
    /// A receive is armed (multishot or single-shot).
    Armed,
    /// A cancellation of the armed receive is in flight.
    Cancelling,
    /// The last receive ended with `-ENOBUFS`; waiting for buffers to come back.
    Parked,
}

/// Where a connection's life stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Sending and receiving.
    Open,
    /// Closing: every operation on the descriptor was cancelled; waiting for them to complete.
    Cancelling,
    /// The close is in flight; the slot is freed by its completion.
    Closing,
}

/// A connection as the io_uring backend sees it.
struct Slot<P> {
    conn: Conn<P>,
    /// Direct-descriptor index in the registered file table.
    fd: u32,
    generation: u32,
    recv: RecvState,
    phase: Phase,
    /// Operations on this connection whose final CQE has not arrived.
    ops: u32,
    /// Length of the outstanding send (to detect short sends).
    send_len: u32,
    /// A receive completed at least once (so arming again counts as a re-arm).
    received: bool,
}

/// Where a listener's multishot accept stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptState {
    Idle,
    Armed,
    Cancelling,
}

struct Listener {
    /// Closed once shutdown has ended its accept, so new clients are refused at once.
    socket: Option<TcpListener>,
    accept: AcceptState,
    armed_once: bool,
}

/// One shard's state, everything except the ring itself (which the loop borrows split).
struct UringShard<P> {
    proto: P,
    features: Features,
    bufs: BufRing,
    conns: Slab<Slot<P>>,
    listeners: Vec<Listener>,
    limits: Limits,
    max_conns: usize,
    /// Most buffers that owed data may hold before received bytes are copied out instead.
    buf_budget: usize,
    multishot_recv: bool,
    batch_max: u32,
    batch_wait_us: u32,
    drain_timeout: Duration,
    shutdown_fd: RawFd,
    /// SQEs decided this turn, submitted by the next enter.
    pending: Vec<squeue::Entry>,
    /// Connections parked on `-ENOBUFS`, in arrival order.
    parked: std::collections::VecDeque<(usize, u32)>,
    next_generation: u32,
    accept_retry_at: Option<Instant>,
    /// Shutdown has started.
    draining: bool,
    /// When owed bytes stop being waited for (taken when it fires).
    drain_deadline: Option<Instant>,
    counters: Counters,
    kernel_dropped_seen: u32,
}

/// Runs one io_uring shard until shutdown. Creates the ring and registers everything on the
/// calling thread (`IORING_SETUP_SINGLE_ISSUER` requires it).
pub(crate) fn run_shard<P: Protocol + Clone>(
    cfg: &ServerConfig,
    proto: P,
    mut ctx: ShardContext,
) -> Result<(), Error> {
    let (mut ring, features) = build_ring(&cfg.ring)?;
    features.require_server_minimum()?;
    let max_conns = cfg.max_conns.expect("validated config");
    let table = (max_conns + table_headroom(max_conns)) as u32;
    ring.submitter()
        .register_files_sparse(table)
        .map_err(|e| Error::io(format!("cannot register a file table of {table} slots"), e))?;
    let mut bufs = BufRing::new(cfg.buf_count, cfg.buf_size, BGID)
        .map_err(|e| Error::Config(e.to_string()))?;
    bufs.register(&ring.submitter()).map_err(|e| {
        Error::io(
            format!(
                "cannot register a buffer ring of {} x {} bytes (RLIMIT_MEMLOCK?)",
                cfg.buf_count, cfg.buf_size
            ),
            e,
        )
    })?;
    let multishot_recv = cfg.multishot_recv && features.multishot_recv;
    let buf_budget = cfg.buf_budget.unwrap_or(cfg.buf_count / 2) as usize;
    if ctx.index == 0 {
        eprintln!(
            "ringecho: io_uring kernel={} mode={} sq={} cq={} nodrop={} bufs={}x{}B budget={} \
             files={} max_conns={} recv={} batch={}",
            features.kernel,
            features.mode,
            features.sq_entries,
            features.cq_entries,
            features.nodrop,
            cfg.buf_count,
            cfg.buf_size,
            buf_budget,
            table,
            max_conns,
            if multishot_recv {
                "multishot"
            } else {
                "single-shot"
            },
            match (cfg.batch_wait_us, features.min_timeout) {
                (0, _) => "off".to_string(),
                (w, true) => format!("{}/{}us(min-wait)", cfg.batch_max, w),
                (w, false) => format!("{}/{}us(timeout)", cfg.batch_max, w),
            }
        );
    }
    let mut shard = UringShard {
        proto,
        bufs,
        conns: Slab::with_capacity(1024.min(max_conns)),
        listeners: std::mem::take(&mut ctx.listeners)
            .into_iter()
            .map(|socket| Listener {
                socket: Some(socket),
                accept: AcceptState::Idle,
                armed_once: false,
            })
            .collect(),
        limits: Limits {
            max_pending: cfg.max_pending,
        },
        max_conns,
        buf_budget,
        multishot_recv,
        batch_max: cfg.batch_max.max(1),
        batch_wait_us: cfg.batch_wait_us,
        drain_timeout: cfg.drain_timeout,
        shutdown_fd: ctx.shutdown_fd,
        pending: Vec::with_capacity(features.sq_entries as usize),
        parked: Default::default(),
        next_generation: 0,
        accept_retry_at: None,
        draining: false,
        drain_deadline: None,
        counters: Counters::default(),
        kernel_dropped_seen: 0,
        features,
    };
    let result = shard.run(&mut ring, &ctx);
    ctx.stats.publish(&shard.counters);
    if result.is_ok() {
        // Every connection is closed and every accept ended: no receive can pick a buffer.
        shard
            .bufs
            .unregister(&ring.submitter())
            .map_err(|e| Error::io("cannot unregister the buffer ring", e))?;
    }
    // The ring goes first: buffer memory is unmapped only after the kernel let go of the ring.
    drop(ring);
    drop(shard);
    result
}

impl<P: Protocol + Clone> UringShard<P> {
    fn run(&mut self, ring: &mut IoUring, ctx: &ShardContext) -> Result<(), Error> {
        let (submitter, mut sq, mut cq) = ring.split();
        self.pending.push(ops::poll_readable(
            self.shutdown_fd,
            Token::shard(Op::Shutdown),
        ));
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.flush(&mut sq, &submitter)?;
        self.enter(&submitter, 0, None, 0)?;
        let _ = ctx.events.send(ShardEvent::Ready);

        let mut last_turn = 0usize;
        loop {
            let now = Instant::now();
            self.on_timers(now);
            if self.is_finished() {
                break;
            }
            self.bufs.publish();
            self.flush(&mut sq, &submitter)?;
            let (want, min_wait_us, timeout) = self.wait_policy(last_turn, now);
            self.enter(&submitter, want, timeout, min_wait_us)?;
            if sq.cq_overflow() {
                self.counters.cq_overflows += 1;
            }
            let dropped = cq.overflow();
            if dropped != self.kernel_dropped_seen {
                self.counters.cq_dropped +=
                    u64::from(dropped.wrapping_sub(self.kernel_dropped_seen));
                self.kernel_dropped_seen = dropped;
            }
            let mut handled = 0;
            cq.sync();
            while let Some(cqe) = cq.next() {
                self.dispatch(cqe);
                handled += 1;
                if cq.is_empty() {
                    // Publish the head so the kernel may post into the space we freed.
                    cq.sync();
                }
            }
            self.rearm_parked();
            last_turn = handled;
            self.counters.events += handled as u64;
            self.counters.active = self.conns.len() as u64;
            self.counters.bufs_held = self.bufs.held() as u64;
            ctx.stats.publish(&self.counters);
        }
        Ok(())
    }

    /// How to wait this turn: `(want, min_wait_us, timeout)`.
    ///
    /// After a busy turn, ask for a batch: up to `batch_max` completions, but return once
    /// `batch_wait_us` passed with at least one (`IORING_FEAT_MIN_TIMEOUT`, 6.12), or, on older
    /// kernels, when a timeout of `batch_wait_us` expires. After a quiet turn, wait for one
    /// completion, so a lone connection never waits out a batch window.
    fn wait_policy(&self, last_turn: usize, now: Instant) -> (usize, u32, Option<Duration>) {
        let deadline = [self.drain_deadline, self.accept_retry_at]
            .into_iter()
            .flatten()
            .min()
            .map(|d| d.saturating_duration_since(now));
        if last_turn < BUSY_TURN || self.batch_wait_us == 0 {
            return (1, 0, deadline);
        }
        let window = Duration::from_micros(u64::from(self.batch_wait_us));
        if self.features.min_timeout {
            // A min-wait needs a timeout beside it, or an idle ring spins through empty enters.
            let timeout = deadline.unwrap_or(Duration::from_secs(1));
            (self.batch_max as usize, self.batch_wait_us, Some(timeout))
        } else {
            let timeout = deadline.map_or(window, |d| d.min(window));
            (self.batch_max as usize, 0, Some(timeout))
        }
    }

    /// One `io_uring_enter`: submits everything queued and waits as asked.
    fn enter(
        &mut self,
        submitter: &Submitter<'_>,
        want: usize,
        timeout: Option<Duration>,
        min_wait_us: u32,
    ) -> Result<(), Error> {
        self.counters.enters += 1;
        self.counters.syscalls += 1;
        let ts = timeout.map(types::Timespec::from);
        let result = match &ts {
            Some(ts) => {
                let args = types::SubmitArgs::new()
                    .timespec(ts)
                    .min_wait_usec(min_wait_us);
                submitter.submit_with_args(want, &args)
            }
            None => submitter.submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Timeouts and signals are ordinary wake-ups; EBUSY means the CQ is full of
                // completions we have not read yet, which the next turn reads.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                Some(libc::EBADR) => {
                    // The kernel had to drop completions (no memory for overflow entries).
                    self.counters.cq_dropped += 1;
                    Ok(())
                }
                _ => Err(Error::io("io_uring_enter", e)),
            },
        }
    }

    /// Moves queued SQEs into the submission ring, submitting early if it fills.
    fn flush(
        &mut self,
        sq: &mut io_uring::SubmissionQueue<'_>,
        submitter: &Submitter<'_>,
    ) -> Result<(), Error> {
        sq.sync();
        for sqe in self.pending.drain(..) {
            loop {
                // SAFETY: every buffer an SQE points at outlives its operation: sends point at
                // provided buffers held by a reference until the send's CQE, or at a chunk the
                // connection keeps untouched while in flight (see `conn`'s in-flight invariant);
                // no other SQE carries a pointer.
                if unsafe { sq.push(&sqe) }.is_ok() {
                    break;
                }
                sq.sync();
                self.counters.enters += 1;
                self.counters.syscalls += 1;
                match submitter.submit() {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) => return Err(Error::io("io_uring_enter (submit)", e)),
                }
                sq.sync();
            }
        }
        sq.sync();
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.draining
            && self.conns.is_empty()
            && self.listeners.iter().all(|l| l.accept == AcceptState::Idle)
    }

    fn on_timers(&mut self, now: Instant) {
        if let Some(at) = self.accept_retry_at
            && now >= at
        {
            self.accept_retry_at = None;
            self.arm_accepts();
        }
        if let Some(at) = self.drain_deadline
            && now >= at
        {
            self.drain_deadline = None;
            // Drain time is up: close whatever is still open, owed bytes or not.
            let open: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, s)| s.phase == Phase::Open)
                .map(|(k, _)| k)
                .collect();
            for key in open {
                self.begin_close(key);
            }
        }
    }

    // ---- completion dispatch -------------------------------------------------------------

    fn dispatch(&mut self, cqe: cqueue::Entry) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(tok) = Token::decode(cqe.user_data()) else {
            self.counters.stale_cqes += 1;
            return;
        };
        if tok.slot == Token::SHARD {
            return self.on_shard_cqe(tok, res, flags);
        }
        let key = tok.slot as usize;
        let live = self
            .conns
            .get(key)
            .is_some_and(|s| s.generation == tok.generation);
        if !live {
            // Cannot happen (slots are freed only when no operation is outstanding), but if it
            // did, the completion must not reach the connection now in this slot. A buffer it
            // carries is ours and goes back to the ring.
            self.counters.stale_cqes += 1;
            if let Some(bid) = cqueue::buffer_select(flags)
                && self.bufs.take(bid)
            {
                self.bufs.release(bid);
            }
            return;
        }
        let final_cqe = !(tok.op == Op::Recv && cqueue::more(flags));
        if final_cqe {
            self.conns[key].ops -= 1;
        }
        match tok.op {
            Op::Recv => self.on_recv(key, res, flags),
            Op::Send => self.on_send(key, res),
            Op::Close => {
                self.on_closed(key);
                return;
            }
            // Cancellation results (count, -ENOENT, -EALREADY) need no action: the cancelled
            // operation reports through its own CQE.
            _ => {}
        }
        self.sync(key);
    }

    fn on_shard_cqe(&mut self, tok: Token, res: i32, flags: u32) {
        match tok.op {
            Op::Accept => {
                let idx = tok.generation as usize;
                let Some(l) = self.listeners.get_mut(idx) else {
                    self.counters.stale_cqes += 1;
                    return;
                };
                let more = cqueue::more(flags);
                if !more {
                    l.accept = AcceptState::Idle;
                    if self.draining {
                        l.socket = None;
                    }
                }
                if res >= 0 {
                    self.on_accepted(res as u32);
                } else if res != -libc::ECANCELED {
                    // -ENFILE: the table was full, the kernel closed that connection. Other
                    // errors (a peer gone before accept) are transient.
                    self.counters.accept_errors += 1;
                    if !more {
                        self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    }
                }
                if !more {
                    self.arm_accepts();
                }
            }
            Op::Shutdown => self.begin_drain(),
            _ => {}
        }
    }

    fn on_accepted(&mut self, fd: u32) {
        self.counters.accepted += 1;
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let mut conn = Conn::new(self.proto.clone());
        if self.draining {
            conn.begin_shutdown();
        }
        let key = self.conns.insert(Slot {
            conn,
            fd,
            generation,
            recv: RecvState::Idle,
            phase: Phase::Open,
            ops: 0,
            send_len: 0,
            received: false,
        });
        self.sync(key);
        if self.conns.len() >= self.max_conns {
            // At the cap: stop accepting; new clients wait in the listen backlog.
            self.pause_accepts();
        }
    }

    fn on_recv(&mut self, key: usize, res: i32, flags: u32) {
        let slot = &mut self.conns[key];
        slot.received = true;
        if !cqueue::more(flags) {
            slot.recv = RecvState::Idle;
        }
        let bid = cqueue::buffer_select(flags);
        if res <= 0
            && let Some(bid) = bid
            && self.bufs.take(bid)
        {
            // No data, but a buffer was consumed: straight back to the ring.
            self.bufs.release(bid);
        }
        match res {
            n if n > 0 => {
                let Some(bid) = bid.filter(|&b| self.bufs.take(b)) else {
                    // Data without a buffer we can account for: the kernel and we disagree.
                    self.counters.conn_errors += 1;
                    return self.begin_close(key);
                };
                let n = n as usize;
                self.counters.recv_cqes += 1;
                self.counters.bytes_in += n as u64;
                let zero_copy = self.bufs.held() <= self.buf_budget;
                let was_paused = slot.conn.is_paused();
                let out = slot.conn.on_recv(
                    self.bufs.data(bid, n),
                    zero_copy.then_some(bid),
                    &self.limits,
                );
                if out.ring_refs > 0 {
                    self.bufs.add_refs(bid, out.ring_refs);
                }
                self.bufs.release(bid);
                self.counters.copied_bytes += out.copied as u64;
                if let Some(reason) = out.closed_by_protocol {
                    self.counters.count_proto_close(reason);
                }
                if !was_paused && slot.conn.is_paused() {
                    self.counters.paused += 1;
                }
            }
            0 => slot.conn.on_eof(),
            e if e == -libc::ENOBUFS => {
                self.counters.enobufs += 1;
                if slot.recv == RecvState::Idle && slot.phase == Phase::Open {
                    slot.recv = RecvState::Parked;
                    self.parked.push_back((key, slot.generation));
                }
            }
            e if e == -libc::ECANCELED => {}
            _ => {
                self.counters.conn_errors += 1;
                self.begin_close(key);
            }
        }
    }

    fn on_send(&mut self, key: usize, res: i32) {
        let slot = &mut self.conns[key];
        if res < 0 || (res == 0 && slot.send_len > 0) {
            slot.conn.on_send_failed();
            if res != -libc::ECANCELED {
                self.counters.conn_errors += 1;
            }
            return self.begin_close(key);
        }
        self.counters.sends += 1;
        self.counters.bytes_out += res as u64;
        if (res as u32) < slot.send_len {
            self.counters.short_sends += 1;
        }
        let bufs = &mut self.bufs;
        slot.conn
            .on_sent(res as usize, &self.limits, |bid| bufs.release(bid));
    }

    fn on_closed(&mut self, key: usize) {
        let mut slot = self.conns.remove(key);
        debug_assert_eq!(slot.ops, 0);
        let bufs = &mut self.bufs;
        slot.conn.release_all(|bid| bufs.release(bid));
        self.counters.closed += 1;
        self.arm_accepts();
    }

    // ---- reconciliation --------------------------------------------------------------------

    /// Queues whatever closes the gap between what connection `key` wants and what is in
    /// flight for it. Called after every event on the connection.
    fn sync(&mut self, key: usize) {
        let slot = &mut self.conns[key];
        match slot.phase {
            Phase::Open => {}
            Phase::Cancelling => {
                if slot.ops == 0 {
                    // Nothing references the socket any more: this close sends FIN (or RST
                    // if unread data remains) and frees the table slot.
                    slot.phase = Phase::Closing;
                    slot.ops += 1;
                    let tok = Token::conn(key, slot.generation, Op::Close);
                    self.pending.push(ops::close_fixed(slot.fd, tok));
                }
                return;
            }
            Phase::Closing => return,
        }
        if slot.conn.is_done() {
            return self.begin_close(key);
        }
        if let Some(span) = slot.conn.next_send() {
            let (ptr, len) = match span {
                SendSpan::Ring { bid, offset, len } => (self.bufs.addr(bid, offset), len),
                SendSpan::Mem(b) => (b.as_ptr(), b.len().min(u32::MAX as usize) as u32),
            };
            slot.send_len = len;
            slot.ops += 1;
            let tok = Token::conn(key, slot.generation, Op::Send);
            self.pending.push(ops::send(slot.fd, ptr, len, tok));
        }
        let want = slot.conn.recv_wanted();
        match (slot.recv, want) {
            (RecvState::Idle, true) => {
                let tok = Token::conn(key, slot.generation, Op::Recv);
                self.pending.push(if self.multishot_recv {
                    ops::recv_multi(slot.fd, BGID, tok)
                } else {
                    ops::recv_single(slot.fd, BGID, self.bufs.buf_size(), tok)
                });
                slot.recv = RecvState::Armed;
                slot.ops += 1;
                if slot.received {
                    self.counters.recv_rearms += 1;
                }
            }
            (RecvState::Armed, false) => {
                // A multishot receive cannot be paused, only cancelled. Completions racing the
                // cancel still carry data, and it is still echoed.
                let target = Token::conn(key, slot.generation, Op::Recv);
                let tok = Token::conn(key, slot.generation, Op::CancelRecv);
                self.pending.push(ops::cancel(target, tok));
                slot.recv = RecvState::Cancelling;
                slot.ops += 1;
            }
            (RecvState::Parked, false) => slot.recv = RecvState::Idle,
            _ => {}
        }
    }

    /// Starts closing connection `key`: cancel everything on its descriptor, then (in `sync`,
    /// once nothing is outstanding) close it.
    fn begin_close(&mut self, key: usize) {
        let slot = &mut self.conns[key];
        if slot.phase != Phase::Open {
            return;
        }
        slot.phase = Phase::Cancelling;
        if slot.ops > 0 {
            let tok = Token::conn(key, slot.generation, Op::CancelAll);
            self.pending.push(ops::cancel_all_on(slot.fd, tok));
            slot.ops += 1;
        }
        self.sync(key);
    }

    /// Re-arms parked receives, at most one per buffer now available, oldest first.
    fn rearm_parked(&mut self) {
        let mut budget = self.bufs.available();
        while budget > 0
            && let Some((key, generation)) = self.parked.pop_front()
        {
            let Some(slot) = self.conns.get_mut(key) else {
                continue;
            };
            if slot.generation != generation || slot.recv != RecvState::Parked {
                continue;
            }
            slot.recv = RecvState::Idle;
            budget -= 1;
            self.sync(key);
        }
    }

    // ---- accept and shutdown ---------------------------------------------------------------

    fn arm_accept(&mut self, idx: usize) {
        let l = &mut self.listeners[idx];
        let Some(socket) = &l.socket else {
            return;
        };
        if l.accept != AcceptState::Idle {
            return;
        }
        self.pending
            .push(ops::accept_multi(socket.as_raw_fd(), idx));
        l.accept = AcceptState::Armed;
        if l.armed_once {
            self.counters.accept_rearms += 1;
        }
        l.armed_once = true;
    }

    /// Arms every idle accept, unless draining, at the connection cap, or backing off.
    fn arm_accepts(&mut self) {
        if self.draining || self.accept_retry_at.is_some() || self.conns.len() >= self.max_conns {
            return;
        }
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
    }

    fn pause_accepts(&mut self) {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.accept == AcceptState::Armed {
                self.pending.push(ops::cancel_accept(i));
                l.accept = AcceptState::Cancelling;
            }
        }
    }

    fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.drain_deadline = Some(Instant::now() + self.drain_timeout);
        self.pause_accepts();
        for l in &mut self.listeners {
            if l.accept == AcceptState::Idle {
                l.socket = None;
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns[key].conn.begin_shutdown();
            self.sync(key);
        }
    }
}

/// Describes why io_uring is unusable for a server here, or `Ok` with what it offers. Used by
/// `ringecho probe` and by tests that need io_uring.
pub fn probe(ring: &RingConfig) -> Result<Features, Error> {
    let (_ring, features) = build_ring(ring)?;
    Ok(features)
}

/// Lets a caller map an `io::Error` from ring set-up the same way the server does.
pub fn unavailable(e: io::Error) -> Error {
    setup::unavailable(e, crate::sys::KernelVersion::current())
}
