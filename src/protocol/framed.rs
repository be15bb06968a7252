//! Length-prefixed frames, echoed cut-through.
//!
//! A frame is a 4-byte big-endian body length followed by that many bytes. Each frame goes back
//! unchanged, but not as a unit: once its header is checked against the limit, body bytes are
//! echoed as they arrive. Waiting for whole frames would need a buffer as large as the largest
//! frame, and would deadlock a frame larger than the back-pressure watermark (`--max-pending`):
//! receiving pauses while replies are owed, and nothing would be owed until the frame is whole.
//!
//! The only state kept between receives is the header being read (at most 4 bytes) and the
//! count of body bytes still to come, so a connection costs the same however large its frames.

use super::{CloseReason, Protocol, Replies, Verdict};

/// Default largest frame body, in bytes (`--max-frame`).
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Length of the frame header.
const HEADER: usize = 4;

/// The framed protocol: one value per connection. See the module docs.
#[derive(Clone, Debug)]
pub struct Framed {
    max_frame: u32,
    /// The header being read; its first `header_len` bytes arrived in earlier receives.
    header: [u8; HEADER],
    header_len: usize,
    /// Body bytes of the current frame still to arrive (each is echoed as it does).
    body_left: u32,
}

impl Framed {
    /// Frames whose announced body is longer than `max_frame` bytes close the connection.
    pub fn new(max_frame: u32) -> Framed {
        Framed {
            max_frame,
            header: [0; HEADER],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Header bytes held from earlier receives, awaiting the rest of their header (0 to 3).
    pub fn held_header_bytes(&self) -> usize {
        self.header_len
    }
}

impl Default for Framed {
    fn default() -> Framed {
        Framed::new(DEFAULT_MAX_FRAME)
    }
}

impl Protocol for Framed {
    fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict {
        // Everything this call lets through is a prefix of `input`, `input[..pos]`, preceded by
        // header bytes held from the previous receive. It goes back as a single echo at the end,
        // so that on io_uring the whole run is one zero-copy chunk rather than one per frame.
        let mut pos = 0;
        loop {
            if self.body_left > 0 {
                let n = (input.len() - pos).min(self.body_left as usize);
                pos += n;
                self.body_left -= n as u32;
            }
            if pos == input.len() {
                break;
            }
            let held = self.header_len;
            let take = (HEADER - held).min(input.len() - pos);
            self.header[held..held + take].copy_from_slice(&input[pos..pos + take]);
            self.header_len += take;
            if self.header_len < HEADER {
                // The receive ends inside a header. Its bytes are not echoed until the length
                // is known to be acceptable: a peer must never get back part of a frame that
                // is then refused.
                break;
            }
            self.header_len = 0;
            let len = u32::from_be_bytes(self.header);
            if len > self.max_frame {
                // Frames before this one were valid and go back; nothing of this one does.
                out.echo(0..pos);
                return Verdict::Close(CloseReason::TooLarge);
            }
            if held > 0 {
                // The header began in an earlier receive whose buffer is gone, so those bytes
                // are sent from our copy. Held bytes only exist at the start of a receive
                // (`pos == 0`), so they are queued before anything of this input.
                out.write(&self.header[..held]);
            }
            pos += take;
            self.body_left = len;
        }
        out.echo(0..pos);
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testkit::{Rng, Wire};

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    /// What a correct framed echo sends back for `stream`, and whether it closes: every byte up
    /// to the first oversized header, except a trailing incomplete header.
    fn oracle(stream: &[u8], max_frame: u32) -> (Vec<u8>, Option<CloseReason>) {
        let mut pos = 0;
        loop {
            let Some(h) = stream.get(pos..pos + HEADER) else {
                return (stream[..pos].to_vec(), None);
            };
            let len = u32::from_be_bytes(h.try_into().unwrap());
            if len > max_frame {
                return (stream[..pos].to_vec(), Some(CloseReason::TooLarge));
            }
            let end = pos + HEADER + len as usize;
            if end >= stream.len() {
                return (stream.to_vec(), None);
            }
            pos = end;
        }
    }

    #[test]
    fn whole_frames_in_one_receive_go_back_as_one_zero_copy_echo() {
        let mut stream = frame(b"hello");
        stream.extend(frame(b""));
        stream.extend(frame(b"world!"));
        let mut w = Wire::new(Framed::default());
        let out = w.feed(&stream, true);
        assert_eq!((out.ring_refs, out.copied), (1, 0));
        assert_eq!(w.owed(), stream.len());
        assert_eq!(w.closed, None);
    }

    #[test]
    fn a_header_split_over_three_receives_is_echoed_only_once_complete() {
        let stream = frame(b"abc");
        let mut w = Wire::new(Framed::default());
        w.feed(&stream[..1], true);
        w.drain(None);
        assert_eq!((w.sent.len(), w.protocol().held_header_bytes()), (0, 1));
        w.feed(&stream[1..3], true);
        w.drain(None);
        assert_eq!((w.sent.len(), w.protocol().held_header_bytes()), (0, 3));
        w.feed(&stream[3..5], true);
        w.drain(None);
        assert_eq!(w.sent, &stream[..5], "held header bytes, then the new ones");
        w.feed(&stream[5..], false);
        w.drain(None);
        assert_eq!(w.sent, stream);
    }

    #[test]
    fn an_oversized_length_closes_after_the_frames_before_it_and_echoes_none_of_it() {
        let mut stream = frame(b"ok");
        stream.extend(frame(&[7; 11]));
        stream.extend(frame(b"never"));
        let mut w = Wire::new(Framed::new(10));
        w.feed(&stream, true);
        w.drain(None);
        assert_eq!(w.closed, Some(CloseReason::TooLarge));
        assert_eq!(w.sent, frame(b"ok"));
        w.feed(b"late", true);
        w.drain(None);
        assert_eq!(w.sent, frame(b"ok"), "nothing after the close");
    }

    #[test]
    fn an_oversized_header_held_across_receives_is_never_echoed() {
        let mut w = Wire::new(Framed::new(10));
        w.feed(&[0, 0], true);
        w.feed(&[0, 11, b'x'], false);
        w.drain(None);
        assert_eq!(w.closed, Some(CloseReason::TooLarge));
        assert!(w.sent.is_empty());
    }

    #[test]
    fn the_limit_is_inclusive() {
        let mut w = Wire::new(Framed::new(3));
        w.feed(&frame(b"abc"), true);
        w.feed(&frame(b"abcd"), true);
        w.drain(None);
        assert_eq!(
            (w.sent, w.closed),
            (frame(b"abc"), Some(CloseReason::TooLarge))
        );
        let mut w = Wire::new(Framed::new(0));
        w.feed(&frame(b"")[..], true);
        w.drain(None);
        assert_eq!((w.sent.len(), w.closed), (4, None));
    }

    #[test]
    fn a_frame_larger_than_max_pending_streams_through_as_it_arrives() {
        // Each piece is owed (and sendable) as soon as it arrives, so owed bytes never exceed
        // one receive: back-pressure cannot wait on a frame that is not whole yet.
        let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let stream = frame(&body);
        let mut w = Wire::new(Framed::default());
        for piece in stream.chunks(4096) {
            let before = w.sent.len();
            w.feed(piece, true);
            assert_eq!(w.owed(), piece.len());
            w.drain(None);
            assert_eq!(w.sent.len(), before + piece.len());
        }
        assert_eq!(w.sent, stream);
        assert_eq!(w.closed, None);
    }

    #[test]
    fn random_splits_of_valid_streams_echo_the_stream_exactly() {
        let mut rng = Rng::new(0xf4a3_ed01);
        for case in 0..1500 {
            let mut stream = Vec::new();
            for _ in 0..rng.below(12) {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(8),
                    2 => rng.below(300),
                    _ => rng.below(5000),
                };
                stream.extend(frame(&rng.bytes(len)));
            }
            // Sometimes end inside a header or a body, as a peer may when it is cut off.
            if rng.one_in(3) {
                let keep = rng.below(stream.len() + 1);
                stream.truncate(keep);
            }
            let pieces = rng.splits(stream.len());
            let mut w = Wire::new(Framed::new(5000));
            for r in &pieces {
                w.feed(&stream[r.clone()], rng.one_in(2));
                assert!(w.protocol().held_header_bytes() < HEADER);
                if rng.one_in(2) {
                    w.drain(Some(&mut rng));
                }
            }
            w.drain(Some(&mut rng));
            let (want, closed) = oracle(&stream, 5000);
            assert_eq!(closed, None, "case {case}");
            assert_eq!(w.sent, want, "case {case}: {} pieces", pieces.len());
            assert_eq!(w.closed, None, "case {case}");
        }
    }

    #[test]
    fn random_garbage_matches_the_oracle_under_any_split() {
        let mut rng = Rng::new(0x9a4b_a6e5);
        for case in 0..1500 {
            // Small limits make random headers often oversized; zeros make small lengths likely.
            let max_frame = [0, 1, 16, 300, 70_000, u32::MAX][rng.below(6)];
            let len = rng.below(3000);
            let mut stream = rng.bytes(len);
            for b in stream.iter_mut() {
                if rng.one_in(2) {
                    *b = 0;
                }
            }
            let mut w = Wire::new(Framed::new(max_frame));
            w.run(&stream, &rng.splits(stream.len()), &mut rng);
            assert!(w.protocol().held_header_bytes() < HEADER);
            let (want, closed) = oracle(&stream, max_frame);
            assert_eq!(w.sent, want, "case {case}, max_frame {max_frame}");
            assert_eq!(w.closed, closed, "case {case}");
        }
    }
}
