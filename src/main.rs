//! The `ringecho` binary: parse the command line, call the library, map errors to exit codes.

mod cli;
mod metrics;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ProbeArgs, ProtocolKind, ReportArgs, ServeArgs};
use metrics::MetricsListener;
use ringecho::backend::uring::{self, RingConfig};
use ringecho::error::EXIT_USAGE;
use ringecho::loadgen::BenchArgs;
use ringecho::protocol::{Echo, Framed, Http};
use ringecho::{Error, sys};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print to stdout and succeed; usage errors print clap's message
        // and exit with EX_USAGE, never 2, which means io_uring is unavailable.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE as u8 } else { 0 });
        }
    };
    let result = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Probe(args)) => probe(&args),
        Some(Command::Bench(args)) => return bench(&args),
        Some(Command::Report(args)) => return report(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringecho: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let server = args.to_builder().bind()?;
    server.shutdown_handle().shutdown_on_signals()?;
    let metrics = args.metrics.map(MetricsListener::bind).transpose()?;
    let stats = server.stats_handle();
    let shutdown = server.shutdown_handle();
    let mut metrics_failed = None;
    let on_ready = |addrs: &[std::net::SocketAddr]| {
        let mut out = std::io::stdout().lock();
        for a in addrs {
            let _ = writeln!(out, "listening on {a}");
        }
        // Started once the shards run, so that every scrape carries the backend they run.
        if let Some(m) = metrics {
            let at = m.local_addr();
            match m.spawn(stats, started) {
                Ok(()) => {
                    let _ = writeln!(out, "metrics on http://{at}/metrics");
                }
                Err(e) => {
                    shutdown.shutdown();
                    metrics_failed = Some(e);
                }
            }
        }
        let _ = out.flush();
    };
    let stats_out = &mut std::io::stderr();
    match args.protocol {
        ProtocolKind::Echo => server.run(Echo, on_ready, stats_out)?,
        ProtocolKind::Framed => server.run(Framed::new(args.max_frame), on_ready, stats_out)?,
        ProtocolKind::Http => server.run(Http::new(args.http_body), on_ready, stats_out)?,
    };
    metrics_failed.map_or(Ok(()), Err)
}

/// Runs the load generator: exit 0 for a clean run, 1 for a run that went wrong (the line
/// says what), or the error's own status when it could not run.
fn bench(args: &BenchArgs) -> ExitCode {
    // Flags that do not go together are bad flags, like those clap refuses.
    if let Err(line) = args.validate() {
        eprintln!("error: {line}");
        return ExitCode::from(EXIT_USAGE as u8);
    }
    match ringecho::loadgen::run(args, &mut std::io::stdout().lock()) {
        Ok(outcome) => match outcome.failure {
            Some(line) => {
                eprintln!("ringecho bench: {line}");
                ExitCode::from(1)
            }
            None if outcome.interrupted => {
                eprintln!(
                    "ringecho bench: interrupted; the report covers {:.2} s",
                    outcome.report.window_secs
                );
                ExitCode::from(130)
            }
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("ringecho bench: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Merges interval logs: exit 0, or 1 with one line when a file cannot be read or written.
fn report(args: &ReportArgs) -> ExitCode {
    match report_to(args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("ringecho report: {line}");
            ExitCode::from(1)
        }
    }
}

fn report_to(args: &ReportArgs, out: &mut dyn Write) -> Result<(), String> {
    use ringecho::loadgen::{hlog, svg};
    // The output file first: a typo in its path should not wait for the reading.
    let mut svg_file = match &args.svg {
        Some(p) => Some(
            std::fs::File::create(p)
                .map_err(|e| format!("cannot create --svg file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let runs = args
        .files
        .iter()
        .map(|p| hlog::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = hlog::merge(runs);
    if let (Some(f), Some(path)) = (svg_file.as_mut(), &args.svg) {
        let (title, subtitle) = merged.chart_titles();
        let curve = svg::Curve::of("every run merged", &merged.hist);
        f.write_all(svg::latency_chart(&title, &subtitle, &[curve]).as_bytes())
            .map_err(|e| format!("cannot write --svg file {}: {e}", path.display()))?;
    }
    let text = if args.json {
        format!("{}\n", merged.json())
    } else {
        merged.summary()
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the report: {e}"))
}

fn probe(args: &ProbeArgs) -> Result<(), Error> {
    let kernel = sys::kernel_release();
    let disabled = sys::io_uring_disabled();
    let nofile = sys::rlimit(libc::RLIMIT_NOFILE).ok();
    let memlock = sys::rlimit(libc::RLIMIT_MEMLOCK).ok();
    let features = uring::probe(&RingConfig::probe());
    let rows = match &features {
        Ok(f) => f.table(&uring::supported_modes()),
        Err(_) => Vec::new(),
    };
    let opt = |v: Option<(u64, u64)>| v.map_or("null".to_string(), |(s, _)| s.to_string());
    if args.json {
        let mut out = format!(
            "{{\"kernel\":{kernel:?},\"io_uring_disabled\":{},\"rlimit_nofile\":{},\"rlimit_memlock\":{}",
            disabled.map_or("null".into(), |d| d.to_string()),
            opt(nofile),
            opt(memlock),
        );
        match &features {
            Ok(_) => out.push_str(",\"io_uring\":true,\"error\":null"),
            Err(e) => out.push_str(&format!(
                ",\"io_uring\":false,\"error\":{:?}",
                e.to_string()
            )),
        }
        out.push_str(",\"features\":[");
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"name\":{:?},\"since\":{:?},\"supported\":{},\"default\":{:?},\"flag\":{:?}}}",
                r.name, r.since, r.supported, r.default, r.flag
            ));
        }
        out.push_str("]}");
        println!("{out}");
        return Ok(());
    }
    println!("kernel             {kernel}");
    println!(
        "io_uring_disabled  {}",
        disabled.map_or("n/a (sysctl absent)".into(), |d| d.to_string())
    );
    if let Some((s, h)) = nofile {
        println!("RLIMIT_NOFILE      {s} (hard {h})");
    }
    if let Some((s, h)) = memlock {
        println!("RLIMIT_MEMLOCK     {s} (hard {h})");
    }
    match features {
        Ok(_) => {
            println!();
            println!(
                "{:<38} {:<6} {:<10} {:<9} flag",
                "feature", "since", "supported", "default"
            );
            for r in rows {
                println!(
                    "{:<38} {:<6} {:<10} {:<9} {}",
                    r.name,
                    r.since,
                    if r.supported { "yes" } else { "no" },
                    r.default,
                    r.flag
                );
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
