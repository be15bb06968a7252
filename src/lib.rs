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
//! A tour of the io_uring backend in the order one message lives through it. Each step names
//! the code that does it and the section of [`kernel_notes`] that explains the kernel feature,
//! and ends with where the buffers are. The code it names is mostly crate-private; the
//! links open its source, and `cargo doc --document-private-items` renders its docs.
//!
//! A few words first. An io_uring is two rings shared between a process and the kernel. The
//! process writes *submission queue entries* (SQEs: "receive on this socket", "send these
//! bytes") into the submission queue and tells the kernel with one `io_uring_enter` system
//! call, which can also wait for results. The kernel writes a *completion queue entry* (CQE)
//! for each result: `res` (a byte count, a new descriptor, or `-errno`), `flags`, and the
//! 64-bit `user_data` copied from the SQE, which is how the process knows what completed. A
//! *multishot* SQE keeps producing CQEs, each flagged `IORING_CQE_F_MORE`, until one without
//! the flag says it has ended.
//!
//! ```text
//!  kernel ──CQE──▶ dispatch (decode user_data) ──▶ Conn + Protocol (pure: no syscalls)
//!    ▲                                                         │
//!    └──── one io_uring_enter per turn ◀── SQEs ◀── sync (what the Conn wants) ◀─┘
//! ```
//!
//! ## 1. Ring set-up
//!
//! Each shard (one thread per core, see [`Server::run`]) builds its own ring on its own thread
//! with [`build_ring`]: it asks for `IORING_SETUP_DEFER_TASKRUN` (completion work runs only
//! when this thread waits, never as an interrupt) and falls back to `COOP_TASKRUN`, then to
//! no flag, and records what the kernel offers in [`Features`]. `run_shard` in
//! [`src/backend/uring/mod.rs`][uring-mod] then registers, on the same thread because
//! `SINGLE_ISSUER` demands it, a sparse file table for the connections (step 3) and the
//! buffer ring (step 4), and `UringShard::run` registers the ring's own descriptor so each
//! enter skips a lookup.
//! Kernel notes: [Ring set-up](kernel_notes#ring-set-up-defer_taskrun-coop_taskrun-plain),
//! [SUBMIT_ALL and CQSIZE](kernel_notes#ioring_setup_submit_all-and-ioring_setup_cqsize).
//!
//! *Buffers*: every provided buffer is in the ring, published: the kernel may fill any of
//! them; user space reads none.
//!
//! ## 2. Multishot accept
//!
//! `UringShard::update_accepts` submits one [`ops::accept_multi`] per listener: a single SQE
//! that posts one CQE per accepted connection for as long as it stays armed. Near the
//! connection cap it cancels that and keeps a few single-shot [`ops::accept_one`] instead, so
//! it never accepts more than it has room for; at the cap it arms nothing and clients wait in
//! the listen backlog. `UringShard::on_shard_cqe` handles accept CQEs and re-arms an accept
//! that ended (no `F_MORE`).
//! Kernel notes: [Multishot accept into direct descriptors][k-accept].
//!
//! *Buffers*: accepting uses none.
//!
//! ## 3. Direct descriptors
//!
//! The accept asks the kernel to install each new socket into a free slot of the ring's
//! registered file table (`IORING_FILE_INDEX_ALLOC`) rather than the process's file
//! descriptor table: the CQE's `res` is the slot index, and every later SQE for the connection
//! names it with `types::Fixed`, sparing the kernel a descriptor lookup and reference count
//! per operation. `UringShard::on_accepted` gives the connection a slab entry and a
//! generation; the pair travels in every SQE's `user_data` as a [`Token`], so a completion
//! always finds its connection, and one for a connection that is gone is recognised and
//! dropped. A direct descriptor is invisible to `setsockopt`: socket options are set on the
//! listener, which accepted sockets inherit ([`server::SocketOptions`]).
//! Kernel notes: [the same section][k-accept].
//!
//! *Buffers*: none yet; the connection holds no memory until data arrives.
//!
//! ## 4. The buffer ring
//!
//! A provided-buffer ring is an array of `{address, length, buffer id}` entries that user
//! space and the kernel share, plus a tail index. User space appends buffers at the tail; a
//! receive armed with a buffer group picks the buffer at the head only when data arrives, so
//! ten thousand idle connections hold no receive memory at all. [`BufRing`] is the only code
//! that owns this memory: it maps it, registers it, and counts, per buffer, the references
//! user space holds. A buffer is either *in the ring* (the kernel may write it; user space
//! must not read it) or *held* (the kernel handed it over in a CQE; it stays out of the ring
//! until its last reference is released). Its module docs draw the cycle.
//! Kernel notes: [Provided-buffer ring][k-bufring].
//!
//! *Buffers*: all in the ring.
//!
//! ## 5. Multishot receive
//!
//! For each connection that wants data (`Conn::recv_wanted`), `UringShard::sync` submits one
//! [`ops::recv_multi`]: a receive on the direct descriptor that picks a buffer from the group
//! each time data arrives. Each CQE says how many bytes (`res`) went into which buffer (the id
//! in `flags`, with `IORING_CQE_F_BUFFER`). `UringShard::on_recv` hands the CQE to
//! [`BufRing::on_completion`], which marks the buffer as held and returns a [`Segment`]
//! carrying one reference: the completion's own. The bytes, read through [`BufRing::data`],
//! go to the connection's `Conn`, which runs the [`Protocol`]. For echo the protocol calls
//! [`Replies::echo`]: on io_uring the reply is not a copy but a chunk that points into the
//! same buffer and holds a reference to it ([`BufRing::add_refs`]). Then the completion's
//! own reference is released. If the shard's buffers held for owed replies exceed the budget
//! ([`ServerBuilder::buf_budget`]), the bytes are copied into the connection's own memory
//! instead, and the buffer goes straight back.
//! Kernel notes: [Multishot receive][k-recv].
//!
//! *Buffers*: the one just filled is held by the connection's queued reply (one reference per
//! chunk that points into it); the kernel must not, and cannot, write it, since it is not in
//! the ring. A buffer whose bytes were copied, or that a protocol did not echo from, is back
//! at the ring's tail, not yet visible to the kernel (step 7 publishes it).
//!
//! ## 6. Send
//!
//! `UringShard::sync` asks the `Conn` for its next span to send and submits
//! [`ops::send`] with the buffer's address ([`BufRing::addr`]): the reply leaves from the
//! memory the request arrived in. One send per connection is in flight at a time, because a
//! short send inside a chain of linked sends would let the next one go out and reorder bytes.
//! `UringShard::on_send` tells the `Conn` how many bytes went: a short send leaves the rest
//! at the front and is resubmitted from there; a chunk fully sent drops its reference
//! ([`BufRing::release`]), and the buffer whose last reference goes is written at the ring's
//! tail.
//! Kernel notes: [Send from the provided buffer][k-send].
//!
//! *Buffers*: while the send is in flight the kernel *reads* the held buffer; nothing writes
//! it. After the last reference is released the buffer is at the ring's tail, still invisible
//! to the kernel until the tail is published.
//!
//! ## 7. Completion dispatch
//!
//! Each turn of `UringShard::run` publishes the tail of the buffer ring
//! ([`BufRing::publish`]: one `Release` store that hands every returned buffer back at once),
//! then `Driver::turn` ([`src/backend/uring/driver.rs`][driver]) makes one `io_uring_enter`
//! that submits every SQE queued since the last turn and waits for completions, batching them
//! when the last turn was busy. `driver::reap` hands each CQE to `UringShard::dispatch`, which
//! decodes its `user_data` ([`Token::decode`]), drops it if the connection's generation has
//! moved on, and routes it by operation. After every event, `UringShard::sync` compares what
//! the connection wants with what is in flight and queues the SQEs that close the gap: the
//! whole loop is "handle completions, reconcile, enter once".
//! Kernel notes: [min-wait batching][k-batch], [completion-queue overflow][k-nodrop].
//!
//! *Buffers*: published ones are the kernel's again.
//!
//! ## 8. Re-arm and back-pressure
//!
//! A multishot receive ends (a CQE without `F_MORE`) when the ring is empty (`-ENOBUFS`), when
//! the completion queue is full, on an error, at end of stream, or when cancelled; `sync`
//! re-arms it whenever the connection still wants data. After `-ENOBUFS` the connection is
//! *parked* instead, and `UringShard::rearm_parked` re-arms parked connections, oldest first
//! and at most one per buffer that came back. Back-pressure is the `Conn`'s decision: once a
//! connection owes [`ServerBuilder::max_pending`] bytes (a peer that sends but does not read)
//! it stops wanting data, and since a multishot receive cannot be paused, `sync` cancels it
//! ([`ops::cancel`]); completions that race the cancellation still carry data and are
//! still answered. Below half the limit it re-arms.
//! Kernel notes: [Multishot receive][k-recv], [Provided-buffer ring][k-bufring] ("Empty ring",
//! "Budget").
//!
//! *Buffers*: a paused connection keeps the buffers its owed replies reference, no more than
//! the budget across the shard; everything else stays in the ring for other connections.
//!
//! ## 9. Close
//!
//! A zero-length receive is the peer's FIN (`Conn::on_eof`). Once nothing is owed, the
//! connection is done and `UringShard::begin_close` cancels every operation still on its
//! descriptor ([`ops::cancel_all_on`]): closing a direct descriptor does not cancel them, and
//! an armed multishot receive would keep the socket, and its FIN, alive. When the last of them
//! has posted its final CQE, `sync` submits [`ops::close_fixed`]; the close's CQE
//! (`UringShard::on_closed`) frees the slab entry, releases every buffer reference the
//! connection still held, and lets the accept re-arm if the cap had paused it. A protocol that
//! closes ([`Verdict::Close`](protocol::Verdict::Close)) sends what it owes, then a FIN
//! ([`ops::shutdown_write`]), and reads and drops input until the peer closes too.
//! Kernel notes: [Cancellation and close][k-close], [Shutdown poll][k-shutdown] (how
//! [`ShutdownHandle::shutdown`] reaches every shard).
//!
//! *Buffers*: all back in the ring, published at the start of the next turn.
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
