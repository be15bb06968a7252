//! Trial operations: what the kernel can do, found out by doing it once.
//!
//! Several features ringecho needs are flags on an opcode or on a registration (multishot
//! receive is a flag on `IORING_OP_RECV`, direct-descriptor allocation a value in the accept
//! SQE, incremental consumption a flag of the buffer-ring registration), so the opcode probe
//! cannot see them, and the kernel version misleads: distribution kernels backport io_uring
//! features under old version numbers. So each one is tried once per process on a throwaway
//! ring, over a Unix socket pair or an abstract Unix listener (no network, no files; the
//! socket command, which Unix sockets do not take, over a TCP loopback pair), and the answer
//! is what the kernel did. A trial that cannot even be set up (no memory, no sockets)
//! gives no answer, and the caller falls back to the kernel version.
//!
//! One trial is about behaviour, not support: before Linux 6.13 a closed direct descriptor's
//! file is released only once every request submitted before the close has finished (the
//! file table's resource nodes retire in order), so a single idle connection with a receive
//! armed keeps every socket closed after it open: no FIN, and the socket's memory stays. The
//! trial closes a direct descriptor while an older receive waits on another one, and checks
//! whether the closed socket's peer sees end of stream.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::OnceLock;
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::buf_ring::BufRing;

/// What the trials found; `None` where a trial could not be set up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Trials {
    /// `IORING_REGISTER_PBUF_RING` (5.19).
    pub buf_ring: Option<bool>,
    /// `IOU_PBUF_RING_INC` (6.12).
    pub buf_ring_inc: Option<bool>,
    /// Multishot receive (`IORING_RECV_MULTISHOT`, 6.0).
    pub multishot_recv: Option<bool>,
    /// A multishot receive with a length: a cap on each completion (6.17).
    pub multishot_recv_cap: Option<bool>,
    /// Multishot accept into an allocated direct descriptor (5.19).
    pub multishot_accept: Option<bool>,
    /// A closed direct descriptor's file is released at once, whatever older requests are in
    /// flight (6.13).
    pub direct_close_releases: Option<bool>,
    /// `IORING_REGISTER_RING_FDS` (5.18).
    pub reg_ring_fd: Option<bool>,
    /// The socket command `SOCKET_URING_OP_SIOCINQ` (6.7).
    pub sock_inq: Option<bool>,
    /// `IORING_ASYNC_CANCEL_ALL` (5.19).
    pub cancel_all: Option<bool>,
}

/// The trials' results, run on first use (once per process).
pub(crate) fn trials() -> Trials {
    static RESULT: OnceLock<Trials> = OnceLock::new();
    *RESULT.get_or_init(run)
}

fn run() -> Trials {
    let Ok(mut ring) = IoUring::new(8) else {
        return Trials::default();
    };
    Trials {
        buf_ring: register_buf_ring(&ring, false),
        buf_ring_inc: register_buf_ring(&ring, true),
        multishot_recv: multishot_recv(&mut ring, None),
        multishot_recv_cap: multishot_recv(&mut ring, Some(16)),
        multishot_accept: multishot_accept(&mut ring),
        direct_close_releases: direct_close_releases(&mut ring),
        cancel_all: cancel_all(&mut ring),
        sock_inq: sock_inq(&mut ring),
        reg_ring_fd: Some(ring.submitter().register_ring_fd().is_ok()),
    }
}

/// Buffer group the trials register (the throwaway ring has no other).
const BGID: u16 = 7;

/// Registers (and unregisters) a one-buffer ring, plain or incremental.
fn register_buf_ring(ring: &IoUring, incremental: bool) -> Option<bool> {
    let mut br = BufRing::new(1, 64, BGID, incremental).ok()?;
    // SAFETY: nothing receives into the group: no completion names it, and unregistering
    // cannot race a receive.
    match unsafe { br.register(&ring.submitter()) } {
        Ok(()) => {
            br.unregister(&ring.submitter()).ok()?;
            Some(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some(false),
        Err(_) => None,
    }
}

/// Submits `sqe` and waits (up to a second) for the completion carrying `user_data`, handing
/// every completion it sees to `seen`.
fn push_and_wait(
    ring: &mut IoUring,
    sqe: &squeue::Entry,
    user_data: u64,
    mut seen: impl FnMut(&cqueue::Entry),
) -> Option<cqueue::Entry> {
    // SAFETY: every trial SQE points at memory that outlives its operation: the trials wait
    // for each operation's final completion (or cancel it and wait) before returning.
    unsafe { ring.submission().push(sqe).ok()? };
    for _ in 0..100 {
        let ts = types::Timespec::from(Duration::from_millis(10));
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(_) => return None,
        }
        let mut found = None;
        for cqe in ring.completion() {
            seen(&cqe);
            if cqe.user_data() == user_data && found.is_none() {
                found = Some(cqe);
            }
        }
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Cancels the request `target` (unless `done`: its final completion was already seen) and
/// waits until it has posted its final completion; whether it did.
fn cancel_and_wait(ring: &mut IoUring, target: u64, done: bool) -> bool {
    let done = std::cell::Cell::new(done);
    let check = |c: &cqueue::Entry| {
        if c.user_data() == target && !cqueue::more(c.flags()) {
            done.set(true);
        }
    };
    let cancel = opcode::AsyncCancel::new(target).build().user_data(u64::MAX);
    if push_and_wait(ring, &cancel, u64::MAX, check).is_none() {
        return false;
    }
    // The cancelled request's final completion may come after the cancellation's own.
    let nop = opcode::Nop::new().build().user_data(u64::MAX - 1);
    for _ in 0..10 {
        if done.get() {
            break;
        }
        push_and_wait(ring, &nop, u64::MAX - 1, check);
    }
    done.get()
}

/// A cancellation of every request with a `user_data` nobody used: `-ENOENT` where the kernel
/// knows `IORING_ASYNC_CANCEL_ALL`, `-EINVAL` where it does not.
fn cancel_all(ring: &mut IoUring) -> Option<bool> {
    let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(u64::MAX - 2).all())
        .build()
        .user_data(6);
    let cqe = push_and_wait(ring, &cancel, 6, |_| {})?;
    Some(cqe.result() != -libc::EINVAL)
}

/// A multishot receive on one end of a socket pair with a byte waiting: `-EINVAL` where the
/// kernel does not know the flag, or (with `cap`, a length in the SQE) does not take a
/// length with it.
fn multishot_recv(ring: &mut IoUring, cap: Option<u32>) -> Option<bool> {
    let (ours, mut peer) = UnixStream::pair().ok()?;
    peer.write_all(b"x").ok()?;
    let mut br = BufRing::new(1, 64, BGID, false).ok()?;
    // SAFETY: no completion reaches `on_completion`, and the buffer ring is unregistered
    // only once the receive is over (below).
    unsafe { br.register(&ring.submitter()) }.ok()?;
    let recv = match cap {
        None => opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), BGID).build(),
        Some(cap) => {
            // `RecvMulti` cannot carry a length.
            opcode::Recv::new(types::Fd(ours.as_raw_fd()), std::ptr::null_mut(), cap)
                .buf_group(BGID)
                .ioprio(super::ops::RECV_MULTISHOT)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        }
    }
    .user_data(1);
    let cqe = push_and_wait(ring, &recv, 1, |_| {});
    let answer = cqe.as_ref().map(|c| c.result() != -libc::EINVAL);
    let ended = cqe.as_ref().is_some_and(|c| !cqueue::more(c.flags()));
    // Unregistering is only safe once the receive is over; if that cannot be confirmed, the
    // buffer ring stays registered and its memory is leaked (BufRing's Drop), never freed.
    if cqe.is_some() && cancel_and_wait(ring, 1, ended) {
        let _ = br.unregister(&ring.submitter());
    }
    answer
}

/// Asks how many bytes wait in a TCP socket through the socket command. TCP on loopback, the
/// one trial that is not on Unix sockets: Unix sockets answer the command with `-EOPNOTSUPP`
/// on every kernel, as do kernels without it. No loopback (a network namespace with `lo`
/// down): no answer.
fn sock_inq(ring: &mut IoUring) -> Option<bool> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    let addr = listener.local_addr().ok()?;
    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let (ours, _) = listener.accept().ok()?;
    client.write_all(b"x").ok()?;
    // The byte is queued once the peer sees it; a blocking read of nothing would wait, so
    // peek for it.
    ours.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    ours.peek(&mut [0u8; 1]).ok()?;
    // The server's own SQE, with the trial's `user_data`.
    let sqe = super::ops::sock_inq(
        super::ops::Sock::Fd(ours.as_raw_fd()),
        crate::token::Token::shard(crate::token::Op::SockInq),
    )
    .user_data(9);
    let cqe = push_and_wait(ring, &sqe, 9, |_| {})?;
    Some(cqe.result() == 1)
}

/// A listener on an abstract Unix address unique to this process.
fn listener() -> Option<(UnixListener, SocketAddr)> {
    let name = format!("ringecho-trial-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
    let l = UnixListener::bind_addr(&addr).ok()?;
    Some((l, addr))
}

/// A multishot accept into an allocated direct descriptor, with one client connecting.
fn multishot_accept(ring: &mut IoUring) -> Option<bool> {
    let (listener, addr) = listener()?;
    ring.submitter().register_files_sparse(2).ok()?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .allocate_file_index(true)
        .build()
        .user_data(2);
    let _client = UnixStream::connect_addr(&addr).ok();
    let cqe = push_and_wait(ring, &accept, 2, |_| {});
    let answer = cqe.as_ref().map(|c| c.result() >= 0);
    if let Some(c) = &cqe {
        cancel_and_wait(ring, 2, !cqueue::more(c.flags()));
    }
    let _ = ring.submitter().unregister_files();
    answer
}

/// Closes a direct descriptor while an older receive waits on another, and looks at whether
/// the closed socket's peer sees end of stream at once.
fn direct_close_releases(ring: &mut IoUring) -> Option<bool> {
    let (closed, mut closed_peer) = UnixStream::pair().ok()?;
    let (waiting, _waiting_peer) = UnixStream::pair().ok()?;
    ring.submitter()
        .register_files(&[closed.as_raw_fd(), waiting.as_raw_fd()])
        .ok()?;
    // The table holds its own references now.
    drop((closed, waiting));
    closed_peer.set_nonblocking(true).ok()?;
    // The receive's buffer is leaked, never freed, unless the receive is known to be over.
    let buf: &'static mut [u8; 16] = Box::leak(Box::new([0u8; 16]));
    let recv = opcode::Recv::new(types::Fixed(1), buf.as_mut_ptr(), buf.len() as u32)
        .build()
        .user_data(3);
    // SAFETY: `buf` is leaked above: it outlives the receive whatever happens below; it is
    // reclaimed only once the receive's final completion has been seen.
    unsafe { ring.submission().push(&recv).ok()? };
    let answer = (|| {
        ring.submit().ok()?;
        let close = opcode::Close::new(types::Fixed(0)).build().user_data(4);
        let closed_ok = push_and_wait(ring, &close, 4, |_| {}).is_some_and(|c| c.result() == 0);
        // The release (if any) ran before the enter returned to user space.
        let released = matches!(closed_peer.read(&mut [0u8; 1]), Ok(0));
        closed_ok.then_some(released)
    })();
    if cancel_and_wait(ring, 3, false) {
        // SAFETY: `buf` came from `Box::leak` above, and the receive that the kernel could
        // write it through has posted its final completion; nothing else refers to it.
        drop(unsafe { Box::from_raw(buf as *mut [u8; 16]) });
    }
    let _ = ring.submitter().unregister_files();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::KernelVersion;

    /// Every trial gets an answer here, and on a mainline kernel the answer is the one its
    /// version implies.
    #[test]
    fn every_trial_answers_and_agrees_with_a_mainline_kernel_version() {
        if IoUring::new(8).is_err() {
            eprintln!("skipped: io_uring is not available here");
            return;
        }
        let t = trials();
        let k = KernelVersion::current();
        for (name, got, since) in [
            ("buf_ring", t.buf_ring, (5, 19)),
            ("buf_ring_inc", t.buf_ring_inc, (6, 12)),
            ("multishot_recv", t.multishot_recv, (6, 0)),
            ("multishot_recv_cap", t.multishot_recv_cap, (6, 17)),
            ("multishot_accept", t.multishot_accept, (5, 19)),
            ("direct_close_releases", t.direct_close_releases, (6, 13)),
            ("reg_ring_fd", t.reg_ring_fd, (5, 18)),
            ("cancel_all", t.cancel_all, (5, 19)),
            ("sock_inq", t.sock_inq, (6, 7)),
        ] {
            assert_eq!(
                got,
                Some(k.at_least(since.0, since.1)),
                "trial {name} on kernel {k}"
            );
        }
    }
}
