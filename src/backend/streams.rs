//! Taking a stream in pieces: how much one receive may take from a connection, from what its
//! peer was seen to have in flight. Both backends use it.
//!
//! A receive that takes everything a socket holds echoes a lone pipelined stream in lock step:
//! the peer's whole window comes in, goes back out in one send, and only then does the peer
//! send the next, so peer and server take turns and each idles half the time. Taken in
//! pieces of about an eighth of the window, each piece is echoed while the peer is still
//! sending the rest, and both work at once (a single 4 KiB x 16 stream ran x1.7 faster).
//! Pieces cost: each is a completion (or a read) and a send of its own, so a few streams of
//! large windows are taken whole. The share is an eighth of what all of the shard's streams
//! have in flight: a lone stream of a 64 KiB window is cut into eight, two into four, and
//! two of 256 KiB windows not at all. With `MANY_STREAMS` to `MOST_STREAMS` streams, io_uring
//! (but not SQPOLL's) takes each stream whose window is at most `WHOLE_CAP` whole instead,
//! one piece per enter (`Window::whole_cap`; the io_uring backend's `sync` says why); larger
//! windows keep the share. On epoll a piece
//! costs two syscalls (a read and a write), and pieces measured slower for big windows and
//! for two streams there, so the epoll backend cuts only a lone stream of at most 64 KiB in
//! flight (its cap is at most `MIN_CAP`).

/// Capped receives between two looks at how much the socket holds (`Window::sample`): a
/// window first seen small (a peer that starts slowly) is found out within this many pieces.
pub(crate) const SAMPLE_EVERY: u16 = 64;
/// A connection whose peer once had this many bytes in flight is a stream.
pub(crate) const STREAM_WINDOW: u32 = 32 * 1024;
/// The pieces the shard's streams' data in flight is taken in.
const PIECES: u64 = 8;
/// Smallest cap: below it a piece costs more than the overlap gains.
pub(crate) const MIN_CAP: u32 = 8 * 1024;
/// Largest cap a share gives on io_uring, where a piece costs a receive, its completion and a
/// send inside an enter the turn makes anyway; a share above it leaves receives uncapped.
/// (64 KiB pieces for large windows won under our io_uring load generator and lost a
/// quarter under the epoll one; kernel-notes.md, "Streams in pieces".)
pub(crate) const MAX_CAP: u32 = 32 * 1024;
/// From this many streams on, io_uring (without SQPOLL) takes each stream whose window is at
/// most `WHOLE_CAP` whole, one piece per enter, whatever the share (`Window::whole_cap`).
/// With the share rule, 4 to 12 streams of 64 KiB windows ran 5-15% behind the epoll
/// backend: every enter received a piece of each stream before any of them went back, so
/// each piece waited for the others' copies and the peers idled meanwhile. With fewer streams one piece per enter measured slower
/// (2x32768x4: x0.93), as did whole windows (2x16384x4: x0.61, the lock step a lone stream
/// falls into).
pub(crate) const MANY_STREAMS: u32 = 4;
/// Up to this many streams (half the io_uring backend's piece buffers, so that every stream
/// can have a piece out while owed data holds the rest). Beyond it the share rule holds,
/// which takes such streams whole, in bundle receives: with hundreds of streams a piece
/// receive per enter would cost an enter per receive, where one enter takes many bundles.
/// (Measured up to 20 streams, x1.04 against the share rule; the bound itself is a choice.)
pub(crate) const MOST_STREAMS: u32 = 32;
/// The largest piece from `MANY_STREAMS` streams on, and the size of the io_uring backend's
/// piece buffers: a 64 KiB window is taken whole, into a buffer lent last-freed first (still
/// in cache), rather than a large-ring buffer in ring order.
pub(crate) const WHOLE_CAP: u32 = 64 * 1024;

/// What a connection's peer was seen to have in flight.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Window {
    /// Bytes uncapped receives have taken since one last left the socket empty.
    burst: u32,
    /// The largest burst that ended with the socket empty.
    max: u32,
}

impl Window {
    /// An uncapped receive (one that could take all the socket held) took `n` bytes;
    /// `drained`: it left the socket empty. True when this made the connection a stream.
    pub fn on_uncapped(&mut self, n: u32, drained: bool) -> bool {
        let was_stream = self.is_stream();
        self.burst = self.burst.saturating_add(n);
        // One receive never takes more than the peer had in flight.
        self.max = self.max.max(n);
        if drained {
            self.max = self.max.max(self.burst);
            self.burst = 0;
        }
        !was_stream && self.is_stream()
    }

    /// The socket was seen to hold `queued` bytes (at most what the peer had in flight),
    /// which a capped stream looks at every `SAMPLE_EVERY` pieces. Capped pieces themselves
    /// say nothing about the window, nor do bursts of them: a server slower than its peer
    /// never finds the socket empty.
    pub fn sample(&mut self, queued: u32) {
        self.max = self.max.max(queued);
    }

    /// A receive that may not take all the socket holds was started: what it takes says
    /// nothing about the window, so the burst starts again after it.
    pub fn restart(&mut self) {
        self.burst = 0;
    }

    /// The most bytes the peer was seen to have in flight.
    pub fn seen(&self) -> u32 {
        self.max
    }

    /// The connection is a stream.
    pub fn is_stream(&self) -> bool {
        self.max >= STREAM_WINDOW
    }

    /// The receive cap for this connection (0: none) when the shard has `streams` streams
    /// and receives in units of `unit` bytes (a provided buffer; a cap below one is none).
    /// The cap is the share as a power of two, from `MIN_CAP` up to `max`; a share of twice
    /// `max` or more is none. Powers of two, so that small changes in the window or the
    /// count change nothing.
    pub fn cap(&self, streams: u32, unit: u32, max: u32) -> u32 {
        if !self.is_stream() {
            return 0;
        }
        let share = u64::from(self.max) * u64::from(streams.max(1)) / PIECES;
        if share >= 2 * u64::from(max) {
            return 0;
        }
        let share = (share as u32).max(MIN_CAP);
        let cap = 1 << (31 - share.leading_zeros());
        if cap > max || cap < unit {
            return 0;
        }
        cap
    }

    /// The io_uring backend's cap for `MANY_STREAMS` to `MOST_STREAMS` streams taken one
    /// piece per enter: `WHOLE_CAP` for a stream whose window is at most that (0: not a
    /// stream, a larger window, which keeps the share rule, or a cap below `unit`). Larger
    /// windows cut in 64 KiB pieces one per enter lost under the epoll load generator
    /// (4x65536x4 x0.74, 8x65536x4 x0.50 against the share rule, run 20261208-021036).
    pub fn whole_cap(&self, unit: u32) -> u32 {
        if self.is_stream() && self.max <= WHOLE_CAP && WHOLE_CAP >= unit {
            WHOLE_CAP
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(bursts: &[(u32, bool)]) -> Window {
        let mut w = Window::default();
        for &(n, drained) in bursts {
            w.on_uncapped(n, drained);
        }
        w
    }

    #[test]
    fn small_messages_are_never_capped() {
        let w = seen(&[(128, true), (4096, true), (16 * 1024, true)]);
        assert!(!w.is_stream());
        assert_eq!(w.cap(1, 4096, MAX_CAP), 0);
    }

    #[test]
    fn a_burst_counts_only_once_the_socket_is_empty() {
        let mut w = Window::default();
        assert!(!w.on_uncapped(20_000, false));
        assert!(!w.is_stream(), "the burst has not ended");
        assert!(
            w.on_uncapped(20_000, true),
            "40,000 bytes in flight: a stream"
        );
        assert!(!w.on_uncapped(70_000, true), "already a stream");
        w.restart();
        w.on_uncapped(1, true);
        assert_eq!(
            w.cap(1, 4096, MAX_CAP),
            8 * 1024,
            "an eighth of 70,000, down to a power of two"
        );
    }

    #[test]
    fn one_receive_or_a_sample_is_a_lower_bound_of_the_window() {
        let mut w = Window::default();
        assert!(
            w.on_uncapped(40_000, false),
            "40,000 bytes at once: a stream"
        );
        assert_eq!(
            w.cap(1, 4096, MAX_CAP),
            8 * 1024,
            "an eighth of 40,000, up to 8 KiB"
        );
        w.sample(256 * 1024);
        assert_eq!(w.cap(1, 4096, MAX_CAP), 32 * 1024, "found out bigger");
        w.sample(1);
        assert_eq!(w.cap(1, 4096, MAX_CAP), 32 * 1024, "never smaller");
    }

    #[test]
    fn a_lone_stream_is_cut_in_eight_a_few_in_pieces_and_many_whole() {
        let w64 = seen(&[(64 * 1024, true)]);
        assert_eq!(w64.cap(1, 4096, MAX_CAP), 8 * 1024);
        assert_eq!(w64.cap(2, 4096, MAX_CAP), 16 * 1024);
        assert_eq!(w64.cap(3, 4096, MAX_CAP), 16 * 1024);
        // The share alone: more streams of small windows are cut less, then not at all...
        assert_eq!(w64.cap(4, 4096, MAX_CAP), 32 * 1024);
        assert_eq!(w64.cap(8, 4096, MAX_CAP), 0);
        // ...but from `MANY_STREAMS` on io_uring takes whole windows of up to 64 KiB, one
        // piece per enter.
        assert_eq!(w64.whole_cap(4096), WHOLE_CAP);
        assert_eq!(w64.whole_cap(128 * 1024), 0, "a cap below one buffer");
        assert_eq!(seen(&[(32 * 1024, true)]).whole_cap(4096), WHOLE_CAP);
        assert_eq!(
            seen(&[(64 * 1024 + 1, true)]).whole_cap(4096),
            0,
            "larger windows keep the share rule"
        );
        assert_eq!(seen(&[(4096, true)]).whole_cap(4096), 0, "not a stream");
        let w256 = seen(&[(256 * 1024 + 300, true)]);
        assert_eq!(w256.cap(1, 4096, MAX_CAP), 32 * 1024);
        assert_eq!(
            w256.cap(2, 4096, MAX_CAP),
            0,
            "a large window is not a small one"
        );
        let w128 = seen(&[(128 * 1024, true)]);
        assert_eq!(w128.cap(2, 4096, MAX_CAP), 32 * 1024);
        assert_eq!(w128.cap(4, 4096, MAX_CAP), 0);
        let w512 = seen(&[(512 * 1024, true)]);
        assert_eq!(
            w512.cap(1, 4096, MAX_CAP),
            0,
            "a lone 512 KiB window: uncapped"
        );
        assert_eq!(
            w128.cap(1, 4096, MAX_CAP),
            16 * 1024,
            "a share under MAX_CAP"
        );
        let huge = seen(&[(u32::MAX, true)]);
        assert_eq!(huge.cap(u32::MAX, 4096, MAX_CAP), 0, "no overflow");
    }

    #[test]
    fn epoll_cuts_only_a_lone_small_window() {
        let w64 = seen(&[(64 * 1024, true)]);
        assert_eq!(w64.cap(1, 1, MIN_CAP), 8 * 1024);
        assert_eq!(w64.cap(2, 1, MIN_CAP), 0);
        assert_eq!(seen(&[(256 * 1024, true)]).cap(1, 1, MIN_CAP), 0);
    }

    #[test]
    fn a_cap_below_one_buffer_is_none() {
        let w = seen(&[(64 * 1024, true)]);
        assert_eq!(w.cap(1, 65536, MAX_CAP), 0);
        assert_eq!(w.cap(1, 1, MAX_CAP), 8 * 1024);
    }
}
