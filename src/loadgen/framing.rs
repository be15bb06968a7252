//! The byte stream a connection sends with `--framed`, and the check of its echo.
//!
//! The server's framed protocol (`--protocol framed`) reads frames of a 4-byte big-endian body
//! length followed by that many bytes, and echoes each frame back unchanged. With `--framed`
//! every message is one frame whose body is `--size` bytes, so message `k` is wire bytes
//! `k * (size + 4) .. (k + 1) * (size + 4)`: its header, then its body. Bodies are the
//! connection's [`pattern`] stream, frame after frame (frame `k`'s body is
//! stream bytes `k * size .. (k + 1) * size`), so every frame of every connection has its own
//! bytes, and a server that drops, repeats, reorders or cross-wires frames is caught as surely
//! as in plain echo mode.
//!
//! The check knows where each header belongs. A server that merges two frames into one, splits
//! one into two, or corrupts a header fails on the first wrong byte, and the line names the
//! frame, the header or body byte, and (for a header) the length it announced.
//!
//! Sends stay copy-free: a send is a list of `'static` pieces, headers from a 4-byte array
//! made once per frame size (never freed, like the pattern table) and bodies from the pattern
//! table, handed to the kernel as one vectored send.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::pattern;

/// Length of a frame header.
pub const HEADER: u64 = 4;

/// Most pieces in one send: room for 32 whole frames (a header and a body each). Far below
/// `IOV_MAX` (1024).
pub const MAX_PIECES: usize = 64;

/// Headers already made, by body length. Each one is leaked on purpose: a send may point at it
/// for as long as the kernel likes, and there is one per distinct `--size` in a process.
static HEADERS: Mutex<BTreeMap<u32, &'static [u8; 4]>> = Mutex::new(BTreeMap::new());

/// The header of a frame with a `size`-byte body, in memory that is never freed.
pub fn header(size: u32) -> &'static [u8; 4] {
    // A poisoned lock only means another thread panicked while inserting; the map is intact.
    let mut map = HEADERS.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(size)
        .or_insert_with(|| Box::leak(Box::new(size.to_be_bytes())))
}

/// Bytes to send, all `'static`: one slice (plain echo), or a run of a framed stream that
/// [`iter`](Self::iter) cuts into at most [`MAX_PIECES`] slices, for a vectored send. Small
/// and `Copy`, so the plain-echo path pays nothing for framing.
#[derive(Clone, Copy, Debug)]
pub enum Pieces {
    /// One contiguous slice.
    One(&'static [u8]),
    /// Wire bytes `offset .. offset + len` of `frames`, no more than [`MAX_PIECES`] pieces.
    Framed {
        /// The frame layout.
        frames: Frames,
        /// First wire byte.
        offset: u64,
        /// Wire bytes.
        len: u64,
    },
}

impl Pieces {
    /// Total bytes.
    pub fn len(&self) -> u64 {
        match *self {
            Pieces::One(b) => b.len() as u64,
            Pieces::Framed { len, .. } => len,
        }
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slices, in order.
    pub fn iter(&self) -> PieceIter {
        match *self {
            Pieces::One(b) => PieceIter {
                one: Some(b),
                frames: None,
                at: 0,
                end: 0,
            },
            Pieces::Framed {
                frames,
                offset,
                len,
            } => PieceIter {
                one: None,
                frames: Some(frames),
                at: offset,
                end: offset + len,
            },
        }
    }
}

/// The slices of [`Pieces`], in order.
#[derive(Clone, Debug)]
pub struct PieceIter {
    one: Option<&'static [u8]>,
    frames: Option<Frames>,
    at: u64,
    end: u64,
}

impl Iterator for PieceIter {
    type Item = &'static [u8];

    fn next(&mut self) -> Option<&'static [u8]> {
        if let Some(b) = self.one.take() {
            return Some(b);
        }
        let f = self.frames?;
        if self.at >= self.end {
            return None;
        }
        let p = f.piece(self.at, self.end - self.at);
        self.at += p.len() as u64;
        Some(p)
    }
}

/// The `msghdr` and `iovec`s that hand [`Pieces`] to the kernel as one vectored send
/// (`sendmsg`, or an io_uring `SendMsg`). Boxed: an io_uring send reads them until it
/// completes, so their addresses must hold still.
pub(crate) struct VecSend {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_PIECES],
}

impl VecSend {
    /// An empty one, boxed.
    pub(crate) fn boxed() -> Box<VecSend> {
        Box::new(VecSend {
            // SAFETY: msghdr is plain old data; all zero is an empty header.
            hdr: unsafe { std::mem::zeroed() },
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_PIECES],
        })
    }

    /// Points the header at `bytes` (at most [`MAX_PIECES`] pieces, all `'static`) and
    /// returns it, for a send.
    pub(crate) fn set(&mut self, bytes: &Pieces) -> *const libc::msghdr {
        let mut n = 0;
        for (v, p) in self.iov.iter_mut().zip(bytes.iter()) {
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            n += 1;
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = n as _;
        &self.hdr
    }
}

/// The framed stream of one connection: frames of `size`-byte bodies over the pattern stream
/// starting at `base`.
#[derive(Clone, Copy, Debug)]
pub struct Frames {
    base: u32,
    size: u64,
    header: &'static [u8; 4],
}

/// Which part of a frame a byte is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Header byte `byte` (0 to 3). `announced`: the body length the echoed header announces,
    /// when all four of its bytes were at hand.
    Header {
        /// Byte within the header.
        byte: u8,
        /// Body length the echoed header announces.
        announced: Option<u32>,
    },
    /// Body byte `byte`.
    Body {
        /// Byte within the body.
        byte: u64,
    },
}

/// The first echoed byte that is not what the framed stream has there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMismatch {
    /// Frame index.
    pub frame: u64,
    /// Wire offset of the byte (headers included).
    pub offset: u64,
    /// Header or body, and where in it.
    pub part: Part,
    /// What the stream has there.
    pub expected: u8,
    /// What arrived.
    pub got: u8,
}

impl Frames {
    /// Frames of `size`-byte bodies (`size` at most `u32::MAX`) over the stream at `base`.
    pub fn new(base: u32, size: u64) -> Frames {
        let size = size.min(u64::from(u32::MAX));
        Frames {
            base,
            size,
            header: header(size as u32),
        }
    }

    /// Wire length of one frame.
    pub fn wire(&self) -> u64 {
        self.size + HEADER
    }

    /// The first contiguous piece of wire bytes `offset .. offset + len` (`len` > 0): the rest
    /// of a header, or of a body (at most `pattern::MAX_SPAN` of it).
    fn piece(&self, offset: u64, len: u64) -> &'static [u8] {
        let (frame, r) = (offset / self.wire(), offset % self.wire());
        if r < HEADER {
            &self.header[r as usize..HEADER.min(r + len) as usize]
        } else {
            let body = r - HEADER;
            pattern::span(
                self.base,
                frame * self.size + body,
                (self.size - body).min(len),
            )
        }
    }

    /// Wire bytes `offset .. offset + len` to send, cut short where they would take more than
    /// [`MAX_PIECES`] pieces.
    pub fn pieces(&self, offset: u64, len: u64) -> Pieces {
        let (mut at, end) = (offset, offset + len);
        let mut n = 0;
        while at < end && n < MAX_PIECES {
            let p = self.piece(at, end - at);
            if p.is_empty() {
                break;
            }
            at += p.len() as u64;
            n += 1;
        }
        Pieces::Framed {
            frames: *self,
            offset,
            len: at - offset,
        }
    }

    /// Checks that `data` is the framed stream from wire offset `offset` on: every header, and
    /// with `bodies` every body byte too.
    pub fn check(&self, offset: u64, data: &[u8], bodies: bool) -> Result<(), FrameMismatch> {
        let mut pos = 0usize;
        while pos < data.len() {
            let at = offset + pos as u64;
            let (frame, r) = (at / self.wire(), at % self.wire());
            let rest = (data.len() - pos) as u64;
            if r < HEADER {
                let n = (HEADER - r).min(rest) as usize;
                let want = &self.header[r as usize..r as usize + n];
                let got = &data[pos..pos + n];
                if let Some(j) = got.iter().zip(want).position(|(g, w)| g != w) {
                    // The header bytes before this one matched, so they are ours; the length
                    // it announces is known if the rest of the header is in `data`.
                    let announced = data.get(pos..pos + (HEADER - r) as usize).map(|tail| {
                        let mut h = *self.header;
                        h[r as usize..].copy_from_slice(tail);
                        u32::from_be_bytes(h)
                    });
                    return Err(FrameMismatch {
                        frame,
                        offset: at + j as u64,
                        part: Part::Header {
                            byte: (r as usize + j) as u8,
                            announced,
                        },
                        expected: want[j],
                        got: got[j],
                    });
                }
                pos += n;
            } else {
                let body = r - HEADER;
                let n = (self.size - body).min(rest) as usize;
                if !bodies {
                    pos += n;
                    continue;
                }
                pattern::check(self.base, frame * self.size + body, &data[pos..pos + n]).map_err(
                    |m| {
                        let byte = m.offset - frame * self.size;
                        FrameMismatch {
                            frame,
                            offset: frame * self.wire() + HEADER + byte,
                            part: Part::Body { byte },
                            expected: m.expected,
                            got: m.got,
                        }
                    },
                )?;
                pos += n;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(f: &Frames, offset: u64, len: u64) -> Vec<u8> {
        let mut v = Vec::new();
        let mut at = offset;
        while at < offset + len {
            let p = f.pieces(at, offset + len - at);
            assert!(p.iter().count() <= MAX_PIECES);
            for part in p.iter() {
                v.extend_from_slice(part);
            }
            at += p.len();
        }
        v
    }

    #[test]
    fn frames_are_headers_and_pattern_bodies() {
        let base = pattern::stream_base(4);
        let f = Frames::new(base, 10);
        let w = wire(&f, 0, 3 * 14);
        for k in 0..3u64 {
            let fr = &w[(k * 14) as usize..((k + 1) * 14) as usize];
            assert_eq!(&fr[..4], &10u32.to_be_bytes());
            for (i, &b) in fr[4..].iter().enumerate() {
                assert_eq!(b, pattern::byte_at(base, k * 10 + i as u64));
            }
        }
        assert_eq!(f.check(0, &w, true), Ok(()));
        // Any split of the echo checks the same.
        for cut in 0..w.len() {
            assert_eq!(f.check(0, &w[..cut], true), Ok(()));
            assert_eq!(f.check(cut as u64, &w[cut..], true), Ok(()));
        }
    }

    #[test]
    fn pieces_start_anywhere_and_stop_when_full() {
        let f = Frames::new(pattern::stream_base(1), 3);
        let p = f.pieces(2, 12);
        assert_eq!(p.len(), 12);
        assert_eq!(p.iter().next().unwrap(), &3u32.to_be_bytes()[2..]);
        let big = f.pieces(0, 1 << 20);
        assert_eq!(big.iter().count(), MAX_PIECES);
        assert_eq!(big.len(), 32 * 7);
        // A body longer than the pattern period takes more than one piece.
        let huge = Frames::new(0, 200_000);
        let h = huge.pieces(0, 200_004);
        assert_eq!(h.len(), 200_004);
        assert_eq!(h.iter().count(), 5, "header and 4 spans of at most 65521");
        let one = Pieces::One(b"abc");
        assert_eq!((one.len(), one.iter().count()), (3, 1));
        // Empty bodies: only headers.
        let e = Frames::new(0, 0);
        assert_eq!(wire(&e, 0, 8), [0u8; 8]);
    }

    #[test]
    fn a_merged_frame_is_named_with_the_length_it_announces() {
        let f = Frames::new(pattern::stream_base(2), 100);
        let mut w = wire(&f, 0, 3 * 104);
        // The server made frames 1 and 2 one 204-byte frame: frame 1's header says 204.
        w[104..108].copy_from_slice(&204u32.to_be_bytes());
        let m = f.check(0, &w, true).unwrap_err();
        assert_eq!(m.frame, 1);
        assert_eq!(m.offset, 104 + 3);
        assert_eq!(
            m.part,
            Part::Header {
                byte: 3,
                announced: Some(204)
            }
        );
        assert_eq!((m.expected, m.got), (100, 204));
        // Header split across receives: the first half matched earlier.
        let m2 = f.check(106, &w[106..], true).unwrap_err();
        assert_eq!(m2, m);
        // Only part of the header at hand: no announced length.
        w[104] = 1;
        let m3 = f.check(104, &w[104..106], true).unwrap_err();
        assert_eq!(
            m3.part,
            Part::Header {
                byte: 0,
                announced: None
            }
        );
    }

    #[test]
    fn a_body_byte_is_named_by_frame_and_position() {
        let f = Frames::new(pattern::stream_base(9), 50);
        let mut w = wire(&f, 0, 4 * 54);
        w[2 * 54 + 4 + 17] ^= 0x40;
        let m = f.check(0, &w, true).unwrap_err();
        assert_eq!((m.frame, m.offset), (2, 2 * 54 + 4 + 17));
        assert_eq!(m.part, Part::Body { byte: 17 });
        assert_eq!(m.got, m.expected ^ 0x40);
        assert_eq!(f.check(0, &w, false), Ok(()), "headers only");
        w[54] = 1;
        assert_eq!(f.check(0, &w, false).unwrap_err().frame, 1);
    }

    #[test]
    fn headers_are_made_once_per_size() {
        assert!(std::ptr::eq(header(77), header(77)));
        assert_eq!(header(0x0102_0304), &[1, 2, 3, 4]);
    }
}
