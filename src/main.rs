//! The `ringecho` binary: parse the command line, call the library, map errors to exit codes.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ProbeArgs, ProtocolKind, ServeArgs};
use ringecho::backend::uring::{self, RingConfig, RingMode};
use ringecho::protocol::{Echo, Framed, Http};
use ringecho::{Error, Server, sys};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Probe(args)) => probe(&args),
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
    let server = Server::bind(&args.to_config())?;
    sys::install_shutdown_signals(server.shutdown_handle().raw_fd())
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let on_ready = |addrs: &[std::net::SocketAddr]| {
        let mut out = std::io::stdout().lock();
        for a in addrs {
            let _ = writeln!(out, "listening on {a}");
        }
        let _ = out.flush();
    };
    let stats_out = &mut std::io::stderr();
    match args.protocol {
        ProtocolKind::Echo => server.run(Echo, on_ready, stats_out)?,
        ProtocolKind::Framed => server.run(Framed::new(args.max_frame), on_ready, stats_out)?,
        ProtocolKind::Http => server.run(Http::new(args.http_body), on_ready, stats_out)?,
    };
    Ok(())
}

fn probe(args: &ProbeArgs) -> Result<(), Error> {
    let cfg = RingConfig {
        sq_entries: 64,
        cq_entries: 128,
        mode: RingMode::Auto,
    };
    let kernel = sys::kernel_release();
    let disabled = sys::io_uring_disabled();
    let nofile = sys::rlimit(libc::RLIMIT_NOFILE).ok();
    let memlock = sys::rlimit(libc::RLIMIT_MEMLOCK).ok();
    let features = uring::probe(&cfg);
    if args.json {
        let f = match &features {
            Ok(f) => format!(
                "{{\"mode\":\"{}\",\"nodrop\":{},\"ext_arg\":{},\"min_timeout\":{},\"recv_bundle\":{},\"multishot_accept\":{},\"multishot_recv\":{},\"buf_ring\":{},\"send_zc\":{},\"cancel_fd\":{}}}",
                f.mode,
                f.nodrop,
                f.ext_arg,
                f.min_timeout,
                f.recv_bundle,
                f.multishot_accept,
                f.multishot_recv,
                f.buf_ring,
                f.send_zc,
                f.cancel_fd
            ),
            Err(e) => format!("{{\"error\":{:?}}}", e.to_string()),
        };
        println!(
            "{{\"kernel\":{kernel:?},\"io_uring_disabled\":{},\"rlimit_nofile\":{},\"rlimit_memlock\":{},\"io_uring\":{f}}}",
            disabled.map_or("null".into(), |d| d.to_string()),
            nofile.map_or("null".into(), |(s, _)| s.to_string()),
            memlock.map_or("null".into(), |(s, _)| s.to_string()),
        );
        return Ok(());
    }
    println!("kernel              {kernel}");
    println!(
        "io_uring_disabled   {}",
        disabled.map_or("n/a".into(), |d| d.to_string())
    );
    if let Some((s, h)) = nofile {
        println!("RLIMIT_NOFILE       {s} (hard {h})");
    }
    if let Some((s, h)) = memlock {
        println!("RLIMIT_MEMLOCK      {s} (hard {h})");
    }
    match features {
        Ok(f) => {
            let yes = |b: bool| if b { "yes" } else { "no" };
            println!("ring mode           {}", f.mode);
            for (name, have) in [
                ("multishot accept", f.multishot_accept),
                ("multishot recv", f.multishot_recv),
                ("buffer ring", f.buf_ring),
                ("cancel by fd", f.cancel_fd),
                ("nodrop", f.nodrop),
                ("ext arg", f.ext_arg),
                ("min-wait timeout", f.min_timeout),
                ("recv bundle", f.recv_bundle),
                ("send_zc", f.send_zc),
            ] {
                println!("{name:<19} {}", yes(have));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
