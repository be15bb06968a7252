//! A fixed `200 OK` for every HTTP/1.1 request: something to point HTTP load tools at.
//!
//! Every well-formed request gets the same response (a configured body of `--http-body` bytes),
//! whatever its method or target, in order, on a persistent connection unless the request says
//! otherwise. What is parsed is only what framing and persistence need:
//!
//! - **Heads** (request line, header lines, the empty line that ends them) may be at most
//!   [`MAX_HEAD`] bytes; a longer one is answered `431` and the connection closed. A head split
//!   over receives is held in a buffer that never grows beyond that. Lines end in CRLF or a bare
//!   LF; empty lines before a request line are ignored (RFC 9112 §2.2).
//! - **Request line**: `METHOD SP TARGET SP HTTP/1.1` (or `HTTP/1.0`), single spaces, a token
//!   method, a target of visible ASCII. Anything else is answered `400` and the connection
//!   closed, as is a header line without a colon, with whitespace before the colon, with control
//!   characters, or folded onto several lines (obsolete folding, RFC 9112 §5.2), an HTTP/1.1
//!   request without exactly one `Host`, and an invalid or conflicting `Content-Length`.
//! - **Bodies** announced by `Content-Length` are skipped as they arrive (never buffered), and
//!   the response follows the whole body. `Expect: 100-continue` with a body gets an interim
//!   `100 Continue` first, so clients that wait for it do not stall.
//! - **Chunked bodies** (any `Transfer-Encoding`) are answered `501 Not Implemented` and the
//!   connection closed: without parsing the chunks, where the next request starts is unknown.
//! - **Persistence**: HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes
//!   it unless `Connection: keep-alive` (then the response says `Connection: keep-alive`). A
//!   closing response says `Connection: close`, and pipelined requests after it are ignored.
//! - `HEAD` gets the response's head only. The response carries no `Date`: it is fixed.

use std::sync::Arc;

use super::{CloseReason, Protocol, Replies, Verdict};

/// Longest request head, in bytes, counted from the request line through the empty line.
pub const MAX_HEAD: usize = 8 * 1024;

/// Default body length of the response (`--http-body`): exactly `Hello, world\n`.
pub const DEFAULT_HTTP_BODY: usize = 13;

/// What the body is made of: this text, repeated and cut to the configured length.
const BODY_TEXT: &[u8] = b"Hello, world\n";

/// Responses up to this size are copied to the connection's buffer instead of shared: copies
/// of pipelined responses coalesce into one send, and copying a few KiB costs less than the
/// extra send a separate chunk would take. Larger ones are sent from the shared copy.
const COPY_MAX: usize = 4096;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 12\r\nConnection: close\r\n\r\nbad request\n";
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
Content-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\n\
request head over 8 KiB\n";
const NOT_IMPLEMENTED: &[u8] = b"HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\n\
Content-Length: 34\r\nConnection: close\r\n\r\nrequest bodies must be fixed-size\n";

/// Whether the connection stays open after a response, and what the response says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persistence {
    /// HTTP/1.1's default: open, nothing said.
    Implied,
    /// HTTP/1.0 asked to keep it: open, and the response must say so.
    KeepAlive,
    /// Closed after the response, which says so.
    Close,
}

/// The three `200 OK` responses, built once and shared by every connection.
#[derive(Debug)]
struct Responses {
    /// Indexed by [`Persistence`] as `usize`.
    full: [Arc<[u8]>; 3],
    /// Length of each one's head: what a `HEAD` request gets.
    head_len: [usize; 3],
}

impl Responses {
    fn new(body_len: usize) -> Responses {
        let body: Vec<u8> = BODY_TEXT.iter().copied().cycle().take(body_len).collect();
        let build = |connection: &str| {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nServer: ringecho\r\nContent-Type: text/plain\r\n\
                 Content-Length: {body_len}\r\n{connection}\r\n"
            )
            .into_bytes();
            let head_len = r.len();
            r.extend_from_slice(&body);
            (Arc::<[u8]>::from(r), head_len)
        };
        let (implied, h0) = build("");
        let (keep_alive, h1) = build("Connection: keep-alive\r\n");
        let (close, h2) = build("Connection: close\r\n");
        Responses {
            full: [implied, keep_alive, close],
            head_len: [h0, h1, h2],
        }
    }
}

/// What a well-formed request head asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    persistence: Persistence,
    /// A `HEAD` request: the response's head only.
    head_only: bool,
    /// `Content-Length`: body bytes that follow the head.
    body_len: u64,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    expect_continue: bool,
}

/// Why a head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// `400`: the head breaks the grammar.
    BadRequest,
    /// `501`: the body is framed by a transfer coding.
    NotImplemented,
}

/// Where the search for the empty line that ends a head stands, after the bytes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    /// Inside a line with content.
    Mid,
    /// Just after a line feed.
    Start,
    /// Just after a line feed and a carriage return.
    StartCr,
}

/// The HTTP protocol: one value per connection. See the module docs.
#[derive(Clone, Debug)]
pub struct Http {
    responses: Arc<Responses>,
    /// The start of a head whose end has not arrived yet (at most [`MAX_HEAD`] bytes).
    head: Vec<u8>,
    /// The scan for the end of the current head, across receives.
    line: LineState,
    /// The request whose body is being skipped, answered when `body_left` reaches zero.
    awaiting: Option<Request>,
    body_left: u64,
}

impl Http {
    /// Answers every request with a `200 OK` carrying `body_len` bytes (`Hello, world\n`
    /// repeated). The responses are built here, once; clones share them.
    pub fn new(body_len: usize) -> Http {
        Http {
            responses: Arc::new(Responses::new(body_len)),
            head: Vec::new(),
            line: LineState::Mid,
            awaiting: None,
            body_left: 0,
        }
    }

    /// Bytes of memory held for a partial head (never more than [`MAX_HEAD`]).
    pub fn held_head_capacity(&self) -> usize {
        self.head.capacity()
    }

    /// Finds the empty line ending the head in `bytes`, which continue what was scanned before.
    /// Returns how many of them belong to the head, if it ends among them.
    fn scan(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            match self.line {
                LineState::Mid => {
                    let nl = bytes[i..].iter().position(|&b| b == b'\n')?;
                    i += nl + 1;
                    self.line = LineState::Start;
                }
                LineState::Start | LineState::StartCr => {
                    match (self.line, bytes[i]) {
                        (_, b'\n') => return Some(i + 1),
                        (LineState::Start, b'\r') => self.line = LineState::StartCr,
                        _ => self.line = LineState::Mid,
                    }
                    i += 1;
                }
            }
        }
        None
    }

    /// Keeps `bytes` as the continuation of a partial head; the caller checked the limit.
    fn hold(&mut self, bytes: &[u8]) {
        let need = self.head.len() + bytes.len();
        debug_assert!(need <= MAX_HEAD);
        if need > self.head.capacity() {
            // Grow geometrically (a head trickling in byte by byte must not cost quadratic
            // copying) but never past the limit, so the bound holds for capacity, not just len.
            let target = need.max(2 * self.head.capacity()).min(MAX_HEAD);
            self.head.reserve_exact(target - self.head.len());
        }
        self.head.extend_from_slice(bytes);
    }

    /// Queues the `200 OK` for `req`; says whether to close after it.
    fn respond(&self, req: Request, out: &mut Replies<'_>) -> Verdict {
        let i = req.persistence as usize;
        let full = &self.responses.full[i];
        let len = if req.head_only {
            self.responses.head_len[i]
        } else {
            full.len()
        };
        if len <= COPY_MAX {
            out.write(&full[..len]);
        } else {
            out.write_shared(full, 0..len);
        }
        match req.persistence {
            Persistence::Close => Verdict::Close(CloseReason::Requested),
            _ => Verdict::Continue,
        }
    }
}

impl Default for Http {
    fn default() -> Http {
        Http::new(DEFAULT_HTTP_BODY)
    }
}

fn refuse(out: &mut Replies<'_>, response: &'static [u8], reason: CloseReason) -> Verdict {
    out.write_static(response);
    Verdict::Close(reason)
}

impl Protocol for Http {
    fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict {
        let mut pos = 0;
        while pos < input.len() {
            if let Some(req) = self.awaiting {
                let n = usize::try_from(self.body_left)
                    .map_or(input.len() - pos, |left| left.min(input.len() - pos));
                pos += n;
                self.body_left -= n as u64;
                if self.body_left > 0 {
                    break;
                }
                self.awaiting = None;
                match self.respond(req, out) {
                    Verdict::Continue => continue,
                    close => return close,
                }
            }
            if self.head.is_empty() {
                // Between requests: skip empty lines (some clients send CRLF after a body).
                while let Some(b'\r' | b'\n') = input.get(pos) {
                    pos += 1;
                }
                let Some(&first) = input.get(pos) else {
                    break;
                };
                if !is_tchar(first) {
                    // Not the start of a method: refuse now rather than wait for 8 KiB of, say,
                    // a TLS handshake.
                    return refuse(out, BAD_REQUEST, CloseReason::Malformed);
                }
                self.line = LineState::Mid;
            }
            let rest = &input[pos..];
            let Some(n) = self.scan(rest) else {
                if self.head.len() + rest.len() > MAX_HEAD {
                    return refuse(out, HEAD_TOO_LARGE, CloseReason::TooLarge);
                }
                self.hold(rest);
                break;
            };
            if self.head.len() + n > MAX_HEAD {
                return refuse(out, HEAD_TOO_LARGE, CloseReason::TooLarge);
            }
            let parsed = if self.head.is_empty() {
                // The common case: the whole head is in this receive, parsed where it lies.
                parse_head(&rest[..n])
            } else {
                self.hold(&rest[..n]);
                let parsed = parse_head(&self.head);
                self.head.clear();
                parsed
            };
            pos += n;
            let req = match parsed {
                Ok(req) => req,
                Err(Refusal::BadRequest) => {
                    return refuse(out, BAD_REQUEST, CloseReason::Malformed);
                }
                Err(Refusal::NotImplemented) => {
                    return refuse(out, NOT_IMPLEMENTED, CloseReason::Unsupported);
                }
            };
            if req.body_len == 0 {
                if let close @ Verdict::Close(_) = self.respond(req, out) {
                    return close;
                }
            } else {
                if req.expect_continue {
                    out.write_static(CONTINUE);
                }
                self.awaiting = Some(req);
                self.body_left = req.body_len;
            }
        }
        Verdict::Continue
    }
}

/// `tchar` of RFC 9110 §5.6.2: what methods and header names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in a header value: visible ASCII, space, tab, or obs-text (RFC 9110 §5.5).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses a `Content-Length` value: digits, or a list of identical ones (RFC 9112 §6.3).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for item in value.split(|&b| b == b',') {
        let item = trim_ows(item);
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = item.iter().try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Parses a complete head (ending with its empty line) into what the response depends on.
fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    use Refusal::BadRequest;
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or(BadRequest)?;
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) => (m, t, v),
        _ => return Err(BadRequest),
    };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| b.is_ascii_graphic())
    {
        return Err(BadRequest);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(BadRequest),
    };

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    let mut hosts = 0;
    for line in lines {
        if line.is_empty() {
            break; // the empty line ending the head
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(BadRequest)?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        // A leading space or tab (obsolete line folding) or one before the colon fails here.
        if name.is_empty()
            || !name.iter().all(|&b| is_tchar(b))
            || !value.iter().all(|&b| is_value_byte(b))
        {
            return Err(BadRequest);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value).ok_or(BadRequest)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(BadRequest);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never more than one.
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(BadRequest);
    }
    if chunked {
        return Err(Refusal::NotImplemented);
    }
    let persistence = if close {
        Persistence::Close
    } else if http11 {
        Persistence::Implied
    } else if keep_alive {
        Persistence::KeepAlive
    } else {
        Persistence::Close
    };
    Ok(Request {
        persistence,
        head_only: method == b"HEAD",
        body_len: content_length.unwrap_or(0),
        expect_continue: http11 && expect_continue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::replies::SendSpan;
    use crate::protocol::testkit::{Rng, Wire};

    /// The expected `200 OK`, written out independently of `Responses`.
    fn ok(body_len: usize, persistence: Persistence, head_only: bool) -> Vec<u8> {
        let connection = match persistence {
            Persistence::Implied => "",
            Persistence::KeepAlive => "Connection: keep-alive\r\n",
            Persistence::Close => "Connection: close\r\n",
        };
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nServer: ringecho\r\nContent-Type: text/plain\r\n\
             Content-Length: {body_len}\r\n{connection}\r\n"
        )
        .into_bytes();
        if !head_only {
            r.extend(b"Hello, world\n".iter().cycle().take(body_len));
        }
        r
    }

    fn run(input: &[&[u8]]) -> Wire<Http> {
        let mut w = Wire::new(Http::default());
        for piece in input {
            w.feed(piece, true);
        }
        w.drain(None);
        w
    }

    #[test]
    fn a_get_gets_the_fixed_response_and_the_connection_stays_open() {
        let w = run(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(
            w.sent,
            b"HTTP/1.1 200 OK\r\nServer: ringecho\r\nContent-Type: text/plain\r\n\
              Content-Length: 13\r\n\r\nHello, world\n"
        );
        assert_eq!(w.closed, None);
        assert_eq!(w.sent, ok(13, Persistence::Implied, false));
    }

    #[test]
    fn pipelined_requests_in_one_receive_are_answered_in_order() {
        let w = run(&[b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            HEAD /b HTTP/1.1\r\nhost: x\r\n\r\n\
            POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            GET /d HTTP/1.1\r\nHost: x\r\n\r\n"]);
        let mut want = ok(13, Persistence::Implied, false);
        want.extend(ok(13, Persistence::Implied, true));
        want.extend(ok(13, Persistence::Implied, false));
        want.extend(ok(13, Persistence::Implied, false));
        assert_eq!(w.sent, want);
        assert_eq!(w.closed, None);
    }

    #[test]
    fn small_pipelined_responses_coalesce_into_one_send() {
        let mut w = Wire::new(Http::default());
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(10);
        w.feed(&req, true);
        let one = ok(13, Persistence::Implied, false);
        match w.next_send() {
            Some(SendSpan::Mem(b)) => assert_eq!(b, one.repeat(10)),
            other => panic!("expected one memory span, got {other:?}"),
        }
    }

    #[test]
    fn a_large_body_is_sent_from_the_shared_response_without_copying() {
        let mut w = Wire::new(Http::new(100_000));
        let out = w.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false);
        assert_eq!((out.copied, out.ring_refs), (0, 0));
        assert_eq!(w.owed(), ok(100_000, Persistence::Implied, false).len());
    }

    #[test]
    fn connection_close_is_answered_then_closes_and_ignores_what_follows() {
        let w = run(&[
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n\
            GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ]);
        assert_eq!(w.sent, ok(13, Persistence::Close, false));
        assert_eq!(w.closed, Some(CloseReason::Requested));
    }

    #[test]
    fn http_1_0_closes_unless_it_asks_for_keep_alive() {
        let w = run(&[b"GET / HTTP/1.0\r\n\r\n"]);
        assert_eq!(w.sent, ok(13, Persistence::Close, false));
        assert_eq!(w.closed, Some(CloseReason::Requested));
        let w = run(&[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n"]);
        let mut want = ok(13, Persistence::KeepAlive, false);
        want.extend(ok(13, Persistence::Close, false));
        assert_eq!(w.sent, want);
        assert_eq!(w.closed, Some(CloseReason::Requested));
    }

    #[test]
    fn a_body_is_skipped_even_when_it_looks_like_a_request_and_is_split() {
        let body = b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n";
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut w = Wire::new(Http::default());
        w.feed(head.as_bytes(), true);
        w.feed(&body[..10], false);
        w.drain(None);
        assert!(w.sent.is_empty(), "the response follows the whole body");
        w.feed(&body[10..], true);
        w.feed(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
        w.drain(None);
        assert_eq!(w.sent, ok(13, Persistence::Implied, false).repeat(2));
    }

    #[test]
    fn a_body_arriving_byte_by_byte_is_skipped_exactly() {
        // Body bytes that cannot start a request: one too few skipped would show as a 400.
        let mut w = Wire::new(Http::default());
        w.feed(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n",
            true,
        );
        for b in b"@@@@" {
            w.feed(&[*b], true);
        }
        w.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
        w.drain(None);
        assert_eq!(w.sent, ok(13, Persistence::Implied, false).repeat(2));
        assert_eq!(w.closed, None);
    }

    #[test]
    fn what_cannot_start_a_request_is_refused_without_waiting_for_a_line_end() {
        // A TLS ClientHello has no line feed for a long while: answer now, not after 8 KiB.
        let w = run(&[
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
        ]);
        let mut want = ok(13, Persistence::Implied, false);
        want.extend_from_slice(BAD_REQUEST);
        assert_eq!(w.sent, want);
        assert_eq!(w.closed, Some(CloseReason::Malformed));
    }

    #[test]
    fn expect_100_continue_gets_an_interim_response_before_the_body() {
        let mut w = Wire::new(Http::default());
        w.feed(
            b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
            true,
        );
        w.drain(None);
        assert_eq!(w.sent, b"HTTP/1.1 100 Continue\r\n\r\n");
        w.feed(b"abc", true);
        w.drain(None);
        let mut want = CONTINUE.to_vec();
        want.extend(ok(13, Persistence::Implied, false));
        assert_eq!(w.sent, want);
    }

    #[test]
    fn bare_line_feeds_and_leading_empty_lines_are_accepted() {
        let w = run(&[
            b"\r\n\nGET / HTTP/1.1\nHost: x\n\n",
            b"\r\n",
            b"GET / HTTP/1.1\nHost: x\n\r\n",
        ]);
        assert_eq!(w.sent, ok(13, Persistence::Implied, false).repeat(2));
    }

    #[test]
    fn malformed_heads_get_400_and_a_close() {
        let cases: &[&[u8]] = &[
            b"GET /\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
            b"GET / http/1.1\r\nHost: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for case in cases {
            let w = run(&[
                b"GET / HTTP/1.1\r\nHost: ok\r\n\r\n",
                case,
                b"GET / HTTP/1.1\r\n\r\n",
            ]);
            let mut want = ok(13, Persistence::Implied, false);
            want.extend_from_slice(BAD_REQUEST);
            assert_eq!(w.sent, want, "{}", String::from_utf8_lossy(case));
            assert_eq!(w.closed, Some(CloseReason::Malformed));
        }
    }

    #[test]
    fn valid_but_unusual_heads_are_accepted() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\nContent-Length:2\r\n\r\nab",
            b"GET / HTTP/1.1\r\nhOsT:\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
            b"M-SEARCH * HTTP/1.1\r\nHost: x\r\nX: \xff\xfe obs-text\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0000\r\n\r\n",
        ];
        for case in cases {
            let w = run(&[case]);
            assert_eq!(
                w.sent,
                ok(13, Persistence::Implied, false),
                "{}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(w.closed, None);
        }
    }

    #[test]
    fn transfer_encoding_gets_501_and_a_close() {
        let w = run(&[
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n0\r\n\r\n",
        ]);
        assert_eq!(w.sent, NOT_IMPLEMENTED);
        assert_eq!(w.closed, Some(CloseReason::Unsupported));
    }

    /// A valid head of exactly `len` bytes.
    fn head_of(len: usize) -> Vec<u8> {
        let mut h = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        h.resize(len - 4, b'a');
        h.extend(b"\r\n\r\n");
        h
    }

    #[test]
    fn heads_up_to_8_kib_are_accepted_and_longer_ones_get_431_however_they_arrive() {
        for (len, want_ok) in [(MAX_HEAD, true), (MAX_HEAD + 1, false)] {
            let head = head_of(len);
            for piece in [head.len(), 4096, 1000, 1] {
                let mut w = Wire::new(Http::default());
                for p in head.chunks(piece) {
                    w.feed(p, true);
                    assert!(w.protocol().held_head_capacity() <= MAX_HEAD);
                }
                w.drain(None);
                if want_ok {
                    assert_eq!(w.sent, ok(13, Persistence::Implied, false), "{len}/{piece}");
                    assert_eq!(w.closed, None);
                } else {
                    assert_eq!(w.sent, HEAD_TOO_LARGE, "{len}/{piece}");
                    assert_eq!(w.closed, Some(CloseReason::TooLarge));
                }
            }
        }
        // A head that never ends is refused as soon as it passes the limit.
        let mut w = Wire::new(Http::default());
        w.feed(b"GET /", true);
        for _ in 0..MAX_HEAD {
            w.feed(b"a", true);
        }
        w.drain(None);
        assert_eq!(w.sent, HEAD_TOO_LARGE);
    }

    // ---- property tests ----------------------------------------------------------------------

    /// A random valid request and the response it must get.
    fn random_request(rng: &mut Rng, out: &mut Vec<u8>) -> Vec<u8> {
        let eol: &[u8] = if rng.one_in(8) { b"\n" } else { b"\r\n" };
        let method: &[u8] =
            [&b"GET"[..], b"HEAD", b"POST", b"PUT", b"OPTIONS", b"X-Y"][rng.below(6)];
        let http11 = !rng.one_in(4);
        if rng.one_in(6) {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(method);
        out.extend(format!(" /{} ", "p".repeat(rng.below(40))).bytes());
        out.extend_from_slice(if http11 { b"HTTP/1.1" } else { b"HTTP/1.0" });
        out.extend_from_slice(eol);
        let (mut close, mut keep_alive, mut expect) = (false, false, false);
        let (mut body_len, mut has_length) = (0usize, false);
        let mut fields: Vec<Vec<u8>> = Vec::new();
        if http11 || rng.one_in(2) {
            fields.push(b"Host: example".to_vec());
        }
        for _ in 0..rng.below(6) {
            let pad = "v".repeat(rng.below(200));
            fields.push(match rng.below(6) {
                0 => format!("X-Filler-{}:{pad}", rng.below(100)).into_bytes(),
                1 => {
                    keep_alive = true;
                    b"connection: Keep-Alive".to_vec()
                }
                2 if rng.one_in(3) => {
                    close = true;
                    b"Connection:  close ".to_vec()
                }
                3 if !has_length => {
                    has_length = true;
                    body_len = rng.below(300);
                    format!("Content-Length: {body_len}").into_bytes()
                }
                4 => {
                    expect = true;
                    b"Expect: 100-continue".to_vec()
                }
                _ => format!("User-Agent: test\t{pad}").into_bytes(),
            });
        }
        for f in fields {
            out.extend(f);
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        // Bodies full of line breaks and request-like text must be skipped, never parsed; an
        // `@` cannot start a request, so a body byte taken for one shows.
        for _ in 0..body_len {
            out.push(b"\r\nGET / HTTP/1.1@"[rng.below(17)]);
        }
        let persistence = match (close, http11, keep_alive) {
            (true, _, _) => Persistence::Close,
            (false, true, _) => Persistence::Implied,
            (false, false, true) => Persistence::KeepAlive,
            (false, false, false) => Persistence::Close,
        };
        let mut response = Vec::new();
        if expect && http11 && body_len > 0 {
            response.extend_from_slice(CONTINUE);
        }
        response.extend(ok(5000, persistence, method == b"HEAD"));
        response
    }

    #[test]
    fn random_splits_of_valid_pipelined_streams_get_one_response_per_request_in_order() {
        let mut rng = Rng::new(0x4177_9a1d);
        // A body over COPY_MAX exercises the shared-reply path too.
        let proto = Http::new(5000);
        for case in 0..700 {
            let (mut stream, mut want, mut closes) = (Vec::new(), Vec::new(), None);
            for _ in 0..1 + rng.below(8) {
                let response = random_request(&mut rng, &mut stream);
                if closes.is_none() {
                    if response.windows(17).any(|w| w == b"Connection: close") {
                        closes = Some(CloseReason::Requested);
                    }
                    want.extend(response);
                }
            }
            let mut w = Wire::new(proto.clone());
            w.run(&stream, &rng.splits(stream.len()), &mut rng);
            assert!(w.protocol().held_head_capacity() <= MAX_HEAD);
            assert!(
                w.sent == want,
                "case {case}: {}",
                String::from_utf8_lossy(&stream)
            );
            assert_eq!(w.closed, closes, "case {case}");
        }
    }

    /// HTTP-shaped noise: pieces of requests in random order, with random bytes mixed in.
    fn token_soup(rng: &mut Rng) -> Vec<u8> {
        const TOKENS: &[&[u8]] = &[
            b"GET",
            b"HEAD",
            b" ",
            b"/",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\n\r\n",
            b":",
            b"Host: x",
            b"Content-Length: ",
            b"7",
            b"0",
            b"99999999999",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Transfer-Encoding: chunked",
            b"Expect: 100-continue",
            b"\t",
            b"\0",
            b",",
        ];
        let mut s = Vec::new();
        for _ in 0..rng.below(60) {
            match rng.below(10) {
                0 => {
                    let n = 1 + rng.below(8);
                    s.extend(rng.bytes(n));
                }
                1 if rng.one_in(20) => s.extend(std::iter::repeat_n(b'a', 3000)),
                _ => s.extend_from_slice(TOKENS[rng.below(TOKENS.len())]),
            }
        }
        s
    }

    /// Splits `sent` into the known responses it must consist of; the last may be a refusal.
    fn check_responses(sent: &[u8], closed: Option<CloseReason>, case: usize) {
        let mut known: Vec<Vec<u8>> = vec![CONTINUE.to_vec()];
        for p in [
            Persistence::Implied,
            Persistence::KeepAlive,
            Persistence::Close,
        ] {
            known.push(ok(13, p, false));
            known.push(ok(13, p, true));
        }
        let mut rest = sent;
        while !rest.is_empty() {
            if let Some(r) = known.iter().find(|r| rest.starts_with(r)) {
                rest = &rest[r.len()..];
                continue;
            }
            let refusal = match closed {
                Some(CloseReason::Malformed) => BAD_REQUEST,
                Some(CloseReason::TooLarge) => HEAD_TOO_LARGE,
                Some(CloseReason::Unsupported) => NOT_IMPLEMENTED,
                _ => panic!(
                    "case {case}: unknown output {}",
                    String::from_utf8_lossy(rest)
                ),
            };
            assert_eq!(rest, refusal, "case {case}");
            return;
        }
    }

    #[test]
    fn random_garbage_never_panics_stays_bounded_and_does_not_depend_on_splits() {
        let mut rng = Rng::new(0x6a3b_11c0);
        for case in 0..2500 {
            let stream = match rng.below(3) {
                0 => {
                    let n = rng.below(2000);
                    rng.bytes(n)
                }
                1 => token_soup(&mut rng),
                _ => {
                    // A valid stream, damaged: bytes flipped, dropped or cut.
                    let mut s = Vec::new();
                    for _ in 0..1 + rng.below(4) {
                        random_request(&mut rng, &mut s);
                    }
                    for _ in 0..1 + rng.below(3) {
                        if s.is_empty() {
                            break;
                        }
                        let at = rng.below(s.len());
                        match rng.below(3) {
                            0 => s[at] = rng.next_u64() as u8,
                            1 => drop(s.remove(at)),
                            _ => s.truncate(at),
                        }
                    }
                    s
                }
            };
            // The whole stream at once is the reference; any split must give the same.
            let mut whole = Wire::new(Http::default());
            whole.feed(&stream, false);
            whole.drain(None);
            let mut w = Wire::new(Http::default());
            for r in rng.splits(stream.len()) {
                w.feed(&stream[r], rng.one_in(2));
                assert!(w.protocol().held_head_capacity() <= MAX_HEAD);
                if rng.one_in(2) {
                    w.drain(Some(&mut rng));
                }
            }
            w.drain(Some(&mut rng));
            assert!(
                w.sent == whole.sent,
                "case {case}: output depends on splits"
            );
            assert_eq!(w.closed, whole.closed, "case {case}");
            check_responses(&w.sent, w.closed, case);
        }
    }
}
