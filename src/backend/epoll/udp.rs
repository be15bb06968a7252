//! UDP echo on epoll: `recvmmsg` a batch of datagrams, `sendmmsg` each back to its source.
//!
//! A datagram longer than the read buffer is flagged `MSG_TRUNC` by the kernel: it is counted
//! and dropped, never echoed short. When a socket's send buffer is full, the echoes it refused
//! are copied out of the batch and wait for `EPOLLOUT`, and the socket reads nothing more
//! until they are gone: a client that does not read its echoes slows only itself.

use std::collections::VecDeque;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};

use super::shard_epoll;
use crate::backend::shard::{ShardConfig, ShardContext, ShardEvent};
use crate::error::Error;
use crate::stats::Counters;
use crate::sys::epoll::{Epoll, Events};
use crate::sys::syscall;
use crate::token::{Op, Target, Token};

/// Datagrams per `recvmmsg`/`sendmmsg` batch.
const DGRAM_BATCH: usize = 64;
/// Events fetched per wait: at most one per socket and the shutdown eventfd.
const MAX_EVENTS: usize = 64;

/// One of the shard's sockets and the echoes it still owes.
struct Socket {
    socket: UdpSocket,
    /// The last edge said readable, and no read since found the socket empty.
    readable: bool,
    /// No send since the last `EPOLLOUT` found the send buffer full.
    writable: bool,
    /// Echoes the full send buffer refused, oldest first.
    unsent: VecDeque<Unsent>,
}

/// An echo waiting for room in the send buffer: its bytes and where they go.
struct Unsent {
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    data: Vec<u8>,
}

/// Room for one datagram of a batch besides its bytes (which are in [`Batch::bufs`]).
struct Dgram {
    /// Where it came from, and where its echo goes.
    addr: libc::sockaddr_storage,
    /// Its whole buffer, for `recvmmsg`.
    recv_iov: libc::iovec,
    /// The bytes received, for `sendmmsg`.
    send_iov: libc::iovec,
}

/// One batch of datagrams, reused for every batch: the buffers, and the two header arrays
/// `recvmmsg` and `sendmmsg` take, pointing into them.
struct Batch {
    /// `DGRAM_BATCH` buffers of `buf_size` bytes, back to back.
    bufs: Vec<u8>,
    buf_size: usize,
    /// Never resized: the headers point into it.
    dgrams: Box<[Dgram]>,
    /// One per datagram, for `recvmmsg`.
    recv: Vec<libc::mmsghdr>,
    /// The echoes of the batch (the datagrams not truncated), for `sendmmsg`.
    send: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(buf_size: usize) -> Batch {
        let dgram = || Dgram {
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            addr: unsafe { std::mem::zeroed() },
            recv_iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            send_iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        };
        Batch {
            bufs: vec![0; buf_size * DGRAM_BATCH],
            buf_size,
            dgrams: (0..DGRAM_BATCH).map(|_| dgram()).collect(),
            // SAFETY: mmsghdr is plain old data; all-zero is an empty header.
            recv: vec![unsafe { std::mem::zeroed() }; DGRAM_BATCH],
            send: Vec::with_capacity(DGRAM_BATCH),
        }
    }

    /// Receives up to a batch of datagrams from `fd` (one `recvmmsg`); returns how many.
    fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        for (i, (d, h)) in self.dgrams.iter_mut().zip(&mut self.recv).enumerate() {
            d.recv_iov = libc::iovec {
                // SAFETY: i * buf_size is within `bufs`, which holds DGRAM_BATCH buffers.
                iov_base: unsafe { base.add(i * self.buf_size) }.cast(),
                iov_len: self.buf_size,
            };
            // SAFETY: mmsghdr is plain old data; all-zero is an empty header.
            *h = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut d.addr as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut d.recv_iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each of the DGRAM_BATCH headers points at its own address and iovec in
        // `dgrams` and a `buf_size` region of `bufs`, all of which outlive the call.
        syscall!(recvmmsg(
            fd,
            self.recv.as_mut_ptr(),
            DGRAM_BATCH as u32,
            0,
            std::ptr::null_mut()
        ))
        .map(|n| n as usize)
    }

    /// Counts the `got` datagrams just received and points a send header at each one to echo
    /// (the truncated are dropped); returns how many there are.
    fn prepare_echoes(&mut self, got: usize, counters: &mut Counters) -> usize {
        self.send.clear();
        for (d, h) in self.dgrams.iter_mut().zip(&self.recv).take(got) {
            counters.recv_cqes += 1;
            counters.bytes_in += u64::from(h.msg_len);
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                counters.dgram_truncated += 1;
                continue;
            }
            d.send_iov = libc::iovec {
                iov_base: d.recv_iov.iov_base,
                iov_len: h.msg_len as usize,
            };
            // SAFETY: mmsghdr is plain old data; all-zero is an empty header.
            let mut out: libc::mmsghdr = unsafe { std::mem::zeroed() };
            out.msg_hdr.msg_name = (&mut d.addr as *mut libc::sockaddr_storage).cast();
            out.msg_hdr.msg_namelen = h.msg_hdr.msg_namelen;
            out.msg_hdr.msg_iov = &mut d.send_iov;
            out.msg_hdr.msg_iovlen = 1;
            self.send.push(out);
        }
        self.send.len()
    }

    /// Sends the echoes from the `from`-th on (one `sendmmsg`); returns how many went out.
    fn send(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let rest = &mut self.send[from..];
        // SAFETY: each header points at an address and an iovec in `dgrams`, and the iovec at
        // received bytes in `bufs`, all of which outlive the call.
        syscall!(sendmmsg(
            fd,
            rest.as_mut_ptr(),
            rest.len() as u32,
            libc::MSG_NOSIGNAL
        ))
        .map(|n| n as usize)
    }

    /// Bytes the `k`-th echo carried (set by `sendmmsg`).
    fn sent_len(&self, k: usize) -> u64 {
        u64::from(self.send[k].msg_len)
    }

    /// A copy of the `k`-th echo, to send later.
    fn unsent(&self, k: usize) -> Unsent {
        let h = &self.send[k].msg_hdr;
        // SAFETY: the header's one iovec points at the echo's received bytes in `bufs`.
        let iov = unsafe { &*h.msg_iov };
        // SAFETY: as above: `iov_len` bytes, all received.
        let data = unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) };
        // SAFETY: the header's name points at the datagram's address in `dgrams`.
        let addr = unsafe { *h.msg_name.cast::<libc::sockaddr_storage>() };
        Unsent {
            addr,
            addr_len: h.msg_namelen,
            data: data.to_vec(),
        }
    }
}

struct UdpShard {
    sockets: Vec<Socket>,
    batch: Batch,
    counters: Counters,
}

/// Runs one epoll UDP shard until shutdown.
pub(crate) fn run_shard(cfg: &ShardConfig, mut ctx: ShardContext) -> Result<(), Error> {
    let sockets: Vec<UdpSocket> = std::mem::take(&mut ctx.sockets)
        .into_iter()
        .map(UdpSocket::from)
        .collect();
    let fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let ep = shard_epoll(
        &fds,
        (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
        Op::Recv,
        ctx.shutdown_fd,
    )?;
    let max_payload = crate::backend::udp_max_payload(cfg.buf_size).max(1);
    if ctx.index == 0 {
        eprintln!(
            "ringecho: epoll udp shards={} recvmmsg/sendmmsg batch={DGRAM_BATCH} (largest datagram \
             {max_payload}B)",
            ctx.shards
        );
    }
    let mut shard = UdpShard {
        sockets: sockets
            .into_iter()
            .map(|socket| Socket {
                socket,
                readable: true,
                writable: true,
                unsent: VecDeque::new(),
            })
            .collect(),
        batch: Batch::new(max_payload as usize),
        counters: Counters::default(),
    };
    let _ = ctx.events.send(ShardEvent::Ready);
    shard.run(&ep, &ctx)
}

impl UdpShard {
    /// Waits for readiness and serves every socket, until the shutdown eventfd fires.
    fn run(&mut self, ep: &Epoll, ctx: &ShardContext) -> Result<(), Error> {
        let mut events = Events::with_capacity(MAX_EVENTS);
        loop {
            self.counters.enters += 1;
            self.counters.syscalls += 1;
            let n = ep
                .wait(&mut events, None)
                .map_err(|e| Error::io("epoll_wait", e))?;
            self.counters.events += n as u64;
            for ev in events.iter() {
                let Some(tok) = Token::decode(ev.key) else {
                    continue;
                };
                let i = match (tok.target(), tok.op()) {
                    (Target::Socket(i), _) => i,
                    (_, Op::Shutdown) => {
                        // Datagrams are not owed the way stream bytes are: stop at once.
                        ctx.stats.publish(&self.counters);
                        return Ok(());
                    }
                    _ => continue,
                };
                let s = &mut self.sockets[i];
                let bits = ev.bits as i32;
                s.readable |= bits & libc::EPOLLIN != 0;
                s.writable |= bits & libc::EPOLLOUT != 0;
            }
            for i in 0..self.sockets.len() {
                self.serve(i);
            }
            ctx.stats.publish(&self.counters);
        }
    }

    /// Sends what socket `i` still owes, then echoes batches while it is readable and owes
    /// nothing.
    fn serve(&mut self, i: usize) {
        self.send_unsent(i);
        loop {
            let s = &mut self.sockets[i];
            if !(s.readable && s.writable && s.unsent.is_empty()) {
                return;
            }
            let fd = s.socket.as_raw_fd();
            self.counters.syscalls += 1;
            let got = match self.batch.receive(fd) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.counters.conn_errors += 1;
                    return;
                }
            };
            if got < DGRAM_BATCH {
                s.readable = false;
            }
            let echoes = self.batch.prepare_echoes(got, &mut self.counters);
            self.echo(i, echoes);
        }
    }

    /// Sends the batch's `echoes` back out of socket `i`; what the full send buffer refuses is
    /// copied to the socket's unsent queue.
    fn echo(&mut self, i: usize, echoes: usize) {
        let s = &mut self.sockets[i];
        let fd = s.socket.as_raw_fd();
        let mut sent = 0;
        while sent < echoes {
            self.counters.syscalls += 1;
            match self.batch.send(fd, sent) {
                Ok(k) => {
                    for j in sent..sent + k {
                        self.counters.sends += 1;
                        self.counters.bytes_out += self.batch.sent_len(j);
                    }
                    sent += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.writable = false;
                    break;
                }
                Err(_) => {
                    // That one echo is lost; the rest may still go.
                    self.counters.conn_errors += 1;
                    sent += 1;
                }
            }
        }
        s.unsent
            .extend((sent..echoes).map(|k| self.batch.unsent(k)));
    }

    /// Sends socket `i`'s unsent echoes, oldest first, one `sendto` each, until they are gone
    /// or the send buffer is full again.
    fn send_unsent(&mut self, i: usize) {
        let s = &mut self.sockets[i];
        while s.writable
            && let Some(echo) = s.unsent.front()
        {
            self.counters.syscalls += 1;
            // SAFETY: `data` and `addr` are live for the call; `addr_len` is what recvmmsg
            // reported for `addr`.
            match syscall!(sendto(
                s.socket.as_raw_fd(),
                echo.data.as_ptr().cast(),
                echo.data.len(),
                libc::MSG_NOSIGNAL,
                (&echo.addr as *const libc::sockaddr_storage).cast(),
                echo.addr_len
            )) {
                Ok(n) => {
                    self.counters.sends += 1;
                    self.counters.bytes_out += n as u64;
                    s.unsent.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable = false,
                Err(_) => {
                    self.counters.conn_errors += 1;
                    s.unsent.pop_front();
                }
            }
        }
    }
}
