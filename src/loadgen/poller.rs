//! The epoll instance both epoll transports ([`epoll`](super::epoll) for TCP,
//! [`udp::epoll`](super::udp::epoll) for datagrams) wait on: the server's
//! [`sys::epoll`](crate::sys::epoll) wrapper, with its errors worded for the load generator.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::Error;
use crate::sys::epoll::{Epoll, Events};

const MAX_EVENTS: usize = 1024;

/// An epoll instance and its event buffer.
pub(crate) struct Poller {
    ep: Epoll,
    events: Events,
}

impl Poller {
    /// A new epoll instance.
    pub(crate) fn new() -> Result<Poller, Error> {
        Ok(Poller {
            ep: Epoll::new().map_err(|e| Error::io("epoll_create1", e))?,
            events: Events::with_capacity(MAX_EVENTS),
        })
    }

    /// Registers `fd` for `events`, reported with `key`.
    pub(crate) fn add(&self, fd: RawFd, events: i32, key: u64) -> io::Result<()> {
        self.ep.add(fd, events as u32, key)
    }

    /// Waits up to `timeout`; returns how many events [`event`](Self::event) can read (none if
    /// a signal interrupted the wait).
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<usize, Error> {
        self.ep
            .wait(&mut self.events, Some(timeout))
            .map_err(|e| Error::io("epoll_wait", e))
    }

    /// Event `k` of the last wait: its key and its bits.
    pub(crate) fn event(&self, k: usize) -> (u64, i32) {
        self.events
            .get(k)
            .map_or((0, 0), |e| (e.key, e.bits as i32))
    }
}
