//! A protocol of your own, served on io_uring or epoll: each line comes back upper-cased, and
//! `QUIT` says `BYE` and closes the connection. The protocol sees bytes, never a socket or a
//! ring, which is why the same code runs on both backends. Under 40 lines of code, all told.
//!
//! `on_data` runs on the shard's event-loop thread, so it must never block; it is the only
//! hook (no call on connect, on the peer's FIN or on a timer). After `QUIT` the server sends
//! `BYE`, then FIN, and waits up to 5 s (`ServerBuilder::lingering_close`) for the peer to
//! close. The `Protocol` docs list the rest: which reply method to use, output back-pressure,
//! panics, state shared between connections.
//!
//! ```text
//! cargo run --example line_protocol -- --addr 127.0.0.1:7878 --backend epoll
//! printf 'hello\nQUIT\n' | socat - TCP:127.0.0.1:7878     # or: nc -N (netcat-openbsd)
//! ```

use ringecho::Server;
use ringecho::protocol::{CloseReason, Protocol, Replies, Verdict};

/// One per connection: the server clones the value given to `serve` for each one it accepts.
#[derive(Clone, Default)]
struct Lines {
    /// The line so far: a receive may end anywhere, even in the middle of a line.
    line: Vec<u8>,
}

impl Protocol for Lines {
    fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict {
        for piece in input.split_inclusive(|&b| b == b'\n') {
            self.line.extend_from_slice(piece);
            if self.line.len() > 4096 {
                return Verdict::Close(CloseReason::TooLarge); // Keeps memory bounded.
            } else if !self.line.ends_with(b"\n") {
                break; // The rest of the line comes with a later receive.
            } else if self.line.trim_ascii_end() == b"QUIT" {
                out.write(b"BYE\n"); // Replies written before a close are still sent.
                return Verdict::Close(CloseReason::Requested);
            }
            self.line.make_ascii_uppercase();
            out.write(&self.line); // Copied into the connection's queue: `line` can be reused.
            self.line.clear();
        }
        Verdict::Continue
    }
}

fn main() -> Result<(), ringecho::Error> {
    let server = Server::builder()
        .addr(flag("--addr", "127.0.0.1:7878"))
        .backend(flag("--backend", "auto")) // `auto`, `uring` or `epoll`.
        .bind()?;
    server.shutdown_handle().shutdown_on_signals()?; // Ctrl-C: drain, then `serve` returns.
    println!("listening on {}", server.local_addrs()[0]); // Bound: clients may connect now.
    server.serve(Lines::default())?;
    Ok(())
}

/// The value after `--name` on the command line (or `default`), parsed.
fn flag<T: std::str::FromStr<Err: std::fmt::Debug>>(name: &str, default: &str) -> T {
    let value = std::env::args().skip_while(|a| a != name).nth(1);
    value.as_deref().unwrap_or(default).parse().expect(name)
}
