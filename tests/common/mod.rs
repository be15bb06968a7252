//! The integration-test harness: starts the real `ringecho` binary on port 0 and talks to it
//! over loopback.
//!
//! - [`Server`] spawns the binary, waits for its `listening on ADDR` line (the readiness signal),
//!   keeps reading its stderr on a thread (start-up line, `stats:` lines, the `final:` line) and
//!   kills it on drop. [`Server::stop`] sends a signal and returns the final counters and the
//!   exit status.
//! - [`for_each_backend`] runs a test body once per backend in [`BACKENDS`]; a backend this
//!   machine cannot run (no io_uring) is skipped with the server's own one-line reason.
//! - [`Pattern`] is a per-connection byte sequence, so a connection that receives another
//!   connection's bytes (or its own bytes out of order) is caught at the first wrong byte.
//! - [`Flow`] and [`drive`] move many nonblocking connections from one thread with `poll(2)`:
//!   each sends its pattern (random write sizes, a bound on bytes in flight) and checks every
//!   byte that comes back.
//! - [`in_fresh_netns`] runs a test in its own network namespace, so `/proc/net/sockstat`
//!   counts only that test's sockets on a machine other people use (and traffic shaping or
//!   packet loss set up there touches nothing else).
//! - [`round_trips`] and [`pct`] measure request/response latency on held connections.
//!
//! Nothing here sleeps to synchronise: waits are for a line, a counter in a stats line, or a
//! socket event, each with a deadline.
#![allow(dead_code, unused_imports)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use ringecho::rng::SplitMix64 as Rng;
use ringecho::stats::Counters;
use ringecho::sys::proc;
pub use ringecho::sys::proc::{PortSockets, SockStat, clock_ticks_per_sec, port_sockets, slab};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringecho");

/// How long a server may take to print `listening on`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped server may take to exit before the test fails (and kills it).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Stats interval the harness asks for unless a test sets its own.
const STATS_INTERVAL: &str = "0.1";

/// Every backend the suite runs against: its name and the flags that select it. Adding a
/// backend is one line here; every test written with [`for_each_backend`] then runs on it.
pub const BACKENDS: &[(&str, &[&str])] = &[
    ("uring", &["--backend", "uring"]),
    ("epoll", &["--backend", "epoll"]),
];

/// Exit status the server uses for "this backend cannot run here" (io_uring unavailable).
pub const EXIT_UNAVAILABLE: i32 = 2;

// ---- backends ----------------------------------------------------------------------------

/// One backend of the server.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    /// Short name (`uring`, `epoll`).
    pub name: &'static str,
    /// Flags that select it.
    pub flags: &'static [&'static str],
}

impl Backend {
    /// Starts a server on this backend with extra flags; panics if it does not come up.
    pub fn start(&self, args: &[&str]) -> Server {
        match Server::try_start(*self, args) {
            Ok(s) => s,
            Err(e) => panic!("server ({}) {args:?} did not start: {e}", self.name),
        }
    }

    /// A `Command` for `ringecho serve` on this backend with `args` (not spawned); unless `args`
    /// say otherwise, on 127.0.0.1 port 0, one shard, with a stats line every 0.1 s.
    pub fn command(&self, args: &[&str]) -> Command {
        self.build(Some("serve"), args)
    }

    /// Like [`command`](Self::command), without the `serve` subcommand (serving is what
    /// `ringecho` does with none).
    pub fn command_without_subcommand(&self, args: &[&str]) -> Command {
        self.build(None, args)
    }

    fn build(&self, subcommand: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(subcommand);
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        // One shard unless a test asks for more: per-shard limits (buffers, budget, connection
        // cap) then mean what the test says. Multi-shard behaviour has its own tests.
        if !args.contains(&"--threads") {
            cmd.args(["--threads", "1"]);
        }
        cmd.args(self.flags);
        if !args.contains(&"--stats-interval") {
            cmd.args(["--stats-interval", STATS_INTERVAL]);
        }
        cmd.args(args);
        cmd
    }

    /// Whether this machine can run the backend: `Err` carries the server's own reason. Found
    /// once per test binary by starting a server and seeing whether it exits with status 2.
    pub fn availability(&self) -> Result<(), String> {
        static SEEN: Mutex<Vec<(&str, Result<(), String>)>> = Mutex::new(Vec::new());
        let mut seen = lock(&SEEN);
        if let Some((_, r)) = seen.iter().find(|(n, _)| *n == self.name) {
            return r.clone();
        }
        let r = match Server::try_start(*self, &[]) {
            Ok(mut s) => {
                s.stop(libc::SIGTERM);
                Ok(())
            }
            Err(StartError::Exited { status, stderr })
                if status.code() == Some(EXIT_UNAVAILABLE) =>
            {
                Err(stderr.trim().to_string())
            }
            Err(e) => panic!(
                "backend {} failed to start for another reason: {e}",
                self.name
            ),
        };
        seen.push((self.name, r.clone()));
        r
    }
}

fn test_name() -> String {
    thread::current().name().unwrap_or("test").to_string()
}

/// Runs `body` once per backend in [`BACKENDS`] that this machine can run; prints why a backend
/// is skipped (for example, io_uring blocked by seccomp) instead of failing obscurely.
pub fn for_each_backend(mut body: impl FnMut(Backend)) {
    for &(name, flags) in BACKENDS {
        let b = Backend { name, flags };
        match b.availability() {
            Ok(()) => {
                eprintln!("[{}] backend {name}", test_name());
                body(b);
            }
            Err(why) => skipped(&format!("on backend {name}: {why}")),
        }
    }
}

/// Says (uncaptured, so it shows in a plain `cargo test` run) that a test, or part of one, was
/// skipped and why.
pub fn skipped(why: &str) {
    let _ = writeln!(io::stderr().lock(), "SKIPPED [{}] {why}", test_name());
}

/// Runs `body` on one named backend only (for behaviour specific to it, such as the io_uring
/// buffer ring); skipped with a reason if the backend does not exist or cannot run here.
pub fn with_backend(name: &str, body: impl FnOnce(Backend)) {
    let Some(&(name, flags)) = BACKENDS.iter().find(|(n, _)| *n == name) else {
        skipped(&format!("no backend {name}"));
        return;
    };
    let b = Backend { name, flags };
    match b.availability() {
        Ok(()) => body(b),
        Err(why) => skipped(&format!("on backend {name}: {why}")),
    }
}

// ---- the server process ------------------------------------------------------------------

/// Why a server did not become ready.
#[derive(Debug)]
pub enum StartError {
    /// It exited before printing `listening on`.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Everything it wrote to stderr.
        stderr: String,
    },
    /// It printed nothing in time (it was killed).
    Timeout {
        /// Everything it wrote to stderr.
        stderr: String,
    },
    /// It could not be spawned.
    Spawn(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Exited { status, stderr } => {
                write!(f, "exited ({status}) before listening; stderr:\n{stderr}")
            }
            StartError::Timeout { stderr } => {
                write!(
                    f,
                    "not listening after {READY_TIMEOUT:?}; stderr:\n{stderr}"
                )
            }
            StartError::Spawn(e) => write!(f, "cannot spawn {BIN}: {e}"),
        }
    }
}

/// The server's stderr, line by line, as it arrives.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    cv: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// stderr reached EOF (the process has exited or closed it).
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a stopped server left behind.
#[derive(Debug)]
pub struct Stopped {
    /// Exit status.
    pub status: ExitStatus,
    /// Counters from the `final:` line, if it printed one.
    pub counters: Option<Counters>,
    /// `rss_kib` from the `final:` line.
    pub rss_kib: Option<u64>,
    /// Every stderr line.
    pub stderr: Vec<String>,
    /// From the signal (or the call) to the exit.
    pub elapsed: Duration,
}

impl Stopped {
    /// The final counters; panics (showing stderr) if there was no `final:` line.
    pub fn final_counters(&self) -> Counters {
        self.counters.unwrap_or_else(|| {
            panic!(
                "no final stats line (exit {}); stderr:\n{}",
                self.status,
                self.stderr.join("\n")
            )
        })
    }

    /// Asserts a clean exit (status 0) with a final line, and returns the final counters.
    pub fn assert_clean(&self) -> Counters {
        assert!(
            self.status.success(),
            "server exited with {}; stderr:\n{}",
            self.status,
            self.stderr.join("\n")
        );
        let c = self.final_counters();
        assert!(
            !self.stderr.iter().any(|l| l.contains("panicked")),
            "server panicked:\n{}",
            self.stderr.join("\n")
        );
        c
    }
}

/// A running `ringecho serve`. Dropping it kills the process.
pub struct Server {
    child: Child,
    /// The resolved listening address (the first one).
    pub addr: SocketAddr,
    /// Every resolved listening address, in `--addr` order.
    pub addrs: Vec<SocketAddr>,
    /// The backend it runs.
    pub backend: Backend,
    log: Arc<Log>,
    /// Its stdout, line by line (`listening on`, `metrics on`).
    out_log: Arc<Log>,
    stderr_reader: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
    signalled_at: Option<Instant>,
}

impl Server {
    /// Spawns the server and waits for `listening on ADDR` on its stdout.
    pub fn try_start(backend: Backend, args: &[&str]) -> Result<Server, StartError> {
        Server::spawn(backend, backend.command(args))
    }

    /// Spawns `cmd` (a server command line for `backend`) and waits for `listening on ADDR`.
    pub fn spawn(backend: Backend, mut cmd: Command) -> Result<Server, StartError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // One `listening on` line per address.
        let want_addrs = cmd.get_args().filter(|a| *a == "--addr").count().max(1);
        let mut child = cmd.spawn().map_err(StartError::Spawn)?;
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_reader = {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lock(&log.state).lines.push(line);
                    log.cv.notify_all();
                }
                lock(&log.state).closed = true;
                log.cv.notify_all();
            })
        };
        // stdout is read on its own thread for the whole life of the process, so the server
        // never blocks on a full pipe; its lines come here.
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let out_log = Arc::new(Log::default());
        {
            let log = Arc::clone(&out_log);
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lock(&log.state).lines.push(line.clone());
                    log.cv.notify_all();
                    let _ = tx.send(line);
                }
                lock(&log.state).closed = true;
                log.cv.notify_all();
            });
        }
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().expect("literal"),
            addrs: Vec::new(),
            backend,
            log,
            out_log,
            stderr_reader: Some(stderr_reader),
            exited: None,
            signalled_at: None,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        server
                            .addrs
                            .push(a.trim().parse().expect("listening on <addr>"));
                        if server.addrs.len() == want_addrs {
                            server.addr = server.addrs[0];
                            return Ok(server);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed before the readiness line: the process is exiting.
                    let status = server.wait_exit_status(EXIT_TIMEOUT);
                    server.join_stderr();
                    let stderr = server.stderr_lines().join("\n");
                    return Err(StartError::Exited { status, stderr });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    server.kill();
                    server.join_stderr();
                    let stderr = server.stderr_lines().join("\n");
                    return Err(StartError::Timeout { stderr });
                }
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.log.state).lines.clone()
    }

    /// The first stdout line that starts with `prefix`, waiting for it up to `timeout`.
    pub fn wait_stdout_line(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_line(&self.out_log, prefix, timeout)
    }

    /// The first stderr line that starts with `prefix`, waiting for it up to `timeout`.
    pub fn wait_stderr_line(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_line(&self.log, prefix, timeout)
    }

    fn wait_line(&self, log: &Log, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&log.state);
        loop {
            if let Some(l) = st.lines.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            let now = Instant::now();
            if st.closed || now >= deadline {
                drop(st);
                panic!(
                    "no line starting with {prefix:?}; stdout:\n{}\nstderr:\n{}",
                    lock(&self.out_log.state).lines.join("\n"),
                    self.stderr_lines().join("\n")
                );
            }
            st = log.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits for a `stats:` line printed *after this call* whose counters satisfy `pred`, and
    /// returns them. Panics on timeout or if the server exits, showing the last stats seen.
    ///
    /// A stats line shows the counters as of the server's last loop turn, so predicates should
    /// include a counter that only grows (`accepted >= N`) rather than rely on a gauge alone.
    pub fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Counters) -> bool,
    ) -> Counters {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.log.state);
        let mut next = st.lines.len();
        let mut last: Option<String> = None;
        loop {
            for line in &st.lines[next..] {
                if line.starts_with("stats:") {
                    let c = Counters::parse(line);
                    if pred(&c) {
                        return c;
                    }
                    last = Some(line.clone());
                }
            }
            next = st.lines.len();
            let now = Instant::now();
            if st.closed || now >= deadline {
                let why = if st.closed {
                    "server exited"
                } else {
                    "timed out"
                };
                drop(st);
                panic!(
                    "{why} after {:?} waiting for {what}; last stats line:\n{}\nstderr tail:\n{}",
                    timeout,
                    last.unwrap_or_default(),
                    tail(&self.stderr_lines(), 5)
                );
            }
            st = self.log.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// The counters of the most recent `stats:` line, without waiting (`None` before the first).
    pub fn latest_stats(&self) -> Option<Counters> {
        let st = lock(&self.log.state);
        st.lines
            .iter()
            .rev()
            .find(|l| l.starts_with("stats:"))
            .map(|l| Counters::parse(l))
    }

    /// How many stderr lines contain `needle` so far.
    pub fn count_stderr(&self, needle: &str) -> usize {
        lock(&self.log.state)
            .lines
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The counters of the next `stats:` line.
    pub fn next_stats(&self) -> Counters {
        self.wait_stats("the next stats line", Duration::from_secs(5), |_| true)
    }

    /// Resident set size of the server process in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        proc::status_kib(self.pid(), "VmRSS").expect("VmRSS of the server")
    }

    /// CPU time (user + system, all threads) the server has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        proc::process_cpu_ticks(self.pid()).expect("CPU time of the server")
    }

    /// `/proc/net/sockstat` as the server's network namespace sees it.
    pub fn sockstat(&self) -> SockStat {
        proc::sockstat(Some(self.pid())).expect("sockstat")
    }

    /// The server-side TCP sockets of this server (local port = its port), from its namespace.
    pub fn server_sockets(&self) -> PortSockets {
        proc::port_sockets(self.pid(), self.addr.port())
    }

    /// A blocking client connection with 10 s read and write timeouts and `TCP_NODELAY`.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends `sig` (for example `libc::SIGTERM`) and notes when, for [`Stopped::elapsed`].
    pub fn signal(&mut self, sig: i32) {
        if self.exited.is_some() {
            return;
        }
        // SAFETY: kill(2) with a pid we spawned and have not reaped (so it cannot have been
        // reused) and a valid signal number; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
        self.signalled_at = Some(Instant::now());
    }

    /// Waits up to `timeout` for the server to exit on its own and collects what it left. Panics
    /// (after killing it) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Stopped {
        let from = self.signalled_at.unwrap_or_else(Instant::now);
        let status = self.wait_exit_status(timeout);
        let elapsed = from.elapsed();
        self.join_stderr();
        let stderr = self.stderr_lines();
        let fin = stderr.iter().rev().find(|l| l.starts_with("final:"));
        Stopped {
            status,
            counters: fin.map(|l| Counters::parse(l)),
            rss_kib: fin.and_then(|l| field(l, "rss_kib")),
            stderr,
            elapsed,
        }
    }

    /// Sends `sig` and waits for the exit ([`EXIT_TIMEOUT`] at most).
    pub fn stop(&mut self, sig: i32) -> Stopped {
        self.signal(sig);
        self.wait_exit(EXIT_TIMEOUT)
    }

    fn wait_exit_status(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("waitpid") {
                self.exited = Some(s);
                return s;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "server did not exit within {timeout:?} (killed); stderr tail:\n{}",
                    tail(&self.stderr_lines(), 10)
                );
            }
            thread::sleep(Duration::from_millis(5)); // polling waitpid, not synchronising
        }
    }

    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    fn join_stderr(&mut self) {
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- server ({}) stderr tail ---\n{}",
                self.backend.name,
                tail(&self.stderr_lines(), 15)
            );
        }
    }
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The value of `key=N` in a stats line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs a command to completion with a deadline; returns (status, stdout, stderr). Panics
/// (after killing it) if it runs longer: a command that should have failed at once but
/// started serving instead must not hang the suite.
pub fn run_to_exit(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {timeout:?}; stdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(5)); // polling waitpid
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

// ---- /proc and limits -------------------------------------------------------------------

/// `RLIMIT_NOFILE` of process `pid` as (soft, hard), from `/proc/PID/limits`.
pub fn rlimit_nofile_of(pid: u32) -> (u64, u64) {
    proc::nofile_limit(pid).expect("Max open files in /proc/PID/limits")
}

/// Raises this (test) process's soft `RLIMIT_NOFILE` to its hard limit; returns the new limit.
pub fn raise_nofile_limit() -> u64 {
    ringecho::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE")
}

// ---- isolation ---------------------------------------------------------------------------

/// Serialises the tests of one binary that measure (CPU time, RSS, syscalls per message), so
/// they do not perturb each other. Hold the guard for the whole test.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    lock(&M)
}

/// Runs `f` on a thread that has its own network namespace with `lo` up, so servers it starts
/// and sockets it (or threads it spawns) opens are counted apart from the rest of the machine
/// in `/proc/PID/net/sockstat`. Without the privilege to do so (not root), runs `f` in the
/// shared namespace and passes `false`.
pub fn in_fresh_netns<T: Send>(f: impl FnOnce(bool) -> T + Send) -> T {
    let name = test_name();
    thread::scope(|s| {
        let h = thread::Builder::new()
            .name(name.clone())
            .spawn_scoped(s, move || {
                let isolated = match enter_fresh_netns() {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!(
                            "[{name}] note: no private network namespace ({e}); socket counts \
                             include the rest of the machine"
                        );
                        false
                    }
                };
                f(isolated)
            })
            .expect("spawn");
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn enter_fresh_netns() -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET moves only the calling thread (and
    // what it later spawns) into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // A new namespace's loopback is down: bring it up (SIOCSIFFLAGS |= IFF_UP).
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data (all-zero is valid); the ioctls read and write only the
    // ifreq passed, whose name is NUL-terminated; `fd` is ours and closed once here.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 { Err(err) } else { Ok(()) }
    }
}

// ---- byte patterns -----------------------------------------------------------------------

/// Period of every pattern: a prime, so it lines up with no buffer size.
const PERIOD: usize = 65_521;

fn table() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let mut rng = Rng::new(0x5eed_f00d);
        let mut t: Vec<u8> = (0..PERIOD).map(|_| rng.next_u64() as u8).collect();
        // Stored twice, so any window of up to PERIOD bytes is one contiguous slice.
        t.extend_from_within(..);
        t
    })
}

/// The bytes connection `seed` sends: byte `i` is `table[(i + seed * STRIDE) % PERIOD]`, a
/// random sequence with a different phase per connection. Filling and checking are memcpy and
/// memcmp, so verifying every byte costs little even in a debug build.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    phase: usize,
}

impl Pattern {
    /// The pattern of connection `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            phase: (seed.wrapping_mul(7_919) % PERIOD as u64) as usize,
        }
    }

    fn window(&self, offset: u64, len: usize) -> &'static [u8] {
        let start = ((offset % PERIOD as u64) as usize + self.phase) % PERIOD;
        &table()[start..start + len.min(PERIOD)]
    }

    /// Fills `buf` with the bytes at stream offset `offset`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let w = self.window(offset + done as u64, buf.len() - done);
            buf[done..done + w.len()].copy_from_slice(w);
            done += w.len();
        }
    }

    /// The bytes at `offset..offset + len`.
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(offset, &mut v);
        v
    }

    /// Checks `buf` against the bytes at `offset`; `Err` names the first wrong byte.
    pub fn check(&self, offset: u64, buf: &[u8]) -> Result<(), String> {
        let mut done = 0;
        while done < buf.len() {
            let w = self.window(offset + done as u64, buf.len() - done);
            let got = &buf[done..done + w.len()];
            if got != w {
                let i = got.iter().zip(w).position(|(a, b)| a != b).unwrap();
                let at = offset + (done + i) as u64;
                let mut which = String::new();
                for s in 0..1024u64 {
                    let p = Pattern::new(s);
                    if p.phase != self.phase
                        && got[i..].starts_with(p.window(at, 16.min(got.len() - i)))
                    {
                        which = format!(" (these are the bytes connection pattern {s} has there)");
                        break;
                    }
                }
                return Err(format!(
                    "byte {at} is {:#04x}, expected {:#04x}{which}",
                    got[i], w[i]
                ));
            }
            done += w.len();
        }
        Ok(())
    }
}

// ---- many connections from one thread ----------------------------------------------------

/// How one [`Flow`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct FlowSpec {
    /// Bytes to send (`u64::MAX` for "until the time is up", with [`drive_for`]).
    pub total: u64,
    /// Most bytes sent and not yet echoed back (1 message in flight = the message size).
    pub window: u64,
    /// Each write is a random size in `1..=max_write` (or exactly it, if `fixed_writes`).
    pub max_write: usize,
    /// Every write is exactly `max_write` bytes (request/response with fixed messages).
    pub fixed_writes: bool,
    /// `shutdown(SHUT_WR)` after the last byte, then expect every byte back and EOF.
    pub half_close: bool,
}

impl FlowSpec {
    /// `total` bytes in random writes of up to 16 KiB, up to 256 KiB in flight.
    pub fn bulk(total: u64) -> FlowSpec {
        FlowSpec {
            total,
            window: 256 * 1024,
            max_write: 16 * 1024,
            fixed_writes: false,
            half_close: false,
        }
    }
}

/// One client connection sending its [`Pattern`] and checking every echoed byte.
#[derive(Debug)]
pub struct Flow {
    /// Identifies the flow in errors (also its pattern seed).
    pub id: u64,
    /// The socket (nonblocking).
    pub stream: TcpStream,
    pat: Pattern,
    spec: FlowSpec,
    rng: Rng,
    /// Bytes written.
    pub sent: u64,
    /// Bytes read back (all checked).
    pub received: u64,
    /// Write side shut down.
    pub write_closed: bool,
    /// Read returned 0.
    pub eof: bool,
    /// When the flow finished.
    pub done_at: Option<Instant>,
}

impl Flow {
    /// Connects to `addr` and makes a flow with pattern `id`.
    pub fn connect(addr: SocketAddr, id: u64, spec: FlowSpec) -> io::Result<Flow> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Ok(Flow::new(s, id, spec))
    }

    /// Wraps a connected stream (made nonblocking, `TCP_NODELAY`).
    pub fn new(stream: TcpStream, id: u64, spec: FlowSpec) -> Flow {
        stream.set_nonblocking(true).expect("nonblocking");
        stream.set_nodelay(true).expect("nodelay");
        Flow {
            id,
            stream,
            pat: Pattern::new(id),
            spec,
            rng: Rng::new(id ^ 0xf10e),
            sent: 0,
            received: 0,
            write_closed: false,
            eof: false,
            done_at: None,
        }
    }

    /// Every byte came back (and EOF, for a half-closing flow).
    pub fn finished(&self) -> bool {
        self.received == self.spec.total && (!self.spec.half_close || self.eof)
    }

    fn in_flight(&self) -> u64 {
        self.sent - self.received
    }

    fn wants_write(&self) -> bool {
        self.sent < self.spec.total && self.in_flight() < self.spec.window
    }

    fn on_readable(&mut self, buf: &mut [u8]) -> Result<(), String> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    if self.received < self.spec.total {
                        return Err(format!(
                            "flow {}: EOF after {} of {} bytes echoed (sent {})",
                            self.id, self.received, self.spec.total, self.sent
                        ));
                    }
                    return Ok(());
                }
                Ok(n) => {
                    if self.received + n as u64 > self.sent {
                        return Err(format!(
                            "flow {}: {} bytes echoed but only {} sent",
                            self.id,
                            self.received + n as u64,
                            self.sent
                        ));
                    }
                    self.pat
                        .check(self.received, &buf[..n])
                        .map_err(|e| format!("flow {}: {e}", self.id))?;
                    self.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "flow {}: read after {} bytes: {e}",
                        self.id, self.received
                    ));
                }
            }
        }
    }

    fn on_writable(&mut self, buf: &mut [u8]) -> Result<(), String> {
        while self.wants_write() {
            let size = if self.spec.fixed_writes {
                self.spec.max_write as u64
            } else {
                self.rng.range(1, self.spec.max_write as u64)
            };
            let n = size
                .min(self.spec.total - self.sent)
                .min(self.spec.window - self.in_flight()) as usize;
            self.pat.fill(self.sent, &mut buf[..n]);
            match self.stream.write(&buf[..n]) {
                Ok(k) => self.sent += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "flow {}: write after {} bytes: {e}",
                        self.id, self.sent
                    ));
                }
            }
        }
        if self.sent == self.spec.total && self.spec.half_close && !self.write_closed {
            self.stream
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("flow {}: shutdown(SHUT_WR): {e}", self.id))?;
            self.write_closed = true;
        }
        Ok(())
    }

    /// A one-line account of where the flow stands.
    pub fn progress(&self) -> String {
        format!(
            "flow {}: sent {}/{} echoed {} eof={}",
            self.id, self.sent, self.spec.total, self.received, self.eof
        )
    }
}

/// Drives `flows` until every one has finished; `Err` on the first wrong byte, early EOF,
/// error, or when `limit` passes (listing the flows still going).
pub fn drive(flows: &mut [Flow], limit: Duration) -> Result<(), String> {
    drive_until(flows, Instant::now() + limit, false)
}

/// Drives `flows` for `dur` (they need not finish); `Err` on a wrong byte, EOF or error.
pub fn drive_for(flows: &mut [Flow], dur: Duration) -> Result<(), String> {
    drive_until(flows, Instant::now() + dur, true)
}

fn drive_until(flows: &mut [Flow], deadline: Instant, open_ended: bool) -> Result<(), String> {
    let max_write = flows.iter().map(|f| f.spec.max_write).max().unwrap_or(1);
    let mut wbuf = vec![0u8; max_write];
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(flows.len());
    let mut which: Vec<usize> = Vec::with_capacity(flows.len());
    // Start every flow before waiting for any.
    for f in flows.iter_mut() {
        f.on_writable(&mut wbuf)?;
    }
    loop {
        pfds.clear();
        which.clear();
        for (i, f) in flows.iter_mut().enumerate() {
            if f.finished() {
                f.done_at.get_or_insert_with(Instant::now);
                continue;
            }
            let mut events = libc::POLLIN;
            if f.wants_write() {
                events |= libc::POLLOUT;
            }
            pfds.push(libc::pollfd {
                fd: f.stream.as_raw_fd(),
                events,
                revents: 0,
            });
            which.push(i);
        }
        if pfds.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            if open_ended {
                return Ok(());
            }
            let going: Vec<String> = which.iter().take(8).map(|&i| flows[i].progress()).collect();
            return Err(format!(
                "{} of {} flows unfinished at the deadline, e.g.:\n{}",
                which.len(),
                flows.len(),
                going.join("\n")
            ));
        }
        let wait_ms = (deadline - now).as_millis().clamp(1, 100) as i32;
        // SAFETY: `pfds` is a live, initialised array of `pfds.len()` pollfd structs that poll
        // may write `revents` into; nothing else touches it during the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for (p, &i) in pfds.iter().zip(&which) {
            if p.revents == 0 {
                continue;
            }
            let f = &mut flows[i];
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                f.on_readable(&mut rbuf)?;
            }
            if p.revents & libc::POLLOUT != 0 || f.wants_write() {
                f.on_writable(&mut wbuf)?;
            }
        }
    }
}

// ---- latency -----------------------------------------------------------------------------

/// Round trips of `size` bytes, one in flight per connection, all connections at once, for
/// at least `rounds` rounds and at least `min_time`; returns every round trip's time.
pub fn round_trips(
    conns: &mut [TcpStream],
    size: usize,
    rounds: usize,
    min_time: Duration,
) -> Vec<Duration> {
    let t0 = Instant::now();
    let mut rtts = Vec::with_capacity(conns.len() * rounds);
    let mut buf = vec![0u8; size];
    let mut offsets = vec![0u64; conns.len()];
    let mut round = 0;
    while round < rounds || t0.elapsed() < min_time {
        round += 1;
        let mut sent_at = Vec::with_capacity(conns.len());
        for (i, c) in conns.iter_mut().enumerate() {
            let msg = Pattern::new(i as u64).bytes(offsets[i], size);
            sent_at.push(Instant::now());
            c.write_all(&msg).unwrap();
        }
        let mut got = vec![0usize; conns.len()];
        let mut left = conns.len();
        while left > 0 {
            let mut pfds: Vec<libc::pollfd> = conns
                .iter()
                .map(|c| libc::pollfd {
                    fd: c.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `pfds` is a live array of `pfds.len()` initialised pollfd structs.
            // Generous: under heavy packet loss TCP's retransmission back-off alone can take
            // several seconds (0.2 + 0.4 + 0.8 + 1.6 + 3.2 s for five losses in a row).
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 30_000) };
            assert!(n > 0, "held connections stopped answering for 30 s");
            for (i, p) in pfds.iter().enumerate() {
                if p.revents == 0 || got[i] == size {
                    continue;
                }
                let n = conns[i].read(&mut buf[..size - got[i]]).unwrap();
                assert!(n > 0, "held connection {i} closed");
                Pattern::new(i as u64)
                    .check(offsets[i] + got[i] as u64, &buf[..n])
                    .unwrap();
                got[i] += n;
                if got[i] == size {
                    rtts.push(sent_at[i].elapsed());
                    left -= 1;
                }
            }
        }
        for o in &mut offsets {
            *o += size as u64;
        }
    }
    rtts
}

/// The `p` quantile (0..1) of `v` (sorted in place).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

// ---- single connections ------------------------------------------------------------------

/// Writes `msg` and reads the same number of bytes back (blocking, with the stream's timeouts).
pub fn echo_once(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Reads until EOF or an error; returns the bytes and how it ended (`None` = clean EOF).
pub fn read_to_end_or_error(s: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (all, None),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (all, Some(e)),
        }
    }
}

/// `SO_LINGER {on, 0}`: the next close sends RST instead of FIN.
pub fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live `linger` value on an
    // open socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Writes pattern bytes to a nonblocking stream until the kernel refuses more (or `cap`
/// bytes); returns how many went in starting at `offset`.
pub fn push_until_blocked(s: &mut TcpStream, pat: &Pattern, offset: u64, cap: u64) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < cap {
        let n = buf.len().min((cap - sent) as usize);
        pat.fill(offset + sent, &mut buf[..n]);
        match s.write(&buf[..n]) {
            Ok(k) => sent += k as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sent
}

/// A blocking client socket with small fixed buffers (`SO_RCVBUF`/`SO_SNDBUF` = `buf`, which
/// the kernel doubles and no longer autotunes) and a small MSS (`TCP_MAXSEG` = `mss`), all set
/// before `connect` so the handshake advertises them. On loopback the MSS is otherwise 64 KiB,
/// and the *server's* send buffer, which grows with cwnd × MSS, swells to `tcp_wmem` max (4 MiB
/// here) for a peer that never reads: a small MSS keeps a slow reader's cost to the machine small.
pub fn connect_small(addr: SocketAddr, buf: i32, mss: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("connect_small: IPv4 only")
    };
    // SAFETY: socket(2) takes no pointers; the result is checked and owned by the TcpStream.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    for (level, opt, v) in [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, buf),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, buf),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss),
    ] {
        setsockopt_int(&stream, level, opt, v);
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect reads a live sockaddr_in of the size passed.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect {addr}: {}", io::Error::last_os_error());
    stream
}

/// Sets an integer socket option, panicking on failure.
pub fn setsockopt_int(s: &TcpStream, level: i32, opt: i32, value: i32) {
    // SAFETY: setsockopt reads one live c_int from the pointer passed, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {opt}): {}",
        io::Error::last_os_error()
    );
}
