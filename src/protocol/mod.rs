//! What to answer: pure functions from received bytes to replies.
//!
//! A [`Protocol`] sees each piece of received data once, in order, and says what goes back through
//! a [`Replies`] sink. It never touches a socket or a ring, so the same protocol runs unchanged on
//! both backends and can be unit-tested with plain byte slices.

mod echo;

pub use crate::conn::Replies;
pub use echo::Echo;

/// What the connection should do after a protocol has seen some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection open and keep receiving.
    Continue,
    /// Stop receiving; send what was already replied, then close the connection.
    Close(CloseReason),
}

/// Why a protocol asked to close a connection. Each reason has its own counter in the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer asked for it in-band (for example `Connection: close`).
    Requested,
    /// The input broke the protocol's grammar.
    Malformed,
    /// The input announced or needed more than the configured limit.
    TooLarge,
    /// The input asked for something the protocol does not implement.
    Unsupported,
}

/// A request/response protocol, one value per connection.
///
/// `on_data` is called with every run of received bytes, in order. Runs are split wherever the
/// kernel split them, so a protocol that needs whole messages keeps its own (bounded) partial
/// state between calls. Replies written to `out` are sent in the order they are written, after
/// everything replied earlier.
pub trait Protocol: Send + 'static {
    /// Consumes `input` and writes replies to `out`.
    fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict;
}
