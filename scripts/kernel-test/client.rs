//! The client side of `make kernel-test` that `ringecho bench` cannot play: it runs inside the
//! kernel matrix's virtual machines (`scripts/kernel-test/init.sh`), where there is no cargo
//! and no test harness. Every subcommand prints one line saying what it saw and exits 0 when
//! that is what a correct server does, 1 when not.
//!
//! ```text
//! kernel_test_client http ADDR CONNS REQUESTS    pipelined keep-alive HTTP, every byte checked
//! kernel_test_client hogs ADDR CONNS             clients that send and never read; prints
//!                                                `stuck ...` once none can send more, then
//!                                                holds them open until killed
//! kernel_test_client drain ADDR SERVER_PID       a client the server owes bytes and an idle
//!                                                one, then SIGTERM: every owed byte, then FIN
//! kernel_test_client closes ADDR CONNS           CONNS clients echo, half-close and must see
//!                                                the server's FIN while one other connection
//!                                                sits idle
//! kernel_test_client run [--deny-uring ERRNO] [--uid UID] -- PROGRAM ARGS...
//!                                                PROGRAM with io_uring's three syscalls
//!                                                failing with ERRNO (EPERM or ENOSYS: a
//!                                                container's seccomp profile), as user UID
//! ```
//!
//! Built as an example (`cargo build --release --example kernel_test_client`) so that it links
//! the library: the HTTP check takes its expected bytes from `ringecho::protocol::respond`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use ringecho::protocol::{DEFAULT_HTTP_BODY, Http, respond};

/// Under emulation everything is slow, and the host may be busy: waits are long, and only
/// bound how long a broken server can hang a check.
const TIMEOUT: Duration = Duration::from_secs(20);
/// No socket could send for this long: the server stopped reading them all.
const QUIET: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["http", addr, conns, requests] => http(addr, conns, requests),
        ["hogs", addr, conns] => hogs(addr, conns),
        ["drain", addr, pid] => drain(addr, pid),
        ["closes", addr, conns] => closes(addr, conns),
        ["run", rest @ ..] => run(rest),
        _ => Err(
            "usage: kernel_test_client http ADDR CONNS REQUESTS | hogs ADDR CONNS | \
             drain ADDR SERVER_PID | closes ADDR CONNS | run [--deny-uring EPERM|ENOSYS] [--uid UID] -- PROGRAM ARGS..."
                .to_string(),
        ),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            println!("FAILED: {line}");
            ExitCode::from(1)
        }
    }
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what}: '{s}' is not a number"))
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("'{s}' is not HOST:PORT"))
}

/// Byte `i` of what every client here sends: a fixed pseudo-random sequence.
fn pattern(i: u64) -> u8 {
    (i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

fn check_pattern(from: u64, got: &[u8]) -> Result<(), String> {
    match got
        .iter()
        .enumerate()
        .find(|&(k, &b)| b != pattern(from + k as u64))
    {
        None => Ok(()),
        Some((k, &b)) => Err(format!(
            "byte {} is {b:#04x}, expected {:#04x}",
            from + k as u64,
            pattern(from + k as u64)
        )),
    }
}

/// Writes pattern bytes from `offset` until the socket would block; returns how many went in.
fn push_until_blocked(s: &mut TcpStream, offset: u64) -> io::Result<u64> {
    let mut buf = [0u8; 16 * 1024];
    let mut sent = 0;
    loop {
        for (k, b) in buf.iter_mut().enumerate() {
            *b = pattern(offset + sent + k as u64);
        }
        match s.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(sent),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Pushes on every (nonblocking) stream until none has become writable for [`QUIET`]: the
/// server has stopped reading them all. Returns the bytes pushed per stream.
fn push_until_stuck(streams: &mut [TcpStream]) -> Result<Vec<u64>, String> {
    let mut pushed = vec![0u64; streams.len()];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        for (s, p) in streams.iter_mut().zip(pushed.iter_mut()) {
            *p += push_until_blocked(s, *p).map_err(|e| format!("send: {e}"))?;
        }
        let mut fds: Vec<libc::pollfd> = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` initialised pollfd structs.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                QUIET.as_millis() as i32,
            )
        };
        if n == 0 {
            return Ok(pushed);
        }
        if let Some(f) = fds
            .iter()
            .find(|f| f.revents & (libc::POLLERR | libc::POLLHUP) != 0)
        {
            return Err(format!("socket {} failed while pushing", f.fd));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the server kept reading for {TIMEOUT:?} (pushed {} B)",
                pushed.iter().sum::<u64>()
            ));
        }
    }
}

/// Reads until EOF; `Err` if the stream ends with an error (a reset) or stalls.
fn read_to_eof(s: &mut TcpStream) -> Result<Vec<u8>, (Vec<u8>, io::Error)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e)),
        }
    }
}

/// `conns` connections each send `requests` pipelined HTTP/1.1 requests (GETs, HEADs, POSTs
/// with bodies, the last with `Connection: close`) and read the responses to EOF; every byte
/// must be what ringecho's HTTP protocol answers (default body) and the stream must end in FIN.
fn http(addr_s: &str, conns_s: &str, requests_s: &str) -> Result<String, String> {
    let addr = addr(addr_s)?;
    let conns: usize = num(conns_s, "CONNS")?;
    let requests: usize = num(requests_s, "REQUESTS")?;
    let mut input = Vec::new();
    for i in 0..requests {
        let close = if i + 1 == requests {
            "Connection: close\r\n"
        } else {
            ""
        };
        let req = match i % 5 {
            3 => format!("HEAD /{i} HTTP/1.1\r\nHost: vm\r\n{close}\r\n"),
            4 => format!(
                "POST /{i} HTTP/1.1\r\nHost: vm\r\nContent-Length: {}\r\n{close}\r\n{}",
                i % 300,
                "x".repeat(i % 300)
            ),
            _ => format!("GET /{i} HTTP/1.1\r\nHost: vm\r\n{close}\r\n"),
        };
        input.extend_from_slice(req.as_bytes());
    }
    let (expected, _) = respond(&mut Http::new(DEFAULT_HTTP_BODY), &input);
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..conns)
            .map(|c| {
                let (input, expected) = (&input, &expected);
                scope.spawn(move || -> Result<(), String> {
                    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
                        .map_err(|e| format!("connection {c}: connect: {e}"))?;
                    s.set_read_timeout(Some(TIMEOUT)).ok();
                    let mut w = s.try_clone().map_err(|e| e.to_string())?;
                    // Write from a second thread: the server answers while requests still arrive.
                    let writer = scope.spawn(move || {
                        for piece in input.chunks(1000 + c * 7) {
                            w.write_all(piece)?;
                        }
                        Ok::<(), io::Error>(())
                    });
                    let got = read_to_eof(&mut s).map_err(|(got, e)| {
                        format!("connection {c}: after {} B: {e}", got.len())
                    })?;
                    writer
                        .join()
                        .map_err(|_| "writer panicked".to_string())?
                        .map_err(|e| format!("connection {c}: send: {e}"))?;
                    if got != *expected {
                        let at = got.iter().zip(expected.iter()).position(|(a, b)| a != b);
                        return Err(format!(
                            "connection {c}: {} B back, {} B expected, first difference at {}",
                            got.len(),
                            expected.len(),
                            at.map_or("the end".to_string(), |i| format!("byte {i}"))
                        ));
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect()
    });
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e);
    }
    Ok(format!(
        "http: {conns} connections x {requests} pipelined requests ({} B each way per \
         connection), every response byte as expected, then FIN",
        input.len().max(expected.len())
    ))
}

/// A nonblocking client socket with small buffers and MSS set before connecting, so a client
/// that never reads pins little kernel memory (as `tests/common`'s `connect_small`).
fn connect_small(addr: SocketAddr) -> Result<TcpStream, String> {
    let SocketAddr::V4(v4) = addr else {
        return Err("hogs: IPv4 only".into());
    };
    // SAFETY: socket(2) takes no pointers; the result is checked and owned by the TcpStream.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    for (level, opt, v) in [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, 8192),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, 8192),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536),
    ] {
        // SAFETY: setsockopt reads one live c_int from the pointer passed, on an open socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&v as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!("setsockopt: {}", io::Error::last_os_error()));
        }
    }
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect reads a live sockaddr_in of the size passed.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("connect {addr}: {}", io::Error::last_os_error()));
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// `conns` clients send and never read, until none can send more; then one `stuck` line on
/// stdout (the init script waits for it) and the sockets stay open until the process is killed.
fn hogs(addr_s: &str, conns_s: &str) -> Result<String, String> {
    let addr = addr(addr_s)?;
    let conns: usize = num(conns_s, "CONNS")?;
    let mut streams = (0..conns)
        .map(|_| connect_small(addr))
        .collect::<Result<Vec<_>, _>>()?;
    let pushed = push_until_stuck(&mut streams)?;
    println!(
        "stuck: {conns} never-reading clients pushed {} B in all and can send no more",
        pushed.iter().sum::<u64>()
    );
    io::stdout().flush().ok();
    loop {
        std::thread::park();
    }
}

/// Returns what a read on `s` gives within [`TIMEOUT`]: "eof", "reset", "data", or an error.
fn read_outcome(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(TIMEOUT)).ok();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => "eof".into(),
        Ok(n) => format!("{n} B of data"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => "reset".into(),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            format!("nothing within {TIMEOUT:?}")
        }
        Err(e) => e.to_string(),
    }
}

/// SIGTERM while the server owes a client bytes and that client then reads: the idle client is
/// closed at once (the drain has begun), a newcomer is refused or never served, and the owed
/// client gets back exactly the bytes it sent, up to where the server stopped reading, then FIN.
fn drain(addr_s: &str, pid_s: &str) -> Result<String, String> {
    let addr = addr(addr_s)?;
    let pid: i32 = num(pid_s, "SERVER_PID")?;
    let mut owed = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    owed.set_nonblocking(true).map_err(|e| e.to_string())?;
    let pushed = push_until_stuck(std::slice::from_mut(&mut owed))?[0];
    let mut idle = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    idle.set_read_timeout(Some(TIMEOUT)).ok();
    idle.write_all(b"y").map_err(|e| e.to_string())?;
    let mut y = [0u8; 1];
    idle.read_exact(&mut y)
        .map_err(|e| format!("idle client's echo: {e}"))?;

    // SAFETY: kill(2) takes no pointers.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(format!("kill {pid}: {}", io::Error::last_os_error()));
    }
    let idle_end = read_outcome(&mut idle);
    if idle_end != "eof" {
        return Err(format!(
            "idle client at shutdown: expected eof, got {idle_end}"
        ));
    }
    // The drain has begun: a newcomer is refused, or reset, and never served.
    let newcomer = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => "refused".to_string(),
        Err(e) => return Err(format!("a client connecting during the drain got {e}")),
        Ok(mut z) => {
            let _ = z.write_all(b"anyone?");
            match read_outcome(&mut z).as_str() {
                end @ ("eof" | "reset") => end.to_string(),
                other => return Err(format!("a client connecting during the drain got {other}")),
            }
        }
    };
    owed.set_nonblocking(false).map_err(|e| e.to_string())?;
    owed.set_read_timeout(Some(TIMEOUT)).ok();
    let back = read_to_eof(&mut owed).map_err(|(got, e)| {
        format!(
            "owed client: the stream ended with {e} after {} of {pushed} B",
            got.len()
        )
    })?;
    check_pattern(0, &back).map_err(|e| format!("owed client: {e}"))?;
    if back.is_empty() {
        return Err("owed client got nothing back".into());
    }
    Ok(format!(
        "drain: back={} pushed={pushed} idle=eof newcomer={newcomer} owed=fin",
        back.len()
    ))
}

/// One connection echoes once and then sits idle (its receive stays armed in the server);
/// meanwhile `conns` others each echo, half-close, and wait for the server's FIN. A server
/// that has closed its side of them but whose sockets the kernel keeps open sends no FIN.
fn closes(addr_s: &str, conns_s: &str) -> Result<String, String> {
    let addr = addr(addr_s)?;
    let conns: usize = num(conns_s, "CONNS")?;
    let echo = |s: &mut TcpStream, what: &[u8]| -> io::Result<()> {
        s.write_all(what)?;
        let mut back = vec![0u8; what.len()];
        s.read_exact(&mut back)?;
        if back == what {
            Ok(())
        } else {
            Err(io::Error::other("echo differs"))
        }
    };
    let mut idle = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    idle.set_read_timeout(Some(TIMEOUT)).ok();
    echo(&mut idle, b"idle").map_err(|e| format!("idle connection: {e}"))?;
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..conns)
            .map(|c| {
                scope.spawn(move || {
                    let run = || -> io::Result<String> {
                        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
                        s.set_read_timeout(Some(TIMEOUT))?;
                        let msg: Vec<u8> = (0..100).map(|k| pattern(c as u64 * 100 + k)).collect();
                        echo(&mut s, &msg)?;
                        s.shutdown(std::net::Shutdown::Write)?;
                        Ok(read_outcome(&mut s))
                    };
                    run().unwrap_or_else(|e| e.to_string())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| "panicked".into()))
            .collect()
    });
    let fins = outcomes.iter().filter(|o| *o == "eof").count();
    drop(idle);
    if fins == conns {
        Ok(format!(
            "closes: {conns} clients half-closed beside an idle connection, all got the server's FIN"
        ))
    } else {
        let other = outcomes
            .iter()
            .find(|o| *o != "eof")
            .cloned()
            .unwrap_or_default();
        Err(format!(
            "{} of {conns} clients that half-closed beside an idle connection got no FIN from \
             the server (e.g. {other})",
            conns - fins
        ))
    }
}

/// A classic BPF instruction (`struct sock_filter`).
#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Makes `io_uring_setup`, `io_uring_enter` and `io_uring_register` (425-427 on x86-64) fail
/// with `errno` in this process and everything it runs, as a container runtime's seccomp
/// profile does (Docker's default answers EPERM; some sandboxes ENOSYS).
fn deny_io_uring(errno: i32) -> io::Result<()> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let filter = [
        ins(LD_W_ABS, 0, 0, 4),                     // 0: A = arch
        ins(JEQ_K, 0, 4, AUDIT_ARCH_X86_64),        // 1: other arch -> 6
        ins(LD_W_ABS, 0, 0, 0),                     // 2: A = syscall number
        ins(JGE_K, 0, 2, 425),                      // 3: below io_uring_setup -> 6
        ins(JGT_K, 1, 0, 427),                      // 4: above io_uring_register -> 6
        ins(RET_K, 0, 0, RET_ERRNO | errno as u32), // 5: deny
        ins(RET_K, 0, 0, RET_ALLOW),                // 6: allow
    ];
    let prog = SockFprog {
        len: filter.len() as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies them.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const SockFprog,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `run [--deny-uring EPERM|ENOSYS] [--uid UID] -- PROGRAM ARGS...`: replaces this process
/// with PROGRAM, under the seccomp filter and/or as user UID (group UID, no supplementary
/// groups). Only returns on failure.
fn run(words: &[&str]) -> Result<String, String> {
    let mut deny = None;
    let mut uid = None;
    let mut rest = words;
    loop {
        match rest {
            ["--deny-uring", "EPERM", tail @ ..] => (deny, rest) = (Some(libc::EPERM), tail),
            ["--deny-uring", "ENOSYS", tail @ ..] => (deny, rest) = (Some(libc::ENOSYS), tail),
            ["--uid", u, tail @ ..] => (uid, rest) = (Some(num::<u32>(u, "UID")?), tail),
            ["--", program, args @ ..] => {
                if let Some(errno) = deny {
                    deny_io_uring(errno).map_err(|e| format!("seccomp filter: {e}"))?;
                }
                let mut cmd = Command::new(program);
                cmd.args(args);
                if let Some(u) = uid {
                    // std drops supplementary groups itself when root changes uid.
                    cmd.uid(u).gid(u);
                }
                return Err(format!("exec {program}: {}", cmd.exec()));
            }
            _ => return Err(format!("run: cannot parse {words:?}")),
        }
    }
}
