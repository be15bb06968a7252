//! SQE builders: one function per operation ringecho submits, each tagged with its [`Token`].
//!
//! Keeping them here means the event loop reads as decisions ("arm a receive", "send this
//! span") and the kernel-facing details (flags, fixed files, buffer groups) sit in one place.
//! Each says which kernel brought it. A connection's socket is a [`Sock`]: a direct descriptor
//! (its file slot: an index into the ring's registered file table) or an ordinary file
//! descriptor; `listener: i32` is an ordinary file descriptor.
//!
//! Building an SQE is safe: it is plain data. Submitting it is not
//! (`io_uring::SubmissionQueue::push` is `unsafe`): from then until its final completion the
//! kernel reads the memory it points at, such as a send's bytes, which must stay valid and
//! unchanged all that time.

use io_uring::{opcode, squeue, types};

use crate::token::{Op, Token};

/// A connection's socket as SQEs name it.
///
/// The server accepts into direct descriptors where the kernel releases a closed one at once
/// (6.13; `Features::direct_close`): they skip the descriptor-table lookup and reference
/// counting of each operation. Before 6.13 a closed direct descriptor's socket is released
/// only once every request submitted before the close has finished, so one idle connection's
/// armed receive keeps every later-closed socket open; there the server accepts ordinary
/// descriptors, whose close releases the socket as soon as no request holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sock {
    /// A file slot in the ring's registered file table.
    Direct(u32),
    /// An ordinary file descriptor.
    Fd(i32),
}

/// Builds `$build` with `$t` bound to the socket as the opcode builders take it
/// (`types::Fixed` or `types::Fd`).
macro_rules! on_sock {
    ($sock:expr, |$t:ident| $build:expr) => {
        match $sock {
            Sock::Direct(slot) => {
                let $t = types::Fixed(slot);
                $build
            }
            Sock::Fd(fd) => {
                let $t = types::Fd(fd);
                $build
            }
        }
    };
}

/// Multishot accept on `listener`. With `direct`, each connection lands in a free file slot of
/// the registered file table (`IORING_FILE_INDEX_ALLOC`, 5.19) and the CQE's `res` is the file
/// slot; otherwise `res` is an ordinary file descriptor (5.19). `listener_idx` says which of the
/// shard's listening sockets this is; it rides in the token ([`Token::socket`]).
pub fn accept_multi(listener: i32, listener_idx: usize, direct: bool) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(listener))
        .allocate_file_index(direct)
        // A direct descriptor is in no descriptor table (and the kernel refuses CLOEXEC for
        // one); an ordinary one must not leak into a child process.
        .flags(if direct { 0 } else { libc::SOCK_CLOEXEC })
        .build()
        .user_data(Token::socket(listener_idx, Op::Accept).encode())
}

/// The socket an accept's result names (see [`accept_multi`]).
pub fn accepted(res: i32, direct: bool) -> Sock {
    if direct {
        Sock::Direct(res as u32)
    } else {
        Sock::Fd(res)
    }
}

/// A single-shot accept on `listener` (into a free file slot with `direct`): exactly one
/// connection, which is how the connection cap is kept exactly near the cap.
pub fn accept_one(listener: i32, listener_idx: usize, direct: bool) -> squeue::Entry {
    opcode::Accept::new(
        types::Fd(listener),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .file_index(direct.then(types::DestinationSlot::auto_target))
    .flags(if direct { 0 } else { libc::SOCK_CLOEXEC })
    .build()
    .user_data(Token::socket(listener_idx, Op::AcceptOne).encode())
}

/// Cancels every accept of kind `op` on listener `idx`.
pub fn cancel_accepts(idx: usize, op: Op) -> squeue::Entry {
    let target = Token::socket(idx, op).encode();
    opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target).all())
        .build()
        .user_data(Token::shard(Op::CancelAccept).encode())
}

/// Multishot receive on `sock`, picking buffers from group `bgid`. 6.0.
pub fn recv_multi(sock: Sock, bgid: u16, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::RecvMulti::new(t, bgid).build()).user_data(tok.encode())
}

/// Multishot bundle receive (6.10): each completion may cover several buffers, the one it names
/// and those that followed it in the ring.
pub fn recv_multi_bundle(sock: Sock, bgid: u16, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::RecvMultiBundle::new(t, bgid).build()).user_data(tok.encode())
}

/// `IORING_RECV_MULTISHOT`, a receive's `ioprio` flag (the crate's `sys` module is private).
pub(crate) const RECV_MULTISHOT: u16 = 1 << 1;

/// Single-shot receive of at most `len` bytes into `buf` (5.6; no provided buffer). The
/// memory at `buf` must stay valid, and untouched by user space, until the completion.
pub fn recv_into(sock: Sock, buf: *mut u8, len: u32, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::Recv::new(t, buf, len).build()).user_data(tok.encode())
}

/// Single-shot bundle receive (6.10).
pub fn recv_bundle(sock: Sock, bgid: u16, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::RecvBundle::new(t, bgid).build()).user_data(tok.encode())
}

/// Single-shot receive with buffer select from group `bgid` (the 5.19 fallback). `len` caps the
/// receive at one buffer.
pub fn recv_single(sock: Sock, bgid: u16, len: u32, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::Recv::new(t, std::ptr::null_mut(), len)
        .buf_group(bgid)
        .build())
    .flags(squeue::Flags::BUFFER_SELECT)
    .user_data(tok.encode())
}

/// Send `len` bytes at `ptr` on `sock`. When the socket's send buffer takes only part, the
/// send completes short (after waiting for room if there was none at all), and the caller
/// sends the rest. (`MSG_WAITALL` would have the kernel go on by itself, but then a send to a
/// slow reader completes only once every byte is out, and a connection making steady progress
/// looks idle to `--idle-timeout`; it measured no faster.)
///
/// The caller guarantees the memory stays valid and unchanged until the send's CQE.
pub fn send(sock: Sock, ptr: *const u8, len: u32, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::Send::new(t, ptr, len)
        .flags(libc::MSG_NOSIGNAL)
        .build())
    .user_data(tok.encode())
}

pub use crate::backend::SEND_VEC_MAX;

/// The memory a vectored send points at: a `msghdr` and its `iovec` array. Boxed, so its
/// address stays put while the kernel reads it (a connection keeps its box until the send's
/// final CQE, then hands it back for reuse).
pub struct SendVec {
    hdr: libc::msghdr,
    iov: [libc::iovec; SEND_VEC_MAX],
    len: usize,
    bytes: u64,
}

impl SendVec {
    /// An empty vector.
    pub fn new() -> Box<SendVec> {
        // SAFETY: msghdr and iovec are plain C structs for which all-zero bytes are valid
        // (null pointers, zero lengths).
        let (hdr, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        Box::new(SendVec {
            hdr,
            iov,
            len: 0,
            bytes: 0,
        })
    }

    /// Forgets every span.
    pub fn clear(&mut self) {
        self.len = 0;
        self.bytes = 0;
    }

    /// Appends `len` bytes at `ptr`. False (and nothing appended) when full.
    pub fn push(&mut self, ptr: *const u8, len: usize) -> bool {
        if self.len == SEND_VEC_MAX {
            return false;
        }
        self.iov[self.len] = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        self.len += 1;
        self.bytes += len as u64;
        true
    }

    /// Spans appended.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no span was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the spans cover.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The `msghdr` naming the spans appended, for a `sendmsg` SQE.
    fn header(&mut self) -> *const libc::msghdr {
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = self.len as _;
        &self.hdr
    }

    /// The only span, if there is exactly one.
    pub fn single(&self) -> Option<(*const u8, usize)> {
        (self.len == 1).then(|| (self.iov[0].iov_base as *const u8, self.iov[0].iov_len))
    }
}

/// Sends every span of `v`, in order, on `sock` with one `sendmsg` (5.19 for a direct
/// descriptor); it may complete short, like [`send`].
///
/// The caller guarantees that `v`, and the memory each span names, stay valid and unchanged
/// until the send's CQE.
pub fn send_vectored(sock: Sock, v: &mut SendVec, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::SendMsg::new(t, v.header())
        .flags(libc::MSG_NOSIGNAL as u32)
        .build())
    .user_data(tok.encode())
}

/// [`send_vectored`] without the copy (`IORING_OP_SENDMSG_ZC`, 6.1): two completions, like
/// [`send_zc`]'s. The caller keeps the bytes until the notification (the `msghdr` and `iovec`s
/// only until the result).
pub fn send_vectored_zc(sock: Sock, v: &mut SendVec, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::SendMsgZc::new(t, v.header())
        .flags(libc::MSG_NOSIGNAL as u32)
        .build())
    .user_data(tok.encode())
}

/// Zero-copy send (6.0): the kernel pins the pages instead of copying. Two completions: the
/// result (with `IORING_CQE_F_MORE`), then a notification (`IORING_CQE_F_NOTIF`) once the
/// kernel no longer reads the memory. The caller keeps the memory until the notification.
pub fn send_zc(sock: Sock, ptr: *const u8, len: u32, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::SendZc::new(t, ptr, len)
        .flags(libc::MSG_NOSIGNAL)
        .build())
    .user_data(tok.encode())
}

/// Cancels the request whose `user_data` is `target` (a connection's receive or send).
pub fn cancel(target: Token, tok: Token) -> squeue::Entry {
    opcode::AsyncCancel::new(target.encode())
        .build()
        .user_data(tok.encode())
}

/// Cancels every request on `sock` (5.19; a direct descriptor 6.0), so a following close
/// really releases the socket.
///
/// Convenient, but the kernel serves a descriptor match by walking every armed request of the
/// ring, once per match: closing many connections at once this way is quadratic. The server
/// cancels by `user_data` instead ([`cancel`]), a hash lookup.
pub fn cancel_all_on(sock: Sock, tok: Token) -> squeue::Entry {
    let target = on_sock!(sock, |t| types::CancelBuilder::fd(t));
    opcode::AsyncCancel2::new(target.all())
        .build()
        .user_data(tok.encode())
}

/// Cancels every request in flight on the ring (`IORING_ASYNC_CANCEL_ANY`, 5.19): the UDP
/// shard's last resort when its drain time is up. Untagged: its completion carries
/// `user_data` 0, which is no [`Token`].
pub fn cancel_any() -> squeue::Entry {
    opcode::AsyncCancel2::new(types::CancelBuilder::any()).build()
}

/// Shuts down the write side of `sock`: the peer gets FIN after every byte already sent
/// (5.11).
pub fn shutdown_write(sock: Sock, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::Shutdown::new(t, libc::SHUT_WR).build()).user_data(tok.encode())
}

/// `SOCKET_URING_OP_SIOCINQ`, the socket command that reads how many bytes wait in a
/// socket's receive queue (the crate's `sys` module is private).
const SOCKET_URING_OP_SIOCINQ: u32 = 0;

/// How many bytes wait in the TCP socket `sock`'s receive queue, as the result (`SIOCINQ`,
/// through `IORING_OP_URING_CMD`, 6.7). Takes nothing from the socket and leaves a receive
/// armed on it alone. Other socket types may answer `-EOPNOTSUPP` (Unix sockets do).
pub fn sock_inq(sock: Sock, tok: Token) -> squeue::Entry {
    let inq = SOCKET_URING_OP_SIOCINQ;
    on_sock!(sock, |t| opcode::UringCmd16::new(t, inq).build()).user_data(tok.encode())
}

/// Closes `sock` (a direct descriptor frees its file slot; 5.15 for direct descriptors).
pub fn close(sock: Sock, tok: Token) -> squeue::Entry {
    on_sock!(sock, |t| opcode::Close::new(t).build()).user_data(tok.encode())
}

/// Multishot `recvmsg` on the UDP socket `fd` (6.0): each datagram goes into a buffer of group
/// `bgid`, laid out as `struct io_uring_recvmsg_out`, then the source address (room for
/// `hdr.msg_namelen` bytes), then the payload ([`types::RecvMsgOut::parse`] reads it back).
///
/// The caller keeps `*hdr` valid and unchanged until the receive's final CQE.
pub fn recv_msg_multi(fd: i32, hdr: *const libc::msghdr, bgid: u16, tok: Token) -> squeue::Entry {
    opcode::RecvMsgMulti::new(types::Fd(fd), hdr, bgid)
        .build()
        .user_data(tok.encode())
}

/// `sendmsg` on the UDP socket `fd` (5.3): the datagram `hdr` names, to the address it names.
///
/// The caller keeps `*hdr`, its address, its `iovec`s and their bytes valid and unchanged
/// until the send's CQE.
pub fn send_msg(fd: i32, hdr: *const libc::msghdr, tok: Token) -> squeue::Entry {
    opcode::SendMsg::new(types::Fd(fd), hdr)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
        .user_data(tok.encode())
}

/// Waits (once) for `fd` to become readable: the shard's shutdown eventfd.
pub fn poll_readable(fd: i32, tok: Token) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
        .build()
        .user_data(tok.encode())
}
