//! The per-connection state machine. It makes no syscalls.
//!
//! A [`Conn`] holds what one connection is doing: the bytes it owes its peer (an ordered queue of
//! [`Chunk`]s), whether its send (one at a time, of one or more chunks) is outstanding, whether receiving is paused by
//! back-pressure, and whether the peer or the protocol has ended the conversation. Both backends
//! drive the same `Conn`: they feed it events (`on_recv`, `on_sent`, `on_eof`) and then ask it
//! what it wants (`next_send`, `recv_wanted`, `is_done`), turning the answers into submissions
//! or syscalls. Keeping every decision here is what makes the io_uring/epoll comparison honest.
//!
//! # Who owns which bytes
//!
//! - [`Chunk::Ring`] bytes live in a provided buffer of the shard's buffer ring. The connection
//!   holds one *reference* to that buffer per ring chunk; the backend counts them and gives the
//!   buffer back to the kernel only when the last reference is released (`on_sent` and
//!   `release_all` hand released buffer ids back to the caller).
//! - [`Chunk::Heap`] bytes live in a `Vec` the connection owns.
//! - [`Chunk::Static`] bytes are `'static`.
//! - [`Chunk::Shared`] bytes live in an immutable `Arc<[u8]>` shared with other connections (a
//!   fixed reply built once at start-up); the chunk's clone of the `Arc` keeps them alive.
//!
//! # The in-flight invariant
//!
//! One send is outstanding at a time, and it may cover several chunks: [`Conn::next_sends`]
//! hands out the spans of up to `max` chunks from the front (a backend sends them with one
//! vectored call: `sendmsg` on both backends), [`Conn::next_send`] just the front
//! one. Between handing them out and the matching `on_sent`/`on_send_failed`, those chunks'
//! memory is being read by the kernel (io_uring) and is neither moved, resized nor freed: new
//! heap bytes are never appended to a chunk that is in flight, an echo never extends one, and
//! chunks are only dropped by `on_sent` or by `release_all`, which the backend calls only once
//! no operation on the connection is outstanding. A zero-copy send's memory is read until its
//! notification, after its result: for those, `on_sent_retiring` hands the chunks the send
//! touched to the backend, which keeps them until the notification (a chunk sent only in part
//! goes too, its unsent rest staying owed as a new chunk).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use crate::protocol::{CloseReason, Protocol, Verdict};

/// Limits shared by every connection of a shard.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Back-pressure high watermark: at or above this many owed bytes, stop receiving; resume at
    /// or below half of it.
    pub max_pending: usize,
}

/// A run of bytes owed to the peer.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes `start..end` of provided buffer `bid` (zero-copy echo).
    Ring {
        /// Buffer id in the shard's buffer ring.
        bid: u16,
        /// First byte still owed.
        start: u32,
        /// One past the last byte.
        end: u32,
    },
    /// Bytes `buf[start..]`, owned by the connection.
    Heap {
        /// The bytes.
        buf: Vec<u8>,
        /// First byte still owed.
        start: usize,
    },
    /// Bytes `bytes[start..]` with a static lifetime (fixed replies).
    Static {
        /// The bytes.
        bytes: &'static [u8],
        /// First byte still owed.
        start: usize,
    },
    /// Bytes `bytes[start..end]` of a reply shared between connections (fixed replies built at
    /// start-up, such as an HTTP response with a configured body).
    Shared {
        /// The bytes; never mutated, so their address is stable while this clone lives.
        bytes: Arc<[u8]>,
        /// First byte still owed.
        start: usize,
        /// One past the last byte.
        end: usize,
    },
}

impl Chunk {
    fn remaining(&self) -> usize {
        match self {
            Chunk::Ring { start, end, .. } => (end - start) as usize,
            Chunk::Heap { buf, start } => buf.len() - start,
            Chunk::Static { bytes, start } => bytes.len() - start,
            Chunk::Shared { start, end, .. } => end - start,
        }
    }

    fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.remaining());
        match self {
            Chunk::Ring { start, .. } => *start += n as u32,
            Chunk::Heap { start, .. }
            | Chunk::Static { start, .. }
            | Chunk::Shared { start, .. } => *start += n,
        }
    }
}

/// The remaining bytes of one owed chunk, as a backend sends them.
#[derive(Debug, PartialEq, Eq)]
pub enum SendSpan<'a> {
    /// `len` bytes at offset `offset` of provided buffer `bid`.
    Ring {
        /// Buffer id.
        bid: u16,
        /// Offset into the buffer.
        offset: u32,
        /// Number of bytes.
        len: u32,
    },
    /// Bytes in memory owned by the connection or static.
    Mem(&'a [u8]),
}

/// The bytes `chunk` still owes, as a backend sends them.
fn span_of(chunk: &Chunk) -> SendSpan<'_> {
    match chunk {
        Chunk::Ring { bid, start, end } => SendSpan::Ring {
            bid: *bid,
            offset: *start,
            len: end - start,
        },
        Chunk::Heap { buf, start } => SendSpan::Mem(&buf[*start..]),
        Chunk::Static { bytes, start } => SendSpan::Mem(&bytes[*start..]),
        Chunk::Shared { bytes, start, end } => SendSpan::Mem(&bytes[*start..*end]),
    }
}

/// The ordered bytes a connection owes its peer.
#[derive(Debug, Default)]
struct OutQueue {
    chunks: VecDeque<Chunk>,
    owed: usize,
    /// How many chunks, from the front, the outstanding send covers (0: no send outstanding;
    /// see the in-flight invariant).
    in_flight: usize,
    /// Capacity kept from a finished heap chunk, reused by the next one.
    spare: Vec<u8>,
}

impl OutQueue {
    /// Is the back chunk part of the outstanding send (so it must not change)?
    fn back_in_flight(&self) -> bool {
        self.chunks.len() <= self.in_flight
    }

    /// May new heap bytes be appended to the back chunk? Not if it is in flight.
    fn back_heap_appendable(&mut self) -> Option<&mut Vec<u8>> {
        if self.back_in_flight() {
            return None;
        }
        match self.chunks.back_mut() {
            Some(Chunk::Heap { buf, .. }) => Some(buf),
            _ => None,
        }
    }

    fn push_heap(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.owed += bytes.len();
        if let Some(buf) = self.back_heap_appendable() {
            buf.extend_from_slice(bytes);
            return;
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.extend_from_slice(bytes);
        self.chunks.push_back(Chunk::Heap { buf, start: 0 });
    }
}

/// The reply sink a [`Protocol`] writes to.
///
/// Replies are queued in the order they are written and sent after everything queued earlier.
pub struct Replies<'a> {
    q: &'a mut OutQueue,
    input: &'a [u8],
    /// The provided buffer `input` lives in (id, offset of `input[0]`), when echoing from it
    /// without a copy is allowed.
    zero_copy: Option<(u16, u32)>,
    ring_refs: u32,
    copied: usize,
}

impl Replies<'_> {
    /// Sends back `input[range]`, the bytes the protocol is looking at.
    ///
    /// On the io_uring backend this is zero-copy when the shard's buffer budget allows: the reply
    /// is sent straight from the provided buffer the bytes arrived in. Otherwise they are copied.
    ///
    /// # Panics
    ///
    /// If `range` is not within the input passed to [`Protocol::on_data`], like slice indexing.
    pub fn echo(&mut self, range: Range<usize>) {
        let bytes = &self.input[range.clone()];
        if bytes.is_empty() {
            return;
        }
        let Some((bid, base)) = self.zero_copy else {
            self.copied += bytes.len();
            self.q.push_heap(bytes);
            return;
        };
        self.q.owed += bytes.len();
        let (start, end) = (base + range.start as u32, base + range.end as u32);
        // Contiguous echoes of one buffer share one chunk (and one reference).
        let in_flight_is_back = self.q.back_in_flight();
        if let Some(Chunk::Ring { bid: b, end: e, .. }) = self.q.chunks.back_mut()
            && *b == bid
            && *e == start
            && !in_flight_is_back
        {
            *e = end;
            return;
        }
        self.ring_refs += 1;
        self.q.chunks.push_back(Chunk::Ring { bid, start, end });
    }

    /// Sends `bytes` (copied into the connection's own buffer).
    pub fn write(&mut self, bytes: &[u8]) {
        self.copied += bytes.len();
        self.q.push_heap(bytes);
    }

    /// Sends `bytes` without copying them.
    pub fn write_static(&mut self, bytes: &'static [u8]) {
        if bytes.is_empty() {
            return;
        }
        self.q.owed += bytes.len();
        self.q.chunks.push_back(Chunk::Static { bytes, start: 0 });
    }

    /// Sends `bytes[range]` without copying them: the reply holds a clone of the `Arc` until
    /// it is sent. Suits a large fixed reply shared by every connection; a small one is better
    /// [`write`](Self::write)n, because copies coalesce into one send.
    ///
    /// # Panics
    ///
    /// If `range` is not within `bytes`, like slice indexing.
    pub fn write_shared(&mut self, bytes: &Arc<[u8]>, range: Range<usize>) {
        if bytes[range.clone()].is_empty() {
            return;
        }
        self.q.owed += range.len();
        self.q.chunks.push_back(Chunk::Shared {
            bytes: Arc::clone(bytes),
            start: range.start,
            end: range.end,
        });
    }

    /// Bytes queued on this connection and not yet sent, including what this call queued.
    pub fn owed(&self) -> usize {
        self.q.owed
    }
}

/// Runs `proto.on_data(input)` with an empty reply queue and no provided buffer (every echo is
/// a copy), and returns the bytes it queued, in order, with its verdict. Backs
/// [`protocol::respond`](crate::protocol::respond).
pub(crate) fn respond<P: Protocol>(proto: &mut P, input: &[u8]) -> (Vec<u8>, Verdict) {
    let mut q = OutQueue::default();
    let mut out = Replies {
        q: &mut q,
        input,
        zero_copy: None,
        ring_refs: 0,
        copied: 0,
    };
    let verdict = proto.on_data(input, &mut out);
    let mut bytes = Vec::with_capacity(q.owed);
    for chunk in &q.chunks {
        match chunk {
            Chunk::Ring { .. } => unreachable!("no provided buffer was offered"),
            Chunk::Heap { buf, start } => bytes.extend_from_slice(&buf[*start..]),
            Chunk::Static { bytes: b, start } => bytes.extend_from_slice(&b[*start..]),
            Chunk::Shared {
                bytes: b,
                start,
                end,
            } => bytes.extend_from_slice(&b[*start..*end]),
        }
    }
    (bytes, verdict)
}

/// What [`Conn::on_recv`] did with a run of received bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvOutcome {
    /// New references the connection took to the provided buffer (0 if it copied or ignored).
    pub ring_refs: u32,
    /// Bytes copied into the connection's heap buffer.
    pub copied: usize,
    /// The protocol asked to close, and why (reported once).
    pub closed_by_protocol: Option<CloseReason>,
    /// Bytes dropped unread because the connection is ending.
    pub discarded: usize,
}

/// Why a connection is winding down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The protocol asked to close.
    Protocol(CloseReason),
    /// The server is shutting down.
    Shutdown,
}

/// One connection's state. See the module docs.
#[derive(Debug)]
pub struct Conn<P> {
    proto: P,
    q: OutQueue,
    /// Back-pressure: owed bytes reached `max_pending` and have not yet fallen to half.
    paused: bool,
    /// The peer sent FIN: nothing more will arrive.
    peer_eof: bool,
    ending: Option<Ending>,
    /// Our FIN (a write-side shutdown) has been asked for.
    fin_sent: bool,
    /// Shutdown found nothing owed: close without waiting for the peer.
    close_now: bool,
}

impl<P: Protocol> Conn<P> {
    /// A fresh connection speaking `proto`.
    pub fn new(proto: P) -> Conn<P> {
        Conn {
            proto,
            q: OutQueue::default(),
            paused: false,
            peer_eof: false,
            ending: None,
            fin_sent: false,
            close_now: false,
        }
    }

    /// Feeds received bytes to the protocol and queues its replies.
    ///
    /// `zero_copy` is the provided buffer `data` lives in and the offset of `data[0]` there, if
    /// the backend allows replies to reference it; `None` makes every echoed byte a copy (epoll, or the shard's budget of
    /// buffers held for owed data is spent). Bytes that arrive after the connection decided to
    /// end (they can race a cancellation) are dropped.
    pub fn on_recv(
        &mut self,
        data: &[u8],
        zero_copy: Option<(u16, u32)>,
        limits: &Limits,
    ) -> RecvOutcome {
        if self.ending.is_some() || data.is_empty() {
            return RecvOutcome {
                discarded: data.len(),
                ..RecvOutcome::default()
            };
        }
        let mut out = Replies {
            q: &mut self.q,
            input: data,
            zero_copy,
            ring_refs: 0,
            copied: 0,
        };
        let verdict = self.proto.on_data(data, &mut out);
        let outcome = RecvOutcome {
            ring_refs: out.ring_refs,
            copied: out.copied,
            closed_by_protocol: match verdict {
                Verdict::Continue => None,
                Verdict::Close(reason) => Some(reason),
            },
            discarded: 0,
        };
        if let Some(reason) = outcome.closed_by_protocol {
            self.ending = Some(Ending::Protocol(reason));
        }
        self.update_backpressure(limits);
        outcome
    }

    /// The peer closed its sending side (FIN).
    pub fn on_eof(&mut self) {
        self.peer_eof = true;
    }

    /// The server is shutting down. A connection that owes nothing closes at once; one that
    /// owes bytes stops processing input (it still reads and drops it), sends what it owes,
    /// then FIN, and closes when the peer closes (or the backend's drain deadline passes).
    pub fn begin_shutdown(&mut self) {
        if self.ending.is_none() {
            self.ending = Some(Ending::Shutdown);
            self.close_now = self.q.chunks.is_empty();
        }
    }

    /// The front chunk to send now, if one is owed and no send is outstanding. Marks it in
    /// flight until [`on_sent`](Self::on_sent) or [`on_send_failed`](Self::on_send_failed).
    /// [`next_sends`](Self::next_sends) with one chunk.
    #[allow(dead_code)] // the backends send every owed chunk at once; tests and fuzzers use it
    pub fn next_send(&mut self) -> Option<SendSpan<'_>> {
        if self.q.in_flight > 0 {
            return None;
        }
        let front = self.q.chunks.front()?;
        self.q.in_flight = 1;
        Some(span_of(front))
    }

    /// Starts one send of up to `max` owed chunks from the front, if any are owed and no send
    /// is outstanding: calls `each` with their spans, in order, marks them in flight until
    /// [`on_sent`](Self::on_sent) or [`on_send_failed`](Self::on_send_failed), and returns how
    /// many. The backend sends them with one vectored call, so everything a connection owes
    /// goes out in one operation while bytes stay in order (one send outstanding at a time).
    pub fn next_sends(&mut self, max: usize, mut each: impl FnMut(SendSpan<'_>)) -> usize {
        if self.q.in_flight > 0 {
            return 0;
        }
        let n = self.q.chunks.len().min(max);
        for chunk in self.q.chunks.iter().take(n) {
            each(span_of(chunk));
        }
        self.q.in_flight = n;
        n
    }

    /// The outstanding send wrote `n` bytes, from the front of the chunks it covered (a short
    /// send leaves the rest owed). For each ring chunk it finishes, calls `release` with the
    /// buffer id: the chunk's one reference is dropped. Whether that was the buffer's last
    /// reference is for the caller's count to say.
    pub fn on_sent(&mut self, n: usize, limits: &Limits, mut release: impl FnMut(u16)) {
        let spare = &mut self.q.spare;
        let finished = |chunk: Chunk| match chunk {
            Chunk::Ring { bid, .. } => release(bid),
            Chunk::Heap { buf, .. } if buf.capacity() > spare.capacity() => *spare = buf,
            _ => {}
        };
        Self::advance_sent(
            &mut self.q.chunks,
            &mut self.q.owed,
            &mut self.q.in_flight,
            n,
            finished,
        );
        self.update_backpressure(limits);
    }

    /// [`on_sent`](Self::on_sent) for a zero-copy send, whose memory the kernel may still read
    /// after its result, until its notification: the chunks it finished are moved to `retired`
    /// with their memory (and ring references) untouched, for the caller to drop when the
    /// notification comes. A chunk it sent only in part is retired whole as well (the kernel
    /// may still read its start), and its unsent rest stays owed as a chunk of its own: the same
    /// provided buffer with one more reference (`add_ref` is called with its id), a copy of the
    /// rest of the connection's own bytes, or another handle on a shared reply. The next send
    /// may start now.
    pub fn on_sent_retiring(
        &mut self,
        n: usize,
        limits: &Limits,
        retired: &mut Vec<Chunk>,
        mut add_ref: impl FnMut(u16),
    ) {
        let partial = Self::advance_sent(
            &mut self.q.chunks,
            &mut self.q.owed,
            &mut self.q.in_flight,
            n,
            |chunk| retired.push(chunk),
        );
        if partial && let Some(front) = self.q.chunks.pop_front() {
            let rest = match &front {
                Chunk::Ring { bid, start, end } => {
                    add_ref(*bid);
                    Chunk::Ring {
                        bid: *bid,
                        start: *start,
                        end: *end,
                    }
                }
                Chunk::Heap { buf, start } => Chunk::Heap {
                    buf: buf[*start..].to_vec(),
                    start: 0,
                },
                Chunk::Static { bytes, start } => Chunk::Static {
                    bytes,
                    start: *start,
                },
                Chunk::Shared { bytes, start, end } => Chunk::Shared {
                    bytes: Arc::clone(bytes),
                    start: *start,
                    end: *end,
                },
            };
            retired.push(front);
            self.q.chunks.push_front(rest);
        }
        self.update_backpressure(limits);
    }

    /// Consumes `n` sent bytes from the front of the in-flight chunks, handing each finished
    /// chunk to `finished`. Returns whether the send ended inside a chunk, part of it sent.
    fn advance_sent(
        chunks: &mut VecDeque<Chunk>,
        owed: &mut usize,
        in_flight: &mut usize,
        n: usize,
        mut finished: impl FnMut(Chunk),
    ) -> bool {
        debug_assert!(*in_flight > 0, "on_sent without an outstanding send");
        let mut left = n;
        let mut partial = false;
        for _ in 0..std::mem::take(in_flight) {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            let k = left.min(front.remaining());
            front.advance(k);
            *owed -= k;
            left -= k;
            if front.remaining() > 0 {
                partial = k > 0;
                break;
            }
            if let Some(chunk) = chunks.pop_front() {
                finished(chunk);
            }
        }
        debug_assert_eq!(left, 0, "on_sent: more bytes than the send covered");
        partial
    }

    /// The outstanding send failed; the connection is going to close.
    pub fn on_send_failed(&mut self) {
        self.q.in_flight = 0;
    }

    /// Should the backend have a receive armed? Until the peer's FIN, except while paused by
    /// back-pressure. A connection that is ending keeps receiving, and drops what arrives:
    /// closing a socket with unread input makes the kernel reset the connection and discard
    /// whatever it had not yet delivered, so an ending connection reads until the peer's FIN.
    pub fn recv_wanted(&self) -> bool {
        !self.peer_eof && (self.ending.is_some() || !self.paused)
    }

    /// Should the backend shut down the write side now (send FIN)? Once an ending connection
    /// has sent everything it owes, while the peer has not closed: the peer then sees every
    /// byte, then end of stream, and closes its side, which lets this one close cleanly.
    pub fn wants_fin(&self) -> bool {
        self.ending.is_some() && !self.fin_sent && !self.peer_eof && self.q.chunks.is_empty()
    }

    /// The backend has shut down the write side.
    pub fn on_fin_sent(&mut self) {
        self.fin_sent = true;
    }

    /// Is the connection ending (protocol close or shutdown) rather than conversing?
    #[allow(dead_code)] // a query the backends do not need today
    pub fn is_ending(&self) -> bool {
        self.ending.is_some()
    }

    /// Has the conversation ended with nothing left to send and nothing left to read? Then the
    /// backend closes the connection (the peer has seen every byte; a close now sends FIN, or
    /// completes the one already sent). A peer that never closes is the backend's to time out.
    pub fn is_done(&self) -> bool {
        (self.peer_eof || self.close_now) && self.q.chunks.is_empty()
    }

    /// Whether receiving is paused by back-pressure.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The protocol state, for inspection (tests assert its memory stays bounded).
    #[allow(dead_code)] // used by the protocol tests
    pub fn protocol(&self) -> &P {
        &self.proto
    }

    /// Bytes owed to the peer.
    pub fn owed(&self) -> usize {
        self.q.owed
    }

    /// Whether a send is outstanding.
    pub fn is_sending(&self) -> bool {
        self.q.in_flight > 0
    }

    /// Drops everything owed, calling `release` for each provided-buffer reference. The backend
    /// calls this only when no operation on the connection is outstanding.
    pub fn release_all(&mut self, mut release: impl FnMut(u16)) {
        debug_assert_eq!(self.q.in_flight, 0, "release_all with a send in flight");
        for chunk in self.q.chunks.drain(..) {
            if let Chunk::Ring { bid, .. } = chunk {
                release(bid);
            }
        }
        self.q.owed = 0;
    }

    fn update_backpressure(&mut self, limits: &Limits) {
        if self.q.owed >= limits.max_pending {
            self.paused = true;
        } else if self.paused && self.q.owed <= limits.max_pending / 2 {
            self.paused = false;
        }
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Echo;

    const LIM: Limits = Limits { max_pending: 100 };

    fn mem(span: SendSpan<'_>) -> Vec<u8> {
        match span {
            SendSpan::Mem(b) => b.to_vec(),
            other => panic!("expected memory span, got {other:?}"),
        }
    }

    #[test]
    fn zero_copy_echo_references_the_buffer_and_releases_it_when_sent() {
        let mut c = Conn::new(Echo);
        let out = c.on_recv(b"hello", Some((7, 0)), &LIM);
        assert_eq!(out.ring_refs, 1);
        assert_eq!(out.copied, 0);
        assert_eq!(c.owed(), 5);
        assert_eq!(
            c.next_send(),
            Some(SendSpan::Ring {
                bid: 7,
                offset: 0,
                len: 5
            })
        );
        assert_eq!(c.next_send(), None, "one send in flight at a time");
        let mut released = vec![];
        c.on_sent(5, &LIM, |b| released.push(b));
        assert_eq!(released, vec![7]);
        assert_eq!(c.owed(), 0);
    }

    #[test]
    fn zero_copy_chunks_are_placed_at_the_offset_within_the_buffer() {
        let mut c = Conn::new(Echo);
        c.on_recv(b"abc", Some((2, 100)), &LIM);
        assert_eq!(
            c.next_send(),
            Some(SendSpan::Ring {
                bid: 2,
                offset: 100,
                len: 3
            })
        );
    }

    #[test]
    fn short_send_resubmits_the_rest_from_the_right_offset() {
        let mut c = Conn::new(Echo);
        c.on_recv(b"abcdef", Some((1, 0)), &LIM);
        c.next_send().unwrap();
        let mut released = vec![];
        c.on_sent(2, &LIM, |b| released.push(b));
        assert!(released.is_empty(), "buffer still owed");
        assert_eq!(
            c.next_send(),
            Some(SendSpan::Ring {
                bid: 1,
                offset: 2,
                len: 4
            })
        );
        c.on_sent(4, &LIM, |b| released.push(b));
        assert_eq!(released, vec![1]);
    }

    #[test]
    fn copies_when_zero_copy_is_not_allowed_and_coalesces_behind_the_in_flight_chunk() {
        let mut c = Conn::new(Echo);
        let out = c.on_recv(b"ab", None, &LIM);
        assert_eq!((out.ring_refs, out.copied), (0, 2));
        assert_eq!(mem(c.next_send().unwrap()), b"ab");
        // "ab" is in flight: new bytes must go to a new chunk, never into the in-flight Vec.
        c.on_recv(b"cd", None, &LIM);
        c.on_recv(b"ef", None, &LIM);
        c.on_sent(2, &LIM, |_| unreachable!());
        assert_eq!(mem(c.next_send().unwrap()), b"cdef");
        c.on_sent(4, &LIM, |_| unreachable!());
        assert_eq!(c.owed(), 0);
        assert!(c.next_send().is_none());
    }

    #[test]
    fn one_send_covers_several_chunks_and_a_short_one_resumes_mid_chunk() {
        let mut c = Conn::new(Echo);
        c.on_recv(b"abc", Some((1, 0)), &LIM);
        c.on_recv(b"de", Some((2, 0)), &LIM);
        c.on_recv(b"fg", None, &LIM);
        let mut spans = vec![];
        assert_eq!(c.next_sends(8, |s| spans.push(format!("{s:?}"))), 3);
        assert_eq!(spans.len(), 3);
        assert_eq!(c.next_sends(8, |_| {}), 0, "one send outstanding at a time");
        // Neither an echo nor a copy may change a chunk of the outstanding send.
        assert_eq!(c.on_recv(b"h", Some((2, 2)), &LIM).ring_refs, 1);
        c.on_recv(b"i", None, &LIM);
        let mut released = vec![];
        c.on_sent(4, &LIM, |b| released.push(b));
        assert_eq!(released, vec![1], "abc sent in full, de only in part");
        let mut rest = vec![];
        c.next_sends(8, |s| {
            rest.push(match s {
                SendSpan::Ring { bid, offset, len } => format!("ring {bid} {offset}+{len}"),
                SendSpan::Mem(b) => String::from_utf8_lossy(b).into_owned(),
            })
        });
        assert_eq!(rest, ["ring 2 1+1", "fg", "ring 2 2+1", "i"]);
        c.on_sent(5, &LIM, |b| released.push(b));
        assert_eq!(released, vec![1, 2, 2]);
        assert_eq!(c.owed(), 0);
    }

    /// A zero-copy send's chunks are handed over whole, memory untouched, even one it sent
    /// only in part: that one's rest stays owed as a chunk of its own (one more reference to
    /// the same buffer, or a copy of the heap bytes).
    #[test]
    fn a_short_zero_copy_send_retires_the_chunk_it_cut_and_keeps_its_rest_owed() {
        let mut c = Conn::new(Echo);
        c.on_recv(b"abc", Some((1, 0)), &LIM);
        c.on_recv(b"defg", Some((2, 0)), &LIM);
        assert_eq!(c.next_sends(8, |_| {}), 2);
        let (mut retired, mut refs) = (vec![], vec![]);
        c.on_sent_retiring(5, &LIM, &mut retired, |b| refs.push(b));
        let ids: Vec<_> = retired
            .iter()
            .map(|ch| match ch {
                Chunk::Ring { bid, .. } => *bid,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(ids, [1, 2], "both chunks retired, the cut one too");
        assert_eq!(
            refs,
            [2],
            "the rest of buffer 2 takes a reference of its own"
        );
        assert_eq!(
            c.next_send(),
            Some(SendSpan::Ring {
                bid: 2,
                offset: 2,
                len: 2
            })
        );
        c.on_sent(2, &LIM, |_| {});
        // Heap bytes: the retired chunk keeps its memory; the rest is a copy.
        let mut c = Conn::new(Echo);
        c.on_recv(b"hello", None, &LIM);
        let ptr = match c.next_send().unwrap() {
            SendSpan::Mem(b) => b.as_ptr(),
            _ => unreachable!(),
        };
        let mut retired = vec![];
        c.on_sent_retiring(2, &LIM, &mut retired, |_| unreachable!());
        match &retired[..] {
            [Chunk::Heap { buf, .. }] => assert_eq!(buf.as_ptr(), ptr),
            other => panic!("{other:?}"),
        }
        assert_eq!(mem(c.next_send().unwrap()), b"llo");
        assert_eq!(c.owed(), 3);
    }

    #[test]
    fn in_flight_heap_chunk_keeps_its_address_while_more_arrives() {
        let mut c = Conn::new(Echo);
        c.on_recv(&[1u8; 10], None, &LIM);
        let ptr = match c.next_send().unwrap() {
            SendSpan::Mem(b) => b.as_ptr(),
            _ => unreachable!(),
        };
        for _ in 0..50 {
            c.on_recv(&[2u8; 1], None, &LIM);
        }
        match c.q.chunks.front().unwrap() {
            Chunk::Heap { buf, .. } => assert_eq!(buf.as_ptr(), ptr),
            _ => unreachable!(),
        }
    }

    #[test]
    fn contiguous_echoes_of_one_buffer_share_a_reference_but_separate_buffers_do_not() {
        let mut c = Conn::new(Echo);
        assert_eq!(c.on_recv(b"x", Some((3, 0)), &LIM).ring_refs, 1);
        assert_eq!(c.on_recv(b"y", Some((4, 0)), &LIM).ring_refs, 1);
        let mut released = vec![];
        c.release_all(|b| released.push(b));
        assert_eq!(released, vec![3, 4]);
        assert_eq!(c.owed(), 0);
    }

    #[test]
    fn backpressure_pauses_at_the_watermark_and_resumes_below_half() {
        let mut c = Conn::new(Echo);
        c.on_recv(&[0u8; 60], None, &LIM);
        assert!(c.recv_wanted());
        c.on_recv(&[0u8; 40], None, &LIM);
        assert!(!c.recv_wanted(), "100 owed >= max_pending 100");
        c.next_send().unwrap();
        c.on_sent(30, &LIM, |_| {});
        assert!(!c.recv_wanted(), "70 owed is above half");
        c.next_send().unwrap();
        c.on_sent(20, &LIM, |_| {});
        assert!(c.recv_wanted(), "50 owed is at half");
    }

    #[test]
    fn half_close_finishes_only_after_everything_owed_is_sent() {
        let mut c = Conn::new(Echo);
        c.on_recv(b"bye", Some((0, 0)), &LIM);
        c.on_eof();
        assert!(!c.recv_wanted());
        assert!(!c.is_done());
        c.next_send().unwrap();
        assert!(!c.is_done(), "send in flight");
        c.on_sent(3, &LIM, |_| {});
        assert!(c.is_done());
    }

    #[test]
    fn shutdown_closes_an_idle_connection_at_once() {
        let mut c = Conn::new(Echo);
        c.begin_shutdown();
        assert!(c.is_done());
    }

    #[test]
    fn shutdown_reads_and_drops_input_then_sends_fin_and_waits_for_the_peer() {
        let mut c = Conn::new(Echo);
        c.on_recv(b"owed", None, &LIM);
        c.begin_shutdown();
        assert!(c.recv_wanted(), "keeps reading so close does not reset");
        let late = c.on_recv(b"late", Some((1, 0)), &LIM);
        assert_eq!((late.ring_refs, late.discarded), (0, 4));
        assert!(!c.wants_fin(), "bytes still owed");
        assert_eq!(mem(c.next_send().unwrap()), b"owed");
        c.on_sent(4, &LIM, |_| {});
        assert!(c.wants_fin());
        c.on_fin_sent();
        assert!(!c.wants_fin());
        assert!(!c.is_done(), "waits for the peer's FIN");
        c.on_eof();
        assert!(c.is_done());
        assert!(!c.recv_wanted());
    }

    struct SharedReply(Arc<[u8]>);
    impl Protocol for SharedReply {
        fn on_data(&mut self, _input: &[u8], out: &mut Replies<'_>) -> Verdict {
            out.write_shared(&self.0, 1..4);
            out.write_shared(&self.0, 2..2);
            Verdict::Continue
        }
    }

    #[test]
    fn shared_replies_keep_their_bytes_alive_until_sent_and_skip_empty_ranges() {
        let reply: Arc<[u8]> = Arc::from(&b"xabcx"[..]);
        let mut c = Conn::new(SharedReply(Arc::clone(&reply)));
        let out = c.on_recv(b"?", Some((2, 0)), &LIM);
        assert_eq!((out.ring_refs, out.copied), (0, 0));
        assert_eq!(c.owed(), 3);
        assert_eq!(
            Arc::strong_count(&reply),
            3,
            "the protocol's and the chunk's clones"
        );
        assert_eq!(mem(c.next_send().unwrap()), b"abc");
        c.on_sent(1, &LIM, |_| unreachable!());
        assert_eq!(mem(c.next_send().unwrap()), b"bc");
        c.on_sent(2, &LIM, |_| unreachable!());
        assert_eq!(Arc::strong_count(&reply), 2);
        c.on_recv(b"?", None, &LIM);
        c.release_all(|_| unreachable!());
        assert_eq!((c.owed(), Arc::strong_count(&reply)), (0, 2));
    }

    struct Fixed;
    impl Protocol for Fixed {
        fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict {
            out.write_static(b"ok\n");
            if input.contains(&b'q') {
                Verdict::Close(CloseReason::Requested)
            } else {
                Verdict::Continue
            }
        }
    }

    #[test]
    fn static_replies_and_protocol_close() {
        let mut c = Conn::new(Fixed);
        let out = c.on_recv(b"a", Some((9, 0)), &LIM);
        assert_eq!(out.ring_refs, 0, "static reply holds no buffer");
        let out = c.on_recv(b"q", Some((9, 0)), &LIM);
        assert_eq!(out.closed_by_protocol, Some(CloseReason::Requested));
        assert_eq!(mem(c.next_send().unwrap()), b"ok\n");
        c.on_sent(3, &LIM, |_| {});
        assert_eq!(mem(c.next_send().unwrap()), b"ok\n");
        c.on_sent(3, &LIM, |_| {});
        assert!(c.wants_fin());
        c.on_fin_sent();
        c.on_eof();
        assert!(c.is_done());
    }
}
