//! `ringecho report`: reads HdrHistogram interval logs (`ringecho bench --hlog`) from any number
//! of runs, typically load generators on several machines that measured the same window
//! (`--start-at`), and merges them into one histogram and one summary.
//!
//! - **Messages and percentiles** come from one histogram fed with every interval of every log:
//!   adding HdrHistogram histograms of the same layout is exact, so the percentiles are those
//!   one histogram recording every run's latencies would give.
//! - **Throughput** is summed over the *common window*: from the latest first interval start to
//!   the earliest last interval end across the logs. An interval partly outside it counts in
//!   proportion to its overlap (runs started with one `--start-at` share whole-second intervals,
//!   so nothing is prorated there).
//! - **Settings** come from the `#[ringecho bench settings: ...]` comment each log carries:
//!   connections, threads and open-loop rates add up; a setting the runs disagree on is null.
//!   Logs written by other tools have no such comment; their values are taken as nanoseconds.
//!
//! Interval timestamps are read as HdrHistogram's own log reader reads them: relative to the
//! log's `BaseTime` when it has one, else relative to its `StartTime` when they are much smaller
//! than it, else as seconds since 1970.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use super::args::BenchArgs;
use super::report::{JsonObject, group, opt};
use super::worker::new_hist;

/// The comment that carries a run's settings (`key=value` words follow it).
pub const SETTINGS_COMMENT: &str = "[ringecho bench settings:";

/// The `--json` fields of `ringecho report`, in order. The README lists each (tests/docs.rs
/// checks it); they mean what the same names mean in `ringecho bench --json`, summed or merged
/// over the runs.
pub const REPORT_JSON_FIELDS: &[&str] = &[
    "version",
    "runs",
    "addr",
    "mode",
    "conns",
    "size",
    "depth",
    "threads",
    "rate",
    "verify",
    "transport",
    "protocol",
    "window_start",
    "window_s",
    "window_msgs",
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
    "intervals",
];

/// What a run was, as its log's settings comment says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// Server address.
    pub addr: String,
    /// Connections.
    pub conns: u64,
    /// Message size, bytes.
    pub size: u64,
    /// Messages in flight per connection.
    pub depth: u64,
    /// Client threads.
    pub threads: u64,
    /// Open-loop rate, messages per second (`None`: closed loop).
    pub rate: Option<f64>,
    /// Echoed bytes were checked.
    pub verify: bool,
    /// `tcp` or `udp`.
    pub transport: String,
    /// `echo` or `framed`.
    pub protocol: String,
}

/// The settings comment for a run of `args` with `threads` client threads (without the `#`).
pub fn settings_comment(args: &BenchArgs, threads: usize) -> String {
    format!(
        "{SETTINGS_COMMENT} addr={} conns={} size={} depth={} threads={threads} rate={} \
         verify={} transport={} protocol={}]",
        args.addr,
        args.conns,
        args.size,
        args.depth,
        args.rate.map_or("-".into(), |r| r.to_string()),
        !args.no_verify,
        if args.udp { "udp" } else { "tcp" },
        if args.framed { "framed" } else { "echo" },
    )
}

/// Reads the settings comment out of a log's text, if it has one.
pub fn parse_settings(text: &str) -> Option<Settings> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix('#')?.strip_prefix(SETTINGS_COMMENT))?;
    let mut s = Settings::default();
    for word in line.trim_end_matches(']').split_whitespace() {
        let (k, v) = word.split_once('=')?;
        match k {
            "addr" => s.addr = v.to_string(),
            "conns" => s.conns = v.parse().ok()?,
            "size" => s.size = v.parse().ok()?,
            "depth" => s.depth = v.parse().ok()?,
            "threads" => s.threads = v.parse().ok()?,
            "rate" => {
                s.rate = if v == "-" {
                    None
                } else {
                    Some(v.parse().ok()?)
                }
            }
            "verify" => s.verify = v == "true",
            "transport" => s.transport = v.to_string(),
            "protocol" => s.protocol = v.to_string(),
            _ => {}
        }
    }
    Some(s)
}

/// One interval of one log.
#[derive(Clone, Debug)]
pub struct Interval {
    /// Start, seconds since 1970.
    pub start: f64,
    /// Length, seconds.
    pub secs: f64,
    /// Latencies, ns.
    pub hist: Histogram<u64>,
}

/// One run's log.
#[derive(Clone, Debug)]
pub struct RunLog {
    /// Where it came from (the path as given).
    pub name: String,
    /// Its settings comment, if it has one.
    pub settings: Option<Settings>,
    /// Its intervals, in log order.
    pub intervals: Vec<Interval>,
}

impl RunLog {
    /// From the first interval's start to the last one's end, seconds since 1970.
    pub fn window(&self) -> Option<(f64, f64)> {
        let from = self.intervals.iter().map(|i| i.start).reduce(f64::min)?;
        let to = self
            .intervals
            .iter()
            .map(|i| i.start + i.secs)
            .reduce(f64::max)?;
        Some((from, to))
    }

    /// Messages recorded in all its intervals.
    pub fn msgs(&self) -> u64 {
        self.intervals.iter().map(|i| i.hist.len()).sum()
    }
}

/// Reads one interval log; the error is the one line to exit with.
pub fn read(path: &Path) -> Result<RunLog, String> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    parse(&name, &bytes)
}

/// Parses the bytes of an interval log called `name`.
pub fn parse(name: &str, bytes: &[u8]) -> Result<RunLog, String> {
    let mut start_time = None;
    let mut base_time = None;
    let mut raw = Vec::new();
    for entry in IntervalLogIterator::new(bytes) {
        match entry {
            Ok(LogEntry::StartTime(t)) => start_time = Some(t.as_secs_f64()),
            Ok(LogEntry::BaseTime(t)) => base_time = Some(t.as_secs_f64()),
            Ok(LogEntry::Interval(i)) => raw.push((
                i.start_timestamp().as_secs_f64(),
                i.duration().as_secs_f64(),
                i.encoded_histogram(),
            )),
            Err(_) => {
                let (line, _) = line_at(bytes, bytes.len().min(error_offset(bytes)));
                return Err(format!(
                    "{name}: not an HdrHistogram interval log (line {line} does not parse; \
                     `ringecho bench --hlog` writes them)"
                ));
            }
        }
    }
    if raw.is_empty() && start_time.is_none() && base_time.is_none() {
        return Err(format!(
            "{name}: not an HdrHistogram interval log (no StartTime and no intervals; \
             `ringecho bench --hlog` writes them)"
        ));
    }
    // HdrHistogram's reader: BaseTime if given; else StartTime when the timestamps are deltas
    // (more than a year smaller than it); else the timestamps are absolute.
    const YEAR: f64 = 365.25 * 86_400.0;
    let first = raw.first().map_or(0.0, |r| r.0);
    let base = match (base_time, start_time) {
        (Some(b), _) => b,
        (None, Some(s)) if first < s - YEAR => s,
        _ => 0.0,
    };
    let mut d = Deserializer::new();
    let mut intervals = Vec::with_capacity(raw.len());
    for (k, (ts, secs, encoded)) in raw.into_iter().enumerate() {
        let decoded = base64_decode(encoded)
            .ok_or_else(|| format!("{name}: interval {}: the histogram is not base64", k + 1))?;
        let hist: Histogram<u64> = d.deserialize(&mut decoded.as_slice()).map_err(|e| {
            format!(
                "{name}: interval {}: the histogram does not decode: {e:?}",
                k + 1
            )
        })?;
        intervals.push(Interval {
            start: base + ts,
            secs,
            hist,
        });
    }
    let settings = std::str::from_utf8(bytes).ok().and_then(parse_settings);
    Ok(RunLog {
        name: name.to_string(),
        settings,
        intervals,
    })
}

/// Where the interval-log parser gave up: the first line that is neither a comment, a legend,
/// a header nor an interval.
fn error_offset(bytes: &[u8]) -> usize {
    let mut at = 0;
    for line in bytes.split(|&b| b == b'\n') {
        let mut one = line.to_vec();
        one.push(b'\n');
        if matches!(IntervalLogIterator::new(&one).next(), Some(Err(_))) {
            return at;
        }
        at += line.len() + 1;
    }
    bytes.len()
}

/// The 1-based line number and column of byte `offset`.
fn line_at(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

/// Standard base64 with or without padding; `None` for anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let body = s.trim_end_matches('=').as_bytes();
    if body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * k);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// Several runs merged.
pub struct Merged {
    /// The runs, in the order given.
    pub runs: Vec<RunLog>,
    /// Every interval of every run in one histogram (ns).
    pub hist: Histogram<u64>,
    /// The window common to every run that recorded anything, seconds since 1970.
    pub window: Option<(f64, f64)>,
    /// Each run's messages inside the common window (intervals prorated by overlap).
    pub window_msgs: Vec<f64>,
}

/// Merges runs into one histogram and one window.
pub fn merge(runs: Vec<RunLog>) -> Merged {
    let mut hist = new_hist();
    // A foreign log may hold values beyond ringecho's hour; let the histogram grow for them.
    hist.auto(true);
    for r in &runs {
        for i in &r.intervals {
            // Same layout (or auto-resizing): adding cannot fail.
            let _ = hist.add(&i.hist);
        }
    }
    let windows: Vec<(f64, f64)> = runs.iter().filter_map(RunLog::window).collect();
    let from = windows.iter().map(|w| w.0).reduce(f64::max);
    let to = windows.iter().map(|w| w.1).reduce(f64::min);
    let window = match (from, to) {
        (Some(a), Some(b)) if b > a => Some((a, b)),
        _ => None,
    };
    let window_msgs = runs
        .iter()
        .map(|r| match window {
            None => 0.0,
            Some((a, b)) => r
                .intervals
                .iter()
                .map(|i| {
                    let overlap = (i.start + i.secs).min(b) - i.start.max(a);
                    if i.secs <= 0.0 || overlap <= 0.0 {
                        0.0
                    } else {
                        i.hist.len() as f64 * (overlap / i.secs).min(1.0)
                    }
                })
                .sum(),
        })
        .collect();
    Merged {
        runs,
        hist,
        window,
        window_msgs,
    }
}

/// The value every run agrees on, or `None` (a run without settings disagrees).
fn agreed<T: PartialEq + Clone>(runs: &[RunLog], f: impl Fn(&Settings) -> T) -> Option<T> {
    let mut v: Option<T> = None;
    for r in runs {
        let x = f(r.settings.as_ref()?);
        match &v {
            Some(y) if *y != x => return None,
            _ => v = Some(x),
        }
    }
    v
}

/// The sum over runs, or `None` if a run has no settings.
fn summed(runs: &[RunLog], f: impl Fn(&Settings) -> f64) -> Option<f64> {
    runs.iter()
        .map(|r| r.settings.as_ref().map(&f))
        .sum::<Option<f64>>()
        .filter(|_| !runs.is_empty())
}

impl Merged {
    /// Messages in all intervals of all runs.
    pub fn msgs(&self) -> u64 {
        self.hist.len()
    }

    /// Length of the common window, seconds.
    pub fn window_secs(&self) -> Option<f64> {
        self.window.map(|(a, b)| b - a)
    }

    /// Messages of every run inside the common window.
    pub fn window_msgs(&self) -> f64 {
        self.window_msgs.iter().sum()
    }

    /// Messages per second, summed over the runs, in the common window.
    pub fn msgs_per_sec(&self) -> Option<f64> {
        self.window_secs().map(|s| self.window_msgs() / s)
    }

    /// MB (10^6 bytes) per second in the common window, when every run used one size.
    pub fn mb_per_sec(&self) -> Option<f64> {
        Some(self.msgs_per_sec()? * self.size()? as f64 / 1e6)
    }

    fn size(&self) -> Option<u64> {
        agreed(&self.runs, |s| s.size)
    }

    fn mode(&self) -> Option<&'static str> {
        agreed(&self.runs, |s| s.rate.is_some()).map(|open| if open { "open" } else { "closed" })
    }

    fn lat_us(&self, q: f64) -> Option<f64> {
        (self.msgs() > 0).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    fn max_us(&self) -> Option<f64> {
        (self.msgs() > 0).then(|| self.hist.max() as f64 / 1000.0)
    }

    fn mean_us(&self) -> Option<f64> {
        (self.msgs() > 0).then(|| self.hist.mean() / 1000.0)
    }

    /// A chart title and subtitle for the merged curve.
    pub fn chart_titles(&self) -> (String, String) {
        let r = &self.runs;
        let what = match (summed(r, |s| s.conns as f64), self.size()) {
            (Some(c), Some(size)) => format!("{c} conns × {size} B in all"),
            (Some(c), None) => format!("{c} conns in all"),
            _ => "merged runs".into(),
        };
        let title = format!(
            "Latency by percentile: {} run{}, {what}, {}",
            r.len(),
            if r.len() == 1 { "" } else { "s" },
            match self.mode() {
                Some("open") => format!(
                    "open loop at {} msgs/s",
                    opt(summed(r, |s| s.rate.unwrap_or(0.0)).map(|v| group(v.round() as u64)))
                ),
                Some(m) => format!("{m} loop"),
                None => "mixed loops".into(),
            }
        );
        let subtitle = format!(
            "ringecho report · {} msgs merged · {} msgs/s summed over the {} s common window",
            group(self.msgs()),
            opt(self.msgs_per_sec().map(|v| group(v.round() as u64))),
            opt(self.window_secs().map(|v| format!("{v:.1}"))),
        );
        (title, subtitle)
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let (title, _) = self.chart_titles();
        let _ = writeln!(
            s,
            "ringecho report: {}",
            title.trim_start_matches("Latency by percentile: ")
        );
        match self.window {
            Some((a, b)) => {
                let _ = writeln!(
                    s,
                    "  window      {:.2} s common to every run, from {a:.3} (seconds since 1970)",
                    b - a
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  window      none common to every run: throughput is not given"
                );
            }
        }
        let _ = writeln!(
            s,
            "  throughput  {} msgs/s  {} MB/s  (summed over the runs in the common window; \
             {} msgs in all)",
            opt(self.msgs_per_sec().map(|v| group(v.round() as u64))),
            opt(self.mb_per_sec().map(|v| format!("{v:.1}"))),
            group(self.msgs())
        );
        let us = |v: Option<f64>| opt(v.map(|v| format!("{v:.1}")));
        let _ = writeln!(
            s,
            "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (every run's messages merged)",
            us(self.lat_us(0.5)),
            us(self.lat_us(0.9)),
            us(self.lat_us(0.99)),
            us(self.lat_us(0.999)),
            us(self.max_us()),
        );
        for (r, in_window) in self.runs.iter().zip(&self.window_msgs) {
            let _ = writeln!(
                s,
                "  run         {}: {} msgs in {} intervals, {} in the common window{}",
                r.name,
                group(r.msgs()),
                r.intervals.len(),
                group(in_window.round() as u64),
                if r.settings.is_none() {
                    " (no ringecho settings: values taken as ns)"
                } else {
                    ""
                }
            );
        }
        s
    }

    /// One JSON object with [`REPORT_JSON_FIELDS`].
    pub fn json(&self) -> String {
        let r = &self.runs;
        let mut j = JsonObject::default();
        j.str("version", env!("CARGO_PKG_VERSION"));
        j.num("runs", r.len() as f64);
        match agreed(r, |s| s.addr.clone()) {
            Some(a) => j.str("addr", &a),
            None => j.null("addr"),
        }
        match self.mode() {
            Some(m) => j.str("mode", m),
            None => j.null("mode"),
        }
        j.opt("conns", summed(r, |s| s.conns as f64));
        j.opt("size", self.size().map(|v| v as f64));
        j.opt("depth", agreed(r, |s| s.depth).map(|v| v as f64));
        j.opt("threads", summed(r, |s| s.threads as f64));
        j.opt(
            "rate",
            (self.mode() == Some("open"))
                .then(|| summed(r, |s| s.rate.unwrap_or(0.0)))
                .flatten(),
        );
        match agreed(r, |s| s.verify) {
            Some(v) => j.bool("verify", v),
            None => j.null("verify"),
        }
        for (k, v) in [
            ("transport", agreed(r, |s| s.transport.clone())),
            ("protocol", agreed(r, |s| s.protocol.clone())),
        ] {
            match v {
                Some(v) => j.str(k, &v),
                None => j.null(k),
            }
        }
        j.opt("window_start", self.window.map(|w| w.0));
        j.opt("window_s", self.window_secs());
        j.num("window_msgs", self.window_msgs());
        j.num("msgs", self.msgs() as f64);
        j.opt("msgs_per_sec", self.msgs_per_sec());
        j.opt("mb_per_sec", self.mb_per_sec());
        match self.mode() {
            Some("open") => j.str("latency_from", "intended"),
            Some(_) => j.str("latency_from", "send"),
            None => j.null("latency_from"),
        }
        j.opt("p50_us", self.lat_us(0.5));
        j.opt("p90_us", self.lat_us(0.9));
        j.opt("p99_us", self.lat_us(0.99));
        j.opt("p999_us", self.lat_us(0.999));
        j.opt("max_us", self.max_us());
        j.opt("mean_us", self.mean_us());
        j.num(
            "intervals",
            r.iter().map(|r| r.intervals.len()).sum::<usize>() as f64,
        );
        j.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use std::time::{Duration, SystemTime};

    /// A log as `ringecho bench --hlog` writes it: StartTime = BaseTime = `start`, one interval
    /// per second with the given values (ns), and a settings comment.
    fn log(start: f64, seconds: &[&[u64]], settings: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(start);
        let mut b = IntervalLogWriterBuilder::new();
        if let Some(s) = settings {
            b.add_comment(s);
        }
        let mut w = b
            .with_start_time(t)
            .with_base_time(t)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut out, &mut ser)
            .unwrap();
        for (k, values) in seconds.iter().enumerate() {
            let mut h = new_hist();
            for &v in *values {
                h.record(v).unwrap();
            }
            w.write_histogram(
                &h,
                Duration::from_secs(k as u64),
                Duration::from_secs(1),
                None,
            )
            .unwrap();
        }
        drop(w);
        out
    }

    const SETTINGS: &str = "[ringecho bench settings: addr=127.0.0.1:7 conns=10 size=128 depth=1 \
                            threads=2 rate=- verify=true transport=tcp protocol=echo]";

    #[test]
    fn merging_equals_one_histogram_of_every_value_and_sums_throughput() {
        let a = parse("a", &log(1000.0, &[&[1000, 2000], &[3000]], Some(SETTINGS))).unwrap();
        let b = parse(
            "b",
            &log(1000.0, &[&[5000], &[7000, 9000, 11000]], Some(SETTINGS)),
        )
        .unwrap();
        assert_eq!(a.window(), Some((1000.0, 1002.0)));
        assert_eq!(a.settings.as_ref().unwrap().conns, 10);
        let m = merge(vec![a, b]);
        let mut one = new_hist();
        for v in [1000, 2000, 3000, 5000, 7000, 9000, 11000] {
            one.record(v).unwrap();
        }
        assert_eq!(m.msgs(), 7);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(m.hist.value_at_quantile(q), one.value_at_quantile(q), "{q}");
        }
        assert_eq!(m.window, Some((1000.0, 1002.0)));
        assert_eq!(m.msgs_per_sec(), Some(3.5));
        let j = m.json();
        assert!(
            j.contains("\"conns\":20,") && j.contains("\"threads\":4,"),
            "{j}"
        );
        assert!(
            j.contains("\"size\":128,") && j.contains("\"mode\":\"closed\""),
            "{j}"
        );
        assert!(
            j.contains("\"msgs\":7,") && j.contains("\"runs\":2,"),
            "{j}"
        );
        assert_eq!(j.matches("\":").count(), REPORT_JSON_FIELDS.len());
    }

    #[test]
    fn throughput_counts_only_the_common_window() {
        // a: 1000..1003, b: 1001..1003; common 1001..1003.
        let a = parse("a", &log(1000.0, &[&[1; 4], &[1; 2], &[1; 2]], None)).unwrap();
        let b = parse("b", &log(1001.0, &[&[1; 6], &[1; 6]], None)).unwrap();
        let m = merge(vec![a, b]);
        assert_eq!(m.window, Some((1001.0, 1003.0)));
        assert_eq!(m.window_msgs, [4.0, 12.0]);
        assert_eq!(m.msgs_per_sec(), Some(8.0));
        assert_eq!(m.msgs(), 20);
        assert_eq!(m.mb_per_sec(), None, "no settings: no size");
        // Disjoint windows: no throughput, percentiles all the same.
        let c = parse("c", &log(2000.0, &[&[1]], None)).unwrap();
        let d = parse("d", &log(3000.0, &[&[1]], None)).unwrap();
        let m = merge(vec![c, d]);
        assert_eq!((m.window, m.msgs_per_sec(), m.msgs()), (None, None, 2));
        assert!(m.summary().contains("none common to every run"));
    }

    #[test]
    fn settings_disagreeing_are_null_and_settings_round_trip() {
        let other = SETTINGS
            .replace("size=128", "size=64")
            .replace("rate=-", "rate=500");
        let a = parse("a", &log(1.0e9, &[&[1]], Some(SETTINGS))).unwrap();
        let b = parse("b", &log(1.0e9, &[&[1]], Some(&other))).unwrap();
        let j = merge(vec![a, b]).json();
        assert!(
            j.contains("\"size\":null") && j.contains("\"mode\":null"),
            "{j}"
        );
        assert!(j.contains("\"addr\":\"127.0.0.1:7\""), "{j}");
        let s = parse_settings(&format!("#{other}\n")).unwrap();
        assert_eq!((s.size, s.rate, s.verify), (64, Some(500.0), true));
    }

    #[test]
    fn absolute_timestamps_without_base_time_are_read_as_such() {
        let text = "#[StartTime: 1700000000.000 (seconds since epoch)]\n";
        let log = parse("x", text.as_bytes()).unwrap();
        assert!(log.intervals.is_empty());
        let l = log_with_absolute(1_700_000_005.0);
        let r = parse("abs", l.as_bytes()).unwrap();
        assert_eq!(r.intervals[0].start, 1_700_000_005.0);
    }

    fn log_with_absolute(ts: f64) -> String {
        let mut h = new_hist();
        h.record(1000).unwrap();
        let mut v = Vec::new();
        hdrhistogram::serialization::Serializer::serialize(
            &mut V2DeflateSerializer::new(),
            &h,
            &mut v,
        )
        .unwrap();
        format!(
            "#[StartTime: 1700000000.000 (seconds since epoch)]\n{ts:.3},1.000,0.001,{}\n",
            base64_encode(&v)
        )
    }

    fn base64_encode(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (k, &x)| n | u32::from(x) << (16 - 8 * k));
            for k in 0..=c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            }
        }
        while !s.len().is_multiple_of(4) {
            s.push('=');
        }
        s
    }

    #[test]
    fn what_is_not_a_log_is_refused_in_one_line() {
        let e = parse("notes.txt", b"hello\nworld\n").unwrap_err();
        assert!(
            e.starts_with("notes.txt: not an HdrHistogram interval log (line 1"),
            "{e}"
        );
        let e = parse("empty", b"").unwrap_err();
        assert!(e.contains("no StartTime"), "{e}");
        let e = parse(
            "bad",
            b"#[StartTime: 1.000 (seconds since epoch)]\n0.0,1.0,1.0,!!!!\n",
        )
        .unwrap_err();
        assert!(e.contains("interval 1") || e.contains("line 2"), "{e}");
        assert!(!e.contains('\n'));
        let e = read(Path::new("/nonexistent/x.hlog")).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/x.hlog: "), "{e}");
    }

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        assert_eq!(base64_decode("SGVsbG8=").unwrap(), b"Hello");
        assert_eq!(base64_decode("SGk").unwrap(), b"Hi");
        assert_eq!(base64_encode(b"Hey"), "SGV5");
        assert!(base64_decode("S").is_none() && base64_decode("a!bc").is_none());
    }
}
