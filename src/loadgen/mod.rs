//! `ringecho bench`: a load generator for TCP echo servers that checks every byte and reports
//! latency honestly.
//!
//! # Tour
//!
//! - [`args`]: the flags (`--help` text lives there, including what each mode measures).
//! - [`pattern`]: the bytes each connection sends, and the cheap check of what comes back.
//! - [`flow`]: one connection's conversation (no syscalls): what to send, what must come back,
//!   when each message started and finished. Every transport drives the same `Flow`.
//! - [`framing`]: the stream of frames `--framed` sends, and the check that every frame
//!   boundary comes back where it was.
//! - [`client`]: one worker thread's loop over a [`client::Transport`]: paced connects,
//!   reconciliation after each wait, timeouts, stop, drain, close.
//! - [`uring`] and [`epoll`]: the two transports; [`blocking`]: the one-thread-per-connection
//!   baseline used for comparison. [`ring`]: what the io_uring transports (TCP and UDP) share,
//!   the ring, the server's own driver and buffer ring, the `user_data` encoding; `poller.rs`:
//!   the epoll instance the epoll ones wait on.
//! - [`udp`]: `--udp`, the same shape for datagram sockets: its own per-socket bookkeeping
//!   (sequence numbers, loss), client loop and io_uring and epoll transports.
//! - [`worker`]: what workers report (per-second latency histograms, tallies) and the open-loop
//!   schedule.
//! - This module: the coordinator. [`run`] reads as a run goes: it starts the workers, waits
//!   until all are connected, gives them one common timeline, merges their per-second
//!   histograms as they arrive (progress line, `--hlog`), samples CPU clocks at the window's
//!   edges, and writes the report.

pub mod args;
pub mod blocking;
pub mod client;
pub mod cpu;
pub mod epoll;
pub mod flow;
pub mod framing;
pub mod hlog;
pub mod pattern;
mod poller;
pub mod report;
pub mod ring;
pub mod svg;
pub mod udp;
pub mod uring;
pub mod worker;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

pub use args::{BenchArgs, ClientBackend};
pub use report::{JSON_FIELDS, Report};

use client::Client;
use cpu::{CpuSample, CpuUse};
use worker::{FromWorker, Tally, Timeline, ToWorker, WorkerCtx, WorkerPlan, new_hist};

use crate::error::Error;
use crate::sys;

/// How a run ended: the report, and the line to exit 1 with if it failed.
pub struct Outcome {
    /// Everything measured.
    pub report: Report,
    /// Why the run failed (verification, connection errors), if it did.
    pub failure: Option<String>,
    /// SIGINT/SIGTERM ended the run early (the report covers the shortened window).
    pub interrupted: bool,
}

/// How often the coordinator looks for SIGINT/SIGTERM while it waits.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Runs a benchmark as `args` says, writing the summary (or JSON) to `out`. Errors are what
/// stops a run from starting or finishing (io_uring unavailable, an output file); a run that
/// went wrong (wrong bytes, failed connections) is an `Outcome` with a `failure`.
///
/// Installs SIGINT/SIGTERM handlers for the process: the first signal ends the measured window
/// early (connections drain, the report covers what was measured), a second one exits at once.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<Outcome, Error> {
    let signals = prepare(args)?;
    // Output files are opened first: a typo in a path should not cost a whole run.
    let mut files = OutputFiles::create(args)?;
    let mut workers = Workers::spawn(args)?;
    let mut co = Coordinator::new(workers.count);

    let mut interrupted = connect_phase(&mut co, &workers, &signals);
    let established: u64 = co.established.iter().flatten().sum();
    // With --start-at: when measuring starts, in ns since `base`, and a line if it is too late.
    let planned = args.start_at.map(|at| since_base_ns(at, workers.wall_base));
    let mut late = None;
    if let Some(t_warm) = planned
        && established > 0
        && co.error.is_none()
        && !interrupted
    {
        match wait_for_start_at(&mut co, &workers, &signals, args, t_warm, established) {
            Ok(signalled) => interrupted = signalled,
            Err(line) => late = Some(line),
        }
    }
    let timeline = if established == 0 || co.error.is_some() || interrupted || late.is_some() {
        workers.stop_all();
        None
    } else {
        Some(workers.go(args, &co.established, planned))
    };

    let mut hlog_ser = V2DeflateSerializer::new();
    let mut hlog = match (timeline, files.hlog.as_mut()) {
        (Some(tl), Some(f)) => {
            let start = workers.wall_base + Duration::from_nanos(tl.t_warm);
            Some(hlog_writer(f, &mut hlog_ser, args, workers.count, start)?)
        }
        _ => None,
    };
    let (window, cpu_use) = traffic_phase(
        &mut co,
        &workers,
        &signals,
        timeline,
        hlog.as_mut(),
        args,
        &mut interrupted,
    );
    workers.join(&mut co);
    co.finalize_all(hlog.as_mut(), window.0, workers.base);
    if co.printed_progress {
        eprintln!();
    }
    drop(hlog);
    if let Some(e) = co.error {
        return Err(e);
    }

    let tally = co.tally;
    let failure = late.or_else(|| failure_line(&tally, args));
    let report = Report {
        args: args.clone(),
        threads: workers.count,
        kernel: sys::kernel_release(),
        hist: co.total,
        // (0, 0) if traffic never started.
        window_secs: window.1.saturating_sub(window.0) as f64 / 1e9,
        tally,
        cpu: cpu_use,
        failure: failure.clone(),
    };
    files.write(&report)?;
    write_report(&report, args, out)?;
    Ok(Outcome {
        report,
        failure,
        interrupted,
    })
}

/// Before anything starts: checks the flags, prints their notes, installs the signal
/// handlers (returning the eventfd they signal), raises the descriptor limit and, for
/// `--backend uring`, checks that io_uring works here.
fn prepare(args: &BenchArgs) -> Result<OwnedFd, Error> {
    args.validate().map_err(Error::Config)?;
    for note in args.notes() {
        eprintln!("ringecho bench: {note}");
    }
    let signals = sys::eventfd().map_err(|e| Error::io("cannot create eventfd", e))?;
    // Also ignores SIGPIPE: a server that vanished is an error on one connection.
    sys::install_shutdown_signals(signals.as_raw_fd())
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    // Each connection is a descriptor; the soft limit is often 1024.
    let _ = sys::raise_nofile_limit();
    if args.backend == ClientBackend::Uring {
        uring::probe(args.ring_mode)?;
    }
    Ok(signals)
}

/// Whether SIGINT or SIGTERM came since the last look.
fn signalled(signals: &OwnedFd) -> bool {
    sys::eventfd_take(signals.as_raw_fd())
}

/// The files `--hgrm`, `--hlog` and `--svg` name.
struct OutputFiles {
    hgrm: Option<BufWriter<File>>,
    hlog: Option<BufWriter<File>>,
    svg: Option<BufWriter<File>>,
}

impl OutputFiles {
    fn create(args: &BenchArgs) -> Result<OutputFiles, Error> {
        let create = |path: Option<&Path>, what: &str| {
            path.map(|p| {
                File::create(p)
                    .map(BufWriter::new)
                    .map_err(|e| Error::io(format!("cannot create {what} file {}", p.display()), e))
            })
            .transpose()
        };
        Ok(OutputFiles {
            hgrm: create(args.hgrm.as_deref(), "--hgrm")?,
            hlog: create(args.hlog.as_deref(), "--hlog")?,
            svg: create(args.svg.as_deref(), "--svg")?,
        })
    }

    /// Writes the histogram and the chart, and flushes the interval log (written as the run
    /// went).
    fn write(&mut self, report: &Report) -> Result<(), Error> {
        if let Some(f) = self.hgrm.as_mut() {
            report::write_hgrm(&report.hist, f)
                .and_then(|()| f.flush())
                .map_err(|e| Error::io("cannot write --hgrm file", e))?;
        }
        if let Some(f) = self.hlog.as_mut() {
            f.flush()
                .map_err(|e| Error::io("cannot write --hlog file", e))?;
        }
        if let Some(f) = self.svg.as_mut() {
            let (title, subtitle) = report.chart_titles();
            let chart = svg::latency_chart(
                &title,
                &subtitle,
                &[svg::Curve::of("latency", &report.hist)],
            );
            f.write_all(chart.as_bytes())
                .and_then(|()| f.flush())
                .map_err(|e| Error::io("cannot write --svg file", e))?;
        }
        Ok(())
    }
}

/// The summary (or with `--json`, the JSON line) on `out`; nothing if no connection was made.
fn write_report(report: &Report, args: &BenchArgs, out: &mut dyn Write) -> Result<(), Error> {
    let written = if args.json {
        writeln!(out, "{}", report.json())
    } else if report.tally.established > 0 {
        write!(out, "{}", report.summary())
    } else {
        Ok(())
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write the report", e))
}

/// The worker threads and the coordinator's lines to them.
struct Workers {
    count: usize,
    /// The time origin every thread shares (times are ns since it), and the wall clock then.
    base: Instant,
    wall_base: SystemTime,
    abort: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    rx: Receiver<FromWorker>,
    /// Dropped once each worker has its go (or stop): nothing follows.
    to_workers: Vec<Sender<ToWorker>>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `args.worker_count()` threads, each with its share of the connections and of the
    /// connect rate; each one connects at once.
    fn spawn(args: &BenchArgs) -> Result<Workers, Error> {
        let workers = args.worker_count();
        let plan = Arc::new(WorkerPlan {
            addr: args.addr,
            size: args.size,
            depth: args.depth,
            verify: !args.no_verify,
            framed: args.framed,
            udp: args.udp,
            loss_timeout: args.loss_timeout(),
            timeout: args.timeout,
            connect_rate: args.connect_rate / workers as f64,
        });
        let base = Instant::now();
        let wall_base = SystemTime::now();
        let abort = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::with_capacity(workers);
        let mut to_workers = Vec::with_capacity(workers);
        for w in 0..workers {
            let (wtx, wrx) = mpsc::channel();
            to_workers.push(wtx);
            let n = args.conns as usize;
            let conns = (n * w / workers) as u64..(n * (w + 1) / workers) as u64;
            let ctx = WorkerCtx {
                index: w,
                conns,
                plan: Arc::clone(&plan),
                base,
                tx: tx.clone(),
                rx: wrx,
                abort: Arc::clone(&abort),
                stop: Arc::clone(&stop),
            };
            let backend = args.backend;
            let ring_mode = args.ring_mode;
            let connect_gap = 1e9 / args.connect_rate;
            let h = thread::Builder::new()
                .name(format!("bench-{w}"))
                .stack_size(if backend == ClientBackend::Threads {
                    256 << 10
                } else {
                    2 << 20
                })
                .spawn(move || {
                    // Scheduled sends and interval boundaries want on-time wake-ups, not 50 µs
                    // late.
                    let _ = sys::set_timer_slack_ns(1);
                    if let Err(error) = run_worker(&ctx, backend, ring_mode, connect_gap) {
                        let _ = ctx.tx.send(FromWorker::Failed { worker: w, error });
                        let _ = ctx.tx.send(FromWorker::Finished {
                            worker: w,
                            tally: Box::default(),
                        });
                    }
                })
                .map_err(|e| Error::io("cannot start a client thread", e))?;
            handles.push(h);
        }
        Ok(Workers {
            count: workers,
            base,
            wall_base,
            abort,
            stop,
            rx,
            to_workers,
            handles,
        })
    }

    /// Now, in ns since `base`.
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// No traffic: every worker closes its connections and finishes.
    fn stop_all(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.to_workers) {
            let _ = t.send(ToWorker::Stop);
        }
    }

    /// Starts traffic on one common timeline: now (or, with `--start-at`, so that measuring
    /// starts at `planned`), each worker's share of `--rate` in proportion to the connections
    /// it `established`. Returns the timeline.
    fn go(
        &mut self,
        args: &BenchArgs,
        established: &[Option<u64>],
        planned: Option<u64>,
    ) -> Timeline {
        let now = self.now();
        let (t0, t_warm) = match planned {
            Some(t_warm) => (now.min(t_warm), t_warm),
            None => (now, now + args.warmup.as_nanos() as u64),
        };
        let timeline = Timeline {
            t0,
            t_warm,
            t_end: t_warm + args.duration.as_nanos() as u64,
        };
        let total: u64 = established.iter().flatten().sum();
        for (w, t) in std::mem::take(&mut self.to_workers).into_iter().enumerate() {
            let mine = established[w].unwrap_or(0);
            let _ = t.send(ToWorker::Go {
                timeline,
                rate: args.rate.map(|r| r * mine as f64 / total as f64),
                phase: w as f64 / self.count as f64,
            });
        }
        timeline
    }

    /// Waits for every thread to end; a panic is the run's error.
    fn join(&mut self, co: &mut Coordinator) {
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                co.error
                    .get_or_insert(Error::Config("a client thread panicked".into()));
            }
        }
    }
}

/// The connect phase: every worker reports once it has connected (or failed) everything.
/// True if a signal cut it short.
fn connect_phase(co: &mut Coordinator, workers: &Workers, signals: &OwnedFd) -> bool {
    while co
        .established
        .iter()
        .zip(&co.finished)
        .any(|(e, f)| e.is_none() && !f)
    {
        if signalled(signals) {
            return true;
        }
        if !co.receive(&workers.rx, SIGNAL_POLL) {
            break;
        }
    }
    false
}

/// `--start-at` (Unix time, seconds) in ns since `wall_base` (0 if already past).
fn since_base_ns(at: f64, wall_base: SystemTime) -> u64 {
    let since_base = at
        - wall_base
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    (since_base.max(0.0) * 1e9) as u64
}

/// With `--start-at`: waits, connections open and idle, until traffic must start for
/// measuring to begin at `t_warm` (ns since `base`). True if a signal came first; `Err` with
/// the run's failure line if connecting took past `t_warm`.
fn wait_for_start_at(
    co: &mut Coordinator,
    workers: &Workers,
    signals: &OwnedFd,
    args: &BenchArgs,
    t_warm: u64,
    established: u64,
) -> Result<bool, String> {
    let now = workers.now();
    let start_at = args.start_at.unwrap_or_default();
    if now > t_warm {
        return Err(format!(
            "connecting took until {:.1} s after --start-at {start_at}: no common window; \
             start later (or lower --conns, raise --connect-rate)",
            (now - t_warm) as f64 / 1e9,
        ));
    }
    let warmup_ns = args.warmup.as_nanos() as u64;
    eprintln!(
        "ringecho bench: {established} connections established; traffic starts in {:.1} s, \
         measuring at {start_at}",
        t_warm.saturating_sub(warmup_ns).saturating_sub(now) as f64 / 1e9,
    );
    let t0 = t_warm.saturating_sub(warmup_ns);
    loop {
        let now = workers.now();
        if now >= t0 {
            return Ok(false);
        }
        if signalled(signals) {
            return Ok(true);
        }
        let wait = Duration::from_nanos(t0 - now).min(SIGNAL_POLL);
        if !co.receive(&workers.rx, wait) {
            return Ok(false);
        }
    }
}

/// Starts the `--hlog` file: its header comments, and `start` (when measuring started) as
/// the log's time origin.
fn hlog_writer<'a, 'b>(
    f: &'a mut BufWriter<File>,
    ser: &'b mut V2DeflateSerializer,
    args: &BenchArgs,
    workers: usize,
    start: SystemTime,
) -> Result<HlogWriter<'a, 'b>, Error> {
    IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "[Logged with ringecho bench {}: {} conns x {} B{}, depth {}, {}]",
            env!("CARGO_PKG_VERSION"),
            args.conns,
            args.size,
            if args.udp {
                " UDP datagrams"
            } else if args.framed {
                " frames"
            } else {
                ""
            },
            args.depth,
            match args.rate {
                Some(r) => format!("open loop {r} msgs/s"),
                None => "closed loop".into(),
            }
        ))
        .add_comment(&hlog::settings_comment(args, workers))
        .add_comment("[Histogram log format version 1.3]")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1e6)
        .begin_log_with(f, ser)
        .map_err(|e| Error::io("cannot write --hlog file", e))
}

/// Traffic, drain and close: merges intervals as they come, until every worker has finished,
/// and reads the CPU clocks at the measured window's edges. A signal ends the window early
/// (`interrupted`). Returns the window (ns since `base`; it ends early if the run did) and
/// the CPU used over it.
fn traffic_phase(
    co: &mut Coordinator,
    workers: &Workers,
    signals: &OwnedFd,
    timeline: Option<Timeline>,
    mut hlog: Option<&mut HlogWriter<'_, '_>>,
    args: &BenchArgs,
    interrupted: &mut bool,
) -> ((u64, u64), CpuUse) {
    let started = timeline.is_some();
    let mut window = timeline.map_or((0, 0), |tl| (tl.t_warm, tl.t_end));
    let mut cpu_from: Option<CpuSample> =
        (started && args.warmup.is_zero()).then(|| cpu::sample(args.server_pid));
    let mut cpu_to: Option<CpuSample> = None;
    loop {
        if !*interrupted && signalled(signals) {
            *interrupted = true;
            workers.stop.store(true, Ordering::Relaxed);
        }
        let now = workers.now();
        let all_done = co.finished.iter().all(|&f| f);
        if started {
            if cpu_from.is_none() && now >= window.0 {
                cpu_from = Some(cpu::sample(args.server_pid));
            }
            if cpu_to.is_none()
                && (now >= window.1
                    || all_done
                    || workers.abort.load(Ordering::Relaxed)
                    || *interrupted)
            {
                cpu_to = Some(cpu::sample(args.server_pid));
                window.1 = window.1.min(now);
            }
        }
        if all_done {
            break;
        }
        let next_edge = if cpu_from.is_none() {
            window.0
        } else if cpu_to.is_none() {
            window.1
        } else {
            now + 1_000_000_000
        };
        let wait =
            Duration::from_nanos(next_edge.saturating_sub(now).max(1_000_000)).min(SIGNAL_POLL);
        if !co.receive(&workers.rx, wait) {
            break;
        }
        co.finalize(hlog.as_deref_mut(), window.0, workers.base);
    }
    let cpu_use = match (cpu_from, cpu_to) {
        (Some(a), Some(b)) => CpuUse::between(&a, &b),
        _ => CpuUse::default(),
    };
    (window, cpu_use)
}

/// Runs one worker thread.
fn run_worker(
    ctx: &WorkerCtx,
    backend: ClientBackend,
    ring_mode: crate::backend::uring::RingMode,
    connect_gap_ns: f64,
) -> Result<(), Error> {
    let n = (ctx.conns.end - ctx.conns.start) as usize;
    if ctx.plan.udp {
        match backend {
            ClientBackend::Uring => {
                let t = udp::uring::UdpUring::new(&ctx.plan, n, ring_mode)?;
                // Dropped here, on the thread that created its ring.
                drop(udp::run(ctx, t)?);
            }
            ClientBackend::Epoll => drop(udp::run(ctx, udp::epoll::UdpEpoll::new(&ctx.plan, n)?)?),
            ClientBackend::Threads => {
                return Err(Error::Config("--backend threads is TCP only".into()));
            }
        }
        return Ok(());
    }
    match backend {
        ClientBackend::Uring => {
            let t = uring::UringTransport::new(&ctx.plan, n, ring_mode)?;
            // The transport is dropped here, on the thread that created its ring.
            drop(Client::new(ctx, t).run()?);
        }
        ClientBackend::Epoll => {
            let t = epoll::EpollTransport::new(&ctx.plan, n)?;
            drop(Client::new(ctx, t).run()?);
        }
        ClientBackend::Threads => {
            let at = (ctx.index as f64 * connect_gap_ns) as u64;
            blocking::run(ctx, at);
        }
    }
    Ok(())
}

/// The line a failed run exits with, if it failed.
fn failure_line(t: &Tally, args: &BenchArgs) -> Option<String> {
    if t.established == 0 {
        return Some(
            t.first_connect_error
                .clone()
                .unwrap_or_else(|| format!("no connection to {} could be established", args.addr)),
        );
    }
    if let Some(v) = &t.first_verify_error {
        return Some(v.clone());
    }
    if args.udp && t.msgs_received == 0 && t.msgs_sent > 0 && t.errors() == 0 {
        return Some(format!(
            "no datagram came back from {}: {} sent, all lost (is a UDP echo server listening \
             there? does it echo {}-byte datagrams?)",
            args.addr, t.msgs_sent, args.size
        ));
    }
    let n = t.errors();
    if n == 0 {
        return None;
    }
    let first = t
        .first_error
        .as_ref()
        .or(t.first_connect_error.as_ref())
        .cloned()
        .unwrap_or_default();
    Some(format!(
        "{n} connection failure{} (first: {first})",
        if n == 1 { "" } else { "s" }
    ))
}

type HlogWriter<'a, 'b> = hdrhistogram::serialization::interval_log::IntervalLogWriter<
    'a,
    'b,
    BufWriter<File>,
    V2DeflateSerializer,
>;

/// The coordinator's bookkeeping.
struct Coordinator {
    workers: usize,
    /// Connections each worker established (`None` until it reports).
    established: Vec<Option<u64>>,
    finished: Vec<bool>,
    /// The next interval each worker will report.
    next_interval: Vec<u32>,
    /// Intervals being merged: start, end, histogram.
    intervals: BTreeMap<u32, (u64, u64, Histogram<u64>)>,
    next_final: u32,
    total: Histogram<u64>,
    tally: Tally,
    error: Option<Error>,
    progress: bool,
    printed_progress: bool,
}

impl Coordinator {
    fn new(workers: usize) -> Coordinator {
        Coordinator {
            workers,
            established: vec![None; workers],
            finished: vec![false; workers],
            next_interval: vec![0; workers],
            intervals: BTreeMap::new(),
            next_final: 0,
            total: new_hist(),
            tally: Tally::default(),
            error: None,
            progress: io::stderr().is_terminal(),
            printed_progress: false,
        }
    }

    /// Handles what the workers say within `wait`; false once every worker has hung up.
    fn receive(&mut self, rx: &Receiver<FromWorker>, wait: Duration) -> bool {
        match rx.recv_timeout(wait) {
            Ok(m) => {
                self.handle(m);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }

    fn handle(&mut self, m: FromWorker) {
        match m {
            FromWorker::Connected {
                worker,
                established,
            } => self.established[worker] = Some(established),
            FromWorker::Interval {
                worker,
                index,
                start,
                end,
                hist,
            } => {
                self.next_interval[worker] = index + 1;
                let e = self
                    .intervals
                    .entry(index)
                    .or_insert_with(|| (start, end, new_hist()));
                e.1 = e.1.max(end);
                // Same bounds on both sides: adding cannot fail.
                let _ = e.2.add(&*hist);
            }
            FromWorker::Finished { worker, tally } => {
                self.finished[worker] = true;
                self.tally.add(&tally);
            }
            FromWorker::Failed { error, .. } => {
                self.error.get_or_insert(error);
            }
        }
    }

    /// Completes every interval that all workers have reported (or finished before).
    fn finalize(&mut self, mut hlog: Option<&mut HlogWriter<'_, '_>>, t_warm: u64, base: Instant) {
        loop {
            let idx = self.next_final;
            let ready = (0..self.workers).all(|w| self.finished[w] || self.next_interval[w] > idx);
            if !ready {
                return;
            }
            let Some((start, end, hist)) = self.intervals.remove(&idx) else {
                return;
            };
            self.next_final += 1;
            let _ = self.total.add(&hist);
            if let Some(log) = hlog.as_deref_mut() {
                let _ = log.write_histogram(
                    &hist,
                    Duration::from_nanos(start.saturating_sub(t_warm)),
                    Duration::from_nanos(end.saturating_sub(start)),
                    None,
                );
            }
            if self.progress {
                let secs = (end - start) as f64 / 1e9;
                let rate = if secs > 0.0 {
                    hist.len() as f64 / secs
                } else {
                    0.0
                };
                let p99 = self.total.value_at_quantile(0.99) as f64 / 1000.0;
                let elapsed = base.elapsed().as_secs_f64();
                eprint!(
                    "\r\x1b[K[{elapsed:6.1}s] {:>10.0} msgs/s  p99 so far {p99:.1} µs",
                    rate
                );
                self.printed_progress = true;
            }
        }
    }

    fn finalize_all(&mut self, hlog: Option<&mut HlogWriter<'_, '_>>, t_warm: u64, base: Instant) {
        // Every worker finished: whatever is left is complete.
        self.finished.iter_mut().for_each(|f| *f = true);
        let mut hlog = hlog;
        while !self.intervals.is_empty() {
            let first = *self.intervals.keys().next().expect("not empty");
            self.next_final = first;
            self.finalize(hlog.as_deref_mut(), t_warm, base);
        }
    }
}
