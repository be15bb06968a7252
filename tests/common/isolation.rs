//! What keeps a test's measurements its own: one measuring test at a time, a private network
//! namespace, and file-descriptor limits.

use std::io;
use std::sync::{Mutex, MutexGuard};
use std::thread;

use ringecho::sys::proc;

use super::backends::test_name;

/// `RLIMIT_NOFILE` of process `pid` as (soft, hard), from `/proc/PID/limits`.
pub fn rlimit_nofile_of(pid: u32) -> (u64, u64) {
    proc::nofile_limit(pid).expect("Max open files in /proc/PID/limits")
}

/// Raises this (test) process's soft `RLIMIT_NOFILE` to its hard limit; returns the new limit.
pub fn raise_nofile_limit() -> u64 {
    ringecho::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE")
}

/// Locks `m`, even if a test thread panicked while holding it (the data is still usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serialises the tests of one binary that measure (CPU time, RSS, syscalls per message), so
/// they do not perturb each other. Hold the guard for the whole test.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    lock(&M)
}

/// Runs `f` on a thread that has its own network namespace with `lo` up, so servers it starts
/// and sockets it (or threads it spawns) opens are counted apart from the rest of the machine
/// in `/proc/PID/net/sockstat`. Without the privilege to do so (not root), runs `f` in the
/// shared namespace and passes `false`.
pub fn in_fresh_netns<T: Send>(f: impl FnOnce(bool) -> T + Send) -> T {
    let name = test_name();
    thread::scope(|s| {
        let h = thread::Builder::new()
            .name(name.clone())
            .spawn_scoped(s, move || {
                let isolated = match enter_fresh_netns() {
                    Ok(()) => true,
                    Err(e) => {
                        eprintln!(
                            "[{name}] note: no private network namespace ({e}); socket counts \
                             include the rest of the machine"
                        );
                        false
                    }
                };
                f(isolated)
            })
            .expect("spawn");
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn enter_fresh_netns() -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET moves only the calling thread (and
    // what it later spawns) into a new network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // A new namespace's loopback is down: bring it up (SIOCSIFFLAGS |= IFF_UP).
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data (all-zero is valid); the ioctls read and write only the
    // ifreq passed, whose name is NUL-terminated; `fd` is ours and closed once here.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 { Err(err) } else { Ok(()) }
    }
}
