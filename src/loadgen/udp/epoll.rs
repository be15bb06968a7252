//! The epoll datagram transport (`--udp --backend epoll`): nonblocking connected sockets,
//! registered once, edge-triggered; one `sendmsg` per datagram (header and body as two
//! `iovec`s, nothing copied), and `recvmmsg` batches on the way in.
//!
//! After a batch that did not fill up, the socket is known to be empty and the next datagram
//! raises a new edge. An ICMP error (nobody listening) raises `EPOLLERR` and surfaces as the
//! next receive's `ECONNREFUSED`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::flow::HEADER;
use super::{DgramEvent, DgramSend, DgramTransport, connected_socket};
use crate::error::Error;
use crate::loadgen::poller::Poller;
use crate::loadgen::worker::WorkerPlan;
use crate::sys::syscall;

/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;

#[derive(Default)]
struct ESock {
    socket: Option<UdpSocket>,
    want_write: bool,
}

/// The epoll datagram transport of one worker thread.
pub struct UdpEpoll {
    poller: Poller,
    socks: Vec<ESock>,
    target: SocketAddr,
    closed: Vec<usize>,
    /// `BATCH` receive buffers of `stride` bytes each.
    bufs: Box<[u8]>,
    stride: usize,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    syscalls: u64,
}

impl UdpEpoll {
    /// An epoll instance and receive buffers for `socks` sockets.
    pub fn new(plan: &WorkerPlan, socks: usize) -> Result<UdpEpoll, Error> {
        // One byte more than a datagram: an echo longer than it was sent must look longer.
        let stride = (plan.size as usize + 1).min(1 << 16);
        Ok(UdpEpoll {
            poller: Poller::new()?,
            socks: (0..socks).map(|_| ESock::default()).collect(),
            target: plan.addr,
            closed: Vec::new(),
            bufs: vec![0; BATCH * stride].into_boxed_slice(),
            stride,
            // SAFETY: mmsghdr is plain old data; all zero is an empty header.
            hdrs: vec![unsafe { std::mem::zeroed() }; BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                BATCH
            ],
            syscalls: 0,
        })
    }

    /// Reads socket `i` until it is empty or failed.
    fn read_all(&mut self, i: usize, on: &mut dyn FnMut(DgramEvent<'_>)) {
        let Some(fd) = self.socks[i].socket.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        loop {
            for k in 0..BATCH {
                self.iovs[k] = libc::iovec {
                    iov_base: self.bufs[k * self.stride..].as_mut_ptr().cast(),
                    iov_len: self.stride,
                };
                let h = &mut self.hdrs[k];
                h.msg_hdr.msg_iov = &mut self.iovs[k];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_len = 0;
            }
            self.syscalls += 1;
            // SAFETY: `hdrs` holds BATCH headers, each pointing at its own iovec and a
            // `stride`-byte region of `bufs`; all outlive the call.
            let res = syscall!(recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                0,
                std::ptr::null_mut(),
            ));
            let got = match res {
                Ok(n) => n as usize,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => continue,
                    _ => return on(DgramEvent::Failed(i, e)),
                },
            };
            for k in 0..got {
                let len = (self.hdrs[k].msg_len as usize).min(self.stride);
                let start = k * self.stride;
                on(DgramEvent::Datagram(i, &self.bufs[start..start + len]));
            }
            if got < BATCH {
                return;
            }
        }
    }
}

impl DgramTransport for UdpEpoll {
    fn open(&mut self, i: usize) -> io::Result<()> {
        self.syscalls += 4;
        let sock = connected_socket(self.target)?;
        sock.set_nonblocking(true)?;
        self.poller.add(
            sock.as_raw_fd(),
            libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET,
            i as u64,
        )?;
        self.socks[i].socket = Some(sock);
        Ok(())
    }

    fn send(
        &mut self,
        i: usize,
        _slot: u16,
        head: &[u8; HEADER],
        body: &'static [u8],
    ) -> io::Result<DgramSend> {
        let s = &mut self.socks[i];
        let Some(sock) = &s.socket else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        let mut iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: HEADER,
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ];
        // SAFETY: msghdr is plain old data; all zero is an empty header (no address: the socket
        // is connected).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = iov.as_mut_ptr();
        hdr.msg_iovlen = 2;
        self.syscalls += 1;
        // SAFETY: `hdr` and `iov` outlive the call; the kernel only reads through them.
        match syscall!(sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL)) {
            Ok(_) => Ok(DgramSend::Done),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.want_write = true;
                Ok(DgramSend::Blocked)
            }
            Err(e) => Err(e),
        }
    }

    fn close(&mut self, i: usize) {
        // Closing the last descriptor of a socket also removes it from the epoll set.
        if self.socks[i].socket.take().is_some() {
            self.syscalls += 1;
        }
        self.closed.push(i);
    }

    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(DgramEvent<'_>)) -> Result<(), Error> {
        let closed = std::mem::take(&mut self.closed);
        for &i in &closed {
            on(DgramEvent::Closed(i));
        }
        self.syscalls += 1;
        let timeout = if closed.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        let n = self.poller.wait(timeout)?;
        for k in 0..n {
            let (key, bits) = self.poller.event(k);
            let i = key as usize;
            let Some(s) = self.socks.get_mut(i) else {
                continue;
            };
            if s.socket.is_none() {
                continue;
            }
            if bits & libc::EPOLLOUT != 0 && s.want_write {
                s.want_write = false;
                on(DgramEvent::Writable(i));
            }
            if bits & (libc::EPOLLIN | libc::EPOLLERR) != 0 {
                self.read_all(i, on);
            }
        }
        Ok(())
    }

    fn syscalls(&self) -> u64 {
        self.syscalls
    }
}
