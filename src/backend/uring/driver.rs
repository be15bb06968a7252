//! The kernel-facing half of a ring's loop: moving queued SQEs into the submission ring, the
//! one `io_uring_enter` per turn (how long and for how many completions it waits), reaping
//! completions, and counting all of it. Shared by the server's TCP and UDP shards and the load
//! generator's io_uring transports.

use std::time::{Duration, Instant};

use io_uring::{CompletionQueue, SubmissionQueue, Submitter, cqueue, squeue, types};

use super::setup::{Features, RingMode};
use crate::error::Error;
use crate::stats::Counters;

/// A turn that handled at least this many completions counts as busy: with `--batch-wait-us`,
/// the next wait asks for a batch.
const BUSY_TURN: usize = 8;

/// Waiting and batching policy, plus what the kernel reported last time. Made by the
/// `unsafe` [`Driver::new`], whose caller vouches for the SQEs it will hand over.
pub(crate) struct Driver {
    sqpoll: bool,
    min_timeout: bool,
    batch_max: u32,
    batch_wait_us: u32,
    kernel_dropped_seen: u32,
}

impl Driver {
    /// A driver for a ring with `features`. A busy turn (see [`turn`](Self::turn)) asks for
    /// up to `batch_max` completions and holds ready ones for up to `batch_wait_us`; 0 never
    /// holds them.
    ///
    /// # Safety
    ///
    /// The driver pushes whatever SQEs [`submit`](Self::submit) and [`turn`](Self::turn) are
    /// handed to the kernel, which reads and writes the memory they point at until the
    /// operation's final completion. So every SQE handed to this driver must point only at
    /// memory that stays valid (and is not written, for what the kernel reads) until that
    /// completion has been reaped. Memory an operation may still use when its owner stops
    /// early must be leaked, never freed.
    pub unsafe fn new(features: &Features, batch_max: u32, batch_wait_us: u32) -> Driver {
        Driver {
            sqpoll: features.mode == RingMode::Sqpoll,
            min_timeout: features.min_timeout,
            batch_max: batch_max.max(1),
            batch_wait_us,
            kernel_dropped_seen: 0,
        }
    }

    /// Submits `pending` without waiting (start-up: arms the first operations).
    pub fn submit(
        &mut self,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        pending: &mut Vec<squeue::Entry>,
        counters: &mut Counters,
    ) -> Result<(), Error> {
        self.flush(submitter, sq, pending, counters)?;
        self.enter(submitter, 0, None, 0, counters)
    }

    /// One loop turn's kernel work: submit `pending` and wait for completions (until
    /// `deadline` at the latest). `last_turn` is how many completions the previous turn
    /// handled. With SQPOLL and completions already waiting, no syscall at all.
    #[allow(clippy::too_many_arguments)]
    pub fn turn(
        &mut self,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        cq: &mut CompletionQueue<'_>,
        pending: &mut Vec<squeue::Entry>,
        last_turn: usize,
        deadline: Option<Instant>,
        counters: &mut Counters,
    ) -> Result<(), Error> {
        self.flush(submitter, sq, pending, counters)?;
        if self.sqpoll && {
            cq.sync();
            !CompletionQueue::is_empty(cq)
        } {
            // The poller thread submits and completions are already waiting: no syscall,
            // unless the poller went to sleep and must be woken for what we queued.
            wake_poller(submitter, sq, counters)?;
        } else {
            let now = Instant::now();
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            let (want, min_wait_us, timeout) = self.wait_policy(last_turn, timeout);
            self.enter(submitter, want, timeout, min_wait_us, counters)?;
        }
        if sq.cq_overflow() {
            counters.cq_overflows += 1;
        }
        let lost = dropped_since(self.kernel_dropped_seen, cq.overflow());
        if lost > 0 {
            self.kernel_dropped_seen = cq.overflow();
            counters.cq_dropped += u64::from(lost);
            return Err(completions_lost(lost));
        }
        Ok(())
    }

    /// How to wait this turn: `(want, min_wait_us, timeout)`.
    ///
    /// By default, for one completion: the enter returns as soon as there is anything to do,
    /// with every completion that is ready by then (with `DEFER_TASKRUN` the kernel posts them
    /// all inside this enter), and sleeps only when there is nothing, until the next timer
    /// (`timeout`). No ready completion ever waits on a timer to save a syscall; under load the
    /// batches form by themselves, because each enter collects everything that completed since
    /// the last one.
    ///
    /// With `--batch-wait-us` (opt-in, a CPU-for-latency trade; kernel-notes.md gives its
    /// price): after a busy turn, ask for up to `batch_max` completions, but return once
    /// `batch_wait_us` passed with at least one (`IORING_FEAT_MIN_TIMEOUT`, 6.12), or, on older
    /// kernels, when a timeout of `batch_wait_us` expires. That holds ready completions for up
    /// to `batch_wait_us`.
    fn wait_policy(
        &self,
        last_turn: usize,
        timeout: Option<Duration>,
    ) -> (usize, u32, Option<Duration>) {
        // A zero timeout means "do not sleep" (a shard with work of its own waiting): no
        // min-wait, which the kernel would wait out before looking at the timeout.
        if self.batch_wait_us == 0 || last_turn < BUSY_TURN || timeout == Some(Duration::ZERO) {
            return (1, 0, timeout);
        }
        let window = Duration::from_micros(u64::from(self.batch_wait_us));
        if self.min_timeout {
            // A min-wait needs a timeout beside it, or an idle ring spins through empty enters.
            let timeout = timeout.unwrap_or(Duration::from_secs(1));
            (self.batch_max as usize, self.batch_wait_us, Some(timeout))
        } else {
            let timeout = timeout.map_or(window, |d| d.min(window));
            (self.batch_max as usize, 0, Some(timeout))
        }
    }

    /// One `io_uring_enter`: submits everything queued and waits as asked.
    fn enter(
        &mut self,
        submitter: &Submitter<'_>,
        want: usize,
        timeout: Option<Duration>,
        min_wait_us: u32,
        counters: &mut Counters,
    ) -> Result<(), Error> {
        counters.enters += 1;
        counters.syscalls += 1;
        let ts = timeout.map(types::Timespec::from);
        let result = match &ts {
            Some(ts) => {
                let args = types::SubmitArgs::new()
                    .timespec(ts)
                    .min_wait_usec(min_wait_us);
                submitter.submit_with_args(want, &args)
            }
            None => submitter.submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Timeouts and signals are ordinary wake-ups; EBUSY means the CQ is full of
                // completions we have not read yet, which the next turn reads.
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                // The kernel had to drop completions (no memory for overflow entries). How many
                // shows in the queue's dropped count, which `turn` reads next.
                Some(libc::EBADR) => Ok(()),
                _ => Err(Error::io("io_uring_enter", e)),
            },
        }
    }

    /// Moves queued SQEs into the submission ring, submitting early if it fills.
    fn flush(
        &mut self,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_>,
        pending: &mut Vec<squeue::Entry>,
        counters: &mut Counters,
    ) -> Result<(), Error> {
        sq.sync();
        for sqe in pending.drain(..) {
            loop {
                // SAFETY: the memory every SQE points at outlives its operation, as whoever
                // made this driver vouched (`Driver::new`).
                if unsafe { sq.push(&sqe) }.is_ok() {
                    break;
                }
                sq.sync();
                counters.enters += 1;
                counters.syscalls += 1;
                let made_room = if self.sqpoll {
                    // The poller consumes entries on its own; wait until it has. It may have
                    // gone to sleep (idle past --sqpoll's time): then nothing consumes them
                    // until it is woken.
                    wake_poller(submitter, sq, counters)?;
                    submitter.squeue_wait()
                } else {
                    submitter.submit()
                };
                match made_room {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) => return Err(Error::io("io_uring_enter (submit)", e)),
                }
                sq.sync();
            }
        }
        sq.sync();
        Ok(())
    }
}

/// With SQPOLL: wakes the poller thread if it has gone to sleep (`IORING_SQ_NEED_WAKEUP`;
/// `submit` then enters with `IORING_ENTER_SQ_WAKEUP`), so it consumes what is queued.
fn wake_poller(
    submitter: &Submitter<'_>,
    sq: &SubmissionQueue<'_>,
    counters: &mut Counters,
) -> Result<(), Error> {
    if sq.need_wakeup() {
        counters.enters += 1;
        counters.syscalls += 1;
        submitter
            .submit()
            .map_err(|e| Error::io("io_uring_enter (wake poller)", e))?;
    }
    Ok(())
}

/// Completions the kernel dropped since its dropped count read `seen` (it wraps).
fn dropped_since(seen: u32, now: u32) -> u32 {
    now.wrapping_sub(seen)
}

/// The error a shard stops with once the kernel has dropped completions. A lost completion
/// leaves the books wrong for good: an operation count that never reaches zero (a connection
/// that can never close), or, with incremental buffers, every later fill offset shifted (wrong
/// bytes to the wrong client). Carrying on would be worse than stopping.
fn completions_lost(n: u32) -> Error {
    Error::io(
        format!(
            "the kernel dropped {n} completion(s) (no memory for the completion queue's \
             overflow list); the shard's bookkeeping can no longer be trusted, so it stops"
        ),
        std::io::Error::from_raw_os_error(libc::EBADR),
    )
}

/// Hands every completion in the queue to `handle`, publishing the head as it goes so the
/// kernel can post into the freed space; returns how many.
pub(crate) fn reap(cq: &mut CompletionQueue<'_>, mut handle: impl FnMut(cqueue::Entry)) -> usize {
    let mut handled = 0;
    cq.sync();
    while let Some(cqe) = cq.next() {
        handle(cqe);
        handled += 1;
        if CompletionQueue::is_empty(cq) {
            cq.sync();
        }
    }
    handled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_never_waits_out_a_batch() {
        let d = Driver {
            sqpoll: false,
            min_timeout: true,
            batch_max: 64,
            batch_wait_us: 50,
            kernel_dropped_seen: 0,
        };
        assert_eq!(
            d.wait_policy(100, Some(Duration::ZERO)),
            (1, 0, Some(Duration::ZERO))
        );
        assert_eq!(d.wait_policy(100, None).0, 64, "a busy turn batches");
        assert_eq!(d.wait_policy(100, None).1, 50);
    }

    #[test]
    fn any_dropped_completion_is_fatal_and_counted_once() {
        assert_eq!(dropped_since(7, 7), 0);
        assert_eq!(dropped_since(7, 9), 2);
        assert_eq!(dropped_since(u32::MAX, 1), 2, "the kernel's count wraps");
        let line = completions_lost(2).to_string();
        assert!(line.contains("dropped 2") && !line.contains('\n'), "{line}");
    }
}
