//! The io_uring datagram transport: the worker's `ClientRing` ([`ring`](crate::loadgen::ring):
//! its ring, driver and buffer ring, as the TCP transport's), one multishot receive per socket
//! into the buffer ring, and one `sendmsg` SQE per datagram.
//!
//! A connected UDP socket gets only the server's datagrams, and a receive on a datagram socket
//! completes with exactly one datagram, so a plain multishot `recv` does what the server's
//! `recvmsg` does without the header parsing: each completion is one echo. Buffers are larger
//! than `--size`, so an echo that came back longer than it was sent shows as longer (and fails
//! the check) instead of being cut to size.
//!
//! # Memory the kernel holds
//!
//! - A send reads its datagram through a `msghdr` with two `iovec`s: the 16-byte header, copied
//!   into the slot's `DgramMsg`, and the body, in the `'static` pattern table. Slots live in
//!   one boxed slice made at start-up, never resized; a slot is rewritten only after its last
//!   send completed (the flow does not reuse a slot with a send outstanding).
//! - Receives fill provided buffers owned by the ring's [`BufRing`], each handed back as soon
//!   as its datagram is checked, within the same turn. The buffer ring is unregistered (and its
//!   memory freed) only when no receive is outstanding; otherwise it is leaked (see
//!   [`BufRing`]), as are the send slots if a send is.
//!
//! [`BufRing`]: crate::backend::uring::BufRing

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{cqueue, opcode, types};

use super::flow::HEADER;
use super::{DgramEvent, DgramSend, DgramTransport, connected_socket};
use crate::backend::uring::RingMode;
use crate::error::Error;
use crate::loadgen::ring::{ClientRing, MAX_BUF_MEMORY, Received, rearm_after};
use crate::loadgen::worker::WorkerPlan;
use crate::token::{Op, Target, Token};

/// Buffer geometry: one buffer holds a datagram with room to spare (an echo longer than
/// `size` must look longer, not be cut to size), a few buffers per datagram in flight.
fn buf_geometry(in_flight: usize, size: u64) -> (u32, u32) {
    let buf_size = (size + 1).next_power_of_two().clamp(256, 1 << 16) as u32;
    let mut count = (in_flight * 2 + 64).next_power_of_two().clamp(64, 32768);
    while count > 64 && count * buf_size as usize > MAX_BUF_MEMORY {
        count /= 2;
    }
    (count as u32, buf_size)
}

/// What one send hands the kernel.
struct DgramMsg {
    hdr: libc::msghdr,
    iov: [libc::iovec; 2],
    head: [u8; HEADER],
}

#[derive(Default)]
struct USock {
    socket: Option<UdpSocket>,
    recv: bool,
    /// Sends outstanding.
    sends: u32,
    closing: bool,
}

/// The io_uring datagram transport of one worker thread. Create and drop it on that thread.
pub struct UdpUring {
    // Field order is drop order: the ring goes before the buffer memory and the send slots.
    ring: ClientRing,
    socks: Vec<USock>,
    /// Send slots, `depth` per socket; never resized.
    msgs: Box<[DgramMsg]>,
    depth: usize,
    target: SocketAddr,
    rearm: Vec<usize>,
    closed: Vec<usize>,
    cqes: Vec<cqueue::Entry>,
}

impl UdpUring {
    /// A ring, buffer ring and send slots for `socks` sockets.
    pub fn new(plan: &WorkerPlan, socks: usize, mode: RingMode) -> Result<UdpUring, Error> {
        let depth = plan.depth.max(1) as usize;
        let (count, buf_size) = buf_geometry(socks * depth, plan.size);
        // SAFETY: the module docs' "Memory the kernel holds" is how every SQE's memory outlives
        // its operation; only this ring's receive completions reach `received` (`on_recv`);
        // the buffer ring is unregistered only with no receive outstanding (`Drop`).
        let ring = unsafe { ClientRing::new(socks * depth.min(64), mode, count, buf_size) }?;
        let msgs = (0..socks * depth)
            .map(|_| DgramMsg {
                // SAFETY: msghdr is plain old data; all zero is an empty header.
                hdr: unsafe { std::mem::zeroed() },
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 2],
                head: [0; HEADER],
            })
            .collect();
        Ok(UdpUring {
            ring,
            socks: (0..socks).map(|_| USock::default()).collect(),
            msgs,
            depth,
            target: plan.addr,
            rearm: Vec::new(),
            closed: Vec::new(),
            cqes: Vec::new(),
        })
    }

    fn arm_recv(&mut self, i: usize) {
        let s = &mut self.socks[i];
        let Some(sock) = &s.socket else { return };
        if s.recv || s.closing {
            return;
        }
        self.ring.recv(i, sock.as_raw_fd());
        s.recv = true;
    }

    /// Closes `i`'s socket once nothing on it is outstanding; true if it did.
    fn try_release(&mut self, i: usize) -> bool {
        let s = &mut self.socks[i];
        if s.closing && !s.recv && s.sends == 0 && s.socket.is_some() {
            s.socket = None;
            self.ring.count_syscalls(1);
            return true;
        }
        false
    }

    fn on_recv(&mut self, i: usize, res: i32, flags: u32, on: &mut dyn FnMut(DgramEvent<'_>)) {
        let s = &mut self.socks[i];
        if !cqueue::more(flags) {
            s.recv = false;
        }
        let closing = s.closing;
        if rearm_after(res, flags) {
            self.rearm.push(i);
        }
        match self.ring.received(res, flags) {
            Some(Received::Bytes { bid, len }) => {
                if !closing {
                    on(DgramEvent::Datagram(i, self.ring.data(bid, len)));
                }
                // Checked (or ignored): straight back to the ring.
                self.ring.release(bid);
            }
            Some(Received::Empty) if !closing => on(DgramEvent::Datagram(i, &[])),
            Some(Received::Unaccounted) if !closing => {
                on(DgramEvent::Failed(
                    i,
                    io::Error::from_raw_os_error(libc::EIO),
                ));
            }
            Some(Received::Failed(e)) if !closing => on(DgramEvent::Failed(i, e)),
            _ => {}
        }
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32, on: &mut dyn FnMut(DgramEvent<'_>)) {
        let Some(tok) = Token::decode(ud) else { return };
        let i = match (tok.target(), tok.op()) {
            (Target::Conn { key, .. }, Op::Recv) if key < self.socks.len() => {
                self.on_recv(key, res, flags, on);
                key
            }
            (Target::Datagram { socket: i, slot }, _) if i < self.socks.len() => {
                let s = &mut self.socks[i];
                s.sends = s.sends.saturating_sub(1);
                let r = if res >= 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                // The flow learns even while closing: it frees the slot.
                on(DgramEvent::Sent(i, slot, r));
                i
            }
            _ => return,
        };
        if self.try_release(i) {
            on(DgramEvent::Closed(i));
        }
    }
}

impl DgramTransport for UdpUring {
    fn open(&mut self, i: usize) -> io::Result<()> {
        self.ring.count_syscalls(3);
        let sock = connected_socket(self.target)?;
        self.socks[i].socket = Some(sock);
        self.arm_recv(i);
        Ok(())
    }

    fn send(
        &mut self,
        i: usize,
        slot: u16,
        head: &[u8; HEADER],
        body: &'static [u8],
    ) -> io::Result<DgramSend> {
        let s = &mut self.socks[i];
        let Some(sock) = &s.socket else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let m = &mut self.msgs[i * self.depth + slot as usize % self.depth];
        m.head = *head;
        m.iov = [
            libc::iovec {
                iov_base: m.head.as_mut_ptr().cast(),
                iov_len: HEADER,
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ];
        m.hdr.msg_iov = m.iov.as_mut_ptr();
        m.hdr.msg_iovlen = if body.is_empty() { 1 } else { 2 };
        self.ring.pending.push(
            opcode::SendMsg::new(types::Fd(sock.as_raw_fd()), &m.hdr)
                .build()
                .user_data(Token::datagram(i, slot).encode()),
        );
        s.sends += 1;
        Ok(DgramSend::Pending)
    }

    fn close(&mut self, i: usize) {
        let s = &mut self.socks[i];
        if s.closing {
            return;
        }
        s.closing = true;
        // Sends finish on their own (a datagram send does not wait for the peer); the
        // multishot receive would not, so it is cancelled.
        if s.recv {
            self.ring.cancel(i, Op::Recv);
        }
        if self.try_release(i) {
            self.closed.push(i);
        }
    }

    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(DgramEvent<'_>)) -> Result<(), Error> {
        let ready = std::mem::take(&mut self.closed);
        for &i in &ready {
            on(DgramEvent::Closed(i));
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

impl Drop for UdpUring {
    fn drop(&mut self) {
        if !self.socks.iter().any(|s| s.recv) {
            self.ring.unregister_bufs();
        }
        if self.socks.iter().any(|s| s.sends > 0) {
            // The kernel may still read a send's header and iovecs: leak them.
            std::mem::forget(std::mem::take(&mut self.msgs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_hold_a_datagram_and_more() {
        for size in [16u64, 64, 1400, 4096, 65_507, 65_527] {
            let (count, buf) = buf_geometry(50, size);
            assert!(u64::from(buf) > size || buf == 1 << 16, "{size}: {buf}");
            assert!(count.is_power_of_two() && count >= 64);
            assert!(count as usize * buf as usize <= MAX_BUF_MEMORY);
        }
    }
}
