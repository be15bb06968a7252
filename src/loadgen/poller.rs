//! The epoll instance both epoll transports ([`epoll`](super::epoll) for TCP,
//! [`udp::epoll`](super::udp::epoll) for datagrams) wait on.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::Error;
use crate::sys::syscall;

const MAX_EVENTS: usize = 1024;

/// An epoll instance and its event buffer.
pub(crate) struct Poller {
    ep: OwnedFd,
    events: Vec<libc::epoll_event>,
    /// `epoll_pwait2` (5.11, nanosecond timeouts) works here; else millisecond `epoll_wait`.
    pwait2: bool,
}

impl Poller {
    /// A new epoll instance.
    pub(crate) fn new() -> Result<Poller, Error> {
        let ep = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))
            .map_err(|e| Error::io("epoll_create1", e))?;
        Ok(Poller {
            // SAFETY: `ep` was just returned by epoll_create1 and is owned by nothing else.
            ep: unsafe { OwnedFd::from_raw_fd(ep) },
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
        // SAFETY: `ev` is a live epoll_event the kernel only reads; both descriptors are open.
        syscall!(epoll_ctl(
            self.ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            &mut ev
        ))
        .map(drop)
    }

    /// Waits up to `timeout`; returns how many events [`event`](Self::event) can read (none if
    /// a signal interrupted the wait).
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<usize, Error> {
        match self.wait_once(timeout) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(Error::io("epoll_wait", e)),
        }
    }

    fn wait_once(&mut self, timeout: Duration) -> io::Result<usize> {
        let max = self.events.len() as i32;
        if self.pwait2 {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `events` has room for `max` entries and `ts` outlives the call; a null
            // signal mask means "leave it alone".
            let res = syscall!(syscall(
                libc::SYS_epoll_pwait2,
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                max,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            ));
            match res {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => self.pwait2 = false,
                other => return other.map(|n| n as usize),
            }
        }
        // Round up: waking early would spin, late is what millisecond timeouts cost.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` has room for `max` entries.
        syscall!(epoll_wait(
            self.ep.as_raw_fd(),
            self.events.as_mut_ptr(),
            max,
            ms
        ))
        .map(|n| n as usize)
    }

    /// Event `k` of the last wait: its key and its bits.
    pub(crate) fn event(&self, k: usize) -> (u64, i32) {
        let ev = self.events[k];
        (ev.u64, ev.events as i32)
    }
}
