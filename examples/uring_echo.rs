//! The smallest complete io_uring echo server, built from ringecho's pieces alone: a ring from
//! `build_ring`, a provided-buffer ring (`BufRing`), SQEs from `ops`, `Token`s in `user_data`.
//! Every line that talks to the kernel says what the kernel does.
//!
//! Read it beside the tour in the crate docs ("The life of a message": `cargo doc --open`).
//! Each received buffer is sent straight back to the peer and only then returned to the
//! kernel; the comments say who owns each buffer at each step.
//!
//! Left out, and found in the real server (`src/backend/uring/tcp.rs`): a connection cap,
//! back-pressure and a budget of held buffers (here one client that sends without reading can
//! hold every buffer), graceful shutdown, fallbacks for kernels older than 6.0. One
//! simplification to keep in mind when reading both: here a connection is stored at the index
//! of its *file slot* (its place in the ring's file table), so the connection key in each
//! `Token` is the file slot too. The server keeps connections in a slab whose keys it allocates
//! itself and stores the socket beside them (`Slot::sock`): there the two numbers differ.
//! And before Linux 6.13 a closed direct descriptor's socket is only released once every
//! request submitted before the close has finished, so here one idle client keeps every
//! connection closed after it open (no FIN); the server uses ordinary descriptors on such
//! kernels (`ops::Sock`), this example only says so.
//!
//! ```text
//! cargo run --example uring_echo -- --addr 127.0.0.1:7878
//! printf 'hello\n' | socat - TCP:127.0.0.1:7878     # or: nc -N (netcat-openbsd)
//! ```

use std::collections::VecDeque;
use std::error::Error;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, cqueue, squeue};
use ringecho::backend::uring::buf_ring::Segment;
use ringecho::backend::uring::ops::{self, Sock};
use ringecho::backend::uring::{BufRing, RingConfig, build_ring};
use ringecho::token::{GENERATION_MASK, Op, Target, Token};

/// Buffer group id: a receive names the group it picks buffers from.
const BGID: u16 = 0;
/// Whole buffers: no incremental consumption (`IOU_PBUF_RING_INC`, where the kernel fills one
/// buffer in pieces across several receives).
const INCREMENTAL: bool = false;
/// Our receives are not bundles (`IORING_RECVSEND_BUNDLE`, where one CQE covers several
/// buffers): each receive CQE names exactly one buffer.
const BUNDLE: bool = false;
/// 64 buffers of 4 KiB: few on purpose, so that a busy test runs out of them and the
/// `-ENOBUFS` path below is exercised.
const BUFS: u32 = 64;
const BUF_SIZE: u32 = 4096;
/// Slots in the registered file table: the most connections at once.
const FILES: u32 = 1024;

/// One connection, stored at the index of its file slot (which is also its connection key).
#[derive(Default)]
struct Conn {
    /// Which of the connections that used this file slot this one is: bumped when the slot is
    /// freed. Every token for the connection carries it, and so does a parked entry, so that
    /// a reference that outlives the connection is recognised and ignored.
    generation: u32,
    /// Received bytes not yet sent back, in order: one segment per receive, each lying in its
    /// own provided buffer and holding that buffer's only reference. The buffer stays out of
    /// the buffer ring, where the kernel cannot refill it, until its segment has been sent.
    owed: VecDeque<Segment>,
    /// A send is in flight. One at a time: two could reorder bytes after a short send.
    sending: bool,
    /// A multishot receive is armed.
    receiving: bool,
    /// The peer sent FIN: send what is owed, then close.
    eof: bool,
    /// An error: close as soon as nothing is in flight.
    failed: bool,
    /// Every operation on the descriptor has been cancelled (after an error).
    cancelled: bool,
    /// The close has been submitted; the file slot is free again when it completes.
    closing: bool,
}

struct EchoServer {
    bufs: BufRing,
    conns: Vec<Conn>,
    /// Connections whose receive ended on an empty buffer ring, waiting for buffers, oldest
    /// first, as (file slot, generation). An entry may outlive its connection: a parked
    /// connection can fail and close, and the kernel can put a new one in the same file slot.
    parked: VecDeque<(usize, u32)>,
    /// SQEs decided this turn, submitted by the next `io_uring_enter`.
    sqes: Vec<squeue::Entry>,
    /// Scratch: the segments one completion hands over.
    segs: Vec<Segment>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args[i + 1].clone(),
        None => "127.0.0.1:7878".to_string(),
    };
    // An ordinary listening socket (socket, bind, listen). Accepting happens in the ring.
    let listener = TcpListener::bind(&addr)?;

    // io_uring_setup(2): the kernel allocates a submission queue (SQ) and a completion queue
    // (CQ), which we map into our memory. `build_ring` asks for DEFER_TASKRUN (the kernel does
    // completion work only when we wait for it, never by interrupting us) or the best mode
    // this kernel accepts.
    let (mut ring, features) = build_ring(&RingConfig::default())?;
    if !features.multishot_recv {
        return Err(format!("kernel {} has no multishot receive (6.0)", features.kernel).into());
    }
    if !features.direct_close {
        eprintln!(
            "note: kernel {} releases a closed direct descriptor only once older requests \
             finish (before 6.13): an idle client keeps later closes from sending FIN",
            features.kernel
        );
    }

    // IORING_REGISTER_FILES2 with IORING_RSRC_REGISTER_SPARSE: an empty file table owned by
    // the ring. Accepted sockets go into it ("direct descriptors") and never get a process file
    // descriptor; SQEs name them by their index in it, their file slot.
    ring.submitter().register_files_sparse(FILES)?;

    // mmap BUFS * BUF_SIZE bytes plus a buffer ring of BUFS entries {address, length, id}
    // naming them, then IORING_REGISTER_PBUF_RING. From here the kernel may write into any
    // buffer in the buffer ring, whenever a receive of group BGID has data.
    // SAFETY: `on_completion` below is fed only the buffer id, result and flags of our own
    // receive CQEs from group BGID (none of them bundles), and the buffer ring is never
    // unregistered: at exit its memory is left to the kernel and the process teardown.
    let bufs =
        unsafe { BufRing::registered(&ring.submitter(), BUFS, BUF_SIZE, BGID, INCREMENTAL)? };
    // Every buffer is now in the buffer ring: the kernel's to fill, not ours to read.

    let mut server = EchoServer {
        bufs,
        conns: (0..FILES).map(|_| Conn::default()).collect(),
        parked: VecDeque::new(),
        sqes: Vec::new(),
        segs: Vec::new(),
    };
    // IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT and IORING_FILE_INDEX_ALLOC: one SQE that
    // posts a CQE per new connection, each naming the file slot the socket went into. The `0`
    // is the listener's index: an accept belongs to no connection, so its token names the
    // listening socket (`Target::Socket(0)`; the server may listen on several, we have one)
    // and carries `Token::SHARD` where a connection's would carry its key.
    server
        .sqes
        .push(ops::accept_multi(listener.as_raw_fd(), 0, true));
    println!("listening on {}", listener.local_addr()?);

    loop {
        server.submit_and_wait(&mut ring)?;
        // Each CQE: `res` (bytes, a slot, or -errno), `flags` (F_MORE: a multishot request is
        // still armed; F_BUFFER: `res` bytes are in the buffer whose id is in the upper bits),
        // and `user_data`, copied untouched from the SQE.
        for cqe in ring.completion() {
            server.on_completion(cqe, listener.as_raw_fd());
        }
        // Dropping the `CompletionQueue` stores its new head: the kernel may now post new CQEs
        // into the entries we have read.
        server.rearm_parked();
    }
}

impl EchoServer {
    fn submit_and_wait(&mut self, ring: &mut IoUring) -> Result<(), Box<dyn Error>> {
        // Buffers released since the last turn go back to the kernel: one `Release` store of
        // the ring's tail, no system call. From now on the kernel may fill them again.
        self.bufs.publish();
        for sqe in self.sqes.drain(..) {
            // SAFETY: the only SQEs that point at memory are sends, into provided buffers held
            // by a segment in `owed`. A segment is dropped (and its buffer released) only by
            // its send's completion, or by `sync` once nothing is in flight on the connection.
            while unsafe { ring.submission().push(&sqe) }.is_err() {
                ring.submit()?; // The SQ is full: have the kernel consume what is queued.
            }
        }
        // io_uring_enter(2), once per turn: the kernel consumes every queued SQE (starting each
        // operation), then sleeps until at least one completion has been posted.
        match ring.submit_and_wait(1) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()), // A signal: go round.
            other => other.map(drop).map_err(Into::into),
        }
    }

    fn on_completion(&mut self, cqe: cqueue::Entry, listener: i32) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let tok = Token::decode(cqe.user_data()).expect("we made every user_data");
        if tok.op() == Op::Accept {
            if res >= 0 {
                // `res` is the file slot the kernel installed the new socket in. Its `Conn` is
                // fresh: the previous one was reset when its close completed.
                self.arm_recv(res as usize);
            } else {
                // -ENFILE: the table was full and the kernel closed that connection. The
                // real server stops accepting before the table fills.
                eprintln!("accept: {}", std::io::Error::from_raw_os_error(-res));
            }
            if !cqueue::more(flags) {
                // The multishot accept ended (an error, or a full CQ): arm it again.
                self.sqes.push(ops::accept_multi(listener, 0, true));
            }
            return;
        }
        let Target::Conn {
            key: fd,
            generation,
        } = tok.target()
        else {
            return; // Only accepts are not a connection's, and they were handled above.
        };
        // `fd`: the connection key, which here is the file slot.
        if generation != self.conns[fd].generation {
            // A CQE for a connection that has gone. The rule that keeps sends and receives from
            // outliving their connection is an ordering one: a file slot is freed only by its
            // close's CQE, and the close is submitted only once the send and the receive have
            // posted their final CQEs. Nothing waits for a cancellation's own result, so that
            // one could come after. It carries no buffer, and must not reach the next
            // connection in this file slot: drop it.
            return;
        }
        match tok.op() {
            Op::Recv => self.on_recv(fd, res, flags),
            Op::Send => self.on_send(fd, res),
            Op::Close => {
                // The kernel has closed the socket and freed the file slot; the next accept
                // may reuse it. The new generation makes every reference to the connection
                // that is still around (a parked entry, a late CQE) stale.
                let generation = (self.conns[fd].generation + 1) & GENERATION_MASK;
                self.conns[fd] = Conn {
                    generation,
                    ..Conn::default()
                };
                return;
            }
            // The result of a cancellation: the cancelled receive reports through its own CQE.
            _ => {}
        }
        self.sync(fd);
    }

    fn on_recv(&mut self, fd: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        if !more {
            self.conns[fd].receiving = false; // The multishot receive has ended.
        }
        // The kernel took a buffer from the buffer ring, filled `res` bytes and handed it
        // over: it is ours now (the buffer ring will not give it out again) until we release
        // it. The flag is checked on every receive CQE, even one without data (FIN, an error),
        // though none has been seen to carry a buffer (a FIN on 6.18: `res` 0, no F_BUFFER):
        // defensive handling, not something the kernel is known to do.
        if let Some(bid) = cqueue::buffer_select(flags) {
            let len = res.max(0) as u32;
            if let Err(e) = self
                .bufs
                .on_completion(bid, len, flags, BUNDLE, &mut self.segs)
            {
                panic!("kernel and user space disagree about buffer ownership: {e}");
            }
        }
        let c = &mut self.conns[fd];
        if res > 0 {
            // A shortcut the server does not take: the segment itself is the queued echo, so
            // the one reference `on_completion` gave us becomes the echo's, and the buffer
            // stays out of the buffer ring until the echo has been sent. (The server's handler
            // takes one reference per reply chunk the protocol queued, `add_refs`, then drops
            // the one `on_completion` gave it, `release`.)
            c.owed.extend(self.segs.drain(..));
        } else {
            for seg in self.segs.drain(..) {
                // Back at the buffer ring's tail, published next turn.
                self.bufs.release(seg.bid);
            }
        }
        match res {
            1.. if !more && !c.failed => self.arm_recv(fd), // It ended with a full CQ: re-arm.
            1.. => {}
            0 => c.eof = true, // End of stream: the peer sent FIN.
            // The buffer ring was empty: park until buffers come back.
            e if e == -libc::ENOBUFS => self.parked.push_back((fd, c.generation)),
            e if e == -libc::ECANCELED => {}
            _ => c.failed = true, // ECONNRESET and friends.
        }
    }

    fn on_send(&mut self, fd: usize, res: i32) {
        let c = &mut self.conns[fd];
        c.sending = false;
        if res < 0 {
            c.failed = true;
            return;
        }
        // The kernel copied `res` bytes from the buffer into the socket: it only read it.
        let front = c.owed.front_mut().expect("a send was in flight");
        front.offset += res as u32;
        front.len -= res as u32;
        if front.len == 0 {
            // Fully sent: drop the buffer's only reference. It is written at the buffer ring's
            // tail, where the next `publish` hands it back to the kernel.
            let seg = c.owed.pop_front().expect("front exists");
            self.bufs.release(seg.bid);
        }
        // A short send (front.len > 0) is resubmitted from where it stopped by `sync`.
    }

    /// Queues whatever the connection needs next: a send, a cancellation, or its close.
    fn sync(&mut self, fd: usize) {
        let c = &mut self.conns[fd];
        if c.closing {
            return;
        }
        if !c.sending
            && !c.failed
            && let Some(seg) = c.owed.front()
        {
            // IORING_OP_SEND on the direct descriptor, from inside the provided buffer: the
            // echo leaves from the memory the request arrived in, with no copy in user space
            // (the kernel still copies it into the socket's send buffer).
            let ptr = self.bufs.addr(seg.bid, seg.offset);
            let tok = Token::conn(fd, c.generation, Op::Send);
            self.sqes
                .push(ops::send(Sock::Direct(fd as u32), ptr, seg.len, tok));
            c.sending = true;
        }
        let done = (c.eof && c.owed.is_empty()) || c.failed;
        if !done || c.sending {
            return;
        }
        if c.receiving {
            if !c.cancelled {
                // Closing a direct descriptor does not cancel what is in flight on it, and an
                // armed receive would keep the socket open: IORING_OP_ASYNC_CANCEL everything
                // on it first. The receive then ends with -ECANCELED.
                self.sqes.push(ops::cancel_all_on(
                    Sock::Direct(fd as u32),
                    Token::conn(fd, c.generation, Op::CancelAll),
                ));
                c.cancelled = true;
            }
            return;
        }
        // Nothing in flight: give back what a failed connection still owed, then
        // IORING_OP_CLOSE (the peer sees FIN, or RST if it had sent unread data).
        for seg in c.owed.drain(..) {
            self.bufs.release(seg.bid);
        }
        let tok = Token::conn(fd, c.generation, Op::Close);
        self.sqes.push(ops::close(Sock::Direct(fd as u32), tok));
        c.closing = true;
    }

    /// IORING_OP_RECV with IORING_RECV_MULTISHOT and IOSQE_BUFFER_SELECT: no buffer is given;
    /// each time data arrives the kernel takes one from group BGID and posts a CQE naming it.
    fn arm_recv(&mut self, fd: usize) {
        // `user_data` packs (connection key, generation, operation): each CQE will say which
        // connection and what completed. The key is the file slot here.
        let c = &mut self.conns[fd];
        let tok = Token::conn(fd, c.generation, Op::Recv);
        self.sqes
            .push(ops::recv_multi(Sock::Direct(fd as u32), BGID, tok));
        c.receiving = true;
    }

    /// Re-arms receives that ended on an empty buffer ring, oldest first, at most one per
    /// buffer now in the buffer ring: each needs a buffer to take, or it just ends with
    /// -ENOBUFS again.
    fn rearm_parked(&mut self) {
        let mut budget = self.bufs.available();
        while budget > 0
            && let Some((fd, generation)) = self.parked.pop_front()
        {
            let c = &self.conns[fd];
            // A stale entry: its connection has closed since it was parked (the generation
            // moved on), and the file slot is empty or holds a newcomer. Re-arming from it
            // could receive on an empty file slot, and that receive's failure would then close
            // the slot under the next connection the kernel puts there. Or the connection is
            // still there but has failed: it is closing, not receiving.
            if c.generation != generation || c.receiving || c.failed || c.closing {
                continue;
            }
            self.arm_recv(fd);
            budget -= 1;
        }
    }
}
