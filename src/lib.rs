//! ringecho: an io_uring TCP echo server, built to be measured and read.
//!
//! # The flow of one message
//!
//! ```text
//!  kernel ──CQE──▶ backend (uring) ──event──▶ dispatcher ──▶ Conn state machine (pure)
//!    ▲                                                             │
//!    └──────────── SQE ◀── backend ◀── what the Conn wants ────────┘
//! ```
//!
//! 1. [`backend::uring`] creates the ring ([`backend::uring::build_ring`]), registers a sparse
//!    file table and a provided-buffer ring ([`backend::uring::BufRing`]), and arms a
//!    multishot accept that puts each new connection straight into the file table.
//! 2. Each connection gets a multishot receive that picks buffers from the ring as data
//!    arrives. Its completion names the buffer; the bytes go to the connection's
//!    [`conn::Conn`], which runs the [`protocol::Protocol`] and queues the reply, for echo a
//!    reference to the very buffer the bytes arrived in.
//! 3. The backend sends the front of the queue (one send in flight per connection, so bytes
//!    stay in order), and gives the buffer back to the ring when the send completes.
//! 4. Every completion is decoded from its `user_data` ([`token`]) and handled by one
//!    dispatcher per shard; all the SQEs it decides on go to the kernel in one
//!    `io_uring_enter` per loop turn.
//!
//! The binary (`ringecho serve`, `bench`, `probe`) is a thin layer over [`server::Server`].
#![warn(missing_docs)]

pub mod backend;
pub mod conn;
pub mod error;
pub mod loadgen;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod sys;
pub mod token;

pub use error::Error;
pub use server::{Server, ServerConfig, ShutdownHandle};
