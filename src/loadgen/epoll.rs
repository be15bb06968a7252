//! The epoll transport: the same client (`--backend epoll`) over readiness and plain syscalls,
//! to rule the io_uring path out when a result looks odd.
//!
//! Sockets are nonblocking and registered once, edge-triggered, for input, output and peer
//! half-close, so the loop never calls `epoll_ctl` again. Sends are written at once (one `send`
//! per message, or per batch of queued messages); a short write waits for the output edge.
//! Reads go into one scratch buffer per thread: after a read that did not fill it, the socket
//! is known to be empty, and the next arrival raises a new edge.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::client::{Event, SendStart, Transport};
use super::framing::{MAX_PIECES, Pieces};
use super::worker::WorkerPlan;
use crate::error::Error;
use crate::sys::{self, RawSockAddr};

const SCRATCH: usize = 1 << 16;
const MAX_EVENTS: usize = 1024;

fn check(res: isize) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(res as usize)
    }
}

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

/// An epoll instance and its event buffer: what every epoll client transport waits on.
pub(crate) struct Poller {
    ep: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` (5.11, nanosecond timeouts) works here; else millisecond `epoll_wait`.
    pwait2: bool,
}

impl Poller {
    /// A new epoll instance.
    pub(crate) fn new() -> Result<Poller, Error> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)
            .map_err(|e| Error::io("epoll_create1", e))?;
        Ok(Poller {
            // SAFETY: `ep` was just returned by epoll_create1 and is owned by nothing else.
            ep: unsafe { OwnedFd::from_raw_fd(ep as RawFd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
            pwait2: true,
        })
    }

    /// Registers `fd` for `events`, reported with `key`.
    pub(crate) fn add(&self, fd: RawFd, events: i32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: key,
        };
        // SAFETY: `ev` is a live epoll_event; both descriptors are open.
        let res = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        check(res as isize).map(drop)
    }

    /// Waits up to `timeout`; returns how many events [`event`](Self::event) can read.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let max = self.events.len() as i32;
        if self.pwait2 {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `events` has room for `max` entries and `ts` outlives the call; a null
            // signal mask means "leave it alone".
            let res = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.ep.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    max,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            match check(res as isize) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => self.pwait2 = false,
                other => return other,
            }
        }
        // Round up: waking early would spin, late is what millisecond timeouts cost.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` has room for `max` entries.
        let res =
            unsafe { libc::epoll_wait(self.ep.as_raw_fd(), self.events.as_mut_ptr(), max, ms) };
        check(res as isize)
    }

    /// Event `k` of the last wait: its key and its bits.
    pub(crate) fn event(&self, k: usize) -> (u64, i32) {
        let ev = self.events[k];
        (ev.u64, ev.events as i32)
    }
}

/// The epoll transport of one worker thread.
pub struct EpollTransport {
    poller: Poller,
    conns: Vec<EConn>,
    target: std::net::SocketAddr,
    addr: RawSockAddr,
    ready: Vec<Ready>,
    scratch: Box<[u8]>,
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
            syscalls: 0,
        })
    }

    fn epoll_wait(&mut self, timeout: Duration) -> io::Result<usize> {
        self.syscalls += 1;
        self.poller.wait(timeout)
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
            let res = unsafe { libc::recv(fd, self.scratch.as_mut_ptr().cast(), SCRATCH, 0) };
            match check(res) {
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
            Pieces::One(one) => unsafe {
                libc::send(
                    fd.as_raw_fd(),
                    one.as_ptr().cast(),
                    one.len(),
                    libc::MSG_NOSIGNAL,
                )
            },
            Pieces::Framed { .. } => {
                let mut iov = [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_PIECES];
                let mut n = 0;
                for (v, p) in iov.iter_mut().zip(bytes.iter()) {
                    *v = libc::iovec {
                        iov_base: p.as_ptr() as *mut libc::c_void,
                        iov_len: p.len(),
                    };
                    n += 1;
                }
                // SAFETY: msghdr is plain old data; all zero is an empty header.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_iov = iov.as_mut_ptr();
                hdr.msg_iovlen = n as _;
                // SAFETY: `hdr` and `iov` outlive the call and point at live 'static slices.
                unsafe { libc::sendmsg(fd.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) }
            }
        };
        match check(res) {
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
        let n = match self.epoll_wait(if had_ready { Duration::ZERO } else { timeout }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(Error::io("epoll_wait", e)),
        };
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
