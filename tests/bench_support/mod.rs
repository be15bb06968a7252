//! Helpers for the `ringecho bench` tests: a real ringecho server, deliberately broken echo
//! servers, running the bench binary, and small parsers for its outputs.
#![allow(dead_code)]

mod json;
#[path = "../common/server_process.rs"]
mod server_process;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use json::{Json, parse_flat_json};
use server_process::ServerProcess;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringecho");

/// Whether the io_uring client can run here; says why not (and the caller skips) otherwise.
pub fn uring_or_skip(test: &str) -> bool {
    match ringecho::loadgen::uring::probe(ringecho::backend::uring::RingMode::Auto) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{test}: skipped: io_uring unavailable here: {e}");
            false
        }
    }
}

/// Client backends to exercise: epoll always, io_uring when the kernel allows it.
pub fn backends(test: &str) -> Vec<&'static str> {
    let mut v = vec!["epoll"];
    if uring_or_skip(test) {
        v.insert(0, "uring");
    }
    v
}

/// A `ringecho` server process on a free port, killed on drop.
pub struct RingechoServer {
    process: ServerProcess,
    pub addr: SocketAddr,
}

impl RingechoServer {
    /// Starts one and waits for its `listening on ADDR` line.
    pub fn start() -> RingechoServer {
        RingechoServer::start_with(&[])
    }

    /// Starts one with extra flags (`--udp`, `--backend epoll`, ...) and waits for its
    /// `listening on ADDR` line.
    pub fn start_with(args: &[&str]) -> RingechoServer {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--addr", "127.0.0.1:0"]).args(args);
        let process = ServerProcess::spawn(cmd, 1)
            .unwrap_or_else(|e| panic!("ringecho serve {args:?} did not start: {e}"));
        let addr = process.addrs[0].parse().expect("listening on <addr>");
        RingechoServer { process, addr }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// What a fixture server does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Echo faithfully.
    Echo,
    /// Echo, but flip every bit of the byte at this stream offset.
    FlipAt(u64),
    /// Echo this many bytes, then half-close (FIN) and swallow the rest.
    CloseAfter(u64),
    /// Echo this many bytes, then reset the connection (RST: `SO_LINGER` 0, close).
    ResetAfter(u64),
    /// Accept and read, never answer.
    Silent,
    /// Echo, but every connection stalls during one window: from `after` past the first byte
    /// any connection received, for `stall`.
    Stall { after: Duration, stall: Duration },
    /// Framed protocol: read two frames, echo them as one frame (header = the sum of lengths).
    MergeFrames,
}

/// When the first byte arrived on any connection; waiters are woken then.
#[derive(Default)]
struct FirstByte {
    at: Mutex<Option<Instant>>,
    cv: Condvar,
}

impl FirstByte {
    fn mark(&self) -> Instant {
        let mut at = self.at.lock().unwrap();
        if at.is_none() {
            *at = Some(Instant::now());
            self.cv.notify_all();
        }
        at.unwrap()
    }
}

/// A thread-per-connection echo server with a configurable fault. Lives until the test ends.
pub struct Fixture {
    pub addr: SocketAddr,
    first_byte: Arc<FirstByte>,
}

impl Fixture {
    pub fn start(b: Behaviour) -> Fixture {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind fixture");
        let addr = l.local_addr().unwrap();
        let first_byte: Arc<FirstByte> = Arc::default();
        let fb = Arc::clone(&first_byte);
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let fb = Arc::clone(&fb);
                thread::spawn(move || serve(s, b, &fb));
            }
        });
        Fixture { addr, first_byte }
    }

    /// Blocks until some client has sent this server a byte.
    pub fn wait_for_traffic(&self) {
        let mut at = self.first_byte.at.lock().unwrap();
        while at.is_none() {
            at = self.first_byte.cv.wait(at).unwrap();
        }
    }
}

fn serve(mut s: TcpStream, b: Behaviour, first_byte: &FirstByte) {
    let _ = s.set_nodelay(true);
    if let Behaviour::MergeFrames = b {
        return merge_frames(s, first_byte);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let start = first_byte.mark();
        let chunk = &mut buf[..n];
        match b {
            Behaviour::Echo => {}
            Behaviour::FlipAt(at) => {
                if (offset..offset + n as u64).contains(&at) {
                    chunk[(at - offset) as usize] ^= 0xff;
                }
            }
            Behaviour::CloseAfter(limit) => {
                let keep = limit.saturating_sub(offset).min(n as u64) as usize;
                if keep > 0 && s.write_all(&chunk[..keep]).is_err() {
                    return;
                }
                offset += n as u64;
                if offset >= limit {
                    // FIN, not RST: keep reading (and dropping) until the client closes.
                    let _ = s.shutdown(Shutdown::Write);
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                    return;
                }
                continue;
            }
            Behaviour::ResetAfter(limit) => {
                if offset + n as u64 >= limit {
                    use std::os::fd::AsRawFd;
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: setsockopt on our own open socket with a live, correctly sized value.
                    unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&linger as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        )
                    };
                    return; // dropping the stream closes it: with linger 0, an RST
                }
            }
            Behaviour::Silent => continue,
            Behaviour::MergeFrames => unreachable!("handled by merge_frames"),
            Behaviour::Stall { after, stall } => {
                let now = Instant::now();
                let (from, to) = (start + after, start + after + stall);
                if now >= from && now < to {
                    // The fault under test: this server stops answering for a while.
                    thread::sleep(to - now);
                }
            }
        }
        offset += n as u64;
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

/// The framed-protocol fault: every two frames come back as one.
fn merge_frames(mut s: TcpStream, first_byte: &FirstByte) {
    fn frame(s: &mut TcpStream, first_byte: &FirstByte) -> Option<Vec<u8>> {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).ok()?;
        first_byte.mark();
        let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
        s.read_exact(&mut body).ok()?;
        Some(body)
    }
    while let (Some(a), Some(b)) = (frame(&mut s, first_byte), frame(&mut s, first_byte)) {
        let mut out = ((a.len() + b.len()) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&a);
        out.extend_from_slice(&b);
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

/// What a UDP fixture does with each datagram (counted from 1 across all senders).
#[derive(Clone, Copy, Debug)]
pub enum UdpBehaviour {
    /// Echo all but every `n`-th datagram, which it drops.
    DropEvery(u64),
    /// Never answer.
    Silent,
    /// Echo, but flip every bit of byte `byte` of datagram `nth`.
    FlipAt { nth: u64, byte: usize },
}

/// A one-thread UDP echo server with a configurable fault. Lives until the test ends.
pub struct UdpFixture {
    pub addr: SocketAddr,
    /// Datagrams received.
    pub received: Arc<AtomicU64>,
    /// Datagrams received and deliberately not echoed.
    pub dropped: Arc<AtomicU64>,
}

impl UdpFixture {
    pub fn start(b: UdpBehaviour) -> UdpFixture {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp fixture");
        let addr = sock.local_addr().unwrap();
        let received: Arc<AtomicU64> = Arc::default();
        let dropped: Arc<AtomicU64> = Arc::default();
        let (r, d) = (Arc::clone(&received), Arc::clone(&dropped));
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let k = r.fetch_add(1, Ordering::SeqCst) + 1;
                let dgram = &mut buf[..n];
                match b {
                    UdpBehaviour::DropEvery(every) if k % every == 0 => {
                        d.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    UdpBehaviour::Silent => {
                        d.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    UdpBehaviour::FlipAt { nth, byte } if k == nth && byte < n => {
                        dgram[byte] ^= 0xff;
                    }
                    _ => {}
                }
                let _ = sock.send_to(dgram, from);
            }
        });
        UdpFixture {
            addr,
            received,
            dropped,
        }
    }
}

/// A finished bench run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Starts `ringecho bench` with `args`, output piped.
pub fn spawn_bench(args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringecho bench")
}

/// Collects a finished bench.
pub fn collect(child: Child) -> Run {
    let out = child.wait_with_output().expect("wait for ringecho bench");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ringecho bench` with `args`.
pub fn bench(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringecho bench");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The parts of an HdrHistogram percentile-distribution text that matter: its rows
/// (value, percentile, total count) and the footer's total count.
pub struct Hgrm {
    pub rows: Vec<(f64, f64, u64)>,
    pub total: u64,
}

/// Parses HdrHistogram's `outputPercentileDistribution` text; `Err` names the bad line.
pub fn parse_hgrm(text: &str) -> Result<Hgrm, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty")?.split_whitespace().collect();
    if header != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] {
        return Err(format!("bad header {header:?}"));
    }
    if lines.next() != Some("") {
        return Err("no blank line after the header".into());
    }
    let mut rows = Vec::new();
    let mut total = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("#[") {
            if let Some(t) = rest.split("Total count    =").nth(1) {
                total = Some(
                    t.trim_end_matches(']')
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad total in {line:?}"))?,
                );
            }
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() != 3 && cols.len() != 4 {
            return Err(format!("bad row {line:?}"));
        }
        let value: f64 = cols[0]
            .parse()
            .map_err(|_| format!("bad value in {line:?}"))?;
        let pct: f64 = cols[1]
            .parse()
            .map_err(|_| format!("bad percentile in {line:?}"))?;
        let count: u64 = cols[2]
            .parse()
            .map_err(|_| format!("bad count in {line:?}"))?;
        if let Some(&(v, p, c)) = rows.last()
            && (value < v || pct < p || count < c)
        {
            return Err(format!("row goes backwards: {line:?}"));
        }
        rows.push((value, pct, count));
    }
    Ok(Hgrm {
        rows,
        total: total.ok_or("no total count footer")?,
    })
}

/// A unique temporary path for this test process.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ringecho-bench-{}-{name}", std::process::id()))
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
