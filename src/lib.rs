//! ringecho: an io_uring TCP and UDP echo server with an epoll twin, built to be measured, read,
//! and reused.
//!
//! - **Serve** a protocol of your own: [`Server::builder`] sets up a server (addresses,
//!   backend, threads, buffer sizes, ...), [`ServerBuilder::bind`] binds it, and
//!   [`Server::serve`] answers every connection with a [`Protocol`]: pure code from bytes in to
//!   replies out, which runs unchanged on io_uring and on epoll. [`Server::run`] does the same
//!   and also reports when it is ready and writes stats lines. The `ringecho` binary is a thin
//!   layer over this: `src/cli.rs` maps each flag onto a builder method.
//! - **Reuse the io_uring pieces**: [`build_ring`] (ring set-up with fallbacks and feature
//!   detection), [`BufRing`] (memory handed to the kernel in advance for it to receive into,
//!   with a record of who owns each buffer; usable with any [`io_uring::IoUring`]), [`ops`]
//!   (builders for the requests the server submits) and [`Token`] (the tag each request carries
//!   so that its result can be matched to it). The tour below explains each term.
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
//! | `buf_ring` | [`BufRing`] alone with a raw [`io_uring::IoUring`]: receive into its buffers, read them, give them back. |
//! | `udp_echo` | A UDP echo server through the builder ([`ServerBuilder::udp`]). |
//!
//! # The life of a message
//!
//! A tour of the io_uring backend in the order one message lives through it. Each step says
//! what happens, then gives the **code** that does it, the section of [`kernel_notes`] that
//! explains the kernel feature, and where the **buffers** are once the step is done. Most of
//! the code is crate-private: its links open the function in the rendered source, and `cargo
//! doc --document-private-items` renders its docs. `examples/uring_echo.rs` does the same
//! steps in about 350 commented lines, without the server's limits and fallbacks.
//!
//! **A few words first.** An io_uring is a pair of queues shared between a process and the
//! kernel. The process writes *submission queue entries* (SQEs: "receive on this socket",
//! "send these bytes") into the submission queue, and one `io_uring_enter` system call tells
//! the kernel about all of them and can also wait for results. The kernel writes a
//! *completion queue entry* (CQE) for each result: `res` (a byte count, a new descriptor, or
//! `-errno`), `flags`, and the 64-bit `user_data` copied untouched from the SQE, which is how
//! the process knows what completed. The process reads CQEs in order, then moves the
//! completion queue's *head* past them: that store *consumes* them, telling the kernel their
//! entries may take new CQEs (a queue left full makes the kernel set further CQEs aside:
//! [completion-queue overflow][k-nodrop]). A *multishot* SQE keeps producing CQEs, each
//! flagged `IORING_CQE_F_MORE`, until one without the flag says it has ended.
//!
//! *Registering* hands the kernel a resource once, so that SQEs can name it by index instead
//! of passing it every time. Two registered resources carry this tour. The *file table* holds
//! sockets that have no file descriptor in the process, only their index in the table, their
//! *file slot*; such a socket is a *direct descriptor* (step 3). The *buffer ring* hands the
//! kernel *provided buffers*: memory it receives into whenever data arrives, so that a receive
//! need not bring a buffer of its own (step 4). "The ring" on its own means the io_uring.
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
//! `COOP_TASKRUN`, then to neither, and records what the kernel offers. `DEFER_TASKRUN`
//! requires `IORING_SETUP_SINGLE_ISSUER`, the promise that a single thread submits to the
//! ring, so the two are set together; the kernel then refuses submissions and registrations
//! from any other thread. ringecho keeps that one-thread rule in every mode anyway: on its own
//! thread the shard registers an empty file table for the connections (step 3), the buffer
//! ring (step 4), and finally the ring's own descriptor, so that each `io_uring_enter` skips a
//! descriptor lookup.
//!
//! - **Code**: [`build_ring`] and [`Features`]; [`run_shard`][run-shard] and
//!   [`UringShard::run`][shard-run].
//! - **Kernel notes**: [Ring set-up](kernel_notes#ring-set-up-defer_taskrun-coop_taskrun-plain),
//!   [SUBMIT_ALL and CQSIZE](kernel_notes#ioring_setup_submit_all-and-ioring_setup_cqsize).
//! - **Buffers**: all in the buffer ring (registered here, explained in step 4): the kernel may
//!   fill any of them, user space reads none.
//!
//! ## 2. Multishot accept
//!
//! The shard submits one multishot accept per listening socket: a single SQE that posts a CQE
//! for every connection it accepts, for as long as it stays armed. It can take the whole listen
//! backlog in one go, before a cancellation could stop it, so the shard arms it only while the
//! room left below its connection cap (`--max-conns` split evenly between shards) is at least
//! the backlog (of all its listening sockets together) plus 64. Closer to the cap it cancels
//! it and keeps a few single-shot accepts instead (one connection each, never more than the
//! room left); at the cap it arms nothing, and new clients wait in the listen backlog. With
//! the default backlog (`somaxconn`, 4096 on current kernels) and one listening address, a
//! shard whose cap is below 4160 never uses the multishot accept at all.
//!
//! An accept CQE without `F_MORE` means the multishot accept has ended. It is armed again at
//! once if there is still room for it (else single-shot accepts take over), after a 20 ms
//! back-off if it ended on an error, and not at all while the server drains for shutdown.
//!
//! - **Code**: [`UringShard::update_accepts`][update-accepts],
//!   [`UringShard::on_shard_cqe`][on-shard-cqe] and [`multishot_floor`][multishot-floor];
//!   [`ops::accept_multi`], [`ops::accept_one`].
//! - **Kernel notes**: [Multishot accept into direct descriptors][k-accept],
//!   [Single-shot accepts near the connection cap][k-accept-one].
//! - **Buffers**: accepting uses none.
//!
//! ## 3. Direct descriptors
//!
//! The accept asks the kernel to put each new socket into a free file slot of the ring's
//! registered file table (`IORING_FILE_INDEX_ALLOC`) instead of the process's descriptor
//! table: the CQE's `res` is the file slot. Every later SQE for the connection names that file
//! slot ([`types::Fixed`][fixed]), which spares the kernel a descriptor lookup and reference
//! count per operation. A direct descriptor cannot be reached by `setsockopt`: socket options
//! are set on the listening socket, which accepted sockets inherit
//! ([`server::SocketOptions`]).
//!
//! The shard keeps its connections in a table of its own, a slab; a connection's index there
//! is its *connection key*. Keys and file slots are allocated independently (the connection
//! records its file slot), so the two numbers differ in general. Every SQE for a connection
//! carries a [`Token`] in its `user_data`: the connection key, a *generation* number, and the
//! operation. Operations of the shard itself carry [`Token::SHARD`] instead of a key; an
//! accept's token names its listening socket by index instead of a generation
//! ([`Target`](token::Target) says what each token is for).
//!
//! Keys and file slots are reused, and what makes that safe is an ordering rule: **a
//! connection's key and file slot are freed only by the CQE of its close, and the close is
//! submitted only once every other operation on the connection has posted its final CQE.** So
//! no CQE can arrive for a connection that has gone. The generation is for references held
//! outside the ring, where that rule does not reach: the queue of parked connections (step 8)
//! and the timers (idle timeout, lingering close) store `(key, generation)` pairs, and an
//! entry whose connection has closed since, its key perhaps taken by a newcomer, no longer
//! matches and is skipped. The dispatcher compares generations on every CQE too, belt and
//! braces.
//!
//! - **Code**: [`UringShard::on_accepted`][on-accepted]; [`Token`];
//!   [`UringShard::rearm_parked`][rearm-parked] (a `(key, generation)` check).
//! - **Kernel notes**: [Multishot accept into direct descriptors][k-accept];
//!   [Cancellation and close][k-close] for the ordering rule.
//! - **Buffers**: none yet: a connection holds no memory until data arrives.
//!
//! ## 4. The buffer ring
//!
//! A buffer ring is an array of `{address, length, buffer id}` entries shared by user space
//! and the kernel, registered under a *buffer group* id. User space writes entries at the
//! tail and then *publishes* the tail (an atomic store with `Release` ordering, so that the
//! kernel sees the entries before it sees the new tail); the kernel takes entries from the
//! head. A receive that names the group (`IOSQE_BUFFER_SELECT`) carries no buffer: the kernel
//! takes one from the head only when data arrives, so ten thousand idle connections hold no
//! receive memory at all.
//!
//! Two facts about those entries. First, user space can never overwrite an entry the kernel
//! has not taken yet: the buffer ring has exactly one entry per buffer, and a buffer id is
//! written back only after a CQE has handed that buffer over, so the tail can never lap the
//! head. Second, buffer ids get shuffled: buffers come back in whatever order their replies
//! finish, so each lap of the buffer ring lists them in a different order. A CQE therefore
//! names a buffer id, never a position. A bundle receive (one CQE for several buffers, the
//! default where the kernel has it, 6.10) names only the first; the others are the ids at the
//! positions that followed it, which is why [`BufRing`] remembers which id it wrote at each
//! position.
//!
//! [`BufRing`] is the only code that owns this memory: it maps it, registers it, and counts
//! the references user space holds to each buffer, one per reply that will be sent from it. A
//! buffer may back several replies: a protocol that echoes two separate ranges of one receive
//! (each line with a written prefix in front of it, say) queues two replies in the same
//! buffer. A buffer is either *in the buffer ring* (the kernel may fill it; user space must
//! not read it) or *held* (a CQE handed it over; it stays out of the buffer ring until its last
//! reference is released). The exception is incremental consumption (`--buf-incremental`,
//! 6.12): the kernel fills a buffer in pieces across several CQEs, so one buffer can be in the
//! buffer ring and held at once, its pieces held by their replies, perhaps of several
//! connections, while the kernel keeps filling the rest.
//!
//! - **Code**: [`BufRing`]; its [module docs](backend::uring::buf_ring) draw the cycle.
//! - **Kernel notes**: [Provided-buffer ring][k-bufring],
//!   [Incremental buffer consumption][k-inc], [Receive bundles][k-bundle].
//! - **Buffers**: all in the buffer ring.
//!
//! ## 5. Multishot receive
//!
//! For each connection that wants data, the shard submits one multishot receive on its
//! direct descriptor, naming the buffer group. Each CQE says how many bytes arrived (`res`) and
//! in which buffer (`IORING_CQE_F_BUFFER`, with the buffer id in the upper bits of `flags`).
//! The handler passes that to [`BufRing::on_completion`], which marks the buffer held and
//! returns a [`Segment`] (buffer id, offset, length) that carries one reference: the
//! handler's. The bytes ([`BufRing::data`]) go to the connection's `Conn`, which runs the
//! [`Protocol`]. Echo calls [`Replies::echo`], which on io_uring copies nothing: it queues a
//! reply *chunk* that points into the same buffer, and counts it. Back in the shard, the
//! handler takes one reference per chunk the protocol queued ([`BufRing::add_refs`]), then
//! drops its own ([`BufRing::release`]). If a chunk took a reference, the buffer stays held.
//! If none did, the handler's was the last one and the buffer goes back: that happens when
//! the protocol wrote a copy, and when the shard already holds its budget of buffers for owed
//! replies ([`ServerBuilder::buf_budget`]), in which case echo copies the bytes into the
//! connection's own memory. (`examples/uring_echo.rs` takes a shortcut: it queues the segment
//! itself as the echo, so the handler's reference simply becomes the reply's.) A connection
//! that turns out to be a pipelined stream, while few others share the shard, is received
//! another way: in capped pieces, one single-shot receive per turn into a piece buffer, which
//! its echo points into as it would into a provided buffer, so each piece is echoed while the
//! rest still arrives ([Streams in pieces][k-pieces]).
//!
//! - **Code**: [`UringShard::sync`][sync] (arms it when [`Conn::recv_wanted`][recv-wanted])
//!   and [`UringShard::on_recv`][on-recv]; [`ops::recv_multi`], [`BufRing::on_completion`];
//!   [`Conn::on_recv`][conn-on-recv].
//! - **Kernel notes**: [Multishot receive][k-recv].
//! - **Buffers**: the one just filled is held, by the queued reply that points into it; the
//!   kernel will not write it, since it is no longer in the buffer ring. A buffer nothing
//!   refers to any more is written back at the buffer ring's tail, but the kernel does not see
//!   it until the tail is published (step 7).
//!
//! ## 6. Send
//!
//! Handling a CQE never submits a send. It marks the connection as owing bytes, and just
//! before the next enter the shard gives each such connection one send covering everything
//! it owes by then ([`UringShard::start_sends`][start-sends]): a `sendmsg` whose iovecs
//! point at the owed chunks, for an echo into the buffers the requests arrived in
//! ([`BufRing::addr`]), so the replies to every CQE of the turn leave together. They go
//! into the submission queue ahead of the receives the turn re-armed: the kernel takes SQEs
//! in order, and a receive that finds data copies it in first. The reply is not copied in
//! user space (unless the budget was spent, step 5); the kernel still copies it into the
//! socket's send buffer, as it does for any plain send (a [zero-copy send][k-zc] avoids
//! that, for large messages). The kernel may send fewer bytes than asked (a *short send*,
//! when the socket's send buffer fills); the rest stays owed and goes out with the next
//! send. Only one send per connection is in flight at a time: a second could overtake the
//! first. When a reply chunk has been sent in full, its reference is dropped
//! ([`BufRing::release`]), and a buffer whose last reference goes is written back at the
//! buffer ring's tail.
//!
//! - **Code**: [`UringShard::start_sends`][start-sends] and
//!   [`UringShard::on_send`][on-send]; [`ops::send_vectored`], [`ops::send`];
//!   [`Conn::next_sends`][next-sends] and [`Conn::on_sent`][on-sent].
//! - **Kernel notes**: [Sends: everything owed in one operation][k-send].
//! - **Buffers**: while the send is in flight the kernel *reads* the held buffers and nothing
//!   writes them. Once released they are at the buffer ring's tail, not yet visible to the
//!   kernel.
//!
//! ## 7. Completion dispatch
//!
//! Each turn of the shard's loop publishes the buffer ring's tail ([`BufRing::publish`]: one
//! store hands back every buffer returned since the last turn), then makes one
//! `io_uring_enter` that submits every SQE queued since the last turn and waits for one
//! completion: it returns as soon as anything is ready, with every completion ready by then
//! (with `DEFER_TASKRUN` the kernel posts them all inside this enter), so under load the
//! batches form by themselves and no ready completion waits on a timer. Should the
//! submission queue fill up while the turn's SQEs are copied into it, an extra enter submits
//! what is there first ([`Driver::flush`][flush]), so a very busy turn may take more than one.
//! Then the loop handles each CQE: it decodes `user_data` ([`Token::decode`]), checks the
//! generation (by the rule of step 3 it always matches), and hands the CQE to the handler for
//! its operation. After every event on a connection, [`UringShard::sync`][sync] compares what
//! the `Conn` wants (a send, a receive, a close) with what is in flight and queues the SQEs
//! that close the gap. Last, parked connections are re-armed (step 8). That is the whole
//! loop: publish, enter, handle completions, reconcile, re-arm.
//!
//! - **Code**: [`UringShard::run`][shard-run], [`UringShard::dispatch`][dispatch],
//!   [`UringShard::sync`][sync]; [`Driver::turn`][turn] and [`reap`][reap];
//!   [`Token::decode`].
//! - **Kernel notes**: [waiting][k-batch], [completion-queue overflow][k-nodrop].
//! - **Buffers**: every buffer published this turn is the kernel's again.
//!
//! ## 8. Re-arm and back-pressure
//!
//! A multishot receive ends (a CQE without `F_MORE`) when the buffer ring is empty
//! (`-ENOBUFS`), when the completion queue is full, on an error, at end of stream, or when
//! cancelled. It is armed again as long as the connection still wants data, except after
//! `-ENOBUFS`: then the connection is *parked*, wanting data with nothing to receive into,
//! until buffers come back. After each turn, parked connections are re-armed oldest first, at
//! most one per buffer then available in the buffer ring: each re-armed receive needs a
//! buffer to take, or it would end with `-ENOBUFS` again at once. The parked queue holds
//! `(key, generation)` pairs, and skips an entry whose connection has closed since (step 3).
//!
//! Back-pressure is the `Conn`'s decision: once a connection owes
//! [`ServerBuilder::max_pending`] bytes (its peer sends but does not read) it is *paused*: it
//! stops wanting data. A multishot receive cannot be paused, only cancelled, so the shard
//! cancels it; CQEs that race the cancellation still carry data, which is still answered.
//! When what the connection owes falls to half the limit, the receive is armed again. Parked
//! and paused differ in who waits: a parked connection waits for the buffer ring, a paused one
//! for its peer to read.
//!
//! The limit is where a connection pauses, not a cap on one receive: a receive already armed
//! brings what the socket holds, and a stream's single-shot receive takes its socket whole
//! while nothing is owed (a peer that stops reading looks like any stream until its sends
//! stall). So a connection can owe up to one socket's worth past the limit. Measured with
//! the 64 KiB default and 300 clients that send but never read (`tests/pressure.rs`): 62–204
//! KiB owed per connection on io_uring, 65–74 KiB on epoll, whose reads are 64 KiB. Copied
//! bytes sit in heap chunks of at most 64 KiB each, so what a connection holds stays close to
//! what it owes.
//!
//! - **Code**: [`UringShard::sync`][sync] and [`UringShard::rearm_parked`][rearm-parked];
//!   [`ops::cancel`]; [`Conn::recv_wanted`][recv-wanted].
//! - **Kernel notes**: [Multishot receive][k-recv]; [Provided-buffer ring][k-bufring], its
//!   "Empty ring" and "Budget" paragraphs.
//! - **Buffers**: a paused connection keeps the buffers its owed replies point into. Across
//!   the shard, at most the budget of buffers is held for owed replies (past it, bytes are
//!   copied: step 5), so the rest of the buffer ring stays free for every other connection.
//!
//! ## 9. Close
//!
//! A receive of zero bytes is the peer's FIN. Once the connection owes nothing, it is done,
//! and the shard closes it in two steps. First it cancels every operation still in flight on
//! the connection: closing a direct descriptor does not cancel the operations on it, and an
//! armed multishot receive keeps the socket alive, so no FIN would be sent. After the peer's
//! FIN the receive has usually ended already (its zero-byte CQE comes without `F_MORE`), so the
//! cancellation matters for the other ways a connection ends: an error, an idle timeout, a
//! lingering close that runs out, shutdown. Then, once the last operation has posted its final
//! CQE, the shard submits the close. The close's CQE frees the file slot and the connection
//! key, releases every buffer reference the connection still held, and lets the accept re-arm
//! if the cap had stopped it. A protocol that ends the conversation
//! ([`Verdict::Close`](protocol::Verdict::Close)) sends what it owes, then a FIN, and reads and
//! drops input until the peer closes too.
//!
//! - **Code**: [`UringShard::begin_close`][begin-close], [`UringShard::sync`][sync] and
//!   [`UringShard::on_closed`][on-closed]; [`ops::cancel`] (by `user_data`), [`ops::close`],
//!   [`ops::shutdown_write`]; [`Conn::on_eof`][on-eof], [`Conn::is_done`][is-done] and
//!   [`Conn::release_all`][release-all].
//! - **Kernel notes**: [Cancellation and close][k-close]; [Shutdown poll][k-shutdown] (how
//!   [`ShutdownHandle::shutdown`] reaches every shard).
//! - **Buffers**: all the connection held are back in the buffer ring, visible to the kernel
//!   after the next publish.
//!
//! ## Who owns a provided buffer, at a glance
//!
//! | state | how it gets there | kernel | user space |
//! |---|---|---|---|
//! | in the buffer ring, published | registration; or the tail store in [`BufRing::publish`] | may pick and fill it | must not touch it |
//! | held | a receive CQE, via [`BufRing::on_completion`] (one reference) | does not write it; reads it during a send from it | reads it ([`BufRing::data`]); one reference per queued reply chunk |
//! | returned, not yet published | last reference dropped ([`BufRing::release`]) | cannot see it yet | must not touch it |
//! | in the buffer ring *and* held (incremental consumption only) | a receive CQE with `IORING_CQE_F_BUF_MORE` handed over part of it | may fill the rest | reads only the parts handed over; one reference per reply chunk in them |
//!
//! Memory that is not a provided buffer follows the same rule: a copied reply lives in the
//! connection's own buffer and is neither moved nor freed while a send reads it.
//!
//! The epoll backend ([`src/backend/epoll/tcp.rs`][epoll]) serves the same `Conn` and the same
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
//! [`io_uring::IoUring`]: https://docs.rs/io-uring/0.7/io_uring/struct.IoUring.html
//! [fixed]: https://docs.rs/io-uring/0.7/io_uring/types/struct.Fixed.html
//! [conn]: ../src/ringecho/conn/mod.rs.html
//! [epoll]: ../src/ringecho/backend/epoll/tcp.rs.html
//! [run-shard]: ../src/ringecho/backend/uring/tcp.rs.html "run_shard"
//! [shard-run]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::run"
//! [dispatch]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::dispatch"
//! [on-shard-cqe]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::on_shard_cqe"
//! [on-accepted]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::on_accepted"
//! [on-recv]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::on_recv"
//! [on-send]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::on_send"
//! [on-closed]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::on_closed"
//! [sync]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::sync"
//! [begin-close]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::begin_close"
//! [rearm-parked]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::rearm_parked"
//! [update-accepts]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::update_accepts"
//! [multishot-floor]: ../src/ringecho/backend/uring/tcp.rs.html "multishot_floor"
//! [turn]: ../src/ringecho/backend/uring/driver.rs.html "Driver::turn"
//! [flush]: ../src/ringecho/backend/uring/driver.rs.html "Driver::flush"
//! [reap]: ../src/ringecho/backend/uring/driver.rs.html "reap"
//! [conn-on-recv]: ../src/ringecho/conn/mod.rs.html "Conn::on_recv"
//! [on-eof]: ../src/ringecho/conn/mod.rs.html "Conn::on_eof"
//! [next-sends]: ../src/ringecho/conn/mod.rs.html "Conn::next_sends"
//! [start-sends]: ../src/ringecho/backend/uring/tcp.rs.html "UringShard::start_sends"
//! [on-sent]: ../src/ringecho/conn/mod.rs.html "Conn::on_sent"
//! [recv-wanted]: ../src/ringecho/conn/mod.rs.html "Conn::recv_wanted"
//! [is-done]: ../src/ringecho/conn/mod.rs.html "Conn::is_done"
//! [release-all]: ../src/ringecho/conn/mod.rs.html "Conn::release_all"
//! [k-accept]: kernel_notes#multishot-accept-into-direct-descriptors-ioring_file_index_alloc
//! [k-accept-one]: kernel_notes#single-shot-accepts-near-the-connection-cap
//! [k-bufring]: kernel_notes#provided-buffer-ring-ioring_register_pbuf_ring
//! [k-inc]: kernel_notes#incremental-buffer-consumption-iou_pbuf_ring_inc
//! [k-bundle]: kernel_notes#receive-bundles-ioring_recvsend_bundle
//! [k-recv]: kernel_notes#multishot-receive-ioring_recv_multishot
//! [k-pieces]: kernel_notes#streams-in-pieces-one-capped-single-shot-receive-per-turn-ioring_op_recv-into-a-piece-buffer
//! [k-send]: kernel_notes#sends-everything-owed-in-one-operation-ioring_op_sendmsg
//! [k-zc]: kernel_notes#zero-copy-send-ioring_op_send_zc-ioring_op_sendmsg_zc
//! [k-batch]: kernel_notes#waiting-one-completion-and-opt-in-batching-ioring_feat_ext_arg-ioring_feat_min_timeout
//! [k-nodrop]: kernel_notes#ioring_feat_nodrop-and-completion-queue-overflow
//! [k-close]: kernel_notes#cancellation-and-close-ioring_op_async_cancel-ioring_op_close
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
//! [`ops::send_vectored`]: backend::uring::ops::send_vectored
//! [`ops::cancel`]: backend::uring::ops::cancel
//! [`ops::close`]: backend::uring::ops::close
//! [`ops::shutdown_write`]: backend::uring::ops::shutdown_write
//! [`Token`]: token::Token
//! [`Token::SHARD`]: token::Token::SHARD
//! [`Token::decode`]: token::Token::decode
//! [`Replies::echo`]: protocol::Replies::echo
#![deny(missing_docs)]

pub mod backend;
#[cfg(not(feature = "fuzzing"))]
pub(crate) mod conn;
// The fuzz targets in `fuzz/` drive the connection state machine directly; not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod conn;
pub mod error;
// The load generator behind `ringecho bench` (feature `cli`); not a public API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod loadgen;
pub mod protocol;
// The tests' deterministic generator (unit and integration tests alike); not a public API.
#[doc(hidden)]
pub mod rng;
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
pub use server::{Server, ServerBuilder, ShutdownHandle, StatsHandle};
