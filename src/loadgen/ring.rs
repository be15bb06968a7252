//! What the two io_uring transports ([`uring`](super::uring) for TCP,
//! [`udp::uring`](super::udp::uring) for datagrams) share: one ring per worker thread, built by
//! the server's own [`build_ring`] (same task-running modes and fallbacks) and driven by the
//! server's own `Driver` (one `io_uring_enter` per turn, counted), a provided-buffer ring
//! ([`BufRing`]) that every receive fills, and the `user_data` each SQE carries: the server's
//! [`Token`], whose connection key is here the client's connection (or socket) index, never
//! reused within a run, with generation 0.
//!
//! Per message this costs no syscall of its own: sends go into the submission queue, echoes
//! arrive as completions of a receive armed once, and one `io_uring_enter` per loop turn
//! submits every send of the turn and collects every completion. That is what makes the
//! client cheaper per message than a client making a `write` and a `read` per message, so it
//! does not become the bottleneck it measures.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::backend::uring::driver::{self, Driver};
use crate::backend::uring::{BufRing, Features, RingConfig, RingMode, Segment, build_ring};
use crate::error::Error;
use crate::stats::Counters;
use crate::token::{Op, Token};

/// Buffer group of the client's buffer ring (one ring per thread, so one group suffices).
const BGID: u16 = 0;
/// Provided-buffer memory per thread is kept under this.
pub(crate) const MAX_BUF_MEMORY: usize = 64 << 20;

/// Checks that this kernel has what the client uses; the error says what to do instead.
fn require_client_features(f: &Features) -> Result<(), Error> {
    for (have, what) in [
        (f.ext_arg, "IORING_FEAT_EXT_ARG (5.11)"),
        (f.buf_ring, "provided-buffer rings (5.19)"),
    ] {
        if !have {
            return Err(Error::UringUnavailable(format!(
                "kernel {} lacks {what}, which the io_uring client needs (remedy: use \
                 --backend epoll)",
                f.kernel
            )));
        }
    }
    Ok(())
}

/// Ring geometry for `conns` connections (or UDP datagrams in flight).
fn ring_config(conns: usize, mode: RingMode) -> RingConfig {
    // At most a send, a receive and a cancel per connection per turn; a full queue is submitted
    // early, so this is only a batching size.
    let sq = (conns * 2 + 16).next_power_of_two().clamp(64, 4096) as u32;
    // Completions: a multishot receive may post several per turn; the kernel keeps overflow
    // (NODROP) and ends a multishot receive when the queue is full, which is re-armed.
    let cq = (sq * 4)
        .max((conns * 8).next_power_of_two() as u32)
        .min(65536);
    RingConfig {
        sq_entries: sq,
        cq_entries: cq,
        mode,
        sqpoll: None,
    }
}

/// Probes io_uring for a client ring, so the run fails before starting threads.
pub fn probe(mode: RingMode) -> Result<Features, Error> {
    let (_ring, f) = build_ring(&ring_config(1, mode))?;
    require_client_features(&f)?;
    Ok(f)
}

/// What a receive completion brought.
pub(crate) enum Received {
    /// `len` bytes (at least one) in buffer `bid`, held until [`ClientRing::release`].
    Bytes { bid: u16, len: u32 },
    /// No bytes: the end of the stream (TCP), or an empty datagram (UDP).
    Empty,
    /// Bytes without a buffer the ring can account for: the connection can no longer be
    /// trusted (reading them would read memory the kernel may own).
    Unaccounted,
    /// The receive failed.
    Failed(io::Error),
}

/// Whether a receive that completed with `res` and `flags` must be armed again: it ended
/// without failing (a full completion queue, a zero-length datagram, or a single-shot
/// receive), or the buffer ring ran dry (every buffer goes back within the turn).
pub(crate) fn rearm_after(res: i32, flags: u32) -> bool {
    (res >= 0 && !cqueue::more(flags)) || res == -libc::ENOBUFS
}

/// One worker thread's ring and what goes with it. Create and drop it on that thread
/// (`IORING_SETUP_SINGLE_ISSUER`).
pub(crate) struct ClientRing {
    // Field order is drop order: the ring goes before the buffer memory (which, if still
    // registered, is leaked rather than freed).
    ring: IoUring,
    bufs: BufRing,
    driver: Driver,
    /// SQEs queued since the last turn; the next [`turn`](Self::turn) submits them.
    pub(crate) pending: Vec<squeue::Entry>,
    /// Scratch for the buffer pieces one completion covers.
    segs: Vec<Segment>,
    multishot: bool,
    /// What the driver counts; `syscalls` also counts the transport's own (see
    /// [`count_syscalls`](Self::count_syscalls)).
    counters: Counters,
}

impl ClientRing {
    /// A ring for `conns` connections (or datagrams in flight), with a buffer ring of
    /// `buf_count` buffers of `buf_size` bytes registered.
    ///
    /// # Safety
    ///
    /// For as long as the ring lives:
    ///
    /// - every SQE queued in [`pending`](Self::pending) points only at memory that stays valid
    ///   (and unwritten, for what the kernel reads) until the operation's final completion has
    ///   been reaped; memory an operation may still use when the ring is dropped is leaked,
    ///   never freed;
    /// - [`received`](Self::received) gets only the result and flags of this ring's receive
    ///   completions, once each;
    /// - [`unregister_bufs`](Self::unregister_bufs) is called only once no receive is
    ///   outstanding.
    pub(crate) unsafe fn new(
        conns: usize,
        mode: RingMode,
        buf_count: u32,
        buf_size: u32,
    ) -> Result<ClientRing, Error> {
        let (ring, features) = build_ring(&ring_config(conns, mode))?;
        require_client_features(&features)?;
        // SAFETY: our caller keeps the contract above: `received` is the only way to
        // `on_completion`, `unregister_bufs` the only way to `unregister`.
        let bufs = unsafe {
            BufRing::create_and_register(&ring.submitter(), (buf_count, buf_size), (BGID, 0), false)
        }?;
        // SAFETY: our caller vouches for every SQE in `pending`, the only ones the driver gets.
        // One completion is enough to end a wait: the client holds none back for a batch.
        let driver = unsafe { Driver::new(&features, 1, 0) };
        Ok(ClientRing {
            ring,
            bufs,
            driver,
            pending: Vec::with_capacity(features.sq_entries as usize),
            segs: Vec::with_capacity(1),
            multishot: features.multishot_recv,
            counters: Counters::default(),
        })
    }

    /// Queues the cancellation of operation `op` on connection (or socket) `i`.
    pub(crate) fn cancel(&mut self, i: usize, op: Op) {
        self.pending.push(
            opcode::AsyncCancel::new(Token::conn(i, 0, op).encode())
                .build()
                .user_data(Token::conn(i, 0, Op::CancelAll).encode()),
        );
    }

    /// Queues a receive on connection (or socket) `i`'s `fd` into the buffer ring.
    pub(crate) fn recv(&mut self, i: usize, fd: RawFd) {
        let user_data = Token::conn(i, 0, Op::Recv).encode();
        let fd = types::Fd(fd);
        let sqe = if self.multishot {
            opcode::RecvMulti::new(fd, BGID).build()
        } else {
            // 5.19 has no multishot receive: one buffer per receive, re-armed after each.
            opcode::Recv::new(fd, std::ptr::null_mut(), self.bufs.buf_size())
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        self.pending.push(sqe.user_data(user_data));
    }

    /// One loop turn's kernel work: hands the returned buffers back to the kernel, submits
    /// what is queued, waits up to `timeout` for a completion, and appends every completion
    /// there is to `cqes`.
    pub(crate) fn turn(
        &mut self,
        timeout: Duration,
        cqes: &mut Vec<cqueue::Entry>,
    ) -> Result<(), Error> {
        self.bufs.publish();
        // A deadline too far to express is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let (submitter, mut sq, mut cq) = self.ring.split();
        self.driver.turn(
            &submitter,
            &mut sq,
            &mut cq,
            &mut self.pending,
            0,
            deadline,
            &mut self.counters,
        )?;
        driver::reap(&mut cq, |cqe| cqes.push(cqe));
        Ok(())
    }

    /// What a receive completion (its `res` and `flags`) brought, its buffer accounted for:
    /// held by the caller if it carries bytes, back in the buffer ring otherwise. `None`:
    /// nothing to report (the buffer ring ran dry, or the receive was cancelled).
    pub(crate) fn received(&mut self, res: i32, flags: u32) -> Option<Received> {
        self.segs.clear();
        let taken = cqueue::buffer_select(flags).filter(|&bid| {
            self.bufs
                .on_completion(bid, res.max(0) as u32, flags, false, &mut self.segs)
                .is_ok()
        });
        if res > 0 {
            return Some(match taken {
                Some(bid) => Received::Bytes {
                    bid,
                    len: res as u32,
                },
                None => Received::Unaccounted,
            });
        }
        if let Some(bid) = taken {
            self.bufs.release(bid);
        }
        match -res {
            0 => Some(Received::Empty),
            libc::ENOBUFS | libc::ECANCELED => None,
            e => Some(Received::Failed(io::Error::from_raw_os_error(e))),
        }
    }

    /// The first `len` bytes of held buffer `bid`.
    pub(crate) fn data(&self, bid: u16, len: u32) -> &[u8] {
        self.bufs.data(bid, 0, len)
    }

    /// Gives held buffer `bid` back to the buffer ring (the kernel sees it next turn).
    pub(crate) fn release(&mut self, bid: u16) {
        self.bufs.release(bid);
    }

    /// Unregisters the buffer ring, so that its memory is freed with it rather than leaked.
    pub(crate) fn unregister_bufs(&mut self) {
        let _ = self.bufs.unregister(&self.ring.submitter());
    }

    /// Counts `n` syscalls the transport made itself (sockets, closes, half-closes).
    pub(crate) fn count_syscalls(&mut self, n: u64) {
        self.counters.syscalls += n;
    }

    /// Every syscall so far: the driver's `io_uring_enter`s and the transport's own.
    pub(crate) fn syscalls(&self) -> u64 {
        self.counters.syscalls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_geometry_stays_within_kernel_limits() {
        for conns in [1, 50, 1000, 100_000] {
            let c = ring_config(conns, RingMode::Auto);
            assert!(c.sq_entries.is_power_of_two() && c.sq_entries <= 4096);
            assert!(c.cq_entries >= c.sq_entries && c.cq_entries <= 65536);
        }
    }
}
