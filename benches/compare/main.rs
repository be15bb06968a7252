//! The side-by-side comparison harness (`make bench`): the same matrix of load cases against
//! several echo servers (ringecho's two backends, ringecho flag variants, other servers), fairly,
//! with every figure written to `target/bench/<timestamp>.json` and `target/bench/latest.md`,
//! and the same tables with charts in `target/bench/latest.html`.
//!
//! Fair by construction: a fresh server for every run, server and client pinned to different
//! CPUs, warm-up excluded, the servers alternating round by round (A B A B ...), median and
//! min–max over the rounds.
//!
//! `cargo bench --bench compare -- --help` lists the options. Run without `--bench` (which is
//! how `cargo test` runs it) it does a quick self-check instead: its parsers, then one tiny case
//! end to end against three servers.

mod html;
mod json;
mod metrics;
mod report;
mod run;
mod selfcheck;
// Shared with the integration tests, which spawn servers the same way.
#[path = "../../tests/common/server_process.rs"]
mod server_process;
mod spec;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ringecho::sys::proc;

use report::{CaseResult, Meta, ServerResult};
use run::{Run, Settings};
use spec::{Case, Launch, Server};

/// Compare echo servers side by side under `ringecho bench` (the `make bench` harness).
#[derive(Parser, Debug)]
#[command(
    name = "compare",
    after_help = "Servers: `uring`, `epoll`, `NAME=uring|epoll FLAGS...` or `NAME=--flag ...` \
                  (a ringecho variant), `NAME=PROGRAM ARGS...` (any echo server that prints \
                  `listening on ADDR`; `{addr}` in ARGS is replaced by the address to listen on, \
                  else the address is appended). Entries are separated by `;`. The first server \
                  is the baseline of every ratio.\n\nExample:\n  cargo bench --bench compare -- \
                  --cases 50x128x1 --duration 3 \\\n    --servers 'uring; epoll; \
                  nobatch=uring --batch-wait-us 0' \\\n    --peers \
                  'tokio=target/peers/release/tokio-echo'\n\nExit status: 0 when every run \
                  verified, 1 when some run failed or did not verify (the report is written \
                  anyway), 2 for bad options."
)]
struct Args {
    /// Passed by `cargo bench`; without it the program runs its self-check.
    #[arg(long, hide = true)]
    bench: bool,
    /// Cases, CONNSxSIZExDEPTH, separated by spaces or commas.
    #[arg(long, default_value = spec::DEFAULT_CASES)]
    cases: String,
    /// Servers under test, separated by `;` (see below).
    #[arg(long, default_value = spec::DEFAULT_SERVERS)]
    servers: String,
    /// More servers, appended to --servers (same syntax; for external echo servers).
    #[arg(long, default_value = "")]
    peers: String,
    /// Measured rounds per case and server (servers alternate within each round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured window of each run, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before each window, seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Load generator I/O: `uring` or `epoll`.
    #[arg(long, default_value = "uring", value_parser = ["uring", "epoll"])]
    client_backend: String,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Where the JSON and Markdown go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// The ringecho binary (default: the one cargo built with this harness).
    #[arg(long)]
    ringecho: Option<PathBuf>,
    /// Do not count external servers' syscalls with perf (skips the extra pass).
    #[arg(long)]
    no_perf: bool,
    /// Length of the syscall-count pass for external servers, seconds.
    #[arg(long, default_value_t = 2.0)]
    perf_duration: f64,
    /// For shared hosts: before each measured run, wait (up to 2 min) until other work uses at
    /// most this many CPUs, and repeat a run during which other work (neither server nor
    /// client) used more; the noisy attempt is kept in the JSON but left out of the figures.
    /// Off by default.
    #[arg(long, value_name = "CPUS")]
    max_other_cpus: Option<f64>,
    /// How often one run may be repeated for --max-other-cpus (then the last attempt counts).
    #[arg(long, default_value_t = 4)]
    noise_retries: usize,
    /// Run the self-check instead of the comparison.
    #[arg(long)]
    smoke: bool,
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if !raw.iter().any(|a| a == "--bench") {
        // `cargo test` runs bench targets without `--bench`: do the self-check.
        return selfcheck::main(&raw[1..]);
    }
    let args = Args::parse();
    if args.smoke {
        return selfcheck::main(&[]);
    }
    match compare(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("compare: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The ringecho binary cargo built alongside this harness.
pub fn default_ringecho() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ringecho"))
}

/// Checked, resolved options.
pub struct Plan {
    /// Cases in order.
    pub cases: Vec<Case>,
    /// Servers in order (the first is the baseline).
    pub servers: Vec<Server>,
    /// Run settings.
    pub settings: Settings,
    /// Rounds.
    pub rounds: usize,
    /// Count external servers' syscalls with perf (Ok), or why not.
    pub perf: Result<(), String>,
    /// Seconds of each count pass.
    pub perf_duration: f64,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Repeat runs where other work used more CPUs than this.
    pub max_other_cpus: Option<f64>,
    /// ...at most this often per run.
    pub noise_retries: usize,
}

fn plan(args: &Args) -> Result<Plan, String> {
    let cases = spec::parse_cases(&args.cases)?;
    let mut servers = spec::parse_servers(&args.servers)?;
    for p in spec::parse_servers(&args.peers)? {
        if servers.iter().any(|s| s.name == p.name) {
            return Err(format!("server name {:?} is given twice", p.name));
        }
        servers.push(p);
    }
    if servers.is_empty() {
        return Err("no servers given".into());
    }
    for s in &servers {
        if let Launch::External { program, .. } = &s.launch {
            spec::find_program(program).map_err(|e| format!("server {}: {e}", s.name))?;
        }
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err("--warmup must be zero or a positive number of seconds".into());
    }
    if !(args.perf_duration.is_finite() && args.perf_duration > 0.0) {
        return Err("--perf-duration must be a positive number of seconds".into());
    }
    if args
        .max_other_cpus
        .is_some_and(|c| !(c.is_finite() && c >= 0.0))
    {
        return Err("--max-other-cpus must be zero or a positive number of CPUs".into());
    }
    if args.client_threads == 0 {
        return Err("--client-threads must be at least 1".into());
    }
    let ringecho = args.ringecho.clone().unwrap_or_else(default_ringecho);
    if !ringecho.is_file() {
        return Err(format!(
            "{}: no such file (run `cargo build --release`)",
            ringecho.display()
        ));
    }
    let needs_perf = servers.iter().any(|s| !s.self_counting());
    let perf = if args.no_perf {
        Err("--no-perf".into())
    } else if needs_perf {
        run::perf_available()
    } else {
        Err("not needed: every server counts its own".into())
    };
    Ok(Plan {
        cases,
        servers,
        settings: settings_for(
            ringecho,
            args.duration,
            args.warmup,
            &args.client_backend,
            args.client_threads,
        ),
        rounds: args.rounds,
        perf,
        perf_duration: args.perf_duration,
        out_dir: args.out_dir.clone(),
        max_other_cpus: args.max_other_cpus,
        noise_retries: args.noise_retries,
    })
}

/// Settings with the CPU split of this machine: with two or more CPUs, servers start at the
/// first allowed CPU and the client gets the next ones; otherwise nothing is pinned.
pub fn settings_for(
    ringecho: PathBuf,
    duration: f64,
    warmup: f64,
    client_backend: &str,
    client_threads: usize,
) -> Settings {
    let cpus = ringecho::sys::allowed_cpus();
    let (server_cpus, client_cpus) = if cpus.len() >= 2 {
        let client: Vec<usize> = cpus[1..].iter().copied().take(client_threads).collect();
        (Some(cpus.clone()), Some(client))
    } else {
        (None, None)
    };
    Settings {
        ringecho,
        duration,
        warmup,
        client_backend: client_backend.to_string(),
        client_threads,
        server_cpus,
        client_cpus,
    }
}

/// Runs the whole plan; writes the outputs after every case (a partial run leaves a report).
pub fn execute(plan: &Plan, quiet: bool) -> Result<(Meta, Vec<CaseResult>, PathBuf), String> {
    let started = SystemTime::now();
    let mut meta = meta_of(plan, started);
    std::fs::create_dir_all(&plan.out_dir)
        .map_err(|e| format!("{}: {e}", plan.out_dir.display()))?;
    let stamp = utc_stamp(started);
    let json_path = plan.out_dir.join(format!("{stamp}.json"));
    // External servers count no syscalls of their own: perf counts them in a pass of its own.
    let count_pass: Vec<bool> = plan
        .servers
        .iter()
        .map(|s| !s.self_counting() && plan.perf.is_ok())
        .collect();
    let mut tally = Tally {
        done: 0,
        total: runs_in_total(plan, &count_pass),
        quiet,
    };
    if !quiet {
        announce(plan, tally.total);
    }
    let mut results: Vec<CaseResult> = Vec::new();
    for &case in &plan.cases {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); plan.servers.len()];
        for round in 0..plan.rounds {
            for (i, server) in plan.servers.iter().enumerate() {
                if server.skips(&case).is_none() {
                    measure(plan, case, server, round, &mut tally, &mut runs[i]);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        for (i, server) in plan.servers.iter().enumerate() {
            if !count_pass[i] || server.skips(&case).is_some() {
                continue;
            }
            let r = run::run_once(&plan.settings, case, server, None, true, plan.perf_duration);
            tally.record(case, server, &r, true);
            runs[i].push(r);
        }
        let servers = plan
            .servers
            .iter()
            .zip(runs)
            .map(|(s, runs)| ServerResult {
                name: s.name.clone(),
                summary: metrics::Summary::of(&runs, case),
                skipped: s.skips(&case),
                runs,
            })
            .collect();
        results.push(CaseResult { case, servers });
        meta.load.1 = proc::loadavg();
        write_outputs(plan, &meta, &results, &json_path, &stamp)?;
    }
    Ok((meta, results, json_path))
}

/// What the report says about the machine and the plan.
fn meta_of(plan: &Plan, started: SystemTime) -> Meta {
    Meta {
        started: utc_text(started),
        kernel: ringecho::sys::kernel_release(),
        cpu_model: proc::cpu_model(),
        cpus: ringecho::sys::allowed_cpus(),
        settings: plan.settings.clone(),
        rounds: plan.rounds,
        git: git_revision(),
        load: (proc::loadavg(), None),
        perf: plan.perf.clone(),
        perf_duration: plan.perf_duration,
        max_other_cpus: plan.max_other_cpus,
    }
}

/// How many runs the plan makes (not counting repeats of noisy ones).
fn runs_in_total(plan: &Plan, count_pass: &[bool]) -> usize {
    plan.cases
        .iter()
        .map(|case| {
            plan.servers
                .iter()
                .zip(count_pass)
                .filter(|(s, _)| s.skips(case).is_none())
                .map(|(_, count)| plan.rounds + usize::from(*count))
                .sum::<usize>()
        })
        .sum()
}

/// Says what is about to run, about how long it takes, and what will be missing.
fn announce(plan: &Plan, total: usize) {
    let s = &plan.settings;
    let secs = total as f64 * (s.duration + s.warmup + 0.6);
    eprintln!(
        "compare: {} case(s) × {} server(s) × {} round(s), {} s + {} s warm-up each: about {}",
        plan.cases.len(),
        plan.servers.len(),
        plan.rounds,
        s.duration,
        s.warmup,
        if secs < 120.0 {
            format!("{secs:.0} s")
        } else {
            format!("{:.0} min", (secs / 60.0).ceil())
        }
    );
    if s.server_cpus.is_none() {
        eprintln!("compare: fewer than 2 CPUs: server and client are not pinned");
    }
    if let Err(e) = &plan.perf
        && plan.servers.iter().any(|s| !s.self_counting())
    {
        eprintln!("compare: external servers' syscalls: n/a ({e})");
    }
}

/// Runs done out of the total, for the progress lines.
struct Tally {
    done: usize,
    total: usize,
    quiet: bool,
}

impl Tally {
    /// Counts `r` (unless it is to be repeated) and prints its progress line.
    fn record(&mut self, case: Case, server: &Server, r: &Run, counts: bool) {
        if counts {
            self.done += 1;
        }
        if !self.quiet {
            progress(self.done, self.total, case, server, r);
        }
    }
}

/// One measured round of `case` against `server`, repeated (up to `--noise-retries` times)
/// while other work on the machine makes it too noisy to keep; every attempt goes to `runs`.
fn measure(
    plan: &Plan,
    case: Case,
    server: &Server,
    round: usize,
    tally: &mut Tally,
    runs: &mut Vec<Run>,
) {
    let mut attempt = 0;
    loop {
        if let Some(limit) = plan.max_other_cpus {
            wait_for_quiet(limit, tally.quiet);
        }
        let mut r = run::run_once(
            &plan.settings,
            case,
            server,
            Some(round),
            false,
            plan.settings.duration,
        );
        let noisy = too_noisy(plan, &r, case);
        let retry = noisy.is_some() && attempt < plan.noise_retries;
        if retry {
            r.discarded = noisy;
        }
        tally.record(case, server, &r, !retry);
        runs.push(r);
        if !retry {
            return;
        }
        attempt += 1;
        // Give the other work a moment to finish before trying again.
        std::thread::sleep(Duration::from_secs(2 * attempt as u64));
    }
}

/// Waits (up to two minutes) until other work on the machine uses at most `limit` CPUs.
fn wait_for_quiet(limit: f64, quiet: bool) {
    let started = std::time::Instant::now();
    let mut said = false;
    while let Some(busy) = busy_cpus(Duration::from_secs(1)) {
        if busy <= limit {
            return;
        }
        if started.elapsed() > Duration::from_secs(120) {
            if !quiet {
                eprintln!("compare: still busy ({busy:.2} CPUs) after 2 min; running anyway");
            }
            return;
        }
        if !said && !quiet {
            eprintln!("compare: other work is using {busy:.2} CPUs; waiting for <= {limit}");
            said = true;
        }
    }
}

/// How many CPUs' worth of work the machine did over `window` (nothing of ours is running
/// when the harness asks, so this is other people's work).
fn busy_cpus(window: Duration) -> Option<f64> {
    let a = proc::cpu_times()?;
    std::thread::sleep(window);
    let b = proc::cpu_times()?;
    let total = b.total.checked_sub(a.total).filter(|t| *t > 0)?;
    Some(b.busy.saturating_sub(a.busy) as f64 / total as f64 * b.cpus as f64)
}

/// Why `run` is too noisy to keep under `--max-other-cpus`, if it is.
fn too_noisy(plan: &Plan, run: &Run, case: Case) -> Option<String> {
    let limit = plan.max_other_cpus?;
    let other = *metrics::Metrics::of(run, case)?.values.get("other_cpus")?;
    (other > limit).then(|| format!("other work used {other:.2} CPUs (limit {limit})"))
}

fn write_outputs(
    plan: &Plan,
    meta: &Meta,
    results: &[CaseResult],
    json_path: &Path,
    stamp: &str,
) -> Result<(), String> {
    let write =
        |p: &Path, text: &str| std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()));
    write(
        json_path,
        &report::json(meta, &plan.servers, results).to_pretty(),
    )?;
    let md = report::markdown(meta, &plan.servers, results);
    write(&plan.out_dir.join(format!("{stamp}.md")), &md)?;
    write(&plan.out_dir.join("latest.md"), &md)?;
    let page = html::html(meta, &plan.servers, results);
    write(&plan.out_dir.join(format!("{stamp}.html")), &page)?;
    write(&plan.out_dir.join("latest.html"), &page)
}

fn progress(done: usize, total: usize, case: Case, server: &Server, r: &Run) {
    let kind = match r.round {
        Some(n) => format!("round {}", n + 1),
        None => "syscalls".to_string(),
    };
    if let Some(why) = &r.discarded {
        eprintln!(
            "[{done:>3}/{total}] {case:<17} {kind:<8} {:<14} repeating: {why}",
            server.name
        );
        return;
    }
    let line = match metrics::Metrics::of(r, case) {
        Some(m) => {
            let v = |k: &str| m.values.get(k).copied();
            let mut s = format!(
                "{} msgs/s{}  p99 {} µs  server {} µs/msg  total {} µs/msg",
                v("msgs_per_sec").map_or("n/a".into(), report::fmt_rate),
                match v("mb_per_sec") {
                    Some(mb) if case.is_bulk() => format!(" {mb:.0} MB/s"),
                    _ => String::new(),
                },
                v("p99_us").map_or("n/a".into(), report::fmt_sig),
                v("server_cpu_us_per_msg").map_or("n/a".into(), report::fmt_sig),
                v("total_cpu_us_per_msg").map_or("n/a".into(), report::fmt_sig),
            );
            if let Some(sc) = v("syscalls_per_msg") {
                s.push_str(&format!("  {} syscalls/msg", report::fmt_sig(sc)));
            }
            if let Some(o) = v("other_cpus") {
                s.push_str(&format!("  other {o:.2} CPUs"));
            }
            s.push_str(if m.verified { "  ok" } else { "  NOT VERIFIED" });
            if let Some(e) = &r.error {
                s.push_str(&format!("  ({e})"));
            }
            s
        }
        None => format!("FAILED: {}", r.error.as_deref().unwrap_or("no measurement")),
    };
    eprintln!(
        "[{done:>3}/{total}] {case:<17} {kind:<8} {:<14} {line}",
        server.name
    );
}

/// Runs the comparison; Ok(false) when some run failed or did not verify (the report is
/// written either way).
fn compare(args: &Args) -> Result<bool, String> {
    let plan = plan(args)?;
    let (_, results, json_path) = execute(&plan, false)?;
    let meta_md = std::fs::read_to_string(plan.out_dir.join("latest.md")).unwrap_or_default();
    println!("{meta_md}");
    eprintln!(
        "compare: wrote {}, {} and {}",
        json_path.display(),
        plan.out_dir.join("latest.md").display(),
        plan.out_dir.join("latest.html").display()
    );
    let failed = results
        .iter()
        .flat_map(|c| c.servers.iter())
        .any(|r| r.summary.verified < r.summary.rounds);
    if failed {
        eprintln!("compare: some runs failed or did not verify: see the ⚠ lines");
    }
    Ok(!failed)
}

/// `git rev-parse --short HEAD`, with `-dirty` for uncommitted changes to tracked files.
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// (year, month, day, hour, minute, second) in UTC.
pub fn utc_parts(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn utc_text(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// `20261125-145053`, for file names.
pub fn utc_stamp(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(t);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}
