//! The io_uring backend: one ring per shard, one completion dispatcher, one loop.
//!
//! # Pieces that work on their own
//!
//! - [`build_ring`] creates a ring with the most efficient task-running mode the kernel
//!   accepts and reports what the kernel can do ([`Features`]); [`probe`] does the same for a
//!   throw-away ring.
//! - [`BufRing`] (module [`buf_ring`]) owns a provided-buffer ring and knows, buffer by
//!   buffer, whether the kernel or user space holds it. It works with any
//!   [`io_uring::IoUring`]: `examples/buf_ring.rs` uses it alone.
//! - [`ops`] builds the SQEs the server submits, and [`Token`] is what
//!   they carry in `user_data`.
//!
//! `examples/uring_echo.rs` is a complete echo server made of these pieces alone.
//!
//! # The server's loops
//!
//! Crate-private: `src/backend/uring/tcp.rs` serves connections, `src/backend/uring/udp.rs`
//! echoes datagrams, and both give their memory back the same way (`finish_shard`, here).
//! Each loop turn: publish returned buffers, move queued SQEs into the submission queue
//! (submitting early only if it fills), make **one** `io_uring_enter` that submits them and
//! waits for completions, then handle every completion. In the TCP loop, handling one updates
//! the connection's `Conn` and then *reconciles*: compares what the connection wants (a send,
//! a receive, a close) with what is in flight, and queues the SQEs that close the gap (see
//! `UringShard::sync`). The [crate docs](crate#the-life-of-a-message) follow one message
//! through it.
//!
//! [`Token`]: crate::token::Token

pub mod buf_ring;
pub(crate) mod driver;
pub mod ops;
mod setup;
pub(crate) mod tcp;
mod trials;
pub(crate) mod udp;

use std::io;

use io_uring::IoUring;

pub use crate::sys::KernelVersion;
pub(crate) use buf_ring::Pools;
pub use buf_ring::{BufRing, BufRingError, OwnershipError, Segment};
pub use setup::{FeatureRow, Features, RingConfig, RingMode, SqPoll, build_ring, supported_modes};

use crate::error::Error;

/// Buffer group id of the shard's buffer ring.
const BGID: u16 = 0;
/// Buffer group id of a TCP shard's ring of large buffers for streams (`Pools`).
const LARGE_BGID: u16 = 1;

/// What a shard gives back after its loop, and what it must not while the kernel may still
/// use it (see [`finish_shard`]).
pub(crate) trait ShardMemory {
    /// Unregisters the shard's buffer rings ([`BufRing::unregister`]'s condition: no receive
    /// selecting from them outstanding).
    fn unregister_bufs(&mut self, submitter: &io_uring::Submitter<'_>) -> io::Result<()>;
    /// After a failure: closes the ordinary descriptors the shard holds (listeners, UDP
    /// sockets, connections accepted as ordinary descriptors). Closing a descriptor with
    /// requests in flight on it is safe: each request holds its own reference to the file.
    fn close_descriptors(&mut self);
}

/// Runs `run`, turning a panic (a protocol's, say) into a result that still lets the shard
/// give its memory back safely; the panic goes on once it has (`finish_shard`).
pub(crate) fn catch_panic(run: impl FnOnce() -> Result<(), Error>) -> Result<(), ShardFailure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ShardFailure::Error(e)),
        Err(panic) => Err(ShardFailure::Panic(panic)),
    }
}

/// Why a shard's loop ended early.
pub(crate) enum ShardFailure {
    /// It returned an error.
    Error(Error),
    /// It panicked; the payload, to resume the panic with.
    Panic(Box<dyn std::any::Any + Send>),
}

/// How a shard (TCP or UDP) gives its memory back once its loop has ended with `result`.
///
/// After a clean run nothing is in flight: the buffer rings are unregistered, then the ring
/// goes before `shard`, which owns the buffer memory, so the memory is unmapped only after the
/// kernel let go of the ring.
///
/// After a failure (an error, or a panic) requests may still be in flight, and tearing a ring
/// down completes in the kernel's own time: sends may still read connection memory (replies,
/// `msghdr`s, zero-copy pages) and receives may still fill buffers. So the shard closes its
/// ordinary descriptors (peers see the connection end), the ring is dropped, and the shard's
/// memory is leaked rather than freed under the kernel: a failed shard stops the whole
/// server. A panic then continues.
pub(crate) fn finish_shard<S: ShardMemory>(
    ring: IoUring,
    mut shard: S,
    result: Result<(), ShardFailure>,
) -> Result<(), Error> {
    match result {
        Ok(()) => {
            shard
                .unregister_bufs(&ring.submitter())
                .map_err(|e| Error::io("cannot unregister the buffer rings", e))?;
            drop(ring);
            drop(shard);
            Ok(())
        }
        Err(failure) => {
            shard.close_descriptors();
            drop(ring);
            std::mem::forget(shard);
            match failure {
                ShardFailure::Error(e) => Err(e),
                ShardFailure::Panic(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

/// Describes why io_uring is unusable for a server here, or `Ok` with what it offers. Used by
/// `ringecho probe` and by tests that need io_uring.
pub fn probe(ring: &RingConfig) -> Result<Features, Error> {
    let (_ring, features) = build_ring(ring)?;
    Ok(features)
}

/// Lets a caller map an `io::Error` from ring set-up the same way the server does.
pub fn unavailable(e: io::Error) -> Error {
    setup::unavailable(e, crate::sys::KernelVersion::current())
}
