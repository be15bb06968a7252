//! TCP on epoll: the same connections, the same [`Conn`] decisions as on io_uring, readiness
//! instead of completions.
//!
//! Each readiness event marks a connection readable or writable; then
//! `EpollShard::drive` does the I/O the connection wants until the socket would block: writes
//! owed bytes, reads while the connection wants to receive (a read shorter than the buffer
//! means the socket is drained, so no extra read is spent on `EAGAIN`), closes when done.
//! `EPOLLOUT` is registered only while bytes are owed and the socket is full.
//!
//! Received bytes are read into one scratch buffer per shard and handed to [`Conn::on_recv`]
//! without a buffer id, so the connection copies what it must keep; the write that follows
//! usually sends it at once. A stream's reads are capped as its io_uring receives are
//! ([`streams`](crate::backend::streams)): a piece is read, echoed, then the next.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use super::shard_epoll;
use crate::backend::shard::{ShardConfig, ShardContext, ShardEvent};
use crate::backend::streams::{self, Window};
use crate::backend::{SEND_VEC_MAX, Timers};
use crate::conn::{Conn, Limits, SendSpan};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::stats::Counters;
use crate::sys::epoll::{Epoll, Events};
use crate::sys::syscall;
use crate::token::{GENERATION_MASK, Op, Target, Token};

/// The shard's read buffer: `--buf-size`, but at least 64 KiB. An edge-triggered reader must
/// read until a read comes back short, so a buffer that a message fills exactly costs an extra
/// `read` that returns `EAGAIN`; a competent epoll server reads into a large buffer, and so
/// does this one (io_uring's provided buffers have no such cost).
fn read_buffer_size(buf_size: u32) -> usize {
    (buf_size as usize).max(64 * 1024)
}

/// The read cap (0: none) for a connection with `window` when the shard has `n_streams`
/// streams and pieces are `on`. A piece costs a read and a write here, two syscalls: only a
/// lone stream of at most 64 KiB in flight is cut (into 8 KiB pieces). (Its socket never
/// holds more, so one look that finds more, `FIONREAD` every `SAMPLE_EVERY` pieces, ends it.)
fn read_cap(on: bool, n_streams: u32, window: &Window) -> u32 {
    if on && window.seen() <= 64 * 1024 {
        window.cap(n_streams, 1, streams::MIN_CAP)
    } else {
        0
    }
}

/// Events fetched per `epoll_wait`.
const MAX_EVENTS: usize = 512;
/// Reads per connection per turn before others get a go (the rest waits on the ready list).
const READS_PER_TURN: usize = 16;
/// After an accept error such as `EMFILE`, retry this often even if no connection closes.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A connection as the epoll backend sees it.
struct EpollConn<P> {
    conn: Conn<P>,
    fd: OwnedFd,
    generation: u32,
    /// The last edge said readable and no read since has drained the socket.
    readable: bool,
    /// The peer's FIN (or an error) was signalled: read until EOF, a short read proves nothing.
    hup: bool,
    /// Writes have not hit a full socket buffer since the last `EPOLLOUT`.
    writable: bool,
    /// `EPOLLOUT` is in the registered interest set.
    out_registered: bool,
    /// Waiting on the ready list (read budget ran out with data left).
    queued: bool,
    /// What the peer was seen to have in flight (from uncapped reads), and so its read cap.
    window: Window,
    /// Capped reads since the last look at how much the socket holds (`FIONREAD`).
    pieces: u16,
    /// Last time bytes moved either way (for `--idle-timeout`).
    last_active: Instant,
}

struct EpollShard<P> {
    proto: P,
    ep: Epoll,
    listeners: Vec<TcpListener>,
    conns: Slab<EpollConn<P>>,
    limits: Limits,
    max_conns: usize,
    scratch: Vec<u8>,
    /// Streams' reads are capped (`--no-recv-cap` turns it off).
    recv_cap: bool,
    /// Connections that are streams (`EpollConn::window`).
    streams: u32,
    /// Connections with data left after their read budget, served before waiting again.
    ready: std::collections::VecDeque<(usize, u32)>,
    accept_paused: bool,
    accept_pause_logged: bool,
    draining: bool,
    /// The shutdown eventfd fired in this batch of events; the drain starts after the batch.
    drain_requested: bool,
    drain_timeout: Duration,
    /// Idle, lingering, accept back-off and drain deadlines.
    timers: Timers,
    next_generation: u32,
    counters: Counters,
    /// Read once per loop turn, after the wait.
    now: Instant,
}

const CONN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Runs one epoll shard until shutdown.
pub(crate) fn run_shard<P: Protocol + Clone>(
    cfg: &ShardConfig,
    proto: P,
    mut ctx: ShardContext,
) -> Result<(), Error> {
    let buf_size = cfg.buf_size;
    let listeners: Vec<TcpListener> = std::mem::take(&mut ctx.sockets)
        .into_iter()
        .map(TcpListener::from)
        .collect();
    let fds: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let ep = shard_epoll(
        &fds,
        (libc::EPOLLIN | libc::EPOLLET) as u32,
        Op::Accept,
        ctx.shutdown_fd,
    )?;
    let max_conns = cfg.max_conns;
    if ctx.index == 0 {
        eprintln!(
            "ringecho: epoll shards={} edge-triggered read_buffer={}B streams={} \
             max_conns={max_conns} (per shard)",
            ctx.shards,
            read_buffer_size(buf_size),
            if cfg.recv_cap { "pieces" } else { "whole" }
        );
    }
    let mut shard = EpollShard {
        proto,
        ep,
        listeners,
        conns: Slab::with_capacity(1024.min(max_conns)),
        limits: Limits {
            max_pending: cfg.max_pending,
        },
        max_conns,
        scratch: vec![0; read_buffer_size(buf_size)],
        recv_cap: cfg.recv_cap,
        streams: 0,
        ready: Default::default(),
        accept_paused: false,
        accept_pause_logged: false,
        draining: false,
        drain_requested: false,
        drain_timeout: cfg.drain_timeout,
        timers: Timers::new(cfg.idle_timeout, cfg.lingering_close, Instant::now()),
        next_generation: 0,
        counters: Counters::default(),
        now: Instant::now(),
    };
    let _ = ctx.events.send(ShardEvent::Ready);
    let result = shard.run(&ctx);
    ctx.stats.publish(&shard.counters);
    result
}

impl<P: Protocol + Clone> EpollShard<P> {
    fn run(&mut self, ctx: &ShardContext) -> Result<(), Error> {
        let mut events = Events::with_capacity(MAX_EVENTS);
        // Connections may already be waiting in the backlog.
        self.accept_all();
        loop {
            let now = Instant::now();
            self.on_timers(now);
            if self.draining && self.conns.is_empty() {
                self.counters.active = 0;
                return Ok(());
            }
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else {
                self.timers.next().map(|d| d.saturating_duration_since(now))
            };
            // Publish before a wait that may block indefinitely (accepts made before it).
            self.counters.active = self.conns.len() as u64;
            ctx.stats.publish(&self.counters);
            self.counters.enters += 1;
            self.counters.syscalls += 1;
            let n = self
                .ep
                .wait(&mut events, timeout)
                .map_err(|e| Error::io("epoll_wait", e))?;
            self.counters.events += n as u64;
            self.now = Instant::now();
            for ev in events.iter() {
                self.dispatch(ev.bits, ev.key);
            }
            // Only now: starting the drain closes idle connections, and events later in the
            // batch for those would find their connections gone.
            if std::mem::take(&mut self.drain_requested) {
                self.begin_drain();
            }
            let queued: Vec<(usize, u32)> = self.ready.drain(..).collect();
            for (key, generation) in queued {
                if let Some(s) = self.conns.get_mut(key)
                    && s.generation == generation
                {
                    s.queued = false;
                    self.drive(key);
                }
            }
            self.counters.active = self.conns.len() as u64;
            ctx.stats.publish(&self.counters);
        }
    }

    fn dispatch(&mut self, bits: u32, data: u64) {
        let Some(tok) = Token::decode(data) else {
            return;
        };
        let Target::Conn { key, generation } = tok.target() else {
            match tok.op() {
                Op::Accept => self.accept_all(),
                Op::Shutdown => self.drain_requested = true,
                _ => {}
            }
            return;
        };
        let Some(c) = self.conns.get_mut(key) else {
            self.counters.stale_cqes += 1;
            return;
        };
        if c.generation != generation {
            self.counters.stale_cqes += 1;
            return;
        }
        let bits = bits as i32;
        if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            c.readable = true;
        }
        if bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            c.hup = true;
        }
        if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            c.writable = true;
        }
        self.drive(key);
    }

    /// Does the I/O connection `key` wants until its socket would block, then updates its
    /// `EPOLLOUT` interest or closes it.
    fn drive(&mut self, key: usize) {
        let mut reads = 0;
        loop {
            if !self.flush(key) {
                return; // closed on a write error
            }
            let (on, streams_now) = (self.recv_cap, self.streams);
            let c = &mut self.conns[key];
            if !(c.readable && c.conn.recv_wanted()) {
                break;
            }
            if reads == READS_PER_TURN {
                if !c.queued {
                    c.queued = true;
                    self.ready.push_back((key, c.generation));
                }
                break;
            }
            reads += 1;
            let fd = c.fd.as_raw_fd();
            let cap_of = |w: &Window| read_cap(on, streams_now, w);
            let mut cap = cap_of(&c.window);
            if cap > 0 {
                c.pieces += 1;
                if c.pieces >= streams::SAMPLE_EVERY {
                    // Capped reads say nothing of the window: look at what the socket holds
                    // (at most what the peer has in flight).
                    c.pieces = 0;
                    let mut queued: libc::c_int = 0;
                    self.counters.syscalls += 1;
                    // SAFETY: FIONREAD writes one c_int through the pointer, to `queued`.
                    if syscall!(ioctl(fd, libc::FIONREAD, &mut queued)).is_ok() {
                        self.counters.sock_inqs += 1;
                        c.window.sample(queued.max(0) as u32);
                        cap = cap_of(&c.window);
                    }
                }
            }
            let len = if cap > 0 {
                (cap as usize).min(self.scratch.len())
            } else {
                self.scratch.len()
            };
            self.counters.syscalls += 1;
            // SAFETY: the kernel writes at most `len` bytes (at most `scratch.len()`) into
            // `scratch`, which this shard owns and nothing else borrows during the call.
            match syscall!(read(fd, self.scratch.as_mut_ptr().cast(), len)) {
                Ok(0) => {
                    c.readable = false;
                    c.conn.on_eof();
                }
                Ok(n) => {
                    let n = n as usize;
                    // A short read drained the socket: a later arrival brings a new edge. Not so
                    // for a FIN that came with the data (its edge is the one being handled).
                    if n < len && !c.hup {
                        c.readable = false;
                    }
                    if cap > 0 {
                        c.window.restart();
                    } else if c.window.on_uncapped(n as u32, n < len) {
                        self.streams += 1;
                    }
                    self.counters.recv_cqes += 1;
                    c.last_active = self.now;
                    let was_paused = c.conn.is_paused();
                    let out = c.conn.on_recv(&self.scratch[..n], None, &self.limits);
                    out.record(n, &mut self.counters);
                    if out.closed_by_protocol.is_some() {
                        self.timers.linger(key, c.generation, self.now);
                    }
                    if !was_paused && c.conn.is_paused() {
                        self.counters.paused += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    // A full read followed by this one: the burst ended with the socket empty.
                    if cap == 0 && c.window.on_uncapped(0, true) {
                        self.streams += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.counters.conn_errors += 1;
                    return self.close(key);
                }
            }
        }
        let c = &mut self.conns[key];
        if c.conn.is_done() {
            return self.close(key);
        }
        if c.conn.wants_fin() {
            c.conn.on_fin_sent();
            self.counters.syscalls += 1;
            // A failure means the peer is gone; the next read reports it.
            // SAFETY: shutdown takes no pointers; the descriptor is the connection's own.
            let _ = syscall!(shutdown(c.fd.as_raw_fd(), libc::SHUT_WR));
        }
        let want_out = c.conn.owed() > 0 && !c.writable;
        if want_out != c.out_registered {
            let events = if want_out {
                CONN_EVENTS | libc::EPOLLOUT as u32
            } else {
                CONN_EVENTS
            };
            self.counters.syscalls += 1;
            let tok = Token::conn(key, c.generation, Op::Recv);
            if self
                .ep
                .modify(c.fd.as_raw_fd(), events, tok.encode())
                .is_err()
            {
                self.counters.conn_errors += 1;
                return self.close(key);
            }
            c.out_registered = want_out;
        }
    }

    /// Writes owed bytes until done or the socket is full, everything owed in one call (a
    /// `sendmsg` over the owed chunks, as the io_uring backend sends them). False if the
    /// connection was closed.
    fn flush(&mut self, key: usize) -> bool {
        let c = &mut self.conns[key];
        while c.writable {
            let fd = c.fd.as_raw_fd();
            // SAFETY: iovec is plain old data; zeroed entries are valid and only the first
            // `n` are passed to the kernel.
            let mut iov: [libc::iovec; SEND_VEC_MAX] = unsafe { std::mem::zeroed() };
            let (mut len, mut k) = (0, 0);
            let n = c.conn.next_sends(SEND_VEC_MAX, |span| {
                let SendSpan::Mem(bytes) = span else {
                    unreachable!("the epoll backend never passes a buffer id to on_recv");
                };
                len += bytes.len();
                iov[k] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
                k += 1;
            });
            if n == 0 {
                break;
            }
            self.counters.syscalls += 1;
            // SAFETY: a zeroed msghdr is valid (no address, no control data); its iovecs name
            // the connection's owed chunks, which stay put until `on_sent`/`on_send_failed`
            // below (the in-flight invariant), i.e. for the whole call.
            let sent = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = n as _;
                syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL))
            };
            match sent {
                Ok(n) => {
                    let n = n as usize;
                    self.counters.sends += 1;
                    self.counters.bytes_out += n as u64;
                    if n > 0 {
                        c.last_active = self.now;
                    }
                    if n < len {
                        self.counters.short_sends += 1;
                        c.writable = false;
                    }
                    c.conn.on_sent(n, &self.limits, |_| {});
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    c.conn.on_sent(0, &self.limits, |_| {});
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        c.writable = false;
                    }
                }
                Err(_) => {
                    c.conn.on_send_failed();
                    self.counters.conn_errors += 1;
                    self.close(key);
                    return false;
                }
            }
        }
        true
    }

    fn close(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        if c.window.is_stream() {
            self.streams -= 1;
        }
        c.conn.release_all(|_| {});
        // Dropping the descriptor closes it, which also removes it from the epoll set.
        self.counters.syscalls += 1;
        drop(c);
        self.counters.closed += 1;
        if self.accept_paused && !self.draining {
            self.accept_all();
        }
    }

    fn accept_all(&mut self) {
        if self.draining {
            return;
        }
        self.accept_paused = false;
        for i in 0..self.listeners.len() {
            loop {
                if self.conns.len() >= self.max_conns {
                    // New clients wait in the backlog until a connection closes.
                    self.accept_paused = true;
                    return;
                }
                let lfd = self.listeners[i].as_raw_fd();
                self.counters.syscalls += 1;
                // SAFETY: null address and length pointers ask for no peer address.
                let fd = match syscall!(accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
                )) {
                    Ok(fd) => fd,
                    Err(e) => match e.raw_os_error() {
                        Some(libc::EAGAIN) => break,
                        Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                            self.counters.accept_errors += 1;
                            self.accept_paused = true;
                            self.timers.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                            if !self.accept_pause_logged {
                                self.accept_pause_logged = true;
                                eprintln!(
                                    "ringecho: accept paused: {e}; resuming when a connection \
                                     closes"
                                );
                            }
                            return;
                        }
                        _ => {
                            self.counters.accept_errors += 1;
                            break;
                        }
                    },
                };
                self.accept_pause_logged = false;
                // SAFETY: accept4 returned a new descriptor owned by nothing else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                self.counters.accepted += 1;
                let generation = self.next_generation;
                self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
                let entry = self.conns.vacant_entry();
                let key = entry.key();
                let tok = Token::conn(key, generation, Op::Recv);
                self.counters.syscalls += 1;
                if self
                    .ep
                    .add(fd.as_raw_fd(), CONN_EVENTS, tok.encode())
                    .is_err()
                {
                    self.counters.accept_errors += 1;
                    continue;
                }
                entry.insert(EpollConn {
                    conn: Conn::new(self.proto.clone()),
                    fd,
                    generation,
                    readable: false,
                    hup: false,
                    writable: true,
                    out_registered: false,
                    queued: false,
                    window: Window::default(),
                    pieces: 0,
                    last_active: self.now,
                });
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let conns = &self.conns;
        let due = self.timers.expire(
            now,
            |key, generation| conns.get(key).is_some_and(|s| s.generation == generation),
            || conns.iter().map(|(k, s)| (k, s.last_active)),
        );
        self.counters.idle_closes += due.idle;
        for key in due.close {
            self.close(key);
        }
        if due.accept_retry {
            self.accept_all();
        }
    }

    fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.timers.drain_deadline = Some(Instant::now() + self.drain_timeout);
        // Stop accepting: closing the listeners refuses new clients at once.
        self.counters.syscalls += self.listeners.len() as u64;
        self.listeners.clear();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns[key].conn.begin_shutdown();
            self.drive(key);
        }
    }
}
