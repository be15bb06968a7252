//! One measured run: start a fresh server pinned to its CPU, drive it with `ringecho bench`
//! pinned to another, read every figure, stop the server and read its final counters.

use std::io::{BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringecho::loadgen::hlog;
use ringecho::stats::Counters;
use ringecho::sys::proc;

use crate::json::Json;
use crate::server_process::{READY_TIMEOUT, ServerProcess, StartError};
use crate::spec::{Case, EXTERNAL_ENV, EXTERNAL_ENV_VALUE, Launch, Server, external_args};

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often kernel socket memory is sampled while the client runs.
const SOCKSTAT_EVERY: Duration = Duration::from_millis(100);

/// Settings shared by every run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The ringecho binary (server and load generator).
    pub ringecho: PathBuf,
    /// Measured window, seconds.
    pub duration: f64,
    /// Warm-up before it, seconds (not measured).
    pub warmup: f64,
    /// `ringecho bench --backend`.
    pub client_backend: String,
    /// `ringecho bench --threads`.
    pub client_threads: usize,
    /// CPUs a one-thread server is pinned to, and the pool a multi-shard server takes its CPUs
    /// from (None: no pinning).
    pub server_cpus: Option<Vec<usize>>,
    /// CPUs the client is pinned to (None: no pinning).
    pub client_cpus: Option<Vec<usize>>,
}

impl Settings {
    /// The CPUs a server with `threads` shards runs on: one CPU for one shard, otherwise the
    /// first `threads` of the pool (a multi-shard server shares CPUs with the client on a small
    /// machine; that is the honest picture of `--threads N` there).
    pub fn cpus_for(&self, threads: usize) -> Option<Vec<usize>> {
        let pool = self.server_cpus.as_ref()?;
        Some(pool.iter().copied().take(threads.max(1)).collect())
    }
}

/// Everything one run produced. Fields are `None` where the run did not get that far.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Round (0-based), or None for a syscall-count pass.
    pub round: Option<usize>,
    /// Why the run was repeated and left out of the figures (other work on the machine).
    pub discarded: Option<String>,
    /// Why the run produced no measurement (server did not start, client crashed, ...).
    pub error: Option<String>,
    /// The server's `ringecho:` start-up line (what it got from the kernel).
    pub startup: Option<String>,
    /// The CPUs the server ran on.
    pub server_cpus: Option<Vec<usize>>,
    /// `ringecho bench --json` output.
    pub client: Option<Json>,
    /// The client's exit code.
    pub client_exit: Option<i32>,
    /// The server's `final:` counters (ringecho only).
    pub counters: Option<Counters>,
    /// How the server exited (`exit N` / `signal N`).
    pub server_exit: Option<String>,
    /// The server's peak RSS, KiB.
    pub rss_peak_kib: Option<u64>,
    /// Kernel TCP socket memory before the client started, KiB (whole machine).
    pub tcp_mem_base_kib: Option<u64>,
    /// Peak kernel TCP socket memory while the client ran, KiB (whole machine).
    pub tcp_mem_peak_kib: Option<u64>,
    /// Syscalls `perf` counted in the server over the whole client run (count passes only).
    pub perf_syscalls: Option<u64>,
    /// Latencies (ns) of the measured window, from the client's `--hlog` (for the charts of
    /// `latest.html`; not in the JSON).
    pub latency: Option<Histogram<u64>>,
}

/// Pins a command to `cpus` and ties its life to ours (it is killed if the harness dies).
fn prepare(cmd: &mut Command, cpus: Option<&[usize]>) {
    // SAFETY: cpu_set_t is plain old data.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let mut pin = false;
    for &c in cpus.unwrap_or(&[]) {
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: c is within the set.
            unsafe { libc::CPU_SET(c, &mut set) };
            pin = true;
        }
    }
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // syscalls on memory it owns.
    unsafe {
        cmd.pre_exec(move || {
            if pin && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill takes no pointers; the pid is our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

fn describe_exit(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown".into(),
    }
}

/// Reads a pipe to the end on a thread.
fn drain(r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = Vec::new();
        let _ = BufReader::new(r).read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// The last `n` lines of `s`, joined with ` | ` (for one-line error messages).
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Starts `server` for `case` on a free port, pinned to `cpus`, and waits for its `listening
/// on ADDR` line.
fn start_server(
    settings: &Settings,
    server: &Server,
    case: &Case,
    cpus: Option<&[usize]>,
) -> Result<ServerProcess, String> {
    const ADDR: &str = "127.0.0.1:0";
    let mut cmd = match &server.launch {
        Launch::Ringecho { .. } => {
            let mut c = Command::new(&settings.ringecho);
            c.arg("serve").args(server.ringecho_args(ADDR, case));
            c
        }
        Launch::External { program, args } => {
            let mut c = Command::new(program);
            c.args(external_args(args, ADDR))
                .env(EXTERNAL_ENV, EXTERNAL_ENV_VALUE);
            c
        }
    };
    prepare(&mut cmd, cpus);
    ServerProcess::spawn(cmd, 1).map_err(|e| match e {
        StartError::Spawn { error, .. } => format!("cannot start: {error}"),
        StartError::Timeout { stderr } => format!(
            "no `listening on ADDR` line within {READY_TIMEOUT:?}: {}",
            tail(&stderr, 3)
        ),
        StartError::Exited { status, stderr } => format!(
            "exited ({}) before listening: {}",
            describe_exit(status),
            tail(&stderr, 3)
        ),
    })
}

/// SIGTERM, wait (SIGKILL after [`STOP_TIMEOUT`]); returns how it exited and its stderr.
fn stop_server(mut server: ServerProcess) -> (String, Vec<String>) {
    let _ = server.signal(libc::SIGTERM);
    let status = match server.wait_exit(STOP_TIMEOUT) {
        Some(s) => describe_exit(s),
        None => {
            server.kill();
            format!("killed: still running {STOP_TIMEOUT:?} after SIGTERM")
        }
    };
    (status, server.stderr().snapshot())
}

/// Kernel TCP socket memory now, KiB (the whole machine).
fn tcp_mem_kib() -> Option<u64> {
    Some(proc::sockstat(None)?.tcp_mem_kib())
}

/// Samples kernel TCP memory on a thread until stopped; returns the peak.
struct SockstatSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Option<u64>>,
}

impl SockstatSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peak = None;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(tcp_mem_kib());
                thread::sleep(SOCKSTAT_EVERY);
            }
            peak
        });
        SockstatSampler { stop, handle }
    }

    fn finish(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

/// `perf stat` counting one process's syscalls.
struct PerfCount {
    child: Child,
    stderr: JoinHandle<String>,
}

impl PerfCount {
    fn attach(pid: u32) -> Result<Self, String> {
        let mut cmd = Command::new("perf");
        cmd.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p"])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        prepare(&mut cmd, None);
        let mut child = cmd.spawn().map_err(|e| format!("perf: {e}"))?;
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        // Let it attach before traffic starts.
        thread::sleep(Duration::from_millis(300));
        Ok(PerfCount { child, stderr })
    }

    fn finish(mut self) -> Result<u64, String> {
        signal(&self.child, libc::SIGINT);
        if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            signal(&self.child, libc::SIGKILL);
            let _ = self.child.wait();
        }
        let out = self.stderr.join().unwrap_or_default();
        parse_perf_count(&out).ok_or_else(|| format!("perf: no count in {:?}", tail(&out, 2)))
    }
}

/// The count from `perf stat -x ,` output for `raw_syscalls:sys_enter`.
pub fn parse_perf_count(out: &str) -> Option<u64> {
    out.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `perf stat -e raw_syscalls:sys_enter` works here; the reason when it does not.
pub fn perf_available() -> Result<(), String> {
    let out = Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("perf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    match parse_perf_count(&text) {
        Some(_) if out.status.success() => Ok(()),
        _ => Err(format!("perf stat failed: {}", tail(&text, 2))),
    }
}

/// A fresh path for one run's interval log, in the system's temporary directory.
fn hlog_path() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "ringecho-compare-{}-{}.hlog",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Every interval of the log at `path` in one histogram, if it can be read; removes the file.
fn read_latency(path: &std::path::Path) -> Option<Histogram<u64>> {
    let merged = hlog::read(path).ok().map(|log| hlog::merge(vec![log]).hist);
    let _ = std::fs::remove_file(path);
    merged
}

/// Runs the client against `addr`, its interval log going to `hlog`; returns (exit code,
/// stdout, stderr).
fn run_client(
    settings: &Settings,
    case: Case,
    addr: &str,
    server_pid: u32,
    duration: f64,
    hlog: &std::path::Path,
) -> Result<(Option<i32>, String, String), String> {
    let mut cmd = Command::new(&settings.ringecho);
    cmd.arg("bench")
        .args(["--addr", addr])
        .args(["--conns", &case.conns.to_string()])
        .args(["--size", &case.size.to_string()])
        .args(["--depth", &case.depth.to_string()])
        .args(case.rate.map(|r| format!("--rate={r}")))
        .args(case.udp.then_some("--udp"))
        .args(["--duration", &duration.to_string()])
        .args(["--warmup", &settings.warmup.to_string()])
        .args(["--threads", &settings.client_threads.to_string()])
        .args(["--backend", &settings.client_backend])
        .args(["--server-pid", &server_pid.to_string()])
        .arg("--hlog")
        .arg(hlog)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    prepare(&mut cmd, settings.client_cpus.as_deref());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the client: {e}"))?;
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    // Connecting is paced at 5000/s by default; allow that and a generous margin.
    let limit =
        Duration::from_secs_f64(settings.warmup + duration + f64::from(case.conns) / 1000.0 + 30.0);
    let status = match wait_timeout(&mut child, limit) {
        Some(s) => s,
        None => {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
            return Err(format!("the client ran over {limit:?} and was killed"));
        }
    };
    Ok((
        status.code(),
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    ))
}

/// One run of `case` against a fresh `server`. With `count_syscalls`, `perf` counts the
/// server's syscalls (a separate, shorter pass: the tracepoint slows every syscall on the
/// machine, so such a run's throughput is not used).
pub fn run_once(
    settings: &Settings,
    case: Case,
    server: &Server,
    round: Option<usize>,
    count_syscalls: bool,
    duration: f64,
) -> Run {
    let mut run = Run {
        round,
        server_cpus: settings.cpus_for(server.threads()),
        ..Run::default()
    };
    let process = match start_server(settings, server, &case, run.server_cpus.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let pid = process.pid();
    let perf = if count_syscalls {
        match PerfCount::attach(pid) {
            Ok(p) => Some(p),
            Err(e) => {
                run.error = Some(e);
                None
            }
        }
    } else {
        None
    };
    run.tcp_mem_base_kib = tcp_mem_kib();
    let sampler = SockstatSampler::start();
    let hlog = hlog_path();
    let client = run_client(settings, case, &process.addrs[0], pid, duration, &hlog);
    run.latency = read_latency(&hlog);
    run.tcp_mem_peak_kib = sampler.finish();
    run.rss_peak_kib = proc::status_kib(pid, "VmHWM");
    if let Some(perf) = perf {
        match perf.finish() {
            Ok(n) => run.perf_syscalls = Some(n),
            Err(e) => run.error = Some(e),
        }
    }
    let (status, stderr) = stop_server(process);
    run.server_exit = Some(status);
    run.startup = stderr
        .iter()
        .find(|l| l.starts_with("ringecho: io_uring") || l.starts_with("ringecho: epoll"))
        .cloned();
    if server.self_counting() {
        run.counters = stderr
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("final:"))
            .map(Counters::parse);
    }
    match client {
        Err(e) => run.error = Some(e),
        Ok((code, out, err)) => {
            run.client_exit = code;
            match Json::parse(&out) {
                Ok(j) => run.client = Some(j),
                Err(e) => {
                    run.error = Some(format!(
                        "the client printed no report ({e}; exit {code:?}): {}",
                        tail(&err, 3)
                    ));
                }
            }
        }
    }
    run
}
