//! The server's backends as the suite sees them: which exist, whether this machine can run
//! each, and running a test body once per backend (skipping, with the server's own reason, a
//! backend the machine cannot run).

use std::io::{self, Write};
use std::process::Command;
use std::sync::Mutex;
use std::thread;

use super::isolation::lock;
use super::server::Server;
use super::server_process::StartError;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringecho");

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

pub fn test_name() -> String {
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
