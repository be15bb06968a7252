//! The connection state machine driven by a byte-coded script of events (receive, send in
//! full or short, EOF, shutdown): bytes go out in order, exactly once, and owed bytes and
//! back-pressure stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringecho::conn::{Conn, Limits, SendSpan};
use ringecho::protocol::Echo;

fuzz_target!(|data: &[u8]| {
    let Some((&max, mut script)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_pending: 1 + usize::from(max),
    };
    let mut c = Conn::new(Echo);
    let (mut received, mut sent) = (Vec::new(), Vec::new());
    let mut in_flight: Option<Vec<u8>> = None;
    let mut eof = false;
    while let [op, arg, rest @ ..] = script {
        script = rest;
        match op % 4 {
            0 if c.recv_wanted() => {
                let n = usize::from(*arg).min(script.len());
                let (bytes, rest) = script.split_at(n);
                script = rest;
                let out = c.on_recv(bytes, None, &limits);
                if !c.is_ending() {
                    assert_eq!(out.discarded, 0);
                    received.extend_from_slice(bytes);
                }
            }
            1 => {
                if in_flight.is_none()
                    && let Some(SendSpan::Mem(b)) = c.next_send()
                {
                    in_flight = Some(b.to_vec());
                }
                if let Some(b) = in_flight.take() {
                    let n = usize::from(*arg).min(b.len());
                    sent.extend_from_slice(&b[..n]);
                    c.on_sent(n, &limits, |_| {});
                }
            }
            2 if !eof => {
                c.on_eof();
                eof = true;
            }
            3 if *arg == 0 => c.begin_shutdown(),
            _ => {}
        }
        assert_eq!(c.owed() + sent.len(), received.len());
        assert_eq!(&received[..sent.len()], &sent[..]);
        if c.owed() >= limits.max_pending {
            assert!(c.is_paused());
        }
    }
});
