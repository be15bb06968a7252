//! Thin, checked wrappers over the few libc calls ringecho makes outside the rings.
//!
//! Every call goes through the `syscall!` macro, which turns a `-1` return into the thread's `errno` as an
//! [`io::Error`], so no call site forgets to check.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

pub mod proc;

/// Calls a libc function and maps a `-1` result to `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        #[allow(unused_unsafe)]
        // SAFETY: each caller passes arguments that satisfy the libc function's contract
        // (valid pointers to live, correctly sized memory); see the call sites.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

pub mod epoll;

/// TCP keepalive probing: first probe after `idle` seconds of silence, then every `interval`
/// seconds, giving up after `count` unanswered probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// `TCP_KEEPIDLE`, seconds.
    pub idle: u32,
    /// `TCP_KEEPINTVL`, seconds.
    pub interval: u32,
    /// `TCP_KEEPCNT`.
    pub count: u32,
}

/// Options for the sockets a server accepts. They are set on the listening socket: Linux
/// copies them into every socket it accepts (the new socket is a clone of the listener), which
/// is how they reach io_uring direct descriptors, where `setsockopt` cannot go, without a syscall
/// per connection.
///
/// More options may come, so the struct is `#[non_exhaustive]`: start from
/// [`SocketOptions::default`] and set fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `TCP_NODELAY`: send small writes at once instead of waiting for an ACK (Nagle).
    pub nodelay: bool,
    /// `SO_RCVBUF` in bytes (the kernel doubles it for bookkeeping and stops autotuning).
    pub rcvbuf: Option<u32>,
    /// `SO_SNDBUF` in bytes (likewise).
    pub sndbuf: Option<u32>,
    /// `SO_KEEPALIVE` with its three timers.
    pub keepalive: Option<Keepalive>,
    /// `SO_LINGER` seconds: a close waits this long for unsent data; 0 resets the connection.
    pub linger: Option<u32>,
    /// `IPV6_V6ONLY` on IPv6 listeners: refuse IPv4-mapped clients on `[::]`.
    pub ipv6_only: bool,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            nodelay: true,
            rcvbuf: None,
            sndbuf: None,
            keepalive: None,
            linger: None,
            ipv6_only: false,
        }
    }
}

/// How to create a listening socket.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// `SO_REUSEPORT`.
    pub reuseport: bool,
    /// Options accepted sockets inherit.
    pub socket: SocketOptions,
}

/// Applies `o` to a socket (a listener, or a client socket in tests and the load generator).
/// TCP-only options are skipped for a datagram socket (`tcp == false`).
pub fn apply_socket_options(fd: RawFd, o: &SocketOptions, ipv6: bool, tcp: bool) -> io::Result<()> {
    if tcp {
        setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(o.nodelay),
        )?;
    }
    if let Some(n) = o.rcvbuf {
        setsockopt_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            n.min(i32::MAX as u32) as i32,
        )?;
    }
    if let Some(n) = o.sndbuf {
        setsockopt_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            n.min(i32::MAX as u32) as i32,
        )?;
    }
    if let Some(k) = o.keepalive.filter(|_| tcp) {
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, k.idle as i32)?;
        setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            k.interval as i32,
        )?;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, k.count as i32)?;
    }
    if let Some(secs) = o.linger.filter(|_| tcp) {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: secs.min(i32::MAX as u32) as i32,
        };
        syscall!(setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        ))?;
    }
    if ipv6 {
        setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            i32::from(o.ipv6_only),
        )?;
    }
    Ok(())
}

/// The system's `net.core.somaxconn`, the largest useful listen backlog (4096 if unreadable).
pub fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&value as *const i32).cast(),
        std::mem::size_of::<i32>() as libc::socklen_t,
    ))
    .map(drop)
}

/// Reads an integer socket option.
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    syscall!(getsockopt(
        fd,
        level,
        name,
        (&mut value as *mut i32).cast(),
        &mut len
    ))?;
    Ok(value)
}

/// Fills a `sockaddr_storage` from a Rust address; returns its length.
fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Creates, configures and binds a socket of `kind` (`SOCK_STREAM` or `SOCK_DGRAM`).
fn bound_socket(addr: SocketAddr, kind: i32, opts: &ListenOptions) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = syscall!(socket(domain, kind | libc::SOCK_CLOEXEC, 0))?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if opts.reuseport {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let tcp = kind == libc::SOCK_STREAM;
    apply_socket_options(raw, &opts.socket, addr.is_ipv6(), tcp)?;
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = to_sockaddr(&addr, &mut storage);
    syscall!(bind(
        raw,
        (&storage as *const libc::sockaddr_storage).cast(),
        len
    ))?;
    Ok(fd)
}

/// Creates, configures, binds and listens a TCP socket (close-on-exec, blocking).
///
/// std's `TcpListener::bind` listens with a backlog of 128, which a few hundred clients
/// connecting at once overflow; this one uses `opts.backlog`.
pub fn tcp_listener(addr: SocketAddr, opts: &ListenOptions) -> io::Result<TcpListener> {
    let fd = bound_socket(addr, libc::SOCK_STREAM, opts)?;
    syscall!(listen(fd.as_raw_fd(), opts.backlog))?;
    Ok(TcpListener::from(fd))
}

/// Creates, configures and binds a UDP socket (close-on-exec, blocking).
pub fn udp_socket(addr: SocketAddr, opts: &ListenOptions) -> io::Result<UdpSocket> {
    bound_socket(addr, libc::SOCK_DGRAM, opts).map(UdpSocket::from)
}

/// The address a socket is bound to (`getsockname`).
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; getsockname fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(getsockname(
        fd,
        (&mut storage as *mut libc::sockaddr_storage).cast(),
        &mut len
    ))?;
    from_sockaddr(&storage).ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

/// Converts a kernel socket address to a Rust one (IPv4 and IPv6 only).
pub fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large enough
            // for and aligned for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An unconnected TCP socket for `addr`'s family (close-on-exec, `TCP_NODELAY`, optionally
/// nonblocking), for a client. `TCP_NODELAY` because an echo client that pipelines small
/// messages would otherwise have Nagle hold them back waiting for ACKs.
pub fn tcp_client_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let flags =
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    let fd = syscall!(socket(domain, flags, 0))?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    Ok(fd)
}

/// A socket address in the kernel's layout, for `connect(2)` or an io_uring connect SQE.
#[derive(Clone, Copy)]
pub struct RawSockAddr {
    /// The address.
    pub storage: libc::sockaddr_storage,
    /// Its length.
    pub len: libc::socklen_t,
}

impl RawSockAddr {
    /// Converts a Rust address.
    pub fn new(addr: &SocketAddr) -> RawSockAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = to_sockaddr(addr, &mut storage);
        RawSockAddr { storage, len }
    }

    /// Pointer for the kernel.
    pub fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }
}

/// `connect(2)`. On a nonblocking socket, `EINPROGRESS` comes back as an error to wait out.
pub fn connect(fd: RawFd, addr: &RawSockAddr) -> io::Result<()> {
    syscall!(connect(fd, addr.as_ptr(), addr.len)).map(drop)
}

/// Takes a socket's pending error (`SO_ERROR`): `Ok` if there is none, as after a successful
/// nonblocking connect.
pub fn take_socket_error(fd: RawFd) -> io::Result<()> {
    match getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Sets the calling thread's timer slack: how late the kernel may fire its sleep timeouts to
/// batch wake-ups (50 µs by default). A load generator sending on a schedule wants none.
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    syscall!(prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong)).map(drop)
}

/// Half-closes a socket for writing (the peer reads end of stream).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    // SAFETY: rlimit is plain old data.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    }
    Ok(lim.rlim_cur)
}

/// Reads a resource limit: (soft, hard).
pub fn rlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    // SAFETY: rlimit is plain old data.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    syscall!(getrlimit(resource, &mut lim))?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if syscall!(uname(&mut u)).is_err() {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    let c = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    c.to_string_lossy().into_owned()
}

/// A kernel version as (major, minor, patch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parses the leading `X.Y[.Z]` of a release string such as `6.18.44-fc-v669`.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut it = release
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|p| p.parse::<u32>().ok());
        let major = it.next()??;
        let minor = it.next()??;
        let patch = it.next().flatten().unwrap_or(0);
        Some(KernelVersion(major, minor, patch))
    }

    /// The running kernel's version (0.0.0 if it cannot be read).
    pub fn current() -> KernelVersion {
        KernelVersion::parse(&kernel_release()).unwrap_or(KernelVersion(0, 0, 0))
    }

    /// At least `major.minor`?
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.0, self.1) >= (major, minor)
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// `kernel.io_uring_disabled` (0 enabled, 1 root or group only, 2 disabled), if the sysctl exists.
pub fn io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A nonblocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: `fd` was just returned by eventfd(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads and resets a nonblocking eventfd's counter: true if it had been signalled.
pub fn eventfd_take(fd: RawFd) -> bool {
    let mut v: u64 = 0;
    syscall!(read(fd, (&mut v as *mut u64).cast(), 8)).is_ok_and(|n| n == 8 && v > 0)
}

/// Adds one to an eventfd's counter (makes it readable).
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // An eventfd write fails only if the counter would overflow, which leaves it readable anyway.
    let _ = syscall!(write(fd, (&one as *const u64).cast(), 8));
}

static SHUTDOWN_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNALS_SEEN: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_shutdown_signal(_sig: libc::c_int) {
    // Only async-signal-safe calls here: atomics, write(2), _exit(2).
    if SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst) == 0 {
        let fd = SHUTDOWN_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            eventfd_signal(fd);
        }
    } else {
        let msg = b"ringecho: second signal, exiting without draining\n";
        // SAFETY: write and _exit are async-signal-safe; `msg` is a live static buffer.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(130);
        }
    }
}

/// Makes SIGINT and SIGTERM signal `fd` (an eventfd every shard polls) the first time, and end
/// the process at once the second time. Ignores SIGPIPE: a peer that vanished is an error code on
/// one connection, not a reason to die.
pub fn install_shutdown_signals(fd: RawFd) -> io::Result<()> {
    SHUTDOWN_FD.store(fd, Ordering::SeqCst);
    SIGNALS_SEEN.store(0, Ordering::SeqCst);
    // SAFETY: sigaction is plain old data; all-zero is an empty mask and no flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_shutdown_signal as *const () as usize;
    sa.sa_flags = libc::SA_RESTART;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        syscall!(sigaction(sig, &sa, std::ptr::null_mut()))?;
    }
    ignore_sigpipe()
}

/// Ignores SIGPIPE for the process.
pub fn ignore_sigpipe() -> io::Result<()> {
    // SAFETY: as above.
    let mut ign: libc::sigaction = unsafe { std::mem::zeroed() };
    ign.sa_sigaction = libc::SIG_IGN;
    syscall!(sigaction(libc::SIGPIPE, &ign, std::ptr::null_mut())).map(drop)
}

/// The CPUs this process may run on (its affinity mask), in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain old data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if syscall!(sched_getaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &mut set
    ))
    .is_err()
    {
        return vec![0];
    }
    // SAFETY: CPU_ISSET reads the set filled above, for indices below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes inside it (cpu is bounds-checked).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    syscall!(sched_setaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &set
    ))
    .map(drop)
}

/// Process CPU time (user + system) in microseconds.
pub fn process_cpu_micros() -> u64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if syscall!(getrusage(libc::RUSAGE_SELF, &mut ru)).is_err() {
        return 0;
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The CPU time (user + system, every thread, living or exited) process `pid` has used so
/// far, in nanoseconds, from its process CPU clock (`clock_getcpuclockid`). This is the
/// scheduler's run time itself, which `/proc/PID/stat`'s utime and stime are scaled to and
/// then round to clock ticks (10 ms): over a 3 s window at 20k messages/s a tick is about 1%
/// of a server's CPU per message, and every reading can be off by one. Linux lets any process
/// read another's process clock. `None` if `pid` is gone, or 0 (which would name the caller).
pub fn process_cpu_nanos(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t into `clock`, a live local. It returns
    // an error number (not -1 and errno).
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // `ts` is a live local of the type clock_gettime writes.
    syscall!(clock_gettime(clock, &mut ts)).ok()?;
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

/// Resident set size of this process in bytes (from `/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_process_cpu_clock_finer_than_a_tick() {
        let me = std::process::id();
        let mut a = process_cpu_nanos(me).expect("this process's CPU clock");
        // Spin until the clock moves: by less than a tick, which /proc/PID/stat could not
        // show, at least once in 100 steps (one step may take longer if this thread is
        // preempted while other test threads run).
        let mut smallest = u64::MAX;
        for _ in 0..100 {
            let b = loop {
                let b = process_cpu_nanos(me).unwrap();
                if b > a {
                    break b;
                }
            };
            smallest = smallest.min(b - a);
            a = b;
        }
        assert!(smallest < 10_000_000, "moved at least {smallest} ns");
        assert_eq!(process_cpu_nanos(0), None, "pid 0 would be this process");
        // The same quantity as /proc/PID/stat's, which rounds each of utime and stime down
        // to a tick; other test threads run meanwhile, so the reading is bracketed and the
        // bounds are loose. Burn 50 ms first, so that a wrong unit could not pass.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(process_cpu_nanos(me));
        }
        let tick_ns = 1_000_000_000 / proc::clock_ticks_per_sec();
        let before = process_cpu_nanos(me).unwrap();
        let ticks = proc::process_cpu_ticks(me).unwrap();
        let after = process_cpu_nanos(me).unwrap();
        assert!(
            ticks * tick_ns <= after + tick_ns,
            "{ticks} ticks, {after} ns"
        );
        assert!(
            ticks * tick_ns + 5 * tick_ns >= before,
            "{ticks} ticks, {before} ns"
        );
        // A process that does not exist has no clock (pid_max is at most 2^22).
        assert_eq!(process_cpu_nanos(1 << 23), None);
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v669"),
            Some(KernelVersion(6, 18, 44))
        );
        assert_eq!(
            KernelVersion::parse("5.19.0"),
            Some(KernelVersion(5, 19, 0))
        );
        assert_eq!(KernelVersion::parse("6.1"), Some(KernelVersion(6, 1, 0)));
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert!(KernelVersion(6, 0, 0).at_least(5, 19));
        assert!(!KernelVersion(5, 15, 99).at_least(5, 19));
    }

    #[test]
    fn listener_uses_the_requested_backlog_and_nodelay() {
        let l = tcp_listener(
            "127.0.0.1:0".parse().unwrap(),
            &ListenOptions {
                backlog: 1000,
                reuseport: false,
                socket: SocketOptions::default(),
            },
        )
        .unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
        let nd = getsockopt_int(l.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap();
        assert_eq!(nd, 1);
    }
}
