//! Backends: the only code that talks to the kernel about connections.
//!
//! # The contract
//!
//! A backend runs one shard: one thread, its listeners, its connections. For every connection
//! it keeps a `Conn` (the crate-private state machine in `src/conn/mod.rs`; `cargo doc
//! --document-private-items` shows it) and follows the same rules, so that the state machine,
//! not the backend, decides what happens:
//!
//! - **Received bytes** go to `Conn::on_recv` once, in order. The backend passes the
//!   provided-buffer id when the bytes are in one and the shard's budget of buffers held for
//!   owed data allows zero-copy replies; otherwise the connection copies what it must keep.
//! - **End of stream** (a zero-length receive) goes to `Conn::on_eof`.
//! - **Sending**: the backend asks `Conn::next_sends` for the spans of up to
//!   [`SEND_VEC_MAX`] owed chunks and sends them with one vectored call (everything owed in
//!   one operation), with at most one send outstanding per connection so bytes stay in order;
//!   its result goes to `Conn::on_sent` (bytes written, possibly fewer than asked) or
//!   `Conn::on_send_failed`. The spans' memory stays untouched until then. io_uring asks once
//!   per loop turn, after every completion of the turn was handled, so one send carries the
//!   replies to all of them.
//! - **Receiving** is armed while `Conn::recv_wanted` says so, and stopped (cancelled, or
//!   simply not re-armed) when it stops saying so. Bytes that arrive anyway (racing a
//!   cancellation) are still delivered.
//! - **Closing**: when `Conn::is_done` the conversation ended cleanly and the backend closes
//!   the socket (the peer sees FIN after every owed byte). On an error (reset, broken pipe) it
//!   closes at once. Either way the connection's memory (and its references to provided
//!   buffers) is released only once no operation on it is outstanding.
//! - **Accepting** stops while the shard holds `max_conns` connections (new clients wait in the
//!   listen backlog) and resumes when one closes; it never spins on a persistent error.
//! - **Shutdown**: on the shard's shutdown signal, stop accepting, stop receiving, let owed bytes
//!   drain for up to the drain timeout, then close whatever is left.
//! - **Counting**: every syscall the event loop makes is counted in [`Counters`], so syscalls
//!   per message can be compared across backends.
//!
//! [`Counters`]: crate::stats::Counters

pub(crate) mod epoll;
pub(crate) mod shard;
pub(crate) mod streams;
pub mod uring;

/// Most owed chunks one send carries (an `iovec` each). A chunk is a run of bytes in one
/// provided buffer or one reply, so a send carries up to 64 of them: 256 KiB of 4 KiB
/// buffers, or 64 pipelined replies.
pub const SEND_VEC_MAX: usize = 64;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::protocol::Protocol;
use shard::{ShardConfig, ShardContext};

/// Runs one shard on the calling thread until shutdown: the one place that picks the loop for
/// a backend (`Uring` or `Epoll`, already resolved from `Auto`) and a transport (TCP
/// connections answered with `proto`, or UDP datagrams echoed, with `cfg.udp`).
pub(crate) fn run_shard<P: Protocol + Clone>(
    backend: Backend,
    cfg: &ShardConfig,
    proto: P,
    ctx: ShardContext,
) -> Result<(), Error> {
    match (backend, cfg.udp) {
        (Backend::Epoll, false) => epoll::tcp::run_shard(cfg, proto, ctx),
        (Backend::Epoll, true) => epoll::udp::run_shard(cfg, ctx),
        (Backend::Uring | Backend::Auto, false) => uring::tcp::run_shard(cfg, proto, ctx),
        (Backend::Uring | Backend::Auto, true) => uring::udp::run_shard(cfg, ctx),
    }
}

/// Which kernel interface serves the connections.
///
/// Its names (`auto`, `uring`, `epoll`: [`name`](Backend::name)) are what `--backend` takes;
/// [`FromStr`](std::str::FromStr) parses them and [`Display`](fmt::Display) prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring if this kernel and process allow it, else epoll (with one line on stderr).
    Auto,
    /// io_uring; exit with status 2 if it is unavailable.
    Uring,
    /// Edge-triggered epoll.
    Epoll,
}

impl Backend {
    /// Every backend, in the order `--help` lists them.
    pub const ALL: [Backend; 3] = [Backend::Auto, Backend::Uring, Backend::Epoll];

    /// The backend's name: what `--backend` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// The name is not `auto`, `uring` or `epoll`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBackend(pub String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown backend {:?} (expected auto, uring or epoll)",
            self.0
        )
    }
}

impl std::error::Error for UnknownBackend {}

/// Parses the names `ringecho --backend` takes (and [`Display`](fmt::Display) prints).
///
/// ```
/// use ringecho::Backend;
///
/// assert_eq!("epoll".parse(), Ok(Backend::Epoll));
/// assert!("kqueue".parse::<Backend>().is_err());
/// ```
impl std::str::FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Backend, UnknownBackend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The deadlines a TCP shard keeps, the same on both backends: idle connections, connections
/// lingering after a protocol close, the accept back-off and the shutdown drain. The wait for
/// events never runs past [`next`](Timers::next), and [`expire`](Timers::expire) says what is
/// due.
pub(crate) struct Timers {
    idle_timeout: Option<Duration>,
    next_idle_sweep: Option<Instant>,
    lingering_close: Duration,
    /// Connections a protocol closed, waiting for the peer's FIN until their deadline. Every
    /// one waits the same time, so the queue is in deadline order.
    lingering: VecDeque<(usize, u32, Instant)>,
    /// Re-arm accepts at this instant (after an accept error).
    pub accept_retry_at: Option<Instant>,
    /// Close whatever is still open at this instant (shutdown).
    pub drain_deadline: Option<Instant>,
}

/// What [`Timers::expire`] found due.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    /// Connections to close now (lingering too long, idle too long, or the drain is over).
    pub close: Vec<usize>,
    /// How many of them were closed for being idle.
    pub idle: u64,
    /// The accept back-off is over.
    pub accept_retry: bool,
}

impl Timers {
    pub fn new(idle_timeout: Option<Duration>, lingering_close: Duration, now: Instant) -> Timers {
        Timers {
            idle_timeout,
            next_idle_sweep: idle_timeout.map(|t| now + idle_sweep_period(t)),
            lingering_close,
            lingering: VecDeque::new(),
            accept_retry_at: None,
            drain_deadline: None,
        }
    }

    /// Connection `key` (generation `generation`) was closed by its protocol at `now`: it may
    /// linger until `now + lingering_close`.
    pub fn linger(&mut self, key: usize, generation: u32, now: Instant) {
        self.lingering
            .push_back((key, generation, now + self.lingering_close));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        [
            self.drain_deadline,
            self.accept_retry_at,
            self.next_idle_sweep,
            self.lingering.front().map(|l| l.2),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Everything due at `now`. `live(key, generation)` says whether a connection still
    /// exists; `open` lists the open connections as (key, last time bytes moved).
    pub fn expire<I: Iterator<Item = (usize, Instant)>>(
        &mut self,
        now: Instant,
        live: impl Fn(usize, u32) -> bool,
        open: impl Fn() -> I,
    ) -> Expired {
        let mut due = Expired::default();
        while let Some(&(key, generation, at)) = self.lingering.front()
            && at <= now
        {
            self.lingering.pop_front();
            // The peer never closed after our FIN: stop waiting for it.
            if live(key, generation) {
                due.close.push(key);
            }
        }
        if let (Some(at), Some(idle)) = (self.next_idle_sweep, self.idle_timeout)
            && now >= at
        {
            self.next_idle_sweep = Some(now + idle_sweep_period(idle));
            let before = due.close.len();
            due.close.extend(
                open()
                    .filter(|&(_, last)| now.duration_since(last) >= idle)
                    .map(|(k, _)| k),
            );
            due.idle = (due.close.len() - before) as u64;
        }
        if let Some(at) = self.accept_retry_at
            && now >= at
        {
            self.accept_retry_at = None;
            due.accept_retry = true;
        }
        if let Some(at) = self.drain_deadline
            && now >= at
        {
            // Drain time is up: close whatever is still open, owed bytes or not.
            self.drain_deadline = None;
            due.close.extend(open().map(|(k, _)| k));
        }
        due.close.sort_unstable();
        due.close.dedup();
        due
    }
}

/// How often idle connections are looked for: often enough that one is closed within a quarter
/// of the timeout of going idle, never more than 100 times a second.
fn idle_sweep_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Bytes a UDP datagram may carry with `--buf-size` = `buf_size`, the same on both backends:
/// io_uring's multishot `recvmsg` puts a 16-byte header and the 128-byte source address in
/// the buffer before the payload.
pub const fn udp_max_payload(buf_size: u32) -> u32 {
    buf_size.saturating_sub(16 + std::mem::size_of::<libc::sockaddr_storage>() as u32)
}
