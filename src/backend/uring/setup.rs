//! Ring set-up: flags tried in order, features detected once, the result kept in one struct.
//!
//! Several features ringecho uses are *flags on an opcode* (multishot recv is a flag on
//! `IORING_OP_RECV`, direct-descriptor allocation a value in the accept SQE), so an opcode probe
//! alone would report a 5.19 kernel as able to do everything. [`Features`] combines the opcode
//! probe, the `IORING_FEAT_*` bits the kernel returns from `io_uring_setup`, and the kernel
//! version for the flags that have neither.

use std::fmt;
use std::io;

use io_uring::{IoUring, Probe, opcode};

use crate::error::Error;
use crate::sys::{self, KernelVersion};

/// How completions get posted: which task-running set-up flags the ring has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum RingMode {
    /// Try `defer-taskrun`, then `coop-taskrun`, then `plain`.
    Auto,
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1): completion work runs only
    /// when the submitting thread waits for events, never as an interrupt of it.
    DeferTaskrun,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (5.19): completion work is run at
    /// the next transition into the kernel instead of by forcing one with an IPI.
    CoopTaskrun,
    /// No task-running flags: the kernel interrupts the task to post completions.
    Plain,
    /// `IORING_SETUP_SQPOLL` (chosen with `--sqpoll`, not with `--ring-mode`): a kernel thread
    /// polls the submission queue, so submitting needs no syscall while it is awake.
    #[cfg_attr(feature = "cli", value(skip))]
    Sqpoll,
}

impl fmt::Display for RingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RingMode::Auto => "auto",
            RingMode::DeferTaskrun => "defer-taskrun",
            RingMode::CoopTaskrun => "coop-taskrun",
            RingMode::Plain => "plain",
            RingMode::Sqpoll => "sqpoll",
        })
    }
}

/// Submission-queue polling by a kernel thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqPoll {
    /// The thread sleeps after this many milliseconds without submissions.
    pub idle_ms: u32,
    /// Pin the thread to this CPU (`IORING_SETUP_SQ_AFF`).
    pub cpu: Option<u32>,
}

/// Ring geometry and mode requested by the user. [`RingConfig::default`] is what the server
/// uses unless told otherwise; change fields from there:
///
/// ```
/// use ringecho::backend::uring::{RingConfig, RingMode};
///
/// let mut cfg = RingConfig::default();
/// cfg.sq_entries = 64;
/// cfg.cq_entries = 256;
/// cfg.mode = RingMode::CoopTaskrun;
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RingConfig {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries (at least `sq_entries`).
    pub cq_entries: u32,
    /// Task-running mode (ignored with `sqpoll`).
    pub mode: RingMode,
    /// Use a submission-queue polling thread instead of a task-running mode.
    pub sqpoll: Option<SqPoll>,
}

impl Default for RingConfig {
    /// 1024 submission entries, 4096 completion entries (multishot requests post many
    /// completions per submission), the best task-running mode the kernel accepts, no SQPOLL.
    fn default() -> RingConfig {
        RingConfig {
            sq_entries: 1024,
            cq_entries: 4096,
            mode: RingMode::Auto,
            sqpoll: None,
        }
    }
}

/// Most submission-queue entries the kernel accepts (`IORING_MAX_ENTRIES`).
pub const MAX_SQ_ENTRIES: u32 = 32768;
/// Most completion-queue entries the kernel accepts (`IORING_MAX_CQ_ENTRIES`).
pub const MAX_CQ_ENTRIES: u32 = 2 * MAX_SQ_ENTRIES;

impl RingConfig {
    /// Checks the sizes against what `io_uring_setup` accepts, naming the flag that is off
    /// (the kernel would only say `EINVAL`, which also means "unknown flag").
    pub fn check(&self) -> Result<(), Error> {
        if !(1..=MAX_SQ_ENTRIES).contains(&self.sq_entries) {
            return Err(Error::Config(format!(
                "--sq-entries {} must be between 1 and {MAX_SQ_ENTRIES}",
                self.sq_entries
            )));
        }
        if !(self.sq_entries..=MAX_CQ_ENTRIES).contains(&self.cq_entries) {
            return Err(Error::Config(format!(
                "--cq-entries {} must be between --sq-entries ({}) and {MAX_CQ_ENTRIES}",
                self.cq_entries, self.sq_entries
            )));
        }
        Ok(())
    }

    /// A small ring for probing.
    pub fn probe() -> RingConfig {
        RingConfig {
            sq_entries: 8,
            cq_entries: 16,
            mode: RingMode::Auto,
            sqpoll: None,
        }
    }
}

/// What this kernel and this ring can do, detected once at start-up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Features {
    /// Running kernel.
    pub kernel: KernelVersion,
    /// The mode the ring was actually created with.
    pub mode: RingMode,
    /// Actual SQ size.
    pub sq_entries: u32,
    /// Actual CQ size.
    pub cq_entries: u32,
    /// `IORING_FEAT_NODROP` (5.5): overflowed completions are kept, not dropped.
    pub nodrop: bool,
    /// `IORING_FEAT_EXT_ARG` (5.11): waits take a timeout argument.
    pub ext_arg: bool,
    /// `IORING_FEAT_MIN_TIMEOUT` (6.12): waits take a minimum batch time.
    pub min_timeout: bool,
    /// `IORING_FEAT_RECVSEND_BUNDLE` (6.10): one receive completion for several buffers.
    pub recv_bundle: bool,
    /// Multishot accept with `IORING_FILE_INDEX_ALLOC` (5.19).
    pub multishot_accept: bool,
    /// Multishot receive (`IORING_RECV_MULTISHOT`, 6.0).
    pub multishot_recv: bool,
    /// A multishot receive takes a length, capping each completion (6.17). Reported by
    /// `probe`; the server takes streams in pieces with single-shot receives instead
    /// (kernel-notes.md, "Streams in pieces").
    pub multishot_recv_cap: bool,
    /// Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19).
    pub buf_ring: bool,
    /// `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
    /// `IORING_OP_SENDMSG_ZC` (6.1): zero-copy vectored sends.
    pub sendmsg_zc: bool,
    /// `IORING_OP_ASYNC_CANCEL` matching every request with a key (`IORING_ASYNC_CANCEL_ALL`) or
    /// any request (`_ANY`), 5.19: how the server cancels accepts. (Matching by fixed fd,
    /// `_FD_FIXED`, came in 6.0; the server does not use it.)
    pub cancel_fd: bool,
    /// `IORING_REGISTER_RING_FDS` (5.18): enter by registered index, skipping an fd lookup.
    pub reg_ring_fd: bool,
    /// Incrementally consumed provided buffers (`IOU_PBUF_RING_INC`, 6.12).
    pub buf_ring_inc: bool,
    /// Closing a direct descriptor releases its socket at once, whatever older requests are
    /// in flight (6.13). Before that, one idle connection's armed receive keeps every
    /// connection closed after it open (no FIN, memory kept), so the server uses ordinary
    /// descriptors for its connections instead.
    pub direct_close: bool,
    /// The socket command `SOCKET_URING_OP_SIOCINQ` (6.7): how many bytes wait in a socket,
    /// asked without taking them or disturbing a receive armed on it.
    pub sock_inq: bool,
}

impl Features {
    /// Features every ringecho server needs; `Err` names the first missing one.
    pub fn require_server_minimum(&self) -> Result<(), Error> {
        let needs = [
            (self.ext_arg, "IORING_FEAT_EXT_ARG (5.11)"),
            (self.buf_ring, "provided-buffer rings (5.19)"),
            (
                self.multishot_accept,
                "multishot accept into direct descriptors (5.19)",
            ),
            (
                self.cancel_fd,
                "cancellation of every matching request (5.19)",
            ),
        ];
        for (have, what) in needs {
            if !have {
                return Err(Error::UringUnavailable(format!(
                    "kernel {} lacks {what}: ringecho's io_uring backend needs Linux 5.19 or newer \
                     (remedy: upgrade the kernel, or use --backend epoll)",
                    self.kernel
                )));
            }
        }
        Ok(())
    }
}

/// Creates a ring as `cfg` asks, trying task-running modes from the most to the least
/// efficient, and detects its features. Must run on the thread that will submit to it
/// (`SINGLE_ISSUER`).
pub fn build_ring(cfg: &RingConfig) -> Result<(IoUring, Features), Error> {
    cfg.check()?;
    let kernel = KernelVersion::current();
    let chain: &[RingMode] = match (cfg.sqpoll, cfg.mode) {
        // SQPOLL cannot be combined with COOP_TASKRUN/DEFER_TASKRUN (EINVAL): its own chain.
        (Some(_), _) => &[RingMode::Sqpoll],
        (None, RingMode::Auto) => &[
            RingMode::DeferTaskrun,
            RingMode::CoopTaskrun,
            RingMode::Plain,
        ],
        (None, RingMode::DeferTaskrun) => &[RingMode::DeferTaskrun],
        (None, RingMode::CoopTaskrun) => &[RingMode::CoopTaskrun],
        (None, RingMode::Plain | RingMode::Sqpoll) => &[RingMode::Plain],
    };
    let mut last_err = None;
    for &mode in chain {
        match try_mode(cfg, mode) {
            Ok(ring) => {
                let features = detect(&ring, mode, kernel);
                return Ok((ring, features));
            }
            // EINVAL: this kernel does not know a flag; try the next mode.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(unavailable(e, kernel)),
        }
    }
    Err(unavailable(
        last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
        kernel,
    ))
}

fn try_mode(cfg: &RingConfig, mode: RingMode) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(cfg.cq_entries.max(cfg.sq_entries))
        .setup_submit_all();
    match mode {
        RingMode::DeferTaskrun => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        RingMode::CoopTaskrun => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        RingMode::Sqpoll => {
            let sp = cfg.sqpoll.unwrap_or(SqPoll {
                idle_ms: 1000,
                cpu: None,
            });
            b.setup_sqpoll(sp.idle_ms);
            if let Some(cpu) = sp.cpu {
                b.setup_sqpoll_cpu(cpu);
            }
        }
        RingMode::Plain | RingMode::Auto => {}
    }
    b.build(cfg.sq_entries)
}

/// Which ring modes this kernel and process accept (each tried with a small ring).
pub fn supported_modes() -> Vec<(RingMode, bool)> {
    let cfg = RingConfig::probe();
    [
        RingMode::DeferTaskrun,
        RingMode::CoopTaskrun,
        RingMode::Plain,
        RingMode::Sqpoll,
    ]
    .into_iter()
    .map(|m| (m, try_mode(&cfg, m).is_ok()))
    .collect()
}

/// Features from the ring's own report (`IORING_FEAT_*`), the opcode probe, and trial
/// operations (see [`trials`](super::trials)) for what neither shows; the kernel version
/// only where a trial could not be set up.
fn detect(ring: &IoUring, mode: RingMode, kernel: KernelVersion) -> Features {
    let p = ring.params();
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let op = |code: u8| probed && probe.is_supported(code);
    let v519 = kernel.at_least(5, 19);
    let t = super::trials::trials();
    Features {
        kernel,
        mode,
        sq_entries: p.sq_entries(),
        cq_entries: p.cq_entries(),
        nodrop: p.is_feature_nodrop(),
        ext_arg: p.is_feature_ext_arg(),
        min_timeout: p.is_feature_min_timeout(),
        recv_bundle: p.is_feature_recvsend_bundle(),
        multishot_accept: op(opcode::AcceptMulti::CODE) && t.multishot_accept.unwrap_or(v519),
        multishot_recv: op(opcode::RecvMulti::CODE)
            && t.multishot_recv.unwrap_or(kernel.at_least(6, 0)),
        multishot_recv_cap: t.multishot_recv_cap.unwrap_or(kernel.at_least(6, 17)),
        buf_ring: t.buf_ring.unwrap_or(v519),
        send_zc: op(opcode::SendZc::CODE),
        sendmsg_zc: op(opcode::SendMsgZc::CODE),
        // The opcode is 5.5; its ALL/ANY flags came in 5.19.
        cancel_fd: op(opcode::AsyncCancel2::CODE) && t.cancel_all.unwrap_or(v519),
        reg_ring_fd: t.reg_ring_fd.unwrap_or(kernel.at_least(5, 18)),
        buf_ring_inc: t.buf_ring_inc.unwrap_or(kernel.at_least(6, 12)),
        direct_close: t.direct_close_releases.unwrap_or(kernel.at_least(6, 13)),
        sock_inq: op(opcode::UringCmd16::CODE) && t.sock_inq.unwrap_or(kernel.at_least(6, 7)),
    }
}

/// One row of `ringecho probe`: a feature, when it arrived, and how ringecho uses it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FeatureRow {
    /// Short name.
    pub name: &'static str,
    /// Kernel version that brought it.
    pub since: &'static str,
    /// Available here.
    pub supported: bool,
    /// What ringecho does by default: "yes", "no", or "required".
    pub default: &'static str,
    /// The flag that changes the default ("" if none).
    pub flag: &'static str,
}

impl Features {
    /// Every feature ringecho knows, for `ringecho probe`. `modes` comes from
    /// [`supported_modes`].
    pub fn table(&self, modes: &[(RingMode, bool)]) -> Vec<FeatureRow> {
        let mode_ok = |m: RingMode| modes.iter().any(|&(x, ok)| x == m && ok);
        let row = |name, since, supported, default, flag| FeatureRow {
            name,
            since,
            supported,
            default,
            flag,
        };
        vec![
            row(
                "DEFER_TASKRUN + SINGLE_ISSUER",
                "6.1",
                mode_ok(RingMode::DeferTaskrun),
                "yes",
                "--ring-mode",
            ),
            row(
                "COOP_TASKRUN + TASKRUN_FLAG",
                "5.19",
                mode_ok(RingMode::CoopTaskrun),
                "fallback",
                "--ring-mode",
            ),
            row(
                "SQPOLL",
                "5.11",
                mode_ok(RingMode::Sqpoll),
                "no",
                "--sqpoll",
            ),
            row(
                "EXT_ARG (wait timeout)",
                "5.11",
                self.ext_arg,
                "required",
                "",
            ),
            row("NODROP (CQ overflow kept)", "5.5", self.nodrop, "yes", ""),
            row(
                "multishot accept + direct descriptors",
                "5.19",
                self.multishot_accept,
                "required",
                "",
            ),
            row(
                "provided-buffer ring",
                "5.19",
                self.buf_ring,
                "required",
                "",
            ),
            row(
                "cancel every match (ALL, ANY)",
                "5.19",
                self.cancel_fd,
                "required",
                "",
            ),
            row(
                "multishot recv",
                "6.0",
                self.multishot_recv,
                "yes",
                "--no-multishot-recv",
            ),
            row(
                "registered ring fd",
                "5.18",
                self.reg_ring_fd,
                "no",
                "--register-ring-fd",
            ),
            row(
                "min-wait batching (MIN_TIMEOUT)",
                "6.12",
                self.min_timeout,
                "no",
                "--batch-wait-us",
            ),
            row(
                "capped multishot recv",
                "6.17",
                self.multishot_recv_cap,
                "yes",
                "--no-recv-cap",
            ),
            row("socket SIOCINQ command", "6.7", self.sock_inq, "yes", ""),
            row(
                "recv bundles",
                "6.10",
                self.recv_bundle,
                "yes",
                "--no-recv-bundle",
            ),
            row(
                "incremental buffer consumption",
                "6.12",
                self.buf_ring_inc,
                "no",
                "--buf-incremental",
            ),
            row("send_zc", "6.0", self.send_zc, "no", "--zc-threshold"),
            row(
                "direct descriptors released at close",
                "6.13",
                self.direct_close,
                "yes",
                "",
            ),
        ]
    }
}

/// Turns a failed `io_uring_setup` into one line naming the cause and the remedy.
pub fn unavailable(e: io::Error, kernel: KernelVersion) -> Error {
    let msg = match e.raw_os_error() {
        Some(libc::EPERM) => {
            let sysctl = match sys::io_uring_disabled() {
                Some(v) if v > 0 => format!("kernel.io_uring_disabled is {v}"),
                _ => String::from("a seccomp profile (container runtime) blocks io_uring_setup"),
            };
            format!(
                "io_uring is not permitted (EPERM): {sysctl} (remedy: `sysctl -w \
                 kernel.io_uring_disabled=0`, allow io_uring in the seccomp profile, or use \
                 --backend epoll)"
            )
        }
        // A kernel built without io_uring says ENOSYS, and so do sandboxes that hide it (a
        // seccomp profile whose default answer is ENOSYS, gVisor): the kernel may well have it.
        Some(libc::ENOSYS) => format!(
            "io_uring_setup is not implemented (ENOSYS): kernel {kernel} was built without \
             CONFIG_IO_URING, or a sandbox (seccomp profile, gVisor) hides it (remedy: Linux \
             5.19+ with CONFIG_IO_URING, allow io_uring in the sandbox, or use --backend epoll)"
        ),
        Some(libc::ENOMEM) => String::from(
            "io_uring_setup failed with ENOMEM: the ring does not fit in RLIMIT_MEMLOCK on this \
             kernel (remedy: raise `ulimit -l`, lower --sq-entries/--cq-entries, or use \
             --backend epoll)",
        ),
        Some(libc::EINVAL) => format!(
            "io_uring_setup rejected every flag combination on kernel {kernel} (EINVAL) \
             (remedy: Linux 5.19+, or use --backend epoll)"
        ),
        _ => format!("io_uring_setup failed: {e} (remedy: use --backend epoll)"),
    };
    Error::UringUnavailable(msg)
}
