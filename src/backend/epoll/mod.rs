//! The epoll backend: the same shards as io_uring's, over readiness and plain system calls.
//!
//! Edge-triggered epoll (through [`sys::epoll`](crate::sys::epoll)): an event says a socket
//! became readable or writable, and the shard then reads or writes until the kernel says it
//! would block. Each event carries a [`Token`] in its key, as an io_uring completion does in
//! its `user_data`. [`tcp`] serves connections with the same `Conn` state machine as io_uring,
//! copying every reply (one scratch buffer per shard, no provided buffers), which is what makes
//! the comparison honest; [`udp`] echoes datagrams in `recvmmsg`/`sendmmsg` batches.

pub(crate) mod tcp;
pub(crate) mod udp;

use std::os::fd::RawFd;

use crate::error::Error;
use crate::sys::epoll::Epoll;
use crate::sys::syscall;
use crate::token::{Op, Token};

/// The shard's epoll instance: each of its `sockets` made nonblocking and registered for
/// `interest` under its index (operation `op`: `Accept` for a listener, `Recv` for a UDP
/// socket), and the shutdown eventfd (level-triggered) under `Op::Shutdown`.
fn shard_epoll(
    sockets: &[RawFd],
    interest: u32,
    op: Op,
    shutdown_fd: RawFd,
) -> Result<Epoll, Error> {
    let ep = Epoll::new().map_err(|e| Error::io("epoll_create1", e))?;
    for (i, &fd) in sockets.iter().enumerate() {
        set_nonblocking(fd).map_err(|e| Error::io("fcntl(O_NONBLOCK)", e))?;
        ep.add(fd, interest, Token::socket(i, op).encode())
            .map_err(|e| Error::io("epoll_ctl(socket)", e))?;
    }
    ep.add(
        shutdown_fd,
        libc::EPOLLIN as u32,
        Token::shard(Op::Shutdown).encode(),
    )
    .map_err(|e| Error::io("epoll_ctl(eventfd)", e))?;
    Ok(ep)
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl with F_GETFL and F_SETFL takes and returns plain integers.
    let flags = syscall!(fcntl(fd, libc::F_GETFL))?;
    // SAFETY: as above.
    syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)).map(drop)
}
