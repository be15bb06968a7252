//! epoll(7), checked: an instance ([`Epoll`]), its interest list, and waits that fill an
//! [`Events`] buffer. What the server's epoll backend and the load generator's epoll transports
//! wait on.
//!
//! Every call goes through `syscall!`, so a failure is the thread's `errno` as an
//! [`io::Error`]. Interest and readiness are masks of libc's `EPOLL*` flags; each registered
//! descriptor carries a 64-bit key of the caller's choosing, which comes back with its events.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once `epoll_pwait2` has been refused (a kernel before 5.11, or a seccomp filter that
/// does not know it): every later wait goes straight to `epoll_wait`.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// An epoll instance (close-on-exec), closed when dropped.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

/// One readiness event: the key its descriptor was registered with, and what it is ready for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The key given to [`Epoll::add`] or [`Epoll::modify`].
    pub key: u64,
    /// The `EPOLL*` readiness bits (`EPOLLIN`, `EPOLLOUT`, `EPOLLRDHUP`, `EPOLLHUP`, ...).
    pub bits: u32,
}

/// Room for the events of one wait, reused from wait to wait.
pub struct Events {
    list: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    /// Room for up to `capacity` events per wait (at least one).
    pub fn with_capacity(capacity: usize) -> Events {
        Events {
            list: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
            len: 0,
        }
    }

    /// The events the last wait returned, in the kernel's order.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list[..self.len].iter().map(|e| Event {
            key: e.u64,
            bits: e.events,
        })
    }

    /// Event `k` of the last wait (`k < len()`).
    pub fn get(&self, k: usize) -> Option<Event> {
        self.list[..self.len].get(k).map(|e| Event {
            key: e.u64,
            bits: e.events,
        })
    }

    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait returned no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Epoll {
    /// A new epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
    pub fn new() -> io::Result<Epoll> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nothing else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Registers `fd` for the events in `interest` (`EPOLLET` for edge-triggered), reported
    /// with `key`.
    pub fn add(&self, fd: RawFd, interest: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, key)
    }

    /// Replaces the interest and key of a registered `fd`.
    pub fn modify(&self, fd: RawFd, interest: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, key)
    }

    fn ctl(&self, op: i32, fd: RawFd, interest: u32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest,
            u64: key,
        };
        // SAFETY: `ev` is a live epoll_event the kernel only reads during the call.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev)).map(drop)
    }

    /// Waits until a registered descriptor is ready or `timeout` has passed (`None`: no
    /// limit), and fills `events`; returns how many there are. A signal that interrupts the
    /// wait returns 0 events, like a timeout.
    ///
    /// Timeouts are kept to the nanosecond with `epoll_pwait2` (5.11); where it is missing
    /// they are rounded up to the next millisecond for `epoll_wait`, so a wait never ends
    /// before its timeout.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let (ep, list, max) = (
            self.fd.as_raw_fd(),
            events.list.as_mut_ptr(),
            events.list.len().min(i32::MAX as usize) as i32,
        );
        events.len = 0;
        let n = match timeout {
            Some(t) if !NO_PWAIT2.load(Ordering::Relaxed) => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                // SAFETY: `list` has room for `max` events and `ts` outlives the call; a null
                // signal mask leaves the thread's alone.
                match syscall!(syscall(
                    libc::SYS_epoll_pwait2,
                    ep,
                    list,
                    max,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )) {
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                        NO_PWAIT2.store(true, Ordering::Relaxed);
                        return self.wait(events, timeout);
                    }
                    other => other.map(|n| n as i32),
                }
            }
            _ => {
                let ms = timeout.map_or(-1, |t| {
                    t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
                });
                // SAFETY: `list` has room for `max` events.
                syscall!(epoll_wait(ep, list, max, ms))
            }
        };
        match n {
            Ok(n) => {
                events.len = n as usize;
                Ok(events.len)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_readable_descriptor_with_its_key_and_times_out_otherwise() {
        let ep = Epoll::new().unwrap();
        let fd = super::super::eventfd().unwrap();
        ep.add(fd.as_raw_fd(), libc::EPOLLIN as u32, 42).unwrap();
        let mut events = Events::with_capacity(4);
        let n = ep
            .wait(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        assert_eq!((n, events.is_empty()), (0, true));
        super::super::eventfd_signal(fd.as_raw_fd());
        assert_eq!(ep.wait(&mut events, None).unwrap(), 1);
        let ev = events.iter().next().unwrap();
        assert_eq!(ev.key, 42);
        assert_ne!(ev.bits & libc::EPOLLIN as u32, 0);
        ep.modify(fd.as_raw_fd(), libc::EPOLLIN as u32, 7).unwrap();
        assert_eq!(ep.wait(&mut events, Some(Duration::ZERO)).unwrap(), 1);
        assert_eq!(events.iter().map(|e| e.key).collect::<Vec<_>>(), [7]);
    }
}
