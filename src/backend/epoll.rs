//! The epoll backend: the same connections, the same [`Conn`] decisions, readiness instead of
//! completions.
//!
//! Edge-triggered epoll. Each readiness event marks a connection readable or writable; then
//! [`EpollShard::drive`] does the I/O the connection wants until the socket would block: writes
//! owed bytes, reads while the connection wants to receive (a read shorter than the buffer
//! means the socket is drained, so no extra read is spent on `EAGAIN`), closes when done.
//! `EPOLLOUT` is registered only while bytes are owed and the socket is full.
//!
//! Received bytes are read into one scratch buffer per shard and handed to [`Conn::on_recv`]
//! without a buffer id, so the connection copies what it must keep; the write that follows
//! usually sends it at once.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::conn::{Conn, Limits, SendSpan};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::server::{ServerConfig, ShardContext, ShardEvent};
use crate::stats::Counters;
use crate::sys::syscall;
use crate::token::{GENERATION_MASK, Op, Token};

/// Events fetched per `epoll_wait`.
const MAX_EVENTS: usize = 512;
/// Reads per connection per turn before others get a go (the rest waits on the ready list).
const READS_PER_TURN: usize = 16;
/// After an accept error such as `EMFILE`, retry this often even if no connection closes.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

struct Slot<P> {
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
}

struct EpollShard<P> {
    proto: P,
    ep: OwnedFd,
    listeners: Vec<TcpListener>,
    conns: Slab<Slot<P>>,
    limits: Limits,
    max_conns: usize,
    scratch: Vec<u8>,
    /// Connections with data left after their read budget, served before waiting again.
    ready: std::collections::VecDeque<(usize, u32)>,
    accept_paused: bool,
    accept_retry_at: Option<Instant>,
    accept_pause_logged: bool,
    draining: bool,
    drain_deadline: Option<Instant>,
    drain_timeout: Duration,
    next_generation: u32,
    counters: Counters,
}

fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32, data: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    syscall!(epoll_ctl(ep, op, fd, &mut ev)).map(drop)
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)).map(drop)
}

const CONN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Runs one epoll shard until shutdown.
pub(crate) fn run_shard<P: Protocol + Clone>(
    cfg: &ServerConfig,
    proto: P,
    mut ctx: ShardContext,
) -> Result<(), Error> {
    let ep =
        syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map_err(|e| Error::io("epoll_create1", e))?;
    // SAFETY: `ep` was just returned by epoll_create1 and is owned by nothing else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let listeners = std::mem::take(&mut ctx.listeners);
    for (i, l) in listeners.iter().enumerate() {
        set_nonblocking(l.as_raw_fd()).map_err(|e| Error::io("fcntl(O_NONBLOCK)", e))?;
        let tok = Token {
            generation: i as u32,
            ..Token::shard(Op::Accept)
        };
        ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            l.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            tok.encode(),
        )
        .map_err(|e| Error::io("epoll_ctl(listener)", e))?;
    }
    ctl(
        ep.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        ctx.shutdown_fd,
        libc::EPOLLIN as u32,
        Token::shard(Op::Shutdown).encode(),
    )
    .map_err(|e| Error::io("epoll_ctl(eventfd)", e))?;
    let max_conns = cfg.max_conns.expect("validated config");
    if ctx.index == 0 {
        eprintln!(
            "ringecho: epoll edge-triggered, read buffer {}B, max_conns={max_conns}",
            cfg.buf_size
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
        scratch: vec![0; cfg.buf_size as usize],
        ready: Default::default(),
        accept_paused: false,
        accept_retry_at: None,
        accept_pause_logged: false,
        draining: false,
        drain_deadline: None,
        drain_timeout: cfg.drain_timeout,
        next_generation: 0,
        counters: Counters::default(),
    };
    let _ = ctx.events.send(ShardEvent::Ready);
    let result = shard.run(&ctx);
    ctx.stats.publish(&shard.counters);
    result
}

impl<P: Protocol + Clone> EpollShard<P> {
    fn run(&mut self, ctx: &ShardContext) -> Result<(), Error> {
        // SAFETY: epoll_event is plain old data; zeroed entries are valid and overwritten.
        let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; MAX_EVENTS];
        // Connections may already be waiting in the backlog.
        self.accept_all();
        loop {
            let now = Instant::now();
            self.on_timers(now);
            if self.draining && self.conns.is_empty() {
                return Ok(());
            }
            let timeout_ms = if !self.ready.is_empty() {
                0
            } else {
                [self.drain_deadline, self.accept_retry_at]
                    .into_iter()
                    .flatten()
                    .min()
                    .map_or(-1, |d| {
                        d.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1
                    })
            };
            self.counters.enters += 1;
            self.counters.syscalls += 1;
            let n = match syscall!(epoll_wait(
                self.ep.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as i32,
                timeout_ms
            )) {
                Ok(n) => n as usize,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
                Err(e) => return Err(Error::io("epoll_wait", e)),
            };
            self.counters.events += n as u64;
            for ev in &events[..n] {
                let (bits, data) = (ev.events, ev.u64);
                self.dispatch(bits, data);
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
        if tok.slot == Token::SHARD {
            match tok.op {
                Op::Accept => self.accept_all(),
                Op::Shutdown => self.begin_drain(),
                _ => {}
            }
            return;
        }
        let key = tok.slot as usize;
        let Some(slot) = self.conns.get_mut(key) else {
            self.counters.stale_cqes += 1;
            return;
        };
        if slot.generation != tok.generation {
            self.counters.stale_cqes += 1;
            return;
        }
        let bits = bits as i32;
        if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            slot.readable = true;
        }
        if bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            slot.hup = true;
        }
        if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
            slot.writable = true;
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
            let slot = &mut self.conns[key];
            if !(slot.readable && slot.conn.recv_wanted()) {
                break;
            }
            if reads == READS_PER_TURN {
                if !slot.queued {
                    slot.queued = true;
                    self.ready.push_back((key, slot.generation));
                }
                break;
            }
            reads += 1;
            let fd = slot.fd.as_raw_fd();
            self.counters.syscalls += 1;
            match syscall!(read(
                fd,
                self.scratch.as_mut_ptr().cast(),
                self.scratch.len()
            )) {
                Ok(0) => {
                    slot.readable = false;
                    slot.conn.on_eof();
                }
                Ok(n) => {
                    let n = n as usize;
                    // A short read drained the socket: a later arrival brings a new edge. Not so
                    // for a FIN that came with the data (its edge is the one being handled).
                    if n < self.scratch.len() && !slot.hup {
                        slot.readable = false;
                    }
                    self.counters.recv_cqes += 1;
                    self.counters.bytes_in += n as u64;
                    let was_paused = slot.conn.is_paused();
                    let out = slot.conn.on_recv(&self.scratch[..n], None, &self.limits);
                    self.counters.copied_bytes += out.copied as u64;
                    if let Some(reason) = out.closed_by_protocol {
                        self.counters.count_proto_close(reason);
                    }
                    if !was_paused && slot.conn.is_paused() {
                        self.counters.paused += 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => slot.readable = false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.counters.conn_errors += 1;
                    return self.close(key);
                }
            }
        }
        let slot = &mut self.conns[key];
        if slot.conn.is_done() {
            return self.close(key);
        }
        let want_out = slot.conn.owed() > 0 && !slot.writable;
        if want_out != slot.out_registered {
            let events = if want_out {
                CONN_EVENTS | libc::EPOLLOUT as u32
            } else {
                CONN_EVENTS
            };
            self.counters.syscalls += 1;
            let tok = Token::conn(key, slot.generation, Op::Recv);
            if ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_MOD,
                slot.fd.as_raw_fd(),
                events,
                tok.encode(),
            )
            .is_err()
            {
                self.counters.conn_errors += 1;
                return self.close(key);
            }
            slot.out_registered = want_out;
        }
    }

    /// Writes owed bytes until done or the socket is full. False if the connection was closed.
    fn flush(&mut self, key: usize) -> bool {
        let slot = &mut self.conns[key];
        while slot.writable {
            let fd = slot.fd.as_raw_fd();
            let Some(span) = slot.conn.next_send() else {
                break;
            };
            let SendSpan::Mem(bytes) = span else {
                unreachable!("the epoll backend never passes a buffer id to on_recv");
            };
            let len = bytes.len();
            self.counters.syscalls += 1;
            match syscall!(send(fd, bytes.as_ptr().cast(), len, libc::MSG_NOSIGNAL)) {
                Ok(n) => {
                    let n = n as usize;
                    self.counters.sends += 1;
                    self.counters.bytes_out += n as u64;
                    if n < len {
                        self.counters.short_sends += 1;
                        slot.writable = false;
                    }
                    slot.conn.on_sent(n, &self.limits, |_| {});
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    slot.conn.on_sent(0, &self.limits, |_| {});
                    if e.kind() == std::io::ErrorKind::WouldBlock {
                        slot.writable = false;
                    }
                }
                Err(_) => {
                    slot.conn.on_send_failed();
                    self.counters.conn_errors += 1;
                    self.close(key);
                    return false;
                }
            }
        }
        true
    }

    fn close(&mut self, key: usize) {
        let mut slot = self.conns.remove(key);
        slot.conn.release_all(|_| {});
        // Dropping the descriptor closes it, which also removes it from the epoll set.
        self.counters.syscalls += 1;
        drop(slot);
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
                            self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
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
                if ctl(
                    self.ep.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd.as_raw_fd(),
                    CONN_EVENTS,
                    tok.encode(),
                )
                .is_err()
                {
                    self.counters.accept_errors += 1;
                    continue;
                }
                entry.insert(Slot {
                    conn: Conn::new(self.proto.clone()),
                    fd,
                    generation,
                    readable: false,
                    hup: false,
                    writable: true,
                    out_registered: false,
                    queued: false,
                });
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if let Some(at) = self.accept_retry_at
            && now >= at
        {
            self.accept_retry_at = None;
            self.accept_all();
        }
        if let Some(at) = self.drain_deadline
            && now >= at
        {
            self.drain_deadline = None;
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.close(key);
            }
        }
    }

    fn begin_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.drain_deadline = Some(Instant::now() + self.drain_timeout);
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
