//! The per-connection state machine. It makes no syscalls.
//!
//! A [`Conn`] holds what one connection is doing: the bytes it owes its peer (its
//! [`OutQueue`], which the protocol's replies fill), whether its send (one at a time, of one
//! or more chunks) is outstanding, whether receiving is paused by back-pressure, and whether
//! the peer or the protocol has ended the conversation. Both backends drive the same `Conn`:
//! they feed it events (`on_recv`, `on_sent`, `on_eof`) and then ask it what it wants
//! (`next_sends`, `recv_wanted`, `is_done`), turning the answers into submissions or syscalls.
//! Keeping every decision here is what makes the io_uring/epoll comparison honest.
//!
//! Who owns the owed bytes, and the in-flight invariant that keeps a send's memory still
//! while the kernel reads it, are the reply queue's: see `src/protocol/replies.rs`.

use crate::protocol::replies::OutQueue;
pub use crate::protocol::replies::{Chunk, SendSpan};
use crate::protocol::{CloseReason, Protocol, Replies, Verdict};
use crate::stats::Counters;

/// Limits shared by every connection of a shard.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Back-pressure high watermark: at or above this many owed bytes, stop receiving; resume at
    /// or below half of it.
    pub max_pending: usize,
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

impl RecvOutcome {
    /// Counts what the connection did with `len` received bytes (both backends call this).
    pub fn record(&self, len: usize, c: &mut Counters) {
        c.bytes_in += (len - self.discarded) as u64;
        c.bytes_discarded += self.discarded as u64;
        c.copied_bytes += self.copied as u64;
        if let Some(reason) = self.closed_by_protocol {
            count_proto_close(c, reason);
        }
    }
}

/// Counts a connection closed at its protocol's request, under its reason.
fn count_proto_close(c: &mut Counters, reason: CloseReason) {
    c.proto_closes += 1;
    match reason {
        CloseReason::Requested => c.proto_requested += 1,
        CloseReason::Malformed => c.proto_malformed += 1,
        CloseReason::TooLarge => c.proto_too_large += 1,
        CloseReason::Unsupported => c.proto_unsupported += 1,
    }
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
        let mut out = Replies::new(&mut self.q, data, zero_copy);
        let verdict = self.proto.on_data(data, &mut out);
        let outcome = RecvOutcome {
            ring_refs: out.ring_refs(),
            copied: out.copied(),
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
            self.close_now = self.q.is_empty();
        }
    }

    /// The front chunk to send now, if one is owed and no send is outstanding. Marks it in
    /// flight until [`on_sent`](Self::on_sent) or [`on_send_failed`](Self::on_send_failed).
    /// [`next_sends`](Self::next_sends) with one chunk.
    #[allow(dead_code)] // the backends send every owed chunk at once; tests and fuzzers use it
    pub fn next_send(&mut self) -> Option<SendSpan<'_>> {
        self.q.next_send()
    }

    /// Starts one send of up to `max` owed chunks from the front, if any are owed and no send
    /// is outstanding: calls `each` with their spans, in order, marks them in flight until
    /// [`on_sent`](Self::on_sent) or [`on_send_failed`](Self::on_send_failed), and returns how
    /// many. The backend sends them with one vectored call, so everything a connection owes
    /// goes out in one operation while bytes stay in order (one send outstanding at a time).
    pub fn next_sends(&mut self, max: usize, each: impl FnMut(SendSpan<'_>)) -> usize {
        self.q.next_sends(max, each)
    }

    /// The outstanding send wrote `n` bytes, from the front of the chunks it covered (a short
    /// send leaves the rest owed). For each ring chunk it finishes, calls `release` with the
    /// buffer id: the chunk's one reference is dropped. Whether that was the buffer's last
    /// reference is for the caller's count to say.
    pub fn on_sent(&mut self, n: usize, limits: &Limits, release: impl FnMut(u16)) {
        self.q.on_sent(n, release);
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
        add_ref: impl FnMut(u16),
    ) {
        self.q.on_sent_retiring(n, retired, add_ref);
        self.update_backpressure(limits);
    }

    /// The outstanding send failed; the connection is going to close.
    pub fn on_send_failed(&mut self) {
        self.q.on_send_failed();
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
        self.ending.is_some() && !self.fin_sent && !self.peer_eof && self.q.is_empty()
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
        (self.peer_eof || self.close_now) && self.q.is_empty()
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
        self.q.owed()
    }

    /// Whether a send is outstanding.
    pub fn is_sending(&self) -> bool {
        self.q.is_sending()
    }

    /// Drops everything owed, calling `release` for each provided-buffer reference. The backend
    /// calls this only when no operation on the connection is outstanding.
    pub fn release_all(&mut self, release: impl FnMut(u16)) {
        self.q.release_all(release);
    }

    fn update_backpressure(&mut self, limits: &Limits) {
        if self.q.owed() >= limits.max_pending {
            self.paused = true;
        } else if self.paused && self.q.owed() <= limits.max_pending / 2 {
            self.paused = false;
        }
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
        match c.q.front().unwrap() {
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

    #[test]
    fn protocol_closes_are_counted_in_total_and_by_reason() {
        let mut c = Counters::default();
        count_proto_close(&mut c, CloseReason::TooLarge);
        count_proto_close(&mut c, CloseReason::TooLarge);
        count_proto_close(&mut c, CloseReason::Malformed);
        assert_eq!(
            (c.proto_closes, c.proto_too_large, c.proto_malformed),
            (3, 2, 1)
        );
        assert_eq!((c.proto_requested, c.proto_unsupported), (0, 0));
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
