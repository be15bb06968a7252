//! `ringecho serve --metrics ADDR`: a Prometheus scrape over loopback, parsed by a real
//! Prometheus text-format parser, carries every stats-line field, summed over shards and
//! labelled with the backend; anything but `GET /metrics` gets a clean error and a close; a
//! scraper that sends nothing delays only the next scrape, never the echo path; bad addresses
//! are refused with one line. Also `--stats-format json`: the stats and final lines as JSON.

mod common;
#[path = "bench_support/json.rs"]
mod json;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use ringecho::stats::Counters;

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

/// Starts a server with a metrics listener on a free port; returns it and the listener's address
/// from its `metrics on http://ADDR/metrics` line.
fn start(b: Backend, extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let s = b.start(&args);
    let line = s.wait_stdout_line("metrics on ", Duration::from_secs(10));
    let addr = line
        .strip_prefix("metrics on http://")
        .and_then(|r| r.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("not `metrics on http://ADDR/metrics`: {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (s, addr)
}

/// Sends `request` and reads the whole answer (the server closes after one).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("answer, then close");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    (status, head.to_string(), body.to_string())
}

fn scrape(addr: SocketAddr) -> Exposition {
    let (status, head, body) = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse_prometheus(&body).unwrap_or_else(|e| panic!("not the text format: {e:?}\n{body}"))
}

/// The one sample of family `name`: its type, its labels, its value.
fn sample(e: &Exposition, name: &str) -> (PrometheusType, Vec<(String, String)>, f64, String) {
    let f = e
        .families
        .get(name)
        .unwrap_or_else(|| panic!("no family {name}"));
    let samples: Vec<_> = f.iter_samples().collect();
    assert_eq!(samples.len(), 1, "{name}: one sample (summed over shards)");
    let labels = f
        .get_label_names()
        .iter()
        .cloned()
        .zip(samples[0].get_labelset().unwrap().iter_values().cloned())
        .collect();
    let value = match &samples[0].value {
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Gauge(g) => g.as_f64(),
        other => panic!("{name}: neither counter nor gauge: {other:?}"),
    };
    (f.family_type.clone(), labels, value, f.help.clone())
}

/// Echoes `n` bytes on a new connection and closes it.
fn echo(s: &Server, n: usize) {
    let mut c = s.connect();
    let msg = vec![b'x'; n];
    c.write_all(&msg).unwrap();
    let mut back = vec![0; n];
    c.read_exact(&mut back).unwrap();
}

#[test]
fn a_scrape_has_every_stats_field_summed_over_shards_and_labelled() {
    for_each_backend(|b| {
        let (mut s, maddr) = start(b, &["--threads", "2"]);
        let conns = 6;
        for _ in 0..conns {
            echo(&s, 1000);
        }
        let held = s.connect();
        let stats = s.wait_stats("every connection counted", Duration::from_secs(10), |c| {
            c.accepted == conns + 1 && c.closed == conns && c.bytes_out == conns * 1000
        });
        let e = scrape(maddr);
        for (name, help) in Counters::NAMES.iter().zip(Counters::HELP) {
            let gauge = Counters::GAUGES.contains(name);
            let family = if gauge {
                format!("ringecho_{name}")
            } else {
                format!("ringecho_{name}_total")
            };
            let (kind, labels, _, h) = sample(&e, &family);
            let want = if gauge {
                PrometheusType::Gauge
            } else {
                PrometheusType::Counter
            };
            assert_eq!(kind, want, "{family}");
            assert_eq!(labels, [("backend".into(), b.name.into())], "{family}");
            assert_eq!(h, help.trim(), "{family}: HELP is the field's doc");
        }
        let v = |f: &str| sample(&e, f).2;
        // Connections and bytes do not move while nothing happens: the scrape sums the shards
        // to what the stats line printed.
        assert_eq!(v("ringecho_accepted_total"), (conns + 1) as f64);
        assert_eq!(v("ringecho_closed_total"), stats.closed as f64);
        assert_eq!(v("ringecho_bytes_in_total"), stats.bytes_in as f64);
        assert_eq!(v("ringecho_bytes_out_total"), stats.bytes_out as f64);
        assert_eq!(v("ringecho_active"), 1.0, "one connection held");
        assert!(v("ringecho_enters_total") >= stats.enters as f64);
        let (kind, _, rss, _) = sample(&e, "ringecho_resident_memory_bytes");
        assert_eq!(kind, PrometheusType::Gauge);
        let rss_kib = s.rss_kib() as f64;
        assert!(
            rss > rss_kib * 1024.0 / 4.0 && rss < rss_kib * 1024.0 * 4.0,
            "resident memory {rss} B vs VmRSS {rss_kib} KiB"
        );
        let (kind, _, up, _) = sample(&e, "ringecho_uptime_seconds");
        assert_eq!(kind, PrometheusType::Gauge);
        assert!(up > 0.0 && up < 60.0, "uptime {up}");
        assert_eq!(
            e.families.len(),
            Counters::NAMES.len() + 2,
            "no other families"
        );
        drop(held);
        s.stop(libc::SIGTERM).assert_clean();
    });
}

#[test]
fn anything_but_get_metrics_is_refused_and_closed() {
    with_backend("epoll", |b| {
        let (mut s, maddr) = start(b, &[]);
        for (request, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], 404),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
            (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
            (b"GET /metrics\r\n\r\n", 400),
        ] {
            let (status, head, _) = http(maddr, request);
            assert_eq!(
                status,
                want,
                "{:?}: {head}",
                String::from_utf8_lossy(request)
            );
            assert!(head.contains("Connection: close"), "{head}");
        }
        let (status, head, _) = http(maddr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(head.contains("Allow: GET, HEAD"), "{status} {head}");
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(20 * 1024)
        );
        assert_eq!(http(maddr, huge.as_bytes()).0, 431);
        let (status, head, body) = http(maddr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, ""), "{head}");
        // Still answering properly after all that.
        scrape(maddr);
        s.stop(libc::SIGTERM).assert_clean();
    });
}

#[test]
fn a_silent_scraper_delays_the_next_scrape_only_and_never_the_echo_path() {
    with_backend("epoll", |b| {
        let (mut s, maddr) = start(b, &[]);
        // Connects, sends half a request line, then nothing: holds the one metrics thread.
        let mut silent = TcpStream::connect(maddr).unwrap();
        silent.write_all(b"GET /met").unwrap();
        let t = Instant::now();
        // The echo path does not notice.
        let mut c = s.connect();
        let pat = Pattern::new(7);
        for round in 0..50u64 {
            let msg = pat.bytes(round * 64, 64);
            assert_eq!(echo_once(&mut c, &msg).unwrap(), msg);
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "echo took {:?} while a scraper stalled",
            t.elapsed()
        );
        // The next scrape waits for the silent one's timeout (2 s), then is answered.
        scrape(maddr);
        let waited = t.elapsed();
        assert!(waited < Duration::from_secs(6), "scrape after {waited:?}");
        // The silent client was dropped without an answer.
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(silent.read(&mut buf), Ok(0) | Err(_)));
        drop(c);
        s.stop(libc::SIGTERM).assert_clean();
    });
}

#[test]
fn stats_format_json_writes_one_object_a_line_with_every_field() {
    with_backend("epoll", |b| {
        let mut s = b.start(&["--stats-format", "json"]);
        echo(&s, 500);
        let stopped = s.stop(libc::SIGTERM);
        assert!(stopped.status.success(), "{:?}", stopped.stderr);
        let objects: Vec<_> = stopped
            .stderr
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| json::parse_flat_json(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let last = objects.last().expect("a final line");
        assert_eq!(last["kind"], json::Json::Str("final".into()));
        assert!(
            objects[..objects.len() - 1]
                .iter()
                .all(|o| o["kind"] == json::Json::Str("stats".into())),
            "interval lines are kind stats"
        );
        for o in &objects {
            assert_eq!(
                o.len(),
                Counters::NAMES.len() + 3,
                "kind, t, counters, rss_kib"
            );
            for name in Counters::NAMES.iter().chain(&["t", "rss_kib"]) {
                assert!(o.contains_key(*name), "{name} missing");
            }
        }
        assert_eq!(last["accepted"].num(), 1.0);
        assert_eq!(last["bytes_out"].num(), 500.0);
        assert!(
            !stopped
                .stderr
                .iter()
                .any(|l| l.starts_with("stats:") || l.starts_with("final:")),
            "no text lines"
        );
    });
}

#[test]
fn the_parser_used_here_rejects_what_is_not_the_text_format() {
    // The checks above mean something only if the parser can say no.
    for bad in [
        "ringecho_x{backend=\"uring\"} many\n",
        "# TYPE ringecho_x counter\nringecho_x{backend=\"uring\" 1\n",
        "# TYPE ringecho_x counter\nringecho_x -1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
    assert!(parse_prometheus("# TYPE ringecho_x gauge\nringecho_x{backend=\"uring\"} 1\n").is_ok());
}

#[test]
fn bad_metrics_addresses_are_refused_in_one_line() {
    let b = Backend {
        name: "epoll",
        flags: &["--backend", "epoll"],
    };
    let (status, _, err) = run_to_exit(
        &mut b.command(&["--metrics", "not-an-address"]),
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("--metrics"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let (status, _, err) =
        run_to_exit(&mut b.command(&["--metrics", &at]), Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("ringecho: io_uring") && !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].contains("--metrics") && lines[0].contains(&at) && lines[0].contains("in use"),
        "{err}"
    );
}
