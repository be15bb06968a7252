//! The soak: `make soak DURATION=SECS [SOAK_BACKENDS="uring epoll"]`.
//!
//! Runs a server (in a private network namespace where the test may make one, so the kernel's
//! socket counts are this run's own) under a modest mixed load for `SOAK_DURATION` seconds:
//!
//! - **long-lived** connections (32 at a time), each living 30 s to 15 min (log-uniform) and
//!   sending bursts of 1 B to 1 MiB (log-uniform) every 2 s on average, pipelined;
//! - **short-lived** connections (20 a second on average): connect, send 1 B to 256 KiB,
//!   half-close, read everything back, close; one in twenty resets mid-stream instead.
//!
//! Every echoed byte is checked against what its connection sent; a connection that ends
//! before every byte came back fails the run (bytes lost must be 0). Once a second it samples
//! the server's RSS, the namespace's `/proc/net/sockstat`, the server's own sockets, and its
//! `active` and `bufs_held` gauges into `SOAK_DIR/soak-BACKEND.csv`, then judges whether each
//! series is flat after warm-up, prints a per-window table and a verdict, and writes both to
//! `SOAK_DIR/soak-BACKEND.txt`. The test fails if any series is not flat.
//!
//! It is `#[ignore]`d: `cargo test` does not run it.

mod common;

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Pattern, Rng, Server, in_fresh_netns, set_linger_zero, with_backend};

/// Load shape. Defaults keep the client and the server at a fraction of one CPU.
#[derive(Clone, Copy, Debug)]
struct Load {
    long_conns: usize,
    burst_every: Duration,
    burst_max: u64,
    long_life: (Duration, Duration),
    short_per_sec: f64,
    short_max: u64,
    abrupt_one_in: u64,
}

const LOAD: Load = Load {
    long_conns: 32,
    burst_every: Duration::from_secs(2),
    burst_max: 1 << 20,
    long_life: (Duration::from_secs(30), Duration::from_secs(900)),
    short_per_sec: 20.0,
    short_max: 256 << 10,
    abrupt_one_in: 20,
};

/// Most bytes a connection has sent and not yet had back.
const WINDOW: u64 = 256 << 10;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Log-uniform in `1..=max`: as many tiny sizes as huge ones.
fn log_uniform(rng: &mut Rng, max: u64) -> u64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((max as f64).ln() * u).exp().clamp(1.0, max as f64) as u64
}

/// Exponentially distributed delay with the given mean (Poisson arrivals).
fn exp_delay(rng: &mut Rng, mean: Duration) -> Duration {
    let u = ((rng.next_u64() >> 11) as f64 + 1.0) / ((1u64 << 53) as f64 + 1.0);
    mean.mul_f64(-u.ln()).min(mean * 20)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Long,
    Short,
    /// Resets the connection after sending this many bytes.
    Abrupt(u64),
}

/// One client connection of the soak.
struct Peer {
    id: u64,
    stream: TcpStream,
    pat: Pattern,
    kind: Kind,
    /// Bytes to send in all (grows with each burst of a long-lived peer).
    to_send: u64,
    sent: u64,
    received: u64,
    next_burst: Instant,
    retire_at: Instant,
    write_closed: bool,
    eof: bool,
}

impl Peer {
    fn wants_write(&self) -> bool {
        self.sent < self.to_send && self.sent - self.received < WINDOW
    }

    fn retired(&self, now: Instant) -> bool {
        self.kind != Kind::Long || now >= self.retire_at
    }

    fn on_readable(&mut self, buf: &mut [u8]) -> Result<(), String> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    if self.received < self.to_send {
                        return Err(format!(
                            "peer {} ({:?}): EOF after {} of {} bytes echoed: bytes lost",
                            self.id, self.kind, self.received, self.to_send
                        ));
                    }
                    return Ok(());
                }
                Ok(n) => {
                    if self.received + n as u64 > self.sent {
                        return Err(format!(
                            "peer {}: {} bytes echoed, {} sent",
                            self.id,
                            self.received + n as u64,
                            self.sent
                        ));
                    }
                    self.pat
                        .check(self.received, &buf[..n])
                        .map_err(|e| format!("peer {} ({:?}): {e}", self.id, self.kind))?;
                    self.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "peer {} ({:?}): read after {} of {} bytes: {e}",
                        self.id, self.kind, self.received, self.sent
                    ));
                }
            }
        }
    }

    fn on_writable(&mut self, buf: &mut [u8], now: Instant) -> Result<(), String> {
        while self.wants_write() {
            let n = (buf.len() as u64)
                .min(self.to_send - self.sent)
                .min(WINDOW - (self.sent - self.received)) as usize;
            self.pat.fill(self.sent, &mut buf[..n]);
            match self.stream.write(&buf[..n]) {
                Ok(k) => self.sent += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "peer {} ({:?}): write after {} bytes: {e}",
                        self.id, self.kind, self.sent
                    ));
                }
            }
        }
        if self.sent == self.to_send && self.retired(now) && !self.write_closed {
            self.stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("peer {}: shutdown: {e}", self.id))?;
            self.write_closed = true;
        }
        Ok(())
    }
}

/// One row of the CSV.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    t: f64,
    rss_kib: u64,
    sockets_used: u64,
    tcp_inuse: u64,
    tcp_tw: u64,
    tcp_mem_pages: u64,
    server_sockets: u64,
    active: u64,
    bufs_held: u64,
    accepted: u64,
    bytes_out: u64,
    client_peers: u64,
    verified_bytes: u64,
}

const CSV_HEADER: &str = "t_s,rss_kib,sockets_used,tcp_inuse,tcp_tw,tcp_mem_pages,\
server_sockets,active,bufs_held,accepted,bytes_out,client_peers,verified_bytes";

impl Sample {
    fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.t,
            self.rss_kib,
            self.sockets_used,
            self.tcp_inuse,
            self.tcp_tw,
            self.tcp_mem_pages,
            self.server_sockets,
            self.active,
            self.bufs_held,
            self.accepted,
            self.bytes_out,
            self.client_peers,
            self.verified_bytes
        )
    }
}

/// A series judged for flatness: name, how to read it, absolute and relative tolerance.
type Judged = (&'static str, fn(&Sample) -> u64, f64, f64);

const JUDGED: &[Judged] = &[
    ("rss_kib", |s| s.rss_kib, 4096.0, 0.10),
    ("tcp_inuse", |s| s.tcp_inuse, 16.0, 0.35),
    ("server_sockets", |s| s.server_sockets, 16.0, 0.35),
    ("active", |s| s.active, 16.0, 0.35),
    ("bufs_held", |s| s.bufs_held, 32.0, 0.50),
];

fn median(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[v.len() / 2] as f64
}

/// Least-squares slope of `y` over `t`, per hour.
fn slope_per_hour(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mt, my) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, y)| (a + t / n, b + y / n));
    let (num, den) = pts.iter().fold((0.0, 0.0), |(a, b), (t, y)| {
        (a + (t - mt) * (y - my), b + (t - mt) * (t - mt))
    });
    if den == 0.0 { 0.0 } else { num / den * 3600.0 }
}

/// Judges every series: flat if the median of the last third after warm-up is within
/// tolerance of the first third's, and the fitted drift over the judged span is too.
/// Returns the report and whether everything was flat.
fn judge(samples: &[Sample], warmup: f64, backend: &str) -> (String, bool) {
    let post: Vec<&Sample> = samples.iter().filter(|s| s.t >= warmup).collect();
    let mut out = String::new();
    let mut all_flat = true;
    if post.len() < 6 {
        let _ = writeln!(
            out,
            "soak {backend}: only {} samples after warm-up: too short to judge",
            post.len()
        );
        return (out, false);
    }
    let span = post.last().unwrap().t - post[0].t;
    // The table: the median of each series per window.
    let windows = 12.min(post.len() / 2).max(1);
    let _ = writeln!(
        out,
        "soak {backend}: {} samples, warm-up {warmup:.0} s, judged span {span:.0} s, medians per \
         window:",
        samples.len()
    );
    let mut header = format!("{:>14}", "window (s)");
    for (name, ..) in JUDGED {
        let _ = write!(header, " {name:>14}");
    }
    let _ = write!(header, " {:>14}", "tcp_mem_pages");
    let _ = writeln!(out, "{header}");
    for w in 0..windows {
        let part = &post[w * post.len() / windows..(w + 1) * post.len() / windows];
        let mut row = format!(
            "{:>14}",
            format!("{:.0}-{:.0}", part[0].t, part.last().unwrap().t)
        );
        for (_, get, ..) in JUDGED {
            let _ = write!(
                row,
                " {:>14}",
                median(part.iter().map(|s| get(s)).collect())
            );
        }
        let _ = write!(
            row,
            " {:>14}",
            median(part.iter().map(|s| s.tcp_mem_pages).collect())
        );
        let _ = writeln!(out, "{row}");
    }
    let third = post.len() / 3;
    for (name, get, abs_tol, rel_tol) in JUDGED {
        let first = median(post[..third].iter().map(|s| get(s)).collect());
        let last = median(post[post.len() - third..].iter().map(|s| get(s)).collect());
        let max = post.iter().map(|s| get(s)).max().unwrap_or(0);
        let pts: Vec<(f64, f64)> = post.iter().map(|s| (s.t, get(s) as f64)).collect();
        let drift = slope_per_hour(&pts) * span / 3600.0;
        let tol = abs_tol.max(rel_tol * first);
        let flat = (last - first).abs() <= tol && drift.abs() <= tol;
        all_flat &= flat;
        let _ = writeln!(
            out,
            "  {name:>14}: first third median {first:.0}, last third {last:.0}, max {max}, \
             fitted drift over the span {drift:+.1} (tolerance {tol:.0}): {}",
            if flat { "flat" } else { "NOT FLAT" }
        );
    }
    let _ = writeln!(
        out,
        "VERDICT {backend}: {}",
        if all_flat {
            "flat after warm-up"
        } else {
            "NOT flat after warm-up"
        }
    );
    (out, all_flat)
}

fn sample(server: &Server, t0: Instant, peers: usize, verified: u64) -> Sample {
    let c = server.latest_stats().unwrap_or_default();
    let sock = server.sockstat();
    Sample {
        t: t0.elapsed().as_secs_f64(),
        rss_kib: server.rss_kib(),
        sockets_used: sock.sockets_used,
        tcp_inuse: sock.tcp_inuse,
        tcp_tw: sock.tcp_tw,
        tcp_mem_pages: sock.tcp_mem_pages,
        server_sockets: server.server_sockets().open() as u64,
        active: c.active,
        bufs_held: c.bufs_held,
        accepted: c.accepted,
        bytes_out: c.bytes_out,
        client_peers: peers as u64,
        verified_bytes: verified,
    }
}

/// What the client side of one soak did.
#[derive(Debug, Default)]
struct Tally {
    connections: u64,
    long: u64,
    short: u64,
    abrupt: u64,
    verified_bytes: u64,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nonblocking(true).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Drives the load for `dur`, sampling once a second; then lets every peer finish.
fn run_load(
    server: &Server,
    dur: Duration,
    load: Load,
    csv: &mut std::fs::File,
) -> (Vec<Sample>, Tally) {
    let t0 = Instant::now();
    let end = t0 + dur;
    let mut rng = Rng::new(0x50a6);
    let mut peers: Vec<Peer> = Vec::new();
    let mut tally = Tally::default();
    let mut samples = Vec::new();
    let mut next_sample = t0;
    let mut next_short = t0;
    let mut wbuf = vec![0u8; 64 << 10];
    let mut rbuf = vec![0u8; 64 << 10];
    let mut next_id = 0u64;
    let short_mean = Duration::from_secs_f64(1.0 / load.short_per_sec);
    loop {
        let now = Instant::now();
        let ending = now >= end;
        if now >= next_sample {
            let s = sample(server, t0, peers.len(), tally.verified_bytes);
            writeln!(csv, "{}", s.csv()).unwrap();
            samples.push(s);
            next_sample += Duration::from_secs(1);
        }
        if !ending {
            while peers.iter().filter(|p| p.kind == Kind::Long).count() < load.long_conns {
                let (lo, hi) = load.long_life;
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let life = lo.mul_f64((hi.as_secs_f64() / lo.as_secs_f64()).powf(u));
                next_id += 1;
                tally.connections += 1;
                tally.long += 1;
                peers.push(Peer {
                    id: next_id,
                    stream: connect(server.addr),
                    pat: Pattern::new(next_id),
                    kind: Kind::Long,
                    to_send: 0,
                    sent: 0,
                    received: 0,
                    next_burst: now + exp_delay(&mut rng, load.burst_every),
                    retire_at: now + life,
                    write_closed: false,
                    eof: false,
                });
            }
            while next_short <= now {
                next_short += exp_delay(&mut rng, short_mean);
                next_id += 1;
                tally.connections += 1;
                let size = log_uniform(&mut rng, load.short_max);
                let kind = if rng.range(1, load.abrupt_one_in) == 1 {
                    tally.abrupt += 1;
                    Kind::Abrupt(rng.range(0, size))
                } else {
                    tally.short += 1;
                    Kind::Short
                };
                peers.push(Peer {
                    id: next_id,
                    stream: connect(server.addr),
                    pat: Pattern::new(next_id),
                    kind,
                    to_send: size,
                    sent: 0,
                    received: 0,
                    next_burst: now,
                    retire_at: now,
                    write_closed: false,
                    eof: false,
                });
            }
        } else if now > end + Duration::from_secs(60) {
            let left: Vec<String> = peers
                .iter()
                .take(5)
                .map(|p| {
                    format!(
                        "{} {:?} {}/{}/{}",
                        p.id, p.kind, p.received, p.sent, p.to_send
                    )
                })
                .collect();
            panic!(
                "{} peers unfinished 60 s after the end: {left:?}",
                peers.len()
            );
        } else if peers.is_empty() {
            break;
        }
        for p in peers.iter_mut().filter(|p| p.kind == Kind::Long) {
            if ending {
                p.retire_at = p.retire_at.min(now);
            }
            if !p.retired(now) && now >= p.next_burst {
                p.to_send += log_uniform(&mut rng, load.burst_max);
                p.next_burst = now + exp_delay(&mut rng, load.burst_every);
            }
        }
        // Abrupt peers reset once they have sent their share.
        peers.retain(|p| match p.kind {
            Kind::Abrupt(at) if p.sent >= at => {
                set_linger_zero(&p.stream);
                false
            }
            _ => true,
        });
        let mut pfds: Vec<libc::pollfd> = peers
            .iter()
            .map(|p| libc::pollfd {
                fd: p.stream.as_raw_fd(),
                events: libc::POLLIN | if p.wants_write() { libc::POLLOUT } else { 0 },
                revents: 0,
            })
            .collect();
        let wait = next_sample
            .min(next_short)
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                wait.as_millis() as i32,
            )
        };
        assert!(n >= 0 || io::Error::last_os_error().kind() == io::ErrorKind::Interrupted);
        let now = Instant::now();
        for (p, pfd) in peers.iter_mut().zip(&pfds) {
            let before = p.received;
            if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                p.on_readable(&mut rbuf).unwrap_or_else(|e| panic!("{e}"));
            }
            if p.wants_write() || (p.sent == p.to_send && p.retired(now) && !p.write_closed) {
                p.on_writable(&mut wbuf, now)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            tally.verified_bytes += p.received - before;
        }
        peers.retain(|p| !(p.eof && p.received == p.to_send));
    }
    (samples, tally)
}

fn soak_one(b: common::Backend, dur: Duration, dir: &str) -> bool {
    in_fresh_netns(|isolated| {
        let mut server = b.start(&["--stats-interval", "1", "--drain-timeout", "2"]);
        server.wait_stats("the first stats line", Duration::from_secs(5), |_| true);
        std::fs::create_dir_all(dir).unwrap();
        let csv_path = format!("{dir}/soak-{}.csv", b.name);
        let mut csv = std::fs::File::create(&csv_path).unwrap();
        writeln!(csv, "{CSV_HEADER}").unwrap();
        let rss0 = server.rss_kib();
        let (samples, tally) = run_load(&server, dur, LOAD, &mut csv);
        let after = server.wait_stats("every connection closed", Duration::from_secs(30), |c| {
            c.accepted >= tally.connections && c.active == 0
        });
        let rss1 = server.rss_kib();
        let fin = server.stop(libc::SIGTERM).assert_clean();
        let warmup = (dur.as_secs_f64() / 6.0).clamp(5.0, 300.0);
        let (mut report, flat) = judge(&samples, warmup, b.name);
        let _ = writeln!(
            report,
            "soak {}: {:.0} s, isolated namespace: {isolated}; {} connections ({} long-lived, {} \
             short-lived, {} reset mid-stream), {} bytes verified, 0 lost; server RSS {rss0} KiB \
             at start, {rss1} KiB at the end; after the load: active={} bufs_held={}; final: \
             accepted={} closed={} bytes_in={} bytes_out={} conn_errors={} stale_cqes={} \
             cq_overflows={} enobufs={}; CSV: {csv_path}",
            b.name,
            dur.as_secs_f64(),
            tally.connections,
            tally.long,
            tally.short,
            tally.abrupt,
            tally.verified_bytes,
            after.active,
            after.bufs_held,
            fin.accepted,
            fin.closed,
            fin.bytes_in,
            fin.bytes_out,
            fin.conn_errors,
            fin.stale_cqes,
            fin.cq_overflows,
            fin.enobufs,
        );
        eprint!("{report}");
        std::fs::write(format!("{dir}/soak-{}.txt", b.name), &report).unwrap();
        assert_eq!(
            fin.accepted, tally.connections,
            "server saw every connection"
        );
        assert_eq!((fin.active, fin.bufs_held, fin.stale_cqes), (0, 0, 0));
        flat
    })
}

/// The soak itself (see the module docs). `SOAK_DURATION` seconds (default 60) per backend
/// in `SOAK_BACKENDS` (default `uring epoll`), results in `SOAK_DIR` (default `target/soak`).
#[test]
#[ignore = "long: run with `make soak DURATION=SECS`"]
fn soak() {
    let dur = Duration::from_secs(env_or("SOAK_DURATION", 60u64));
    let dir: String = env_or("SOAK_DIR", "target/soak".to_string());
    let backends: String = env_or("SOAK_BACKENDS", "uring epoll".to_string());
    let mut not_flat = Vec::new();
    for name in backends.split([' ', ',']).filter(|s| !s.is_empty()) {
        with_backend(name, |b| {
            if !soak_one(b, dur, &dir) {
                not_flat.push(name.to_string());
            }
        });
    }
    assert!(not_flat.is_empty(), "not flat after warm-up: {not_flat:?}");
}

#[test]
fn flatness_judge_accepts_noise_and_rejects_a_leak() {
    let mk = |i: u64, rss: u64| Sample {
        t: i as f64,
        rss_kib: rss,
        tcp_inuse: 70 + i % 7,
        server_sockets: 35 + i % 5,
        active: 35 + i % 5,
        bufs_held: i % 3,
        ..Sample::default()
    };
    let noisy: Vec<Sample> = (0..600).map(|i| mk(i, 30_000 + (i * 7919) % 900)).collect();
    assert!(judge(&noisy, 60.0, "test").1);
    // 10 KiB a second: 5.4 MiB over the judged span.
    let leak: Vec<Sample> = (0..600).map(|i| mk(i, 30_000 + i * 10)).collect();
    let (report, flat) = judge(&leak, 60.0, "test");
    assert!(!flat, "{report}");
    assert!(report.contains("rss_kib") && report.contains("NOT FLAT"));
}
