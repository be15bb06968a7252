//! A server under test as a child process: spawn it, wait for its `listening on ADDR` lines on
//! stdout, keep every line it writes (stdout and stderr, each read on its own thread for the
//! whole life of the process, so it never blocks on a full pipe), stop it with a signal and
//! read its `final:` line.
//!
//! The integration tests (`tests/common`, `tests/bench_support`) and the comparison harness
//! (`benches/compare`) are separate crates, so they share this file as source, each with
//! `#[path = ".../server_process.rs"] mod server_process;`. It therefore uses only std, libc
//! and ringecho, and panics nowhere: a test turns a failure into a panic, the harness records
//! it and goes on.
#![allow(dead_code)]

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a server may take to print its `listening on` lines.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

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
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            StartError::Spawn { program, error } => write!(f, "cannot spawn {program}: {error}"),
        }
    }
}

/// Why [`Lines::wait_for`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The pipe reached end of file: the process exited or closed it.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// The lines of one of the child's pipes, as they arrive.
#[derive(Default)]
pub struct Lines {
    state: Mutex<LinesState>,
    cv: Condvar,
}

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    closed: bool,
}

/// A poisoned lock here only means a reader thread panicked; its lines are still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lines {
    /// Reads `pipe` line by line on a thread until end of file, handing each line to `seen`
    /// too (before storing it).
    fn read(
        pipe: impl Read + Send + 'static,
        mut seen: impl FnMut(&str) + Send + 'static,
    ) -> (Arc<Lines>, JoinHandle<()>) {
        let lines = Arc::new(Lines::default());
        let reader = {
            let lines = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    seen(&line);
                    lock(&lines.state).lines.push(line);
                    lines.cv.notify_all();
                }
                lock(&lines.state).closed = true;
                lines.cv.notify_all();
            })
        };
        (lines, reader)
    }

    /// Looks at every line so far, under the lock.
    pub fn scan<T>(&self, f: impl FnOnce(&[String]) -> T) -> T {
        f(&lock(&self.state).lines)
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.scan(<[String]>::to_vec)
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.scan(<[String]>::len)
    }

    /// Waits for the first line at index `from` or later for which `find` says `Some`.
    pub fn wait_for<T>(
        &self,
        from: usize,
        deadline: Instant,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, WaitEnd> {
        let mut st = lock(&self.state);
        let mut next = from;
        loop {
            for line in st.lines.get(next..).unwrap_or_default() {
                if let Some(found) = find(line) {
                    return Ok(found);
                }
            }
            next = next.max(st.lines.len());
            let now = Instant::now();
            if st.closed {
                return Err(WaitEnd::Closed);
            }
            if now >= deadline {
                return Err(WaitEnd::TimedOut);
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The address of a `listening on ADDR` line (the first word after it).
fn listening_address(line: &str) -> Option<&str> {
    line.split("listening on ")
        .nth(1)?
        .split_whitespace()
        .next()
}

/// A running server. Dropping it kills the process.
pub struct ServerProcess {
    child: Child,
    /// The address of every `listening on ADDR` line it printed before it was ready, in order.
    pub addrs: Vec<String>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    stderr_reader: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl ServerProcess {
    /// Spawns `cmd` (stdin closed, stdout and stderr piped) and waits until it has printed
    /// `listeners` `listening on ADDR` lines, at most [`READY_TIMEOUT`].
    pub fn spawn(mut cmd: Command, listeners: usize) -> Result<ServerProcess, StartError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|error| StartError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            error,
        })?;
        let (stderr, stderr_reader) =
            Lines::read(child.stderr.take().expect("piped stderr"), |_| {});
        let (tx, rx) = mpsc::channel();
        let (stdout, _) = Lines::read(child.stdout.take().expect("piped stdout"), move |l| {
            if let Some(addr) = listening_address(l) {
                let _ = tx.send(addr.to_string());
            }
        });
        let mut server = ServerProcess {
            child,
            addrs: Vec::new(),
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
            exited: None,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while server.addrs.len() < listeners {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(addr) => server.addrs.push(addr),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed before the readiness lines: the process is exiting.
                    let status = server.wait_exit(READY_TIMEOUT).or_else(|| server.kill());
                    server.join_stderr();
                    let stderr = server.stderr.snapshot().join("\n");
                    return Err(StartError::Exited {
                        // Reaping our own child only fails if something else reaped it.
                        status: status.unwrap_or_default(),
                        stderr,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    server.kill();
                    server.join_stderr();
                    let stderr = server.stderr.snapshot().join("\n");
                    return Err(StartError::Timeout { stderr });
                }
            }
        }
        Ok(server)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout (`listening on`, `metrics on`, ...).
    pub fn stdout(&self) -> &Lines {
        &self.stdout
    }

    /// Its stderr (start-up line, `stats:` lines, the `final:` line, errors).
    pub fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// How it exited, once a wait or a kill has seen it exit.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.exited
    }

    /// The last `final:` line it wrote to stderr.
    pub fn final_line(&self) -> Option<String> {
        self.stderr.scan(|lines| {
            lines
                .iter()
                .rev()
                .find(|l| l.starts_with("final:"))
                .cloned()
        })
    }

    /// Sends `sig` (for example `libc::SIGTERM`); nothing once the process is known to have
    /// exited.
    pub fn signal(&mut self, sig: i32) -> io::Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) takes no pointers; the pid is our child, not yet reaped (so it cannot
        // have been reused).
        if unsafe { libc::kill(self.child.id() as libc::pid_t, sig) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; once it has, waits for the rest of its
    /// stderr. `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5)); // polling waitpid, not synchronising
                }
                _ => return None,
            }
        }
        self.join_stderr();
        self.exited
    }

    /// Kills the process (SIGKILL) unless it has exited, and reaps it; returns how it ended
    /// (`None` if it could not be reaped).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        self.exited
    }

    /// Waits for the end of its stderr (call once it has exited).
    fn join_stderr(&mut self) {
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
