//! The figures of one run, and the median / min–max of each over a server's rounds.

use std::collections::BTreeMap;

use crate::json::Json;
use crate::run::Run;
use crate::spec::Case;

/// Every per-run figure: JSON key, what it is.
pub const METRICS: &[(&str, &str)] = &[
    (
        "msgs_per_sec",
        "messages echoed per second in the measured window",
    ),
    (
        "mb_per_sec",
        "echoed megabytes (10^6 bytes) per second in the measured window, each byte counted once",
    ),
    (
        "rate_kept",
        "open loop: messages echoed per second ÷ the rate offered (1.00: the server kept up)",
    ),
    (
        "p50_us",
        "median latency, µs (closed loop: from send to last byte back; open loop: from each message's intended send time)",
    ),
    ("p99_us", "99th percentile latency, µs"),
    ("p999_us", "99.9th percentile latency, µs"),
    (
        "loss_pct",
        "UDP: datagrams not echoed within the loss timeout, % of those sent",
    ),
    (
        "server_cpu_us_per_msg",
        "server process CPU (user+system, its process CPU clock: clock_getcpuclockid) per message, µs",
    ),
    (
        "total_cpu_us_per_msg",
        "busy time of every CPU (/proc/stat) per message, µs: server, client, kernel and anything else running",
    ),
    (
        "client_cpu_us_per_msg",
        "load generator process CPU per message, µs",
    ),
    (
        "other_cpus",
        "CPU time used by neither server nor client during the window, in CPUs (noise from other work on the machine, plus softirq time charged to no task)",
    ),
    (
        "syscalls_per_msg",
        "server syscalls per echoed message (ringecho: its own count over the whole run; others: perf raw_syscalls:sys_enter in a separate pass)",
    ),
    (
        "completions_per_enter",
        "ringecho: completions per io_uring_enter (epoll: readiness events per epoll_wait), whole run",
    ),
    ("rss_peak_kib", "server peak resident set (VmHWM), KiB"),
    (
        "tcp_mem_kib",
        "kernel TCP socket memory the run added: peak while the client ran minus the level before it (/proc/net/sockstat `TCP: mem`, sampled every 100 ms), KiB. Machine-wide (client and server sockets, and anyone else's), and the kernel moves it to the global count in per-CPU batches of up to 1 MiB (`SK_MEMORY_PCPU_RESERVE`), so differences below about 2 MiB mean nothing",
    ),
    (
        "server_busy",
        "server CPU time over the window, in CPUs (near 1: the one-shard server is the bottleneck)",
    ),
    (
        "client_busy",
        "load generator CPU time over the window, in CPUs (near its thread count: the client is the bottleneck, and msgs/s cannot show a cheaper server)",
    ),
];

/// A run during which other work used more CPUs than this is flagged as taken on a busy machine.
pub const BUSY_OTHER_CPUS: f64 = 0.25;

/// One run's figures (absent where not measured) and whether it verified.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Figure by key (see [`METRICS`]).
    pub values: BTreeMap<&'static str, f64>,
    /// The client checked every echoed byte and the run was clean.
    pub verified: bool,
    /// Why not, when not.
    pub problem: Option<String>,
}

impl Metrics {
    /// The figures of `run`, or None when it measured nothing.
    pub fn of(run: &Run, case: Case) -> Option<Metrics> {
        let c = run.client.as_ref()?;
        let mut m = Metrics::default();
        let mut put = |k: &'static str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.values.insert(k, v);
            }
        };
        put("msgs_per_sec", c.num("msgs_per_sec"));
        put("mb_per_sec", c.num("mb_per_sec"));
        put(
            "rate_kept",
            case.rate
                .and_then(|r| Some(c.num("msgs_per_sec")? / f64::from(r))),
        );
        put("p50_us", c.num("p50_us"));
        put("p99_us", c.num("p99_us"));
        put("p999_us", c.num("p999_us"));
        put("loss_pct", c.num("loss_pct"));
        put("server_cpu_us_per_msg", c.num("server_cpu_us_per_msg"));
        put("total_cpu_us_per_msg", c.num("machine_cpu_us_per_msg"));
        put("client_cpu_us_per_msg", c.num("client_cpu_us_per_msg"));
        let other = (|| {
            let per_msg = c.num("machine_cpu_us_per_msg")?
                - c.num("server_cpu_us_per_msg")?
                - c.num("client_cpu_us_per_msg")?;
            let window = c.num("window_s").filter(|w| *w > 0.0)?;
            Some((per_msg * c.num("msgs")? / 1e6 / window).max(0.0))
        })();
        put("other_cpus", other);
        let syscalls = match (run.perf_syscalls, &run.counters) {
            (Some(n), _) => c
                .num("msgs_received")
                .filter(|m| *m > 0.0)
                .map(|m| n as f64 / m),
            (None, Some(k)) => {
                let msgs = k.bytes_out as f64 / f64::from(case.size);
                (msgs > 0.0).then(|| k.syscalls as f64 / msgs)
            }
            (None, None) => None,
        };
        put("syscalls_per_msg", syscalls);
        if let Some(k) = &run.counters {
            put(
                "completions_per_enter",
                (k.enters > 0).then(|| k.events as f64 / k.enters as f64),
            );
        }
        put("rss_peak_kib", run.rss_peak_kib.map(|v| v as f64));
        put(
            "tcp_mem_kib",
            run.tcp_mem_peak_kib
                .map(|p| p.saturating_sub(run.tcp_mem_base_kib.unwrap_or(0)) as f64),
        );
        let busy = |per_msg: Option<f64>| {
            let window = c.num("window_s").filter(|w| *w > 0.0)?;
            Some(per_msg? * c.num("msgs")? / 1e6 / window)
        };
        put("server_busy", busy(c.num("server_cpu_us_per_msg")));
        put("client_busy", busy(c.num("client_cpu_us_per_msg")));

        let clean = c.get("error") == Some(&Json::Null);
        let checked = c.get("verify") == Some(&Json::Bool(true));
        m.verified = clean && checked && run.client_exit == Some(0);
        if !m.verified {
            m.problem = Some(match c.str("error") {
                Some(e) => e.to_string(),
                None if !checked => "not verified (--no-verify)".into(),
                None => format!("client exit {:?}", run.client_exit),
            });
        }
        Some(m)
    }
}

/// Median and range of one figure over the rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many runs had the figure.
    pub n: usize,
}

impl Stat {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// As a JSON object.
    pub fn json(&self) -> Json {
        let mut j = Json::obj();
        j.set("median", self.median)
            .set("min", self.min)
            .set("max", self.max)
            .set("n", self.n);
        j
    }
}

/// One server's results in one case.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Figure by key, over the measured rounds (syscalls of external servers: the count pass).
    pub stats: BTreeMap<&'static str, Stat>,
    /// Rounds that verified.
    pub verified: usize,
    /// Rounds that produced a measurement.
    pub measured: usize,
    /// Rounds run (repeated attempts not counted).
    pub rounds: usize,
    /// Attempts repeated because other work made them noisy (left out of the figures).
    pub discarded: usize,
    /// Kept rounds during which other work used more than [`BUSY_OTHER_CPUS`].
    pub busy: usize,
    /// Distinct problems (errors, failed verification), first seen first.
    pub problems: Vec<String>,
}

impl Summary {
    /// Summarises `runs` (measured rounds and any count pass) of one server in one case.
    pub fn of(runs: &[Run], case: Case) -> Summary {
        let mut s = Summary {
            stats: BTreeMap::new(),
            verified: 0,
            measured: 0,
            rounds: 0,
            discarded: 0,
            busy: 0,
            problems: Vec::new(),
        };
        let note = |p: String, problems: &mut Vec<String>| {
            if !problems.contains(&p) {
                problems.push(p);
            }
        };
        let mut rounds: Vec<Metrics> = Vec::new();
        let mut counts: Vec<Metrics> = Vec::new();
        for run in runs {
            if run.discarded.is_some() {
                s.discarded += 1;
                continue;
            }
            if let Some(e) = &run.error {
                note(e.clone(), &mut s.problems);
            }
            let m = Metrics::of(run, case);
            if run.round.is_some() {
                s.rounds += 1;
            }
            let Some(m) = m else { continue };
            if let Some(p) = &m.problem {
                note(p.clone(), &mut s.problems);
            }
            if run.round.is_some() {
                s.measured += 1;
                s.busy += usize::from(
                    m.values
                        .get("other_cpus")
                        .is_some_and(|o| *o > BUSY_OTHER_CPUS),
                );
                s.verified += usize::from(m.verified);
                rounds.push(m);
            } else {
                counts.push(m);
            }
        }
        for &(key, _) in METRICS {
            let mut values: Vec<f64> = rounds
                .iter()
                .filter_map(|m| m.values.get(key))
                .copied()
                .collect();
            if values.is_empty() && key == "syscalls_per_msg" {
                values = counts
                    .iter()
                    .filter_map(|m| m.values.get(key))
                    .copied()
                    .collect();
            }
            if let Some(st) = Stat::of(&values) {
                s.stats.insert(key, st);
            }
        }
        s
    }

    /// The median of `key`.
    pub fn median(&self, key: &str) -> Option<f64> {
        self.stats.get(key).map(|s| s.median)
    }
}
