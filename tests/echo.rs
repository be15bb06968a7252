//! Echo correctness: single connections, many concurrent connections with random sizes,
//! client half-close, and the single-shot receive fallback.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{Flow, FlowSpec, Pattern, Rng, drive, echo_once, for_each_backend, with_backend};

#[test]
fn echo_basics() {
    for_each_backend(|b| {
        let mut server = b.start(&[]);

        let mut a = server.connect();
        assert_eq!(echo_once(&mut a, b"hello\n").unwrap(), b"hello\n");
        // Several messages on one connection come back in order.
        for i in 0..3u8 {
            let msg = vec![b'a' + i; 10 + usize::from(i)];
            assert_eq!(echo_once(&mut a, &msg).unwrap(), msg);
        }
        // A message larger than one provided buffer (4 KiB by default).
        let big = Pattern::new(1).bytes(0, 100_000);
        assert_eq!(echo_once(&mut a, &big).unwrap(), big);
        drop(a);

        // A connection that sends nothing: the server sees EOF and closes its side.
        let mut quiet = server.connect();
        quiet.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        quiet.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "nothing sent, nothing echoed");

        let c = server.wait_stats("both connections closed", Duration::from_secs(5), |c| {
            c.closed >= 2
        });
        assert_eq!((c.accepted, c.active), (2, 0));

        let fin = server.stop(libc::SIGTERM).assert_clean();
        let sent = 6 + 10 + 11 + 12 + 100_000;
        assert_eq!(fin.bytes_in, sent);
        assert_eq!(fin.bytes_out, sent);
        assert_eq!((fin.accepted, fin.closed, fin.active), (2, 2, 0));
        assert_eq!(fin.bufs_held, 0, "every provided buffer back in the ring");
        assert_eq!(fin.stale_cqes, 0);
        assert_eq!(fin.conn_errors, 0);
    });
}

#[test]
fn two_hundred_concurrent_connections_each_get_their_own_bytes() {
    for_each_backend(|b| {
        let mut server = b.start(&[]);
        let mut rng = Rng::new(200);
        let mut total = 0;
        let mut flows: Vec<Flow> = (0..200)
            .map(|id| {
                let bytes = rng.range(1, 256 * 1024);
                total += bytes;
                let spec = FlowSpec {
                    total: bytes,
                    window: 64 * 1024,
                    max_write: rng.range(1, 16 * 1024) as usize,
                    fixed_writes: false,
                    half_close: false,
                };
                Flow::connect(server.addr, id, spec).expect("connect")
            })
            .collect();
        drive(&mut flows, Duration::from_secs(30)).unwrap();
        drop(flows);

        server.wait_stats("200 connections closed", Duration::from_secs(5), |c| {
            c.closed >= 200
        });
        let fin = server.stop(libc::SIGTERM).assert_clean();
        eprintln!("200 connections, {total} bytes each way: {fin}");
        assert_eq!(fin.accepted, 200);
        assert_eq!(fin.active, 0);
        assert_eq!(fin.bytes_in, total);
        assert_eq!(fin.bytes_out, total);
        assert_eq!(fin.bufs_held, 0);
        assert_eq!(fin.stale_cqes, 0);
        assert_eq!(fin.conn_errors, 0);
    });
}

#[test]
fn half_close_after_one_mib_gets_every_byte_then_eof() {
    for_each_backend(|b| {
        let mut server = b.start(&[]);
        let spec = FlowSpec {
            half_close: true,
            ..FlowSpec::bulk(1 << 20)
        };
        let mut flows = vec![Flow::connect(server.addr, 7, spec).unwrap()];
        drive(&mut flows, Duration::from_secs(10)).unwrap();
        assert!(flows[0].eof && flows[0].received == 1 << 20);

        // A client that sends everything before reading a byte (the whole MiB sits in socket
        // buffers and the server's back-pressure) still gets it all, then EOF.
        let mut s = server.connect();
        let pat = Pattern::new(8);
        let data = pat.bytes(0, 1 << 20);
        let writer = {
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                w.write_all(&data).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        let (back, err) = common::read_to_end_or_error(&mut s);
        writer.join().unwrap();
        assert!(
            err.is_none(),
            "read ended with {err:?} after {} bytes",
            back.len()
        );
        assert_eq!(back.len(), 1 << 20);
        pat.check(0, &back).unwrap();

        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!((fin.accepted, fin.closed), (2, 2));
        assert_eq!(fin.bytes_out, 2 << 20);
        assert_eq!(fin.bufs_held, 0);
    });
}

/// `--no-multishot-recv` forces the 5.19 path: one single-shot receive per completion.
#[test]
fn single_shot_recv_fallback_echoes_and_half_closes() {
    with_backend("uring", |b| {
        let mut server = b.start(&["--no-multishot-recv"]);
        let banner = server.wait_stderr_line("ringecho: io_uring", Duration::from_secs(5));
        assert!(
            banner.contains("recv=single-shot"),
            "start-up line should say single-shot: {banner}"
        );
        let mut rng = Rng::new(10);
        let mut total = 0;
        let mut flows: Vec<Flow> = (0..20)
            .map(|id| {
                let bytes = rng.range(1, 200_000);
                total += bytes;
                Flow::connect(server.addr, id, FlowSpec::bulk(bytes)).unwrap()
            })
            .collect();
        let spec = FlowSpec {
            half_close: true,
            ..FlowSpec::bulk(1 << 20)
        };
        flows.push(Flow::connect(server.addr, 99, spec).unwrap());
        total += 1 << 20;
        drive(&mut flows, Duration::from_secs(20)).unwrap();
        assert!(flows.last().unwrap().eof, "half-closed flow saw EOF");
        drop(flows);

        server.wait_stats("21 connections closed", Duration::from_secs(5), |c| {
            c.closed >= 21
        });
        let fin = server.stop(libc::SIGTERM).assert_clean();
        eprintln!(
            "single-shot: recv_cqes={} recv_rearms={} enters={} ({fin})",
            fin.recv_cqes, fin.recv_rearms, fin.enters
        );
        assert_eq!(fin.bytes_out, total);
        assert_eq!(fin.bufs_held, 0);
        // Every data completion ends a single-shot receive, which is then armed again (except,
        // at most, the last one per connection).
        assert!(
            fin.recv_rearms + fin.accepted >= fin.recv_cqes,
            "single-shot receives must be re-armed after each completion: {fin}"
        );
        assert!(fin.recv_rearms > 0);
    });
}

/// 20 connections (every third half-closing) of `bytes` each against a server started with
/// `args`; returns the final counters after checking every byte and a clean exit.
fn echo_with(b: common::Backend, args: &[&str], bytes: u64) -> ringecho::stats::Counters {
    let mut server = b.start(args);
    let mut rng = Rng::new(bytes);
    let mut flows: Vec<Flow> = (0..20)
        .map(|id| {
            let spec = FlowSpec {
                total: bytes,
                window: 64 * 1024,
                max_write: rng.range(1, 16 * 1024) as usize,
                fixed_writes: false,
                half_close: id % 3 == 0,
            };
            Flow::connect(server.addr, id, spec).unwrap()
        })
        .collect();
    drive(&mut flows, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    drop(flows);
    server.wait_stats("20 closed", Duration::from_secs(10), |c| c.closed >= 20);
    let fin = server.stop(libc::SIGTERM).assert_clean();
    eprintln!("{args:?}: {fin}");
    assert_eq!(fin.bytes_out, 20 * bytes, "{args:?}");
    assert_eq!(fin.bufs_held, 0, "{args:?}");
    assert_eq!(fin.stale_cqes, 0, "{args:?}");
    assert_eq!(fin.conn_errors, 0, "{args:?}");
    fin
}

/// Settings the default run never exercises: buffers of 1 and 7 bytes and one larger than a
/// socket read, a zero budget (every echoed byte copied), and `--max-pending 1`, which pauses a
/// connection after every receive, so the receive is cancelled and re-armed all the time and
/// completions race each cancellation.
#[test]
fn unusual_buffer_and_backpressure_settings_still_echo_exactly() {
    with_backend("uring", |b| {
        echo_with(b, &["--buf-count", "64", "--buf-size", "1"], 4 * 1024);
        echo_with(b, &["--buf-count", "256", "--buf-size", "7"], 32 * 1024);
        echo_with(
            b,
            &["--buf-count", "16", "--buf-size", "200000"],
            512 * 1024,
        );
        let fin = echo_with(b, &["--buf-budget", "0"], 256 * 1024);
        assert_eq!(
            fin.copied_bytes, fin.bytes_in,
            "a zero budget copies every byte"
        );
        let fin = echo_with(b, &["--max-pending", "1"], 256 * 1024);
        assert!(fin.paused > 0 && fin.recv_rearms > 0, "{fin}");
        echo_with(
            b,
            &[
                "--max-pending",
                "1",
                "--buf-count",
                "8",
                "--no-multishot-recv",
            ],
            128 * 1024,
        );
    });
}

/// The ring set-up fallbacks (what older kernels get) and batching switched off.
#[test]
fn every_ring_mode_and_batched_waits_echo_exactly() {
    with_backend("uring", |b| {
        for mode in ["defer-taskrun", "coop-taskrun", "plain"] {
            let server = b.start(&["--ring-mode", mode]);
            let banner = server.wait_stderr_line("ringecho: io_uring", Duration::from_secs(5));
            assert!(banner.contains(&format!("mode={mode}")), "{banner}");
            drop(server);
            echo_with(b, &["--ring-mode", mode], 256 * 1024);
        }
        // The opt-in completion batching (the default waits for one completion).
        echo_with(b, &["--batch-wait-us", "50"], 256 * 1024);
        echo_with(
            b,
            &["--batch-wait-us", "50", "--batch-max", "1"],
            256 * 1024,
        );
    });
}

/// The buffer-ring and send variants besides the default (bundles of whole buffers): one
/// buffer per completion, incremental consumption (alone and with bundles, where a bundle
/// starts mid-buffer), small buffers with each, single-shot receives, zero-copy sends (two
/// completions per send), SQPOLL, a registered ring fd, and ordinary descriptors for the
/// connections (what kernels before 6.13 get).
#[test]
fn buffer_ring_and_send_variants_echo_exactly() {
    with_backend("uring", |b| {
        for args in [
            &["--no-recv-bundle"][..],
            &["--no-recv-bundle", "--buf-size", "512", "--buf-count", "64"],
            &["--buf-incremental", "--no-recv-bundle"],
            &["--buf-incremental"],
            &[
                "--buf-incremental",
                "--buf-size",
                "512",
                "--buf-count",
                "64",
            ],
            &["--buf-size", "512", "--buf-count", "64"],
            &["--no-multishot-recv", "--buf-size", "512"],
            &[
                "--no-multishot-recv",
                "--no-recv-bundle",
                "--buf-size",
                "512",
            ],
            &["--buf-size", "1000", "--buf-count", "8"],
            &["--zc-threshold", "1024"],
            &["--sqpoll=10"],
            &["--register-ring-fd"],
            &["--no-direct-descriptors"],
            &[
                "--no-direct-descriptors",
                "--no-multishot-recv",
                "--zc-threshold",
                "1024",
            ],
        ] {
            let server = b.start(args);
            let banner = server.wait_stderr_line("ringecho: io_uring", Duration::from_secs(5));
            drop(server);
            eprintln!("{args:?}: {banner}");
            echo_with(b, args, 256 * 1024);
        }
    });
}

/// `ringecho` with no subcommand serves; so does a server on IPv6 loopback.
#[test]
fn serves_without_a_subcommand_and_on_ipv6() {
    for_each_backend(|b| {
        let mut server = common::Server::spawn(b, b.command_without_subcommand(&[]))
            .unwrap_or_else(|e| panic!("ringecho without a subcommand: {e}"));
        let mut s = server.connect();
        assert_eq!(echo_once(&mut s, b"bare").unwrap(), b"bare");
        drop(s);
        server.stop(libc::SIGTERM).assert_clean();

        if std::net::TcpListener::bind("[::1]:0").is_err() {
            common::skipped("the IPv6 half: no [::1] on this machine");
            return;
        }
        let mut server = b.start(&["--addr", "[::1]:0"]);
        assert!(server.addr.is_ipv6(), "{}", server.addr);
        let mut flows = vec![Flow::connect(server.addr, 6, FlowSpec::bulk(300_000)).unwrap()];
        drive(&mut flows, Duration::from_secs(10)).unwrap();
        drop(flows);
        server.wait_stats("closed", Duration::from_secs(5), |c| c.closed >= 1);
        let fin = server.stop(libc::SIGTERM).assert_clean();
        assert_eq!(fin.bytes_out, 300_000);
    });
}

/// One stream (`window` bytes in flight, fixed writes of `write` bytes) against a server
/// started with `args`; returns the final counters and the io_uring start-up line, after
/// checking every byte and a clean exit.
fn one_stream(
    b: common::Backend,
    args: &[&str],
    total: u64,
    flow: (u64, usize),
) -> (ringecho::stats::Counters, String) {
    streams(b, args, 1, total, flow)
}

/// `n` streams of `total` bytes each, as `one_stream`.
fn streams(
    b: common::Backend,
    args: &[&str],
    n: u64,
    total: u64,
    (window, write): (u64, usize),
) -> (ringecho::stats::Counters, String) {
    let mut server = b.start(args);
    // The start-up line goes to stderr before `listening on` goes to stdout, but the two are
    // read apart: wait for it rather than look at what was read so far.
    let startup = server.wait_stderr_line("ringecho: io_uring", Duration::from_secs(10));
    let capped = recv_features(&startup).contains("+cap");
    let spec = FlowSpec {
        total,
        window,
        max_write: write,
        fixed_writes: true,
        half_close: true,
    };
    let mut flows: Vec<_> = (0..n)
        .map(|i| Flow::connect(server.addr, 7 + i, spec).unwrap())
        .collect();
    drive(&mut flows, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    drop(flows);
    server.wait_stats("closed", Duration::from_secs(10), |c| c.closed >= n);
    let fin = server.stop(libc::SIGTERM).assert_clean();
    eprintln!("{args:?} (capped: {capped}): {fin}");
    assert_eq!(fin.bytes_out, n * total, "{args:?}");
    assert_eq!(fin.bufs_held, 0, "{args:?}");
    assert_eq!((fin.stale_cqes, fin.conn_errors), (0, 0), "{args:?}");
    (fin, startup)
}

/// From `MANY_STREAMS` (4) streams on, each stream of a window up to 64 KiB is received whole,
/// one piece armed per enter, the next piece of any stream waiting its turn. So about one
/// completion per enter: pieces armed in earlier enters that found the socket empty may
/// complete together, hence up to 1.5 (with the share rule, every stream had a piece in each
/// enter: 2.8 completions per enter here). Six streams of 64 KiB windows all come back exact,
/// and nothing is left held. With SQPOLL, where there is no enter to pace by, the share rule
/// holds, and the bytes are as exact.
#[test]
fn many_streams_take_one_piece_per_enter() {
    with_backend("uring", |b| {
        const SIX: (u64, usize) = (64 * 1024, 16 * 1024);
        let (fin, startup) = streams(b, &[], 6, 8 << 20, SIX);
        if !recv_features(&startup).contains("+cap") {
            common::skipped("this kernel has no receive bundles (6.10)");
            return;
        }
        // Before the streams are told, receives take their first windows whole (a few per
        // stream) and may share an enter.
        let slack = 16 * 6;
        assert!(
            fin.recv_cqes * 2 <= fin.enters * 3 + slack,
            "pieces of several streams per enter: {fin}"
        );
        streams(b, &["--sqpoll=10"], 6, 8 << 20, SIX);
    });
}

/// The io_uring start-up line lists the receive's features (`recv=multishot+bundle+cap+inq`).
fn recv_features(startup: &str) -> &str {
    startup
        .split_whitespace()
        .find_map(|w| w.strip_prefix("recv="))
        .unwrap_or("")
}

/// A stream taken whole (`--no-recv-cap`, or a kernel without the cap) is received into the
/// large buffers (`--stream-bufs`, 64 KiB each) once its window shows it is a stream, and
/// every byte comes back in order; without them (`--stream-bufs 0`) no receive lands there;
/// with a single one, streams that find it held fall back to the small buffers, still exact.
#[test]
fn streams_taken_whole_land_in_large_buffers() {
    with_backend("uring", |b| {
        const FLOW: (u64, usize) = (256 * 1024, 64 * 1024);
        let bundles = {
            let server = b.start(&[]);
            server
                .wait_stderr_line("ringecho: io_uring", Duration::from_secs(10))
                .contains("+bundle")
        };
        if !bundles {
            common::skipped("no receive bundles (6.10): streams are not received whole");
            return;
        }
        let (fin, _) = one_stream(b, &["--no-recv-cap"], 16 << 20, FLOW);
        assert!(fin.stream_buf_recvs > 0, "no receive used them: {fin}");
        let (none, _) = one_stream(b, &["--no-recv-cap", "--stream-bufs", "0"], 16 << 20, FLOW);
        assert_eq!(none.stream_buf_recvs, 0, "{none}");
        let (one, _) = one_stream(b, &["--no-recv-cap", "--stream-bufs", "1"], 16 << 20, FLOW);
        assert!(one.stream_buf_recvs > 0, "{one}");
        one_stream(
            b,
            &[
                "--no-recv-cap",
                "--max-pending",
                "4096",
                "--buf-budget",
                "0",
            ],
            4 << 20,
            FLOW,
        );
    });
}

/// Where the kernel has receive bundles (6.10), a lone pipelined stream is taken in pieces:
/// once its window is seen (128 KiB here, written 32 KiB at a time) it is received with
/// single-shot receives of at most an eighth of it, 16 KiB, so no completion carries more
/// than that (the multishot receive it started with is cancelled once, or ended by the pause
/// its first window causes), and every byte still comes back in order; `--no-recv-cap` takes
/// what the socket holds, more per completion. A large window (256 KiB, written 64 KiB at a
/// time) is taken in pieces of 32 KiB, an eighth too. Pieces are echoed from their piece
/// buffers.
/// A stream that never pauses has its socket looked at every 64 pieces, through the
/// `SIOCINQ` socket command where the kernel has it (6.7), else by an uncapped receive in
/// place of a piece; neither cancels anything. Then the pieces under pressure: incremental
/// buffers, an 8-buffer ring, and a watermark that pauses (cancels) the piece receive over
/// and over.
#[test]
fn a_lone_stream_is_received_in_capped_pieces() {
    with_backend("uring", |b| {
        const TOTAL: u64 = 32 << 20;
        const FLOW: (u64, usize) = (128 * 1024, 32 * 1024);
        let (fin, startup) = one_stream(b, &[], TOTAL, FLOW);
        if !recv_features(&startup).contains("+cap") {
            common::skipped("this kernel has no receive bundles (6.10)");
            return;
        }
        // At most 16 KiB per piece; the receives that took the first windows whole count
        // too, hence the slack.
        let per_cqe = |c: &ringecho::stats::Counters| c.bytes_in / c.recv_cqes.max(1);
        assert!(per_cqe(&fin) <= 18 * 1024, "not capped: {fin}");
        let (large, _) = one_stream(b, &[], TOTAL, (256 * 1024, 64 * 1024));
        assert!(per_cqe(&large) <= 36 * 1024, "not capped: {large}");
        // A 64 KiB window in 8 KiB pieces (about 2048 of them), with a look at the socket
        // every 64: the socket command (`+inq`, 6.7), or an uncapped receive; no look
        // cancels a receive.
        let (looks, _) = one_stream(b, &[], 16 << 20, (64 * 1024, 4096));
        if recv_features(&startup).ends_with("+cap+inq") {
            assert!(looks.sock_inqs >= 8, "too few looks: {looks}");
        }
        assert!(
            looks.recv_recaps <= 4,
            "looks cancelled the receive: {looks}"
        );
        assert!(
            looks.copied_bytes < looks.bytes_out / 2,
            "pieces are echoed from their piece buffers, not copied: {looks}"
        );
        let (whole, _) = one_stream(b, &["--no-recv-cap"], TOTAL, FLOW);
        assert_eq!(whole.recv_recaps, 0, "{whole}");
        assert!(
            per_cqe(&whole) > per_cqe(&fin),
            "uncapped: {whole}; capped: {fin}"
        );

        const SMALL: (u64, usize) = (64 * 1024, 4096);
        one_stream(b, &["--buf-incremental"], 8 << 20, FLOW);
        one_stream(b, &["--buf-incremental"], 4 << 20, SMALL);
        one_stream(b, &["--buf-count", "8"], 4 << 20, SMALL);
        let (paused, _) = one_stream(b, &["--max-pending", "4096"], 4 << 20, SMALL);
        assert!(paused.paused > 0, "{paused}");
    });
}
