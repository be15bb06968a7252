//! `--protocol framed` and `--protocol http` over real loopback sockets, on both backends.
//!
//! Each test starts the real binary on port 0 and waits for its `listening on ADDR` line. The
//! io_uring half is skipped, with the reason printed, where io_uring is unavailable.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringecho::stats::Counters;

/// Longest any single step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

/// A running `ringecho` serving one protocol; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Everything the server wrote to stderr so far (it prints a stats line every 50 ms).
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `ringecho --backend BACKEND ARGS...`; `None` if that backend is unavailable here.
    fn start(backend: &str, args: &[&str]) -> Option<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringecho"))
            .args(["--addr", "127.0.0.1:0", "--backend", backend])
            .args(["--stats-interval", "0.05", "--drain-timeout", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringecho");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = BufReader::new(child.stderr.take().unwrap());
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut line = String::new();
            while err_pipe.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the server's stdout");
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let status = child.wait().expect("wait for ringecho");
            thread::sleep(Duration::from_millis(50)); // let the stderr reader catch up
            let why = stderr.lock().unwrap().clone();
            if backend == "uring" && status.code() == Some(2) {
                eprintln!("skipping the io_uring half: {}", why.trim());
                return None;
            }
            panic!("ringecho --backend {backend} did not start ({status}): {why}");
        };
        Some(Server {
            child,
            addr: addr.parse().expect("a socket address"),
            stderr,
        })
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(STEP)).unwrap();
        s.set_write_timeout(Some(STEP)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Waits until a stats line satisfies `ok`, and returns it.
    fn wait_for_counters(&self, what: &str, ok: impl Fn(&Counters) -> bool) -> Counters {
        let deadline = Instant::now() + STEP;
        loop {
            let last = {
                let err = self.stderr.lock().unwrap();
                err.lines()
                    .rev()
                    .find(|l| l.starts_with("stats:"))
                    .map(Counters::parse)
            };
            if let Some(c) = last
                && ok(&c)
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no stats line with {what}: {last:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `test` against a server on each backend (skipping io_uring where it is unavailable).
fn for_each_backend(args: &[&str], test: impl Fn(&Server)) {
    for backend in ["uring", "epoll"] {
        if let Some(server) = Server::start(backend, args) {
            eprintln!("-- backend {backend}");
            test(&server);
        }
    }
}

/// Reads until the peer closes. A reset after the close counts as the end too: a server that
/// closes with unread request bytes makes its kernel send RST instead of FIN.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---- framed ----------------------------------------------------------------------------------

#[test]
fn framed_echoes_frames_whatever_way_they_are_split() {
    for_each_backend(&["--protocol", "framed"], |server| {
        let mut s = server.connect();
        let mut stream = Vec::new();
        for len in [0, 1, 5, 100, 4095, 4096, 4097, 20_000] {
            stream.extend(frame(&pattern(len)));
        }
        // Writes of 1, 2, 3... bytes split headers and bodies in every place.
        let mut at = 0;
        let mut step = 1;
        while at < stream.len() {
            let end = (at + step).min(stream.len());
            s.write_all(&stream[at..end]).unwrap();
            at = end;
            step = step % 7 + 1;
            if step == 1 {
                // Let some pieces arrive on their own rather than coalesced.
                thread::sleep(Duration::from_micros(200));
            }
        }
        let mut back = vec![0; stream.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == stream, "echoed frames differ");
    });
}

#[test]
fn framed_a_frame_larger_than_max_pending_streams_back_before_it_is_complete() {
    let args = ["--protocol", "framed", "--max-pending", "4096"];
    for_each_backend(&args, |server| {
        let s = server.connect();
        let mut w = s.try_clone().unwrap();
        let mut r = s;
        // A frame of 1 MiB (the default --max-frame, inclusive): 256 times the watermark.
        let f = frame(&pattern(1 << 20));
        let half = f.len() / 2;
        let (go_on, wait) = mpsc::channel();
        let writer = {
            let f = f.clone();
            thread::spawn(move || {
                w.write_all(&f[..half]).unwrap();
                // The rest only once the first half came back: proof of cut-through.
                wait.recv_timeout(STEP).expect("first half echoed");
                w.write_all(&f[half..]).unwrap();
            })
        };
        let mut back = vec![0; f.len()];
        r.read_exact(&mut back[..half]).unwrap();
        go_on.send(()).unwrap();
        r.read_exact(&mut back[half..]).unwrap();
        writer.join().unwrap();
        assert!(back == f, "echoed frame differs");
    });
}

#[test]
fn framed_an_oversized_length_closes_the_connection_after_the_frames_before_it() {
    for_each_backend(&["--protocol", "framed", "--max-frame", "1000"], |server| {
        let mut s = server.connect();
        let mut stream = frame(b"first");
        stream.extend(frame(&pattern(1000)));
        stream.extend(1001u32.to_be_bytes());
        s.write_all(&stream).unwrap();
        let mut want = frame(b"first");
        want.extend(frame(&pattern(1000)));
        assert!(
            read_to_close(&mut s) == want,
            "only the valid frames come back"
        );
        // The server sent FIN after the valid frames; it closes once this side closes too.
        drop(s);
        let c = server.wait_for_counters("closed=1", |c| c.closed == 1);
        assert_eq!((c.proto_closes, c.proto_too_large), (1, 1));
        // The server carries on for other connections.
        let mut s = server.connect();
        s.write_all(&frame(b"again")).unwrap();
        let mut back = [0; 9];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back[..], frame(b"again")[..]);
    });
}

// ---- http ------------------------------------------------------------------------------------

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response; `head_only` for a response to `HEAD` (no body follows).
fn read_response(r: &mut impl BufRead, head_only: bool) -> Response {
    let mut head = String::new();
    loop {
        let n = r.read_line(&mut head).expect("read a response head");
        assert!(n > 0, "connection closed inside a response head: {head:?}");
        if head.ends_with("\r\n\r\n") {
            break;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut resp = Response {
        status,
        head,
        body: Vec::new(),
    };
    if !head_only && status >= 200 {
        let len: usize = resp
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).expect("read a response body");
    }
    resp
}

fn hello(len: usize) -> Vec<u8> {
    b"Hello, world\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

#[test]
fn http_answers_pipelined_requests_in_order_on_a_kept_alive_connection() {
    for_each_backend(&["--protocol", "http"], |server| {
        let mut s = server.connect();
        let mut r = BufReader::new(s.try_clone().unwrap());
        for round in 0..3 {
            s.write_all(
                b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
                  POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world\
                  HEAD /c HTTP/1.1\r\nHost: t\r\n\r\n\
                  GET /d HTTP/1.1\r\nHost: t\r\n\r\n",
            )
            .unwrap();
            for head_only in [false, false, true, false] {
                let resp = read_response(&mut r, head_only);
                assert_eq!(resp.status, 200, "round {round}: {resp:?}");
                assert_eq!(resp.header("content-length"), Some("13"));
                assert_eq!(
                    resp.header("connection"),
                    None,
                    "HTTP/1.1 keeps it implicitly"
                );
                if !head_only {
                    assert_eq!(resp.body, hello(13));
                }
            }
        }
    });
}

#[test]
fn http_connection_close_and_http_1_0_are_answered_then_closed() {
    for_each_backend(&["--protocol", "http"], |server| {
        for (request, want_connection) in [
            (
                &b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
                "close",
            ),
            (b"GET / HTTP/1.0\r\n\r\n", "close"),
        ] {
            let mut s = server.connect();
            s.write_all(request).unwrap();
            let all = read_to_close(&mut s);
            let resp = read_response(&mut &all[..], false);
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("connection"), Some(want_connection));
            assert_eq!(resp.body, hello(13));
            assert_eq!(
                all.len(),
                resp.head.len() + 13,
                "nothing after the response"
            );
        }
        // HTTP/1.0 that asks for keep-alive stays open.
        let mut s = server.connect();
        let mut r = BufReader::new(s.try_clone().unwrap());
        for _ in 0..2 {
            s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .unwrap();
            let resp = read_response(&mut r, false);
            assert_eq!(resp.header("connection"), Some("keep-alive"));
        }
        server.wait_for_counters("proto_requested=2", |c| c.proto_requested == 2);
    });
}

#[test]
fn http_refusals_are_answered_then_closed_and_counted() {
    for_each_backend(&["--protocol", "http"], |server| {
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let cases: [(&[u8], u16); 4] = [
            (
                b"GET / HTTP/1.1\r\nHost: t\r\n\r\nNOT HTTP AT ALL\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", 400), // HTTP/1.1 without Host
            (big_head.as_bytes(), 431),
            (
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                501,
            ),
        ];
        for (request, want) in cases {
            let mut s = server.connect();
            s.write_all(request).unwrap();
            let all = read_to_close(&mut s);
            let mut rest = &all[..];
            if request.starts_with(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nNOT") {
                assert_eq!(read_response(&mut rest, false).status, 200);
            }
            let resp = read_response(&mut rest, false);
            assert_eq!(resp.status, want, "{resp:?}");
            assert_eq!(resp.header("connection"), Some("close"));
            assert!(rest.is_empty(), "nothing after the refusal");
        }
        let c = server.wait_for_counters("four refusals", |c| c.proto_closes == 4);
        assert_eq!(
            (c.proto_malformed, c.proto_too_large, c.proto_unsupported),
            (2, 1, 1)
        );
    });
}

#[test]
fn http_large_configured_bodies_and_100_continue() {
    for_each_backend(&["--protocol", "http", "--http-body", "100000"], |server| {
        let mut s = server.connect();
        let mut r = BufReader::new(s.try_clone().unwrap());
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        for _ in 0..2 {
            let resp = read_response(&mut r, false);
            assert_eq!(resp.status, 200);
            assert!(resp.body == hello(100_000), "body differs");
        }
        // A client that waits for 100 Continue before sending its body gets it.
        let body = pattern(300_000);
        let head = format!(
            "PUT / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        assert_eq!(read_response(&mut r, false).status, 100);
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || w.write_all(&body).unwrap());
        let resp = read_response(&mut r, false);
        writer.join().unwrap();
        assert_eq!((resp.status, resp.body.len()), (200, 100_000));
    });
}
