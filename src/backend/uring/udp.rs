//! UDP echo on io_uring: multishot `recvmsg` from the buffer ring, `sendmsg` back to the source
//! straight from the buffer the datagram arrived in.
//!
//! With a buffer group, a multishot `IORING_OP_RECVMSG` (6.0) writes each datagram into a
//! provided buffer laid out as `struct io_uring_recvmsg_out`, then the source address (as many
//! bytes as the `msg_namelen` we asked for), then control data (none here), then the payload.
//! The completion's `res` is the number of bytes written there. A datagram longer than the room
//! left is truncated by the kernel and flagged `MSG_TRUNC`: it is counted and dropped, never
//! echoed short.
//!
//! Each buffer has at most one echo in flight, so the `msghdr`, `iovec` and address of that
//! echo live in an [`EchoSend`] per buffer id, allocated once and never moved while the shard
//! runs.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, squeue, types};

use super::buf_ring::{BufRing, Segment};
use super::driver::{self, Driver};
use super::{BGID, ShardMemory, build_ring, catch_panic, finish_shard, ops};
use crate::backend::shard::{ShardConfig, ShardContext, ShardEvent};
use crate::error::Error;
use crate::stats::Counters;
use crate::token::{Op, Target, Token};

/// Room for the source address: any IPv4 or IPv6 address fits.
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_storage>() as u32;
/// `struct io_uring_recvmsg_out`.
const OUT_HEADER: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvState {
    Idle,
    Armed,
    /// Ended with `-ENOBUFS`: re-armed when a buffer comes back.
    Parked,
}

struct Socket {
    socket: UdpSocket,
    recv: RecvState,
    armed_once: bool,
    /// The `msghdr` the multishot receive was prepared with (only its lengths matter). Boxed:
    /// its address is handed to the kernel.
    hdr: Box<libc::msghdr>,
    /// Receives that ended on an error in a row; the next re-arm waits `error_backoff` of it.
    errors: u32,
    /// Not re-armed before this instant (after an error).
    retry_at: Option<Instant>,
}

/// How long a socket's receive waits before it is re-armed after `errors` errors in a row:
/// 1 ms, doubling, at most 1 s. A receive that fails at once must not spin the shard.
fn error_backoff(errors: u32) -> Duration {
    Duration::from_millis(1 << errors.saturating_sub(1).min(10)).min(Duration::from_secs(1))
}

/// One in-flight echo: what `sendmsg` reads until its completion.
struct EchoSend {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
}

struct UdpShard {
    bufs: BufRing,
    sockets: Vec<Socket>,
    /// Indexed by buffer id; never resized after start-up, so the kernel's pointers stay valid.
    sends: Box<[EchoSend]>,
    pending: Vec<squeue::Entry>,
    segs: Vec<Segment>,
    budget: usize,
    in_flight: usize,
    draining: bool,
    drain_deadline: Option<Instant>,
    drain_timeout: Duration,
    shutdown_fd: i32,
    counters: Counters,
}

/// Runs one io_uring UDP shard until shutdown.
pub(crate) fn run_shard(cfg: &ShardConfig, mut ctx: ShardContext) -> Result<(), Error> {
    let (buf_count, buf_size) = (cfg.buf_count, cfg.buf_size);
    let (mut ring, features) = build_ring(&cfg.ring)?;
    features.require_server_minimum()?;
    if !features.multishot_recv {
        return Err(Error::UringUnavailable(format!(
            "kernel {} lacks multishot recvmsg (6.0), which UDP on io_uring uses (remedy: \
             --backend epoll)",
            features.kernel
        )));
    }
    if buf_size <= OUT_HEADER + NAME_LEN {
        return Err(Error::Config(format!(
            "--buf-size must exceed {} bytes for UDP (recvmsg header and source address)",
            OUT_HEADER + NAME_LEN
        )));
    }
    // SAFETY: only this ring's receive completions reach `on_completion` (via `dispatch`), and
    // the buffer ring is unregistered only after a clean finish, with no receive outstanding
    // (`finish_shard`).
    let bufs = unsafe {
        BufRing::create_and_register(&ring.submitter(), (buf_count, buf_size), (BGID, 0), false)
    }?;
    if ctx.index == 0 {
        eprintln!(
            "ringecho: io_uring udp shards={} kernel={} mode={} bufs={}x{}B (largest datagram {}B)",
            ctx.shards,
            features.kernel,
            features.mode,
            buf_count,
            buf_size,
            crate::backend::udp_max_payload(buf_size)
        );
    }
    let sockets = std::mem::take(&mut ctx.sockets)
        .into_iter()
        .map(|fd| {
            // SAFETY: msghdr is plain old data; all-zero is a valid (empty) header.
            let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
            hdr.msg_namelen = NAME_LEN;
            Socket {
                socket: UdpSocket::from(fd),
                recv: RecvState::Idle,
                armed_once: false,
                hdr,
                errors: 0,
                retry_at: None,
            }
        })
        .collect();
    let sends = (0..buf_count)
        .map(|_| EchoSend {
            // SAFETY: these are plain old data; all-zero values are valid and overwritten before
            // each use.
            hdr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: as above.
            addr: unsafe { std::mem::zeroed() },
        })
        .collect();
    let mut shard = UdpShard {
        bufs,
        sockets,
        sends,
        pending: Vec::with_capacity(256),
        segs: Vec::with_capacity(1),
        budget: cfg.buf_budget as usize,
        in_flight: 0,
        draining: false,
        drain_deadline: None,
        drain_timeout: cfg.drain_timeout,
        shutdown_fd: ctx.shutdown_fd,
        counters: Counters::default(),
    };
    // SAFETY: the memory every SQE of this shard points at outlives its operation: a send
    // points into its buffer's send slot and at the provided buffer it echoes (held until the
    // send completes), a receive at its socket's boxed msghdr; slots and headers are kept for
    // the shard's life, and leaked, never freed, after a failure (`finish_shard`).
    let mut driver = unsafe { Driver::new(&features, cfg.batch_max, cfg.batch_wait_us) };
    let result = catch_panic(|| shard.run(&mut ring, &mut driver, &ctx));
    ctx.stats.publish(&shard.counters);
    finish_shard(ring, shard, result)
}

impl ShardMemory for UdpShard {
    fn unregister_bufs(&mut self, submitter: &io_uring::Submitter<'_>) -> std::io::Result<()> {
        self.bufs.unregister(submitter)
    }

    fn close_descriptors(&mut self) {
        for s in self.sockets.drain(..) {
            drop(s.socket);
            // A receive prepared with it may still be in flight; leaked with the shard.
            std::mem::forget(s.hdr);
        }
    }
}

impl UdpShard {
    fn run(
        &mut self,
        ring: &mut IoUring,
        driver: &mut Driver,
        ctx: &ShardContext,
    ) -> Result<(), Error> {
        let (submitter, mut sq, mut cq) = ring.split();
        self.pending.push(ops::poll_readable(
            self.shutdown_fd,
            Token::shard(Op::Shutdown),
        ));
        for i in 0..self.sockets.len() {
            self.arm(i);
        }
        driver.submit(&submitter, &mut sq, &mut self.pending, &mut self.counters)?;
        let _ = ctx.events.send(ShardEvent::Ready);
        let mut last_turn = 0;
        loop {
            if let Some(at) = self.drain_deadline
                && Instant::now() >= at
            {
                // Drain time is up: stop waiting for echoes still queued in the kernel.
                self.drain_deadline = None;
                self.pending.push(ops::cancel_any());
            }
            if self.draining
                && self.in_flight == 0
                && self.sockets.iter().all(|s| s.recv != RecvState::Armed)
            {
                return Ok(());
            }
            self.bufs.publish();
            let now = Instant::now();
            for i in 0..self.sockets.len() {
                if self.sockets[i].retry_at.is_some_and(|at| at <= now) {
                    self.sockets[i].retry_at = None;
                    self.arm(i);
                }
            }
            let retry = self.sockets.iter().filter_map(|s| s.retry_at).min();
            let deadline = [self.drain_deadline, retry].into_iter().flatten().min();
            driver.turn(
                &submitter,
                &mut sq,
                &mut cq,
                &mut self.pending,
                last_turn,
                deadline,
                &mut self.counters,
            )?;
            last_turn = driver::reap(&mut cq, |cqe| self.dispatch(cqe));
            self.rearm_parked();
            self.counters.events += last_turn as u64;
            self.counters.bufs_held = self.bufs.held() as u64;
            ctx.stats.publish(&self.counters);
        }
    }

    fn arm(&mut self, idx: usize) {
        let s = &mut self.sockets[idx];
        if s.recv != RecvState::Idle || self.draining || s.retry_at.is_some() {
            return;
        }
        let tok = Token::socket(idx, Op::Recv);
        self.pending.push(ops::recv_msg_multi(
            s.socket.as_raw_fd(),
            &*s.hdr,
            BGID,
            tok,
        ));
        s.recv = RecvState::Armed;
        if s.armed_once {
            self.counters.recv_rearms += 1;
        }
        s.armed_once = true;
    }

    fn rearm_parked(&mut self) {
        if self.bufs.available() == 0 {
            return;
        }
        for i in 0..self.sockets.len() {
            if self.sockets[i].recv == RecvState::Parked {
                self.sockets[i].recv = RecvState::Idle;
                self.arm(i);
            }
        }
    }

    fn dispatch(&mut self, cqe: cqueue::Entry) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(tok) = Token::decode(cqe.user_data()) else {
            return; // the drain's blanket cancellation
        };
        match (tok.target(), tok.op()) {
            (Target::Socket(idx), Op::Recv) => self.on_recv(idx, res, flags),
            (Target::Buffer(bid), Op::Send) => self.on_sent(bid, res),
            (_, Op::Shutdown) => {
                self.draining = true;
                self.drain_deadline = Some(Instant::now() + self.drain_timeout);
                for (i, s) in self.sockets.iter_mut().enumerate() {
                    if s.recv == RecvState::Armed {
                        let target = Token::socket(i, Op::Recv);
                        self.pending
                            .push(ops::cancel(target, Token::shard(Op::CancelRecv)));
                    } else {
                        s.recv = RecvState::Idle;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_recv(&mut self, idx: usize, res: i32, flags: u32) {
        let Some(s) = self.sockets.get_mut(idx) else {
            return;
        };
        if !cqueue::more(flags) {
            s.recv = RecvState::Idle;
        }
        let hdr: *const libc::msghdr = &*s.hdr;
        if res == -libc::ENOBUFS {
            self.counters.enobufs += 1;
            if s.recv == RecvState::Idle {
                s.recv = RecvState::Parked;
            }
            return;
        }
        let fd = s.socket.as_raw_fd();
        let more = cqueue::more(flags);
        if let Some(bid) = cqueue::buffer_select(flags) {
            self.echo(fd, bid, res.max(0) as u32, flags, hdr);
        }
        let s = &mut self.sockets[idx];
        if res >= 0 {
            s.errors = 0;
        } else if res != -libc::ECANCELED {
            self.counters.conn_errors += 1;
            if !more {
                s.errors += 1;
                s.retry_at = Some(Instant::now() + error_backoff(s.errors));
            }
        }
        if !more {
            // Ended (a zero-length datagram, an error, a full completion queue...): re-arm at
            // the cost of one SQE (after an error, once its back-off is over).
            self.arm(idx);
        }
    }

    /// Echoes the datagram in buffer `bid` back to its source, or drops it (truncated, or the
    /// buffer budget is spent).
    fn echo(&mut self, fd: i32, bid: u16, res: u32, flags: u32, hdr: *const libc::msghdr) {
        self.segs.clear();
        if self
            .bufs
            .on_completion(bid, res, flags, false, &mut self.segs)
            .is_err()
        {
            self.counters.conn_errors += 1;
            return;
        }
        self.counters.recv_cqes += 1;
        let data = self.bufs.data(bid, 0, res);
        // SAFETY: `hdr` points at the socket's boxed msghdr, alive for the shard's lifetime.
        let parsed = types::RecvMsgOut::parse(data, unsafe { &*hdr });
        let Ok(msg) = parsed else {
            self.counters.conn_errors += 1;
            self.bufs.release(bid);
            return;
        };
        self.counters.bytes_in += msg.payload_data().len() as u64;
        if msg.is_payload_truncated() {
            self.counters.dgram_truncated += 1;
            self.bufs.release(bid);
            return;
        }
        if self.bufs.held() > self.budget {
            // Echoes are stuck in the kernel (a full socket buffer): shed load, UDP-style.
            self.counters.dgram_dropped += 1;
            self.bufs.release(bid);
            return;
        }
        let name = msg.name_data();
        let payload = msg.payload_data();
        let send = &mut self.sends[bid as usize];
        // SAFETY: `name` holds at most NAME_LEN bytes (the msghdr asked for that many), which is
        // the size of `addr`; the regions do not overlap (one is in the ring buffer).
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&mut send.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                name.len().min(NAME_LEN as usize),
            );
        }
        send.iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        send.hdr.msg_name = (&mut send.addr as *mut libc::sockaddr_storage).cast();
        send.hdr.msg_namelen = name.len() as u32;
        send.hdr.msg_iov = &mut send.iov;
        send.hdr.msg_iovlen = 1;
        let tok = Token::buffer(bid);
        // The buffer keeps the completion's reference until the send completes; the send's
        // header, iovec and address stay put (`sends` is never resized).
        self.pending.push(ops::send_msg(fd, &send.hdr, tok));
        self.in_flight += 1;
    }

    fn on_sent(&mut self, bid: u16, res: i32) {
        self.in_flight -= 1;
        if res >= 0 {
            self.counters.sends += 1;
            self.counters.bytes_out += res as u64;
        } else if res != -libc::ECANCELED {
            self.counters.conn_errors += 1;
        }
        self.bufs.release(bid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_errors_back_off_from_a_millisecond_to_a_second() {
        let waits: Vec<u128> = (1..=14).map(|n| error_backoff(n).as_millis()).collect();
        assert_eq!(
            waits,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000, 1000, 1000
            ]
        );
    }
}
