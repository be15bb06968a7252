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
/// Bytes of each `--udp` datagram taken by its header (magic, slot, socket, sequence number):
/// the smallest `--size` with `--udp`.
pub const UDP_HEADER: u64 = 16;
/// Largest UDP payload over IPv4: 65535 less the 20-byte IP and 8-byte UDP headers.
pub const UDP_MAX_V4: u64 = 65_507;
/// Largest UDP payload over IPv6 without jumbograms: 65535 less the 8-byte UDP header.
pub const UDP_MAX_V6: u64 = 65_527;

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
comparison, not the byte counts, frame headers or datagram headers).

--framed   Each message is a frame of ringecho's framed protocol (serve --protocol framed): a
           4-byte big-endian body length, then --size body bytes. The echo must reproduce every
           frame exactly, headers included; a server that merges, splits or corrupts frames fails
           the run with a line naming the connection, frame, offset, expected and got byte.
--udp      Each of --conns is a connected UDP socket and each message one datagram of --size
           bytes: a 16-byte header (socket, slot, sequence number), then pattern bytes. Echoes
           are matched by sequence number whatever their order; a datagram not echoed within
           --udp-loss-timeout of its send is counted lost and its slot reused, so loss is a
           figure in the report, never a hang. Latency percentiles cover echoed datagrams only.
           Duplicate, late (after being counted lost) and reordered echoes are counted.

Exit status: 0 clean run (UDP loss alone does not fail a run, unless nothing came back at all);
1 wrong bytes, or any connection refused, reset, closed early or timed out; 2 io_uring
unavailable (try --backend epoll); 64 bad flags.";

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

/// Drive an echo server (ringecho or any other; TCP, framed or UDP) and report throughput,
/// latency, loss and CPU.
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

    /// Do not compare echoed bytes with what was sent (byte counts, frame headers and datagram
    /// headers are still checked).
    #[arg(long)]
    pub no_verify: bool,

    /// Speak the framed protocol (`serve --protocol framed`): each message is a 4-byte
    /// big-endian length then --size body bytes, and the echo must keep every frame boundary.
    #[arg(long, conflicts_with = "udp")]
    pub framed: bool,

    /// UDP: each connection is a datagram socket, each message a datagram of --size bytes
    /// (16 or more: a sequence header comes first). Loss is counted, not waited for.
    #[arg(long)]
    pub udp: bool,

    /// UDP: a datagram not echoed this long after it was sent is counted lost and its slot is
    /// reused (at most --timeout).
    #[arg(long, value_name = "SECS", default_value = "0.25", value_parser = parse_positive_secs)]
    pub udp_loss_timeout: Duration,

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

    /// Connect at once, start traffic --warmup seconds before this wall-clock time (seconds
    /// since 1970, as `date +%s` prints; fractions allowed) and measure from it, so that load
    /// generators on several machines with synchronised clocks measure the same window (merge
    /// their --hlog files with `ringecho report`). Fails if connecting takes until then.
    #[arg(long, value_name = "UNIX_TIME", value_parser = parse_start_at)]
    pub start_at: Option<f64>,

    /// Write the latency percentile curve as an SVG chart (HdrHistogram's layout: x the
    /// percentile on a log scale, 50% to 99.99%; y µs), titled with the run's settings.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// A connect, or an echo with bytes outstanding, that makes no progress this long fails
    /// the connection (counted as a timeout). UDP: caps --udp-loss-timeout.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_positive_secs)]
    pub timeout: Duration,

    /// New connections per second while connecting (TCP; UDP sockets open at once).
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
    /// Checks what no single flag can: the line to exit with (status 64) if the flags do not go
    /// together.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(at) = self.start_at {
            check_start_at(at, unix_now())?;
        }
        if !self.udp {
            return Ok(());
        }
        if self.backend == ClientBackend::Threads {
            return Err(
                "--backend threads is a TCP baseline; use uring or epoll with --udp".into(),
            );
        }
        let (max, family) = if self.addr.is_ipv4() {
            (UDP_MAX_V4, "IPv4")
        } else {
            (UDP_MAX_V6, "IPv6")
        };
        if self.size > max {
            return Err(format!(
                "--size {} does not fit in one UDP datagram (at most {max} bytes over {family})",
                self.size
            ));
        }
        if self.size < UDP_HEADER {
            return Err(format!(
                "--size {} is too small for --udp: each datagram starts with a {UDP_HEADER}-byte \
                 header (socket, slot, sequence number)",
                self.size
            ));
        }
        Ok(())
    }

    /// Settings that work but that a ringecho server with default flags will not echo in full:
    /// one line each, to print before the run.
    pub fn notes(&self) -> Vec<String> {
        let mut v = Vec::new();
        let max_frame = u64::from(crate::protocol::DEFAULT_MAX_FRAME);
        if self.framed && self.size > max_frame {
            v.push(format!(
                "note: --size {} is more than a ringecho server's default --max-frame \
                 {max_frame} (it closes such connections); serve with --max-frame {} or more",
                self.size, self.size
            ));
        }
        v
    }

    /// How long a UDP datagram may go unanswered before it counts as lost.
    pub fn loss_timeout(&self) -> Duration {
        self.udp_loss_timeout.min(self.timeout)
    }

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

/// Seconds since 1970, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Longest wait `--start-at` may ask for: further looks like a mistake (milliseconds, a typo).
pub const START_AT_MAX_WAIT_SECS: f64 = 86_400.0;

fn parse_start_at(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a time in seconds since 1970 (for example $(( $(date +%s) + 30 )))"
        )),
    }
}

/// Whether `--start-at at` can be kept when it is `now`: not past, and at most a day away.
pub fn check_start_at(at: f64, now: f64) -> Result<(), String> {
    if at < now {
        return Err(format!(
            "--start-at {at} is {:.1} s in the past (it is {now:.1} now): pick a time far enough \
             ahead for every load generator to start and connect",
            now - at
        ));
    }
    if at - now > START_AT_MAX_WAIT_SECS {
        return Err(format!(
            "--start-at {at} is {:.0} s from now, more than a day: is it in seconds since 1970 \
             (date +%s), not milliseconds?",
            at - now
        ));
    }
    Ok(())
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
    fn udp_sizes_must_fit_a_datagram_and_its_header() {
        let ok = |a: &[&str]| parse(a).unwrap().validate();
        assert_eq!(ok(&["--udp", "--size", "16"]), Ok(()));
        assert_eq!(ok(&["--udp", "--size", "65507"]), Ok(()));
        let e = ok(&["--udp", "--size", "65508"]).unwrap_err();
        assert_eq!(
            e,
            "--size 65508 does not fit in one UDP datagram (at most 65507 bytes over IPv4)"
        );
        assert_eq!(
            ok(&["--udp", "--addr", "[::1]:7", "--size", "65527"]),
            Ok(())
        );
        assert!(
            ok(&["--udp", "--size", "15"])
                .unwrap_err()
                .contains("16-byte header")
        );
        assert!(ok(&["--udp", "--backend", "threads"]).is_err());
        assert_eq!(ok(&["--size", "100000"]), Ok(()), "TCP is not limited");
        assert!(parse(&["--udp", "--framed"]).is_err());
    }

    #[test]
    fn sizes_a_default_server_drops_are_noted() {
        let n = |a: &[&str]| parse(a).unwrap().notes();
        // A default ringecho UDP server echoes every legal datagram.
        assert!(n(&["--udp", "--size", "65507"]).is_empty());
        assert!(n(&["--framed", "--size", "1048576"]).is_empty());
        assert!(n(&["--framed", "--size", "1048577"])[0].contains("--max-frame"));
        let l = parse(&["--udp-loss-timeout", "9", "--timeout", "2"]).unwrap();
        assert_eq!(l.loss_timeout(), Duration::from_secs(2));
    }

    #[test]
    fn start_at_must_be_a_near_future_unix_time() {
        assert!(parse(&["--start-at", "soon"]).is_err());
        assert!(parse(&["--start-at", "-5"]).is_err());
        assert_eq!(
            parse(&["--start-at", "1700000000.5"]).unwrap().start_at,
            Some(1700000000.5)
        );
        assert_eq!(check_start_at(1000.0, 990.0), Ok(()));
        let past = check_start_at(1000.0, 1012.5).unwrap_err();
        assert!(past.contains("12.5 s in the past"), "{past}");
        let far = check_start_at(1.7e12, 1.7e9).unwrap_err();
        assert!(far.contains("milliseconds"), "{far}");
        let late = parse(&["--start-at", "1000"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(late.contains("in the past"), "{late}");
    }

    #[test]
    fn threads_never_exceed_connections_and_baseline_uses_one_per_connection() {
        let b = parse(&["--conns", "3", "--threads", "8"]).unwrap();
        assert_eq!(b.worker_count(), 3);
        let b = parse(&["--conns", "7", "--backend", "threads"]).unwrap();
        assert_eq!(b.worker_count(), 7);
    }
}
