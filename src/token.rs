//! `user_data` encoding: which operation a completion belongs to.
//!
//! Every SQE carries 64 bits of `user_data` that the kernel copies, untouched, into its CQE.
//! ringecho packs three things into them:
//!
//! ```text
//!  63                              32 31                      8 7        0
//! +----------------------------------+-------------------------+----------+
//! |            slot (u32)            |   generation (24 bits)  | op (u8)  |
//! +----------------------------------+-------------------------+----------+
//! ```
//!
//! For an operation on a connection ([`Token::conn`]):
//!
//! - `slot` holds the *connection key*: the connection's index in the shard's table of
//!   connections (a slab). It is not the connection's *file slot*, the index of its socket in
//!   the ring's registered file table (its direct descriptor), which the kernel picks at
//!   accept and which an SQE names in its own field. The two are allocated independently and
//!   usually differ; `examples/uring_echo.rs` stores connections by file slot, so there they
//!   are the same number.
//! - `generation` tells apart the connections that had the same key one after another.
//! - `op` says which operation completed.
//!
//! For an operation of the shard itself ([`Token::shard`]), `slot` is [`Token::SHARD`]. The
//! accepts ([`Op::Accept`], [`Op::AcceptOne`]) put the index of their listening socket in the
//! `generation` field ([`accept_token`](crate::backend::uring::ops::accept_token)), since a
//! shard listens on one socket per address it serves; the other shard operations (the
//! shutdown poll, accept cancellations) leave it 0.
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
}

impl Op {
    /// Every operation, in discriminant order (for tests that walk them all).
    pub const ALL: [Op; 12] = [
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
    ];

    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::CancelRecv,
            5 => Op::CancelAll,
            6 => Op::Close,
            7 => Op::CancelAccept,
            8 => Op::Shutdown,
            9 => Op::SendZc0,
            10 => Op::AcceptOne,
            11 => Op::ShutdownWrite,
            12 => Op::SendZc1,
            _ => return None,
        })
    }
}

/// Generations wrap at 24 bits.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A decoded `user_data` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// The connection key (the connection's index in the shard's table of connections, not its
    /// file slot), or [`Token::SHARD`] for an operation of the shard itself.
    pub slot: u32,
    /// Generation of the connection that had key `slot` when the SQE was made (24 bits). In a
    /// shard operation: the listener's index for an accept, else 0.
    pub generation: u32,
    /// The operation.
    pub op: Op,
}

impl Token {
    /// The `slot` value of operations that belong to the shard, not to a connection.
    pub const SHARD: u32 = u32::MAX;

    /// A token for operation `op` of the connection whose key is `slot`.
    pub fn conn(slot: usize, generation: u32, op: Op) -> Token {
        debug_assert!(slot < Token::SHARD as usize);
        Token {
            slot: slot as u32,
            generation: generation & GENERATION_MASK,
            op,
        }
    }

    /// A token for a shard-level operation (generation 0; accepts set it to their listener's
    /// index).
    pub fn shard(op: Op) -> Token {
        Token {
            slot: Token::SHARD,
            generation: 0,
            op,
        }
    }

    /// Packs the token into `user_data`.
    pub fn encode(self) -> u64 {
        (u64::from(self.slot) << 32)
            | (u64::from(self.generation & GENERATION_MASK) << 8)
            | u64::from(self.op as u8)
    }

    /// Unpacks `user_data`. `None` for values ringecho never produces.
    pub fn decode(user_data: u64) -> Option<Token> {
        let op = Op::from_u8(user_data as u8)?;
        Some(Token {
            slot: (user_data >> 32) as u32,
            generation: ((user_data >> 8) as u32) & GENERATION_MASK,
            op,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: [Op; 12] = Op::ALL;

    #[test]
    fn round_trips_every_op_and_extreme_fields() {
        for op in OPS {
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
        assert_eq!(t.generation, 1);
        let d = Token::decode(t.encode()).unwrap();
        assert_eq!((d.slot, d.generation, d.op), (7, 1, Op::Send));
    }

    #[test]
    fn same_slot_different_generation_differs() {
        let a = Token::conn(3, 10, Op::Recv).encode();
        let b = Token::conn(3, 11, Op::Recv).encode();
        assert_ne!(a, b);
    }

    #[test]
    fn shard_tokens_are_distinct_from_connection_tokens() {
        let s = Token::decode(Token::shard(Op::Accept).encode()).unwrap();
        assert_eq!(s.slot, Token::SHARD);
        assert_eq!(s.op, Op::Accept);
    }

    #[test]
    fn unknown_op_and_zero_are_rejected() {
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(0xff), None);
        assert_eq!(Token::decode((5u64 << 32) | 200), None);
    }
}
