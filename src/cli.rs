//! Command-line interface. The flag docs here are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use ringecho::backend::Backend;
use ringecho::backend::uring::{RingMode, SqPoll};
use ringecho::loadgen::BenchArgs;
use ringecho::loadgen::args::parse_addr;
use ringecho::protocol::{DEFAULT_HTTP_BODY, DEFAULT_MAX_FRAME};
use ringecho::server::{DEFAULT_ADDR, Keepalive, Server, ServerBuilder, SocketOptions};
use ringecho::stats::StatsFormat;

/// An io_uring TCP echo server, with a verifying load generator and a kernel feature probe.
///
/// With no subcommand, `ringecho` serves (same as `ringecho serve`).
#[derive(Debug, Parser)]
#[command(name = "ringecho", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the echo server (the default).
    Serve(Box<ServeArgs>),
    /// Show which io_uring features this kernel and process support.
    Probe(ProbeArgs),
    /// Drive an echo server (ours or any other) and report throughput, latency and CPU.
    Bench(Box<BenchArgs>),
    /// Merge `bench --hlog` interval logs of several runs (load generators on several machines)
    /// into one summary: messages, throughput summed over the window common to every run, and
    /// the percentiles of every run's messages together.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Interval logs written by `ringecho bench --hlog` (one per run).
    #[arg(required = true, value_name = "FILE.hlog")]
    pub files: Vec<PathBuf>,

    /// Print one JSON object (the fields of `bench --json` that apply, summed or merged).
    #[arg(long)]
    pub json: bool,

    /// Also write the merged latency percentile curve as an SVG chart.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

fn parse_pow2(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if n == 0 || !n.is_power_of_two() || n > 32768 {
        return Err(format!("{n} must be a power of two between 1 and 32768"));
    }
    Ok(n)
}

fn parse_positive_u32(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive number")),
    }
}

fn parse_positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive number")),
    }
}

fn parse_keepalive(s: &str) -> Result<Keepalive, String> {
    let parts: Vec<&str> = s.split(',').collect();
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
    match nums.as_deref() {
        Some(&[idle, interval, count]) if idle > 0 && interval > 0 && count > 0 => Ok(Keepalive {
            idle,
            interval,
            count,
        }),
        _ => Err(format!(
            "'{s}' is not IDLE,INTVL,CNT (three positive numbers, e.g. 60,10,5)"
        )),
    }
}

/// Largest `--http-body`: each of the three prebuilt responses holds a copy.
const MAX_HTTP_BODY: usize = 64 << 20;

fn parse_http_body(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= MAX_HTTP_BODY => Ok(n),
        Ok(_) => Err(format!("at most {MAX_HTTP_BODY} bytes")),
        Err(_) => Err(format!("'{s}' is not a number of bytes")),
    }
}

/// What the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolKind {
    /// Every received byte goes back.
    Echo,
    /// Frames of a 4-byte big-endian length and a body, echoed as they arrive; an announced
    /// length over --max-frame closes the connection.
    Framed,
    /// A fixed `200 OK` to every HTTP/1.1 request (keep-alive, pipelining); 400 to malformed
    /// requests, 431 to heads over 8 KiB, 501 to chunked bodies, each followed by a close.
    Http,
}

/// How stats lines are written (the library's `StatsFormat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatsFormatArg {
    /// `stats: t=1.0 accepted=3 ... rss_kib=5120`.
    Text,
    /// One JSON object a line.
    Json,
}

/// `--backend`: the library's names, parsed by its `FromStr`, each listed with what it does.
fn backend_parser() -> impl TypedValueParser<Value = Backend> {
    let values = Backend::ALL.map(|b| {
        PossibleValue::new(b.name()).help(match b {
            Backend::Auto => {
                "io_uring if this kernel and process allow it, else epoll (with one line on stderr)"
            }
            Backend::Uring => "io_uring; exit with status 2 if it is unavailable",
            Backend::Epoll => "Edge-triggered epoll",
        })
    });
    PossibleValuesParser::new(values).map(|s| s.parse().expect("one of the names listed"))
}

/// Parses seconds, fractions allowed (`0.5`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; repeat to listen on several. `[::]:PORT` is dual-stack unless
    /// --ipv6-only. Port 0 picks a free port. Prints `listening on ADDR` per address when ready.
    #[arg(long = "addr", value_name = "HOST:PORT", default_value = DEFAULT_ADDR,
          value_parser = parse_addr, action = ArgAction::Append)]
    pub addrs: Vec<SocketAddr>,

    /// Kernel interface: `auto` uses io_uring and falls back to epoll where io_uring is
    /// unavailable; `uring` exits with status 2 instead.
    #[arg(long, value_parser = backend_parser(), default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// Echo UDP datagrams instead of TCP streams (each datagram back to its sender; datagrams
    /// larger than a buffer are counted and dropped).
    #[arg(long)]
    pub udp: bool,

    /// Most connections held at once [default: 65536, or what RLIMIT_NOFILE allows].
    #[arg(long, value_parser = parse_positive_usize)]
    pub max_conns: Option<usize>,

    /// Provided buffers in the buffer ring (power of two, at most 32768) [default: 1024; with
    /// --udp 256].
    #[arg(long, value_parser = parse_pow2)]
    pub buf_count: Option<u32>,

    /// Size of each provided buffer in bytes [default: 4096; with --udp 65792, which takes any
    /// legal datagram whole].
    #[arg(long, value_parser = parse_positive_u32)]
    pub buf_size: Option<u32>,

    /// Most buffers owed data may hold before received bytes are copied out to the
    /// connection's own memory instead, counting --stream-bufs' and streams' piece buffers
    /// too [default: half of --buf-count].
    #[arg(long)]
    pub buf_budget: Option<u32>,

    /// 64 KiB provided buffers per shard that streams taken whole receive into while any is
    /// free (io_uring, TCP, with receive bundles; a power of two up to 16384, 0 for none):
    /// echoing a stream from a few large buffers costs the kernel less than from many small
    /// ones. They count toward --buf-budget, one each.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub stream_bufs: u32,

    /// What to answer.
    #[arg(long, value_enum, default_value_t = ProtocolKind::Echo)]
    pub protocol: ProtocolKind,

    /// Longest frame body accepted by `--protocol framed`, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME)]
    pub max_frame: u32,

    /// Body length of `--protocol http`'s response, in bytes (`Hello, world\n` repeated).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_HTTP_BODY,
        value_parser = parse_http_body
    )]
    pub http_body: usize,

    /// Per-connection back-pressure: stop receiving at this many owed bytes, resume below half.
    #[arg(long, default_value_t = 64 * 1024, value_parser = parse_positive_usize)]
    pub max_pending: usize,

    /// Submission queue entries.
    #[arg(long, default_value_t = 1024, value_parser = parse_positive_u32)]
    pub sq_entries: u32,

    /// Completion queue entries (at least --sq-entries).
    #[arg(long, default_value_t = 4096, value_parser = parse_positive_u32)]
    pub cq_entries: u32,

    /// Task-running set-up flags for the ring.
    #[arg(long, value_enum, default_value_t = RingMode::Auto)]
    pub ring_mode: RingMode,

    /// Use single-shot receives even where multishot receive exists (the 5.19 code path).
    #[arg(long)]
    pub no_multishot_recv: bool,

    /// Accept connections into ordinary descriptors instead of direct descriptors (what the
    /// server does anyway on kernels before 6.13, which keep a closed direct descriptor open
    /// until every older request has finished).
    #[arg(long)]
    pub no_direct_descriptors: bool,

    /// Use a kernel thread polling the submission queue (no submit syscalls while it is awake;
    /// it costs a CPU while busy). It sleeps after IDLE_MS without submissions.
    #[arg(long, value_name = "IDLE_MS", num_args = 0..=1, default_missing_value = "1000",
          require_equals = true)]
    pub sqpoll: Option<u32>,

    /// Pin the SQPOLL thread to this CPU.
    #[arg(long, value_name = "CPU", requires = "sqpoll")]
    pub sqpoll_cpu: Option<u32>,

    /// Receive in bundles (the default where the kernel has them, 6.10): one completion covers
    /// everything the socket holds, across several buffers, so a stream costs a few
    /// completions per message instead of one per buffer.
    #[arg(long, overrides_with = "no_recv_bundle", hide = true)]
    pub recv_bundle: bool,

    /// One buffer per receive completion instead of bundles.
    #[arg(long)]
    pub no_recv_bundle: bool,

    /// Take a stream in pieces (the default): a stream's receives are capped at about an
    /// eighth of the data the shard's streams have in flight, so replies go out while the rest
    /// is still arriving (io_uring: one capped single-shot receive per loop turn, with receive
    /// bundles, 6.10; epoll: a lone stream of at most 64 KiB in flight, read 8 KiB at a time).
    #[arg(long, overrides_with = "no_recv_cap", hide = true)]
    pub recv_cap: bool,

    /// Receive whatever a stream's socket holds at once instead.
    #[arg(long)]
    pub no_recv_cap: bool,

    /// Consume provided buffers incrementally (6.12): small messages share a buffer, so the
    /// ring runs dry far later when thousands of connections each hold a little data. Off by
    /// default: replies then start at arbitrary offsets in their buffers, and streams measured
    /// 10-30% slower (kernel-notes.md).
    #[arg(long, overrides_with = "no_buf_incremental")]
    pub buf_incremental: bool,

    /// Give each receive whole buffers (the default).
    #[arg(long, hide = true)]
    pub no_buf_incremental: bool,

    /// Register the ring fd, so each io_uring_enter skips an fd lookup. Off by default: it
    /// saves tens of nanoseconds per enter, too little to measure here (kernel-notes.md).
    #[arg(long)]
    pub register_ring_fd: bool,

    /// Send with zero-copy send (IORING_OP_SEND_ZC) when a send is at least BYTES long.
    /// Off by default: over loopback the kernel copies anyway.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_u32)]
    pub zc_threshold: Option<u32>,

    /// With --batch-wait-us: after a busy turn, wait for up to this many completions per enter.
    #[arg(long, default_value_t = 32, value_parser = parse_positive_u32)]
    pub batch_max: u32,

    /// Opt-in completion batching: after a busy turn, hold completions that are ready for up to
    /// this many microseconds to collect --batch-max of them (fewer syscalls, more latency;
    /// kernel-notes.md has the price). 0, the default: never hold a ready completion.
    #[arg(long, default_value_t = 0, value_name = "MICROS")]
    pub batch_wait_us: u32,

    /// Print a stats line to stderr every SECS seconds (a final line is always printed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stats_interval: Option<Duration>,

    /// How the stats and final lines are written: `text` (`stats: t=1.0 accepted=3 ...`) or
    /// `json` (one object a line: `{"kind":"stats","t":1.0,"accepted":3,...}`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = StatsFormatArg::Text)]
    pub stats_format: StatsFormatArg,

    /// Serve the counters in Prometheus' text format at http://ADDR/metrics, on a listener of
    /// its own (port 0 picks a free port); prints `metrics on http://ADDR/metrics` when ready.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,

    /// On SIGINT/SIGTERM, let owed bytes drain this long before closing connections.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub drain_timeout: Duration,

    /// Shards: threads, each with its own ring (or epoll), buffer ring, file table and
    /// SO_REUSEPORT listener [default: the CPUs this process may run on].
    #[arg(long, value_parser = parse_positive_usize)]
    pub threads: Option<usize>,

    /// Pin shard i to the i-th CPU this process may run on.
    #[arg(long)]
    pub pin: bool,

    /// Set SO_REUSEPORT and join any existing group on the address (several processes sharing
    /// one port). Without it, an address already in use is an error.
    #[arg(long)]
    pub reuseport: bool,

    /// TCP_NODELAY on accepted sockets: echo small writes at once instead of waiting for the
    /// peer's ACK (Nagle). `--nodelay false` turns it off.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub nodelay: bool,

    /// SO_RCVBUF for accepted sockets, in bytes (turns off receive-buffer autotuning).
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_u32)]
    pub rcvbuf: Option<u32>,

    /// SO_SNDBUF for accepted sockets, in bytes (turns off send-buffer autotuning).
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_u32)]
    pub sndbuf: Option<u32>,

    /// TCP keepalive for accepted sockets: first probe after IDLE s of silence, then every
    /// INTVL s, drop after CNT unanswered probes.
    #[arg(long, value_name = "IDLE,INTVL,CNT", value_parser = parse_keepalive)]
    pub keepalive: Option<Keepalive>,

    /// SO_LINGER for accepted sockets: a close waits up to SECS for unsent data (0 = reset the
    /// connection on close instead of a FIN).
    #[arg(long, value_name = "SECS")]
    pub linger: Option<u32>,

    /// On an IPv6 address, accept IPv6 clients only (no IPv4-mapped clients on `[::]`).
    #[arg(long)]
    pub ipv6_only: bool,

    /// Close connections that sent and received nothing for SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout: Option<Duration>,

    /// After the protocol closes a connection (HTTP `Connection: close`, 400, ...), keep
    /// reading and dropping its input for up to SECS while the reply drains and the peer
    /// closes, so the reply is not lost to a reset.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub lingering_close: Duration,

    /// Listen backlog [default: net.core.somaxconn].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: Option<i32>,
}

impl ServeArgs {
    /// The library's server builder, set up as the flags say. Flags left out keep the builder's
    /// defaults, which are the defaults above.
    pub fn to_builder(&self) -> ServerBuilder {
        let mut b = Server::builder();
        b.addrs(self.addrs.iter().copied())
            .backend(self.backend)
            .udp(self.udp)
            .max_pending(self.max_pending)
            .sq_entries(self.sq_entries)
            .cq_entries(self.cq_entries)
            .ring_mode(self.ring_mode)
            .multishot_recv(!self.no_multishot_recv)
            .direct_descriptors(!self.no_direct_descriptors)
            .register_ring_fd(self.register_ring_fd)
            .recv_bundle(!self.no_recv_bundle)
            .recv_cap(!self.no_recv_cap)
            .buf_incremental(self.buf_incremental && !self.no_buf_incremental)
            .stream_bufs(self.stream_bufs)
            .batch_max(self.batch_max)
            .batch_wait_us(self.batch_wait_us)
            .drain_timeout(self.drain_timeout)
            .lingering_close(self.lingering_close)
            .stats_format(match self.stats_format {
                StatsFormatArg::Text => StatsFormat::Text,
                StatsFormatArg::Json => StatsFormat::Json,
            })
            .socket_options(self.socket_options())
            .pin(self.pin)
            .reuseport(self.reuseport);
        if let Some(n) = self.max_conns {
            b.max_conns(n);
        }
        if let Some(n) = self.buf_budget {
            b.buf_budget(n);
        }
        if let Some(idle_ms) = self.sqpoll {
            b.sqpoll(SqPoll {
                idle_ms,
                cpu: self.sqpoll_cpu,
            });
        }
        if let Some(n) = self.zc_threshold {
            b.zc_threshold(n);
        }
        if let Some(n) = self.buf_count {
            b.buf_count(n);
        }
        if let Some(n) = self.buf_size {
            b.buf_size(n);
        }
        if let Some(d) = self.stats_interval {
            b.stats_interval(d);
        }
        if let Some(d) = self.idle_timeout {
            b.idle_timeout(d);
        }
        if let Some(n) = self.backlog {
            b.backlog(n);
        }
        if let Some(n) = self.threads {
            b.threads(n);
        }
        b
    }

    fn socket_options(&self) -> SocketOptions {
        let mut o = SocketOptions::default();
        o.nodelay = self.nodelay;
        o.rcvbuf = self.rcvbuf;
        o.sndbuf = self.sndbuf;
        o.keepalive = self.keepalive;
        o.linger = self.linger;
        o.ipv6_only = self.ipv6_only;
        o
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
