//! What `cargo test` (and `make bench-smoke`) runs: the harness's parsers and formatters on
//! known inputs, then one tiny case end to end against ringecho's two backends and one server
//! started the way external servers are, checking every output file. A few seconds.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use ringecho::stats::Counters;

use crate::json::Json;
use crate::metrics::{Metrics, Stat, Summary};
use crate::report::{CaseResult, NOISE_NOTE, ServerResult, fmt_rate, fmt_ratio, fmt_sig};
use crate::run::{Run, parse_perf_count};
use crate::spec::{Case, Launch, Server, parse_cases, parse_servers};

const NAME: &str = "compare_smoke";

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Entry point, with libtest's arguments understood well enough for `cargo test` (a name
/// filter, `--exact`, `--skip`, `--list`, `--ignored`).
pub fn main(args: &[String]) -> ExitCode {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list, mut ignored) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--ignored" => ignored = true,
            "--skip" => skips.extend(it.next().cloned()),
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" | "--shuffle-seed" => {
                it.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
    }
    if list {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    let matches = |f: &String| {
        if exact {
            f == NAME
        } else {
            NAME.contains(f.as_str())
        }
    };
    let selected = !ignored
        && (filters.is_empty() || filters.iter().any(matches))
        && !skips.iter().any(|s| NAME.contains(s.as_str()));
    if !selected {
        println!("running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out\n");
        return ExitCode::SUCCESS;
    }
    println!("running 1 test");
    let result = units().and_then(|()| end_to_end());
    match result {
        Ok(()) => {
            println!("test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test {NAME} ... FAILED\n\n{e}\n\ntest result: FAILED. 0 passed; 1 failed\n");
            ExitCode::FAILURE
        }
    }
}

/// The harness's own pieces on known inputs.
fn units() -> Result<(), String> {
    crate::html::self_check()?;
    cases()?;
    servers()?;
    json_values()?;
    statistics_and_formats()?;
    perf_output()?;
    run_figures()?;
    Ok(())
}

/// `--cases`: the default matrix, the spellings of a case, and what is refused.
fn cases() -> Result<(), String> {
    let d = parse_cases(crate::spec::DEFAULT_CASES)?;
    ensure!(d.len() == 13, "default matrix has 13 cases: {d:?}");
    ensure!(d[4] == Case::tcp(100, 64, 16), "100x64x16: {:?}", d[4]);
    ensure!(
        parse_cases("50×128, 1x64x1")? == vec![Case::tcp(50, 128, 1), Case::tcp(1, 64, 1)],
        "× and a default depth"
    );
    let open = parse_cases("50x128x16@20000")?[0];
    ensure!(
        open == Case {
            rate: Some(20000),
            ..Case::tcp(50, 128, 16)
        } && open.to_string() == "50x128x16@20000",
        "an open-loop case: {open:?}"
    );
    let udp = parse_cases("udp:50x64")?[0];
    ensure!(
        udp == Case {
            udp: true,
            ..Case::tcp(50, 64, 1)
        } && udp.to_string() == "udp:50x64x1",
        "a UDP case: {udp:?}"
    );
    for bad in [
        "0x64x1", "50x", "abc", "1x2x3x4", "", "50x-1x1", "50x128@0", "50x128@", "tcp:1x1",
    ] {
        ensure!(parse_cases(bad).is_err(), "case {bad:?} should be refused");
    }
    Ok(())
}

/// `--servers`: ringecho variants, external servers, the arguments each gets, and what is
/// refused.
fn servers() -> Result<(), String> {
    let udp = parse_cases("udp:50x64")?[0];
    let one = Case::tcp(1, 1, 1);
    let s = parse_servers("uring; epoll;nb=uring --batch-wait-us 0\nraw=--backend epoll")?;
    ensure!(s.len() == 4, "four servers: {s:?}");
    ensure!(
        s[2].launch
            == Launch::Ringecho {
                flags: ["--backend", "uring", "--batch-wait-us", "0"]
                    .map(String::from)
                    .to_vec()
            },
        "a uring variant: {:?}",
        s[2]
    );
    ensure!(
        s[0].ringecho_args("A", &one) == ["--addr", "A", "--threads", "1", "--backend", "uring"],
        "one shard unless asked: {:?}",
        s[0].ringecho_args("A", &one)
    );
    ensure!(
        s[1].ringecho_args("A", &udp)[4] == "--udp" && s[1].skips(&udp).is_none(),
        "ringecho serves a UDP case with --udp: {:?}",
        s[1].ringecho_args("A", &udp)
    );
    let t = parse_servers("t2=uring --threads 2; t3=--threads=3")?;
    ensure!(
        t[0].threads() == 2 && t[1].threads() == 3,
        "threads of variants"
    );
    ensure!(
        !t[0].ringecho_args("A", &one)[2..]
            .starts_with(&["--threads".to_string(), "1".to_string()]),
        "a variant's --threads is not doubled: {:?}",
        t[0].ringecho_args("A", &one)
    );
    let e = parse_servers("tokio=/x/tokio-echo; custom=/x/srv --port {addr} -v")?;
    ensure!(
        e[0].command_line(std::path::Path::new("re")) == "NODELAY=1 /x/tokio-echo 127.0.0.1:0"
            && e[0].skips(&udp).is_some(),
        "address appended: {}",
        e[0].command_line(std::path::Path::new("re"))
    );
    ensure!(
        e[1].command_line(std::path::Path::new("re")) == "NODELAY=1 /x/srv --port 127.0.0.1:0 -v",
        "address substituted: {}",
        e[1].command_line(std::path::Path::new("re"))
    );
    ensure!(!e[0].self_counting(), "external servers do not count");
    for bad in [
        "uring; uring",
        "bogus",
        "=uring",
        "x=",
        "a b=uring",
        "x=uring --addr 1.2.3.4:5",
        "x=--stats-interval=1",
    ] {
        ensure!(
            parse_servers(bad).is_err(),
            "server list {bad:?} should be refused"
        );
    }
    Ok(())
}

/// The JSON value tree: parsing, escapes, round trips, and what is refused.
fn json_values() -> Result<(), String> {
    let sample = r#"{"msgs":673234,"msgs_per_sec":336617,"p50_us":142.591,"rate":null,
        "verify":true,"error":null,"s":"a\"b\\c\u0041\n","arr":[1,[2,{"k":-1.5e3}]]}"#;
    let j = Json::parse(sample)?;
    ensure!(j.num("msgs_per_sec") == Some(336617.0), "number");
    ensure!(j.num("p50_us") == Some(142.591), "decimal");
    ensure!(j.get("rate") == Some(&Json::Null), "null");
    ensure!(
        j.str("s") == Some("a\"b\\cA\n"),
        "escapes: {:?}",
        j.str("s")
    );
    ensure!(
        Json::parse(&j.to_text())? == j && Json::parse(&j.to_pretty())? == j,
        "round trip"
    );
    let deep = "[".repeat(10_000);
    for bad in [
        "{",
        "[1,]",
        "{\"a\" 1}",
        "tru",
        "\"open",
        "1 2",
        "{\"a\":}",
        &deep,
    ] {
        ensure!(Json::parse(bad).is_err(), "JSON {bad:?} should be refused");
    }
    Ok(())
}

/// Medians and ranges, and how numbers, rates, ratios and timestamps are written.
fn statistics_and_formats() -> Result<(), String> {
    let st = Stat::of(&[3.0, 1.0, f64::NAN, 2.0]).ok_or("stat")?;
    ensure!(
        (st.median, st.min, st.max, st.n) == (2.0, 1.0, 3.0, 3),
        "odd median: {st:?}"
    );
    ensure!(
        Stat::of(&[4.0, 1.0, 3.0, 2.0]).map(|s| s.median) == Some(2.5),
        "even median"
    );
    ensure!(Stat::of(&[]).is_none(), "no values, no stat");
    ensure!(fmt_sig(0.024_13) == "0.0241", "{}", fmt_sig(0.024_13));
    ensure!(
        fmt_sig(2.413) == "2.41" && fmt_sig(241.3) == "241",
        "fmt_sig"
    );
    ensure!(
        fmt_rate(336_617.0) == "336.6k" && fmt_rate(2_013_000.0) == "2.01M",
        "fmt_rate"
    );
    ensure!(
        fmt_ratio(1.04) == "×1.04" && fmt_ratio(64.2) == "×64.2",
        "fmt_ratio"
    );
    ensure!(
        crate::utc_stamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000)) == "20231114-221320",
        "timestamp"
    );
    Ok(())
}

/// `perf stat` output, counted and not (the /proc parsers are unit-tested in
/// `ringecho::sys::proc`).
fn perf_output() -> Result<(), String> {
    ensure!(
        parse_perf_count("\n20000,,raw_syscalls:sys_enter,2409324915,100.00,,\n") == Some(20000),
        "perf count"
    );
    ensure!(
        parse_perf_count("<not counted>,,raw_syscalls:sys_enter,0,0.00,,").is_none(),
        "perf not counted"
    );
    Ok(())
}

/// One run's figures from the client's JSON and the server's counters, a repeated attempt
/// left out of the summary, and a failed run saying why.
fn run_figures() -> Result<(), String> {
    let case = Case::tcp(2, 100, 1);
    let run = Run {
        round: Some(0),
        client_exit: Some(0),
        client: Some(Json::parse(
            r#"{"msgs":1000,"window_s":1,"msgs_per_sec":1000,"verify":true,"error":null,
               "server_cpu_us_per_msg":2,"client_cpu_us_per_msg":3,"machine_cpu_us_per_msg":6}"#,
        )?),
        counters: Some(Counters::parse(
            "bytes_out=50000 syscalls=25 enters=20 events=900",
        )),
        ..Run::default()
    };
    let m = Metrics::of(&run, case).ok_or("metrics")?;
    ensure!(m.verified, "a clean run verifies");
    ensure!(
        m.values.get("syscalls_per_msg") == Some(&0.05),
        "25 syscalls / 500 messages: {:?}",
        m.values
    );
    ensure!(
        m.values.get("completions_per_enter") == Some(&45.0),
        "900 / 20"
    );
    ensure!(
        m.values
            .get("other_cpus")
            .is_some_and(|v| (v - 0.001).abs() < 1e-9),
        "1 µs/msg × 1000 msgs in 1 s: {:?}",
        m.values.get("other_cpus")
    );
    let mut noisy = run.clone();
    noisy.discarded = Some("other work".into());
    let s = Summary::of(&[run.clone(), noisy], case);
    ensure!(
        (s.rounds, s.measured, s.verified, s.discarded, s.busy) == (1, 1, 1, 1, 0),
        "a repeated attempt is left out: {s:?}"
    );
    let mut bad = run.clone();
    bad.client_exit = Some(1);
    bad.client
        .as_mut()
        .map(|c| c.set("error", "byte 7 differs"));
    let m = Metrics::of(&bad, case).ok_or("metrics")?;
    ensure!(
        !m.verified && m.problem.as_deref() == Some("byte 7 differs"),
        "a failed run says why: {:?}",
        m.problem
    );
    Ok(())
}

/// One tiny case end to end against ringecho's two backends and one ringecho started the way
/// an external server is, checking every output file.
fn end_to_end() -> Result<(), String> {
    let bin = crate::default_ringecho();
    let out_dir =
        std::env::temp_dir().join(format!("ringecho-compare-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut servers = parse_servers("uring; epoll")?;
    // A ringecho started the way an external server is: exercises that path without any peer.
    servers.push(Server {
        name: "ext".into(),
        launch: Launch::External {
            program: bin.display().to_string(),
            args: [
                "serve",
                "--backend",
                "epoll",
                "--threads",
                "1",
                "--addr",
                "{addr}",
            ]
            .map(String::from)
            .to_vec(),
        },
    });
    let plan = crate::Plan {
        cases: vec![Case::tcp(2, 64, 2)],
        servers,
        // The epoll client works where io_uring is blocked (CI containers).
        settings: crate::settings_for(bin, 0.5, 0.2, "epoll", 1),
        rounds: 2,
        perf: crate::run::perf_available(),
        perf_duration: 0.5,
        out_dir: out_dir.clone(),
        max_other_cpus: None,
        noise_retries: 0,
    };
    let (_, results, json_path) = crate::execute(&plan, false)?;
    let result = check_outputs(&json_path, &out_dir, &results[0], plan.perf.is_ok());
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&out_dir);
        }
        Err(_) => println!("{NAME}: outputs kept in {}", out_dir.display()),
    }
    result
}

/// The outputs of the end-to-end run of one `case`: the JSON, `latest.md` and `latest.html`,
/// and every server's figures in them (`perf`: whether perf could count the external server).
fn check_outputs(
    json_path: &std::path::Path,
    out_dir: &std::path::Path,
    case: &CaseResult,
    perf: bool,
) -> Result<(), String> {
    let text = std::fs::read_to_string(json_path).map_err(|e| e.to_string())?;
    let doc = Json::parse(&text)?;
    let cases = doc.arr("cases").ok_or("no cases in the JSON")?;
    ensure!(cases.len() == 1, "one case");
    let rs = cases[0].arr("results").ok_or("no results")?;
    ensure!(rs.len() == 3, "three servers: {}", rs.len());
    let md = std::fs::read_to_string(out_dir.join("latest.md")).map_err(|e| e.to_string())?;
    ensure!(md.contains(NOISE_NOTE), "the noise note is in latest.md");
    let page = std::fs::read_to_string(out_dir.join("latest.html")).map_err(|e| e.to_string())?;
    ensure!(page.starts_with("<!DOCTYPE html>"), "latest.html is a page");
    ensure!(
        page.matches("<svg").count() == 2,
        "latest.html: two charts for the one case"
    );
    for fetches in ["<script", "src=", "href=", "url(", "@import", "<link"] {
        ensure!(
            !page.contains(fetches),
            "latest.html is self-contained, but has {fetches:?}"
        );
    }
    let drawn = case
        .servers
        .iter()
        .filter(|r| r.runs.iter().any(|run| run.latency.is_some()))
        .count();
    ensure!(
        drawn >= 2 && page.matches("<polyline").count() == drawn,
        "a latency curve per server that measured: {drawn} servers, {} curves",
        page.matches("<polyline").count()
    );
    for r in &case.servers {
        check_server(r, &md, &page, perf)?;
    }
    Ok(())
}

/// One server's figures of the end-to-end run, and its rows in `latest.md` and `latest.html`.
fn check_server(r: &ServerResult, md: &str, page: &str, perf: bool) -> Result<(), String> {
    let s = &r.summary;
    if r.name == "uring" && s.problems.iter().any(|p| p.contains("(exit 2)")) {
        println!(
            "{NAME}: io_uring unavailable here, uring skipped: {:?}",
            s.problems
        );
        return Ok(());
    }
    ensure!(
        s.rounds == 2 && s.verified == 2,
        "{}: {} of {} rounds verified: {:?}",
        r.name,
        s.verified,
        s.rounds,
        s.problems
    );
    ensure!(
        s.median("msgs_per_sec").is_some_and(|v| v > 0.0),
        "{}: no throughput",
        r.name
    );
    ensure!(
        s.median("server_cpu_us_per_msg").is_some(),
        "{}: no server CPU",
        r.name
    );
    let counted = r.name != "ext" || perf;
    ensure!(
        !counted || s.median("syscalls_per_msg").is_some_and(|v| v > 0.0),
        "{}: no syscalls per message",
        r.name
    );
    ensure!(
        md.lines()
            .any(|l| l.starts_with(&format!("| {} |", r.name))),
        "{}: no row in latest.md",
        r.name
    );
    ensure!(
        page.contains(&format!("<tr><td>{}</td>", r.name)),
        "{}: no row in latest.html",
        r.name
    );
    Ok(())
}
