//! `ringecho serve --metrics ADDR`: the server's counters in Prometheus' text exposition
//! format at `GET /metrics`, on a listener of its own served by one thread.
//!
//! Every field of the `stats:` line is a metric: the counters as `ringecho_<field>_total`
//! (counters), `active` and `bufs_held` as gauges of their own name, `rss_kib` as
//! `ringecho_resident_memory_bytes` and `t` as `ringecho_uptime_seconds`; each is summed over
//! the shards and labelled with the backend. A scrape reads the atomics the shards already
//! publish for the stats line ([`StatsHandle::snapshot`]), so it never waits for, or slows, the
//! echo path.
//!
//! The listener speaks just enough HTTP/1.1 for a scraper: one request per connection, a
//! request head of at most [`MAX_HEAD`] bytes that must arrive within [`REQUEST_TIMEOUT`],
//! `GET` (or `HEAD`) of `/metrics` answered with 200, any other path 404, any other method 405,
//! a head that is not HTTP 400, one too large 431; every answer closes the connection. A client
//! that sends nothing, or reads nothing, is dropped after the timeout, so a slow or hostile
//! scraper delays the next scrape by at most that long and never touches the shards.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use ringecho::backend::Backend;
use ringecho::server::StatsHandle;
use ringecho::stats::Counters;
use ringecho::{Error, sys};

/// Longest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head, and to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Every metric name starts with this.
const PREFIX: &str = "ringecho_";

/// A bound metrics listener, not yet answering.
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr) -> Result<MetricsListener, Error> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::io(format!("--metrics: cannot listen on {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("--metrics: getsockname", e))?;
        Ok(MetricsListener { listener, addr })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers scrapes on a thread of its own for the rest of the process's life.
    pub fn spawn(self, stats: StatsHandle, started: Instant) -> Result<(), Error> {
        thread::Builder::new()
            .name("ringecho-metrics".into())
            .spawn(move || {
                loop {
                    match self.listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = answer(&mut conn, &stats, started);
                        }
                        // A client that reset before the accept, or a transient shortage (out
                        // of descriptors): back off briefly rather than spin, then go on.
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map(drop)
            .map_err(|e| Error::io("cannot start the metrics thread", e))
    }
}

/// Reads one request from `conn` and answers it; the connection closes when `conn` drops.
fn answer(conn: &mut TcpStream, stats: &StatsHandle, started: Instant) -> io::Result<()> {
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let (status, head_only) = match read_head(conn) {
        Ok(head) => route(&head),
        Err(HeadError::TooLarge) => (431, false),
        Err(HeadError::Malformed) => (400, false),
        // Timed out or gone: nobody to answer.
        Err(HeadError::Io(e)) => return Err(e),
    };
    let (reason, body, extra) = match status {
        200 => ("OK", exposition(stats, started), ""),
        404 => ("Not Found", "only /metrics is here\n".into(), ""),
        405 => (
            "Method Not Allowed",
            "GET /metrics\n".into(),
            "Allow: GET, HEAD\r\n",
        ),
        431 => (
            "Request Header Fields Too Large",
            "request head too large\n".into(),
            "",
        ),
        _ => ("Bad Request", "not an HTTP/1.x request\n".into(), ""),
    };
    let content_type = if status == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(&body);
    }
    conn.write_all(out.as_bytes())?;
    // Half-close and drain briefly, so that request bytes still unread (a pipelining client)
    // do not turn the close into a reset that could destroy the answer in flight.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < 8 * MAX_HEAD {
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

enum HeadError {
    TooLarge,
    Malformed,
    Io(io::Error),
}

/// Reads up to the blank line that ends a request head, within [`REQUEST_TIMEOUT`] in all (not
/// per read: a client sending a byte a second must not hold the thread forever).
fn read_head(conn: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Io(io::ErrorKind::TimedOut.into()));
        }
        conn.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let n = match conn.read(&mut buf) {
            Ok(0) => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if !head.starts_with(b"\r\n") && head.len() >= 8 && !looks_like_request(&head) {
            return Err(HeadError::Malformed);
        }
    }
}

/// Where the head ends (`\r\n\r\n`, or `\n\n` from a sloppy client), if it has.
fn find_head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = b.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether the bytes so far can start a request line: a token of capital letters and a space.
fn looks_like_request(b: &[u8]) -> bool {
    let method_len = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    (1..=16).contains(&method_len) && b.get(method_len) == Some(&b' ')
}

/// The status for a request head, and whether to send the head of the answer only (`HEAD`).
fn route(head: &[u8]) -> (u16, bool) {
    let Ok(text) = std::str::from_utf8(head) else {
        return (400, false);
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (400, false);
    };
    if !version.starts_with("HTTP/1.") || !looks_like_request(line.as_bytes()) {
        return (400, false);
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (405, false);
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path == "/metrics" {
        (200, head_only)
    } else {
        (404, head_only)
    }
}

/// The exposition: every stats-line field, summed over shards, labelled with the backend.
pub fn exposition(stats: &StatsHandle, started: Instant) -> String {
    let backend = match stats.backend() {
        Some(Backend::Epoll) => "epoll",
        Some(_) => "uring",
        None => "unknown",
    };
    render(
        &stats.snapshot(),
        backend,
        started.elapsed().as_secs_f64(),
        sys::rss_bytes(),
    )
}

/// Renders `c` and the process figures in the text format (version 0.0.4).
pub fn render(c: &Counters, backend: &str, uptime_secs: f64, rss_bytes: u64) -> String {
    let labels = format!("{{backend=\"{}\"}}", escape_label(backend));
    let mut out = String::with_capacity(8 * 1024);
    let mut family = |name: &str, kind: &str, help: &str, value: &str| {
        let _ = writeln!(out, "# HELP {PREFIX}{name} {}", escape_help(help.trim()));
        let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
        let _ = writeln!(out, "{PREFIX}{name}{labels} {value}");
    };
    for ((name, help), value) in Counters::NAMES.iter().zip(Counters::HELP).zip(c.values()) {
        if Counters::GAUGES.contains(name) {
            family(name, "gauge", help, &value.to_string());
        } else {
            family(
                &format!("{name}_total"),
                "counter",
                help,
                &value.to_string(),
            );
        }
    }
    family(
        "resident_memory_bytes",
        "gauge",
        "Resident memory of the server process (the stats line's rss_kib, in bytes).",
        &rss_bytes.to_string(),
    );
    family(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started (the stats line's t).",
        &format!("{uptime_secs:.3}"),
    );
    out
}

/// Escapes a `# HELP` text: backslash and line feed.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(s: &str) -> String {
    escape_help(s).replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_process_figures_are_named_and_typed() {
        let mut c = Counters::default();
        c.set("accepted", 7);
        c.set("active", 3);
        c.set("bytes_out", 1234);
        let text = render(&c, "uring", 1.5, 4096);
        assert!(text.contains("# TYPE ringecho_accepted_total counter\n"));
        assert!(text.contains("ringecho_accepted_total{backend=\"uring\"} 7\n"));
        assert!(
            text.contains("# TYPE ringecho_active gauge\nringecho_active{backend=\"uring\"} 3\n")
        );
        assert!(text.contains("ringecho_bytes_out_total{backend=\"uring\"} 1234\n"));
        assert!(text.contains("# HELP ringecho_accepted_total Connections accepted.\n"));
        assert!(text.contains("ringecho_resident_memory_bytes{backend=\"uring\"} 4096\n"));
        assert!(text.contains("ringecho_uptime_seconds{backend=\"uring\"} 1.500\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, Counters::NAMES.len() + 2);
    }

    #[test]
    fn escapes_help_and_labels() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(escape_label("x\"y"), "x\\\"y");
    }

    #[test]
    fn routes_only_get_metrics() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x"), (200, false));
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0"), (200, false));
        assert_eq!(route(b"HEAD /metrics HTTP/1.1"), (200, true));
        assert_eq!(route(b"GET / HTTP/1.1"), (404, false));
        assert_eq!(route(b"POST /metrics HTTP/1.1"), (405, false));
        assert_eq!(route(b"GET /metrics"), (400, false));
        assert_eq!(route(b"get /metrics HTTP/1.1"), (400, false));
        assert_eq!(route(b"\xff\xfe"), (400, false));
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
        assert!(looks_like_request(b"GET /x"));
        assert!(!looks_like_request(b"\x16\x03\x01 TLS"));
    }
}
