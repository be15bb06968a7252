//! What a run reports: the human summary, the JSON object, and HdrHistogram's percentile text.

use std::fmt::Write as _;
use std::io;

use hdrhistogram::Histogram;

use super::args::{BenchArgs, ClientBackend};
use super::cpu::CpuUse;
use super::worker::Tally;

/// Everything measured in one run, with the settings it ran with.
pub struct Report {
    /// The flags the run used.
    pub args: BenchArgs,
    /// Client threads.
    pub threads: usize,
    /// Running kernel.
    pub kernel: String,
    /// Latency (ns) of every message completed in the measured window.
    pub hist: Histogram<u64>,
    /// Length of the measured window, seconds.
    pub window_secs: f64,
    /// Counts from every worker.
    pub tally: Tally,
    /// CPU used over the measured window.
    pub cpu: CpuUse,
    /// Why the run failed, if it did (the exit-status-1 line).
    pub failure: Option<String>,
}

impl Report {
    /// Messages completed in the measured window.
    pub fn msgs(&self) -> u64 {
        self.hist.len()
    }

    fn per_sec(&self, n: f64) -> Option<f64> {
        (self.window_secs > 0.0).then(|| n / self.window_secs)
    }

    /// Messages per second.
    pub fn msgs_per_sec(&self) -> Option<f64> {
        self.per_sec(self.msgs() as f64)
    }

    /// Echoed payload, MB (10^6 bytes) per second, each byte counted once.
    pub fn mb_per_sec(&self) -> Option<f64> {
        self.per_sec(self.msgs() as f64 * self.args.size as f64 / 1e6)
    }

    fn per_msg(&self, v: Option<u64>) -> Option<f64> {
        let m = self.msgs();
        (m > 0).then_some(v? as f64 / m as f64)
    }

    /// Client process CPU µs per message.
    pub fn client_cpu_per_msg(&self) -> Option<f64> {
        self.per_msg(Some(self.cpu.process_us))
    }

    /// Whole-machine busy CPU µs per message.
    pub fn machine_cpu_per_msg(&self) -> Option<f64> {
        self.per_msg(self.cpu.machine_us)
    }

    /// Server process CPU µs per message (with `--server-pid`).
    pub fn server_cpu_per_msg(&self) -> Option<f64> {
        self.per_msg(self.cpu.server_us)
    }

    /// Client syscalls per message.
    pub fn syscalls_per_msg(&self) -> Option<f64> {
        self.per_msg(Some(self.tally.window_syscalls))
    }

    /// Client CPU as a fraction of one CPU.
    pub fn client_cpu_util(&self) -> Option<f64> {
        (self.cpu.wall_secs > 0.0).then(|| self.cpu.process_us as f64 / 1e6 / self.cpu.wall_secs)
    }

    /// Latency at quantile `q`, µs.
    fn lat_us(&self, q: f64) -> Option<f64> {
        (self.msgs() > 0).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    fn max_us(&self) -> Option<f64> {
        (self.msgs() > 0).then(|| self.hist.max() as f64 / 1000.0)
    }

    fn mean_us(&self) -> Option<f64> {
        (self.msgs() > 0).then(|| self.hist.mean() / 1000.0)
    }

    fn mode(&self) -> &'static str {
        if self.args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }

    fn latency_from(&self) -> &'static str {
        if self.args.rate.is_some() {
            "intended"
        } else {
            "send"
        }
    }

    fn transport(&self) -> &'static str {
        if self.args.udp { "udp" } else { "tcp" }
    }

    fn protocol(&self) -> &'static str {
        if self.args.framed { "framed" } else { "echo" }
    }

    /// UDP: datagrams lost, as a percentage of those sent (whole run).
    pub fn loss_pct(&self) -> Option<f64> {
        let t = &self.tally;
        (self.args.udp && t.msgs_sent > 0)
            .then(|| t.dgrams_lost as f64 * 100.0 / t.msgs_sent as f64)
    }

    /// A UDP-only count: `None` for TCP runs.
    fn udp_count(&self, v: u64) -> Option<f64> {
        self.args.udp.then_some(v as f64)
    }

    fn backend_name(&self) -> &'static str {
        match self.args.backend {
            ClientBackend::Uring => "io_uring",
            ClientBackend::Epoll => "epoll",
            ClientBackend::Threads => "blocking threads",
        }
    }

    /// What the run was, for a chart: a title (the load) and a subtitle (where, how, how much).
    pub fn chart_titles(&self) -> (String, String) {
        let a = &self.args;
        let what = if a.udp {
            format!("{} UDP sockets × {} B datagrams", a.conns, a.size)
        } else if a.framed {
            format!("{} conns × {} B frames", a.conns, a.size)
        } else {
            format!("{} conns × {} B", a.conns, a.size)
        };
        let title = format!(
            "Latency by percentile: {what}, depth {}, {}",
            a.depth,
            match a.rate {
                Some(r) => format!("open loop at {} msgs/s", group(r.round() as u64)),
                None => "closed loop".into(),
            }
        );
        let subtitle = format!(
            "ringecho bench {} · {} client, {} thread{} · {:.1} s after {:.1} s warm-up · {} msgs \
             at {} msgs/s · latency from each message's {} time",
            a.addr,
            self.backend_name(),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.window_secs,
            a.warmup.as_secs_f64(),
            group(self.msgs()),
            opt(self.msgs_per_sec().map(|v| group(v.round() as u64))),
            if a.rate.is_some() {
                "intended send"
            } else {
                "send"
            },
        );
        (title, subtitle)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let a = &self.args;
        let t = &self.tally;
        let mut s = String::new();
        let loop_desc = match a.rate {
            Some(r) => format!("open loop at {} msgs/s", group(r.round() as u64)),
            None => "closed loop".into(),
        };
        let what = if a.udp {
            format!("{} UDP sockets x {} B datagrams", a.conns, a.size)
        } else if a.framed {
            format!("{} conns x {} B frames", a.conns, a.size)
        } else {
            format!("{} conns x {} B", a.conns, a.size)
        };
        let _ = writeln!(
            s,
            "ringecho bench {}: {} client, {} thread{}, {what}, depth {}, {loop_desc}, \
             {:.1} s after {:.1} s warmup, {}",
            a.addr,
            self.backend_name(),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            a.depth,
            a.duration.as_secs_f64(),
            a.warmup.as_secs_f64(),
            if a.no_verify {
                "not verified"
            } else {
                "verified"
            },
        );
        let _ = writeln!(
            s,
            "  throughput  {} msgs/s  {} MB/s  ({} msgs in {:.2} s)",
            opt(self.msgs_per_sec().map(|v| group(v.round() as u64))),
            opt(self.mb_per_sec().map(|v| format!("{v:.1}"))),
            group(self.msgs()),
            self.window_secs
        );
        let us = |v: Option<f64>| opt(v.map(|v| format!("{v:.1}")));
        let _ = writeln!(
            s,
            "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (from each {}'s {} time{})",
            us(self.lat_us(0.5)),
            us(self.lat_us(0.9)),
            us(self.lat_us(0.99)),
            us(self.lat_us(0.999)),
            us(self.max_us()),
            if a.udp { "datagram" } else { "message" },
            if a.rate.is_some() {
                "intended send"
            } else {
                "send"
            },
            if a.udp { "; echoed ones only" } else { "" }
        );
        if a.udp {
            let _ = writeln!(
                s,
                "  datagrams   {} sent, {} echoed, {} lost ({}; not echoed within {} s), {} \
                 late, {} duplicate, {} reordered (whole run)",
                group(t.msgs_sent),
                group(t.msgs_received),
                group(t.dgrams_lost),
                opt(self.loss_pct().map(|v| format!("{v:.3}%"))),
                a.loss_timeout().as_secs_f64(),
                group(t.dgrams_late),
                group(t.dgrams_duplicate),
                group(t.dgrams_reordered),
            );
        }
        let _ = writeln!(
            s,
            "  errors      {}  (connect failures {}, resets {}, short reads {}, timeouts {}, \
             verification {}, other {})",
            t.errors(),
            t.connect_failures(),
            t.resets,
            t.short_reads,
            t.timeouts,
            t.verify_errors,
            t.other_errors
        );
        let mut cpu = format!(
            "  cpu/msg     client {} µs ({} of one CPU)",
            opt(self.client_cpu_per_msg().map(|v| format!("{v:.2}"))),
            opt(self.client_cpu_util().map(|v| format!("{:.0}%", v * 100.0)))
        );
        if let Some(v) = self.server_cpu_per_msg() {
            let _ = write!(cpu, "  server {v:.2} µs");
        }
        let _ = write!(
            cpu,
            "  machine {} µs (all CPUs)",
            opt(self.machine_cpu_per_msg().map(|v| format!("{v:.2}")))
        );
        let _ = writeln!(s, "{cpu}");
        let _ = writeln!(
            s,
            "  client      {} syscalls/msg; {} {}; {} msgs sent, {} echoed (whole run)",
            opt(self.syscalls_per_msg().map(|v| format!("{v:.3}"))),
            t.established,
            if a.udp {
                "UDP sockets"
            } else {
                "conns established"
            },
            group(t.msgs_sent),
            group(t.msgs_received)
        );
        s
    }

    /// One JSON object (no trailing newline). Field names are documented in the README.
    pub fn json(&self) -> String {
        let a = &self.args;
        let t = &self.tally;
        let mut j = JsonObject::default();
        j.str("version", env!("CARGO_PKG_VERSION"));
        j.str("kernel", &self.kernel);
        j.str("addr", &a.addr.to_string());
        j.str("backend", &a.backend.to_string());
        j.str("mode", self.mode());
        j.num("conns", a.conns as f64);
        j.num("size", a.size as f64);
        j.num("depth", f64::from(a.depth));
        j.num("threads", self.threads as f64);
        j.num("duration_s", a.duration.as_secs_f64());
        j.num("warmup_s", a.warmup.as_secs_f64());
        j.opt("rate", a.rate);
        j.bool("verify", !a.no_verify);
        j.num("window_s", self.window_secs);
        j.num("msgs", self.msgs() as f64);
        j.opt("msgs_per_sec", self.msgs_per_sec());
        j.opt("mb_per_sec", self.mb_per_sec());
        j.str("latency_from", self.latency_from());
        j.opt("p50_us", self.lat_us(0.5));
        j.opt("p90_us", self.lat_us(0.9));
        j.opt("p99_us", self.lat_us(0.99));
        j.opt("p999_us", self.lat_us(0.999));
        j.opt("max_us", self.max_us());
        j.opt("mean_us", self.mean_us());
        j.num("msgs_sent", t.msgs_sent as f64);
        j.num("msgs_received", t.msgs_received as f64);
        j.num("conns_established", t.established as f64);
        j.num("errors", t.errors() as f64);
        j.num("connect_failures", t.connect_failures() as f64);
        j.num("refused", t.refused as f64);
        j.num("connect_timeouts", t.connect_timeouts as f64);
        j.num("resets", t.resets as f64);
        j.num("short_reads", t.short_reads as f64);
        j.num("timeouts", t.timeouts as f64);
        j.num("verify_errors", t.verify_errors as f64);
        j.num("other_errors", t.other_errors as f64);
        j.opt("client_cpu_us_per_msg", self.client_cpu_per_msg());
        j.opt("client_cpu_util", self.client_cpu_util());
        j.opt("machine_cpu_us_per_msg", self.machine_cpu_per_msg());
        j.opt("server_cpu_us_per_msg", self.server_cpu_per_msg());
        j.opt("syscalls_per_msg", self.syscalls_per_msg());
        j.str("transport", self.transport());
        j.str("protocol", self.protocol());
        j.opt(
            "udp_loss_timeout_s",
            a.udp.then(|| a.loss_timeout().as_secs_f64()),
        );
        j.opt("dgrams_lost", self.udp_count(t.dgrams_lost));
        j.opt("loss_pct", self.loss_pct());
        j.opt("dgrams_late", self.udp_count(t.dgrams_late));
        j.opt("dgrams_duplicate", self.udp_count(t.dgrams_duplicate));
        j.opt("dgrams_reordered", self.udp_count(t.dgrams_reordered));
        match &self.failure {
            Some(f) => j.str("error", f),
            None => j.null("error"),
        }
        j.finish()
    }
}

/// The JSON field names, in order: the `--json` schema. The README lists each (tests/docs.rs
/// checks it) and tests/bench.rs checks a run's output has exactly these.
pub const JSON_FIELDS: &[&str] = &[
    "version",
    "kernel",
    "addr",
    "backend",
    "mode",
    "conns",
    "size",
    "depth",
    "threads",
    "duration_s",
    "warmup_s",
    "rate",
    "verify",
    "window_s",
    "msgs",
    "msgs_per_sec",
    "mb_per_sec",
    "latency_from",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "mean_us",
    "msgs_sent",
    "msgs_received",
    "conns_established",
    "errors",
    "connect_failures",
    "refused",
    "connect_timeouts",
    "resets",
    "short_reads",
    "timeouts",
    "verify_errors",
    "other_errors",
    "client_cpu_us_per_msg",
    "client_cpu_util",
    "machine_cpu_us_per_msg",
    "server_cpu_us_per_msg",
    "syscalls_per_msg",
    "transport",
    "protocol",
    "udp_loss_timeout_s",
    "dgrams_lost",
    "loss_pct",
    "dgrams_late",
    "dgrams_duplicate",
    "dgrams_reordered",
    "error",
];

pub(crate) fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

/// `1234567` as `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A flat JSON object written by hand: strings are escaped, non-finite numbers become null.
#[derive(Default)]
pub(crate) struct JsonObject {
    s: String,
}

impl JsonObject {
    pub(crate) fn key(&mut self, k: &str) {
        self.s.push(if self.s.is_empty() { '{' } else { ',' });
        escape_into(&mut self.s, k);
        self.s.push(':');
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape_into(&mut self.s, v);
    }

    pub(crate) fn num(&mut self, k: &str, v: f64) {
        self.key(k);
        if !v.is_finite() {
            self.s.push_str("null");
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            let _ = write!(self.s, "{}", v as i64);
        } else {
            let _ = write!(self.s, "{v}");
        }
    }

    pub(crate) fn opt(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.null(k),
        }
    }

    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.s.push_str(if v { "true" } else { "false" });
    }

    pub(crate) fn null(&mut self, k: &str) {
        self.key(k);
        self.s.push_str("null");
    }

    pub(crate) fn finish(mut self) -> String {
        if self.s.is_empty() {
            self.s.push('{');
        }
        self.s.push('}');
        self.s
    }
}

/// Appends `v` to `out` as a JSON string literal (quoted and escaped). Shared with the
/// comparison harness (`benches/compare`), which writes its own JSON documents.
pub fn escape_into(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `hist` (ns) as HdrHistogram's percentile distribution text, values in milliseconds,
/// 5 ticks per half distance: the layout of Java's `outputPercentileDistribution`, which
/// HdrHistogram's plotter reads.
pub fn write_hgrm(hist: &Histogram<u64>, w: &mut dyn io::Write) -> io::Result<()> {
    const SCALE: f64 = 1e6;
    writeln!(
        w,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for v in hist.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / SCALE;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            writeln!(
                w,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(w, "{value:12.3} {q:2.12} {total:10}")?;
        }
    }
    let (mean, stdev, max) = if hist.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            hist.mean() / SCALE,
            hist.stdev() / SCALE,
            hist.max() as f64 / SCALE,
        )
    };
    writeln!(w, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]")?;
    writeln!(
        w,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        hist.len()
    )?;
    // Sub-buckets per bucket: the power of two that resolves `sigfig` decimal digits.
    let sub_buckets = (2.0 * 10f64.powi(i32::from(hist.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    writeln!(
        w,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_buckets
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::worker::new_hist;

    #[test]
    fn json_escapes_and_nulls() {
        let mut j = JsonObject::default();
        j.str("a", "x\"y\\z\n\u{1}");
        j.num("n", 3.0);
        j.num("f", 2.5);
        j.num("nan", f64::NAN);
        j.opt("none", None);
        j.bool("t", true);
        assert_eq!(
            j.finish(),
            r#"{"a":"x\"y\\z\n\u0001","n":3,"f":2.5,"nan":null,"none":null,"t":true}"#
        );
        assert_eq!(JsonObject::default().finish(), "{}");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn hgrm_has_the_java_layout() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .skip(2)
            .collect();
        let last = rows.last().unwrap();
        let cols: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "last row has no 1/(1-p) column: {last}");
        assert_eq!(cols[1], "1.000000000000");
        assert_eq!(cols[2], "1000");
        assert!(text.contains("#[Max     =        1.000, Total count    =         1000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }
}
