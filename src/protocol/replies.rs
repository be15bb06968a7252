//! The replies a protocol writes, and the queue they wait in until they are sent.
//!
//! A [`Protocol`] writes to a [`Replies`] sink, which appends to a connection's [`OutQueue`]:
//! the ordered [`Chunk`]s of bytes owed to the peer. A backend sends from the front of the
//! queue ([`SendSpan`]s) and reports back what went out.
//!
//! # Who owns which bytes
//!
//! - [`Chunk::Ring`] bytes live in a provided buffer of the shard's buffer ring. The queue
//!   holds one *reference* to that buffer per ring chunk; the backend counts them and gives the
//!   buffer back to the kernel only when the last reference is released (`on_sent` and
//!   `release_all` hand released buffer ids back to the caller).
//! - [`Chunk::Heap`] bytes live in a `Vec` the queue owns.
//! - [`Chunk::Static`] bytes are `'static`.
//! - [`Chunk::Shared`] bytes live in an immutable `Arc<[u8]>` shared with other connections (a
//!   fixed reply built once at start-up); the chunk's clone of the `Arc` keeps them alive.
//!
//! # The in-flight invariant
//!
//! One send is outstanding at a time, and it may cover several chunks:
//! [`OutQueue::next_sends`] hands out the spans of up to `max` chunks from the front (a
//! backend sends them with one vectored call: `sendmsg` on both backends),
//! [`OutQueue::next_send`] just the front one. Between handing them out and the matching
//! `on_sent`/`on_send_failed`, those chunks' memory is being read by the kernel (io_uring) and
//! is neither moved, resized nor freed: new heap bytes are never appended to a chunk that is in
//! flight, an echo never extends one, and chunks are only dropped by `on_sent` or by
//! `release_all`, which the backend calls only once no operation on the connection is
//! outstanding. A zero-copy send's memory is read until its notification, after its result:
//! for those, `on_sent_retiring` hands the chunks the send touched to the backend, which keeps
//! them until the notification (a chunk sent only in part goes too, its unsent rest staying
//! owed as a new chunk).
//!
//! [`Protocol`]: super::Protocol

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

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
    /// Bytes `buf[start..]`, owned by the queue.
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
    /// Bytes in memory owned by the queue or static.
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

/// The most a heap chunk grows to by appending; bytes past it start another chunk (one more
/// `iovec` in the send). A chunk grows by doubling, and a connection keeps one finished chunk
/// for reuse: capping both keeps the memory a connection holds close to what it owes, which
/// is what `--max-pending` bounds, when many peers stop reading at once.
const HEAP_CHUNK_MAX: usize = 64 * 1024;

/// The ordered bytes a connection owes its peer. See the module docs for who owns them and
/// for the in-flight invariant.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    chunks: VecDeque<Chunk>,
    owed: usize,
    /// How many chunks, from the front, the outstanding send covers (0: no send outstanding).
    in_flight: usize,
    /// Capacity kept from a finished heap chunk, reused by the next one.
    spare: Vec<u8>,
}

impl OutQueue {
    /// Bytes owed.
    pub(crate) fn owed(&self) -> usize {
        self.owed
    }

    /// Whether nothing is owed.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Whether a send is outstanding.
    pub(crate) fn is_sending(&self) -> bool {
        self.in_flight > 0
    }

    /// The front chunk, if any (tests look at its memory).
    #[cfg(test)]
    pub(crate) fn front(&self) -> Option<&Chunk> {
        self.chunks.front()
    }

    /// The front chunk to send now, if one is owed and no send is outstanding. Marks it in
    /// flight until [`on_sent`](Self::on_sent) or [`on_send_failed`](Self::on_send_failed).
    pub(crate) fn next_send(&mut self) -> Option<SendSpan<'_>> {
        if self.in_flight > 0 {
            return None;
        }
        let front = self.chunks.front()?;
        self.in_flight = 1;
        Some(span_of(front))
    }

    /// Starts one send of up to `max` owed chunks from the front, if any are owed and no send
    /// is outstanding: calls `each` with their spans, in order, marks them in flight until
    /// [`on_sent`](Self::on_sent) or [`on_send_failed`](Self::on_send_failed), and returns how
    /// many.
    pub(crate) fn next_sends(&mut self, max: usize, mut each: impl FnMut(SendSpan<'_>)) -> usize {
        if self.in_flight > 0 {
            return 0;
        }
        let n = self.chunks.len().min(max);
        for chunk in self.chunks.iter().take(n) {
            each(span_of(chunk));
        }
        self.in_flight = n;
        n
    }

    /// The outstanding send wrote `n` bytes, from the front of the chunks it covered (a short
    /// send leaves the rest owed). For each ring chunk it finishes, calls `release` with the
    /// buffer id: the chunk's one reference is dropped.
    pub(crate) fn on_sent(&mut self, n: usize, mut release: impl FnMut(u16)) {
        let spare = &mut self.spare;
        let finished = |chunk: Chunk| match chunk {
            Chunk::Ring { bid, .. } => release(bid),
            Chunk::Heap { buf, .. }
                if buf.capacity() > spare.capacity() && buf.capacity() <= HEAP_CHUNK_MAX =>
            {
                *spare = buf
            }
            _ => {}
        };
        Self::advance_sent(
            &mut self.chunks,
            &mut self.owed,
            &mut self.in_flight,
            n,
            finished,
        );
    }

    /// [`on_sent`](Self::on_sent) for a zero-copy send, whose memory the kernel may still read
    /// after its result, until its notification: the chunks it finished are moved to `retired`
    /// with their memory (and ring references) untouched. A chunk it sent only in part is
    /// retired whole as well, and its unsent rest stays owed as a chunk of its own: the same
    /// provided buffer with one more reference (`add_ref` is called with its id), a copy of the
    /// rest of the queue's own bytes, or another handle on a shared reply.
    pub(crate) fn on_sent_retiring(
        &mut self,
        n: usize,
        retired: &mut Vec<Chunk>,
        mut add_ref: impl FnMut(u16),
    ) {
        let partial = Self::advance_sent(
            &mut self.chunks,
            &mut self.owed,
            &mut self.in_flight,
            n,
            |chunk| retired.push(chunk),
        );
        if partial && let Some(front) = self.chunks.pop_front() {
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
            self.chunks.push_front(rest);
        }
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

    /// The outstanding send failed.
    pub(crate) fn on_send_failed(&mut self) {
        self.in_flight = 0;
    }

    /// Drops everything owed, calling `release` for each provided-buffer reference. Only
    /// when no send is outstanding.
    pub(crate) fn release_all(&mut self, mut release: impl FnMut(u16)) {
        debug_assert_eq!(self.in_flight, 0, "release_all with a send in flight");
        for chunk in self.chunks.drain(..) {
            if let Chunk::Ring { bid, .. } = chunk {
                release(bid);
            }
        }
        self.owed = 0;
    }

    /// Every byte owed, in order: the queue of [`respond`](super::respond), which offers no
    /// provided buffer, so it holds no ring chunk.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.owed);
        for chunk in &self.chunks {
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
        bytes
    }

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
            let len = buf.len() + bytes.len();
            if len <= HEAP_CHUNK_MAX {
                // Powers of two up to the most a chunk holds, never past it.
                buf.reserve_exact(len.next_power_of_two().min(HEAP_CHUNK_MAX) - buf.len());
                buf.extend_from_slice(bytes);
                return;
            }
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.reserve_exact(bytes.len());
        buf.extend_from_slice(bytes);
        self.chunks.push_back(Chunk::Heap { buf, start: 0 });
    }
}

/// The reply sink a [`Protocol`](super::Protocol) writes to.
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

impl<'a> Replies<'a> {
    /// A sink appending to `q`, for a protocol looking at `input`, which lives in the provided
    /// buffer `zero_copy` names (id, offset of `input[0]`), if replies may reference it.
    pub(crate) fn new(
        q: &'a mut OutQueue,
        input: &'a [u8],
        zero_copy: Option<(u16, u32)>,
    ) -> Replies<'a> {
        Replies {
            q,
            input,
            zero_copy,
            ring_refs: 0,
            copied: 0,
        }
    }

    /// New references taken to the provided buffer so far.
    pub(crate) fn ring_refs(&self) -> u32 {
        self.ring_refs
    }

    /// Bytes copied into the queue's own memory so far.
    pub(crate) fn copied(&self) -> usize {
        self.copied
    }
}

impl Replies<'_> {
    /// Sends back `input[range]`, the bytes the protocol is looking at.
    ///
    /// On the io_uring backend this is zero-copy when the shard's buffer budget allows: the reply
    /// is sent straight from the provided buffer the bytes arrived in. Otherwise they are copied.
    ///
    /// # Panics
    ///
    /// If `range` is not within the input passed to
    /// [`Protocol::on_data`](super::Protocol::on_data), like slice indexing.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn heap_capacities(q: &OutQueue) -> Vec<usize> {
        q.chunks
            .iter()
            .map(|c| match c {
                Chunk::Heap { buf, .. } => buf.capacity(),
                other => panic!("expected heap chunks, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn copied_bytes_fill_chunks_of_at_most_heap_chunk_max_in_order() {
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        // 1 MiB in 4 KiB pieces and a few odd ones, as a peer that stopped reading leaves it.
        for i in 0..256u32 {
            let piece: Vec<u8> = (0..4096 + i % 3).map(|j| (i + j) as u8).collect();
            q.push_heap(&piece);
            want.extend_from_slice(&piece);
        }
        assert_eq!(q.owed(), want.len());
        assert_eq!(q.to_vec(), want, "every byte, in order");
        let caps = heap_capacities(&q);
        assert!(
            caps.iter().all(|&c| c <= HEAP_CHUNK_MAX),
            "no chunk grows past {HEAP_CHUNK_MAX}: {caps:?}"
        );
        let held: usize = caps.iter().sum();
        assert!(
            held <= want.len() + want.len() / 8,
            "memory held {held} for {} owed",
            want.len()
        );
    }

    #[test]
    fn one_piece_larger_than_a_chunk_is_one_exact_chunk() {
        let mut q = OutQueue::default();
        q.push_heap(&[1; 10]);
        q.push_heap(&vec![2; 3 * HEAP_CHUNK_MAX]);
        q.push_heap(&[3; 10]);
        let caps = heap_capacities(&q);
        assert_eq!(caps.len(), 3, "a full chunk takes nothing more: {caps:?}");
        assert_eq!(
            caps[1],
            3 * HEAP_CHUNK_MAX,
            "the large piece is not doubled"
        );
        assert_eq!(q.owed(), 3 * HEAP_CHUNK_MAX + 20);
    }

    #[test]
    fn small_replies_stay_small() {
        let mut q = OutQueue::default();
        q.push_heap(b"HTTP/1.1 200 OK\r\n");
        q.push_heap(b"\r\n");
        let caps = heap_capacities(&q);
        assert_eq!(caps.len(), 1);
        assert!(caps[0] <= 32, "{caps:?}");
    }
}
