//! The server: binds listeners, runs shards on their own threads, reports stats, shuts down.
//!
//! [`Server::builder`] collects the settings (each one is also a `ringecho serve` flag),
//! [`ServerBuilder::bind`] binds every address, and [`Server::run`] (or [`Server::serve`]) runs
//! one shard per thread until a [`ShutdownHandle`] (or SIGINT/SIGTERM, once
//! [`ShutdownHandle::shutdown_on_signals`] is installed) stops it.
//!
//! ```no_run
//! use ringecho::protocol::Echo;
//! use ringecho::{Backend, Server};
//!
//! let server = Server::builder()
//!     .addr("127.0.0.1:7878".parse().unwrap())
//!     .backend(Backend::Auto)
//!     .threads(2)
//!     .bind()?;
//! server.shutdown_handle().shutdown_on_signals()?;
//! let totals = server.serve(Echo)?;
//! println!("echoed {} bytes", totals.bytes_out);
//! # Ok::<(), ringecho::Error>(())
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::shard::{ShardConfig, ShardContext, ShardEvent, table_headroom};
use crate::backend::uring::{self, RingConfig, RingMode, SqPoll};
use crate::backend::{self, Backend};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::stats::{Counters, SharedCounters, StatsFormat};
use crate::sys;
pub use crate::sys::{Keepalive, SocketOptions};

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Everything a server needs to know. [`ServerConfig::default`] is what `ringecho` runs with no
/// flags. Crate-internal: callers set it through [`ServerBuilder`].
#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    /// Addresses to listen on (port 0 picks a free port).
    pub addrs: Vec<SocketAddr>,
    /// Kernel interface.
    pub backend: Backend,
    /// Echo UDP datagrams instead of TCP streams.
    pub udp: bool,
    /// Most connections held at once; `None` = 65536 or what `RLIMIT_NOFILE` allows.
    pub max_conns: Option<usize>,
    /// Provided buffers in the ring (power of two, at most 32768); `None` = the transport's
    /// default ([`TCP_BUFS`], [`UDP_BUFS`]).
    pub buf_count: Option<u32>,
    /// Size of each provided buffer; `None` = the transport's default.
    pub buf_size: Option<u32>,
    /// Most provided buffers that owed data may hold before new data is copied out instead;
    /// `None` = half of `buf_count`.
    pub buf_budget: Option<u32>,
    /// Per-connection back-pressure watermark in bytes.
    pub max_pending: usize,
    /// Ring geometry and task-running mode.
    pub ring: RingConfig,
    /// Use multishot receive when the kernel has it (false forces the single-shot fallback).
    pub multishot_recv: bool,
    /// Accept connections into direct descriptors where the kernel releases a closed one at
    /// once (6.13); otherwise, or when off, ordinary descriptors.
    pub direct_descriptors: bool,
    /// Register the ring's own fd (`IORING_REGISTER_RING_FDS`) so each enter skips an fd lookup.
    pub register_ring_fd: bool,
    /// Send with `IORING_OP_SEND_ZC` when a send is at least this many bytes (`None`: never).
    pub zc_threshold: Option<u32>,
    /// Receive bundles: one completion for several buffers (6.10).
    pub recv_bundle: bool,
    /// Take streams in pieces (io_uring, with receive bundles (6.10): capped single-shot
    /// receives; epoll: capped reads), so each piece is echoed while the peer sends the rest.
    pub recv_cap: bool,
    /// Consume provided buffers incrementally (6.12), so small messages share large buffers.
    pub buf_incremental: bool,
    /// 64 KiB provided buffers per shard that streams receive into (io_uring TCP; a power
    /// of two, or 0 for none).
    pub stream_bufs: u32,
    /// Completion batching when busy: wait for up to this many completions...
    pub batch_max: u32,
    /// ...or this many microseconds after the first (0 turns batching off).
    pub batch_wait_us: u32,
    /// Print a stats line to stderr this often.
    pub stats_interval: Option<Duration>,
    /// How stats lines are written.
    pub stats_format: StatsFormat,
    /// On shutdown, how long owed bytes may drain before connections are closed regardless.
    pub drain_timeout: Duration,
    /// After a protocol closes a connection, how long it keeps reading (and dropping) input
    /// while its reply drains and the peer closes; closing with unread input would reset the
    /// connection and lose the reply.
    pub lingering_close: Duration,
    /// Listen backlog; `None` = the system's `somaxconn`.
    pub backlog: Option<i32>,
    /// Options for accepted sockets (set on the listener, inherited by each connection).
    pub socket: sys::SocketOptions,
    /// Close connections that neither sent nor received anything for this long.
    pub idle_timeout: Option<Duration>,
    /// Shards (threads, each with its own ring or epoll and listener); `None` = the CPUs this
    /// process may run on.
    pub threads: Option<usize>,
    /// Pin shard i to the i-th CPU this process may run on.
    pub pin: bool,
    /// Join an existing `SO_REUSEPORT` group on the address instead of failing with "address in
    /// use" (several ringecho processes sharing one port).
    pub reuseport: bool,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            addrs: vec![DEFAULT_ADDR.parse().expect("valid default address")],
            backend: Backend::Auto,
            udp: false,
            max_conns: None,
            buf_count: None,
            buf_size: None,
            buf_budget: None,
            max_pending: 64 * 1024,
            ring: RingConfig::default(),
            multishot_recv: true,
            direct_descriptors: true,
            register_ring_fd: false,
            zc_threshold: None,
            recv_bundle: true,
            recv_cap: true,
            buf_incremental: false,
            stream_bufs: 64,
            batch_max: 32,
            batch_wait_us: 0,
            stats_interval: None,
            stats_format: StatsFormat::Text,
            drain_timeout: Duration::from_secs(5),
            lingering_close: Duration::from_secs(5),
            backlog: None,
            socket: sys::SocketOptions::default(),
            idle_timeout: None,
            threads: None,
            pin: false,
            reuseport: false,
        }
    }
}

/// Largest default connection cap.
const DEFAULT_MAX_CONNS: usize = 65536;

/// The default buffer ring for TCP, (count, size): 1024 x 4 KiB = 4 MiB per shard.
pub const TCP_BUFS: (u32, u32) = (1024, 4096);
/// The default buffer ring for UDP, (count, size): every buffer takes any legal datagram
/// (65,507 bytes over IPv4, 65,527 over IPv6) whole, after the 144 bytes of receive header and
/// source address io_uring puts first; 256 of them map 16 MiB per shard, of which a small
/// datagram touches only the first page of its buffer.
pub const UDP_BUFS: (u32, u32) = (256, 65536 + 256);

/// Descriptors the process holds besides its shards and connections: standard streams, and
/// what start-up and `/proc` reads open for a moment.
const PROCESS_FDS: usize = 16;

/// Descriptors a shard holds besides its connections: its ring (or epoll instance), its
/// shutdown eventfd, and one socket per address.
fn shard_fds(addrs: usize) -> usize {
    2 + addrs
}

/// A default shard is worth starting only with room for this many connections.
const MIN_CONNS_PER_SHARD: usize = 16;

/// The most connections `threads` shards can hold within `nofile` descriptors, headroom
/// included, counting every connection as a descriptor (epoll, and io_uring before 6.13; a
/// direct descriptor needs a slot in a file table no larger than this); at most
/// `DEFAULT_MAX_CONNS`.
fn fitting_conns(nofile: usize, threads: usize, addrs: usize) -> usize {
    let fixed = PROCESS_FDS + threads * shard_fds(addrs);
    let avail = nofile.saturating_sub(fixed);
    let mut m = DEFAULT_MAX_CONNS.min(avail);
    while m > 0 && m + table_headroom(m) > avail {
        m -= (m + table_headroom(m) - avail).div_ceil(2).max(1).min(m);
    }
    m
}

/// What validation settled: the settings [`ServerConfig`] leaves to defaults or to the system.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// Shards.
    pub threads: usize,
    /// Connections held at once, across all shards.
    pub max_conns: usize,
    /// Provided buffers per shard.
    pub buf_count: u32,
    /// Size of each provided buffer.
    pub buf_size: u32,
    /// Listen backlog.
    pub backlog: i32,
    /// Set when `RLIMIT_NOFILE` made validation choose fewer shards or connections than it
    /// would have: the one line saying what it chose.
    pub limit_note: Option<String>,
}

impl ServerConfig {
    /// Checks the settings against each other and the system (`nofile`: the descriptor limit),
    /// and resolves what was left to defaults.
    pub(crate) fn validate(&self, nofile: u64) -> Result<Resolved, Error> {
        if self.addrs.is_empty() {
            return Err(Error::Config("no address to listen on".into()));
        }
        let (buf_count, buf_size) = self.checked_bufs()?;
        if self.max_pending == 0 {
            return Err(Error::Config("--max-pending must be at least 1".into()));
        }
        // 16384 x 64 KiB is the most one ring may map (1 GiB).
        if self.stream_bufs != 0
            && (!self.stream_bufs.is_power_of_two() || self.stream_bufs > 16384)
        {
            return Err(Error::Config(format!(
                "--stream-bufs {} must be 0 or a power of two up to 16384",
                self.stream_bufs
            )));
        }
        self.ring.check()?;
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        let cpus = sys::allowed_cpus().len().max(1);
        let threads = self.checked_threads(nofile, cpus)?;
        let max_conns = self.checked_max_conns(nofile, threads)?;
        // Say so when the limit cost shards, or left a cap low enough to matter.
        let fewer_shards = self.threads.is_none() && threads < cpus;
        let low_cap = self.max_conns.is_none() && max_conns < 1024;
        let limit_note = (!self.udp && (fewer_shards || low_cap)).then(|| {
            format!(
                "ringecho: RLIMIT_NOFILE {nofile} (the hard limit) fits {threads} shard(s) and \
                 up to {max_conns} connections (raise `ulimit -Hn` for more)"
            )
        });
        Ok(Resolved {
            threads,
            max_conns,
            buf_count,
            buf_size,
            backlog: self.backlog.unwrap_or_else(sys::somaxconn),
            limit_note,
        })
    }

    /// The buffer ring's (count, size): as set or the transport's default, within the ring's
    /// limits.
    fn checked_bufs(&self) -> Result<(u32, u32), Error> {
        let (count, size) = if self.udp { UDP_BUFS } else { TCP_BUFS };
        let (count, size) = (
            self.buf_count.unwrap_or(count),
            self.buf_size.unwrap_or(size),
        );
        if count == 0 || !count.is_power_of_two() || count > 32768 {
            return Err(Error::Config(format!(
                "--buf-count {count} must be a power of two between 1 and 32768"
            )));
        }
        use crate::backend::uring::buf_ring::{MAX_BUF_SIZE, MAX_RING_BYTES};
        if size == 0 || size > MAX_BUF_SIZE {
            return Err(Error::Config(format!(
                "--buf-size {size} must be between 1 and {MAX_BUF_SIZE} bytes"
            )));
        }
        if u64::from(count) * u64::from(size) > MAX_RING_BYTES {
            return Err(Error::Config(format!(
                "--buf-count {count} x --buf-size {size} is more than {} MiB of buffers per shard",
                MAX_RING_BYTES >> 20
            )));
        }
        Ok((count, size))
    }

    /// Shards: as asked, or one per CPU (of `cpus`), fewer where the descriptor limit leaves
    /// too little room for each one's connections.
    fn checked_threads(&self, nofile: usize, cpus: usize) -> Result<usize, Error> {
        let addrs = self.addrs.len();
        let max_threads = 1024;
        match self.threads {
            Some(0) => Err(Error::Config("--threads must be at least 1".into())),
            Some(t) if t > max_threads => Err(Error::Config(format!(
                "--threads {t} is more than {max_threads}"
            ))),
            Some(t) => {
                let fit = fitting_conns(nofile, t, addrs);
                if !self.udp && fit < t {
                    return Err(Error::Config(format!(
                        "--threads {t} does not fit RLIMIT_NOFILE {nofile}: {t} shards leave room \
                         for {fit} connections, fewer than one each (remedy: raise the hard limit, \
                         `ulimit -Hn`, or lower --threads)"
                    )));
                }
                Ok(t)
            }
            None => {
                // Each shard should have room for a few connections, and together for an
                // explicit --max-conns; and no more shards than connections allowed.
                let need = |t: usize| (t * MIN_CONNS_PER_SHARD).max(self.max_conns.unwrap_or(0));
                let mut t = cpus.min(self.max_conns.unwrap_or(cpus)).max(1);
                while t > 1 && !self.udp && fitting_conns(nofile, t, addrs) < need(t) {
                    t -= 1;
                }
                Ok(t)
            }
        }
    }

    /// The connection cap across `threads` shards: as asked, or what the descriptor limit
    /// fits.
    fn checked_max_conns(&self, nofile: usize, threads: usize) -> Result<usize, Error> {
        let addrs = self.addrs.len();
        let fit = fitting_conns(nofile, threads, addrs);
        let max = match self.max_conns {
            Some(0) => return Err(Error::Config("--max-conns must be at least 1".into())),
            Some(m) if m > fit && !self.udp => {
                return Err(Error::Config(format!(
                    "--max-conns {m} needs {} descriptors with {threads} shard(s) but \
                     RLIMIT_NOFILE is {nofile} (remedy: raise the hard limit, `ulimit -Hn`, or \
                     lower --max-conns)",
                    m + table_headroom(m) + PROCESS_FDS + threads * shard_fds(addrs)
                )));
            }
            Some(m) => m,
            None if fit == 0 && !self.udp => {
                return Err(Error::Config(format!(
                    "RLIMIT_NOFILE {nofile} leaves no room for a connection (remedy: raise it, \
                     `ulimit -n`)"
                )));
            }
            None => fit.max(1),
        };
        if !self.udp && threads > max {
            return Err(Error::Config(format!(
                "--threads {threads} is more than --max-conns {max}: every shard needs a connection"
            )));
        }
        Ok(max)
    }

    /// Shard `index`'s settings, once validation has `resolved` the rest.
    fn shard_config(&self, resolved: &Resolved, index: usize) -> ShardConfig {
        ShardConfig {
            udp: self.udp,
            max_conns: max_conns_of_shard(resolved.max_conns, resolved.threads, index),
            buf_count: resolved.buf_count,
            buf_size: resolved.buf_size,
            buf_budget: self.buf_budget.unwrap_or(resolved.buf_count / 2),
            max_pending: self.max_pending,
            backlog: resolved.backlog,
            ring: self.ring,
            multishot_recv: self.multishot_recv,
            direct_descriptors: self.direct_descriptors,
            register_ring_fd: self.register_ring_fd,
            zc_threshold: self.zc_threshold,
            recv_bundle: self.recv_bundle,
            recv_cap: self.recv_cap,
            buf_incremental: self.buf_incremental,
            stream_bufs: self.stream_bufs,
            batch_max: self.batch_max,
            batch_wait_us: self.batch_wait_us,
            drain_timeout: self.drain_timeout,
            lingering_close: self.lingering_close,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// Connections shard `index` of `threads` may hold: `max_conns` split across the shards so
/// that the shares add up to it exactly (the first `max_conns % threads` shards get one more).
fn max_conns_of_shard(max_conns: usize, threads: usize, index: usize) -> usize {
    max_conns / threads + usize::from(index < max_conns % threads)
}

/// The settings of a [`Server`]; [`bind`](Self::bind) makes one. Start from [`Server::builder`].
///
/// Every setting has a default, the one `ringecho serve` has without flags; each method names
/// the flag it corresponds to (see `ringecho serve --help`). Settings are checked against each
/// other and the system by [`bind`](Self::bind), which reports a bad one as [`Error::Config`].
///
/// Methods take and return `&mut self`, so a builder can be set up in one chain or step by
/// step:
///
/// ```
/// use std::time::Duration;
/// use ringecho::{Backend, Server};
///
/// let mut builder = Server::builder();
/// builder
///     .addr("127.0.0.1:0".parse().unwrap())
///     .backend(Backend::Epoll)
///     .threads(1)
///     .buf_count(256)
///     .buf_size(2048);
/// if std::env::var_os("VERBOSE").is_some() {
///     builder.stats_interval(Duration::from_secs(1));
/// }
/// let server = builder.bind()?;
/// assert_ne!(server.local_addrs()[0].port(), 0, "port 0 was resolved");
/// # Ok::<(), ringecho::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    cfg: ServerConfig,
}

impl ServerBuilder {
    /// Listen on `addr` only (`--addr`; default `127.0.0.1:7878`). Port 0 picks a free port,
    /// which [`Server::local_addrs`] then reports.
    pub fn addr(&mut self, addr: SocketAddr) -> &mut Self {
        self.cfg.addrs = vec![addr];
        self
    }

    /// Listen on every address in `addrs` (`--addr` repeated). `[::]:PORT` is dual-stack
    /// unless [`SocketOptions::ipv6_only`] is set.
    pub fn addrs(&mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> &mut Self {
        self.cfg.addrs = addrs.into_iter().collect();
        self
    }

    /// Which kernel interface serves connections (`--backend`; default [`Backend::Auto`]).
    pub fn backend(&mut self, backend: Backend) -> &mut Self {
        self.cfg.backend = backend;
        self
    }

    /// Echo UDP datagrams instead of serving TCP connections (`--udp`; default off). Each
    /// datagram goes back to its sender; one larger than a buffer is counted and dropped. The
    /// protocol given to [`Server::run`] is not consulted: protocols speak streams.
    pub fn udp(&mut self, udp: bool) -> &mut Self {
        self.cfg.udp = udp;
        self
    }

    /// Shards: threads, each with its own ring (or epoll), buffer ring, file table and
    /// `SO_REUSEPORT` listener (`--threads`; default: the CPUs this process may run on).
    pub fn threads(&mut self, threads: usize) -> &mut Self {
        self.cfg.threads = Some(threads);
        self
    }

    /// Pin shard *i* to the *i*-th CPU this process may run on (`--pin`; default off).
    pub fn pin(&mut self, pin: bool) -> &mut Self {
        self.cfg.pin = pin;
        self
    }

    /// Most connections held at once, split evenly across shards (`--max-conns`; default
    /// 65536, or what `RLIMIT_NOFILE` allows). Past it, new clients wait in the listen backlog.
    pub fn max_conns(&mut self, max_conns: usize) -> &mut Self {
        self.cfg.max_conns = Some(max_conns);
        self
    }

    /// Provided buffers in each shard's buffer ring: a power of two, at most 32768
    /// (`--buf-count`; default 1024 for TCP, 256 for UDP).
    pub fn buf_count(&mut self, count: u32) -> &mut Self {
        self.cfg.buf_count = Some(count);
        self
    }

    /// Size of each provided buffer, in bytes (`--buf-size`; default 4096 for TCP, and for UDP
    /// enough for any legal datagram: 65,792, of which 144 hold the kernel's receive header
    /// and the source address). On epoll, the size of each read (at least 64 KiB for TCP).
    pub fn buf_size(&mut self, size: u32) -> &mut Self {
        self.cfg.buf_size = Some(size);
        self
    }

    /// Most provided buffers owed replies may hold before received bytes are copied out to the
    /// connection's own memory instead (`--buf-budget`; default half of
    /// [`buf_count`](Self::buf_count)); the large buffers of
    /// [`stream_bufs`](Self::stream_bufs) count too, one each. Keeps slow readers from
    /// emptying the ring for everyone.
    pub fn buf_budget(&mut self, budget: u32) -> &mut Self {
        self.cfg.buf_budget = Some(budget);
        self
    }

    /// Per-connection back-pressure: stop receiving at this many owed bytes, resume at half
    /// (`--max-pending`; default 64 KiB).
    pub fn max_pending(&mut self, bytes: usize) -> &mut Self {
        self.cfg.max_pending = bytes;
        self
    }

    /// Submission queue entries of each ring (`--sq-entries`; default 1024).
    pub fn sq_entries(&mut self, entries: u32) -> &mut Self {
        self.cfg.ring.sq_entries = entries;
        self
    }

    /// Completion queue entries of each ring, at least [`sq_entries`](Self::sq_entries)
    /// (`--cq-entries`; default 4096).
    pub fn cq_entries(&mut self, entries: u32) -> &mut Self {
        self.cfg.ring.cq_entries = entries;
        self
    }

    /// Task-running set-up flags of each ring (`--ring-mode`; default [`RingMode::Auto`]).
    pub fn ring_mode(&mut self, mode: RingMode) -> &mut Self {
        self.cfg.ring.mode = mode;
        self
    }

    /// Poll the submission queue from a kernel thread (`--sqpoll`, `--sqpoll-cpu`; default
    /// off). Replaces the ring mode.
    pub fn sqpoll(&mut self, sqpoll: SqPoll) -> &mut Self {
        self.cfg.ring.sqpoll = Some(sqpoll);
        self
    }

    /// Use multishot receive where the kernel has it (default on; `--no-multishot-recv` turns
    /// it off, forcing the 5.19 single-shot path).
    pub fn multishot_recv(&mut self, on: bool) -> &mut Self {
        self.cfg.multishot_recv = on;
        self
    }

    /// Accept connections into direct descriptors where the kernel releases a closed one at
    /// once (6.13; default on; `--no-direct-descriptors` turns it off). Before 6.13 the server
    /// uses ordinary descriptors whatever this says: there a closed direct descriptor stays
    /// open until every older request on the ring has finished.
    pub fn direct_descriptors(&mut self, on: bool) -> &mut Self {
        self.cfg.direct_descriptors = on;
        self
    }

    /// Register each ring's own fd so an enter skips an fd lookup (`--register-ring-fd`;
    /// default off: the saving is too small to measure, see `kernel-notes.md`).
    pub fn register_ring_fd(&mut self, on: bool) -> &mut Self {
        self.cfg.register_ring_fd = on;
        self
    }

    /// Send with `IORING_OP_SEND_ZC` when a send is at least `bytes` long (`--zc-threshold`;
    /// default never).
    pub fn zc_threshold(&mut self, bytes: u32) -> &mut Self {
        self.cfg.zc_threshold = Some(bytes);
        self
    }

    /// Receive in bundles, one completion for several buffers where the kernel has them (6.10;
    /// default on; `--no-recv-bundle` turns it off).
    pub fn recv_bundle(&mut self, on: bool) -> &mut Self {
        self.cfg.recv_bundle = on;
        self
    }

    /// Take streams in pieces (default on; `--no-recv-cap` turns it off): on io_uring a
    /// stream is received with single-shot receives of about an eighth of what the shard's
    /// streams have in flight, one per loop turn, where the kernel has receive bundles (6.10);
    /// on epoll a lone stream of at most 64 KiB in flight is read 8 KiB at a time. Each piece
    /// is echoed while the peer is still sending the rest (see `backend::streams`).
    pub fn recv_cap(&mut self, on: bool) -> &mut Self {
        self.cfg.recv_cap = on;
        self
    }

    /// Consume provided buffers incrementally where the kernel can (6.12; default off;
    /// `--buf-incremental` turns it on): small messages share a buffer instead of each taking
    /// a whole one, so the ring runs dry far later when many connections hold a little data
    /// each; but replies then start at arbitrary offsets, which measured 10-30% slower for
    /// streams.
    pub fn buf_incremental(&mut self, on: bool) -> &mut Self {
        self.cfg.buf_incremental = on;
        self
    }

    /// 64 KiB provided buffers per shard that a stream's receives take while any is free
    /// (io_uring, TCP; `--stream-bufs`; default 64, 0 for none): a stream echoed from a few
    /// large buffers costs the kernel less to copy than from many 4 KiB ones.
    pub fn stream_bufs(&mut self, count: u32) -> &mut Self {
        self.cfg.stream_bufs = count;
        self
    }

    /// When busy, wait for up to this many completions per enter (`--batch-max`; default 32).
    pub fn batch_max(&mut self, completions: u32) -> &mut Self {
        self.cfg.batch_max = completions;
        self
    }

    /// ...but no longer than this many microseconds once one has arrived (`--batch-wait-us`;
    /// default 50; 0 turns batching off).
    pub fn batch_wait_us(&mut self, micros: u32) -> &mut Self {
        self.cfg.batch_wait_us = micros;
        self
    }

    /// Write a `stats:` line to [`Server::run`]'s `stats_out` this often (`--stats-interval`;
    /// default never; zero also means never).
    pub fn stats_interval(&mut self, every: Duration) -> &mut Self {
        self.cfg.stats_interval = Some(every).filter(|d| !d.is_zero());
        self
    }

    /// How the `stats:` and `final:` lines are written (`--stats-format`; default
    /// [`StatsFormat::Text`]).
    pub fn stats_format(&mut self, format: StatsFormat) -> &mut Self {
        self.cfg.stats_format = format;
        self
    }

    /// On shutdown, how long owed bytes may drain before connections are closed regardless
    /// (`--drain-timeout`; default 5 s).
    pub fn drain_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.cfg.drain_timeout = timeout;
        self
    }

    /// After a protocol closes a connection, how long it keeps reading and dropping input
    /// while its reply drains and the peer closes (`--lingering-close`; default 5 s).
    pub fn lingering_close(&mut self, timeout: Duration) -> &mut Self {
        self.cfg.lingering_close = timeout;
        self
    }

    /// Close connections that sent and received nothing for this long (`--idle-timeout`;
    /// default never; zero also means never).
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.cfg.idle_timeout = Some(timeout).filter(|d| !d.is_zero());
        self
    }

    /// Listen backlog (`--backlog`; default the system's `net.core.somaxconn`).
    pub fn backlog(&mut self, backlog: i32) -> &mut Self {
        self.cfg.backlog = Some(backlog);
        self
    }

    /// Options accepted sockets inherit from the listener (`--nodelay`, `--rcvbuf`,
    /// `--sndbuf`, `--keepalive`, `--linger`, `--ipv6-only`; default
    /// [`SocketOptions::default`]).
    pub fn socket_options(&mut self, options: SocketOptions) -> &mut Self {
        self.cfg.socket = options;
        self
    }

    /// Join an existing `SO_REUSEPORT` group on the address instead of failing with "address
    /// in use" (`--reuseport`; default off).
    pub fn reuseport(&mut self, on: bool) -> &mut Self {
        self.cfg.reuseport = on;
        self
    }

    /// Checks the settings, raises `RLIMIT_NOFILE` to its hard limit (the registered file
    /// tables count against it) and binds every address. Nothing is accepted until
    /// [`Server::run`]; clients that connect before then wait in the listen backlog.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for inconsistent settings, [`Error::Bind`] when an address cannot be
    /// bound, [`Error::Io`] for other system failures.
    pub fn bind(&self) -> Result<Server, Error> {
        Server::bind(&self.cfg)
    }
}

/// A way to stop a running server from another thread (what SIGINT/SIGTERM do).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    fd: Arc<OwnedFd>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, drain, close, return from `run`.
    pub fn shutdown(&self) {
        sys::eventfd_signal(self.fd.as_raw_fd());
    }

    /// The eventfd every shard polls; a signal handler may write to it.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes SIGINT and SIGTERM start this shutdown; a second signal ends the process at once
    /// (status 130) without draining. Also ignores SIGPIPE, so a vanished peer is an error on
    /// one connection rather than the end of the process. The handlers are process-wide: the
    /// last handle installed is the one signals stop.
    pub fn shutdown_on_signals(&self) -> Result<(), Error> {
        sys::install_shutdown_signals(self.raw_fd())
            .map_err(|e| Error::io("cannot install signal handlers", e))
    }
}

/// The live counters of a server, readable from any thread while it runs: what its `stats:`
/// lines print, for a metrics exporter or a dashboard. [`Server::stats_handle`] gives one.
///
/// Reading never stalls the shards: each shard publishes its counters to atomics once per loop
/// turn, and a snapshot reads those (each field on its own, so a snapshot taken while shards
/// publish may mix two turns of one shard; every field is still a value the shard had).
///
/// ```
/// use ringecho::Server;
///
/// let server = Server::builder().addr("127.0.0.1:0".parse().unwrap()).bind()?;
/// let stats = server.stats_handle();
/// assert_eq!(stats.snapshot().accepted, 0);
/// assert_eq!(stats.backend(), None, "not chosen until the server runs");
/// # Ok::<(), ringecho::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StatsHandle {
    shards: Arc<[Arc<SharedCounters>]>,
    backend: Arc<OnceLock<Backend>>,
}

impl StatsHandle {
    /// Every counter summed over the shards, as of each shard's last loop turn.
    pub fn snapshot(&self) -> Counters {
        let mut total = Counters::default();
        for s in self.shards.iter() {
            total.add(&s.snapshot());
        }
        total
    }

    /// Shards (each publishes its own counters; [`snapshot`](Self::snapshot) sums them).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The backend serving connections ([`Backend::Uring`] or [`Backend::Epoll`]) once
    /// [`Server::run`] has chosen it; `None` before.
    pub fn backend(&self) -> Option<Backend> {
        self.backend.get().copied()
    }
}

/// A bound, not yet running server.
pub struct Server {
    cfg: ServerConfig,
    resolved: Resolved,
    /// Bound sockets per shard (one per address each): TCP listeners, or UDP sockets.
    sockets: Vec<Vec<OwnedFd>>,
    local_addrs: Vec<SocketAddr>,
    shutdown: ShutdownHandle,
    stats: StatsHandle,
}

impl Server {
    /// Settings for a new server, all at their defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Raises `RLIMIT_NOFILE`, validates the settings and binds every address.
    pub(crate) fn bind(cfg: &ServerConfig) -> Result<Server, Error> {
        let nofile =
            sys::raise_nofile_limit().map_err(|e| Error::io("cannot raise RLIMIT_NOFILE", e))?;
        let resolved = cfg.validate(nofile)?;
        if let Some(note) = &resolved.limit_note {
            eprintln!("{note}");
        }
        let shards = resolved.threads;
        // Several shards share each address through SO_REUSEPORT, the kernel spreading new
        // connections across their listeners.
        let reuseport = shards > 1 || cfg.reuseport;
        let opts = sys::ListenOptions {
            backlog: resolved.backlog,
            reuseport,
            socket: cfg.socket.clone(),
        };
        let bind = |addr, opts: &sys::ListenOptions| -> std::io::Result<OwnedFd> {
            if cfg.udp {
                sys::udp_socket(addr, opts).map(OwnedFd::from)
            } else {
                sys::tcp_listener(addr, opts).map(OwnedFd::from)
            }
        };
        let mut sockets: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for &addr in &cfg.addrs {
            let bind_err = |source| Error::Bind { addr, source };
            if reuseport && !cfg.reuseport && addr.port() != 0 {
                // Without this, a second ringecho on a busy port would silently join the first
                // one's reuseport group: a plain bind fails if anything listens there.
                let probe = sys::ListenOptions {
                    reuseport: false,
                    ..opts.clone()
                };
                drop(bind(addr, &probe).map_err(bind_err)?);
            }
            // Shard 0 binds first; with port 0 the others must join the port it got, since
            // each port-0 bind would get a new port.
            let first = bind(addr, &opts).map_err(bind_err)?;
            let resolved =
                sys::local_addr(first.as_raw_fd()).map_err(|e| Error::io("getsockname", e))?;
            sockets[0].push(first);
            for shard in sockets.iter_mut().skip(1) {
                shard.push(bind(resolved, &opts).map_err(bind_err)?);
            }
            local_addrs.push(resolved);
        }
        let fd = sys::eventfd().map_err(|e| Error::io("cannot create eventfd", e))?;
        let stats = StatsHandle {
            shards: (0..shards).map(|_| Arc::default()).collect(),
            backend: Arc::default(),
        };
        Ok(Server {
            cfg: cfg.clone(),
            resolved,
            sockets,
            local_addrs,
            shutdown: ShutdownHandle { fd: Arc::new(fd) },
            stats,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A handle that reads the server's counters while it runs (and after).
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// The backend `run` will use: `auto` becomes io_uring if a ring with everything the
    /// server needs can be created here, else epoll (saying why on stderr).
    pub fn resolve_backend(&self) -> Result<Backend, Error> {
        match self.cfg.backend {
            Backend::Auto => {
                match uring::probe(&self.cfg.ring).and_then(|f| f.require_server_minimum()) {
                    Ok(()) => Ok(Backend::Uring),
                    Err(e) => {
                        eprintln!("ringecho: {e}; falling back to epoll");
                        Ok(Backend::Epoll)
                    }
                }
            }
            other => Ok(other),
        }
    }

    /// Runs until shut down, answering every connection with `proto`, and returns the final
    /// counters: [`run`](Self::run) without a readiness callback or stats lines.
    pub fn serve<P: Protocol + Clone>(self, proto: P) -> Result<Counters, Error> {
        self.run(proto, |_| {}, &mut std::io::sink())
    }

    /// Runs until shut down and returns the final counters.
    ///
    /// Each connection gets its own clone of `proto`, made when it is accepted. `on_ready` is
    /// called once every shard has its accepts armed, with the bound addresses (the binary
    /// prints `listening on ADDR` there). A `stats:` line goes to `stats_out` every
    /// [`stats_interval`](ServerBuilder::stats_interval) and a `final:` line at the end. The
    /// io_uring backend prints one start-up line to stderr saying what it got from the kernel,
    /// and [`Backend::Auto`] says there why it fell back to epoll, if it did.
    ///
    /// # Errors
    ///
    /// [`Error::UringUnavailable`] when [`Backend::Uring`] was asked for and io_uring cannot
    /// run here; otherwise the first error any shard stopped on (the others are then shut
    /// down too).
    pub fn run<P: Protocol + Clone>(
        mut self,
        proto: P,
        on_ready: impl FnOnce(&[SocketAddr]),
        stats_out: &mut dyn Write,
    ) -> Result<Counters, Error> {
        let backend = self.resolve_backend()?;
        let _ = self.stats.backend.set(backend);
        let started = Instant::now();
        let (tx, rx) = mpsc::channel();
        let handles = self.spawn_shards(backend, proto, tx)?;
        let mut failure = self.watch_shards(&rx, handles.len(), on_ready, started, stats_out);
        for h in handles {
            if h.join().is_err() {
                failure.get_or_insert(Error::ShardPanicked);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let total = self.stats.snapshot();
        let line = stats_line(self.cfg.stats_format, "final", started, &total);
        let _ = writeln!(stats_out, "{line}");
        Ok(total)
    }

    /// Starts one thread per shard, each with its bound sockets, its share of the settings and
    /// its own clone of `proto`, reporting to `events`. If a thread cannot be started, the
    /// ones already running are shut down and joined.
    fn spawn_shards<P: Protocol + Clone>(
        &mut self,
        backend: Backend,
        proto: P,
        events: mpsc::Sender<ShardEvent>,
    ) -> Result<Vec<thread::JoinHandle<()>>, Error> {
        let shards = self.sockets.len();
        let cpus = sys::allowed_cpus();
        let mut handles = Vec::with_capacity(shards);
        for (index, sockets) in std::mem::take(&mut self.sockets).into_iter().enumerate() {
            let ctx = ShardContext {
                index,
                shards,
                sockets,
                shutdown_fd: self.shutdown.raw_fd(),
                stats: Arc::clone(&self.stats.shards[index]),
                events: events.clone(),
            };
            let cfg = self.cfg.shard_config(&self.resolved, index);
            let proto = proto.clone();
            let cpu = if self.cfg.pin {
                cpus.get(index % cpus.len().max(1)).copied()
            } else {
                None
            };
            let spawned = thread::Builder::new()
                .name(format!("ringecho-shard-{index}"))
                .spawn(move || run_shard_thread(backend, &cfg, proto, ctx, cpu));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    self.shutdown.shutdown();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(Error::io("cannot start shard thread", e));
                }
            }
        }
        Ok(handles)
    }

    /// Follows the shards' events until all `shards` have exited: calls `on_ready` once every
    /// one has its accepts armed, writes a `stats:` line every interval, and shuts the server
    /// down at the first failure, which it returns.
    fn watch_shards(
        &self,
        events: &mpsc::Receiver<ShardEvent>,
        shards: usize,
        on_ready: impl FnOnce(&[SocketAddr]),
        started: Instant,
        stats_out: &mut dyn Write,
    ) -> Option<Error> {
        let mut ready = 0;
        let mut exited = 0;
        let mut failure: Option<Error> = None;
        let mut on_ready = Some(on_ready);
        let mut next_stats = self.cfg.stats_interval.map(|i| Instant::now() + i);
        while exited < shards {
            match next_wake(events, next_stats) {
                Wake::AllGone => break,
                Wake::StatsDue => {
                    let c = self.stats.snapshot();
                    let line = stats_line(self.cfg.stats_format, "stats", started, &c);
                    let _ = writeln!(stats_out, "{line}");
                    next_stats = self.cfg.stats_interval.map(|i| Instant::now() + i);
                }
                Wake::Shard(ShardEvent::Ready) => {
                    ready += 1;
                    if ready == shards
                        && failure.is_none()
                        && let Some(f) = on_ready.take()
                    {
                        f(&self.local_addrs);
                    }
                }
                Wake::Shard(ShardEvent::Failed(e)) => {
                    // One shard failing stops the whole server: no half-running server.
                    self.shutdown.shutdown();
                    failure.get_or_insert(e);
                }
                Wake::Shard(ShardEvent::Exited) => exited += 1,
            }
        }
        failure
    }
}

/// The body of a shard's thread: pins it to `cpu` if asked, runs the shard, and reports how
/// it ended (`Failed` first if it did not end well, then `Exited`).
fn run_shard_thread<P: Protocol + Clone>(
    backend: Backend,
    cfg: &ShardConfig,
    proto: P,
    ctx: ShardContext,
    cpu: Option<usize>,
) {
    let events = ctx.events.clone();
    let index = ctx.index;
    // A panic (a protocol's, say) must stop the whole server like an error does, not leave
    // the other shards running with nobody to stop them.
    let shard = std::panic::AssertUnwindSafe(|| match cpu.map(sys::pin_current_thread) {
        Some(Err(e)) => Err(Error::io(format!("cannot pin shard {index} to CPU"), e)),
        _ => backend::run_shard(backend, cfg, proto, ctx),
    });
    let result = std::panic::catch_unwind(shard).unwrap_or(Err(Error::ShardPanicked));
    if let Err(e) = result {
        let _ = events.send(ShardEvent::Failed(e));
    }
    let _ = events.send(ShardEvent::Exited);
}

/// What wakes the server thread while its shards run.
enum Wake {
    /// A shard reported.
    Shard(ShardEvent),
    /// A `stats:` line is due.
    StatsDue,
    /// Every shard thread has dropped its end of the channel.
    AllGone,
}

/// Waits for the next shard event, or until `stats_at` if that comes first.
fn next_wake(events: &mpsc::Receiver<ShardEvent>, stats_at: Option<Instant>) -> Wake {
    match stats_at {
        Some(at) => match events.recv_timeout(at.saturating_duration_since(Instant::now())) {
            Ok(ev) => Wake::Shard(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => Wake::StatsDue,
            Err(mpsc::RecvTimeoutError::Disconnected) => Wake::AllGone,
        },
        None => events.recv().map_or(Wake::AllGone, Wake::Shard),
    }
}

/// One stats line: `LABEL: t=SECONDS key=value ... rss_kib=N`, or the same as JSON.
fn stats_line(format: StatsFormat, label: &str, started: Instant, c: &Counters) -> String {
    let secs = started.elapsed().as_secs_f64();
    format.line(label, secs, c, sys::rss_bytes() / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_splits_across_shards_exactly() {
        for (max, threads) in [(3, 2), (9, 8), (65536, 3), (1, 1), (100, 7)] {
            let shares: Vec<usize> = (0..threads)
                .map(|i| max_conns_of_shard(max, threads, i))
                .collect();
            assert_eq!(
                shares.iter().sum::<usize>(),
                max,
                "{max} over {threads}: {shares:?}"
            );
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn fitting_conns_leaves_room_for_the_headroom_and_the_shards() {
        for nofile in [20, 64, 256, 1024, 20_000, 1 << 20] {
            for threads in [1, 2, 16] {
                let m = fitting_conns(nofile, threads, 1);
                if m > 0 {
                    assert!(
                        m + table_headroom(m) + PROCESS_FDS + threads * shard_fds(1) <= nofile,
                        "{nofile} {threads}: {m}"
                    );
                }
            }
        }
        assert_eq!(fitting_conns(1 << 20, 1, 1), DEFAULT_MAX_CONNS);
    }
}
