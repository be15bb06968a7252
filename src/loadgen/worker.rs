//! What every client worker thread shares, whatever moves its bytes: its context, the messages
//! it exchanges with the coordinating thread, latency recording in per-second intervals, and
//! the tally of what happened.
//!
//! # The timeline of a run
//!
//! ```text
//!  spawn ── connect phase ──▶ Connected ──(all workers)──▶ Go(t0) ── warmup ── t_warm ── measured ── t_end ── drain, close ──▶ Finished
//! ```
//!
//! Times are nanoseconds since one `Instant` (`base`) shared by every thread, so intervals
//! recorded by different workers line up without any clock exchange.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::flow::Fault;
use crate::error::Error;

/// Latencies are recorded in nanoseconds (what HdrHistogram's Java tools assume for logs),
/// from 1 ns up to an hour, to 3 significant digits.
pub const HIST_MAX_NS: u64 = 3_600_000_000_000;

/// An empty latency histogram with ringecho's bounds.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("static histogram bounds are valid")
}

/// Length of one recorded interval.
pub const INTERVAL_NS: u64 = 1_000_000_000;

/// The run's phases, in ns since the shared base instant.
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    /// Traffic starts.
    pub t0: u64,
    /// Warmup ends; recording starts.
    pub t_warm: u64,
    /// Recording ends; no new messages after this.
    pub t_end: u64,
}

/// What a worker needs to know about the run.
#[derive(Clone, Debug)]
pub struct WorkerPlan {
    /// Server address.
    pub addr: SocketAddr,
    /// Message size in bytes.
    pub size: u64,
    /// Messages in flight per connection.
    pub depth: u32,
    /// Check echoed bytes.
    pub verify: bool,
    /// Each message is a frame of the framed protocol (`--framed`).
    pub framed: bool,
    /// UDP (`--udp`): each connection is a datagram socket, each message one datagram.
    pub udp: bool,
    /// UDP: a datagram not echoed this long after it was sent is lost.
    pub loss_timeout: Duration,
    /// No progress for this long fails a connection.
    pub timeout: Duration,
    /// New connections per second, this worker's share.
    pub connect_rate: f64,
}

/// The coordinator's word to a worker.
#[derive(Debug)]
pub enum ToWorker {
    /// Start traffic. `rate` is this worker's share of `--rate` (open loop), `phase` a fraction
    /// of one schedule step to offset it from other workers.
    Go {
        /// The run's phases.
        timeline: Timeline,
        /// Messages per second for this worker (open loop), or `None` (closed loop).
        rate: Option<f64>,
        /// Offset of this worker's schedule, as a fraction of one step.
        phase: f64,
    },
    /// Do not start; close and finish.
    Stop,
}

/// A worker's word to the coordinator.
#[derive(Debug)]
pub enum FromWorker {
    /// The connect phase is over.
    Connected {
        /// Worker index.
        worker: usize,
        /// Connections established.
        established: u64,
    },
    /// One interval's latencies. Intervals arrive in order, and every worker reports every
    /// interval up to the end of the run unless it finishes early.
    Interval {
        /// Worker index.
        worker: usize,
        /// Interval number, from 0 at `t_warm`.
        index: u32,
        /// Start, ns.
        start: u64,
        /// End, ns.
        end: u64,
        /// Latencies of messages completed in the interval.
        hist: Box<Histogram<u64>>,
    },
    /// The worker is done (sent last).
    Finished {
        /// Worker index.
        worker: usize,
        /// Its tally.
        tally: Box<Tally>,
    },
    /// The worker could not run at all.
    Failed {
        /// Worker index.
        worker: usize,
        /// Why.
        error: Error,
    },
}

/// One worker's context.
pub struct WorkerCtx {
    /// Worker index.
    pub index: usize,
    /// Connection numbers (across the whole run) this worker owns.
    pub conns: std::ops::Range<u64>,
    /// The run's settings.
    pub plan: Arc<WorkerPlan>,
    /// Shared time origin.
    pub base: Instant,
    /// To the coordinator.
    pub tx: Sender<FromWorker>,
    /// From the coordinator.
    pub rx: Receiver<ToWorker>,
    /// Set by whoever finds a verification failure (or by the coordinator): every worker stops
    /// and closes its connections at once.
    pub abort: Arc<AtomicBool>,
    /// Set by the coordinator on SIGINT/SIGTERM: end the measured window now, drain, close.
    pub stop: Arc<AtomicBool>,
}

impl WorkerCtx {
    /// Now, in ns since the shared base.
    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Whether the run is being aborted.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Whether the window should end now (interrupted).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Aborts the run for every worker.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
    }
}

/// Records latencies of messages completed inside the measured window, one histogram per
/// second, each sent to the coordinator as soon as its second is over.
pub struct Recorder {
    worker: usize,
    tx: Sender<FromWorker>,
    hist: Box<Histogram<u64>>,
    window: Option<(u64, u64)>,
    index: u32,
    interval_start: u64,
    next_boundary: u64,
    done: bool,
}

impl Recorder {
    /// A recorder that records nothing until [`start`](Self::start).
    pub fn new(worker: usize, tx: Sender<FromWorker>) -> Recorder {
        Recorder {
            worker,
            tx,
            hist: Box::new(new_hist()),
            window: None,
            index: 0,
            interval_start: 0,
            next_boundary: u64::MAX,
            done: false,
        }
    }

    /// Arms the measured window.
    pub fn start(&mut self, tl: &Timeline) {
        self.window = Some((tl.t_warm, tl.t_end));
        self.interval_start = tl.t_warm;
        self.next_boundary = (tl.t_warm + INTERVAL_NS).min(tl.t_end);
        self.done = tl.t_end <= tl.t_warm;
    }

    /// Records a message that started at `start` and completed at `now`, if `now` is inside
    /// the window. Call [`tick`](Self::tick) with the same `now` first.
    #[inline]
    pub fn record(&mut self, now: u64, start: u64) {
        if let Some((from, to)) = self.window
            && now >= from
            && now < to
        {
            self.hist
                .saturating_record(now.saturating_sub(start).max(1));
        }
    }

    /// Sends every interval that ended by `now`.
    pub fn tick(&mut self, now: u64) {
        while !self.done && now >= self.next_boundary {
            self.flush(self.next_boundary);
        }
    }

    /// Ends the measured window at `now` if it has not ended yet (the run stops early):
    /// completions during the drain that follows are not recorded.
    pub fn end_window(&mut self, now: u64) {
        if let Some((from, to)) = &mut self.window
            && now < *to
        {
            *to = now.max(*from);
            self.next_boundary = self.next_boundary.min(*to);
            if self.interval_start >= *to {
                self.done = true;
            }
            self.tick(now);
        }
    }

    /// When the current interval ends (to wake up for it), if recording.
    pub fn next_boundary(&self) -> Option<u64> {
        (!self.done && self.window.is_some()).then_some(self.next_boundary)
    }

    /// Sends what is left: intervals that ended, and the current one cut at `now` if the worker
    /// stops before the window ends.
    pub fn finish(&mut self, now: u64) {
        self.tick(now);
        if !self.done && self.window.is_some() && now > self.interval_start {
            self.flush(now);
        }
        self.done = true;
    }

    fn flush(&mut self, end: u64) {
        let Some((_, t_end)) = self.window else {
            return;
        };
        let hist = std::mem::replace(&mut self.hist, Box::new(new_hist()));
        let _ = self.tx.send(FromWorker::Interval {
            worker: self.worker,
            index: self.index,
            start: self.interval_start,
            end,
            hist,
        });
        self.index += 1;
        self.interval_start = end;
        self.next_boundary = (end + INTERVAL_NS).min(t_end);
        if end >= t_end {
            self.done = true;
        }
    }
}

/// Kinds of failure, each counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Connect got `ECONNREFUSED`.
    Refused,
    /// Connect failed otherwise (unreachable, out of sockets, ...).
    ConnectError,
    /// Connect did not finish within `--timeout`.
    ConnectTimeout,
    /// The connection was reset (`ECONNRESET`, `EPIPE`).
    Reset,
    /// The server closed before echoing every byte (or mid-run).
    ShortRead,
    /// No echo for `--timeout` with bytes outstanding.
    Timeout,
    /// Wrong bytes, or more bytes than were sent.
    Verify,
    /// Any other error on an established connection.
    Other,
}

/// What one worker counted. Summed across workers by the coordinator.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Connections established.
    pub established: u64,
    /// Connect refused.
    pub refused: u64,
    /// Other connect errors.
    pub connect_errors: u64,
    /// Connects that timed out.
    pub connect_timeouts: u64,
    /// Resets.
    pub resets: u64,
    /// Early closes by the server.
    pub short_reads: u64,
    /// Established connections that timed out.
    pub timeouts: u64,
    /// Verification failures.
    pub verify_errors: u64,
    /// Other errors.
    pub other_errors: u64,
    /// Messages sent in full (whole run).
    pub msgs_sent: u64,
    /// Messages echoed in full (whole run).
    pub msgs_received: u64,
    /// UDP: datagrams not echoed within the loss timeout (whole run).
    pub dgrams_lost: u64,
    /// UDP: echoes of datagrams already counted lost.
    pub dgrams_late: u64,
    /// UDP: echoes of datagrams already received.
    pub dgrams_duplicate: u64,
    /// UDP: echoes with a lower sequence number than one their socket already received.
    pub dgrams_reordered: u64,
    /// Syscalls the worker made inside the measured window.
    pub window_syscalls: u64,
    /// First connect failure, as a user-facing line.
    pub first_connect_error: Option<String>,
    /// First failure of an established connection, as a user-facing line.
    pub first_error: Option<String>,
    /// First verification failure.
    pub first_verify_error: Option<String>,
}

impl Tally {
    /// Counts a failure; keeps the first line of each family.
    pub fn fail(&mut self, kind: Failure, line: impl FnOnce() -> String) {
        let (count, first) = match kind {
            Failure::Refused => (&mut self.refused, &mut self.first_connect_error),
            Failure::ConnectError => (&mut self.connect_errors, &mut self.first_connect_error),
            Failure::ConnectTimeout => (&mut self.connect_timeouts, &mut self.first_connect_error),
            Failure::Reset => (&mut self.resets, &mut self.first_error),
            Failure::ShortRead => (&mut self.short_reads, &mut self.first_error),
            Failure::Timeout => (&mut self.timeouts, &mut self.first_error),
            Failure::Verify => (&mut self.verify_errors, &mut self.first_verify_error),
            Failure::Other => (&mut self.other_errors, &mut self.first_error),
        };
        *count += 1;
        if first.is_none() {
            *first = Some(line());
        }
    }

    /// Counts a fault found by a [`Flow`](super::flow::Flow).
    pub fn fault(&mut self, fault: &Fault) {
        let kind = if fault.is_verification() {
            Failure::Verify
        } else {
            Failure::ShortRead
        };
        self.fail(kind, || fault.to_string());
    }

    /// Counts a connect failure with errno-specific advice.
    pub fn connect_failed(&mut self, addr: SocketAddr, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => self.fail(Failure::Refused, || {
                format!("connection refused: is a server listening on {addr}?")
            }),
            Some(libc::ETIMEDOUT) => self.fail(Failure::ConnectTimeout, || {
                format!("connecting to {addr} timed out (is the server's listen backlog full?)")
            }),
            Some(libc::EMFILE | libc::ENFILE) => self.fail(Failure::ConnectError, || {
                format!("cannot open a socket: {e} (raise `ulimit -n` or use fewer --conns)")
            }),
            Some(libc::EADDRNOTAVAIL) => self.fail(Failure::ConnectError, || {
                format!(
                    "cannot connect to {addr}: {e} (out of local ports? widen \
                     net.ipv4.ip_local_port_range or use fewer --conns)"
                )
            }),
            _ => self.fail(Failure::ConnectError, || {
                format!("cannot connect to {addr}: {e}")
            }),
        }
    }

    /// Counts an error on an established connection.
    pub fn conn_failed(&mut self, conn: u64, e: &io::Error) {
        match e.raw_os_error() {
            Some(libc::ECONNRESET | libc::EPIPE) => self.fail(Failure::Reset, || {
                format!("connection {conn} reset by the server ({e})")
            }),
            _ => self.fail(Failure::Other, || format!("connection {conn}: {e}")),
        }
    }

    /// Every failure counted.
    pub fn errors(&self) -> u64 {
        self.connect_failures()
            + self.resets
            + self.short_reads
            + self.timeouts
            + self.verify_errors
            + self.other_errors
    }

    /// Failed connects.
    pub fn connect_failures(&self) -> u64 {
        self.refused + self.connect_errors + self.connect_timeouts
    }

    /// Adds another worker's tally (first lines: the earlier worker's win).
    pub fn add(&mut self, o: &Tally) {
        self.established += o.established;
        self.refused += o.refused;
        self.connect_errors += o.connect_errors;
        self.connect_timeouts += o.connect_timeouts;
        self.resets += o.resets;
        self.short_reads += o.short_reads;
        self.timeouts += o.timeouts;
        self.verify_errors += o.verify_errors;
        self.other_errors += o.other_errors;
        self.msgs_sent += o.msgs_sent;
        self.msgs_received += o.msgs_received;
        self.dgrams_lost += o.dgrams_lost;
        self.dgrams_late += o.dgrams_late;
        self.dgrams_duplicate += o.dgrams_duplicate;
        self.dgrams_reordered += o.dgrams_reordered;
        self.window_syscalls += o.window_syscalls;
        for (mine, theirs) in [
            (&mut self.first_connect_error, &o.first_connect_error),
            (&mut self.first_error, &o.first_error),
            (&mut self.first_verify_error, &o.first_verify_error),
        ] {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }
}

/// The open-loop schedule of one worker: its `n` connections take turns, message `j` of the
/// worker going to connection `j % n` at `start + j * interval`. Each connection then sends
/// evenly spaced messages, offset from its neighbours.
#[derive(Clone, Copy, Debug)]
pub struct Ticker {
    start: f64,
    interval: f64,
    n: u64,
    next: u64,
}

impl Ticker {
    /// A schedule of `rate` messages per second over `n` connections from `t0`, shifted by
    /// `phase` (a fraction of one interval).
    pub fn new(t0: u64, rate: f64, n: usize, phase: f64) -> Ticker {
        let interval = 1e9 / rate;
        Ticker {
            start: t0 as f64 + phase * interval,
            interval,
            n: n.max(1) as u64,
            next: 0,
        }
    }

    /// The schedule of the connection at position `pos`.
    pub fn schedule_for(&self, pos: usize) -> super::flow::Schedule {
        super::flow::Schedule {
            first: self.start + pos as f64 * self.interval,
            step: self.n as f64 * self.interval,
        }
    }

    /// Calls `due(pos)` for every message whose time has come by `now`.
    pub fn advance(&mut self, now: u64, mut due: impl FnMut(usize)) {
        while self.at(self.next) <= now {
            due((self.next % self.n) as usize);
            self.next += 1;
        }
    }

    /// When the next message is due, ns.
    pub fn next_at(&self) -> u64 {
        self.at(self.next)
    }

    fn at(&self, j: u64) -> u64 {
        (self.start + j as f64 * self.interval) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn recorder_cuts_the_window_into_seconds_and_ignores_warmup() {
        let (tx, rx) = mpsc::channel();
        let mut r = Recorder::new(3, tx);
        let s = 1_000_000_000;
        r.start(&Timeline {
            t0: 0,
            t_warm: s,
            t_end: 3 * s + s / 2,
        });
        r.tick(s / 2);
        r.record(s / 2, 0); // warmup: dropped
        r.tick(s + 10);
        r.record(s + 10, s);
        r.tick(2 * s + 5);
        r.record(2 * s + 5, 2 * s);
        r.record(2 * s + 6, 2 * s);
        r.finish(5 * s);
        let got: Vec<(u32, u64, u64, u64)> = rx
            .try_iter()
            .map(|m| match m {
                FromWorker::Interval {
                    worker: 3,
                    index,
                    start,
                    end,
                    hist,
                } => (index, start, end, hist.len()),
                _ => panic!("unexpected message"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, s, 2 * s, 1),
                (1, 2 * s, 3 * s, 2),
                (2, 3 * s, 3 * s + s / 2, 0)
            ]
        );
    }

    #[test]
    fn recorder_stopped_early_sends_a_partial_interval() {
        let (tx, rx) = mpsc::channel();
        let mut r = Recorder::new(0, tx);
        r.start(&Timeline {
            t0: 0,
            t_warm: 0,
            t_end: 10_000_000_000,
        });
        r.tick(100);
        r.record(100, 50);
        r.finish(200);
        let v: Vec<_> = rx.try_iter().collect();
        assert_eq!(v.len(), 1);
        assert!(matches!(&v[0], FromWorker::Interval { end: 200, hist, .. } if hist.len() == 1));
    }

    #[test]
    fn ending_the_window_early_stops_recording_and_flushes() {
        let (tx, rx) = mpsc::channel();
        let mut r = Recorder::new(0, tx);
        let s = 1_000_000_000;
        r.start(&Timeline {
            t0: 0,
            t_warm: 0,
            t_end: 10 * s,
        });
        r.tick(s + 1);
        r.record(s + 1, s);
        r.end_window(s + 100);
        r.record(s + 200, s); // drain: not recorded
        assert_eq!(r.next_boundary(), None);
        r.finish(2 * s);
        let got: Vec<(u32, u64, u64)> = rx
            .try_iter()
            .map(|m| match m {
                FromWorker::Interval {
                    index, end, hist, ..
                } => (index, end, hist.len()),
                _ => panic!("unexpected message"),
            })
            .collect();
        assert_eq!(got, vec![(0, s, 0), (1, s + 100, 1)]);
    }

    #[test]
    fn ticker_spreads_messages_round_robin_at_the_rate() {
        let mut t = Ticker::new(1000, 1000.0, 4, 0.0);
        let mut seen = Vec::new();
        t.advance(1000 + 3_500_000, |p| seen.push(p));
        assert_eq!(seen, vec![0, 1, 2, 3]);
        assert_eq!(t.next_at(), 1000 + 4_000_000);
        let s = t.schedule_for(1);
        assert_eq!(s.intended(0), 1000 + 1_000_000);
        assert_eq!(s.intended(1), 1000 + 5_000_000);
    }

    #[test]
    fn tally_keeps_the_first_line_of_each_family() {
        let addr: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let mut t = Tally::default();
        t.connect_failed(addr, &io::Error::from_raw_os_error(libc::ECONNREFUSED));
        t.connect_failed(addr, &io::Error::from_raw_os_error(libc::ENETUNREACH));
        t.conn_failed(4, &io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!(t.refused, 1);
        assert_eq!(t.connect_errors, 1);
        assert_eq!(t.resets, 1);
        assert_eq!(t.errors(), 3);
        assert_eq!(
            t.first_connect_error.as_deref(),
            Some("connection refused: is a server listening on 127.0.0.1:7878?")
        );
        let mut sum = Tally::default();
        sum.add(&t);
        sum.add(&t);
        assert_eq!(sum.errors(), 6);
    }
}
