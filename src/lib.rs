//! ringecho: an io_uring TCP and UDP echo server with an epoll twin, built to be measured, read,
//! and reused.
//!
//! - **Serve** a protocol of your own: [`Server::builder`] sets up a server (addresses,
//!   backend, threads, buffer sizes, ...), [`ServerBuilder::bind`] binds it, and
//!   [`Server::run`] answers every connection with a [`Protocol`]: pure code from bytes in to
//!   replies out, which runs unchanged on io_uring and on epoll. The `ringecho` binary is a
//!   thin layer over this: `src/cli.rs` maps each flag onto a builder method.
//! - **Reuse the io_uring pieces**: [`build_ring`] (ring set-up with fallbacks and feature
//!   detection), [`BufRing`] (a provided-buffer ring that tracks who owns each buffer, usable
//!   with any [`io_uring::IoUring`]), [`ops`] (the SQEs the server submits) and [`Token`]
//!   (what they carry in `user_data`).
//! - **Learn io_uring** from working code: the [tour below](#the-life-of-a-message) follows
//!   one message from the kernel to the peer and back into the kernel, and
//!   [`kernel_notes`] says, per feature, which kernel brought it and what it changed here.
//!
//! ```
//! use std::io::{Read, Write};
//! use ringecho::protocol::Echo;
//! use ringecho::{Backend, Server};
//!
//! let server = Server::builder()
//!     .addr("127.0.0.1:0".parse().unwrap()) // port 0: any free port
//!     .backend(Backend::Auto) // io_uring, or epoll where io_uring is unavailable
//!     .threads(1)
//!     .bind()?;
//! let addr = server.local_addrs()[0];
//! let stop = server.shutdown_handle();
//! let running = std::thread::spawn(move || server.serve(Echo));
//!
//! let mut client = std::net::TcpStream::connect(addr).unwrap();
//! client.write_all(b"hello").unwrap();
//! let mut back = [0; 5];
//! client.read_exact(&mut back).unwrap();
//! assert_eq!(&back, b"hello");
//!
//! drop(client);
//! stop.shutdown();
//! let totals = running.join().unwrap()?;
//! assert_eq!(totals.bytes_out, 5);
//! # Ok::<(), ringecho::Error>(())
//! ```
//!
//! # Examples
//!
//! Each runs with `cargo run --example NAME` and is exercised by `tests/examples.rs`.
//!
//! | example | what it shows |
//! |---|---|
//! | `uring_echo` | The smallest complete io_uring echo server, from [`build_ring`], [`BufRing`], [`ops`] and [`Token`] alone, annotated line by line with what the kernel does. Read it beside the tour. |
//! | `line_protocol` | A protocol of your own through the [`Protocol`] trait (upper-cases each line, `QUIT` closes) in under 40 lines, served on io_uring or epoll. |
//! | `buf_ring` | [`BufRing`] alone with a raw [`io_uring::IoUring`]: receive into provided buffers, read them, give them back. |
//! | `udp_echo` | A UDP echo server through the builder ([`ServerBuilder::udp`]). |
//!
//! # The life of a message
//!
//! A tour of the io_uring backend in the order one message lives through it. Each step says
//! what happens, then gives the **code** that does it, the section of [`kernel_notes`] that
//! explains the kernel feature, and where the **buffers** are once the step is done. Most of
//! the code is crate-private: its links open the source, and `cargo doc
//! --document-private-items` renders its docs. `examples/uring_echo.rs` does the same steps
//! in 300 commented lines, without the server's limits and fallbacks.
//!
//! **A few words first.** An io_uring is a pair of queues shared between a process and the
//! kernel. The process writes *submission queue entries* (SQEs: "receive on this socket",
//! "send these bytes") into the submission queue, and one `io_uring_enter` system call tells
//! the kernel about all of them and can also wait for results. The kernel writes a
//! *completion queue entry* (CQE) for each result: `res` (a byte count, a new descriptor, or
//! `-errno`), `flags`, and the 64-bit `user_data` copied untouched from the SQE, which is how
//! the process knows what completed. A *multishot* SQE keeps producing CQEs, each flagged
//! `IORING_CQE_F_MORE`, until one without the flag says it has ended. *Registering* hands the
//! kernel a resource once (a table of sockets, a ring of buffers) so that SQEs can name it by
//! index instead of passing it every time.
//!
//! ringecho runs one *shard* per thread (by default one per CPU): its own ring, its own
//! listening socket (`SO_REUSEPORT` spreads new connections across shards), its own
//! connections; shards share nothing. Per connection a `Conn` (crate-private, in
//! [`src/conn/mod.rs`][conn]) decides what to do next: what is owed to the peer, whether to
//! receive, when to close. It makes no system calls; the loop turns its wishes into SQEs.
//!
//! ```text
//!  kernel ──CQE──▶ dispatch (decode user_data) ──▶ Conn + Protocol (no system calls)
//!    ▲                                              │
//!    │                                              ▼
//!    └──── one io_uring_enter per turn ◀── SQEs ◀─ sync: what it wants, less what
//!                                                        is already in flight
//! ```
//!
//! ## 1. Ring set-up
//!
//! Each shard builds its own ring, on its own thread. It asks for `IORING_SETUP_DEFER_TASKRUN`
//! (the kernel finishes operations and posts their CQEs only when this thread enters the
//! kernel to wait, instead of interrupting it whenever one completes), falls back to
//! `COOP_TASKRUN`, then to neither, and records what the kernel offers. Then it registers, on
//! that same thread because `IORING_SETUP_SINGLE_ISSUER` requires it, an empty file table for
//! the connections (step 3) and the buffer ring (step 4), and finally the ring's own
//! descriptor, so that each `io_uring_enter` skips a descriptor lookup.
//!
//! - **Code**: [`build_ring`] and [`Features`]; `run_shard` and `UringShard::run` in
//!   [`src/backend/uring/mod.rs`][uring-mod].
//! - **Kernel notes**: [Ring set-up](kernel_notes#ring-set-up-defer_taskrun-coop_taskrun-plain),
//!   [SUBMIT_ALL and CQSIZE](kernel_notes#ioring_setup_submit_all-and-ioring_setup_cqsize).
//! - **Buffers**: all in the ring: the kernel may fill any of them, user space reads none.
//!
//! ## 2. Multishot accept
//!
//! The shard submits one multishot accept per listening socket: a single SQE that posts a CQE
//! for every connection it accepts, for as long as it stays armed. Near the connection cap it
//! cancels it and keeps a few single-shot accepts instead, so that it never accepts more than
//! it has room for; at the cap it arms nothing and new clients wait in the listen backlog. An
//! accept CQE without `F_MORE` means the multishot accept has ended, and it is armed again.
//!
//! - **Code**: `UringShard::update_accepts` and `UringShard::on_shard_cqe`
//!   ([`src/backend/uring/mod.rs`][uring-mod]); [`ops::accept_multi`], [`ops::accept_one`].
//! - **Kernel notes**: [Multishot accept into direct descriptors][k-accept].
//! - **Buffers**: accepting uses none.
//!
//! ## 3. Direct descriptors
//!
//! The accept asks the kernel to put each new socket into a free slot of the ring's
//! registered file table (`IORING_FILE_INDEX_ALLOC`) instead of the process's descriptor
//! table: the CQE's `res` is the slot number, and every later SQE for the connection names
//! that slot (`types::Fixed`), which spares the kernel a descriptor lookup and reference count
//! per operation. The shard gives the connection a slot of its own table of connections and a
//! generation number; both travel in the `user_data` of every SQE for it, packed as a
//! [`Token`]. Connection slots are reused, so the generation is what lets a late CQE for a
//! connection that has gone be recognised and dropped rather than reach the newcomer. A
//! direct descriptor cannot be reached by `setsockopt`: socket options are set on the
//! listening socket, which accepted sockets inherit ([`server::SocketOptions`]).
//!
//! - **Code**: `UringShard::on_accepted` ([`src/backend/uring/mod.rs`][uring-mod]);
//!   [`Token`].
//! - **Kernel notes**: [the same section][k-accept].
//! - **Buffers**: none yet: a connection holds no memory until data arrives.
//!
//! ## 4. The buffer ring
//!
//! A provided-buffer ring is an array of `{address, length, buffer id}` entries shared by user
//! space and the kernel, registered under a *buffer group* id. User space writes entries at
//! the tail and then *publishes* the tail (an atomic store with `Release` ordering, so that
//! the kernel sees the entries before it sees the new tail); the kernel takes entries from the
//! head. A receive that names the group (`IOSQE_BUFFER_SELECT`) carries no buffer: the kernel
//! takes one from the head only when data arrives, so ten thousand idle connections hold no
//! receive memory at all. [`BufRing`] is the only code that owns this memory: it maps it,
//! registers it, and counts the references user space holds to each buffer (one buffer may
//! back several replies, each holding a reference). A buffer is
//! either *in the ring* (the kernel may fill it; user space must not read it) or *held* (a CQE
//! handed it over; it stays out of the ring until its last reference is released).
//!
//! - **Code**: [`BufRing`]; its [module docs](backend::uring::buf_ring) draw the cycle.
//! - **Kernel notes**: [Provided-buffer ring][k-bufring].
//! - **Buffers**: all in the ring.
//!
//! ## 5. Multishot receive
//!
//! For each connection that wants data, the shard submits one multishot receive on its
//! direct descriptor, naming the buffer group. Each CQE says how many bytes arrived (`res`) and
//! in which buffer (`IORING_CQE_F_BUFFER`, with the buffer id in the upper bits of `flags`).
//! The handler passes that to [`BufRing::on_completion`], which marks the buffer held and
//! gives it one reference, the handler's own. The bytes ([`BufRing::data`]) go to the
//! connection's `Conn`, which runs the [`Protocol`]. Echo calls [`Replies::echo`]: on io_uring
//! the reply is not a copy but a chunk that points into the same buffer and takes a reference
//! of its own ([`BufRing::add_refs`]). Then the handler drops its reference
//! ([`BufRing::release`]). If a reply took a reference, the buffer stays held. If none did,
//! the handler's was the last one and the buffer goes back: that happens when the protocol
//! wrote a copy, and when the shard already holds its budget of buffers for owed replies
//! ([`ServerBuilder::buf_budget`]), in which case echo copies the bytes into the connection's
//! own memory.
//!
//! - **Code**: `UringShard::sync` (arms it when `Conn::recv_wanted`) and `UringShard::on_recv`
//!   ([`src/backend/uring/mod.rs`][uring-mod]); [`ops::recv_multi`],
//!   [`BufRing::on_completion`]; `Conn::on_recv` ([`src/conn/mod.rs`][conn]).
//! - **Kernel notes**: [Multishot receive][k-recv].
//! - **Buffers**: the one just filled is held, by the queued reply that points into it; the
//!   kernel will not write it, since it is no longer in the ring. A buffer nothing refers to
//!   any more is written back at the ring's tail, but the kernel does not see it until the
//!   tail is published (step 7).
//!
//! ## 6. Send
//!
//! The shard asks the `Conn` for the next bytes to send and submits a send of them: for an
//! echo, from the buffer the request arrived in ([`BufRing::addr`]), so the reply is never
//! copied. The kernel may send fewer bytes than asked (a *short send*); the rest stays at the
//! front of the queue and is sent next. Only one send per connection is in flight at a time:
//! two could interleave their bytes after a short send. When a reply chunk has been sent in
//! full, its reference is dropped ([`BufRing::release`]), and a buffer whose last reference
//! goes is written back at the ring's tail.
//!
//! - **Code**: `UringShard::sync` and `UringShard::on_send`
//!   ([`src/backend/uring/mod.rs`][uring-mod]); [`ops::send`]; `Conn::next_send` and
//!   `Conn::on_sent` ([`src/conn/mod.rs`][conn]).
//! - **Kernel notes**: [Send from the provided buffer][k-send].
//! - **Buffers**: while the send is in flight the kernel *reads* the held buffer and nothing
//!   writes it. Once released it is at the ring's tail, not yet visible to the kernel.
//!
//! ## 7. Completion dispatch
//!
//! Each turn of the shard's loop publishes the buffer ring's tail ([`BufRing::publish`]: one
//! store hands back every buffer returned since the last turn), then makes one
//! `io_uring_enter` that submits every SQE queued since the last turn and waits for
//! completions (for several at once, briefly, when the last turn was busy). Then it handles
//! each CQE: it decodes `user_data` ([`Token::decode`]), drops the CQE if the connection's
//! generation has moved on, and hands it to the handler for its operation. After every event
//! on a connection, `UringShard::sync` compares what the `Conn` wants (a send, a receive, a
//! close) with what is in flight and queues the SQEs that close the gap. That is the whole
//! loop: publish, enter once, handle completions, reconcile.
//!
//! - **Code**: `UringShard::run`, `UringShard::dispatch`, `UringShard::sync`
//!   ([`src/backend/uring/mod.rs`][uring-mod]); `Driver::turn` and `reap`
//!   ([`src/backend/uring/driver.rs`][driver]); [`Token::decode`].
//! - **Kernel notes**: [min-wait batching][k-batch], [completion-queue overflow][k-nodrop].
//! - **Buffers**: every buffer published this turn is the kernel's again.
//!
//! ## 8. Re-arm and back-pressure
//!
//! A multishot receive ends (a CQE without `F_MORE`) when the buffer ring is empty
//! (`-ENOBUFS`), when the completion queue is full, on an error, at end of stream, or when
//! cancelled. It is armed again as long as the connection still wants data, except after
//! `-ENOBUFS`: then the connection is *parked* until buffers come back, and parked
//! connections are re-armed oldest first, at most one per buffer returned. Back-pressure is the
//! `Conn`'s decision: once a connection owes [`ServerBuilder::max_pending`] bytes (its peer
//! sends but does not read) it stops wanting data. A multishot receive cannot be paused, only
//! cancelled, so the shard cancels it; CQEs that race the cancellation still carry data,
//! which is still answered. When what it owes falls to half the limit, the receive is armed
//! again.
//!
//! - **Code**: `UringShard::sync` and `UringShard::rearm_parked`
//!   ([`src/backend/uring/mod.rs`][uring-mod]); [`ops::cancel`]; `Conn::recv_wanted`
//!   ([`src/conn/mod.rs`][conn]).
//! - **Kernel notes**: [Multishot receive][k-recv]; [Provided-buffer ring][k-bufring], its
//!   "Empty ring" and "Budget" paragraphs.
//! - **Buffers**: a paused connection keeps the buffers its owed replies point into. Across
//!   the shard, at most the budget of buffers is held for owed replies (past it, bytes are
//!   copied: step 5), so the rest of the ring stays free for every other connection.
//!
//! ## 9. Close
//!
//! A receive of zero bytes is the peer's FIN. Once the connection owes nothing, it is done:
//! the shard cancels every operation still in flight on its descriptor, because closing a
//! direct descriptor does not cancel them, and an armed multishot receive would keep the
//! socket, and its FIN, alive. When the last of them has posted its final CQE, the shard
//! submits the close. The close's CQE frees the file-table slot and the connection's slot,
//! releases every buffer reference the connection still held, and lets the accept re-arm if
//! the cap had paused it. A protocol that ends the conversation
//! ([`Verdict::Close`](protocol::Verdict::Close)) sends what it owes, then a FIN, and reads and
//! drops input until the peer closes too.
//!
//! - **Code**: `UringShard::begin_close`, `UringShard::sync` and `UringShard::on_closed`
//!   ([`src/backend/uring/mod.rs`][uring-mod]); [`ops::cancel_all_on`],
//!   [`ops::close_fixed`], [`ops::shutdown_write`]; `Conn::on_eof` and `Conn::is_done`
//!   ([`src/conn/mod.rs`][conn]).
//! - **Kernel notes**: [Cancellation and close][k-close]; [Shutdown poll][k-shutdown] (how
//!   [`ShutdownHandle::shutdown`] reaches every shard).
//! - **Buffers**: all the connection held are back in the ring, visible to the kernel after
//!   the next publish.
//!
//! ## Who owns a provided buffer, at a glance
//!
//! | state | how it gets there | kernel | user space |
//! |---|---|---|---|
//! | in the ring, published | registration; or the tail store in [`BufRing::publish`] | may pick and fill it | must not touch it |
//! | held | a receive CQE, via [`BufRing::on_completion`] (one reference) | does not write it; reads it during a send from it | reads it ([`BufRing::data`]); one reference per queued reply chunk |
//! | returned, not yet published | last reference dropped ([`BufRing::release`]) | cannot see it yet | must not touch it |
//!
//! Memory that is not a provided buffer follows the same rule: a copied reply lives in the
//! connection's own buffer and is neither moved nor freed while a send reads it.
//!
//! The epoll backend ([`src/backend/epoll.rs`][epoll]) serves the same `Conn` and the same
//! protocols with readiness and `read`/`write`: one scratch buffer per shard and a copy for
//! every reply, which is what makes the comparison honest.
//!
//! # What is public
//!
//! Everything documented here: the server ([`server`]), protocols ([`protocol`]), errors
//! ([`Error`], [`BufRingError`](backend::uring::BufRingError)), counters ([`stats`]), and the
//! io_uring pieces in [`backend::uring`] and [`token`]. Types that will grow are
//! `#[non_exhaustive]`. The per-connection state machine, the loops and the syscall wrappers
//! are crate-private; the `sys` and `loadgen` modules are public only for the `ringecho`
//! binary and the test suite, are hidden from these docs, and may change in any release.
//!
//! [uring-mod]: ../src/ringecho/backend/uring/mod.rs.html
//! [conn]: ../src/ringecho/conn/mod.rs.html
//! [driver]: ../src/ringecho/backend/uring/driver.rs.html
//! [epoll]: ../src/ringecho/backend/epoll.rs.html
//! [k-accept]: kernel_notes#multishot-accept-into-direct-descriptors-ioring_file_index_alloc
//! [k-bufring]: kernel_notes#provided-buffer-ring-ioring_register_pbuf_ring
//! [k-recv]: kernel_notes#multishot-receive-ioring_recv_multishot
//! [k-send]: kernel_notes#send-from-the-provided-buffer-one-in-flight-per-connection
//! [k-batch]: kernel_notes#ioring_feat_ext_arg-and-min-wait-batching-ioring_feat_min_timeout
//! [k-nodrop]: kernel_notes#ioring_feat_nodrop-and-completion-queue-overflow
//! [k-close]: kernel_notes#cancellation-and-close-ioring_async_cancel_fd--_fixed--_all-ioring_op_close
//! [k-shutdown]: kernel_notes#shutdown-poll-ioring_op_poll_add
//! [`build_ring`]: backend::uring::build_ring
//! [`Features`]: backend::uring::Features
//! [`BufRing`]: backend::uring::BufRing
//! [`BufRing::on_completion`]: backend::uring::BufRing::on_completion
//! [`BufRing::data`]: backend::uring::BufRing::data
//! [`BufRing::add_refs`]: backend::uring::BufRing::add_refs
//! [`BufRing::addr`]: backend::uring::BufRing::addr
//! [`BufRing::release`]: backend::uring::BufRing::release
//! [`BufRing::publish`]: backend::uring::BufRing::publish
//! [`Segment`]: backend::uring::buf_ring::Segment
//! [`ops`]: backend::uring::ops
//! [`ops::accept_multi`]: backend::uring::ops::accept_multi
//! [`ops::accept_one`]: backend::uring::ops::accept_one
//! [`ops::recv_multi`]: backend::uring::ops::recv_multi
//! [`ops::send`]: backend::uring::ops::send
//! [`ops::cancel`]: backend::uring::ops::cancel
//! [`ops::cancel_all_on`]: backend::uring::ops::cancel_all_on
//! [`ops::close_fixed`]: backend::uring::ops::close_fixed
//! [`ops::shutdown_write`]: backend::uring::ops::shutdown_write
//! [`Token`]: token::Token
//! [`Token::decode`]: token::Token::decode
//! [`Replies::echo`]: protocol::Replies::echo
#![deny(missing_docs)]

pub mod backend;
pub(crate) mod conn;
pub mod error;
#[doc(hidden)]
pub mod loadgen;
pub mod protocol;
pub mod server;
pub mod stats;
#[doc(hidden)]
pub mod sys;
pub mod token;

/// `kernel-notes.md`, one section per io_uring feature ringecho uses: what it does, the kernel
/// that brought it, how ringecho detects it, the fallback, and what it measurably changed.
#[doc = include_str!("../kernel-notes.md")]
pub mod kernel_notes {}

pub use backend::Backend;
pub use error::Error;
pub use protocol::Protocol;
pub use server::{Server, ServerBuilder, ShutdownHandle};
