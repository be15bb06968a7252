//! Property tests of the public pure modules (issue 9): `user_data` tokens and the stats line
//! parser on arbitrary input, with a tiny deterministic PRNG. The connection state machine and
//! the protocols have theirs inside the crate (`src/conn/props.rs`), since `conn` is private.
//!
//! No syscalls, no threads: `make miri` runs this file under Miri (with fewer cases).

mod common;

use common::Rng;
use ringecho::stats::Counters;
use ringecho::token::{Op, Token};

/// Cases per property: many natively, few under Miri (which is ~1000x slower).
fn cases(native: u64) -> u64 {
    if cfg!(miri) {
        (native / 200).max(3)
    } else {
        native
    }
}

// ---- tokens and the stats line ---------------------------------------------------------------

#[test]
fn tokens_round_trip_and_any_user_data_decodes_without_panic() {
    // Every operation a connection's token can carry (a datagram's has its own constructor).
    let ops: Vec<Op> = Op::ALL
        .into_iter()
        .filter(|&op| op != Op::SendDatagram)
        .collect();
    let mut rng = Rng::new(9);
    for _ in 0..cases(100_000) {
        let t = Token::conn(
            (rng.next_u64() as u32 % Token::SHARD) as usize,
            rng.next_u64() as u32 & ringecho::token::GENERATION_MASK,
            ops[rng.below(ops.len())],
        );
        assert_eq!(Token::decode(t.encode()), Some(t));
        let raw = rng.next_u64();
        if let Some(d) = Token::decode(raw) {
            assert_eq!(d.encode(), raw, "decode is the inverse of encode");
        }
    }
}

#[test]
fn stats_lines_parse_garbage_without_panic_and_round_trip() {
    let mut rng = Rng::new(11);
    let alphabet = b"=abcdefghijklmnopqrstuvwxyz_0123456789 -:\t\xff";
    for _ in 0..cases(20_000) {
        let n = rng.below(200);
        let junk: Vec<u8> = (0..n)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let _ = Counters::parse(&String::from_utf8_lossy(&junk));
        let mut c = Counters::default();
        for name in Counters::NAMES {
            assert!(c.set(name, rng.next_u64() >> rng.below(64)));
        }
        assert_eq!(Counters::parse(&format!("stats: t=1.0 {c} rss_kib=5")), c);
    }
}
