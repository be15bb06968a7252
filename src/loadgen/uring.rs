//! The io_uring transport: one ring per client thread, built by the server's own
//! [`build_ring`] (same task-running modes and fallbacks), receiving into a provided-buffer ring
//! ([`BufRing`]) with one multishot receive per connection.
//!
//! Per message this costs no syscall of its own: sends go into the submission queue, echoes
//! arrive as completions of a receive armed once, and one `io_uring_enter` per loop turn
//! submits every send of the turn and collects every completion. That is what makes the
//! client cheaper per message than a client making a `write` and a `read` per message, so it
//! does not become the bottleneck it measures.
//!
//! # Memory the kernel holds
//!
//! - Sends point into the stream table ([`pattern`](super::pattern)) and, with `--framed`, at
//!   frame headers ([`framing`](super::framing)): all `'static`. A vectored send's `msghdr` and
//!   `iovec`s live in the connection's boxed `VecSend`, untouched while that send (the
//!   connection's only one) is outstanding.
//! - Receives fill provided buffers owned by the [`BufRing`]. Each one is handed back as soon as
//!   its bytes are checked, within the same turn. The ring is unregistered (and its memory
//!   freed) only when no receive is outstanding; otherwise it is leaked (see [`BufRing`]).
//! - The connect address is copied into the kernel when the connect SQE is prepared (6.x; older
//!   kernels copy it when the connect is first issued, inside the submitting `io_uring_enter`).
//!   It lives in the transport anyway, whose fields drop after the ring.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::client::{Event, SendStart, Transport};
use super::framing::{MAX_PIECES, Pieces};
use super::worker::WorkerPlan;
use crate::backend::uring::{BufRing, Features, RingConfig, RingMode, Segment, build_ring};
use crate::error::Error;
use crate::sys::{self, RawSockAddr};

/// Buffer group of the client's buffer ring (one ring per thread, so one group suffices).
pub(crate) const BGID: u16 = 0;
/// Provided-buffer memory per thread is kept under this.
const MAX_BUF_MEMORY: usize = 64 << 20;

const OP_CONNECT: u8 = 1;
const OP_RECV: u8 = 2;
const OP_SEND: u8 = 3;
const OP_CANCEL: u8 = 4;

/// `user_data`: connection index above, operation in the low byte. A connection index is never
/// reused within a run, so a late completion cannot be mistaken for another connection's.
fn token(i: usize, op: u8) -> u64 {
    ((i as u64) << 8) | u64::from(op)
}

/// Checks that this kernel has what the client uses; the error says what to do instead.
pub fn require_client_features(f: &Features) -> Result<(), Error> {
    for (have, what) in [
        (f.ext_arg, "IORING_FEAT_EXT_ARG (5.11)"),
        (f.buf_ring, "provided-buffer rings (5.19)"),
    ] {
        if !have {
            return Err(Error::UringUnavailable(format!(
                "kernel {} lacks {what}, which the io_uring client needs (remedy: use \
                 --backend epoll)",
                f.kernel
            )));
        }
    }
    Ok(())
}

/// Ring geometry for `conns` connections (or UDP datagrams in flight).
pub(crate) fn ring_config(conns: usize, mode: RingMode) -> RingConfig {
    // At most a send, a receive and a cancel per connection per turn; a full queue is submitted
    // early, so this is only a batching size.
    let sq = (conns * 2 + 16).next_power_of_two().clamp(64, 4096) as u32;
    // Completions: a multishot receive may post several per turn; the kernel keeps overflow
    // (NODROP) and ends a multishot receive when the queue is full, which is re-armed.
    let cq = (sq * 4)
        .max((conns * 8).next_power_of_two() as u32)
        .min(65536);
    RingConfig {
        sq_entries: sq,
        cq_entries: cq,
        mode,
        sqpoll: None,
    }
}

/// Buffer geometry: buffers a little larger than what one connection can have in flight (a
/// receive never carries more than that), enough of them for a few per connection.
fn buf_geometry(conns: usize, size: u64, depth: u32) -> (u32, u32) {
    let in_flight = size.saturating_mul(u64::from(depth)).min(1 << 16) as u32;
    let buf_size = in_flight.next_power_of_two().clamp(256, 1 << 16);
    let mut count = (conns * (depth.min(4) as usize) + 64)
        .next_power_of_two()
        .clamp(64, 32768);
    while count > 64 && count * buf_size as usize > MAX_BUF_MEMORY {
        count /= 2;
    }
    (count as u32, buf_size)
}

/// Pushes every SQE in `pending` to the submission queue, submitting early when it is full.
///
/// # Safety
///
/// Every pointer an SQE carries (send buffers, message headers, addresses) must stay valid
/// until that SQE's completion is reaped, or until the ring is gone.
pub(crate) unsafe fn flush(
    ring: &mut IoUring,
    pending: &mut Vec<squeue::Entry>,
    syscalls: &mut u64,
) -> Result<(), Error> {
    let (submitter, mut sq, _) = ring.split();
    sq.sync();
    for sqe in pending.drain(..) {
        // SAFETY: the caller vouches for what the SQE points at.
        while unsafe { sq.push(&sqe) }.is_err() {
            sq.sync();
            *syscalls += 1;
            match submitter.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(Error::io("io_uring_enter (submit)", e)),
            }
            sq.sync();
        }
    }
    sq.sync();
    Ok(())
}

/// Submits what is queued and waits up to `timeout` for at least one completion: one
/// `io_uring_enter`.
pub(crate) fn enter(ring: &IoUring, timeout: Duration, syscalls: &mut u64) -> Result<(), Error> {
    *syscalls += 1;
    let ts = types::Timespec::from(timeout);
    let args = types::SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => Ok(()),
        Err(e) => match e.raw_os_error() {
            // Timeouts and signals are ordinary wake-ups; EBUSY means completions are waiting
            // to be read, which is what comes next.
            Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
            _ => Err(Error::io("io_uring_enter", e)),
        },
    }
}

/// Probes io_uring for a client ring, so the run fails before starting threads.
pub fn probe(mode: RingMode) -> Result<Features, Error> {
    let (_ring, f) = build_ring(&ring_config(1, mode))?;
    require_client_features(&f)?;
    Ok(f)
}

#[derive(Default)]
struct UConn {
    fd: Option<OwnedFd>,
    connect: bool,
    recv: bool,
    send: bool,
    eof: bool,
    closing: bool,
    /// What a vectored send hands the kernel; made on the first one.
    vec: Option<Box<VecSend>>,
}

/// The `msghdr` and `iovec`s of a connection's outstanding vectored send. Boxed, so their
/// addresses hold still for the kernel while the connection's slot vector is untouched anyway.
pub(crate) struct VecSend {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_PIECES],
}

impl VecSend {
    /// An empty one, boxed.
    pub(crate) fn boxed() -> Box<VecSend> {
        Box::new(VecSend {
            // SAFETY: msghdr is plain old data; all zero is an empty header.
            hdr: unsafe { std::mem::zeroed() },
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_PIECES],
        })
    }

    /// Points the header at `bytes` (at most [`MAX_PIECES`] pieces) and returns it, for
    /// `sendmsg`.
    pub(crate) fn set(&mut self, bytes: &Pieces) -> *const libc::msghdr {
        let mut n = 0;
        for (v, p) in self.iov.iter_mut().zip(bytes.iter()) {
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            n += 1;
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = n as _;
        &self.hdr
    }
}

impl UConn {
    fn busy(&self) -> bool {
        self.connect || self.recv || self.send
    }
}

/// The io_uring transport of one worker thread. Create and drop it on that thread
/// (`IORING_SETUP_SINGLE_ISSUER`).
pub struct UringTransport {
    // Field order is drop order: the ring goes before the buffer memory (which, if still
    // registered, is leaked rather than freed), and before the sockets.
    ring: IoUring,
    bufs: BufRing,
    /// Scratch for the buffer pieces one completion covers.
    segs: Vec<Segment>,
    conns: Vec<UConn>,
    addr: Box<RawSockAddr>,
    target: std::net::SocketAddr,
    multishot: bool,
    pending: Vec<squeue::Entry>,
    rearm: Vec<usize>,
    closed: Vec<usize>,
    /// Completions of the current turn (kept to reuse its allocation).
    cqes: Vec<cqueue::Entry>,
    syscalls: u64,
}

impl UringTransport {
    /// A ring and buffer ring sized for `conns` connections.
    pub fn new(plan: &WorkerPlan, conns: usize, mode: RingMode) -> Result<UringTransport, Error> {
        let (ring, features) = build_ring(&ring_config(conns, mode))?;
        require_client_features(&features)?;
        let (count, buf_size) = buf_geometry(conns, plan.size, plan.depth);
        // SAFETY: only this ring's receive completions reach `on_completion` (`dispatch`), and
        // the buffer ring is unregistered only with no receive outstanding (`Drop`).
        let bufs = unsafe {
            BufRing::create_and_register(&ring.submitter(), count, buf_size, BGID, false)
        }?;
        Ok(UringTransport {
            ring,
            bufs,
            segs: Vec::with_capacity(1),
            conns: (0..conns).map(|_| UConn::default()).collect(),
            addr: Box::new(RawSockAddr::new(&plan.addr)),
            target: plan.addr,
            multishot: features.multishot_recv,
            pending: Vec::with_capacity(features.sq_entries as usize),
            rearm: Vec::new(),
            closed: Vec::new(),
            cqes: Vec::new(),
            syscalls: 0,
        })
    }

    fn arm_recv(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(fd) = &c.fd else { return };
        if c.recv || c.eof || c.closing {
            return;
        }
        let fd = types::Fd(fd.as_raw_fd());
        let sqe = if self.multishot {
            opcode::RecvMulti::new(fd, BGID).build()
        } else {
            // 5.19 has no multishot receive: one buffer per receive, re-armed after each.
            opcode::Recv::new(fd, std::ptr::null_mut(), self.bufs.buf_size())
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        self.pending.push(sqe.user_data(token(i, OP_RECV)));
        c.recv = true;
    }

    /// Closes `i`'s socket once nothing on it is outstanding; true if it did.
    fn try_release(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        if c.closing && !c.busy() && c.fd.is_some() {
            c.fd = None;
            self.syscalls += 1;
            return true;
        }
        false
    }

    fn flush(&mut self) -> Result<(), Error> {
        // The only pointers SQEs carry are send buffers in the 'static stream table and frame
        // headers, a vectored send's header in the connection's boxed `VecSend` (dropped after
        // the ring, field order, and rewritten only once that send completed), and the connect
        // address in `self.addr`, which the kernel copies during submission and which outlives
        // the ring anyway; receives use provided buffers owned by `self.bufs`, which stays
        // registered (or is leaked) while any receive is outstanding.
        // SAFETY: so every pointer an SQE carries outlives its operation, as `flush` requires.
        unsafe { flush(&mut self.ring, &mut self.pending, &mut self.syscalls) }
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32, on: &mut dyn FnMut(Event<'_>)) {
        let i = (ud >> 8) as usize;
        let op = ud as u8;
        if op == OP_CANCEL || i >= self.conns.len() {
            return;
        }
        let err = || io::Error::from_raw_os_error(-res);
        match op {
            OP_CONNECT => {
                let c = &mut self.conns[i];
                c.connect = false;
                if !c.closing {
                    if res == 0 {
                        on(Event::Connected(i));
                        self.arm_recv(i);
                    } else {
                        on(Event::ConnectFailed(i, err()));
                    }
                }
            }
            OP_RECV => {
                let c = &mut self.conns[i];
                let more = cqueue::more(flags);
                if !more {
                    c.recv = false;
                }
                let closing = c.closing;
                let bid = cqueue::buffer_select(flags);
                if res > 0 {
                    self.segs.clear();
                    let taken = bid.filter(|&b| {
                        self.bufs
                            .on_completion(b, res as u32, flags, false, &mut self.segs)
                            .is_ok()
                    });
                    match taken {
                        Some(bid) => {
                            if !closing {
                                on(Event::Data(i, self.bufs.data(bid, 0, res as u32)));
                            }
                            // Checked (or ignored): straight back to the ring.
                            self.bufs.release(bid);
                        }
                        None if !closing => {
                            // Data without a buffer we can account for: stop trusting this
                            // connection rather than read memory the kernel may own.
                            on(Event::Failed(i, io::Error::from_raw_os_error(libc::EIO)));
                        }
                        None => {}
                    }
                    if !more {
                        self.rearm.push(i);
                    }
                } else {
                    self.segs.clear();
                    if let Some(b) = bid
                        && self
                            .bufs
                            .on_completion(b, 0, flags, false, &mut self.segs)
                            .is_ok()
                    {
                        self.bufs.release(b);
                    }
                    match res {
                        0 => {
                            self.conns[i].eof = true;
                            if !closing {
                                on(Event::Eof(i));
                            }
                        }
                        e if e == -libc::ENOBUFS => {
                            // Out of buffers: every buffer goes back this turn, so re-arm.
                            self.rearm.push(i);
                        }
                        e if e == -libc::ECANCELED => {}
                        _ if !closing => on(Event::Failed(i, err())),
                        _ => {}
                    }
                }
            }
            OP_SEND => {
                let c = &mut self.conns[i];
                c.send = false;
                if !c.closing {
                    if res >= 0 {
                        on(Event::Sent(i, res as usize));
                    } else {
                        on(Event::Failed(i, err()));
                    }
                }
            }
            _ => return,
        }
        if self.try_release(i) {
            on(Event::Closed(i));
        }
    }
}

impl Transport for UringTransport {
    fn connect(&mut self, i: usize) -> io::Result<()> {
        self.syscalls += 2;
        let fd = sys::tcp_client_socket(&self.target, false)?;
        let sqe =
            opcode::Connect::new(types::Fd(fd.as_raw_fd()), self.addr.as_ptr(), self.addr.len)
                .build()
                .user_data(token(i, OP_CONNECT));
        self.pending.push(sqe);
        let c = &mut self.conns[i];
        c.fd = Some(fd);
        c.connect = true;
        Ok(())
    }

    fn send(&mut self, i: usize, bytes: &Pieces) -> io::Result<SendStart> {
        let c = &mut self.conns[i];
        let Some(fd) = &c.fd else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let fd = types::Fd(fd.as_raw_fd());
        let sqe = match *bytes {
            Pieces::One(one) => opcode::Send::new(fd, one.as_ptr(), one.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build(),
            Pieces::Framed { .. } => {
                let hdr = c.vec.get_or_insert_with(VecSend::boxed).set(bytes);
                opcode::SendMsg::new(fd, hdr)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
        }
        .user_data(token(i, OP_SEND));
        self.pending.push(sqe);
        c.send = true;
        Ok(SendStart::Pending)
    }

    fn shutdown_write(&mut self, i: usize) -> io::Result<()> {
        self.syscalls += 1;
        match &self.conns[i].fd {
            Some(fd) => sys::shutdown_write(fd.as_raw_fd()),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.closing {
            return;
        }
        c.closing = true;
        // Closing the descriptor would not stop operations holding the socket (and would send
        // no FIN while a receive holds it): cancel each, close when the last one completes.
        for (busy, op) in [
            (c.connect, OP_CONNECT),
            (c.recv, OP_RECV),
            (c.send, OP_SEND),
        ] {
            if busy {
                self.pending.push(
                    opcode::AsyncCancel::new(token(i, op))
                        .build()
                        .user_data(token(i, OP_CANCEL)),
                );
            }
        }
        if self.try_release(i) {
            self.closed.push(i);
        }
    }

    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(Event<'_>)) -> Result<(), Error> {
        let ready = std::mem::take(&mut self.closed);
        for &i in &ready {
            on(Event::Closed(i));
        }
        let mut rearm = std::mem::take(&mut self.rearm);
        for i in rearm.drain(..) {
            self.arm_recv(i);
        }
        self.rearm = rearm;
        self.bufs.publish();
        self.flush()?;
        // Events already reported must be acted on before sleeping.
        let timeout = if ready.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        enter(&self.ring, timeout, &mut self.syscalls)?;
        // Copy the completions out first: handling them queues SQEs, which needs `self`. Dropping
        // the completion queue publishes its head, freeing the space for the kernel.
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion());
        for cqe in cqes.drain(..) {
            self.dispatch(cqe.user_data(), cqe.result(), cqe.flags(), on);
        }
        self.cqes = cqes;
        Ok(())
    }

    fn syscalls(&self) -> u64 {
        self.syscalls
    }
}

impl Drop for UringTransport {
    fn drop(&mut self) {
        // Only with no receive outstanding may the buffer memory be freed; otherwise `BufRing`
        // leaks it (registered rings are never unmapped).
        if !self.conns.iter().any(UConn::busy) {
            let _ = self.bufs.unregister(&self.ring.submitter());
        } else {
            // Likewise a send's header may still be read by the kernel: leak it.
            for c in &mut self.conns {
                if c.send {
                    std::mem::forget(c.vec.take());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_stays_within_kernel_and_memory_limits() {
        for conns in [1, 50, 1000, 100_000] {
            let c = ring_config(conns, RingMode::Auto);
            assert!(c.sq_entries.is_power_of_two() && c.sq_entries <= 4096);
            assert!(c.cq_entries >= c.sq_entries && c.cq_entries <= 65536);
            for (size, depth) in [(1, 1), (128, 1), (4096, 16), (1 << 20, 64)] {
                let (count, buf) = buf_geometry(conns, size, depth);
                assert!(count.is_power_of_two() && (64..=32768).contains(&count));
                assert!(buf.is_power_of_two() && (256..=65536).contains(&buf));
                assert!(count as usize * buf as usize <= MAX_BUF_MEMORY.max(64 * 65536));
            }
        }
    }
}
