//! The framed protocol behind a connection: the first two bytes pick the frame limit and where
//! to cut the rest; any input must not panic, echo a prefix of the input, hold at most 3 header
//! bytes, and give the same replies as the uncut stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringecho::conn::{Conn, Limits, SendSpan};
use ringecho::protocol::Framed;

fn run(stream: &[u8], cut: usize, max_frame: u32) -> Vec<u8> {
    let limits = Limits {
        max_pending: usize::MAX,
    };
    let mut c = Conn::new(Framed::new(max_frame));
    let mut sent = Vec::new();
    for piece in stream.chunks(cut.max(1)) {
        c.on_recv(piece, None, &limits);
        assert!(c.protocol().held_header_bytes() < 4);
        while let Some(SendSpan::Mem(b)) = c.next_send() {
            let n = b.len();
            sent.extend_from_slice(b);
            c.on_sent(n, &limits, |_| {});
        }
    }
    sent
}

fuzz_target!(|data: &[u8]| {
    let [limit, cut, stream @ ..] = data else {
        return;
    };
    let max_frame = u32::from(*limit) * 64;
    let whole = run(stream, usize::MAX, max_frame);
    assert!(stream.starts_with(&whole));
    assert_eq!(whole, run(stream, *cut as usize, max_frame));
});
