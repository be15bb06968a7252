//! `ringecho bench` flags. The doc comments are the `--help` text.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::backend::uring::RingMode;
use crate::server::DEFAULT_ADDR;

/// Largest `--size`: messages are checked in place, but a connection's echo must fit in memory.
pub const MAX_SIZE: u64 = 64 << 20;
/// Largest `--depth` (each in-flight message keeps an 8-byte start time).
pub const MAX_DEPTH: u32 = 4096;

const MODES_SHORT: &str = "Closed loop by default (latency from each send); --rate for open loop (latency from each \
message's intended send time, so stalls are counted in full). --help says more.";

const MODES: &str = "\
What is measured:
  closed loop (default)  Each connection keeps --depth messages in flight and sends the next one
                         as soon as one comes back. Latency runs from the moment a message was
                         queued to send until its last byte came back: the service time at
                         whatever throughput the server sustains. A server that stalls also
                         stalls the client, so a stall shows up as a few slow messages, not as
                         the many that could not be sent (coordinated omission).
  open loop (--rate R)   Messages are due on a fixed schedule of R per second across all
                         connections, whatever the server does; a connection with --depth
                         messages outstanding sends late. Latency runs from each message's
                         *intended* send time, so every message that should have gone out
                         during a stall is charged for it. Use this for latency claims.

Every echoed byte is checked against what the connection sent (--no-verify skips the byte
comparison, not the byte counts or frame headers).

--framed   Each message is a frame of ringecho's framed protocol (serve --protocol framed): a
           4-byte big-endian body length, then --size body bytes. The echo must reproduce every
           frame exactly, headers included; a server that merges, splits or corrupts frames fails
           the run with a line naming the connection, frame, offset, expected and got byte.

Exit status: 0 clean run; 1 wrong bytes, or any connection
refused, reset, closed early or timed out; 2 bad flags or io_uring unavailable.";

/// Which client transport to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientBackend {
    /// io_uring: one ring per client thread, multishot receives into a buffer ring.
    Uring,
    /// epoll, nonblocking sockets, a send and a receive syscall per batch.
    Epoll,
    /// One blocking thread per connection (a baseline for CPU per message).
    #[value(hide = true)]
    Threads,
}

impl std::fmt::Display for ClientBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientBackend::Uring => "uring",
            ClientBackend::Epoll => "epoll",
            ClientBackend::Threads => "threads",
        })
    }
}

/// Drive a TCP echo server (ringecho or any other) and report throughput, latency and CPU.
#[derive(Debug, Clone, Args)]
#[command(after_help = MODES_SHORT, after_long_help = MODES)]
pub struct BenchArgs {
    /// Echo server to drive (HOST:PORT).
    #[arg(long, default_value = DEFAULT_ADDR, value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Connections to open (paced by --connect-rate so a storm cannot overflow the backlog).
    #[arg(long, default_value_t = 50, value_parser = parse_conns)]
    pub conns: u64,

    /// Message size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 128, value_parser = parse_size)]
    pub size: u64,

    /// Messages in flight per connection (pipelined).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = parse_depth)]
    pub depth: u32,

    /// Length of the measured window.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_positive_secs)]
    pub duration: Duration,

    /// Traffic before the measured window starts (not recorded).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,

    /// Client threads, connections spread evenly [default: CPUs this process may use].
    #[arg(long, value_name = "T", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Open loop: this many messages per second in total, on a fixed schedule; latency is
    /// measured from each message's intended send time. Without it: closed loop.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Client I/O: io_uring, or epoll to rule the io_uring client out.
    #[arg(long, value_enum, default_value_t = ClientBackend::Uring)]
    pub backend: ClientBackend,

    /// Do not compare echoed bytes with what was sent (byte counts and frame headers are still
    /// checked).
    #[arg(long)]
    pub no_verify: bool,

    /// Speak the framed protocol (`serve --protocol framed`): each message is a 4-byte
    /// big-endian length then --size body bytes, and the echo must keep every frame boundary.
    #[arg(long)]
    pub framed: bool,

    /// Print one JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,

    /// Write the latency distribution in HdrHistogram's percentile text format (values in
    /// milliseconds), for HdrHistogram's plotting tools.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

    /// Write per-second latency histograms in HdrHistogram's interval-log format (values in
    /// nanoseconds); logs from several client machines merge into one distribution.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,

    /// A connect, or an echo with bytes outstanding, that makes no progress this long fails
    /// the connection (counted as a timeout).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive_secs)]
    pub timeout: Duration,

    /// New connections per second while connecting.
    #[arg(long, value_name = "CONNS_PER_SEC", default_value_t = 5000.0, value_parser = parse_rate)]
    pub connect_rate: f64,

    /// Also report this process's CPU time per message (the server's, for comparison).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Task-running mode of the client rings (io_uring backend).
    #[arg(long, value_enum, default_value_t = RingMode::Auto)]
    pub ring_mode: RingMode,
}

impl BenchArgs {
    /// Client threads to run: `--threads`, or the CPUs available, never more than connections;
    /// the blocking baseline always runs one per connection.
    pub fn worker_count(&self) -> usize {
        if self.backend == ClientBackend::Threads {
            return self.conns as usize;
        }
        let t = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        t.clamp(1, self.conns.max(1) as usize)
    }
}

/// Parses `HOST:PORT` (an IP literal, `[v6]:port`, or a name that resolves).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("'{s}' resolves to no address")),
        Err(_) => Err(format!(
            "'{s}' is not HOST:PORT (for example 127.0.0.1:7878 or [::1]:7878), or does not resolve"
        )),
    }
}

fn parse_bounded(s: &str, max: u64, what: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > max => Err(format!("{n} is more {what} than supported (at most {max})")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{s}' is not a positive whole number")),
    }
}

fn parse_conns(s: &str) -> Result<u64, String> {
    parse_bounded(s, 1_000_000, "connections")
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_bounded(s, MAX_SIZE, "bytes")
}

fn parse_depth(s: &str) -> Result<u32, String> {
    parse_bounded(s, u64::from(MAX_DEPTH), "messages in flight").map(|n| n as u32)
}

fn parse_threads(s: &str) -> Result<usize, String> {
    parse_bounded(s, 1024, "threads").map(|n| n as usize)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive rate")),
    }
}

/// Parses seconds, fractions allowed (`0.5`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e7).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("'{s}' is not a number of seconds")),
    }
}

fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    match parse_secs(s)? {
        d if d.is_zero() => Err("must be more than 0 seconds".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut v = vec!["bench"];
        v.extend_from_slice(args);
        T::try_parse_from(v).map(|t| t.b)
    }

    #[test]
    fn defaults_are_a_closed_loop_verified_run() {
        let b = parse(&[]).unwrap();
        assert_eq!((b.conns, b.size, b.depth), (50, 128, 1));
        assert!(b.rate.is_none() && !b.no_verify);
        assert_eq!(b.backend, ClientBackend::Uring);
    }

    #[test]
    fn zero_and_nonsense_are_rejected() {
        for bad in [
            &["--conns", "0"][..],
            &["--size", "0"],
            &["--depth", "0"],
            &["--duration", "0"],
            &["--rate", "-5"],
            &["--rate", "nan"],
            &["--addr", "no-port-here"],
            &["--size", "99999999999"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn threads_never_exceed_connections_and_baseline_uses_one_per_connection() {
        let b = parse(&["--conns", "3", "--threads", "8"]).unwrap();
        assert_eq!(b.worker_count(), 3);
        let b = parse(&["--conns", "7", "--backend", "threads"]).unwrap();
        assert_eq!(b.worker_count(), 7);
    }
}
