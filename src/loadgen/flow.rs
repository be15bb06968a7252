//! One connection's conversation as the load generator sees it. No syscalls: every backend
//! (io_uring, epoll, blocking threads) drives the same `Flow`, so they differ only in how bytes
//! move, never in what is counted or checked.
//!
//! # Streams, messages, and when a message is done
//!
//! The connection sends one byte stream ([`super::pattern`]) cut into messages of
//! `size` bytes. Message `k` is bytes `k*size .. (k+1)*size`; it is *complete* when
//! `(k+1)*size` bytes have come back, all equal to the stream. Echo servers may split and merge
//! messages however they like; only the byte count and the byte values matter.
//!
//! With `--framed` the stream is [`framing`]'s instead: each message is a frame
//! (a 4-byte length header and a `size`-byte body), `size + 4` bytes on the wire, and the check
//! also knows where every header belongs. Offsets and byte counts are wire bytes either way.
//!
//! At most `depth` messages are in flight (queued and not complete). Each one's start time is
//! kept in a ring of `depth` timestamps, indexed `k % depth`:
//!
//! - **closed loop**: message `k` is queued when a slot frees (at start, or when an earlier
//!   message completes) and its start is the moment it was queued;
//! - **open loop**: message `k` is due at an *intended* time from a fixed schedule, and its
//!   start is that intended time even if the connection could only send it later (because
//!   `depth` messages were still outstanding). A server that stalls is charged for every
//!   message that should have gone out during the stall, not just the few that were in flight
//!   (coordinated omission).

use std::fmt;

use super::framing::{self, FrameMismatch, Frames, Pieces};
use super::pattern::{self, Mismatch};

/// The open-loop schedule of one connection: message `k` is intended at `first + k * step`
/// nanoseconds after the run's base instant.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Intended time of message 0, ns.
    pub first: f64,
    /// Time between this connection's messages, ns.
    pub step: f64,
}

impl Schedule {
    /// Intended send time of message `k`, ns.
    pub fn intended(&self, k: u64) -> u64 {
        (self.first + k as f64 * self.step) as u64
    }
}

/// Why a connection's conversation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An echoed byte differs from what was sent at that offset.
    Mismatch {
        /// Connection number.
        conn: u64,
        /// Message size, to name the message.
        size: u64,
        /// The first differing byte.
        at: Mismatch,
    },
    /// An echoed frame differs from what was sent (`--framed`).
    Frame {
        /// Connection number.
        conn: u64,
        /// Body length of every frame sent.
        size: u64,
        /// The first differing byte.
        at: FrameMismatch,
    },
    /// More bytes came back than were sent.
    Extra {
        /// Connection number.
        conn: u64,
        /// Bytes sent so far (stream offset of the first unexpected byte).
        sent: u64,
        /// Bytes that arrived beyond that.
        extra: u64,
    },
    /// The server ended the stream while bytes were owed, or in the middle of the run.
    Eof {
        /// Connection number.
        conn: u64,
        /// Bytes echoed back before the end.
        received: u64,
        /// Bytes sent.
        sent: u64,
    },
}

impl Fault {
    /// A verification failure (wrong bytes) rather than a connection failure.
    pub fn is_verification(&self) -> bool {
        !matches!(self, Fault::Eof { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Mismatch { conn, size, at } => write!(
                f,
                "verification failed: connection {conn}, offset {} (message {}, byte {}): \
                 expected 0x{:02x}, got 0x{:02x}",
                at.offset,
                at.offset / size,
                at.offset % size,
                at.expected,
                at.got
            ),
            Fault::Frame { conn, size, at } => {
                write!(
                    f,
                    "frame verification failed: connection {conn}, frame {}, offset {}, ",
                    at.frame, at.offset
                )?;
                match at.part {
                    framing::Part::Header { byte, announced } => {
                        write!(
                            f,
                            "header byte {byte}: expected 0x{:02x}, got 0x{:02x}",
                            at.expected, at.got
                        )?;
                        match announced {
                            Some(len) => write!(
                                f,
                                " (the echoed header announces a {len}-byte body; {size} were \
                                 sent: frames merged, split or corrupted)"
                            ),
                            None => Ok(()),
                        }
                    }
                    framing::Part::Body { byte } => write!(
                        f,
                        "body byte {byte}: expected 0x{:02x}, got 0x{:02x}",
                        at.expected, at.got
                    ),
                }
            }
            Fault::Extra { conn, sent, extra } => write!(
                f,
                "verification failed: connection {conn}, offset {sent}: server sent {extra} \
                 byte(s) more than it was sent"
            ),
            Fault::Eof {
                conn,
                received,
                sent,
            } => {
                if received < sent {
                    write!(
                        f,
                        "short read: connection {conn} closed by the server after echoing \
                         {received} of {sent} bytes"
                    )
                } else {
                    write!(
                        f,
                        "connection {conn} closed by the server mid-run after {received} bytes"
                    )
                }
            }
        }
    }
}

/// One connection's send/receive bookkeeping. See the module docs.
#[derive(Debug)]
pub struct Flow {
    conn: u64,
    base: u32,
    /// Wire bytes per message (`--size`, plus the header when framed).
    size: u64,
    /// `--framed`: the frame layout.
    frames: Option<Frames>,
    depth: u64,
    verify: bool,
    /// Bytes of whole messages queued for sending.
    queued: u64,
    /// Bytes the kernel accepted.
    sent: u64,
    /// Bytes in the one outstanding send, 0 if none.
    in_send: u64,
    /// Bytes echoed back (and verified).
    received: u64,
    /// Start time (ns) of in-flight message `k` at `k % depth`.
    stamps: Box<[u64]>,
    schedule: Option<Schedule>,
    /// Open loop: messages whose intended time has come.
    due: u64,
    stopped: bool,
    /// Last time bytes came back, or outstanding bytes appeared after none were (ns).
    last_progress: u64,
}

impl Flow {
    /// A flow for connection `conn` (its number across the whole run) sending `size`-byte
    /// messages, each one a frame with a `size`-byte body if `framed`.
    pub fn new(conn: u64, size: u64, depth: u32, verify: bool, framed: bool) -> Flow {
        let depth = u64::from(depth.max(1));
        let base = pattern::stream_base(conn);
        let frames = framed.then(|| Frames::new(base, size));
        Flow {
            conn,
            base,
            size: frames.map_or(size.max(1), |f| f.wire()),
            frames,
            depth,
            verify,
            queued: 0,
            sent: 0,
            in_send: 0,
            received: 0,
            stamps: vec![0; depth as usize].into_boxed_slice(),
            schedule: None,
            due: 0,
            stopped: false,
            last_progress: 0,
        }
    }

    /// Switches this flow to open loop with the given schedule.
    pub fn set_schedule(&mut self, schedule: Schedule) {
        self.schedule = Some(schedule);
    }

    /// Connection number.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Messages queued so far.
    pub fn msgs_queued(&self) -> u64 {
        self.queued / self.size
    }

    /// Messages the kernel accepted in full.
    pub fn msgs_sent(&self) -> u64 {
        self.sent / self.size
    }

    /// Messages echoed back in full.
    pub fn msgs_received(&self) -> u64 {
        self.received / self.size
    }

    /// Bytes queued but not yet echoed back.
    pub fn outstanding(&self) -> u64 {
        self.queued - self.received
    }

    /// When bytes last came back (ns), for timeouts.
    pub fn last_progress(&self) -> u64 {
        self.last_progress
    }

    /// No more messages will be queued.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Stopped and every queued byte echoed: the conversation can end.
    pub fn is_drained(&self) -> bool {
        self.stopped && self.received == self.queued
    }

    /// Open loop: one more message is due.
    pub fn make_due(&mut self, n: u64) {
        self.due += n;
    }

    /// Queues messages: closed loop up to `depth` in flight, open loop also no more than are
    /// due. `now` stamps closed-loop messages. Returns how many were queued.
    pub fn fill(&mut self, now: u64) -> u64 {
        if self.stopped {
            return 0;
        }
        let mut k = self.msgs_queued();
        let done = self.msgs_received();
        let limit = match self.schedule {
            Some(_) => (done + self.depth).min(self.due),
            None => done + self.depth,
        };
        if k >= limit {
            return 0;
        }
        if self.queued == self.received {
            // Nothing was owed until now: the timeout clock starts here, not at the last echo.
            self.last_progress = now;
        }
        let first = k;
        while k < limit {
            self.stamps[(k % self.depth) as usize] = match self.schedule {
                Some(s) => s.intended(k),
                None => now,
            };
            k += 1;
        }
        self.queued = k * self.size;
        k - first
    }

    /// The bytes to send next (all `'static`: from the stream table, and frame headers), if any
    /// are queued and no send is outstanding. Call [`begin_send`](Self::begin_send) with the
    /// length actually handed to the kernel.
    pub fn next_send(&self, max: u64) -> Option<Pieces> {
        if self.in_send > 0 || self.sent >= self.queued {
            return None;
        }
        let len = (self.queued - self.sent).min(max);
        Some(match &self.frames {
            Some(f) => f.pieces(self.sent, len),
            None => Pieces::One(pattern::span(self.base, self.sent, len)),
        })
    }

    /// A send of `len` bytes (from [`next_send`](Self::next_send)) is now outstanding.
    pub fn begin_send(&mut self, len: u64) {
        debug_assert_eq!(self.in_send, 0);
        self.in_send = len;
    }

    /// The outstanding send wrote `n` bytes (possibly fewer than asked; the rest is sent next).
    pub fn on_sent(&mut self, n: u64) {
        debug_assert!(n <= self.in_send);
        self.sent += n.min(self.in_send);
        self.in_send = 0;
    }

    /// The outstanding send failed.
    pub fn on_send_failed(&mut self) {
        self.in_send = 0;
    }

    /// Whether a send is outstanding.
    pub fn send_outstanding(&self) -> bool {
        self.in_send > 0
    }

    /// Echoed bytes arrived at `now`. Checks them (always the count; the values unless
    /// verification is off), completes messages, calling `record(start, now)` with each
    /// completed message's start time, and refills the pipeline. Returns messages completed.
    pub fn on_recv(
        &mut self,
        data: &[u8],
        now: u64,
        mut record: impl FnMut(u64),
    ) -> Result<u64, Fault> {
        let n = data.len() as u64;
        // Bytes the kernel may have taken so far: a send's completion can be reaped after the
        // echo of its bytes, so the outstanding send counts.
        let sendable = self.sent + self.in_send;
        if self.received + n > sendable {
            return Err(Fault::Extra {
                conn: self.conn,
                sent: sendable,
                extra: self.received + n - sendable,
            });
        }
        match &self.frames {
            // Headers are checked even without verification: they are the frame boundaries.
            Some(f) => f
                .check(self.received, data, self.verify)
                .map_err(|at| Fault::Frame {
                    conn: self.conn,
                    size: self.size - framing::HEADER,
                    at,
                })?,
            None if self.verify => {
                pattern::check(self.base, self.received, data).map_err(|at| Fault::Mismatch {
                    conn: self.conn,
                    size: self.size,
                    at,
                })?
            }
            None => {}
        }
        let before = self.msgs_received();
        self.received += n;
        self.last_progress = now;
        let after = self.msgs_received();
        for k in before..after {
            record(self.stamps[(k % self.depth) as usize]);
        }
        self.fill(now);
        Ok(after - before)
    }

    /// The server ended the stream. Fine only once we stopped and everything came back.
    pub fn on_eof(&self) -> Result<(), Fault> {
        if self.stopped && self.received == self.sent + self.in_send && self.sent == self.queued {
            return Ok(());
        }
        Err(Fault::Eof {
            conn: self.conn,
            received: self.received,
            sent: self.sent + self.in_send,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(flow: &mut Flow, max: u64) -> Vec<u8> {
        let p = flow.next_send(max).expect("something to send");
        let b: Vec<u8> = p.iter().collect::<Vec<_>>().concat();
        flow.begin_send(b.len() as u64);
        flow.on_sent(b.len() as u64);
        b
    }

    #[test]
    fn closed_loop_keeps_depth_in_flight_and_times_from_queueing() {
        let mut f = Flow::new(0, 10, 3, true, false);
        assert_eq!(f.fill(100), 3);
        assert_eq!(f.fill(100), 0, "already at depth");
        let bytes = echo(&mut f, 1 << 20);
        assert_eq!(bytes.len(), 30);
        let mut lat = Vec::new();
        // 15 bytes back: message 0 complete, message 1 half.
        assert_eq!(f.on_recv(&bytes[..15], 250, |s| lat.push(250 - s)), Ok(1));
        assert_eq!(lat, vec![150]);
        assert_eq!(f.msgs_queued(), 4, "one slot freed, one message queued");
        assert_eq!(f.on_recv(&bytes[15..], 300, |s| lat.push(300 - s)), Ok(2));
        assert_eq!(lat, vec![150, 200, 200]);
        assert_eq!(f.msgs_queued(), 6);
    }

    #[test]
    fn open_loop_times_from_the_intended_send_time() {
        let mut f = Flow::new(0, 4, 1, true, false);
        f.set_schedule(Schedule {
            first: 1000.0,
            step: 500.0,
        });
        assert_eq!(f.fill(0), 0, "nothing due yet");
        f.make_due(3);
        assert_eq!(f.fill(1000), 1, "depth 1 caps it");
        let b = echo(&mut f, 64);
        let mut lat = Vec::new();
        // The server stalls: message 0 comes back at 5000, messages 1 and 2 are late.
        f.on_recv(&b, 5000, |s| lat.push(5000 - s)).unwrap();
        let b = echo(&mut f, 64);
        f.on_recv(&b, 5100, |s| lat.push(5100 - s)).unwrap();
        let b = echo(&mut f, 64);
        f.on_recv(&b, 5200, |s| lat.push(5200 - s)).unwrap();
        assert_eq!(lat, vec![4000, 3600, 3200], "from 1000, 1500, 2000");
        assert_eq!(f.fill(6000), 0, "nothing more due");
    }

    #[test]
    fn a_flipped_byte_is_named_by_connection_and_offset() {
        let mut f = Flow::new(5, 100, 2, true, false);
        f.fill(0);
        let mut b = echo(&mut f, 1 << 20);
        b[130] ^= 0xff;
        let err = f.on_recv(&b, 1, |_| {}).unwrap_err();
        match &err {
            Fault::Mismatch { conn: 5, at, .. } => {
                assert_eq!(at.offset, 130);
                assert_eq!(at.got, at.expected ^ 0xff);
            }
            other => panic!("unexpected {other:?}"),
        }
        let line = err.to_string();
        assert!(line.contains("connection 5"), "{line}");
        assert!(line.contains("offset 130 (message 1, byte 30)"), "{line}");
    }

    #[test]
    fn without_verification_values_pass_but_counts_do_not() {
        let mut f = Flow::new(0, 8, 1, false, false);
        f.fill(0);
        let _ = echo(&mut f, 64);
        assert_eq!(f.on_recv(&[0u8; 8], 1, |_| {}), Ok(1));
        assert!(matches!(
            f.on_recv(&[0u8; 9], 2, |_| {}),
            Err(Fault::Extra { extra: 9, .. })
        ));
    }

    #[test]
    fn echo_racing_the_send_completion_is_not_extra() {
        let mut f = Flow::new(0, 8, 1, true, false);
        f.fill(0);
        let b = f.next_send(64).unwrap().iter().collect::<Vec<_>>().concat();
        f.begin_send(8);
        assert_eq!(f.on_recv(&b, 1, |_| {}), Ok(1));
        f.on_sent(8);
    }

    #[test]
    fn short_sends_resume_where_the_kernel_stopped() {
        let mut f = Flow::new(0, 10, 1, true, false);
        f.fill(0);
        let first = f.next_send(64).unwrap().iter().next().unwrap();
        f.begin_send(10);
        f.on_sent(4);
        let rest = f.next_send(64).unwrap().iter().next().unwrap();
        assert_eq!(rest, &first[4..]);
    }

    #[test]
    fn eof_is_clean_only_after_stop_and_full_echo() {
        let mut f = Flow::new(2, 10, 1, true, false);
        f.fill(0);
        let b = echo(&mut f, 64);
        f.on_recv(&b[..5], 1, |_| {}).unwrap();
        let e = f.on_eof().unwrap_err();
        assert_eq!(
            e,
            Fault::Eof {
                conn: 2,
                received: 5,
                sent: 10
            }
        );
        assert!(e.to_string().starts_with("short read: connection 2"));
        f.stop();
        f.on_recv(&b[5..], 2, |_| {}).unwrap();
        assert!(f.is_drained());
        assert_eq!(f.on_eof(), Ok(()));
    }

    #[test]
    fn eof_mid_run_with_nothing_owed_is_still_a_fault() {
        let mut f = Flow::new(2, 10, 1, true, false);
        f.fill(0);
        let b = echo(&mut f, 64);
        f.on_recv(&b, 1, |_| {}).unwrap();
        // The refill queued message 1 but it was not sent yet.
        assert!(matches!(f.on_eof(), Err(Fault::Eof { received: 10, .. })));
    }

    #[test]
    fn framed_messages_are_frames_and_a_bad_header_is_named() {
        let mut f = Flow::new(3, 10, 2, true, true);
        assert_eq!(f.fill(0), 2);
        let mut b = echo(&mut f, 1 << 20);
        assert_eq!(b.len(), 28, "two frames of 4 + 10 bytes");
        assert_eq!(&b[..4], &10u32.to_be_bytes());
        assert_eq!(&b[14..18], &10u32.to_be_bytes());
        let mut lat = Vec::new();
        assert_eq!(f.on_recv(&b[..14], 5, |s| lat.push(s)), Ok(1));
        b[14 + 3] = 20;
        let err = f.on_recv(&b[14..], 6, |_| {}).unwrap_err();
        let line = err.to_string();
        assert!(
            line.starts_with(
                "frame verification failed: connection 3, frame 1, offset 17, header byte 3: \
                 expected 0x0a, got 0x14 (the echoed header announces a 20-byte body; 10 were sent"
            ),
            "{line}"
        );
        assert!(err.is_verification());
    }

    #[test]
    fn framed_without_verification_still_checks_headers() {
        let mut f = Flow::new(0, 6, 1, false, true);
        f.fill(0);
        let mut b = echo(&mut f, 64);
        b[5] ^= 1;
        assert_eq!(f.on_recv(&b, 1, |_| {}), Ok(1), "body not compared");
        f.fill(1);
        let mut b = echo(&mut f, 64);
        b[0] = 9;
        assert!(matches!(f.on_recv(&b, 2, |_| {}), Err(Fault::Frame { .. })));
    }
}
