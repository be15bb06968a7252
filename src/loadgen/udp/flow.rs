//! One UDP socket's conversation as the load generator sees it: no syscalls, so every
//! transport drives the same bookkeeping and it is unit-tested on its own.
//!
//! # Datagrams
//!
//! Datagram `seq` of socket `conn` is `size` bytes: a 16-byte header, then `size - 16` bytes of
//! the socket's [`pattern`] stream (datagram `seq` takes stream bytes
//! `seq * (size - 16) ..`), so every datagram of every socket has its own bytes.
//!
//! ```text
//!  0      2      4             8                     16
//!  | "rE" | slot | conn (u32)  | seq (u64)           | pattern bytes ...
//! ```
//!
//! All fields are big-endian. `slot` says where the datagram's bookkeeping lives, so an echo
//! is matched to its send in constant time whatever order echoes come back in.
//!
//! # Slots, loss and the end of a datagram
//!
//! A socket has `depth` slots, one per datagram in flight. A slot is *queued* (sequence number
//! and start time assigned, not yet handed to the kernel), then *in flight* from its send until
//! its echo arrives or `loss_timeout` passes, whichever comes first. Either way the datagram is
//! settled, counted received (and timed) or lost, and the slot is free again once its send
//! has also completed. A lost datagram therefore costs its slot `loss_timeout`, never a hang.
//!
//! Echoes that match no datagram in flight are counted, not trusted: *late* if the datagram
//! was already counted lost (remembered for the last [`LOST_MEMORY`] losses of the socket),
//! otherwise *duplicate*. An echo with a lower sequence number than one already received is
//! *reordered*. Every echo's header and bytes are checked first (bytes unless `verify` is
//! off): a datagram the socket never sent, or wrong bytes, is a [`DgramFault`].
//!
//! Start times follow the TCP flow's rules: closed loop, when the datagram was queued; open
//! loop, its intended time on the schedule (see [`flow`](crate::loadgen::flow)).

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use crate::loadgen::flow::Schedule;
use crate::loadgen::pattern;

/// Length of the datagram header.
pub const HEADER: usize = 16;
/// First two bytes of every datagram.
const MAGIC: [u8; 2] = *b"rE";
/// Sequence numbers of lost datagrams each socket remembers, to tell late echoes from
/// duplicates.
pub const LOST_MEMORY: usize = 4096;

/// The header of datagram `seq` of socket `conn`, kept in slot `slot`.
pub fn header(conn: u64, slot: u16, seq: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..2].copy_from_slice(&MAGIC);
    h[2..4].copy_from_slice(&slot.to_be_bytes());
    h[4..8].copy_from_slice(&(conn as u32).to_be_bytes());
    h[8..16].copy_from_slice(&seq.to_be_bytes());
    h
}

/// The bytes after the header of datagram `seq` of a socket whose stream starts at `base`
/// (`'static`: from the pattern table).
pub fn body(base: u32, size: u64, seq: u64) -> &'static [u8] {
    let len = size.saturating_sub(HEADER as u64);
    pattern::span(base, seq.wrapping_mul(len), len)
}

/// Why an echo cannot be accepted. Each one fails the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DgramFault {
    /// The echo is not `size` bytes long.
    Size {
        /// Socket number.
        conn: u64,
        /// Bytes that came back (at most the receive buffer).
        len: usize,
        /// Bytes every datagram has.
        size: u64,
    },
    /// The header is not one this client writes.
    Foreign {
        /// Socket number.
        conn: u64,
        /// The first two bytes.
        magic: [u8; 2],
    },
    /// The header names another socket.
    WrongSocket {
        /// Socket number.
        conn: u64,
        /// The socket the header names.
        named: u32,
    },
    /// The header names a datagram this socket has not sent.
    Unsent {
        /// Socket number.
        conn: u64,
        /// Slot named.
        slot: u16,
        /// Sequence number named.
        seq: u64,
        /// Datagrams queued so far.
        queued: u64,
    },
    /// A byte after the header differs from what was sent.
    Mismatch {
        /// Socket number.
        conn: u64,
        /// Sequence number.
        seq: u64,
        /// Offset in the datagram (the header counts).
        byte: u64,
        /// What was sent there.
        expected: u8,
        /// What came back.
        got: u8,
    },
}

impl fmt::Display for DgramFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("verification failed: ")?;
        match *self {
            // A longer echo may have been cut to the receive buffer: say only that it was longer.
            DgramFault::Size { conn, len, size } if len as u64 > size => write!(
                f,
                "socket {conn} got a datagram back longer than the {size} bytes it sends"
            ),
            DgramFault::Size { conn, len, size } => write!(
                f,
                "socket {conn} got a {len}-byte datagram back; it sends {size}-byte ones"
            ),
            DgramFault::Foreign { conn, magic } => write!(
                f,
                "socket {conn} got a datagram back that does not start with its header \
                 (bytes 0-1: 0x{:02x}{:02x}, expected 0x{:02x}{:02x})",
                magic[0], magic[1], MAGIC[0], MAGIC[1]
            ),
            DgramFault::WrongSocket { conn, named } => write!(
                f,
                "socket {conn} got a datagram back whose header names socket {named}"
            ),
            DgramFault::Unsent {
                conn,
                slot,
                seq,
                queued,
            } => write!(
                f,
                "socket {conn} got datagram {seq} (slot {slot}) back, which it never sent \
                 ({queued} queued so far)"
            ),
            DgramFault::Mismatch {
                conn,
                seq,
                byte,
                expected,
                got,
            } => write!(
                f,
                "socket {conn}, datagram {seq}, byte {byte}: expected 0x{expected:02x}, got \
                 0x{got:02x}"
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Queued,
    InFlight,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    state: State,
    /// The send is with the kernel (asynchronous transports).
    sending: bool,
    seq: u64,
    /// Latency origin, ns.
    start: u64,
    /// When it was handed to the kernel, ns (loss is timed from here).
    sent_at: u64,
}

/// What happened to every datagram of one socket, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DgramCounts {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// Echoes matched to a datagram in flight.
    pub received: u64,
    /// Datagrams not echoed within the loss timeout.
    pub lost: u64,
    /// Echoes of datagrams already counted lost.
    pub late: u64,
    /// Echoes of datagrams already received (or lost too long ago to remember).
    pub duplicate: u64,
    /// Received echoes with a lower sequence number than one received before.
    pub reordered: u64,
}

/// One UDP socket's bookkeeping. See the module docs.
#[derive(Debug)]
pub struct DgramFlow {
    conn: u64,
    base: u32,
    size: u64,
    verify: bool,
    slots: Box<[Slot]>,
    /// Slots ready to take a new datagram.
    free: Vec<u16>,
    /// Queued slots, oldest first.
    outbox: VecDeque<u16>,
    in_flight: usize,
    /// Sequence number of the next datagram queued (= datagrams queued so far).
    next_seq: u64,
    highest: Option<u64>,
    lost_seqs: BTreeSet<u64>,
    schedule: Option<Schedule>,
    due: u64,
    stopped: bool,
    counts: DgramCounts,
}

impl DgramFlow {
    /// Socket `conn` (its number across the run), `size`-byte datagrams (at least
    /// [`HEADER`]), `depth` in flight.
    pub fn new(conn: u64, size: u64, depth: u32, verify: bool) -> DgramFlow {
        let depth = depth.clamp(1, u32::from(u16::MAX)) as u16;
        DgramFlow {
            conn,
            base: pattern::stream_base(conn),
            size: size.max(HEADER as u64),
            verify,
            slots: vec![
                Slot {
                    state: State::Free,
                    sending: false,
                    seq: 0,
                    start: 0,
                    sent_at: 0,
                };
                depth as usize
            ]
            .into_boxed_slice(),
            free: (0..depth).rev().collect(),
            outbox: VecDeque::with_capacity(depth as usize),
            in_flight: 0,
            next_seq: 0,
            highest: None,
            lost_seqs: BTreeSet::new(),
            schedule: None,
            due: 0,
            stopped: false,
            counts: DgramCounts::default(),
        }
    }

    /// Switches to open loop with this schedule.
    pub fn set_schedule(&mut self, s: Schedule) {
        self.schedule = Some(s);
    }

    /// Open loop: `n` more datagrams are due.
    pub fn make_due(&mut self, n: u64) {
        self.due += n;
    }

    /// Socket number.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// The counts so far.
    pub fn counts(&self) -> DgramCounts {
        self.counts
    }

    /// Datagrams handed to the kernel and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues datagrams into free slots: closed loop all of them, open loop no more than are
    /// due. `now` is the start time of closed-loop datagrams. Returns how many were queued.
    pub fn fill(&mut self, now: u64) -> u64 {
        if self.stopped {
            return 0;
        }
        let mut n = 0;
        while self.schedule.is_none() || self.next_seq < self.due {
            let Some(s) = self.free.pop() else { break };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.slots[s as usize] = Slot {
                state: State::Queued,
                sending: false,
                seq,
                start: self.schedule.map_or(now, |sc| sc.intended(seq)),
                sent_at: 0,
            };
            self.outbox.push_back(s);
            n += 1;
        }
        n
    }

    /// The next datagram to send: its slot, header and body. Follow with
    /// [`begin_send`](Self::begin_send) once the transport took it.
    pub fn peek_send(&self) -> Option<(u16, [u8; HEADER], &'static [u8])> {
        let &s = self.outbox.front()?;
        let seq = self.slots[s as usize].seq;
        Some((
            s,
            header(self.conn, s, seq),
            body(self.base, self.size, seq),
        ))
    }

    /// The datagram from [`peek_send`](Self::peek_send) went to the kernel at `now`; `pending`:
    /// its completion is still to come ([`on_sent`](Self::on_sent)), otherwise it is done.
    pub fn begin_send(&mut self, now: u64, pending: bool) {
        let Some(s) = self.outbox.pop_front() else {
            return;
        };
        let slot = &mut self.slots[s as usize];
        slot.state = State::InFlight;
        slot.sending = pending;
        slot.sent_at = now;
        self.in_flight += 1;
        if !pending {
            self.counts.sent += 1;
        }
    }

    /// An asynchronous send from `slot` completed; `ok` if the kernel took the datagram.
    pub fn on_sent(&mut self, slot: u16, ok: bool) {
        let Some(sl) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if !sl.sending {
            return;
        }
        sl.sending = false;
        if ok {
            self.counts.sent += 1;
        }
        if sl.state == State::Free {
            // Settled (echoed or lost) before the completion was seen.
            self.free.push(slot);
        }
    }

    /// Settles in-flight `slot` (echoed or lost).
    fn settle(&mut self, slot: u16) {
        let sl = &mut self.slots[slot as usize];
        sl.state = State::Free;
        self.in_flight -= 1;
        if !sl.sending {
            self.free.push(slot);
        }
    }

    /// An echo arrived at `now`. Checks it, settles its datagram (calling `record(start)` if it
    /// was in flight), and queues more. A fault is a verification failure.
    pub fn on_datagram(
        &mut self,
        data: &[u8],
        now: u64,
        record: impl FnOnce(u64),
    ) -> Result<(), DgramFault> {
        let conn = self.conn;
        if data.len() as u64 != self.size {
            return Err(DgramFault::Size {
                conn,
                len: data.len(),
                size: self.size,
            });
        }
        let magic = [data[0], data[1]];
        if magic != MAGIC {
            return Err(DgramFault::Foreign { conn, magic });
        }
        let slot = u16::from_be_bytes([data[2], data[3]]);
        let named = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&data[8..16]);
        let seq = u64::from_be_bytes(seq_bytes);
        if named != conn as u32 {
            return Err(DgramFault::WrongSocket { conn, named });
        }
        let unsent = DgramFault::Unsent {
            conn,
            slot,
            seq,
            queued: self.next_seq,
        };
        let Some(sl) = self.slots.get(slot as usize) else {
            return Err(unsent);
        };
        if seq >= self.next_seq || (sl.seq == seq && sl.state == State::Queued) {
            return Err(unsent);
        }
        if self.verify {
            pattern::check(
                self.base,
                seq.wrapping_mul(self.size - HEADER as u64),
                &data[HEADER..],
            )
            .map_err(|m| DgramFault::Mismatch {
                conn,
                seq,
                byte: HEADER as u64 + m.offset - seq.wrapping_mul(self.size - HEADER as u64),
                expected: m.expected,
                got: m.got,
            })?;
        }
        if sl.state == State::InFlight && sl.seq == seq {
            record(sl.start);
            self.counts.received += 1;
            match self.highest {
                Some(h) if seq < h => self.counts.reordered += 1,
                _ => self.highest = Some(seq),
            }
            self.settle(slot);
            self.fill(now);
        } else if self.lost_seqs.remove(&seq) {
            self.counts.late += 1;
        } else {
            self.counts.duplicate += 1;
        }
        Ok(())
    }

    /// Counts datagrams in flight since `timeout` ns before `now` as lost, frees their slots
    /// and queues more. Returns when the next one in flight would be lost, if any is.
    pub fn expire(&mut self, now: u64, timeout: u64) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut expired = false;
        for s in 0..self.slots.len() {
            let sl = self.slots[s];
            if sl.state != State::InFlight {
                continue;
            }
            let deadline = sl.sent_at.saturating_add(timeout);
            if now >= deadline {
                self.counts.lost += 1;
                if self.lost_seqs.len() == LOST_MEMORY {
                    self.lost_seqs.pop_first();
                }
                self.lost_seqs.insert(sl.seq);
                self.settle(s as u16);
                expired = true;
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        if expired {
            self.fill(now);
        }
        next
    }

    /// No more datagrams: the queued ones are dropped unsent.
    pub fn stop(&mut self) {
        self.stopped = true;
        while let Some(s) = self.outbox.pop_back() {
            self.slots[s as usize].state = State::Free;
            self.free.push(s);
        }
    }

    /// Stopped, and every datagram sent is settled and its send complete.
    pub fn is_drained(&self) -> bool {
        self.stopped && self.in_flight == 0 && self.slots.iter().all(|s| !s.sending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends everything queued, synchronously; returns the datagrams.
    fn send_all(f: &mut DgramFlow, now: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((_, h, b)) = f.peek_send() {
            out.push([&h[..], b].concat());
            f.begin_send(now, false);
        }
        out
    }

    #[test]
    fn echoes_in_any_order_are_matched_and_timed() {
        let mut f = DgramFlow::new(7, 64, 3, true);
        assert_eq!(f.fill(100), 3);
        let d = send_all(&mut f, 100);
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|x| x.len() == 64));
        assert_eq!(&d[1][..2], b"rE");
        let mut lat = Vec::new();
        for (i, t) in [(2usize, 150u64), (0, 160), (1, 170)] {
            f.on_datagram(&d[i], t, |s| lat.push(t - s)).unwrap();
        }
        assert_eq!(lat, vec![50, 60, 70]);
        let c = f.counts();
        assert_eq!((c.sent, c.received, c.lost, c.reordered), (3, 3, 0, 2));
        assert_eq!(f.in_flight(), 0);
        // Every echo refilled a slot.
        assert_eq!(send_all(&mut f, 200).len(), 3);
    }

    #[test]
    fn a_lost_datagram_frees_its_slot_and_a_late_echo_is_counted_apart() {
        let mut f = DgramFlow::new(1, 32, 1, true);
        f.fill(0);
        let d0 = send_all(&mut f, 10);
        assert_eq!(f.expire(500, 1000), Some(1010));
        assert_eq!(f.expire(1010, 1000), None, "nothing left in flight");
        assert_eq!(f.counts().lost, 1);
        // The slot took datagram 1 at once.
        let d1 = send_all(&mut f, 1010);
        assert_eq!(d1.len(), 1);
        f.on_datagram(&d0[0], 1020, |_| panic!("a late echo is not timed"))
            .unwrap();
        f.on_datagram(&d1[0], 1030, |_| {}).unwrap();
        f.on_datagram(&d1[0], 1040, |_| panic!("nor is a duplicate"))
            .unwrap();
        let c = f.counts();
        assert_eq!(
            (c.sent, c.received, c.lost, c.late, c.duplicate),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(c.sent, c.received + c.lost);
    }

    #[test]
    fn a_slot_waits_for_its_send_completion_before_reuse() {
        let mut f = DgramFlow::new(0, 16, 1, true);
        f.fill(0);
        let (slot, h, b) = f.peek_send().unwrap();
        f.begin_send(0, true);
        // The echo beats the send completion.
        f.on_datagram(&[&h[..], b].concat(), 5, |_| {}).unwrap();
        assert_eq!(f.fill(5), 0, "the kernel may still read the slot's header");
        f.on_sent(slot, true);
        assert_eq!(f.fill(6), 1);
        assert_eq!(f.counts().sent, 1);
    }

    #[test]
    fn open_loop_sends_only_what_is_due_and_times_from_the_schedule() {
        let mut f = DgramFlow::new(0, 20, 4, true);
        f.set_schedule(Schedule {
            first: 1000.0,
            step: 100.0,
        });
        assert_eq!(f.fill(0), 0);
        f.make_due(2);
        assert_eq!(f.fill(0), 2);
        let d = send_all(&mut f, 1500);
        let mut lat = Vec::new();
        f.on_datagram(&d[1], 2000, |s| lat.push(2000 - s)).unwrap();
        assert_eq!(lat, vec![900], "from intended time 1100");
    }

    #[test]
    fn wrong_datagrams_are_named() {
        let mut f = DgramFlow::new(3, 40, 2, true);
        f.fill(0);
        let d = send_all(&mut f, 0);
        let err = |data: &[u8]| {
            let mut g = DgramFlow::new(3, 40, 2, true);
            g.fill(0);
            send_all(&mut g, 0);
            g.on_datagram(data, 1, |_| {}).unwrap_err().to_string()
        };
        let mut bad = d[1].clone();
        bad[30] ^= 0xff;
        let line = err(&bad);
        assert!(
            line.starts_with("verification failed: socket 3, datagram 1, byte 30: expected"),
            "{line}"
        );
        assert!(err(&d[0][..39]).contains("got a 39-byte datagram back; it sends 40-byte"));
        let long = [&d[0][..], &[0u8]].concat();
        assert!(err(&long).contains("got a datagram back longer than the 40 bytes it sends"));
        let mut foreign = d[0].clone();
        foreign[0] = b'x';
        assert!(err(&foreign).contains("does not start with its header"));
        let other = [&header(4, 0, 0)[..], &d[0][16..]].concat();
        assert!(err(&other).contains("names socket 4"));
        let unsent = [&header(3, 0, 9)[..], &d[0][16..]].concat();
        assert!(err(&unsent).contains("datagram 9 (slot 0) back, which it never sent"));
        // A header rewritten to another datagram's number fails on its bytes.
        let swapped = [&header(3, 0, 1)[..], &d[0][16..]].concat();
        assert!(err(&swapped).contains("socket 3, datagram 1, byte "));
        assert_eq!(f.counts().received, 0);
    }

    #[test]
    fn stopping_drops_unsent_datagrams_and_drains_on_settlement() {
        let mut f = DgramFlow::new(0, 16, 2, true);
        f.fill(0);
        let (_, h, b) = f.peek_send().unwrap();
        f.begin_send(0, false);
        f.stop();
        assert!(!f.is_drained());
        assert_eq!(f.fill(1), 0);
        f.on_datagram(&[&h[..], b].concat(), 2, |_| {}).unwrap();
        assert!(f.is_drained());
        assert_eq!(f.counts().sent, 1);
    }

    #[test]
    fn lost_memory_is_bounded() {
        let mut f = DgramFlow::new(0, 16, 1, false);
        for t in 0..(LOST_MEMORY as u64 + 10) {
            f.fill(t * 10);
            send_all(&mut f, t * 10);
            f.expire(t * 10 + 5, 1);
        }
        assert_eq!(f.counts().lost, LOST_MEMORY as u64 + 10);
        assert_eq!(f.lost_seqs.len(), LOST_MEMORY);
    }
}
