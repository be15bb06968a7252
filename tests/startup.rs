//! Failing at start-up: io_uring unavailable (blocked by seccomp) and bad flags. Each must end
//! with one line a user can act on, a non-zero exit status, and no panic.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, EXIT_UNAVAILABLE, run_to_exit};

/// The lines of `stderr` that carry the message: non-empty, minus clap's generic additions (the
/// `--help` tip, and the usage line it adds for an unknown flag).
fn message_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("For more information, try")
                && !l.starts_with("Usage: ")
        })
        .collect()
}

fn assert_no_panic(stderr: &str) {
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "stderr mentions {bad:?}:\n{stderr}");
    }
}

/// A seccomp filter (classic BPF) that makes `io_uring_setup` fail with `EPERM`, the way a
/// container runtime's default profile does, and allows everything else.
#[cfg(target_arch = "x86_64")]
mod seccomp {
    use std::io;

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SYS_IO_URING_SETUP: u32 = 425;
    /// Offsets in `struct seccomp_data`.
    const OFF_NR: u32 = 0;
    const OFF_ARCH: u32 = 4;

    const fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }

    const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }

    pub const FILTER: [libc::sock_filter; 7] = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFF_ARCH),
        // Another architecture's syscall numbers mean something else: leave them alone.
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, OFF_NR),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            SYS_IO_URING_SETUP,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];

    /// Installs [`FILTER`] on the calling thread. Runs between fork and exec: only
    /// async-signal-safe calls (two `prctl`s), no allocation.
    pub fn install() -> io::Result<()> {
        let mut filter = FILTER;
        let prog = libc::sock_fprog {
            len: filter.len() as libc::c_ushort,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integer arguments only. PR_SET_SECCOMP reads
        // the `sock_fprog` and the `len` filter instructions it points to, which are live locals
        // for the duration of the call (the kernel copies them).
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn under_seccomp(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_BACKTRACE", "1");
    // SAFETY: the closure runs in the forked child before exec and only calls `seccomp::install`,
    // which makes two prctl calls on stack data: async-signal-safe, no allocation, no locks.
    unsafe {
        cmd.pre_exec(seccomp::install);
    }
    run_to_exit(&mut cmd, Duration::from_secs(10))
}

/// The default `--backend auto` under the same seccomp filter: one line saying why, then the
/// epoll backend serves.
#[cfg(target_arch = "x86_64")]
#[test]
fn auto_backend_falls_back_to_epoll_when_io_uring_is_blocked() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--addr",
        "127.0.0.1:0",
        "--threads",
        "1",
        "--stats-interval",
        "0.1",
    ]);
    // SAFETY: as in `under_seccomp`: only two prctl calls on stack data before exec.
    unsafe {
        cmd.pre_exec(seccomp::install);
    }
    let auto = common::Backend {
        name: "auto",
        flags: &[],
    };
    let mut server = match common::Server::spawn(auto, cmd) {
        Ok(s) => s,
        Err(e) => panic!("auto backend did not start under seccomp: {e}"),
    };
    let mut c = server.connect();
    c.write_all(b"still served").unwrap();
    let mut buf = [0u8; 12];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still served");
    drop(c);
    let stopped = server.stop(libc::SIGTERM);
    let fin = stopped.assert_clean();
    assert_eq!(fin.accepted, 1);
    let log = stopped.stderr.join("\n");
    assert!(
        log.contains("EPERM") && log.contains("falling back to epoll"),
        "says why it fell back:\n{log}"
    );
    assert!(log.contains("ringecho: epoll"), "runs epoll:\n{log}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn io_uring_blocked_by_seccomp_exits_2_with_one_line() {
    let (status, stdout, stderr) =
        under_seccomp(&["serve", "--backend", "uring", "--addr", "127.0.0.1:0"]);
    eprintln!("server under seccomp: {status}; stderr: {stderr}");
    assert_eq!(
        status.code(),
        Some(EXIT_UNAVAILABLE),
        "status {status}; stderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "must not listen: {stdout}"
    );
    assert_no_panic(&stderr);
    let lines = message_lines(&stderr);
    assert_eq!(lines.len(), 1, "exactly one line:\n{stderr}");
    let line = lines[0];
    assert!(line.starts_with("ringecho: "), "{line}");
    assert!(line.contains("EPERM"), "names the error: {line}");
    // The cause named is the seccomp profile, or the sysctl if that also disables io_uring.
    assert!(
        line.contains("seccomp") || line.contains("io_uring_disabled"),
        "names the cause: {line}"
    );
    assert!(line.contains("remedy"), "names a remedy: {line}");

    // `ringecho probe` reports the same cause the same way.
    let (status, _, stderr) = under_seccomp(&["probe"]);
    assert_eq!(status.code(), Some(EXIT_UNAVAILABLE), "probe: {stderr}");
    assert_no_panic(&stderr);
    assert!(
        message_lines(&stderr)
            .iter()
            .any(|l| l.contains("EPERM") && l.contains("remedy")),
        "probe: {stderr}"
    );
}

#[test]
fn bad_flags_give_one_line_and_exit_64() {
    let cases: &[(&[&str], &str)] = &[
        (&["--addr", "nonsense"], "--addr"),
        (&["--buf-size", "0"], "--buf-size"),
        (&["--buf-count", "1000"], "power of two"),
        (&["--buf-count", "65536"], "power of two"),
        (&["--stream-bufs", "3"], "--stream-bufs"),
        (&["--stream-bufs", "32768"], "--stream-bufs"),
        (&["--stream-bufs", "many"], "--stream-bufs"),
        (
            &["--sq-entries", "64", "--cq-entries", "32"],
            "--cq-entries",
        ),
        (&["--max-conns", "0"], "--max-conns"),
        // Ring sizes the kernel refuses (EINVAL) are named as such, not as an old kernel.
        (
            &["--backend", "uring", "--sq-entries", "65536"],
            "--sq-entries",
        ),
        (
            &["--backend", "uring", "--cq-entries", "131072"],
            "--cq-entries",
        ),
        // Buffers: bounded, each and in all.
        (&["--buf-size", "1073741824"], "--buf-size"),
        (
            &["--buf-count", "32768", "--buf-size", "1048576"],
            "--buf-size",
        ),
        (&["--drain-timeout", "soon"], "--drain-timeout"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, mention) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").args(*args).env("RUST_BACKTRACE", "1");
        // A bad flag must fail before binding; if it did not, `--addr` would keep it from
        // colliding with anything.
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        let (status, stdout, stderr) = run_to_exit(&mut cmd, Duration::from_secs(10));
        eprintln!("{args:?} -> {status}: {}", stderr.trim());
        assert!(!status.success(), "{args:?} must fail; stderr:\n{stderr}");
        assert_eq!(
            status.code(),
            Some(64),
            "{args:?}: usage errors exit 64 (EX_USAGE), never 2 (io_uring unavailable)"
        );
        assert!(!stdout.contains("listening on"), "{args:?} started serving");
        assert_no_panic(&stderr);
        let lines = message_lines(&stderr);
        assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{stderr}");
        assert!(
            lines[0].contains(mention),
            "{args:?}: the line should mention {mention:?}: {}",
            lines[0]
        );
    }
}
