//! The server: binds listeners, runs shards on their own threads, reports stats, shuts down.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::uring::{self, RingConfig, RingMode};
use crate::backend::{Backend, epoll};
use crate::error::Error;
use crate::protocol::Protocol;
use crate::stats::{Counters, SharedCounters};
use crate::sys;

/// Default listen address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Everything a server needs to know. [`ServerConfig::default`] is what `ringecho` runs with no
/// flags.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses to listen on (port 0 picks a free port).
    pub addrs: Vec<SocketAddr>,
    /// Kernel interface.
    pub backend: Backend,
    /// Echo UDP datagrams instead of TCP streams.
    pub udp: bool,
    /// Most connections held at once; `None` = 65536 or what `RLIMIT_NOFILE` allows.
    pub max_conns: Option<usize>,
    /// Provided buffers in the ring (power of two, at most 32768).
    pub buf_count: u32,
    /// Size of each provided buffer.
    pub buf_size: u32,
    /// Most provided buffers that owed data may hold before new data is copied out instead;
    /// `None` = half of `buf_count`.
    pub buf_budget: Option<u32>,
    /// Per-connection back-pressure watermark in bytes.
    pub max_pending: usize,
    /// Ring geometry and task-running mode.
    pub ring: RingConfig,
    /// Use multishot receive when the kernel has it (false forces the single-shot fallback).
    pub multishot_recv: bool,
    /// Register the ring's own fd (`IORING_REGISTER_RING_FDS`) so each enter skips an fd lookup.
    pub register_ring_fd: bool,
    /// Send with `IORING_OP_SEND_ZC` when a send is at least this many bytes (`None`: never).
    pub zc_threshold: Option<u32>,
    /// Receive bundles: one completion for several buffers (6.10).
    pub recv_bundle: bool,
    /// Consume provided buffers incrementally (6.12), so small messages share large buffers.
    pub buf_incremental: bool,
    /// Completion batching when busy: wait for up to this many completions...
    pub batch_max: u32,
    /// ...or this many microseconds after the first (0 turns batching off).
    pub batch_wait_us: u32,
    /// Print a stats line to stderr this often.
    pub stats_interval: Option<Duration>,
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
            buf_count: 4096,
            buf_size: 4096,
            buf_budget: None,
            max_pending: 64 * 1024,
            ring: RingConfig {
                sq_entries: 1024,
                cq_entries: 4096,
                mode: RingMode::Auto,
                sqpoll: None,
            },
            multishot_recv: true,
            register_ring_fd: true,
            zc_threshold: None,
            recv_bundle: false,
            buf_incremental: false,
            batch_max: 64,
            batch_wait_us: 50,
            stats_interval: None,
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

/// File-table slots kept beyond `max_conns` for accepts that race the pause.
pub(crate) fn table_headroom(max_conns: usize) -> usize {
    64 + max_conns / 32
}

impl ServerConfig {
    /// Checks the settings against each other and the system; resolves `max_conns`.
    pub fn validate(&self, nofile: u64) -> Result<ServerConfig, Error> {
        let mut c = self.clone();
        if c.addrs.is_empty() {
            return Err(Error::Config("no address to listen on".into()));
        }
        if c.buf_count == 0 || !c.buf_count.is_power_of_two() || c.buf_count > 32768 {
            return Err(Error::Config(format!(
                "--buf-count {} must be a power of two between 1 and 32768",
                c.buf_count
            )));
        }
        if c.buf_size == 0 {
            return Err(Error::Config("--buf-size must be at least 1".into()));
        }
        if c.recv_bundle && c.buf_incremental {
            return Err(Error::Config(
                "--recv-bundle and --buf-incremental cannot be combined".into(),
            ));
        }
        if c.max_pending == 0 {
            return Err(Error::Config("--max-pending must be at least 1".into()));
        }
        if c.ring.cq_entries < c.ring.sq_entries {
            return Err(Error::Config(format!(
                "--cq-entries {} must be at least --sq-entries {}",
                c.ring.cq_entries, c.ring.sq_entries
            )));
        }
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
        // The registered file table must fit in RLIMIT_NOFILE, headroom included.
        let fits = |m: usize| m + table_headroom(m) <= nofile;
        let max = match c.max_conns {
            Some(0) => return Err(Error::Config("--max-conns must be at least 1".into())),
            Some(m) if !fits(m) => {
                return Err(Error::Config(format!(
                    "--max-conns {m} needs a file table of {} slots but RLIMIT_NOFILE is {nofile} \
                     (remedy: raise the hard limit, `ulimit -Hn`, or lower --max-conns)",
                    m + table_headroom(m)
                )));
            }
            Some(m) => m,
            None => {
                let mut m = DEFAULT_MAX_CONNS;
                while m > 1 && !fits(m) {
                    m = (nofile.saturating_sub(64) * 32 / 33).min(m - 1).max(1);
                }
                m
            }
        };
        c.max_conns = Some(max);
        let cpus = sys::allowed_cpus().len().max(1);
        let threads = match c.threads {
            Some(0) => return Err(Error::Config("--threads must be at least 1".into())),
            Some(t) if t > 1024 => {
                return Err(Error::Config(format!("--threads {t} is more than 1024")));
            }
            Some(t) => t,
            None => cpus,
        };
        if threads > max {
            return Err(Error::Config(format!(
                "--threads {threads} is more than --max-conns {max}: every shard needs a connection"
            )));
        }
        c.threads = Some(threads);
        Ok(c)
    }

    /// Connections one shard may hold: `max_conns` split evenly (rounded up) across shards.
    pub fn max_conns_per_shard(&self) -> usize {
        let max = self.max_conns.unwrap_or(DEFAULT_MAX_CONNS);
        max.div_ceil(self.threads.unwrap_or(1).max(1))
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
}

/// What one shard thread is given.
pub(crate) struct ShardContext {
    pub index: usize,
    pub shards: usize,
    /// TCP listeners, or UDP sockets with `udp`.
    pub listeners: Vec<OwnedFd>,
    pub shutdown_fd: RawFd,
    pub stats: Arc<SharedCounters>,
    pub events: mpsc::Sender<ShardEvent>,
}

/// What shard threads tell the server thread.
pub(crate) enum ShardEvent {
    /// The shard's accepts are armed.
    Ready,
    /// The shard could not start or stopped on an error.
    Failed(Error),
    /// The shard's loop has ended (sent last, also after `Failed`).
    Exited,
}

/// A bound, not yet running server.
pub struct Server {
    cfg: ServerConfig,
    /// Bound sockets per shard (one per address each): TCP listeners, or UDP sockets.
    listeners: Vec<Vec<OwnedFd>>,
    local_addrs: Vec<SocketAddr>,
    shutdown: ShutdownHandle,
}

impl Server {
    /// Raises `RLIMIT_NOFILE`, validates the settings and binds every address.
    pub fn bind(cfg: &ServerConfig) -> Result<Server, Error> {
        let nofile =
            sys::raise_nofile_limit().map_err(|e| Error::io("cannot raise RLIMIT_NOFILE", e))?;
        let cfg = cfg.validate(nofile)?;
        let shards = cfg.threads.unwrap_or(1);
        // Several shards share each address through SO_REUSEPORT, the kernel spreading new
        // connections across their listeners.
        let reuseport = shards > 1 || cfg.reuseport;
        let opts = sys::ListenOptions {
            backlog: cfg.backlog.unwrap_or_else(sys::somaxconn),
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
        let mut listeners: Vec<Vec<OwnedFd>> = (0..shards).map(|_| Vec::new()).collect();
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
            listeners[0].push(first);
            for shard in listeners.iter_mut().skip(1) {
                shard.push(bind(resolved, &opts).map_err(bind_err)?);
            }
            local_addrs.push(resolved);
        }
        let fd = sys::eventfd().map_err(|e| Error::io("cannot create eventfd", e))?;
        Ok(Server {
            cfg,
            listeners,
            local_addrs,
            shutdown: ShutdownHandle { fd: Arc::new(fd) },
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

    /// The validated settings.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
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

    /// Runs until shut down. Calls `on_ready` once every listener accepts; prints stats lines
    /// to `stats_out` every `stats_interval` and returns the final counters.
    pub fn run<P: Protocol + Clone>(
        self,
        proto: P,
        on_ready: impl FnOnce(&[SocketAddr]),
        stats_out: &mut dyn Write,
    ) -> Result<Counters, Error> {
        let backend = self.resolve_backend()?;
        let shards = self.listeners.len();
        let cpus = sys::allowed_cpus();
        let (tx, rx) = mpsc::channel();
        let stats: Vec<Arc<SharedCounters>> = (0..shards).map(|_| Arc::default()).collect();
        let started = Instant::now();
        let mut shard_cfg = self.cfg.clone();
        shard_cfg.max_conns = Some(self.cfg.max_conns_per_shard());
        let mut handles = Vec::with_capacity(shards);
        for (index, listeners) in self.listeners.into_iter().enumerate() {
            let ctx = ShardContext {
                index,
                shards,
                listeners,
                shutdown_fd: self.shutdown.raw_fd(),
                stats: Arc::clone(&stats[index]),
                events: tx.clone(),
            };
            let cfg = shard_cfg.clone();
            let proto = proto.clone();
            let cpu = if self.cfg.pin {
                cpus.get(index % cpus.len().max(1)).copied()
            } else {
                None
            };
            let spawned = thread::Builder::new()
                .name(format!("ringecho-shard-{index}"))
                .spawn(move || {
                    let events = ctx.events.clone();
                    let result = match cpu.map(sys::pin_current_thread) {
                        Some(Err(e)) => {
                            Err(Error::io(format!("cannot pin shard {index} to CPU"), e))
                        }
                        _ => match (backend, cfg.udp) {
                            (Backend::Epoll, false) => epoll::run_shard(&cfg, proto, ctx),
                            (Backend::Epoll, true) => epoll::run_udp_shard(&cfg, ctx),
                            (_, false) => uring::run_shard(&cfg, proto, ctx),
                            (_, true) => uring::udp::run_udp_shard(&cfg, ctx),
                        },
                    };
                    if let Err(e) = result {
                        let _ = events.send(ShardEvent::Failed(e));
                    }
                    let _ = events.send(ShardEvent::Exited);
                });
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
        drop(tx);
        let snapshot = || {
            Counters::sum(
                stats
                    .iter()
                    .map(|s| s.snapshot())
                    .collect::<Vec<_>>()
                    .iter(),
            )
        };

        let mut ready = 0;
        let mut exited = 0;
        let mut failure: Option<Error> = None;
        let mut on_ready = Some(on_ready);
        let mut next_stats = self.cfg.stats_interval.map(|i| Instant::now() + i);
        while exited < shards {
            let event = match next_stats {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(ev) => Some(ev),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(ev) => Some(ev),
                    Err(_) => break,
                },
            };
            match event {
                None => {
                    let line = stats_line("stats", started, &snapshot());
                    let _ = writeln!(stats_out, "{line}");
                    next_stats = self.cfg.stats_interval.map(|i| Instant::now() + i);
                }
                Some(ShardEvent::Ready) => {
                    ready += 1;
                    if ready == shards
                        && failure.is_none()
                        && let Some(f) = on_ready.take()
                    {
                        f(&self.local_addrs);
                    }
                }
                Some(ShardEvent::Failed(e)) => {
                    // One shard failing stops the whole server: no half-running server.
                    self.shutdown.shutdown();
                    failure.get_or_insert(e);
                }
                Some(ShardEvent::Exited) => exited += 1,
            }
        }
        for h in handles {
            if h.join().is_err() {
                failure.get_or_insert(Error::Config("a shard thread panicked".into()));
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let total = snapshot();
        let _ = writeln!(stats_out, "{}", stats_line("final", started, &total));
        Ok(total)
    }
}

/// One stats line: `LABEL t=SECONDS key=value ... rss_kib=N`.
fn stats_line(label: &str, started: Instant, c: &Counters) -> String {
    format!(
        "{label}: t={:.1} {c} rss_kib={}",
        started.elapsed().as_secs_f64(),
        sys::rss_bytes() / 1024
    )
}
