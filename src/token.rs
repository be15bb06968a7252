//! `user_data` encoding: which operation a completion belongs to.
//!
//! Every SQE carries 64 bits of `user_data` that the kernel copies, untouched, into its CQE
//! (and every epoll registration a 64-bit key that comes back with its events). ringecho packs
//! a [`Token`] into them: what the operation is for (its [`Target`]) and which operation
//! ([`Op`]).
//!
//! ```text
//!  63                              32 31                      8 7        0
//! +----------------------------------+-------------------------+----------+
//! |  connection key, or SHARD (u32)  |  generation, or index   | op (u8)  |
//! |                                  |        (24 bits)        |          |
//! +----------------------------------+-------------------------+----------+
//! ```
//!
//! For an operation on a connection ([`Token::conn`], [`Target::Conn`]):
//!
//! - the upper 32 bits hold the *connection key*: the connection's index in the shard's table
//!   of connections (a slab). It is not the connection's *file slot*, the index of its socket
//!   in the ring's registered file table (its direct descriptor), which the kernel picks at
//!   accept and which an SQE names in its own field. The two are allocated independently and
//!   usually differ; `examples/uring_echo.rs` stores connections by file slot, so there they
//!   are the same number.
//! - the middle 24 bits hold the *generation*, which tells apart the connections that had the
//!   same key one after another.
//! - `op` says which operation completed.
//!
//! An operation of the shard itself has [`Token::SHARD`] in the upper 32 bits, and its
//! operation says what the middle 24 bits hold:
//!
//! | operation | middle 24 bits | [`Target`] | made by |
//! |---|---|---|---|
//! | [`Op::Accept`], [`Op::AcceptOne`] | the index of the listening socket | `Socket` | [`Token::socket`] |
//! | [`Op::Recv`] (UDP) | the index of the UDP socket | `Socket` | [`Token::socket`] |
//! | [`Op::Send`] (UDP) | the provided buffer the echo is sent from | `Buffer` | [`Token::buffer`] |
//! | any other (the shutdown poll, cancellations) | 0 | `Shard` | [`Token::shard`] |
//!
//! A shard serves one socket per address it listens on, hence the index.
//!
//! The load generator (`ringecho bench`) uses the same tokens from the client's side: its
//! connections (and UDP sockets) are [`Target::Conn`]s keyed by their index in the run, which
//! is never reused, so their generation is always 0 ([`Op::Connect`], [`Op::Recv`],
//! [`Op::Send`], [`Op::CancelAll`]); a datagram it sends names its socket and its send slot
//! ([`Token::datagram`], [`Target::Datagram`]: the socket in the upper 32 bits, the slot in
//! the middle 24).
//!
//! # What the generation is for
//!
//! Connection keys are reused as soon as a connection is gone. That is safe for CQEs because
//! of an ordering rule, not because of the generation: a connection's key and its file slot
//! are freed only by the CQE of its close, and the close is submitted only once every other
//! operation on the connection has posted its final CQE, so no CQE can outlive the connection
//! it names. References held outside the ring have no such rule. The queue of connections
//! parked on an empty buffer ring and the timers (idle timeout, lingering close) keep
//! `(key, generation)` pairs; by the time one is acted on, its connection may have closed and
//! its key gone to a newcomer. The generation no longer matches, and the entry is skipped.
//! The dispatcher checks it on every CQE too, belt and braces: by the rule above it should
//! never fire, and it has not in any test run (`stale_cqes`).

/// What an SQE was for. Stored in the low 8 bits of `user_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Op {
    /// Multishot accept on the listener.
    Accept = 1,
    /// Receive (multishot or single-shot) with buffer select.
    Recv = 2,
    /// A send of what the connection owes (one or more chunks; not zero-copy).
    Send = 3,
    /// Cancellation of the connection's receive (back-pressure pause).
    CancelRecv = 4,
    /// Cancellation of a connection's receive or send when closing it.
    CancelAll = 5,
    /// Close of the connection's socket (direct or ordinary descriptor).
    Close = 6,
    /// Cancellation of the multishot accept (connection cap reached, or draining).
    CancelAccept = 7,
    /// Poll on the shutdown eventfd.
    Shutdown = 8,
    /// A zero-copy send. Its result and, later, its notification (the kernel no longer reads
    /// the memory) carry the same `user_data`, and the connection's next send may start once
    /// the result is in; consecutive zero-copy sends alternate between `SendZc0` and
    /// [`SendZc1`](Op::SendZc1), so each notification names its send.
    SendZc0 = 9,
    /// Single-shot accept (used near the connection cap).
    AcceptOne = 10,
    /// Shutdown of the connection's write side (our FIN).
    ShutdownWrite = 11,
    /// A zero-copy send, the other of the pair (see [`SendZc0`](Op::SendZc0)).
    SendZc1 = 12,
    /// The load generator's connect of one of its connections.
    Connect = 13,
    /// The load generator's send of one datagram, from its socket's send slot
    /// ([`Target::Datagram`]).
    SendDatagram = 14,
    /// A look at how many bytes wait in the connection's socket (`SIOCINQ`).
    SockInq = 15,
}

impl Op {
    /// Every operation, in discriminant order.
    pub const ALL: [Op; 15] = [
        Op::Accept,
        Op::Recv,
        Op::Send,
        Op::CancelRecv,
        Op::CancelAll,
        Op::Close,
        Op::CancelAccept,
        Op::Shutdown,
        Op::SendZc0,
        Op::AcceptOne,
        Op::ShutdownWrite,
        Op::SendZc1,
        Op::Connect,
        Op::SendDatagram,
        Op::SockInq,
    ];

    fn from_u8(v: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|&op| op as u8 == v)
    }
}

/// Generations wrap at 24 bits.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// What an operation is for: the one meaning of a token's upper 56 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A connection: its key (its index in the shard's table of connections, not its file
    /// slot) and its generation (24 bits).
    Conn {
        /// The connection key.
        key: usize,
        /// The generation of the connection that had this key when the SQE was made.
        generation: u32,
    },
    /// The shard's socket with this index: a listening socket (accepts) or a UDP socket
    /// (receives).
    Socket(usize),
    /// A provided buffer: a UDP echo is sent from the buffer its datagram arrived in.
    Buffer(u16),
    /// The shard as a whole (the shutdown poll, cancellations of accepts and receives).
    Shard,
    /// A datagram the load generator sends ([`Op::SendDatagram`]): its socket's index among
    /// the client's sockets, and the send slot that keeps the datagram's bookkeeping and
    /// memory until the send completes.
    Datagram {
        /// The socket's index (never reused within a run).
        socket: usize,
        /// The send slot.
        slot: u16,
    },
}

/// A decoded `user_data` value: what the operation is for, and which operation. Made by the
/// constructor for its target, so that each one encodes and decodes back to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    target: Target,
    op: Op,
}

impl Token {
    /// The upper 32 bits of operations that belong to the shard, not to a connection.
    pub const SHARD: u32 = u32::MAX;

    /// A token for operation `op` of the connection whose key is `key`.
    pub fn conn(key: usize, generation: u32, op: Op) -> Token {
        debug_assert!(key < Token::SHARD as usize);
        debug_assert!(
            op != Op::SendDatagram,
            "a datagram's token is Token::datagram"
        );
        Token {
            target: Target::Conn {
                key,
                generation: generation & GENERATION_MASK,
            },
            op,
        }
    }

    /// A token for operation `op` on the shard's socket with index `index`: an accept
    /// ([`Op::Accept`], [`Op::AcceptOne`]) on a listening socket, or a receive ([`Op::Recv`])
    /// on a UDP socket.
    pub fn socket(index: usize, op: Op) -> Token {
        debug_assert!(matches!(op, Op::Accept | Op::AcceptOne | Op::Recv));
        debug_assert!(index <= GENERATION_MASK as usize);
        Token {
            target: Target::Socket(index),
            op,
        }
    }

    /// The token of a UDP echo sent ([`Op::Send`]) from provided buffer `bid`.
    pub fn buffer(bid: u16) -> Token {
        Token {
            target: Target::Buffer(bid),
            op: Op::Send,
        }
    }

    /// A token for an operation of the shard that concerns none of its sockets: the shutdown
    /// poll, a cancellation.
    pub fn shard(op: Op) -> Token {
        debug_assert!(!matches!(
            op,
            Op::Accept | Op::AcceptOne | Op::Recv | Op::Send
        ));
        Token {
            target: Target::Shard,
            op,
        }
    }

    /// The token of the load generator's send of a datagram from send slot `slot` of its
    /// socket `socket` ([`Op::SendDatagram`]).
    pub fn datagram(socket: usize, slot: u16) -> Token {
        debug_assert!(socket < Token::SHARD as usize);
        Token {
            target: Target::Datagram { socket, slot },
            op: Op::SendDatagram,
        }
    }

    /// What the operation is for.
    pub fn target(self) -> Target {
        self.target
    }

    /// The operation.
    pub fn op(self) -> Op {
        self.op
    }

    /// Packs the token into `user_data`.
    pub fn encode(self) -> u64 {
        let (upper, middle) = match self.target {
            Target::Conn { key, generation } => (key as u32, generation & GENERATION_MASK),
            Target::Socket(index) => (Token::SHARD, index as u32 & GENERATION_MASK),
            Target::Buffer(bid) => (Token::SHARD, u32::from(bid)),
            Target::Shard => (Token::SHARD, 0),
            Target::Datagram { socket, slot } => (socket as u32, u32::from(slot)),
        };
        (u64::from(upper) << 32) | (u64::from(middle) << 8) | u64::from(self.op as u8)
    }

    /// Unpacks `user_data`. `None` for values ringecho never produces.
    pub fn decode(user_data: u64) -> Option<Token> {
        let op = Op::from_u8(user_data as u8)?;
        let upper = (user_data >> 32) as u32;
        let middle = ((user_data >> 8) as u32) & GENERATION_MASK;
        let target = match (upper, op) {
            (Token::SHARD, Op::Accept | Op::AcceptOne | Op::Recv) => {
                Target::Socket(middle as usize)
            }
            (Token::SHARD, Op::Send) => Target::Buffer(u16::try_from(middle).ok()?),
            (Token::SHARD, _) if middle == 0 => Target::Shard,
            (Token::SHARD, _) => return None,
            (socket, Op::SendDatagram) => Target::Datagram {
                socket: socket as usize,
                slot: u16::try_from(middle).ok()?,
            },
            (key, _) => Target::Conn {
                key: key as usize,
                generation: middle,
            },
        };
        Some(Token { target, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: [Op; 15] = Op::ALL;

    #[test]
    fn round_trips_every_op_and_extreme_fields() {
        for op in OPS.into_iter().filter(|&op| op != Op::SendDatagram) {
            for slot in [0usize, 1, 65_535, (u32::MAX - 1) as usize] {
                for generation in [0u32, 1, GENERATION_MASK] {
                    let t = Token::conn(slot, generation, op);
                    assert_eq!(Token::decode(t.encode()), Some(t));
                }
            }
        }
    }

    #[test]
    fn generation_wraps_at_24_bits_without_touching_slot_or_op() {
        let t = Token::conn(7, GENERATION_MASK + 2, Op::Send);
        let key_7_generation_1 = Target::Conn {
            key: 7,
            generation: 1,
        };
        assert_eq!(t.target(), key_7_generation_1);
        let d = Token::decode(t.encode()).unwrap();
        assert_eq!((d.target(), d.op()), (key_7_generation_1, Op::Send));
    }

    #[test]
    fn same_slot_different_generation_differs() {
        let a = Token::conn(3, 10, Op::Recv).encode();
        let b = Token::conn(3, 11, Op::Recv).encode();
        assert_ne!(a, b);
    }

    #[test]
    fn shard_tokens_are_distinct_from_connection_tokens() {
        let t = Token::socket(0, Op::Accept);
        assert_eq!(t.encode() >> 32, u64::from(Token::SHARD));
        let s = Token::decode(t.encode()).unwrap();
        assert_eq!(s.target(), Target::Socket(0));
        assert_eq!(s.op(), Op::Accept);
    }

    #[test]
    fn every_kind_of_shard_token_round_trips() {
        for t in [
            Token::socket(3, Op::Accept),
            Token::socket(GENERATION_MASK as usize, Op::AcceptOne),
            Token::socket(1, Op::Recv),
            Token::buffer(0),
            Token::buffer(u16::MAX),
            Token::shard(Op::Shutdown),
            Token::shard(Op::CancelAccept),
            Token::shard(Op::CancelRecv),
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t), "{t:?}");
            assert_eq!(t.encode() >> 32, u64::from(Token::SHARD), "{t:?}");
        }
        // A buffer id takes 16 of the 24 bits; a shard operation concerning no socket, none.
        let send = |middle: u64| (u64::from(Token::SHARD) << 32) | (middle << 8) | Op::Send as u64;
        assert_eq!(Token::decode(send(1 << 16)), None);
        let shutdown = (u64::from(Token::SHARD) << 32) | (1 << 8) | Op::Shutdown as u64;
        assert_eq!(Token::decode(shutdown), None);
    }

    #[test]
    fn load_generator_datagram_tokens_round_trip_and_stay_apart_from_connections() {
        for (socket, slot) in [(0usize, 0u16), (7, 3), ((u32::MAX - 1) as usize, u16::MAX)] {
            let t = Token::datagram(socket, slot);
            assert_eq!(Token::decode(t.encode()), Some(t));
            assert_eq!(t.target(), Target::Datagram { socket, slot });
        }
        // A slot takes 16 of the 24 bits.
        let wide = (7u64 << 32) | (1 << 24) | Op::SendDatagram as u64;
        assert_eq!(Token::decode(wide), None);
        let connect = Token::conn(5, 0, Op::Connect);
        assert_eq!(Token::decode(connect.encode()), Some(connect));
    }

    #[test]
    fn unknown_op_and_zero_are_rejected() {
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(0xff), None);
        assert_eq!(Token::decode((5u64 << 32) | 200), None);
    }
}
