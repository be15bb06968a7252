//! A `ringecho serve` child process on port 0: readiness from its `listening on ADDR` line,
//! every stderr line kept (start-up line, `stats:` lines, the `final:` line), stopped with a
//! signal; and running a command that should exit to completion with a deadline.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringecho::stats::Counters;
use ringecho::sys::proc::{self, PortSockets, SockStat};

use super::backends::{BIN, Backend};

/// How long a server may take to print `listening on`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped server may take to exit before the test fails (and kills it).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

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

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
