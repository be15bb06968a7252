//! `ringecho bench` end to end, over real loopback sockets: against a ringecho server, against
//! deliberately broken echo servers, open loop against a stalling one, and its output formats;
//! `--udp` against ringecho's UDP mode and lossy or corrupting UDP fixtures; `--framed` against
//! ringecho's framed protocol and fixtures that break frames.

mod bench_support;

use bench_support::*;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use ringecho::loadgen::{JSON_FIELDS, pattern};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn against_ringecho_counts_match_and_every_output_parses() {
    // The ringecho server itself needs io_uring.
    if !uring_or_skip("against_ringecho_counts_match_and_every_output_parses") {
        return;
    }
    let server = RingechoServer::start();
    let addr = server.addr.to_string();
    let pid = server.pid().to_string();
    for backend in ["uring", "epoll"] {
        let hgrm = temp_path(&format!("ringecho-{backend}.hgrm"));
        let run = bench(&[
            "--addr",
            &addr,
            "--backend",
            backend,
            "--conns",
            "8",
            "--depth",
            "4",
            "--size",
            "300",
            "--threads",
            "2",
            "--duration",
            "0.6",
            "--warmup",
            "0.2",
            "--json",
            "--hgrm",
            hgrm.to_str().unwrap(),
            "--server-pid",
            &pid,
        ]);
        assert_eq!(run.code, Some(0), "{backend}: {}", run.stderr);
        assert!(
            run.stderr.is_empty(),
            "{backend}: stderr is not a terminal, so no progress line: {:?}",
            run.stderr
        );
        let j = parse_flat_json(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
        for f in JSON_FIELDS {
            assert!(
                j.contains_key(*f),
                "{backend}: JSON lacks {f}: {}",
                run.stdout
            );
        }
        assert_eq!(j.len(), JSON_FIELDS.len(), "undocumented JSON fields");
        let sent = j["msgs_sent"].num();
        assert!(sent > 0.0, "{backend}: nothing sent");
        assert_eq!(
            sent,
            j["msgs_received"].num(),
            "{backend}: sent != received"
        );
        assert_eq!(j["errors"].num(), 0.0);
        assert_eq!(j["conns_established"].num(), 8.0);
        assert_eq!(j["error"], Json::Null);
        assert_eq!(j["backend"], Json::Str(backend.into()));
        assert_eq!(j["mode"], Json::Str("closed".into()));
        let msgs = j["msgs"].num();
        assert!(
            msgs > 0.0 && msgs <= sent,
            "{backend}: window msgs {msgs} of {sent}"
        );
        assert!(j["p50_us"].num() > 0.0 && j["p50_us"].num() <= j["max_us"].num());
        assert!(j["client_cpu_us_per_msg"].num() > 0.0);
        assert!(matches!(j["server_cpu_us_per_msg"], Json::Num(_)));

        let text = std::fs::read_to_string(&hgrm).unwrap();
        let h = parse_hgrm(&text).unwrap_or_else(|e| panic!("{backend}: {e}\n{text}"));
        assert_eq!(h.total as f64, msgs, "hgrm counts the measured messages");
        let last = h.rows.last().expect("rows");
        assert_eq!((last.1, last.2), (1.0, h.total));
        let _ = std::fs::remove_file(&hgrm);
    }
}

#[test]
fn human_summary_names_every_figure_and_the_svg_chart_is_written() {
    let f = Fixture::start(Behaviour::Echo);
    let svg = temp_path("summary.svg");
    let run = bench(&[
        "--addr",
        &f.addr.to_string(),
        "--backend",
        "epoll",
        "--conns",
        "3",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let chart = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(chart.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(chart.trim_end().ends_with("</svg>"));
    assert!(
        chart.contains("Latency by percentile: 3 conns × 128 B, depth 1, closed loop"),
        "the title has the settings"
    );
    assert_eq!(chart.matches("<polyline").count(), 1, "one curve");
    for tick in ["50%", "90%", "99%", "99.9%", "99.99%"] {
        assert!(chart.contains(&format!(">{tick}</text>")), "{tick}");
    }
    for word in [
        "msgs/s",
        "MB/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "errors",
        "connect failures",
        "cpu/msg",
        "client",
        "machine",
    ] {
        assert!(
            run.stdout.contains(word),
            "summary lacks {word:?}:\n{}",
            run.stdout
        );
    }
}

/// The bench names the connection, the offset, and both bytes.
#[test]
fn a_server_that_flips_a_byte_fails_the_run_naming_it() {
    let f = Fixture::start(Behaviour::FlipAt(1024 + 7));
    for backend in backends("a_server_that_flips_a_byte_fails_the_run_naming_it") {
        let run = bench(&[
            "--addr",
            &f.addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--size",
            "100",
            "--duration",
            "2",
            "--warmup",
            "0",
        ]);
        assert_eq!(run.code, Some(1), "{backend}: {}", run.stderr);
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("verification failed"))
            .unwrap_or_else(|| panic!("{backend}: no verification line in {:?}", run.stderr));
        assert!(line.contains("offset 1031 (message 10, byte 31)"), "{line}");
        let conn: u64 = line
            .split("connection ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no connection number in {line}"));
        let want = pattern::byte_at(pattern::stream_base(conn), 1031);
        assert!(
            line.contains(&format!("expected 0x{want:02x}, got 0x{:02x}", want ^ 0xff)),
            "{line}"
        );
        // The run stopped at the fault instead of running its full two seconds.
        assert!(run.stdout.contains("verification 1") || run.stdout.contains("verification 2"));
    }
}

#[test]
fn a_server_that_closes_early_fails_the_run_as_a_short_read() {
    let f = Fixture::start(Behaviour::CloseAfter(4096));
    for backend in backends("a_server_that_closes_early_fails_the_run_as_a_short_read") {
        let run = bench(&[
            "--addr",
            &f.addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--json",
        ]);
        assert_eq!(run.code, Some(1), "{backend}: {}", run.stderr);
        assert!(
            run.stderr.contains("closed by the server"),
            "{backend}: {}",
            run.stderr
        );
        let j = parse_flat_json(&run.stdout).unwrap();
        assert_eq!(j["short_reads"].num(), 2.0, "{backend}: {}", run.stdout);
        // Whatever did come back was checked and counted.
        assert!(j["msgs_received"].num() >= 2.0 * 4096.0 / 128.0 - 2.0);
    }
}

#[test]
fn a_server_that_resets_is_counted_as_resets() {
    let f = Fixture::start(Behaviour::ResetAfter(2048));
    for backend in backends("a_server_that_resets_is_counted_as_resets") {
        let run = bench(&[
            "--addr",
            &f.addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--json",
        ]);
        assert_eq!(run.code, Some(1), "{backend}: {}", run.stderr);
        assert!(
            run.stderr.contains("reset by the server"),
            "{backend}: {}",
            run.stderr
        );
        let j = parse_flat_json(&run.stdout).unwrap();
        assert_eq!(j["resets"].num(), 2.0, "{backend}: {}", run.stdout);
        assert_eq!(j["errors"].num(), 2.0, "{backend}: {}", run.stdout);
    }
}

#[test]
fn a_server_that_never_answers_times_out() {
    let f = Fixture::start(Behaviour::Silent);
    let backend = backends("a_server_that_never_answers_times_out")[0];
    let run = bench(&[
        "--addr",
        &f.addr.to_string(),
        "--backend",
        backend,
        "--conns",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--timeout",
        "0.3",
        "--json",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("no echo for 0.3s"), "{}", run.stderr);
    let j = parse_flat_json(&run.stdout).unwrap();
    assert_eq!(j["timeouts"].num(), 2.0);
    assert_eq!(j["msgs"].num(), 0.0);
}

#[test]
fn nobody_listening_exits_nonzero_with_the_reason() {
    let addr = dead_port();
    for backend in backends("nobody_listening_exits_nonzero_with_the_reason") {
        let run = bench(&[
            "--addr",
            &addr.to_string(),
            "--backend",
            backend,
            "--duration",
            "1",
        ]);
        assert_eq!(run.code, Some(1), "{backend}");
        assert_eq!(
            run.stderr.trim(),
            format!("ringecho bench: connection refused: is a server listening on {addr}?")
        );
        assert!(
            run.stdout.is_empty(),
            "no summary for a run that never started"
        );
    }
}

#[test]
fn an_unwritable_svg_path_fails_before_the_run() {
    let f = Fixture::start(Behaviour::Echo);
    let run = bench(&[
        "--addr",
        &f.addr.to_string(),
        "--svg",
        "/nonexistent-dir/x.svg",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .trim()
            .starts_with("ringecho bench: cannot create --svg file /nonexistent-dir/x.svg"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1);
    assert!(run.stdout.is_empty());
}

#[test]
fn bad_flags_are_refused_before_anything_runs() {
    for args in [
        &["--conns", "0"][..],
        &["--size", "0"],
        &["--depth", "0"],
        &["--addr", "not-an-address"],
        &["--rate", "0"],
        &["--duration", "0"],
    ] {
        let run = bench(args);
        assert_eq!(run.code, Some(64), "{args:?}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value"),
            "{args:?}: {first}"
        );
    }
}

/// Open loop charges a stall to every message that should have been sent during it; closed
/// loop, measuring from actual sends, sees only the few messages in flight.
#[test]
fn open_loop_p99_shows_a_stall_that_closed_loop_hides() {
    let backend = backends("open_loop_p99_shows_a_stall_that_closed_loop_hides")[0];
    let stall = Behaviour::Stall {
        after: std::time::Duration::from_millis(300),
        stall: std::time::Duration::from_millis(200),
    };
    let run = |extra: &[&str]| {
        let f = Fixture::start(stall);
        let addr = f.addr.to_string();
        let mut args = vec![
            "--addr",
            &addr,
            "--backend",
            backend,
            "--conns",
            "4",
            "--threads",
            "1",
            "--duration",
            "1.2",
            "--warmup",
            "0",
            "--json",
        ];
        args.extend_from_slice(extra);
        let r = bench(&args);
        assert_eq!(r.code, Some(0), "{extra:?}: {}", r.stderr);
        parse_flat_json(&r.stdout).unwrap()
    };
    let open = run(&["--rate", "2000"]);
    assert_eq!(open["latency_from"], Json::Str("intended".into()));
    // About 400 of 2400 messages were due during the 200 ms stall, waiting up to 200 ms.
    let p99 = open["p99_us"].num();
    assert!(p99 >= 100_000.0, "open-loop p99 {p99} µs hides the stall");
    let msgs = open["msgs"].num();
    assert!(
        (1800.0..=2600.0).contains(&msgs),
        "open loop kept its schedule: {msgs} msgs"
    );

    let closed = run(&[]);
    assert!(
        closed["max_us"].num() >= 150_000.0,
        "closed loop saw the stall once"
    );
    assert!(
        closed["p99_us"].num() < p99 / 2.0,
        "closed-loop p99 {} vs open {p99}",
        closed["p99_us"].num()
    );
}

fn read_hlog(path: &std::path::Path) -> (Histogram<u64>, usize) {
    let bytes = std::fs::read(path).unwrap();
    let mut total: Histogram<u64> = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
    let mut d = Deserializer::new();
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(i) = entry.expect("parsable interval log") {
            let raw = base64_decode(i.encoded_histogram());
            let h: Histogram<u64> = d.deserialize(&mut raw.as_slice()).expect("histogram");
            total.add(&h).unwrap();
            intervals += 1;
        }
    }
    (total, intervals)
}

/// Standard base64 (the interval log's histogram encoding).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    let b: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    for chunk in b.chunks(4) {
        let mut n = 0u32;
        for (k, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * k);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn interval_logs_from_two_runs_merge_into_one_histogram() {
    let f = Fixture::start(Behaviour::Echo);
    let addr = f.addr.to_string();
    let backend = backends("interval_logs_from_two_runs_merge_into_one_histogram")[0];
    let mut msgs = 0.0;
    let mut merged: Histogram<u64> = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
    for k in 0..2 {
        let log = temp_path(&format!("run{k}.hlog"));
        let run = bench(&[
            "--addr",
            &addr,
            "--backend",
            backend,
            "--conns",
            "3",
            "--duration",
            "1.5",
            "--warmup",
            "0.1",
            "--json",
            "--hlog",
            log.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let j = parse_flat_json(&run.stdout).unwrap();
        msgs += j["msgs"].num();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("#[StartTime: "), "{text}");
        let (h, intervals) = read_hlog(&log);
        assert_eq!(intervals, 2, "1.5 s makes a full and a half interval");
        assert_eq!(
            h.len() as f64,
            j["msgs"].num(),
            "the log holds every measured message"
        );
        merged.add(&h).unwrap();
        let _ = std::fs::remove_file(&log);
    }
    assert!(msgs > 0.0);
    assert_eq!(merged.len() as f64, msgs);
}

/// Runs `ringecho report` with `args`.
fn report(args: &[&str]) -> Run {
    let out = std::process::Command::new(BIN)
        .arg("report")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ringecho report");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Two load generators started together with one `--start-at` against one server measure the
/// same window; `ringecho report` merges their logs: the count is the sum of the two runs, and
/// the percentiles are those of one histogram fed with both runs' values.
#[test]
fn two_runs_started_at_one_time_merge_into_one_report() {
    let server = RingechoServer::start_with(&["--backend", "epoll", "--threads", "1"]);
    let addr = server.addr.to_string();
    let backend = backends("two_runs_started_at_one_time_merge_into_one_report")[0];
    let now = ringecho::loadgen::args::unix_now();
    // Whole milliseconds: the logs' StartTime has three decimals.
    let at = format!("{:.3}", now + 1.5);
    let logs = [temp_path("merge-a.hlog"), temp_path("merge-b.hlog")];
    let children: Vec<_> = logs
        .iter()
        .map(|log| {
            spawn_bench(&[
                "--addr",
                &addr,
                "--backend",
                backend,
                "--conns",
                "3",
                "--threads",
                "1",
                "--duration",
                "1.5",
                "--warmup",
                "0.2",
                "--start-at",
                &at,
                "--json",
                "--hlog",
                log.to_str().unwrap(),
            ])
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(collect).collect();
    let mut msgs = 0.0;
    let mut one: Histogram<u64> = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
    for (run, log) in runs.iter().zip(&logs) {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert!(run.stderr.contains("measuring at"), "{}", run.stderr);
        let j = json_of(run, "a --start-at run");
        assert_eq!(j["window_s"].num(), 1.5, "the window is the one asked for");
        msgs += j["msgs"].num();
        let (h, _) = read_hlog(log);
        assert_eq!(h.len() as f64, j["msgs"].num());
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains(&format!("#[StartTime: {at} (seconds since epoch)]")),
            "the log starts at --start-at:\n{text}"
        );
        one.add(&h).unwrap();
    }
    assert!(msgs > 0.0);
    let svg = temp_path("merged.svg");
    let paths: Vec<&str> = logs.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = paths.clone();
    args.extend(["--json", "--svg", svg.to_str().unwrap()]);
    let merged = report(&args);
    assert_eq!(merged.code, Some(0), "{}", merged.stderr);
    let m = parse_flat_json(&merged.stdout).unwrap_or_else(|e| panic!("{e}: {}", merged.stdout));
    assert_eq!(m.len(), ringecho::loadgen::hlog::REPORT_JSON_FIELDS.len());
    assert_eq!(m["runs"].num(), 2.0);
    assert_eq!(m["msgs"].num(), msgs, "the count is the sum of the runs");
    assert_eq!(m["conns"].num(), 6.0);
    assert_eq!(m["window_s"].num(), 1.5, "both measured the same window");
    assert_eq!(m["window_start"].num(), at.parse::<f64>().unwrap());
    assert_eq!(m["window_msgs"].num(), msgs, "every interval is inside it");
    assert!((m["msgs_per_sec"].num() - msgs / 1.5).abs() < 1e-6);
    for (field, q) in [
        ("p50_us", 0.5),
        ("p90_us", 0.9),
        ("p99_us", 0.99),
        ("p999_us", 0.999),
    ] {
        assert_eq!(
            m[field].num(),
            one.value_at_quantile(q) as f64 / 1000.0,
            "{field} of the merged report vs one histogram of both runs"
        );
    }
    assert_eq!(m["max_us"].num(), one.max() as f64 / 1000.0);
    eprintln!(
        "merged vs one histogram: msgs {} = {msgs}; p50 {} / {}; p99 {} / {}; p99.9 {} / {} µs",
        m["msgs"].num(),
        m["p50_us"].num(),
        one.value_at_quantile(0.5) as f64 / 1000.0,
        m["p99_us"].num(),
        one.value_at_quantile(0.99) as f64 / 1000.0,
        m["p999_us"].num(),
        one.value_at_quantile(0.999) as f64 / 1000.0,
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("Latency by percentile: 2 runs, 6 conns × 128 B in all"));
    let text = report(&paths);
    assert_eq!(text.code, Some(0));
    assert!(
        text.stdout
            .contains("2 runs, 6 conns × 128 B in all, closed loop"),
        "{}",
        text.stdout
    );
    for p in logs.iter().chain([&svg]) {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_start_at_that_connecting_overruns_fails_the_run() {
    let f = Fixture::start(Behaviour::Echo);
    let at = format!("{:.3}", ringecho::loadgen::args::unix_now() + 0.5);
    // Three connections at one a second take two seconds.
    let run = bench(&[
        "--addr",
        &f.addr.to_string(),
        "--backend",
        "epoll",
        "--conns",
        "3",
        "--threads",
        "1",
        "--connect-rate",
        "1",
        "--start-at",
        &at,
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("after --start-at") && run.stderr.contains("no common window"),
        "{}",
        run.stderr
    );
}

#[test]
fn report_refuses_what_it_cannot_read_in_one_line() {
    let r = report(&["/nonexistent/a.hlog"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr.trim(),
        "ringecho report: cannot read /nonexistent/a.hlog: No such file or directory (os error 2)"
    );
    let junk = temp_path("junk.hlog");
    std::fs::write(&junk, "not a log\n").unwrap();
    let r = report(&[junk.to_str().unwrap()]);
    let _ = std::fs::remove_file(&junk);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("not an HdrHistogram interval log"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1);
    assert_eq!(report(&[]).code, Some(64), "no file is a bad flag");
    let r = bench(&["--start-at", "12"]);
    assert_eq!(r.code, Some(64));
    assert!(r.stderr.contains("in the past"), "{}", r.stderr);
    assert_eq!(bench(&["--start-at", "tomorrow"]).code, Some(64));
}

/// Ctrl-C ends the window early: connections drain, the report covers what was measured, and
/// the exit status says it was interrupted.
#[test]
fn sigint_ends_the_run_early_with_a_report() {
    let f = Fixture::start(Behaviour::Echo);
    let backend = backends("sigint_ends_the_run_early_with_a_report")[0];
    let child = spawn_bench(&[
        "--addr",
        &f.addr.to_string(),
        "--backend",
        backend,
        "--conns",
        "2",
        "--duration",
        "60",
        "--warmup",
        "0",
        "--json",
    ]);
    f.wait_for_traffic();
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let run = collect(child);
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    let j = parse_flat_json(&run.stdout).unwrap();
    assert!(j["window_s"].num() < 30.0);
    assert_eq!(j["errors"].num(), 0.0);
    assert_eq!(
        j["msgs_sent"].num(),
        j["msgs_received"].num(),
        "drained before closing"
    );
}

#[test]
fn base64_helper_decodes() {
    assert_eq!(base64_decode("SGVsbG8="), b"Hello");
    assert_eq!(base64_decode("SGk="), b"Hi");
    assert_eq!(base64_decode("SGV5"), b"Hey");
}

/// Parses the JSON a run printed, with every documented field and no other.
fn json_of(run: &Run, what: &str) -> std::collections::BTreeMap<String, Json> {
    let j = parse_flat_json(&run.stdout)
        .unwrap_or_else(|e| panic!("{what}: {e}: {:?} {:?}", run.stdout, run.stderr));
    for f in JSON_FIELDS {
        assert!(j.contains_key(*f), "{what}: JSON lacks {f}: {}", run.stdout);
    }
    assert_eq!(
        j.len(),
        JSON_FIELDS.len(),
        "{what}: undocumented JSON fields"
    );
    j
}

/// `--udp` against ringecho's own UDP echo, on both server backends and both client backends:
/// at a modest rate on loopback nothing is lost and every count matches.
#[test]
fn udp_against_ringecho_loses_nothing_on_either_backend() {
    let clients = backends("udp_against_ringecho_loses_nothing_on_either_backend");
    let mut servers = vec!["epoll"];
    if clients.contains(&"uring") {
        servers.insert(0, "uring");
    }
    for server_backend in servers {
        let server =
            RingechoServer::start_with(&["--udp", "--threads", "1", "--backend", server_backend]);
        let addr = server.addr.to_string();
        for &client in &clients {
            let what = format!("server {server_backend}, client {client}");
            let run = bench(&[
                "--udp",
                "--addr",
                &addr,
                "--backend",
                client,
                "--conns",
                "4",
                "--depth",
                "2",
                "--size",
                "200",
                "--rate",
                "4000",
                "--threads",
                "1",
                "--duration",
                "0.4",
                "--warmup",
                "0.1",
                "--json",
            ]);
            assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
            let j = json_of(&run, &what);
            assert_eq!(j["transport"], Json::Str("udp".into()));
            assert_eq!(j["protocol"], Json::Str("echo".into()));
            let sent = j["msgs_sent"].num();
            assert!(sent >= 1000.0, "{what}: only {sent} datagrams sent");
            assert_eq!(sent, j["msgs_received"].num(), "{what}: {}", run.stdout);
            assert_eq!(j["dgrams_lost"].num(), 0.0, "{what}");
            assert_eq!(j["loss_pct"].num(), 0.0, "{what}");
            assert_eq!(j["dgrams_duplicate"].num(), 0.0, "{what}");
            assert_eq!(j["dgrams_late"].num(), 0.0, "{what}");
            assert_eq!(j["udp_loss_timeout_s"].num(), 0.25);
            assert_eq!(j["errors"].num(), 0.0, "{what}");
            assert_eq!(j["conns_established"].num(), 4.0);
            assert!(j["msgs"].num() > 0.0 && j["p50_us"].num() > 0.0, "{what}");
            assert_eq!(j["error"], Json::Null);
        }
    }
}

/// A server that drops every 10th datagram: each drop is a counted loss, exactly as many as
/// were dropped, and the run ends on time instead of waiting for them.
#[test]
fn udp_loss_is_counted_exactly_and_the_run_still_ends() {
    for backend in backends("udp_loss_is_counted_exactly_and_the_run_still_ends") {
        let f = UdpFixture::start(UdpBehaviour::DropEvery(10));
        let started = Instant::now();
        let run = bench(&[
            "--udp",
            "--addr",
            &f.addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--depth",
            "4",
            "--size",
            "64",
            "--threads",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--udp-loss-timeout",
            "0.05",
            "--json",
        ]);
        let took = started.elapsed();
        assert_eq!(
            run.code,
            Some(0),
            "{backend}: loss alone does not fail a run: {}",
            run.stderr
        );
        let j = json_of(&run, backend);
        let dropped = f.dropped.load(Ordering::SeqCst) as f64;
        assert!(
            dropped >= 5.0,
            "{backend}: the fixture dropped only {dropped}"
        );
        // On a loaded machine an echo may come after the 50 ms loss timeout: it is counted
        // lost, then late when it arrives. The datagrams lost for good are the fixture's.
        let (lost, late) = (j["dgrams_lost"].num(), j["dgrams_late"].num());
        assert_eq!(lost - late, dropped, "{backend}: {}", run.stdout);
        assert_eq!(
            j["msgs_sent"].num(),
            j["msgs_received"].num() + lost,
            "{backend}: every datagram is echoed or lost: {}",
            run.stdout
        );
        assert_eq!(
            j["msgs_sent"].num(),
            f.received.load(Ordering::SeqCst) as f64
        );
        let pct = 100.0 * (lost - late) / j["msgs_sent"].num();
        assert!((9.0..=11.0).contains(&pct), "{backend}: loss {pct}%");
        assert!(took < Duration::from_secs(5), "{backend}: took {took:?}");
    }
}

/// A server that never answers: every datagram is lost, the run ends after the loss timeout,
/// and it fails with a line saying nothing came back.
#[test]
fn udp_silence_is_total_loss_not_a_hang() {
    let backend = backends("udp_silence_is_total_loss_not_a_hang")[0];
    let f = UdpFixture::start(UdpBehaviour::Silent);
    let started = Instant::now();
    let run = bench(&[
        "--udp",
        "--addr",
        &f.addr.to_string(),
        "--backend",
        backend,
        "--conns",
        "3",
        "--depth",
        "2",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--udp-loss-timeout",
        "0.1",
        "--json",
    ]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("no datagram came back from"),
        "{}",
        run.stderr
    );
    let j = json_of(&run, backend);
    assert_eq!(j["msgs_received"].num(), 0.0);
    assert_eq!(j["dgrams_lost"].num(), j["msgs_sent"].num());
    assert_eq!(j["loss_pct"].num(), 100.0);
}

#[test]
fn udp_with_nobody_listening_is_refused() {
    let addr = {
        // A port nothing listens on: bound, then released.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    for backend in backends("udp_with_nobody_listening_is_refused") {
        let run = bench(&[
            "--udp",
            "--addr",
            &addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--duration",
            "1",
        ]);
        assert_eq!(run.code, Some(1), "{backend}");
        assert_eq!(
            run.stderr.trim(),
            format!(
                "ringecho bench: connection refused: is a UDP echo server listening on {addr}?"
            )
        );
    }
}

/// A server that corrupts one datagram fails the run with a line naming the socket, the
/// datagram, the byte, and both values.
#[test]
fn udp_corruption_names_the_datagram_and_byte() {
    for backend in backends("udp_corruption_names_the_datagram_and_byte") {
        let f = UdpFixture::start(UdpBehaviour::FlipAt { nth: 20, byte: 40 });
        let run = bench(&[
            "--udp",
            "--addr",
            &f.addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--size",
            "100",
            "--duration",
            "2",
            "--warmup",
            "0",
        ]);
        assert_eq!(run.code, Some(1), "{backend}: {}", run.stderr);
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("verification failed"))
            .unwrap_or_else(|| panic!("{backend}: no verification line in {:?}", run.stderr));
        // "verification failed: socket C, datagram S, byte 40: expected 0xEE, got 0xGG"
        let field = |after: &str| -> u64 {
            line.split(after)
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {after:?} in {line}"))
        };
        let (socket, seq) = (field("socket "), field("datagram "));
        assert!(line.contains(", byte 40: "), "{line}");
        let want = pattern::byte_at(pattern::stream_base(socket), seq * (100 - 16) + 40 - 16);
        assert!(
            line.contains(&format!("expected 0x{want:02x}, got 0x{:02x}", want ^ 0xff)),
            "{line}"
        );
    }
}

#[test]
fn udp_sizes_that_cannot_be_sent_are_bad_flags() {
    for (args, want) in [
        (
            &["--udp", "--size", "65508"][..],
            "does not fit in one UDP datagram",
        ),
        (&["--udp", "--size", "15"], "16-byte header"),
        (&["--udp", "--framed"], "cannot be used with"),
    ] {
        let run = bench(args);
        assert_eq!(run.code, Some(64), "{args:?}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(want),
            "{args:?}: {first}"
        );
    }
}

/// `--framed` against ringecho's framed protocol on both client backends.
#[test]
fn framed_against_ringecho_passes() {
    let clients = backends("framed_against_ringecho_passes");
    let server = if clients.contains(&"uring") {
        RingechoServer::start_with(&["--protocol", "framed", "--threads", "1"])
    } else {
        RingechoServer::start_with(&[
            "--protocol",
            "framed",
            "--threads",
            "1",
            "--backend",
            "epoll",
        ])
    };
    let addr = server.addr.to_string();
    for backend in clients {
        let run = bench(&[
            "--framed",
            "--addr",
            &addr,
            "--backend",
            backend,
            "--conns",
            "3",
            "--depth",
            "4",
            "--size",
            "300",
            "--threads",
            "1",
            "--duration",
            "0.4",
            "--warmup",
            "0.1",
            "--json",
        ]);
        assert_eq!(run.code, Some(0), "{backend}: {}", run.stderr);
        let j = json_of(&run, backend);
        assert_eq!(j["protocol"], Json::Str("framed".into()));
        assert_eq!(j["transport"], Json::Str("tcp".into()));
        assert_eq!(j["dgrams_lost"], Json::Null);
        let sent = j["msgs_sent"].num();
        assert!(sent > 0.0);
        assert_eq!(sent, j["msgs_received"].num(), "{backend}");
        assert_eq!(j["errors"].num(), 0.0);
    }
}

/// A server that corrupts a frame header fails the run naming the connection, frame, offset,
/// header byte, and both values.
#[test]
fn framed_header_corruption_names_the_frame() {
    // Frame 10's header is wire bytes 1040..1044 with 100-byte bodies; flip its last byte.
    let f = Fixture::start(Behaviour::FlipAt(10 * 104 + 3));
    for backend in backends("framed_header_corruption_names_the_frame") {
        let run = bench(&[
            "--framed",
            "--addr",
            &f.addr.to_string(),
            "--backend",
            backend,
            "--conns",
            "2",
            "--size",
            "100",
            "--duration",
            "2",
            "--warmup",
            "0",
        ]);
        assert_eq!(run.code, Some(1), "{backend}: {}", run.stderr);
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("frame verification failed"))
            .unwrap_or_else(|| panic!("{backend}: no frame line in {:?}", run.stderr));
        assert!(
            line.contains(
                "frame 10, offset 1043, header byte 3: expected 0x64, got 0x9b (the echoed \
                 header announces a 155-byte body; 100 were sent"
            ),
            "{line}"
        );
        assert!(line.contains("connection "), "{line}");
    }
}

/// A server that merges frames is caught at the first merged header.
#[test]
fn framed_merged_frames_are_caught() {
    let f = Fixture::start(Behaviour::MergeFrames);
    let backend = backends("framed_merged_frames_are_caught")[0];
    let run = bench(&[
        "--framed",
        "--addr",
        &f.addr.to_string(),
        "--backend",
        backend,
        "--conns",
        "1",
        "--depth",
        "2",
        "--size",
        "100",
        "--duration",
        "2",
        "--warmup",
        "0",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "frame verification failed: connection 0, frame 0, offset 3, header byte 3: expected \
             0x64, got 0xc8 (the echoed header announces a 200-byte body; 100 were sent"
        ),
        "{}",
        run.stderr
    );
}
