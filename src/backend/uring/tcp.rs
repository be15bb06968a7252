//! TCP on io_uring: one shard's loop, from multishot accepts to the close of each connection.
//!
//! Each loop turn: publish returned buffers, give every connection that owes bytes one send,
//! make one `io_uring_enter` (through the driver) that submits the turn's SQEs and waits for
//! completions, then dispatch every completion by its [`Token`]. Handling a completion
//! updates the connection's `Conn`, then `UringShard::sync` reconciles what the connection
//! wants with what is in flight. The [crate docs](crate#the-life-of-a-message) follow one
//! message through it, function by function.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, squeue};
use slab::Slab;

use super::driver::{self, Driver};
use super::setup::RingMode;
use super::{
    BGID, BufRing, Features, LARGE_BGID, Pools, ShardMemory, buf_ring, build_ring, catch_panic,
    finish_shard, ops,
};
use crate::backend::Timers;
use crate::backend::shard::{ShardConfig, ShardContext, ShardEvent, table_headroom};
use crate::backend::streams::{self, Window};
use crate::conn::{Chunk, Conn, Limits, SendSpan};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::stats::Counters;
use crate::token::{GENERATION_MASK, Op, Target, Token};

/// Small receives in a row that return a stream to multishot receiving.
const STREAM_RECVS: u8 = 16;
/// Size of the large buffers streams receive into (`Pools`): the epoll backend's read
/// buffer, and the most a loopback TCP segment carries.
const STREAM_BUF_SIZE: u32 = 64 * 1024;
/// After an accept ended on an error, wait this long before re-arming it.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);
/// Most bytes one send carries (its completion reports the count as an `i32`); whatever is
/// owed beyond goes out with the next send.
const MAX_SEND_BYTES: usize = 1 << 30;

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
    /// The close is in flight; the connection key is freed by its completion.
    Closing,
}

/// A connection as the io_uring backend sees it.
struct UringConn<P> {
    conn: Conn<P>,
    /// The socket: a direct descriptor (its file slot in the registered file table, chosen by
    /// the kernel at accept; not the connection key, the index of this entry in `conns`), or
    /// an ordinary descriptor on kernels that release closed direct descriptors late.
    sock: ops::Sock,
    generation: u32,
    recv: RecvState,
    phase: Phase,
    /// Operations on this connection whose final CQE has not arrived.
    ops: u32,
    /// Length of the outstanding send (to detect short sends).
    send_len: u64,
    /// The outstanding vectored send's `msghdr` and `iovec`s (returned at its final CQE).
    send_vec: Option<Box<ops::SendVec>>,
    /// Queued in `UringShard::dirty`: its sends are decided before the next enter.
    dirty: bool,
    /// The operation of the outstanding send (`Send`, or a zero-copy `SendZc0`/`SendZc1`),
    /// which its cancellation names.
    send_op: Op,
    /// Zero-copy sends whose notification has not come (made on the first one).
    zc: Option<Box<ZcRetired>>,
    /// A receive completed at least once (so arming again counts as a re-arm).
    received: bool,
    /// While non-zero, receive with single-shot receives (one per turn) instead of a multishot
    /// one: set to `STREAM_RECVS` when the connection reaches its back-pressure watermark (a
    /// stream), counted down by each receive that brings less than one buffer, back to
    /// `STREAM_RECVS` by one that brings more. See `UringShard::sync`.
    stream_recvs: u8,
    /// What the peer was seen to have in flight (from uncapped bundle receives), and so the
    /// cap of its pieces.
    window: Window,
    /// The armed receive is a multishot one (never capped).
    multishot: bool,
    /// The piece buffer (`Pools::pieces`) the armed receive writes into when it is a piece of
    /// a capped stream; `None` when it takes provided buffers, or none is armed. The
    /// receive's reference to it is dropped at the receive's completion (`on_piece`).
    piece: Option<u16>,
    /// Pieces since the last look at how much the socket holds (`Window::sample`) at
    /// `streams::SAMPLE_EVERY`: a `SIOCINQ` socket command, or, on kernels without one, an
    /// uncapped single-shot receive in place of the next piece.
    pieces: u16,
    /// Queued in `UringShard::waiting`: a piece to receive once its turn comes.
    waiting: bool,
    /// Last time bytes moved either way (for `--idle-timeout`).
    last_active: Instant,
}

/// A connection's zero-copy sends whose notification has not come yet.
///
/// A zero-copy send posts its result, then (once the kernel no longer reads the memory) a
/// notification. The bytes count as sent at the result, so the connection's next send can
/// start at once; only the memory must wait. The chunks the send finished are retired here,
/// memory and buffer references untouched, and dropped when the notification comes, in send
/// order (a chunk sent in part by one send and finished by the next must outlive both).
/// Consecutive zero-copy sends alternate between two operations (`Op::SendZc0`, `Op::SendZc1`,
/// both copied into their notifications), so a notification names its send; a third waits
/// for the first one's notification by going out as an ordinary, copying send.
#[derive(Default)]
struct ZcRetired {
    /// By operation (`SendZc0`, `SendZc1`): the send using it.
    sends: [Option<ZcSend>; 2],
    /// Number of the next zero-copy send.
    next: u64,
}

struct ZcSend {
    /// Its number among the connection's zero-copy sends.
    seq: u64,
    /// The chunks it finished (their memory may still be read by the kernel).
    retired: Vec<Chunk>,
    /// Its notification has come (or none will: a result without `IORING_CQE_F_MORE`).
    notified: bool,
}

impl ZcRetired {
    /// Which of the two operations the next zero-copy send would use, if it is free.
    fn free_op(&self) -> Option<usize> {
        let i = (self.next % 2) as usize;
        self.sends[i].is_none().then_some(i)
    }

    /// Drops, oldest first, every send whose notification has come and that no older send is
    /// still waiting on; `release` gets each retired ring buffer's id.
    fn release_notified(&mut self, mut release: impl FnMut(u16)) {
        loop {
            let oldest = (0..2)
                .filter(|&i| self.sends[i].is_some())
                .min_by_key(|&i| self.sends[i].as_ref().map(|s| s.seq));
            let Some(i) = oldest else {
                return;
            };
            if !self.sends[i].as_ref().is_some_and(|s| s.notified) {
                return;
            }
            for chunk in self.sends[i].take().map(|s| s.retired).unwrap_or_default() {
                if let Chunk::Ring { bid, .. } = chunk {
                    release(bid);
                }
            }
        }
    }
}

fn zc_op(i: usize) -> Op {
    if i == 0 { Op::SendZc0 } else { Op::SendZc1 }
}

/// Where a listener's multishot accept stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptState {
    Idle,
    Armed,
    Cancelling,
}

struct Listener {
    /// Closed once shutdown has ended its accepts, so new clients are refused at once.
    socket: Option<TcpListener>,
    /// The multishot accept.
    multishot: AcceptState,
    /// Single-shot accepts outstanding (near the connection cap).
    singles: usize,
    armed_once: bool,
    /// After an accept on this listener ended on an error: not re-armed before this instant.
    /// Each listener backs off alone; the others keep accepting.
    retry_at: Option<Instant>,
}

impl Listener {
    fn idle(&self) -> bool {
        self.multishot == AcceptState::Idle && self.singles == 0
    }
}

/// Most piece buffers per shard (`streams::WHOLE_CAP` bytes each, 4 MiB in all, made on
/// first use): one per stream with a piece receive out, and those owed data holds; a stream
/// that finds none free receives into provided buffers for that turn.
const PIECE_BUFS: usize = 64;
// Every stream taken one piece per enter can have a piece out while owed data holds half.
const _: () = assert!(streams::MOST_STREAMS as usize * 2 <= PIECE_BUFS);

/// Single-shot accepts kept outstanding per listener near the cap.
const SINGLES_PER_LISTENER: usize = 16;

/// One shard's state, everything except the ring itself (which the loop borrows split).
struct UringShard<P> {
    proto: P,
    features: Features,
    bufs: Pools,
    conns: Slab<UringConn<P>>,
    listeners: Vec<Listener>,
    limits: Limits,
    max_conns: usize,
    /// Most buffers that owed data may hold before received bytes are copied out instead.
    buf_budget: usize,
    /// Room below `max_conns` needed to use a multishot accept (see `update_accepts`).
    multishot_floor: usize,
    multishot_recv: bool,
    /// Connections are direct descriptors (else ordinary ones; see `ops::Sock`).
    direct: bool,
    /// Receives are bundles (one completion for several buffers).
    recv_bundle: bool,
    /// Streams are received in capped pieces (`Window::cap`; needs bundles, see `on_piece`).
    recv_cap: bool,
    /// A capped stream's look at its socket is a `SIOCINQ` socket command (6.7); without it,
    /// an uncapped single-shot receive takes the place of a piece.
    sock_inq: bool,
    /// Connections that are streams (`UringConn::window`).
    streams: u32,
    /// Scratch list of the buffers one completion covers.
    segs: Vec<buf_ring::Segment>,
    /// Sends at least this long go out as zero-copy sends.
    zc_threshold: Option<u32>,
    batch_max: u32,
    batch_wait_us: u32,
    drain_timeout: Duration,
    shutdown_fd: RawFd,
    /// SQEs decided this turn, submitted by the next enter.
    pending: Vec<squeue::Entry>,
    /// Connections that may owe bytes with no send outstanding, in the order they asked; each
    /// gets one send for everything it owes just before the enter (`start_sends`).
    dirty: Vec<(usize, u32)>,
    /// Spare `SendVec`s: one is lent to each connection with a vectored send outstanding.
    /// Boxed: the kernel reads one at its address while it is lent, wherever the box moves.
    #[allow(clippy::vec_box)]
    send_vecs: Vec<Box<ops::SendVec>>,
    /// Connections parked on `-ENOBUFS`, in arrival order.
    parked: std::collections::VecDeque<(usize, u32)>,
    /// With `streams::MANY_STREAMS` to `MOST_STREAMS` streams, those wanting a piece, in order:
    /// one is armed per enter (see `sync`).
    waiting: std::collections::VecDeque<(usize, u32)>,
    /// A receive of a stream taken one piece per enter was armed since the last enter (at
    /// most one is: `sync`; usually into a piece buffer, else a bundle).
    piece_armed: bool,
    next_generation: u32,
    /// Shutdown has started.
    draining: bool,
    /// Idle, lingering, accept back-off and drain deadlines.
    timers: Timers,
    counters: Counters,
    /// Read once per loop turn, after the wait.
    now: Instant,
}

/// Runs one io_uring shard until shutdown. Creates the ring and registers everything on the
/// calling thread (`IORING_SETUP_SINGLE_ISSUER` requires it).
pub(crate) fn run_shard<P: Protocol + Clone>(
    cfg: &ShardConfig,
    proto: P,
    mut ctx: ShardContext,
) -> Result<(), Error> {
    let (buf_count, buf_size) = (cfg.buf_count, cfg.buf_size);
    let (mut ring, features) = build_ring(&cfg.ring)?;
    features.require_server_minimum()?;
    let max_conns = cfg.max_conns;
    let table = (max_conns + table_headroom(max_conns)) as u32;
    let direct = cfg.direct_descriptors && features.direct_close;
    if direct {
        ring.submitter()
            .register_files_sparse(table)
            .map_err(|e| Error::io(format!("cannot register a file table of {table} slots"), e))?;
    }
    let recv_bundle = cfg.recv_bundle && features.recv_bundle;
    let incremental = cfg.buf_incremental && features.buf_ring_inc;
    // SAFETY: only this ring's receive completions reach `on_completion` (via `dispatch`), and
    // the buffer ring is unregistered only after a clean finish, with no receive outstanding
    // (`finish_shard`).
    let small = unsafe {
        BufRing::create_and_register(
            &ring.submitter(),
            (buf_count, buf_size),
            (BGID, 0),
            incremental,
        )
    }?;
    // The large buffers' ids follow the small ones' (at most 32768 + 16384 ids).
    // Only streams taken whole use it, which takes bundles.
    let large = match cfg.stream_bufs {
        _ if !recv_bundle => None,
        0 => None,
        n => {
            // SAFETY: as for the small ring: only this ring's completions reach
            // `on_completion`, and it is unregistered with the small one (`finish_shard`).
            Some(unsafe {
                BufRing::create_and_register(
                    &ring.submitter(),
                    (n, STREAM_BUF_SIZE),
                    (LARGE_BGID, buf_count as u16),
                    false,
                )
            }?)
        }
    };
    let bufs = Pools::new(small, large, PIECE_BUFS, streams::WHOLE_CAP as usize);
    let stream_bufs = bufs.large.as_ref().map_or(0, BufRing::count);
    let multishot_recv = cfg.multishot_recv && features.multishot_recv;
    // Pieces need bundles (a stream is told by what its uncapped bundle receives take); the
    // 5.19 single-shot mode (`--no-multishot-recv`) keeps to its one kind of receive.
    let recv_cap = cfg.recv_cap && recv_bundle && multishot_recv;
    let buf_budget = cfg.buf_budget as usize;
    // Printed by shard 0 once the ring fd registration is known (in `run`).
    let startup_line = (ctx.index == 0).then(|| {
        format!(
            "ringecho: io_uring shards={} kernel={} mode={} sq={} cq={} nodrop={} bufs={}x{}B{} \
             budget={} files={} max_conns={} recv={}{}{}{} batch={} zc={}",
            ctx.shards,
            features.kernel,
            features.mode,
            features.sq_entries,
            features.cq_entries,
            features.nodrop,
            buf_count,
            buf_size,
            match stream_bufs {
                0 => String::new(),
                n => format!("+{n}x{STREAM_BUF_SIZE}B(streams)"),
            },
            buf_budget,
            if direct {
                format!("{table}(direct)")
            } else {
                // Before 6.13 a closed direct descriptor stays open behind older requests.
                "ordinary".to_string()
            },
            max_conns,
            if multishot_recv {
                "multishot"
            } else {
                "single-shot"
            },
            if recv_bundle { "+bundle" } else { "" },
            if incremental { "+incremental" } else { "" },
            match (recv_cap, features.sock_inq) {
                (true, true) => "+cap+inq",
                (true, false) => "+cap",
                (false, _) => "",
            },
            match (cfg.batch_wait_us, features.min_timeout) {
                (0, _) => "off".to_string(),
                (w, true) => format!("{}/{}us(min-wait)", cfg.batch_max, w),
                (w, false) => format!("{}/{}us(timeout)", cfg.batch_max, w),
            },
            match (cfg.zc_threshold, features.send_zc) {
                (Some(t), true) => format!(">={t}B"),
                (Some(_), false) => "unsupported".to_string(),
                (None, _) => "off".to_string(),
            }
        )
    });
    let multishot_floor = multishot_floor(cfg.backlog, ctx.sockets.len());
    let mut shard = UringShard {
        proto,
        bufs,
        conns: Slab::with_capacity(1024.min(max_conns)),
        listeners: std::mem::take(&mut ctx.sockets)
            .into_iter()
            .map(|socket| Listener {
                socket: Some(TcpListener::from(socket)),
                multishot: AcceptState::Idle,
                singles: 0,
                armed_once: false,
                retry_at: None,
            })
            .collect(),
        limits: Limits {
            max_pending: cfg.max_pending,
        },
        max_conns,
        buf_budget,
        multishot_floor,
        multishot_recv,
        direct,
        recv_bundle,
        recv_cap,
        sock_inq: features.sock_inq,
        streams: 0,
        segs: Vec::with_capacity(16),
        zc_threshold: cfg.zc_threshold.filter(|_| features.send_zc),
        batch_max: cfg.batch_max.max(1),
        batch_wait_us: cfg.batch_wait_us,
        drain_timeout: cfg.drain_timeout,
        shutdown_fd: ctx.shutdown_fd,
        pending: Vec::with_capacity(features.sq_entries as usize),
        dirty: Vec::new(),
        send_vecs: Vec::new(),
        parked: Default::default(),
        waiting: Default::default(),
        piece_armed: false,
        next_generation: 0,
        draining: false,
        timers: Timers::new(cfg.idle_timeout, cfg.lingering_close, Instant::now()),
        counters: Counters::default(),
        now: Instant::now(),
        features,
    };
    let result = catch_panic(|| shard.run(&mut ring, &ctx, cfg.register_ring_fd, startup_line));
    ctx.stats.publish(&shard.counters);
    // After a clean run every connection is closed and every accept ended: no receive can
    // pick a buffer.
    finish_shard(ring, shard, result)
}

impl<P> ShardMemory for UringShard<P> {
    fn unregister_bufs(&mut self, submitter: &io_uring::Submitter<'_>) -> std::io::Result<()> {
        self.bufs.unregister(submitter)
    }

    fn close_descriptors(&mut self) {
        self.listeners.clear();
        for (_, c) in &self.conns {
            if let ops::Sock::Fd(fd) = c.sock {
                // SAFETY: the shard owns this descriptor (accepted for it by the ring) and
                // closes it once; it is not used again (the shard is being abandoned).
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl<P: Protocol + Clone> UringShard<P> {
    fn run(
        &mut self,
        ring: &mut IoUring,
        ctx: &ShardContext,
        register_ring_fd: bool,
        startup_line: Option<String>,
    ) -> Result<(), Error> {
        let (mut submitter, mut sq, mut cq) = ring.split();
        // The registration lives in this one Submitter value: every enter below uses it.
        let ring_fd = if register_ring_fd && self.features.reg_ring_fd {
            match submitter.register_ring_fd() {
                Ok(()) => "registered",
                Err(_) => "unregistered(failed)",
            }
        } else {
            "unregistered"
        };
        if let Some(line) = startup_line {
            eprintln!("{line} ring_fd={ring_fd}");
        }
        ctx.stats.publish(&self.counters);
        self.pending.push(ops::poll_readable(
            self.shutdown_fd,
            Token::shard(Op::Shutdown),
        ));
        self.update_accepts();
        // Sends point at provided buffers held by a reference until the send's completion (a
        // zero-copy send's until its notification), or at memory the connection keeps
        // untouched meanwhile (its owed chunks, retired ones for zero-copy sends); a vectored
        // send's msghdr and iovecs live in the boxed SendVec the connection holds until the
        // result. A capped stream's piece receive writes into a piece buffer (`Pools::pieces`),
        // which lives as long as the shard and is lent again only once the receive's and every
        // reply's references are gone. After a failure the shard's memory is leaked, never
        // freed (`finish_shard`).
        // SAFETY: so the memory every SQE of this shard points at outlives its operation.
        let mut driver = unsafe { Driver::new(&self.features, self.batch_max, self.batch_wait_us) };
        driver.submit(&submitter, &mut sq, &mut self.pending, &mut self.counters)?;
        let _ = ctx.events.send(ShardEvent::Ready);

        let mut last_turn = 0usize;
        loop {
            let now = Instant::now();
            self.on_timers(now);
            if self.is_finished() {
                break;
            }
            self.arm_waiting();
            self.start_sends();
            self.bufs.publish();
            // Streams still waiting for their piece: this enter collects what is ready but
            // does not sleep (a zero timeout), and the next one arms the next piece. The
            // kernel arms a timer for it that fires at once: a local timer interrupt per
            // enter, 10k a second at 4x16384x4. An enter that asks for no completion and
            // arms no timer measured x0.81-0.96 (run 20261208-012455): the shard raced through
            // the queue and then slept, and on these VMs the peers paid dearly to wake it.
            let deadline = match self.waiting.is_empty() {
                true => self.timers.next(),
                false => Some(now),
            };
            driver.turn(
                &submitter,
                &mut sq,
                &mut cq,
                &mut self.pending,
                last_turn,
                deadline,
                &mut self.counters,
            )?;
            self.now = Instant::now();
            self.piece_armed = false;
            last_turn = driver::reap(&mut cq, |cqe| self.dispatch(cqe));
            self.rearm_parked();
            self.counters.events += last_turn as u64;
            self.counters.active = self.conns.len() as u64;
            self.counters.bufs_held = self.bufs.held() as u64;
            ctx.stats.publish(&self.counters);
        }
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.draining && self.conns.is_empty() && self.listeners.iter().all(Listener::idle)
    }

    fn on_timers(&mut self, now: Instant) {
        let conns = &self.conns;
        let due = self.timers.expire(
            now,
            |key, generation| conns.get(key).is_some_and(|s| s.generation == generation),
            || {
                conns
                    .iter()
                    .filter(|(_, s)| s.phase == Phase::Open)
                    .map(|(k, s)| (k, s.last_active))
            },
        );
        self.counters.idle_closes += due.idle;
        for key in due.close {
            self.begin_close(key);
        }
        if due.accept_retry {
            self.update_accepts();
        }
    }

    // ---- completion dispatch -------------------------------------------------------------

    fn dispatch(&mut self, cqe: cqueue::Entry) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(tok) = Token::decode(cqe.user_data()) else {
            self.counters.stale_cqes += 1;
            return;
        };
        let Target::Conn { key, generation } = tok.target() else {
            return self.on_shard_cqe(tok, res, flags);
        };
        let live = self
            .conns
            .get(key)
            .is_some_and(|s| s.generation == generation);
        if !live {
            // Cannot happen (keys are freed only when no operation is outstanding), but if it
            // did, the completion must not reach the connection now under this key. A buffer it
            // carries is ours and goes back to the ring.
            self.counters.stale_cqes += 1;
            if tok.op() == Op::Recv {
                self.discard_buffers(res, flags);
            }
            return;
        }
        // Multishot receives, and zero-copy sends (result, then notification), post more than
        // one completion; only the last one (without IORING_CQE_F_MORE) ends the operation.
        if !cqueue::more(flags) {
            self.conns[key].ops -= 1;
        }
        match tok.op() {
            Op::Recv => self.on_recv(key, res, flags),
            Op::Send => self.on_send(key, res, None),
            Op::SockInq => self.on_sock_inq(key, res),
            op @ (Op::SendZc0 | Op::SendZc1) => {
                let i = usize::from(op == Op::SendZc1);
                if cqueue::notif(flags) {
                    self.on_zc_notified(key, i);
                } else {
                    self.on_send(key, res, Some((i, cqueue::more(flags))));
                }
            }
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
        match (tok.target(), tok.op()) {
            (Target::Socket(idx), op @ (Op::Accept | Op::AcceptOne)) => {
                let Some(l) = self.listeners.get_mut(idx) else {
                    self.counters.stale_cqes += 1;
                    return;
                };
                let ended = op == Op::AcceptOne || !cqueue::more(flags);
                if op == Op::AcceptOne {
                    l.singles = l.singles.saturating_sub(1);
                } else if ended {
                    l.multishot = AcceptState::Idle;
                }
                if self.draining && l.idle() {
                    l.socket = None;
                }
                if res >= 0 {
                    self.on_accepted(ops::accepted(res, self.direct));
                } else if res != -libc::ECANCELED {
                    // -ENFILE: the file table was full and the kernel closed that connection
                    // (the table's sizing keeps this from happening); -EMFILE with ordinary
                    // descriptors: the connection stays in the backlog. Other errors (a peer
                    // gone before the accept) are transient; either way, back off rather than
                    // spin.
                    self.counters.accept_errors += 1;
                    if ended {
                        let at = Instant::now() + ACCEPT_RETRY;
                        l.retry_at = Some(at);
                        let next = self.timers.accept_retry_at.get_or_insert(at);
                        *next = (*next).min(at);
                    }
                }
                self.update_accepts();
            }
            (_, Op::Shutdown) => self.begin_drain(),
            _ => {}
        }
    }

    fn on_accepted(&mut self, sock: ops::Sock) {
        self.counters.accepted += 1;
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let mut conn = Conn::new(self.proto.clone());
        if self.draining {
            conn.begin_shutdown();
        }
        let key = self.conns.insert(UringConn {
            conn,
            sock,
            generation,
            recv: RecvState::Idle,
            phase: Phase::Open,
            ops: 0,
            send_len: 0,
            send_vec: None,
            dirty: false,
            send_op: Op::Send,
            zc: None,
            received: false,
            stream_recvs: 0,
            window: Window::default(),
            multishot: false,
            piece: None,
            pieces: 0,
            waiting: false,
            last_active: self.now,
        });
        self.sync(key);
    }

    /// Takes the buffers a receive completion carries and puts them straight back.
    fn discard_buffers(&mut self, res: i32, flags: u32) {
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let mut segs = std::mem::take(&mut self.segs);
        segs.clear();
        let len = res.max(0) as u32;
        if self
            .bufs
            .on_completion(bid, len, flags, self.recv_bundle, &mut segs)
            .is_ok()
        {
            for seg in &segs {
                self.bufs.release(seg.bid);
            }
        }
        self.segs = segs;
    }

    fn on_recv(&mut self, key: usize, res: i32, flags: u32) {
        if let Some(bid) = self.conns[key].piece.take() {
            return self.on_piece(key, res, bid);
        }
        let c = &mut self.conns[key];
        if c.phase != Phase::Open {
            // The connection is being torn down (its operations cancelled): data racing the
            // cancellation has nowhere to go, and must not touch memory a cancelled send may
            // still be read from.
            if !cqueue::more(flags) {
                c.recv = RecvState::Idle;
            }
            self.counters.bytes_discarded += res.max(0) as u64;
            return self.discard_buffers(res, flags);
        }
        c.received = true;
        c.last_active = self.now;
        if !cqueue::more(flags) {
            c.recv = RecvState::Idle;
        }
        if res <= 0 {
            // No data. Such a CQE has not been seen to carry a buffer (a FIN on 6.18: res 0, no
            // F_BUFFER); if one ever does, it goes straight back to the buffer ring (defensive).
            self.discard_buffers(res, flags);
        }
        match res {
            n if n > 0 => {
                let mut segs = std::mem::take(&mut self.segs);
                segs.clear();
                let taken = cqueue::buffer_select(flags).map(|bid| {
                    self.bufs
                        .on_completion(bid, n as u32, flags, self.recv_bundle, &mut segs)
                });
                if !matches!(taken, Some(Ok(()))) {
                    // Data in buffers we cannot account for: the kernel and we disagree about
                    // who owns them, so touch nothing and drop the connection.
                    self.segs = segs;
                    self.counters.conn_errors += 1;
                    return self.begin_close(key);
                }
                self.counters.recv_cqes += 1;
                if self.bufs.is_large(segs[0].bid) {
                    self.counters.stream_buf_recvs += 1;
                }
                let paused = self.hand_over(key, &segs);
                self.segs = segs;
                let c = &mut self.conns[key];
                // A pause made it a stream (`hand_over`); else small receives count it down.
                if !paused {
                    if (n as u32) < self.bufs.small.buf_size() {
                        c.stream_recvs = c.stream_recvs.saturating_sub(1);
                    } else if c.stream_recvs > 0 {
                        c.stream_recvs = STREAM_RECVS;
                    }
                }
                // A bundle receive takes all the socket holds (pieces are `on_piece`'s).
                if self.recv_bundle
                    && c.window
                        .on_uncapped(n as u32, !cqueue::sock_nonempty(flags))
                {
                    self.streams += 1;
                }
            }
            0 => self.conns[key].conn.on_eof(),
            e if e == -libc::ENOBUFS => {
                self.counters.enobufs += 1;
                let c = &mut self.conns[key];
                if c.recv == RecvState::Idle && c.phase == Phase::Open {
                    c.recv = RecvState::Parked;
                    self.parked.push_back((key, c.generation));
                }
            }
            e if e == -libc::ECANCELED => {}
            _ => {
                self.counters.conn_errors += 1;
                self.begin_close(key);
            }
        }
    }

    /// The completion of a capped stream's piece receive, which wrote into piece buffer `bid`
    /// (`Pools::pieces`). The bytes are handed to the connection like a provided buffer's:
    /// an echo points into the buffer while owed data may hold it, else copies them out; the
    /// receive's reference is dropped at the end, so the buffer is free again once its replies
    /// have been sent.
    fn on_piece(&mut self, key: usize, res: i32, bid: u16) {
        self.bufs.pieces.received(bid);
        let c = &mut self.conns[key];
        c.recv = RecvState::Idle;
        if c.phase != Phase::Open {
            self.counters.bytes_discarded += res.max(0) as u64;
            return self.bufs.release(bid);
        }
        c.received = true;
        c.last_active = self.now;
        if res <= 0 {
            self.bufs.release(bid);
        }
        match res {
            n if n > 0 => {
                self.counters.recv_cqes += 1;
                let seg = buf_ring::Segment {
                    bid,
                    offset: 0,
                    len: n as u32,
                };
                self.hand_over(key, &[seg]);
                let c = &mut self.conns[key];
                c.pieces = c.pieces.saturating_add(1);
            }
            0 => c.conn.on_eof(),
            e if e == -libc::ECANCELED => {}
            _ => {
                self.counters.conn_errors += 1;
                self.begin_close(key);
            }
        }
    }

    /// Hands the bytes of one completion's `segs` (in provided or piece buffers) to connection
    /// `key`'s protocol. Replies that point into a buffer take references of their own (while
    /// owed data may hold it, else the bytes are copied); the completion's own reference is
    /// dropped. True when this paused the connection (back-pressure): counted, and the
    /// connection is a stream, received single-shot (`UringConn::stream_recvs`).
    fn hand_over(&mut self, key: usize, segs: &[buf_ring::Segment]) -> bool {
        let was_paused = self.conns[key].conn.is_paused();
        for seg in segs {
            let c = &mut self.conns[key];
            let zero_copy = self.bufs.may_hold(seg.bid, self.buf_budget);
            let out = c.conn.on_recv(
                self.bufs.data(seg.bid, seg.offset, seg.len),
                zero_copy.then_some((seg.bid, seg.offset)),
                &self.limits,
            );
            if out.ring_refs > 0 {
                self.bufs.add_refs(seg.bid, out.ring_refs);
            }
            self.bufs.release(seg.bid);
            out.record(seg.len as usize, &mut self.counters);
            if out.closed_by_protocol.is_some() {
                self.timers.linger(key, c.generation, self.now);
            }
        }
        let c = &mut self.conns[key];
        let paused = !was_paused && c.conn.is_paused();
        if paused {
            self.counters.paused += 1;
            c.stream_recvs = STREAM_RECVS;
        }
        paused
    }

    /// The answer to a capped stream's look at its socket (`ops::sock_inq`): the bytes it
    /// held, at most what the peer had in flight. The `sync` that follows changes the
    /// receive's cap if the window turned out larger.
    fn on_sock_inq(&mut self, key: usize, res: i32) {
        match res {
            n if n >= 0 => {
                self.counters.sock_inqs += 1;
                self.conns[key].window.sample(n as u32);
            }
            // The trial said this kernel has the command, yet a connected TCP socket did not
            // take it (on TCP it fails only for a listener; a security module could refuse
            // it): look by receiving from now on. Looks already in flight may fail too: one
            // line per shard.
            e => {
                if std::mem::replace(&mut self.sock_inq, false) {
                    eprintln!(
                        "ringecho: the SIOCINQ socket command failed ({}); capped streams look \
                         at their sockets by receiving",
                        std::io::Error::from_raw_os_error(-e)
                    );
                }
            }
        }
    }

    /// The result of the connection's send: `zc` is `Some((operation index, more))` for a
    /// zero-copy send, `more` saying whether its notification is still to come.
    fn on_send(&mut self, key: usize, res: i32, zc: Option<(usize, bool)>) {
        let c = &mut self.conns[key];
        // The kernel has read the msghdr and iovecs by now (not the bytes they name).
        if let Some(v) = c.send_vec.take() {
            self.send_vecs.push(v);
        }
        let short = (res as u64) < c.send_len;
        if res < 0 || (res == 0 && c.send_len > 0) {
            c.conn.on_send_failed();
            if res != -libc::ECANCELED {
                self.counters.conn_errors += 1;
            }
            if let Some((i, more)) = zc
                && !more
            {
                self.on_zc_notified(key, i);
            }
            return self.begin_close(key);
        }
        self.counters.sends += 1;
        self.counters.bytes_out += res as u64;
        c.last_active = self.now;
        if short {
            self.counters.short_sends += 1;
        }
        match zc {
            None => {
                let bufs = &mut self.bufs;
                c.conn
                    .on_sent(res as usize, &self.limits, |bid| bufs.release(bid));
            }
            Some((i, more)) => {
                let send = c.zc.as_mut().and_then(|z| z.sends[i].as_mut());
                let send = send.expect("a zero-copy send has its record");
                let bufs = &mut self.bufs;
                c.conn
                    .on_sent_retiring(res as usize, &self.limits, &mut send.retired, |bid| {
                        bufs.add_refs(bid, 1)
                    });
                if !more {
                    self.on_zc_notified(key, i);
                }
            }
        }
    }

    /// The kernel no longer reads the memory of zero-copy send `i` (or never will).
    fn on_zc_notified(&mut self, key: usize, i: usize) {
        let Some(zc) = self.conns[key].zc.as_mut() else {
            return;
        };
        if let Some(send) = zc.sends[i].as_mut() {
            send.notified = true;
        }
        let bufs = &mut self.bufs;
        zc.release_notified(|bid| bufs.release(bid));
    }

    fn on_closed(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        if c.window.is_stream() {
            self.streams -= 1;
        }
        debug_assert_eq!(c.ops, 0);
        let bufs = &mut self.bufs;
        c.conn.release_all(|bid| bufs.release(bid));
        // Every notification has come (no operation is outstanding), so nothing is retired;
        // if something were, its references still go back.
        if let Some(mut zc) = c.zc.take() {
            for send in zc.sends.iter_mut().filter_map(Option::take) {
                for chunk in send.retired {
                    if let Chunk::Ring { bid, .. } = chunk {
                        bufs.release(bid);
                    }
                }
            }
        }
        self.counters.closed += 1;
        self.update_accepts();
    }

    // ---- reconciliation --------------------------------------------------------------------

    /// Queues whatever closes the gap between what connection `key` wants and what is in
    /// flight for it. Called after every event on the connection.
    fn sync(&mut self, key: usize) {
        // Whole windows of up to 64 KiB, one piece per enter, for `MANY_STREAMS` to
        // `MOST_STREAMS` streams (below); larger windows and other counts keep the share.
        let many =
            self.paced() && (streams::MANY_STREAMS..=streams::MOST_STREAMS).contains(&self.streams);
        let unit = self.bufs.small.buf_size();
        let window = self.conns[key].window;
        let whole = match self.recv_cap && many {
            true => window.whole_cap(unit),
            false => 0,
        };
        let cap = match (self.recv_cap, whole) {
            (false, _) => 0,
            (true, 0) => window.cap(self.streams, unit, streams::MAX_CAP),
            (true, whole) => whole,
        };
        let c = &mut self.conns[key];
        match c.phase {
            Phase::Open => {}
            Phase::Cancelling => {
                if c.ops == 0 {
                    // Nothing references the socket any more: this close sends FIN (or RST
                    // if unread data remains) and frees the table slot.
                    c.phase = Phase::Closing;
                    c.ops += 1;
                    let tok = Token::conn(key, c.generation, Op::Close);
                    self.pending.push(ops::close(c.sock, tok));
                }
                return;
            }
            Phase::Closing => return,
        }
        if c.conn.is_done() {
            return self.begin_close(key);
        }
        if !c.dirty && !c.conn.is_sending() && c.conn.owed() > 0 {
            // The send goes out just before the enter, covering whatever else arrives for this
            // connection in the meantime (`start_sends`).
            c.dirty = true;
            self.dirty.push((key, c.generation));
        }
        let look_due = cap > 0 && c.pieces >= streams::SAMPLE_EVERY;
        if look_due && self.sock_inq {
            // Ask the socket how much it holds; the pieces go on.
            c.pieces = 0;
            c.ops += 1;
            let tok = Token::conn(key, c.generation, Op::SockInq);
            self.pending.push(ops::sock_inq(c.sock, tok));
        }
        let look_by_recv = look_due && !self.sock_inq;
        let want = c.conn.recv_wanted();
        // With `MANY_STREAMS` to `MOST_STREAMS` streams (windows of at most `WHOLE_CAP`,
        // taken whole), one piece receive is armed per enter, and each piece goes back out
        // at the very next enter, as epoll's read-then-write does. Receives that find data
        // copy it during the enter's submission, so with a piece of every stream in one
        // enter, each piece's echo would wait for the copies of all the others while the
        // peers, whose windows the shard holds, idle. The streams that must wait queue in
        // `waiting`; the enters between do not sleep (`run`). Not with SQPOLL (`paced`),
        // where there is no enter to pace by.
        if c.recv == RecvState::Idle && want && whole > 0 {
            if self.piece_armed || c.waiting || !self.waiting.is_empty() {
                if !c.waiting {
                    c.waiting = true;
                    self.waiting.push_back((key, c.generation));
                }
                return self.sync_fin(key);
            }
            self.piece_armed = true;
        }
        // A capped stream's next piece goes into a piece buffer; if none is free (owed data
        // holds them), it is received like any stream this turn.
        let piece = (c.recv == RecvState::Idle && want && cap > 0 && !look_by_recv)
            .then(|| self.bufs.pieces.lend())
            .flatten();
        match (c.recv, want) {
            (RecvState::Idle, true) if piece.is_some() => {
                // A capped stream: one single-shot receive of at most `cap` bytes per turn,
                // into a piece buffer (see `on_piece`), so each piece's echo goes out while
                // the peer is still sending the rest.
                let (bid, ptr) = piece.expect("guarded");
                let len = cap.min(self.bufs.pieces.size());
                let tok = Token::conn(key, c.generation, Op::Recv);
                self.pending.push(ops::recv_into(c.sock, ptr, len, tok));
                c.piece = Some(bid);
                c.recv = RecvState::Armed;
                c.multishot = false;
                c.window.restart();
                c.ops += 1;
                if c.received {
                    self.counters.recv_rearms += 1;
                }
            }
            (RecvState::Idle, true) => {
                let tok = Token::conn(key, c.generation, Op::Recv);
                // A multishot receive takes everything queued in one enter, so a stream's whole
                // window would arrive before any of it is sent back; a single-shot receive
                // per turn lets the replies start while the rest waits in the socket.
                // Only with bundles: one buffer per single-shot receive would be far slower.
                // A capped stream's look at its whole socket, on kernels without the socket
                // command, is such a receive too, as is a piece with no piece buffer free.
                c.pieces = 0;
                let multishot =
                    self.multishot_recv && cap == 0 && !(c.stream_recvs > 0 && self.recv_bundle);
                self.pending.push(match (multishot, self.recv_bundle) {
                    (true, false) => ops::recv_multi(c.sock, BGID, tok),
                    (true, true) => ops::recv_multi_bundle(c.sock, BGID, tok),
                    (false, false) => {
                        ops::recv_single(c.sock, BGID, self.bufs.small.buf_size(), tok)
                    }
                    // A stream's whole socket, into large buffers while there are any.
                    (false, true) => {
                        let budget = self.buf_budget;
                        let large = c.window.is_stream().then(|| self.bufs.arm_large(budget));
                        let group = large.flatten().unwrap_or(BGID);
                        ops::recv_bundle(c.sock, group, tok)
                    }
                });
                c.recv = RecvState::Armed;
                c.multishot = multishot;
                c.ops += 1;
                if c.received {
                    self.counters.recv_rearms += 1;
                }
            }
            (RecvState::Armed, want) if !want || (c.multishot && cap > 0) => {
                // A multishot receive cannot be paused, only cancelled, and a connection that
                // turned out to be a capped stream receives in pieces instead: the final
                // completion's sync arms what is wanted. Completions racing the cancel still
                // carry data, and it is still echoed. (A piece, single-shot and at most
                // `cap` bytes, is left to complete, unless the connection pauses.)
                let target = Token::conn(key, c.generation, Op::Recv);
                let tok = Token::conn(key, c.generation, Op::CancelRecv);
                self.pending.push(ops::cancel(target, tok));
                c.recv = RecvState::Cancelling;
                c.ops += 1;
                if want {
                    self.counters.recv_recaps += 1;
                }
            }
            (RecvState::Parked, false) => c.recv = RecvState::Idle,
            _ => {}
        }
        self.sync_fin(key);
    }

    /// Queues the write-side shutdown once the connection wants it (after its last bytes).
    fn sync_fin(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.conn.wants_fin() {
            c.conn.on_fin_sent();
            c.ops += 1;
            let tok = Token::conn(key, c.generation, Op::ShutdownWrite);
            self.pending.push(ops::shutdown_write(c.sock, tok));
        }
    }

    /// Arms the piece of the first stream in `waiting` that still wants one (at most one
    /// piece per enter: `sync`).
    fn arm_waiting(&mut self) {
        while !self.piece_armed
            && let Some((key, generation)) = self.waiting.pop_front()
        {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.generation != generation || !c.waiting {
                continue;
            }
            c.waiting = false;
            // Its turn: armed now, ahead of those still queued (`sync` queues a stream
            // behind others while any wait; with none, and no piece armed, it arms).
            let rest = std::mem::take(&mut self.waiting);
            self.sync(key);
            debug_assert!(self.waiting.is_empty(), "a stream armed in its turn");
            self.waiting = rest;
        }
    }

    /// Many streams are taken one piece per enter: the ring is not SQPOLL's, whose poller
    /// submits on its own (one piece per enter there ran at a third of the share rule's
    /// throughput at 6x16384x4, the shard spinning beside the poller).
    fn paced(&self) -> bool {
        self.features.mode != RingMode::Sqpoll
    }

    /// Gives every connection that owes bytes, and has no send outstanding, one send covering
    /// everything it owes (up to `SEND_VEC_MAX` chunks). Runs once per loop turn, just before
    /// the enter, so the replies to every completion of the turn go out together: one send per
    /// connection per turn rather than one per received buffer.
    ///
    /// The sends go into the submission queue ahead of whatever this turn's completions queued
    /// (re-armed receives above all), and the kernel takes SQEs in order: a receive that finds
    /// data copies it in during submission, so behind several of them (a piece per capped
    /// stream) the replies would leave tens of µs later, and a peer that waits for them would
    /// idle meanwhile. Reply first, then read more, as the epoll backend does.
    fn start_sends(&mut self) {
        let queued = self.pending.len();
        for i in 0..self.dirty.len() {
            let (key, generation) = self.dirty[i];
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.generation != generation {
                continue;
            }
            c.dirty = false;
            if c.phase != Phase::Open || c.conn.is_sending() {
                continue;
            }
            let mut v = self.send_vecs.pop().unwrap_or_else(ops::SendVec::new);
            v.clear();
            let bufs = &self.bufs;
            c.conn.next_sends(ops::SEND_VEC_MAX, |span| {
                let (ptr, len) = match span {
                    SendSpan::Ring { bid, offset, len } => (bufs.addr(bid, offset), len as usize),
                    SendSpan::Mem(b) => (b.as_ptr(), b.len()),
                };
                // Past the cap the rest of the chunks stay owed: the send completes short of
                // them and the next one carries them.
                let room = MAX_SEND_BYTES - v.bytes() as usize;
                v.push(ptr, len.min(room));
            });
            if v.is_empty() {
                self.send_vecs.push(v);
                continue;
            }
            c.send_len = v.bytes();
            c.ops += 1;
            // Zero-copy above the threshold, when one of the connection's two zero-copy
            // operations is free (see `ZcRetired`).
            let zc = match self.zc_threshold {
                Some(t)
                    if v.bytes() >= u64::from(t)
                        && (v.single().is_some() || self.features.sendmsg_zc) =>
                {
                    let z = c.zc.get_or_insert_with(Default::default);
                    z.free_op().inspect(|&i| {
                        z.sends[i] = Some(ZcSend {
                            seq: z.next,
                            retired: Vec::new(),
                            notified: false,
                        });
                        z.next += 1;
                    })
                }
                _ => None,
            };
            c.send_op = zc.map_or(Op::Send, zc_op);
            let tok = Token::conn(key, c.generation, c.send_op);
            let sqe = match (v.single(), zc) {
                (Some((ptr, len)), None) => ops::send(c.sock, ptr, len as u32, tok),
                (Some((ptr, len)), Some(_)) => ops::send_zc(c.sock, ptr, len as u32, tok),
                (None, None) => ops::send_vectored(c.sock, &mut v, tok),
                (None, Some(_)) => ops::send_vectored_zc(c.sock, &mut v, tok),
            };
            if v.single().is_some() {
                self.send_vecs.push(v);
            } else {
                c.send_vec = Some(v);
            }
            self.pending.push(sqe);
        }
        self.dirty.clear();
        self.pending.rotate_left(queued);
    }

    /// Starts closing connection `key`: cancel its receive and its send, then (in `sync`, once
    /// nothing is outstanding) close it.
    ///
    /// The cancellations name each request by its `user_data`, which the kernel finds with a
    /// hash lookup. Matching by descriptor (`IORING_ASYNC_CANCEL_FD`) makes the kernel walk every
    /// armed request of the ring instead, once per match: closing n connections at once then
    /// costs O(n^2), seconds of CPU for 10,000 idle connections timed out together. Other
    /// requests a connection may have out (a write-side shutdown, a receive's cancellation) end
    /// by themselves.
    fn begin_close(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.phase != Phase::Open {
            return;
        }
        c.phase = Phase::Cancelling;
        let tok = Token::conn(key, c.generation, Op::CancelAll);
        if c.recv == RecvState::Armed {
            let target = Token::conn(key, c.generation, Op::Recv);
            self.pending.push(ops::cancel(target, tok));
            c.ops += 1;
        }
        if c.conn.is_sending() {
            let target = Token::conn(key, c.generation, c.send_op);
            self.pending.push(ops::cancel(target, tok));
            c.ops += 1;
        }
        self.sync(key);
    }

    /// Re-arms parked receives, at most one per buffer now available, oldest first.
    fn rearm_parked(&mut self) {
        // Parked receives are armed on the small ring (streams may pick the large one, but
        // counting its buffers would re-arm small-message receives into an empty ring).
        let mut budget = self.bufs.small.available();
        while budget > 0
            && let Some((key, generation)) = self.parked.pop_front()
        {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.generation != generation || c.recv != RecvState::Parked {
                continue;
            }
            c.recv = RecvState::Idle;
            budget -= 1;
            self.sync(key);
        }
    }

    // ---- accept and shutdown ---------------------------------------------------------------

    /// Keeps the right accepts armed for how far the shard is from `max_conns`.
    ///
    /// A multishot accept takes every connection waiting in the backlog in one go, before a
    /// cancellation can stop it, so it may overshoot by up to the backlog. It is armed only
    /// while that much room is left; closer to the cap, single-shot accepts (one connection
    /// each, never more than the room left) keep the cap exact and the file table from ever
    /// filling (a full table makes the kernel reset the client it just accepted). At the cap
    /// nothing is armed: new clients wait in the backlog until a connection closes.
    fn update_accepts(&mut self) {
        if self.draining {
            return;
        }
        // Listeners backing off from an accept error sit this out until their time comes; the
        // timer wakes the loop for the earliest of them.
        let now = Instant::now();
        self.timers.accept_retry_at = None;
        for l in &mut self.listeners {
            if let Some(at) = l.retry_at {
                if at <= now {
                    l.retry_at = None;
                } else {
                    let next = self.timers.accept_retry_at.get_or_insert(at);
                    *next = (*next).min(at);
                }
            }
        }
        let active = self.conns.len();
        let room = self.max_conns.saturating_sub(active);
        let multishot_ok = room >= self.multishot_floor;
        let mut free = room.saturating_sub(self.listeners.iter().map(|l| l.singles).sum());
        for (idx, l) in self.listeners.iter_mut().enumerate() {
            let Some(socket) = &l.socket else {
                continue;
            };
            let fd = socket.as_raw_fd();
            // Backing off from an error holds back arming, never a cancellation.
            let backing_off = l.retry_at.is_some();
            match (l.multishot, multishot_ok) {
                (AcceptState::Idle, true) if !backing_off => {
                    self.pending.push(ops::accept_multi(fd, idx, self.direct));
                    l.multishot = AcceptState::Armed;
                    if l.armed_once {
                        self.counters.accept_rearms += 1;
                    }
                    l.armed_once = true;
                }
                (AcceptState::Armed, false) => {
                    self.pending.push(ops::cancel_accepts(idx, Op::Accept));
                    l.multishot = AcceptState::Cancelling;
                }
                _ => {}
            }
            if !multishot_ok && !backing_off {
                while free > 0 && l.singles < SINGLES_PER_LISTENER {
                    self.pending.push(ops::accept_one(fd, idx, self.direct));
                    l.singles += 1;
                    free -= 1;
                }
            }
        }
    }

    /// Cancels every accept (shutdown).
    fn cancel_accepts(&mut self) {
        for (idx, l) in self.listeners.iter_mut().enumerate() {
            if l.multishot == AcceptState::Armed {
                self.pending.push(ops::cancel_accepts(idx, Op::Accept));
                l.multishot = AcceptState::Cancelling;
            }
            if l.singles > 0 {
                self.pending.push(ops::cancel_accepts(idx, Op::AcceptOne));
            }
        }
    }

    fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.timers.drain_deadline = Some(Instant::now() + self.drain_timeout);
        self.cancel_accepts();
        for l in &mut self.listeners {
            if l.idle() {
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

/// Room below the cap a multishot accept needs: it may take the whole backlog of every
/// listener at once before its cancellation lands, plus arrivals during one loop turn.
fn multishot_floor(backlog: i32, listeners: usize) -> usize {
    backlog.max(1) as usize * listeners.max(1) + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_chunk(bid: u16) -> Chunk {
        Chunk::Ring {
            bid,
            start: 0,
            end: 1,
        }
    }

    /// Zero-copy sends alternate between two operations so each notification names its send;
    /// a third waits (goes out copying) until the first one's notification; retired memory is
    /// let go only in send order.
    #[test]
    fn zero_copy_sends_retire_their_memory_in_order_as_notifications_come() {
        let mut z = ZcRetired::default();
        let start = |z: &mut ZcRetired, bid| {
            let i = z.free_op()?;
            z.sends[i] = Some(ZcSend {
                seq: z.next,
                retired: vec![ring_chunk(bid)],
                notified: false,
            });
            z.next += 1;
            Some(i)
        };
        assert_eq!(start(&mut z, 10), Some(0));
        assert_eq!(start(&mut z, 11), Some(1));
        assert_eq!(
            z.free_op(),
            None,
            "both operations busy: the next send copies"
        );
        let mut released = vec![];
        // The second send's notification first: its memory waits for the first's.
        z.sends[1].as_mut().unwrap().notified = true;
        z.release_notified(|b| released.push(b));
        assert!(released.is_empty());
        z.sends[0].as_mut().unwrap().notified = true;
        z.release_notified(|b| released.push(b));
        assert_eq!(released, [10, 11]);
        assert_eq!(start(&mut z, 12), Some(0), "free again, in turn");
    }
}
