//! The HTTP protocol behind a connection: the input's first byte picks where to cut the rest
//! into receives; any input must not panic, keep the held head bounded, and give the same
//! replies as the uncut stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringecho::conn::{Conn, Limits, SendSpan};
use ringecho::protocol::{Http, MAX_HEAD};

fn run(stream: &[u8], cut: usize) -> Vec<u8> {
    let limits = Limits {
        max_pending: usize::MAX,
    };
    let mut c = Conn::new(Http::new(13));
    let mut sent = Vec::new();
    for piece in stream.chunks(cut.max(1)) {
        c.on_recv(piece, None, &limits);
        assert!(c.protocol().held_head_capacity() <= 2 * MAX_HEAD);
        while let Some(SendSpan::Mem(b)) = c.next_send() {
            let n = b.len();
            sent.extend_from_slice(b);
            c.on_sent(n, &limits, |_| {});
        }
    }
    sent
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    assert_eq!(run(stream, usize::MAX), run(stream, cut as usize));
});
