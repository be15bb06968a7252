//! The outputs: `target/bench/<timestamp>.json` (every run, every figure) and the Markdown
//! tables of `target/bench/latest.md` (medians, ranges, ratios against the first server).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ringecho::stats::Counters;

use crate::json::Json;
use crate::metrics::{BUSY_OTHER_CPUS, METRICS, Metrics, Stat, Summary};
use crate::run::{Run, Settings};
use crate::spec::{Case, Server};

/// Said in every report (issue 5).
pub const NOISE_NOTE: &str = "Machine noise on a shared host is 10–20%: a difference smaller \
than that, or one whose min–max ranges overlap, is not a result. Re-run in a quiet window before \
drawing conclusions.";

/// Said in every report: why the process CPU figures alone mislead.
pub const CPU_NOTE: &str = "CPU times are sampled by the scheduler tick (250 Hz on the reference \
kernel, without IRQ time accounting), and on loopback the sender's CPU runs much of the \
receiver's TCP work (softirq in the sending context), so a process's CPU per message includes \
part of its peer's cost: read server CPU together with total CPU (every CPU's busy time).";

/// What the run was, for the header.
#[derive(Clone, Debug)]
pub struct Meta {
    /// `2026-11-25 14:50:53 UTC`.
    pub started: String,
    /// Running kernel.
    pub kernel: String,
    /// CPU model.
    pub cpu_model: Option<String>,
    /// CPUs the harness may use.
    pub cpus: Vec<usize>,
    /// Run settings.
    pub settings: Settings,
    /// Rounds per case.
    pub rounds: usize,
    /// `git describe`-like id of the tree, if known.
    pub git: Option<String>,
    /// 1-minute load average at start and at end.
    pub load: (Option<f64>, Option<f64>),
    /// How external servers' syscalls are counted: Ok (perf), or why they are not.
    pub perf: Result<(), String>,
    /// Seconds of each syscall-count pass.
    pub perf_duration: f64,
    /// `--max-other-cpus`, if set.
    pub max_other_cpus: Option<f64>,
}

/// One server's runs in one case.
#[derive(Clone, Debug)]
pub struct ServerResult {
    /// The server's name.
    pub name: String,
    /// Its runs (measured rounds, then any count pass).
    pub runs: Vec<Run>,
    /// Why it sat this case out, if it did.
    pub skipped: Option<&'static str>,
    /// Medians and ranges.
    pub summary: Summary,
}

/// One case's results, servers in the order given.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case.
    pub case: Case,
    /// Per server.
    pub servers: Vec<ServerResult>,
}

/// `336617` as `336.6k`, `2013000` as `2.01M`.
pub fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Three significant digits, no exponent: `0.0241`, `2.41`, `241`, `2410`.
pub fn fmt_sig(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        // Enough decimals for three significant digits, at most 6.
        ((-a.log10()).floor() as usize + 3).min(6)
    };
    format!("{v:.decimals$}")
}

/// A ratio: `×1.04`.
pub fn fmt_ratio(v: f64) -> String {
    if v >= 100.0 {
        format!("×{v:.0}")
    } else if v >= 10.0 {
        format!("×{v:.1}")
    } else {
        format!("×{v:.2}")
    }
}

fn fmt_stat(s: Option<&Stat>, f: fn(f64) -> String) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.n == 1 || s.min == s.max => f(s.median),
        Some(s) => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
    }
}

fn fmt_median(s: Option<&Stat>, f: fn(f64) -> String) -> String {
    s.map_or_else(|| "n/a".into(), |s| f(s.median))
}

fn busy_cell(server: Option<&Stat>, client: Option<&Stat>) -> String {
    if server.is_none() && client.is_none() {
        return "n/a".into();
    }
    let f = |s: Option<&Stat>| s.map_or("n/a".into(), |s| format!("{:.2}", s.median));
    format!("{}/{}", f(server), f(client))
}

fn fmt_kib(v: f64) -> String {
    format!("{v:.0}")
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), fmt_ratio)
}

/// Server `a`'s `key` over server `b`'s, round by round (runs set aside as noisy left out).
/// The servers of a round run back to back, so a ratio within one round cancels the slower
/// drift of a shared machine that a ratio of medians taken over all rounds keeps.
fn paired(c: &CaseResult, a: &str, b: &str, key: &str) -> Option<Stat> {
    let by_round = |name: &str| -> BTreeMap<usize, f64> {
        let runs = c
            .servers
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.runs[..]);
        runs.unwrap_or_default()
            .iter()
            .filter(|run| run.discarded.is_none())
            .filter_map(|run| Some((run.round?, *Metrics::of(run, c.case)?.values.get(key)?)))
            .collect()
    };
    let (x, y) = (by_round(a), by_round(b));
    let ratios: Vec<f64> = x
        .iter()
        .filter_map(|(round, v)| ratio(Some(*v), y.get(round).copied()))
        .collect();
    Stat::of(&ratios)
}

/// A target's cell: its mark on the median of the per-round ratios, then the ratio and, with
/// more than one round, the rounds' range; `rounds split` when the range lies on both sides
/// of the line: some rounds met the target and some did not.
fn verdict(r: Option<Stat>, ok: impl Fn(f64) -> bool) -> String {
    let Some(r) = r else {
        return "– n/a".into();
    };
    let mark = if ok(r.median) { "✅" } else { "❌" };
    if r.n == 1 || r.min == r.max {
        return format!("{mark} {}", fmt_ratio(r.median));
    }
    let straddles = ok(r.min) != ok(r.max);
    format!(
        "{mark} {} ({}–{}){}",
        fmt_ratio(r.median),
        fmt_ratio(r.min).trim_start_matches('×'),
        fmt_ratio(r.max).trim_start_matches('×'),
        if straddles { " · rounds split" } else { "" }
    )
}

/// The whole result as JSON.
pub fn json(meta: &Meta, servers: &[Server], cases: &[CaseResult]) -> Json {
    let s = &meta.settings;
    let mut root = Json::obj();
    root.set("harness", "ringecho benches/compare")
        .set("started", meta.started.as_str())
        .set("kernel", meta.kernel.as_str())
        .set("cpu_model", meta.cpu_model.clone())
        .set(
            "cpus",
            Json::Arr(meta.cpus.iter().map(|&c| c.into()).collect()),
        )
        .set("git", meta.git.clone())
        .set("ringecho", s.ringecho.display().to_string())
        .set("rounds", meta.rounds)
        .set("duration_s", s.duration)
        .set("warmup_s", s.warmup)
        .set("client_backend", s.client_backend.as_str())
        .set("client_threads", s.client_threads)
        .set("client_cpus", cpus_json(s.client_cpus.as_deref()))
        .set("server_cpus", cpus_json(s.server_cpus.as_deref()))
        .set("loadavg_start", meta.load.0)
        .set("loadavg_end", meta.load.1)
        .set("max_other_cpus", meta.max_other_cpus)
        .set(
            "external_syscalls",
            match &meta.perf {
                Ok(()) => format!(
                    "perf stat -e raw_syscalls:sys_enter, separate {} s pass",
                    meta.perf_duration
                ),
                Err(e) => format!("n/a: {e}"),
            },
        )
        .set("noise", NOISE_NOTE)
        .set("cpu_note", CPU_NOTE);
    let mut defs = Json::obj();
    for &(k, d) in METRICS {
        defs.set(k, d);
    }
    root.set("metrics", defs);
    root.set(
        "servers",
        Json::Arr(
            servers
                .iter()
                .map(|sv| {
                    let mut j = Json::obj();
                    j.set("name", sv.name.as_str())
                        .set("command", sv.command_line(&s.ringecho))
                        .set("threads", sv.threads());
                    j
                })
                .collect(),
        ),
    );
    let cases_json = cases
        .iter()
        .map(|c| {
            let mut cj = Json::obj();
            cj.set("case", c.case.to_string())
                .set("conns", c.case.conns)
                .set("size", c.case.size)
                .set("depth", c.case.depth)
                .set("rate", c.case.rate)
                .set("transport", if c.case.udp { "udp" } else { "tcp" });
            let results = c.servers.iter().map(|r| server_json(r, c.case)).collect();
            cj.set("results", Json::Arr(results));
            cj
        })
        .collect();
    root.set("cases", Json::Arr(cases_json));
    root
}

fn cpus_json(c: Option<&[usize]>) -> Json {
    c.map_or(Json::Null, |c| {
        Json::Arr(c.iter().map(|&c| c.into()).collect())
    })
}

fn server_json(r: &ServerResult, case: Case) -> Json {
    let mut j = Json::obj();
    j.set("server", r.name.as_str())
        .set("skipped", r.skipped)
        .set("rounds", r.summary.rounds)
        .set("measured", r.summary.measured)
        .set("discarded_noisy", r.summary.discarded)
        .set("busy", r.summary.busy)
        .set("verified", r.summary.verified);
    let mut stats = Json::obj();
    for (k, s) in &r.summary.stats {
        stats.set(k, s.json());
    }
    j.set("summary", stats);
    j.set(
        "problems",
        Json::Arr(
            r.summary
                .problems
                .iter()
                .map(|p| p.as_str().into())
                .collect(),
        ),
    );
    let runs = r
        .runs
        .iter()
        .map(|run| {
            let mut rj = Json::obj();
            rj.set("round", run.round)
                .set(
                    "kind",
                    if run.round.is_some() {
                        "measured"
                    } else {
                        "syscall-count"
                    },
                )
                .set("error", run.error.clone())
                .set("discarded", run.discarded.clone())
                .set("server_cpus", cpus_json(run.server_cpus.as_deref()))
                .set("server_exit", run.server_exit.clone())
                .set("client_exit", run.client_exit.map(|c| c as f64))
                .set("startup", run.startup.clone())
                .set("tcp_mem_base_kib", run.tcp_mem_base_kib)
                .set("tcp_mem_peak_kib", run.tcp_mem_peak_kib)
                .set("perf_syscalls", run.perf_syscalls);
            if let Some(m) = Metrics::of(run, case) {
                let mut mj = Json::obj();
                for (k, v) in &m.values {
                    mj.set(k, *v);
                }
                rj.set("metrics", mj).set("verified", m.verified);
            }
            if let Some(k) = &run.counters {
                rj.set("counters", counters_json(k));
            }
            if let Some(c) = &run.client {
                rj.set("client", c.clone());
            }
            rj
        })
        .collect();
    j.set("runs", Json::Arr(runs));
    j
}

fn counters_json(k: &Counters) -> Json {
    let mut j = Json::obj();
    for (name, v) in Counters::NAMES.iter().zip(k.values()) {
        j.set(name, v);
    }
    j
}

fn cpus_text(c: Option<&[usize]>) -> String {
    match c {
        None => "any CPU (not pinned)".into(),
        Some([one]) => format!("CPU {one}"),
        Some(many) => format!(
            "CPUs {}",
            many.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The Markdown report.
pub fn markdown(meta: &Meta, servers: &[Server], cases: &[CaseResult]) -> String {
    let s = &meta.settings;
    let first = servers.first().map_or("first", |s| s.name.as_str());
    let mut md = String::new();
    let _ = writeln!(md, "# ringecho: echo servers side by side\n");
    let _ = writeln!(
        md,
        "{} · kernel {} · {} CPU{}{} · ringecho {}\n",
        meta.started,
        meta.kernel,
        meta.cpus.len(),
        if meta.cpus.len() == 1 { "" } else { "s" },
        meta.cpu_model
            .as_ref()
            .map_or(String::new(), |m| format!(" ({m})")),
        meta.git.as_deref().unwrap_or("(unknown revision)")
    );
    let pinning = match (&s.server_cpus, &s.client_cpus) {
        (Some(_), Some(c)) => format!(
            "Servers on {} (a server with N shards: the first N CPUs), client on {}",
            cpus_text(s.cpus_for(1).as_deref()),
            cpus_text(Some(c))
        ),
        _ => "Server and client **not pinned** (fewer than 2 CPUs): they compete for one CPU"
            .to_string(),
    };
    let _ = writeln!(
        md,
        "{pinning}: `ringecho bench --backend {} --threads {}`. {} round{} per case, servers \
         alternating (A B A B ...), a fresh server for every run; each run measures {} s after \
         {} s of warm-up (not measured). Cells: median (min–max) over the rounds; ×{first}: this \
         server's median / {first}'s median.\n",
        s.client_backend,
        s.client_threads,
        meta.rounds,
        if meta.rounds == 1 { "" } else { "s" },
        s.duration,
        s.warmup,
    );
    let load = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.2}"));
    let _ = writeln!(
        md,
        "> **Noise.** {NOISE_NOTE} Load average {} at start, {} at end; the *other CPUs* column \
         is CPU time neither server nor client used during each window.\n>\n> **CPU.** \
         {CPU_NOTE}\n",
        load(meta.load.0),
        load(meta.load.1)
    );

    let all = cases.iter().flat_map(|c| c.servers.iter());
    let measured: usize = all.clone().map(|r| r.summary.measured).sum();
    let busy: usize = all.clone().map(|r| r.summary.busy).sum();
    let discarded: usize = all.map(|r| r.summary.discarded).sum();
    if busy > 0 {
        let _ = writeln!(
            md,
            "⚠ **Busy machine**: in {busy} of {measured} measured runs other work used more than \
             {BUSY_OTHER_CPUS} CPU; throughput and latency of those runs say more about the \
             machine than about the servers. CPU per message and syscalls per message hold up \
             best.\n"
        );
    }
    if discarded > 0 {
        let _ = writeln!(
            md,
            "{discarded} noisy attempt(s) were repeated (`--max-other-cpus {}`); they are in the \
             JSON, marked `discarded`, and not in these figures.\n",
            meta.max_other_cpus.map_or("?".into(), |c| c.to_string())
        );
    }

    glance(&mut md, servers, cases, first);
    targets(&mut md, servers, cases);

    for c in cases {
        let _ = writeln!(md, "## {}\n", c.case.describe());
        case_table(&mut md, c, first);
        let problems: Vec<String> = c
            .servers
            .iter()
            .flat_map(|r| {
                r.summary
                    .problems
                    .iter()
                    .map(move |p| format!("{}: {p}", r.name))
            })
            .collect();
        if !problems.is_empty() {
            md.push('\n');
            for p in problems {
                let _ = writeln!(md, "- ⚠ {}", p.replace('\n', " "));
            }
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Servers\n");
    for sv in servers {
        let _ = writeln!(md, "- **{}**: `{}`", sv.name, sv.command_line(&s.ringecho));
        let startup = cases
            .iter()
            .flat_map(|c| c.servers.iter())
            .filter(|r| r.name == sv.name)
            .flat_map(|r| r.runs.iter())
            .find_map(|run| run.startup.clone());
        if let Some(line) = startup {
            let _ = writeln!(md, "  - start-up: `{line}`");
        }
        if let Some(cpus) = s.cpus_for(sv.threads()) {
            let _ = writeln!(md, "  - runs on {}", cpus_text(Some(&cpus)));
        }
    }
    md.push('\n');

    let _ = writeln!(md, "## Columns\n");
    for &(k, d) in METRICS {
        let _ = writeln!(md, "- `{k}`: {d}");
    }
    let _ = writeln!(
        md,
        "- syscalls of servers other than ringecho: {}",
        match &meta.perf {
            Ok(()) => format!(
                "`perf stat -e raw_syscalls:sys_enter -p PID` over one extra {} s run per case \
                 (not one of the measured rounds: the tracepoint slows every syscall on the \
                 machine), divided by the messages that run echoed",
                meta.perf_duration
            ),
            Err(e) => format!("n/a ({e})"),
        }
    );
    let _ = writeln!(
        md,
        "- JSON with every run and every counter: the `<timestamp>.json` next to this file"
    );
    md
}

/// One case's table: a row per server, with the columns that case has (MB/s for every case;
/// the rate kept in open loop; loss for UDP).
fn case_table(md: &mut String, c: &CaseResult, first: &str) {
    type Cell<'a> = Box<dyn Fn(&Summary) -> String + 'a>;
    let base = c.servers.first().map(|r| &r.summary);
    let base_median = |k: &str| base.and_then(|b| b.median(k));
    let stat = |k: &'static str, f: fn(f64) -> String| -> Cell<'_> {
        Box::new(move |sm: &Summary| fmt_stat(sm.stats.get(k), f))
    };
    let median = |k: &'static str, f: fn(f64) -> String| -> Cell<'_> {
        Box::new(move |sm: &Summary| fmt_median(sm.stats.get(k), f))
    };
    let rel = |k: &'static str| -> Cell<'_> {
        Box::new(move |sm: &Summary| ratio_cell(ratio(sm.median(k), base_median(k))))
    };
    let mut cols: Vec<(String, Cell<'_>)> = vec![
        ("msgs/s".into(), stat("msgs_per_sec", fmt_rate)),
        (format!("×{first}"), rel("msgs_per_sec")),
        ("MB/s".into(), stat("mb_per_sec", fmt_sig)),
    ];
    if c.case.rate.is_some() {
        cols.push((
            "rate kept".into(),
            median("rate_kept", |v| format!("{v:.2}")),
        ));
    }
    if c.case.udp {
        cols.push(("loss %".into(), median("loss_pct", fmt_sig)));
    }
    cols.extend([
        ("p50 µs".to_string(), stat("p50_us", fmt_sig)),
        ("p99 µs".into(), stat("p99_us", fmt_sig)),
        ("p99.9 µs".into(), median("p999_us", fmt_sig)),
        (
            "server CPU µs/msg".into(),
            stat("server_cpu_us_per_msg", fmt_sig),
        ),
        (format!("×{first}"), rel("server_cpu_us_per_msg")),
        (
            "total CPU µs/msg".into(),
            stat("total_cpu_us_per_msg", fmt_sig),
        ),
        ("syscalls/msg".into(), median("syscalls_per_msg", fmt_sig)),
        (format!("×{first}"), rel("syscalls_per_msg")),
        (
            "completions/enter".into(),
            median("completions_per_enter", fmt_sig),
        ),
        ("RSS peak KiB".into(), median("rss_peak_kib", fmt_kib)),
        ("TCP mem KiB".into(), median("tcp_mem_kib", fmt_kib)),
        (
            "busy CPUs server/client".into(),
            Box::new(|sm: &Summary| {
                busy_cell(sm.stats.get("server_busy"), sm.stats.get("client_busy"))
            }),
        ),
        (
            "other CPUs".into(),
            stat("other_cpus", |v| format!("{v:.2}")),
        ),
    ]);
    let _ = writeln!(
        md,
        "| server | {} | verified |",
        cols.iter()
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---:|".repeat(cols.len() + 1));
    for r in &c.servers {
        let sm = &r.summary;
        if let Some(why) = r.skipped {
            let _ = writeln!(
                md,
                "| {} | skipped: {why} |{}",
                r.name,
                " |".repeat(cols.len())
            );
            continue;
        }
        let verified = if sm.rounds == 0 {
            "n/a".to_string()
        } else if sm.verified == sm.rounds {
            format!("yes {}/{}", sm.verified, sm.rounds)
        } else {
            format!("**NO** {}/{}", sm.verified, sm.rounds)
        };
        let cells: Vec<String> = cols.iter().map(|(_, f)| f(sm)).collect();
        let _ = writeln!(md, "| {} | {} | {verified} |", r.name, cells.join(" | "));
    }
}

fn glance(md: &mut String, servers: &[Server], cases: &[CaseResult], first: &str) {
    if servers.len() < 2 {
        return;
    }
    let _ = writeln!(md, "## At a glance\n");
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    for (key, title, fmt_base) in [
        (
            "msgs_per_sec",
            "msgs/s (higher is better)",
            fmt_rate as fn(f64) -> String,
        ),
        (
            "server_cpu_us_per_msg",
            "server CPU µs per message (lower is better)",
            fmt_sig,
        ),
        (
            "syscalls_per_msg",
            "server syscalls per message (lower is better)",
            fmt_sig,
        ),
        ("p50_us", "p50 latency µs (lower is better)", fmt_sig),
        ("p99_us", "p99 latency µs (lower is better)", fmt_sig),
    ] {
        let _ = writeln!(md, "{title}: {first}'s median, the others as ×{first}\n");
        let _ = writeln!(md, "| case | {} |", names.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
        for c in cases {
            let base = c.servers.first().and_then(|r| r.summary.median(key));
            let cells: Vec<String> = c
                .servers
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let v = r.summary.median(key);
                    if r.skipped.is_some() {
                        "–".into()
                    } else if i == 0 {
                        let mut cell = v.map_or("n/a".into(), fmt_base);
                        if key == "msgs_per_sec"
                            && c.case.is_bulk()
                            && let Some(mb) = r.summary.median("mb_per_sec")
                        {
                            cell.push_str(&format!(" ({mb:.0} MB/s)"));
                        }
                        cell
                    } else {
                        ratio_cell(ratio(v, base))
                    }
                })
                .collect();
            let _ = writeln!(md, "| {} | {} |", c.case, cells.join(" | "));
        }
        md.push('\n');
    }
}

/// A load generator busier than this (CPUs, one client thread) is the bottleneck.
const CLIENT_BOUND: f64 = 0.95;

/// The targets, for the default ringecho (`uring`) against its epoll backend (`epoll`) and the
/// best of the other servers (the peers), when they ran: in every case at least as fast as
/// both (messages or bytes per second, within 5%); in open loop a p50 within 1.10× and a p99
/// within 1.25× of epoll's; server CPU per message no more than epoll's wherever there are at
/// least 50 connections; UDP within 5% of epoll.
fn targets(md: &mut String, servers: &[Server], cases: &[CaseResult]) {
    let get = |c: &CaseResult, name: &str, key: &str| {
        c.servers
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.summary.median(key))
    };
    let has_both = cases.iter().any(|c| {
        c.servers.iter().any(|r| r.name == "uring") && c.servers.iter().any(|r| r.name == "epoll")
    });
    if !has_both {
        return;
    }
    let peers: Vec<&str> = servers
        .iter()
        .filter(|s| !s.self_counting())
        .map(|s| s.name.as_str())
        .collect();
    let mark = |ok: Option<bool>| match ok {
        Some(true) => "✅",
        Some(false) => "❌",
        None => "–",
    };
    let _ = writeln!(
        md,
        "## Targets: the default ringecho (`uring`) against its epoll backend{}\n",
        if peers.is_empty() {
            String::new()
        } else {
            format!(" and the best peer ({})", peers.join(", "))
        }
    );
    let _ = writeln!(
        md,
        "Ratios are taken round by round (the servers of a round run back to back, so the \
         machine's slower drift cancels); each cell gives their median, which the mark \
         judges, and their range over the rounds, marked `rounds split` when some rounds met \
         the target and some did not. Throughput ≥ 0.95× (messages/s, the same ratio as \
         MB/s); open loop: the offered rate kept (median), p50 ≤ 1.10× and p99 ≤ 1.25× \
         epoll's; server CPU µs/msg ≤ epoll's with ≥ 50 connections. A ratio inside the \
         machine's noise (10–20%) is not a result either way.\n"
    );
    let _ = writeln!(
        md,
        "| case | throughput ÷ epoll | ÷ best peer | latency ÷ epoll | server CPU ÷ epoll |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for c in cases {
        let thr = |name: &str| get(c, name, "msgs_per_sec");
        let vs = |other: &str, key: &str| paired(c, "uring", other, key);
        let throughput = match c.case.rate {
            None => verdict(vs("epoll", "msgs_per_sec"), |r| r >= 0.95),
            Some(_) => {
                let kept = get(c, "uring", "rate_kept");
                format!(
                    "{} rate kept {}",
                    mark(kept.map(|k| k >= 0.98)),
                    kept.map_or("n/a".into(), |k| format!("{k:.2}"))
                )
            }
        };
        // The best peer by median throughput, then compared round by round.
        let best_peer = peers
            .iter()
            .filter_map(|p| Some((*p, thr(p)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let vs_peer = match (c.case.rate, best_peer) {
            (None, Some((name, _))) => format!(
                "{} ({name})",
                verdict(vs(name, "msgs_per_sec"), |r| r >= 0.95)
            ),
            _ => "–".to_string(),
        };
        let latency = if c.case.rate.is_some() {
            format!(
                "p50 {}, p99 {}",
                verdict(vs("epoll", "p50_us"), |r| r <= 1.10),
                verdict(vs("epoll", "p99_us"), |r| r <= 1.25)
            )
        } else {
            "–".to_string()
        };
        let cpu = if c.case.conns >= 50 {
            verdict(vs("epoll", "server_cpu_us_per_msg"), |r| r <= 1.0)
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            md,
            "| {} | {throughput} | {vs_peer} | {latency} | {cpu} |",
            c.case
        );
    }
    md.push('\n');
    let syscalls = |case: &str| {
        let c = cases.iter().find(|c| c.case.to_string() == case)?;
        Some((
            get(c, "uring", "syscalls_per_msg")?,
            get(c, "epoll", "syscalls_per_msg"),
        ))
    };
    // Cases where the one-thread load generator, not the server, set the pace.
    let client_bound: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let u = get(c, "uring", "client_busy")?;
            let e = get(c, "epoll", "client_busy")?;
            (u.max(e) >= CLIENT_BOUND).then(|| format!("{} ({u:.2}/{e:.2})", c.case))
        })
        .collect();
    if !client_bound.is_empty() {
        let _ = writeln!(
            md,
            "- the load generator was at ≥ {CLIENT_BOUND} of its CPU (uring/epoll runs) in {}: \
             there the client is at its limit, so throughput and latency say as much about it \
             as about the server (and an open-loop p99 is mostly the client's own queue); \
             repeat such a case under the other load generator (`CLIENT_BACKEND=epoll` or \
             `uring`), since how much it gives each server depends on it (README: \
             \"Who is the bottleneck\")",
            client_bound.join(", ")
        );
    }
    if let Some((u, e)) = syscalls("50x128x1") {
        let _ = writeln!(
            md,
            "- {} server syscalls per message at 50x128x1 ≤ 0.25 (counted, not chased): uring {}, \
             epoll {}",
            mark(Some(u <= 0.25)),
            fmt_sig(u),
            e.map_or("n/a".into(), fmt_sig)
        );
    }
    if let Some(c) = cases
        .iter()
        .find(|c| c.case.conns == 1 && c.case.depth == 1 && c.case.rate.is_none() && !c.case.udp)
    {
        let _ = writeln!(
            md,
            "- at {} (one message in flight) uring makes {} syscalls/msg: an enter submits the \
             echo and returns with its completion, the next one waits for the next message",
            c.case,
            get(c, "uring", "syscalls_per_msg").map_or("n/a".into(), fmt_sig),
        );
    }
    md.push('\n');
}
