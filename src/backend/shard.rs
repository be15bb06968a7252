//! The shard contract: what a backend is given to run one shard, and what it tells the server.
//!
//! The server resolves the user's settings into one [`ShardConfig`] per shard (every default
//! settled, the connection cap split), binds the shard's sockets, and calls
//! [`run_shard`](super::run_shard) on the shard's own thread with a [`ShardContext`]. The shard
//! reports through [`ShardEvent`]s. Nothing here knows about the server's builder or its
//! threads, so the backends depend on this module and never on `server.rs`.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::backend::uring::RingConfig;
use crate::error::Error;
use crate::stats::SharedCounters;

/// One shard's settings, resolved: each field is the value the shard uses, defaults and the
/// system's limits already applied. (The two `Option`s are settings whose absence means "off",
/// not defaults left to resolve.)
#[derive(Clone, Debug)]
pub(crate) struct ShardConfig {
    /// Echo UDP datagrams on the shard's sockets instead of serving TCP connections.
    pub udp: bool,
    /// This shard's share of the connection cap.
    pub max_conns: usize,
    /// Provided buffers in the shard's buffer ring (a power of two).
    pub buf_count: u32,
    /// Size of each provided buffer (on epoll: sizes the read buffer).
    pub buf_size: u32,
    /// Most provided buffers owed data may hold before received bytes are copied out instead.
    pub buf_budget: u32,
    /// Per-connection back-pressure watermark in bytes.
    pub max_pending: usize,
    /// Listen backlog of each of the shard's listeners.
    pub backlog: i32,
    /// Ring geometry and task-running mode.
    pub ring: RingConfig,
    /// Use multishot receive when the kernel has it.
    pub multishot_recv: bool,
    /// Accept into direct descriptors where the kernel releases a closed one at once (6.13).
    pub direct_descriptors: bool,
    /// Register the ring's own fd so each enter skips an fd lookup.
    pub register_ring_fd: bool,
    /// Send zero-copy when a send is at least this many bytes; `None`: never.
    pub zc_threshold: Option<u32>,
    /// Receive bundles (6.10).
    pub recv_bundle: bool,
    /// Take streams in pieces (`backend::streams`).
    pub recv_cap: bool,
    /// Consume provided buffers incrementally (6.12).
    pub buf_incremental: bool,
    /// Large provided buffers for streams (io_uring TCP; 0: none).
    pub stream_bufs: u32,
    /// Completion batching when busy: wait for up to this many completions...
    pub batch_max: u32,
    /// ...or this many microseconds after the first (0 turns batching off).
    pub batch_wait_us: u32,
    /// On shutdown, how long owed bytes may drain before connections are closed regardless.
    pub drain_timeout: Duration,
    /// After a protocol closes a connection, how long it keeps reading and dropping input.
    pub lingering_close: Duration,
    /// Close connections that moved no bytes for this long; `None`: never.
    pub idle_timeout: Option<Duration>,
}

/// What one shard thread is given besides its settings.
pub(crate) struct ShardContext {
    /// The shard's number, from 0 (shard 0 prints the start-up line).
    pub index: usize,
    /// How many shards the server runs.
    pub shards: usize,
    /// The shard's bound sockets, one per address served: TCP listeners, or UDP sockets.
    pub sockets: Vec<OwnedFd>,
    /// The server's shutdown eventfd: readable once shutdown has begun.
    pub shutdown_fd: RawFd,
    /// Where the shard publishes its counters once per loop turn.
    pub stats: Arc<SharedCounters>,
    /// Where the shard reports to the server thread.
    pub events: mpsc::Sender<ShardEvent>,
}

/// What shard threads tell the server thread.
pub(crate) enum ShardEvent {
    /// The shard's accepts are armed.
    Ready,
    /// The shard could not start or stopped on an error.
    Failed(Error),
    /// The shard's loop has ended (sent last, also after `Failed`).
    Exited,
}

/// File-table slots kept beyond `max_conns` for accepts that race the pause: up to 64 plus
/// 1/32, in proportion to small caps so they still fit a small `RLIMIT_NOFILE`. The server
/// counts them against the descriptor limit; the io_uring shard registers a file table of
/// `max_conns` plus these.
pub(crate) fn table_headroom(max_conns: usize) -> usize {
    (max_conns / 4).clamp(4, 64) + max_conns / 32
}
