//! The integration-test harness: starts the real `ringecho` binary on port 0 and talks to it
//! over loopback.
//!
//! - [`Server`] spawns the binary, waits for its `listening on ADDR` line (the readiness signal),
//!   keeps reading its stderr on a thread (start-up line, `stats:` lines, the `final:` line) and
//!   kills it on drop. [`Server::stop`] sends a signal and returns the final counters and the
//!   exit status.
//! - [`for_each_backend`] runs a test body once per backend in [`BACKENDS`]; a backend this
//!   machine cannot run (no io_uring) is skipped with the server's own one-line reason.
//! - [`Pattern`] is a per-connection byte sequence, so a connection that receives another
//!   connection's bytes (or its own bytes out of order) is caught at the first wrong byte.
//! - [`Flow`] and [`drive`] move many nonblocking connections from one thread with `poll(2)`:
//!   each sends its pattern (random write sizes, a bound on bytes in flight) and checks every
//!   byte that comes back.
//! - [`in_fresh_netns`] runs a test in its own network namespace, so `/proc/net/sockstat`
//!   counts only that test's sockets on a machine other people use (and traffic shaping or
//!   packet loss set up there touches nothing else).
//! - [`round_trips`] and [`pct`] measure request/response latency on held connections.
//!
//! One file per theme: `backends.rs`, `server.rs`, `pattern.rs`, `flows.rs`, `latency.rs`,
//! `sockets.rs`, `isolation.rs`; this file only re-exports them, so tests `use common::...`.
//! `/proc` readings come from the library (`ringecho::sys::proc`), as the load generator's do.
//!
//! Nothing here sleeps to synchronise: waits are for a line, a counter in a stats line, or a
//! socket event, each with a deadline.
#![allow(dead_code, unused_imports)]

mod backends;
mod flows;
mod isolation;
mod latency;
mod pattern;
mod server;
mod server_process;
mod sockets;

pub use backends::*;
pub use flows::*;
pub use isolation::*;
pub use latency::*;
pub use pattern::*;
pub use ringecho::rng::SplitMix64 as Rng;
pub use ringecho::sys::proc::{PortSockets, SockStat, clock_ticks_per_sec, port_sockets, slab};
pub use server::*;
pub use sockets::*;
