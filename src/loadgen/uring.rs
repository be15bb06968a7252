//! The io_uring transport: the worker's `ClientRing` ([`ring`](super::ring): its ring, driver
//! and buffer ring), one multishot receive per connection into the buffer ring, one send SQE
//! per send.
//!
//! # Memory the kernel holds
//!
//! - Sends point into the stream table ([`pattern`](super::pattern)) and, with `--framed`, at
//!   frame headers ([`framing`](super::framing)): all `'static`. A vectored send's `msghdr` and
//!   `iovec`s live in the connection's boxed `VecSend`, untouched while that send (the
//!   connection's only one) is outstanding.
//! - Receives fill provided buffers owned by the ring's [`BufRing`]. Each one is handed back as
//!   soon as its bytes are checked, within the same turn. The buffer ring is unregistered (and
//!   its memory freed) only when no receive is outstanding; otherwise it is leaked (see
//!   [`BufRing`]).
//! - The connect address is copied into the kernel when the connect SQE is prepared (6.x; older
//!   kernels copy it when the connect is first issued, inside the submitting `io_uring_enter`).
//!   It lives in the transport anyway, whose fields drop after the ring.
//!
//! [`BufRing`]: crate::backend::uring::BufRing

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, types};

use super::client::{Event, SendStart, Transport};
use super::framing::{Pieces, VecSend};
use super::ring::{ClientRing, MAX_BUF_MEMORY, Received, rearm_after};
use super::worker::WorkerPlan;
use crate::backend::uring::RingMode;
use crate::error::Error;
use crate::sys::{self, RawSockAddr};
use crate::token::{Op, Target, Token};

pub use super::ring::probe;

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
    ring: ClientRing,
    conns: Vec<UConn>,
    addr: Box<RawSockAddr>,
    target: std::net::SocketAddr,
    rearm: Vec<usize>,
    closed: Vec<usize>,
    /// Completions of the current turn (kept to reuse its allocation).
    cqes: Vec<cqueue::Entry>,
}

impl UringTransport {
    /// A ring and buffer ring sized for `conns` connections.
    pub fn new(plan: &WorkerPlan, conns: usize, mode: RingMode) -> Result<UringTransport, Error> {
        let (count, buf_size) = buf_geometry(conns, plan.size, plan.depth);
        // SAFETY: the module docs' "Memory the kernel holds" is how every SQE's memory outlives
        // its operation; only this ring's receive completions reach `received` (`on_recv`);
        // the buffer ring is unregistered only with no receive outstanding (`Drop`).
        let ring = unsafe { ClientRing::new(conns, mode, count, buf_size) }?;
        Ok(UringTransport {
            ring,
            conns: (0..conns).map(|_| UConn::default()).collect(),
            addr: Box::new(RawSockAddr::new(&plan.addr)),
            target: plan.addr,
            rearm: Vec::new(),
            closed: Vec::new(),
            cqes: Vec::new(),
        })
    }

    fn arm_recv(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(fd) = &c.fd else { return };
        if c.recv || c.eof || c.closing {
            return;
        }
        self.ring.recv(i, fd.as_raw_fd());
        c.recv = true;
    }

    /// Closes `i`'s socket once nothing on it is outstanding; true if it did.
    fn try_release(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        if c.closing && !c.busy() && c.fd.is_some() {
            c.fd = None;
            self.ring.count_syscalls(1);
            return true;
        }
        false
    }

    fn on_recv(&mut self, i: usize, res: i32, flags: u32, on: &mut dyn FnMut(Event<'_>)) {
        let c = &mut self.conns[i];
        if !cqueue::more(flags) {
            c.recv = false;
        }
        let closing = c.closing;
        if rearm_after(res, flags) {
            self.rearm.push(i);
        }
        match self.ring.received(res, flags) {
            Some(Received::Bytes { bid, len }) => {
                if !closing {
                    on(Event::Data(i, self.ring.data(bid, len)));
                }
                // Checked (or ignored): straight back to the ring.
                self.ring.release(bid);
            }
            Some(Received::Empty) => {
                self.conns[i].eof = true;
                if !closing {
                    on(Event::Eof(i));
                }
            }
            Some(Received::Unaccounted) if !closing => {
                on(Event::Failed(i, io::Error::from_raw_os_error(libc::EIO)));
            }
            Some(Received::Failed(e)) if !closing => on(Event::Failed(i, e)),
            _ => {}
        }
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32, on: &mut dyn FnMut(Event<'_>)) {
        let Some(tok) = Token::decode(ud) else { return };
        let Target::Conn { key: i, .. } = tok.target() else {
            return;
        };
        if i >= self.conns.len() {
            return;
        }
        let err = || io::Error::from_raw_os_error(-res);
        match tok.op() {
            Op::Connect => {
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
            Op::Recv => self.on_recv(i, res, flags, on),
            Op::Send => {
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
        self.ring.count_syscalls(2);
        let fd = sys::tcp_client_socket(&self.target, false)?;
        let sqe =
            opcode::Connect::new(types::Fd(fd.as_raw_fd()), self.addr.as_ptr(), self.addr.len)
                .build()
                .user_data(Token::conn(i, 0, Op::Connect).encode());
        self.ring.pending.push(sqe);
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
        .user_data(Token::conn(i, 0, Op::Send).encode());
        self.ring.pending.push(sqe);
        c.send = true;
        Ok(SendStart::Pending)
    }

    fn shutdown_write(&mut self, i: usize) -> io::Result<()> {
        self.ring.count_syscalls(1);
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
            (c.connect, Op::Connect),
            (c.recv, Op::Recv),
            (c.send, Op::Send),
        ] {
            if busy {
                self.ring.cancel(i, op);
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
        // Events already reported must be acted on before sleeping.
        let timeout = if ready.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        // The completions are taken out first: handling them queues SQEs, which needs `self`.
        let mut cqes = std::mem::take(&mut self.cqes);
        self.ring.turn(timeout, &mut cqes)?;
        for cqe in cqes.drain(..) {
            self.dispatch(cqe.user_data(), cqe.result(), cqe.flags(), on);
        }
        self.cqes = cqes;
        Ok(())
    }

    fn syscalls(&self) -> u64 {
        self.ring.syscalls()
    }
}

impl Drop for UringTransport {
    fn drop(&mut self) {
        // Only with no receive outstanding may the buffer memory be freed; otherwise `BufRing`
        // leaks it (registered rings are never unmapped).
        if !self.conns.iter().any(UConn::busy) {
            self.ring.unregister_bufs();
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
    fn buffer_geometry_stays_within_kernel_and_memory_limits() {
        for conns in [1, 50, 1000, 100_000] {
            for (size, depth) in [(1, 1), (128, 1), (4096, 16), (1 << 20, 64)] {
                let (count, buf) = buf_geometry(conns, size, depth);
                assert!(count.is_power_of_two() && (64..=32768).contains(&count));
                assert!(buf.is_power_of_two() && (256..=65536).contains(&buf));
                assert!(count as usize * buf as usize <= MAX_BUF_MEMORY.max(64 * 65536));
            }
        }
    }
}
