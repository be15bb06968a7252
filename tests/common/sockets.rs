//! One client connection at a time: echo once, read to the end, reset on close, fill the
//! kernel's buffers, small fixed buffers and MSS, socket options.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

use super::Pattern;

/// Writes `msg` and reads the same number of bytes back (blocking, with the stream's timeouts).
pub fn echo_once(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Reads until EOF or an error; returns the bytes and how it ended (`None` = clean EOF).
pub fn read_to_end_or_error(s: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (all, None),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (all, Some(e)),
        }
    }
}

/// `SO_LINGER {on, 0}`: the next close sends RST instead of FIN.
pub fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live `linger` value on an
    // open socket we own.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Writes pattern bytes to a nonblocking stream until the kernel refuses more (or `cap`
/// bytes); returns how many went in starting at `offset`.
pub fn push_until_blocked(s: &mut TcpStream, pat: &Pattern, offset: u64, cap: u64) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < cap {
        let n = buf.len().min((cap - sent) as usize);
        pat.fill(offset + sent, &mut buf[..n]);
        match s.write(&buf[..n]) {
            Ok(k) => sent += k as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sent
}

/// A blocking client socket with small fixed buffers (`SO_RCVBUF`/`SO_SNDBUF` = `buf`, which
/// the kernel doubles and no longer autotunes) and a small MSS (`TCP_MAXSEG` = `mss`), all set
/// before `connect` so the handshake advertises them. On loopback the MSS is otherwise 64 KiB,
/// and the *server's* send buffer, which grows with cwnd × MSS, swells to `tcp_wmem` max (4 MiB
/// here) for a peer that never reads: a small MSS keeps a slow reader's cost to the machine small.
pub fn connect_small(addr: SocketAddr, buf: i32, mss: i32) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("connect_small: IPv4 only")
    };
    let stream = tcp_socket_v4(0);
    for (level, opt, v) in [
        (libc::SOL_SOCKET, libc::SO_RCVBUF, buf),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, buf),
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG, mss),
    ] {
        setsockopt_int(&stream, level, opt, v);
    }
    connect_raw(&stream, v4).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
}

/// A new, unconnected IPv4 TCP socket (close-on-exec, plus `flags` such as `SOCK_NONBLOCK`),
/// for a test that sets options before `connect` or connects without waiting.
pub fn tcp_socket_v4(flags: i32) -> TcpStream {
    // SAFETY: socket(2) takes no pointers; the result is checked and owned by the TcpStream.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | flags,
            0,
        )
    };
    assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a fresh socket nobody else owns.
    unsafe { TcpStream::from_raw_fd(fd) }
}

/// `connect(2)` on a socket from [`tcp_socket_v4`]; on a nonblocking one, `EINPROGRESS` means
/// the handshake has started.
pub fn connect_raw(s: &TcpStream, addr: SocketAddrV4) -> io::Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect reads a live sockaddr_in of the size passed, on an open socket.
    let rc = unsafe {
        libc::connect(
            s.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets an integer socket option, panicking on failure.
pub fn setsockopt_int(s: &TcpStream, level: i32, opt: i32, value: i32) {
    // SAFETY: setsockopt reads one live c_int from the pointer passed, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {opt}): {}",
        io::Error::last_os_error()
    );
}
