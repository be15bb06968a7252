//! One test's server: the child process (spawned, made ready and stopped by
//! `server_process.rs`, which the bench tests and the comparison harness share) and what tests
//! ask of it: its addresses, lines and `stats:` counters, its /proc figures, a client
//! connection, a stop that must be clean. And running a command that should exit to completion
//! with a deadline.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ringecho::stats::Counters;
use ringecho::sys::proc::{self, PortSockets, SockStat};

use super::backends::Backend;
use super::server_process::{Lines, ServerProcess, StartError, WaitEnd};

/// How long a stopped server may take to exit before the test fails (and kills it).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

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

/// A running `ringecho serve` (or example server) for one test. Dropping it kills the process.
pub struct Server {
    process: ServerProcess,
    /// The resolved listening address (the first one).
    pub addr: SocketAddr,
    /// Every resolved listening address, in `--addr` order.
    pub addrs: Vec<SocketAddr>,
    /// The backend it runs.
    pub backend: Backend,
    signalled_at: Option<Instant>,
}

impl Server {
    /// Spawns the server and waits for `listening on ADDR` on its stdout.
    pub fn try_start(backend: Backend, args: &[&str]) -> Result<Server, StartError> {
        Server::spawn(backend, backend.command(args))
    }

    /// Spawns `cmd` (a server command line for `backend`) and waits for one `listening on ADDR`
    /// line per `--addr`.
    pub fn spawn(backend: Backend, cmd: Command) -> Result<Server, StartError> {
        let listeners = cmd.get_args().filter(|a| *a == "--addr").count().max(1);
        let process = ServerProcess::spawn(cmd, listeners)?;
        let addrs: Vec<SocketAddr> = process
            .addrs
            .iter()
            .map(|a| a.parse().expect("listening on <addr>"))
            .collect();
        Ok(Server {
            addr: addrs[0],
            addrs,
            process,
            backend,
            signalled_at: None,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.process.stderr().snapshot()
    }

    /// The first stdout line that starts with `prefix`, waiting for it up to `timeout`.
    pub fn wait_stdout_line(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_line(self.process.stdout(), prefix, timeout)
    }

    /// The first stderr line that starts with `prefix`, waiting for it up to `timeout`.
    pub fn wait_stderr_line(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_line(self.process.stderr(), prefix, timeout)
    }

    fn wait_line(&self, lines: &Lines, prefix: &str, timeout: Duration) -> String {
        let found = lines.wait_for(0, Instant::now() + timeout, |l| {
            l.starts_with(prefix).then(|| l.to_string())
        });
        found.unwrap_or_else(|_| {
            panic!(
                "no line starting with {prefix:?}; stdout:\n{}\nstderr:\n{}",
                self.process.stdout().snapshot().join("\n"),
                self.stderr_lines().join("\n")
            )
        })
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
        let stderr = self.process.stderr();
        let mut last: Option<String> = None;
        let found = stderr.wait_for(stderr.len(), Instant::now() + timeout, |line| {
            if !line.starts_with("stats:") {
                return None;
            }
            let c = Counters::parse(line);
            if pred(&c) {
                return Some(c);
            }
            last = Some(line.to_string());
            None
        });
        found.unwrap_or_else(|end| {
            let why = match end {
                WaitEnd::Closed => "server exited",
                WaitEnd::TimedOut => "timed out",
            };
            panic!(
                "{why} after {:?} waiting for {what}; last stats line:\n{}\nstderr tail:\n{}",
                timeout,
                last.unwrap_or_default(),
                tail(&self.stderr_lines(), 5)
            )
        })
    }

    /// The counters of the most recent `stats:` line, without waiting (`None` before the first).
    pub fn latest_stats(&self) -> Option<Counters> {
        self.process.stderr().scan(|lines| {
            lines
                .iter()
                .rev()
                .find(|l| l.starts_with("stats:"))
                .map(|l| Counters::parse(l))
        })
    }

    /// How many stderr lines contain `needle` so far.
    pub fn count_stderr(&self, needle: &str) -> usize {
        self.process
            .stderr()
            .scan(|lines| lines.iter().filter(|l| l.contains(needle)).count())
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
        if self.process.exited().is_some() {
            return;
        }
        let sent = self.process.signal(sig);
        sent.unwrap_or_else(|e| panic!("kill: {e}"));
        self.signalled_at = Some(Instant::now());
    }

    /// Waits up to `timeout` for the server to exit on its own and collects what it left. Panics
    /// (after killing it) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Stopped {
        let from = self.signalled_at.unwrap_or_else(Instant::now);
        let Some(status) = self.process.wait_exit(timeout) else {
            self.process.kill();
            panic!(
                "server did not exit within {timeout:?} (killed); stderr tail:\n{}",
                tail(&self.stderr_lines(), 10)
            );
        };
        let elapsed = from.elapsed();
        let fin = self.process.final_line();
        Stopped {
            status,
            counters: fin.as_deref().map(Counters::parse),
            rss_kib: fin.as_deref().and_then(|l| field(l, "rss_kib")),
            stderr: self.stderr_lines(),
            elapsed,
        }
    }

    /// Sends `sig` and waits for the exit ([`EXIT_TIMEOUT`] at most).
    pub fn stop(&mut self, sig: i32) -> Stopped {
        self.signal(sig);
        self.wait_exit(EXIT_TIMEOUT)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
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
