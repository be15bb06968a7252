//! The epoll transport: the same client (`--backend epoll`) over readiness and plain syscalls,
//! to rule the io_uring path out when a result looks odd.
//!
//! Sockets are nonblocking and registered once, edge-triggered, for input, output and peer
//! half-close, so the loop never calls `epoll_ctl` again. Sends are written at once (one `send`
//! per message, or per batch of queued messages); a short write waits for the output edge.
//! Reads go into one scratch buffer per thread: after a read that did not fill it, the socket
//! is known to be empty, and the next arrival raises a new edge.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::client::{Event, SendStart, Transport};
use super::framing::{Pieces, VecSend};
use super::poller::Poller;
use super::worker::WorkerPlan;
use crate::error::Error;
use crate::sys::{self, RawSockAddr, syscall};

const SCRATCH: usize = 1 << 16;

#[derive(Default)]
struct EConn {
    fd: Option<OwnedFd>,
    connecting: bool,
    want_write: bool,
    eof: bool,
}

enum Ready {
    Connected(usize),
    ConnectFailed(usize, io::Error),
    Closed(usize),
}

/// The epoll transport of one worker thread.
pub struct EpollTransport {
    poller: Poller,
    conns: Vec<EConn>,
    target: std::net::SocketAddr,
    addr: RawSockAddr,
    ready: Vec<Ready>,
    scratch: Box<[u8]>,
    /// What a vectored send hands the kernel (sends are synchronous: one is enough).
    vec: Box<VecSend>,
    syscalls: u64,
}

impl EpollTransport {
    /// An epoll instance for `conns` connections.
    pub fn new(plan: &WorkerPlan, conns: usize) -> Result<EpollTransport, Error> {
        Ok(EpollTransport {
            poller: Poller::new()?,
            conns: (0..conns).map(|_| EConn::default()).collect(),
            target: plan.addr,
            addr: RawSockAddr::new(&plan.addr),
            ready: Vec::new(),
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            vec: VecSend::boxed(),
            syscalls: 0,
        })
    }

    /// Reads `i` until it is empty, at end of stream, or failed. `hup`: the event already
    /// reported the peer's FIN, which raises no new edge, so read on to the end of stream even
    /// after a short read.
    fn read_all(&mut self, i: usize, hup: bool, on: &mut dyn FnMut(Event<'_>)) {
        let Some(fd) = self.conns[i].fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        loop {
            self.syscalls += 1;
            // SAFETY: `scratch` is a live buffer of `SCRATCH` bytes owned by `self`.
            let res = syscall!(recv(fd, self.scratch.as_mut_ptr().cast(), SCRATCH, 0));
            match res.map(|n| n as usize) {
                Ok(0) => {
                    self.conns[i].eof = true;
                    return on(Event::Eof(i));
                }
                Ok(n) => {
                    on(Event::Data(i, &self.scratch[..n]));
                    if n < SCRATCH && !hup {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return on(Event::Failed(i, e)),
            }
        }
    }
}

impl Transport for EpollTransport {
    fn connect(&mut self, i: usize) -> io::Result<()> {
        self.syscalls += 4;
        let fd = sys::tcp_client_socket(&self.target, true)?;
        // Registered before connecting, so no edge can be missed.
        self.poller.add(
            fd.as_raw_fd(),
            libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET,
            i as u64,
        )?;
        let c = &mut self.conns[i];
        match sys::connect(fd.as_raw_fd(), &self.addr) {
            Ok(()) => self.ready.push(Ready::Connected(i)),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => c.connecting = true,
            Err(e) => self.ready.push(Ready::ConnectFailed(i, e)),
        }
        c.fd = Some(fd);
        Ok(())
    }

    fn send(&mut self, i: usize, bytes: &Pieces) -> io::Result<SendStart> {
        let c = &mut self.conns[i];
        let Some(fd) = &c.fd else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        self.syscalls += 1;
        let res = match *bytes {
            // SAFETY: `one` is a live 'static slice.
            Pieces::One(one) => syscall!(send(
                fd.as_raw_fd(),
                one.as_ptr().cast(),
                one.len(),
                libc::MSG_NOSIGNAL,
            )),
            Pieces::Framed { .. } => {
                let hdr = self.vec.set(bytes);
                // SAFETY: `hdr` and its iovecs live in `self.vec` and point at 'static slices;
                // the kernel is done with them when the call returns.
                syscall!(sendmsg(fd.as_raw_fd(), hdr, libc::MSG_NOSIGNAL))
            }
        };
        match res.map(|n| n as usize) {
            Ok(n) => {
                c.want_write = (n as u64) < bytes.len();
                Ok(SendStart::Done(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.want_write = true;
                Ok(SendStart::Done(0))
            }
            Err(e) => Err(e),
        }
    }

    fn shutdown_write(&mut self, i: usize) -> io::Result<()> {
        self.syscalls += 1;
        match &self.conns[i].fd {
            Some(fd) => sys::shutdown_write(fd.as_raw_fd()),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    fn close(&mut self, i: usize) {
        // Closing the last descriptor of a socket also removes it from the epoll set.
        if self.conns[i].fd.take().is_some() {
            self.syscalls += 1;
        }
        self.ready.push(Ready::Closed(i));
    }

    fn wait(&mut self, timeout: Duration, on: &mut dyn FnMut(Event<'_>)) -> Result<(), Error> {
        let ready = std::mem::take(&mut self.ready);
        let had_ready = !ready.is_empty();
        for r in ready {
            match r {
                Ready::Connected(i) => on(Event::Connected(i)),
                Ready::ConnectFailed(i, e) => on(Event::ConnectFailed(i, e)),
                Ready::Closed(i) => on(Event::Closed(i)),
            }
        }
        self.syscalls += 1;
        let n = self
            .poller
            .wait(if had_ready { Duration::ZERO } else { timeout })?;
        for k in 0..n {
            let (key, bits) = self.poller.event(k);
            let i = key as usize;
            let Some(c) = self.conns.get_mut(i) else {
                continue;
            };
            let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
                continue;
            };
            if c.connecting {
                if bits & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) == 0 {
                    continue;
                }
                c.connecting = false;
                self.syscalls += 1;
                match sys::take_socket_error(fd) {
                    Ok(()) => on(Event::Connected(i)),
                    Err(e) => {
                        on(Event::ConnectFailed(i, e));
                        continue;
                    }
                }
            }
            let c = &mut self.conns[i];
            if bits & libc::EPOLLOUT != 0 && c.want_write {
                c.want_write = false;
                on(Event::Writable(i));
            }
            let c = &self.conns[i];
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0
                && !c.eof
            {
                let hup = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0;
                self.read_all(i, hup, on);
            }
        }
        Ok(())
    }

    fn syscalls(&self) -> u64 {
        self.syscalls
    }
}
