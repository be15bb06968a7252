//! The provided-buffer ring: the one place that owns the memory the kernel receives into.
//!
//! A buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19) is a ring of `struct io_uring_buf`
//! entries shared with the kernel. Each entry names one buffer (address, length, id). A receive
//! armed with `IOSQE_BUFFER_SELECT` and a buffer group id picks the buffer at the buffer
//! ring's head only when data arrives, so idle connections hold no memory; its completion says
//! which buffer (`IORING_CQE_F_BUFFER`, id in the upper 16 bits of `flags`). From then on the
//! buffer is ours until we put it back by writing a new entry at the tail and publishing the
//! tail.
//!
//! # Ownership, one buffer at a time
//!
//! ```text
//!   in the buffer ring (the kernel may fill it; user space must not read it)
//!        │  a receive CQE names it: on_completion             refs = 1 (the handler's)
//!        ▼
//!   held by user space (the kernel never writes it; a send from it reads it)
//!        │  n reply chunks were queued in it: add_refs(n)     refs = 1 + n
//!        │  the CQE has been handled: release                 refs = n
//!        │  each send of a chunk completes: release           refs - 1
//!        ▼  refs reaches 0: written at the tail; the next publish shows it to the kernel
//!   in the buffer ring again
//! ```
//!
//! That is how the server counts: the handler's reference is separate from the replies', so
//! when no reply points into the buffer (the protocol wrote a copy) the handler's `release`
//! sends it straight back. A caller can also let the handler's reference become the reply's,
//! as `examples/uring_echo.rs` does by queueing each received [`Segment`] as its echo: no
//! `add_refs`, and the one `release` comes when that echo has been sent. Either way the buffer
//! goes back when its count reaches 0, and not before.
//!
//! `examples/buf_ring.rs` walks a `BufRing` through this cycle with a plain `IoUring`.
//!
//! # Incremental consumption and bundles
//!
//! With `IOU_PBUF_RING_INC` (6.12) the kernel consumes a buffer in pieces: each completion
//! says which buffer and, with `IORING_CQE_F_BUF_MORE`, that the kernel will keep filling the
//! rest of it. The data of a completion starts where the previous one in that buffer ended, so
//! `BufRing` tracks a fill offset per buffer; the buffer leaves the buffer ring when a
//! completion for it comes without `BUF_MORE`. Until then such a buffer does not fit the
//! picture above: it is in the buffer ring (the kernel keeps filling the rest of it) *and*
//! held (each piece already handed over carries its own reference), and the pieces may belong
//! to several connections. It goes back once the kernel is done with it and the last piece's
//! reference has been released.
//!
//! Buffers come back in whatever order their replies finish, so the id written at a given
//! position of the buffer ring changes from one lap to the next. A completion names a buffer
//! id, never a position. With a bundle receive (`IORING_RECVSEND_BUNDLE`, 6.10) one
//! completion covers several buffers: the one it names and the ones at the positions that
//! followed it. `BufRing` records which id it wrote at each position, so it can tell which
//! those are.
//!
//! Either way [`BufRing::on_completion`] turns a completion into [`Segment`]s, each holding one
//! reference to its buffer.
//!
//! # Two rings, one id space
//!
//! A TCP shard has a second ring of 64 KiB buffers that streams taken whole receive into
//! (`Pools`). Its ids start where the first ring's end (a ring's `base`), so an id names one
//! buffer of one ring, and whatever holds a buffer holds just its id. Each ring keeps every
//! rule here on its own. The ids after both rings' name *piece buffers* (`PieceBufs`):
//! ordinary memory that a capped stream's single-shot receive names in its SQE, counted the
//! same way, so a piece's echo points into it as into a provided buffer.
//!
//! # Safety contract
//!
//! The caller's half is stated once, on [`BufRing::registered`], the `unsafe` constructor:
//! pass [`BufRing::on_completion`] only what this ring's receive completions say, and
//! unregister only through the same ring with no receive of the group outstanding. Everything
//! else is this module's half:
//!
//! - The buffer ring and the buffers are `mmap`ed here and unmapped in `Drop`, and only if the
//!   buffer ring is not registered any more. A `BufRing` dropped while registered leaks its
//!   memory instead of freeing memory the kernel could still write.
//! - User space reads a buffer ([`BufRing::data`]) only while it holds a reference to it, and
//!   only the bytes the kernel has handed over; a buffer goes back to the buffer ring only
//!   when its last reference is released.
//! - User space never overwrites an entry the kernel has not taken yet. The buffer ring has
//!   exactly one entry per buffer, and a buffer id is written back at the tail only after a
//!   completion handed that buffer over. So the entries between the kernel's head and the
//!   tail never name more buffers than there are entries, and the tail cannot lap the head.
//! - Registration and unregistration are made on the thread that submits to the ring
//!   (`IORING_SETUP_SINGLE_ISSUER` rejects others with `EEXIST`). A ring registers once: a
//!   second registration would restart the kernel's head against this tail.
//! - The number of entries is a power of two, at most 32768; each buffer is at most
//!   `MAX_BUF_SIZE` (16 MiB), the whole at most `MAX_RING_BYTES` (1 GiB).
//! - The kernel reads the tail (the `resv` field of entry 0) concurrently: it is only ever
//!   written with a `Release` store after the entries it covers, and entries are written field
//!   by field through raw pointers, never as a whole `io_uring_buf`.

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

use crate::error::Error;

/// The kernel's `struct io_uring_buf` (16 bytes). Entry 0's `resv` doubles as the tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// `IOU_PBUF_RING_INC`: register for incremental consumption (6.12).
const IOU_PBUF_RING_INC: u16 = 2;

/// Largest ring the kernel accepts.
pub const MAX_ENTRIES: u32 = 32768;
/// Largest buffer: a datagram or a stream's worth per receive, with room to spare. (The
/// reference counts are 32-bit, so even one-byte pieces of such a buffer never wrap them.)
pub const MAX_BUF_SIZE: u32 = 16 << 20;
/// Most memory one buffer ring may map.
pub const MAX_RING_BYTES: u64 = 1 << 30;

/// Why a buffer ring could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BufRingError {
    /// `entries` is zero, not a power of two, or above 32768.
    BadCount(u32),
    /// `buf_size` is zero or above [`MAX_BUF_SIZE`], or the ring would map more than
    /// [`MAX_RING_BYTES`].
    BadSize(u32),
    /// `mmap` failed.
    Map(io::Error),
    /// `IORING_REGISTER_PBUF_RING` failed: `EINVAL` before 5.19 (or for flags the kernel does
    /// not know), `EEXIST` if the ring already has a buffer group with this id, `ENOMEM` when
    /// `RLIMIT_MEMLOCK` is too small on older kernels.
    Register(io::Error),
}

impl std::fmt::Display for BufRingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufRingError::BadCount(n) => write!(
                f,
                "buffer count {n} must be a power of two between 1 and {MAX_ENTRIES}"
            ),
            BufRingError::BadSize(n) => write!(f, "buffer size {n} is not usable"),
            BufRingError::Map(e) => write!(f, "cannot map buffer ring memory: {e}"),
            BufRingError::Register(e) => write!(f, "cannot register the buffer ring: {e}"),
        }
    }
}

impl std::error::Error for BufRingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BufRingError::Map(e) | BufRingError::Register(e) => Some(e),
            _ => None,
        }
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory;
        // the result is checked before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made in `Mapping::new` and unmapped only here.
        // `BufRing` never lets a registered mapping reach this point (it leaks instead).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A contiguous run of received bytes inside one provided buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Buffer id.
    pub bid: u16,
    /// Offset of the first byte in the buffer.
    pub offset: u32,
    /// Number of bytes.
    pub len: u32,
}

/// A completion named buffers the buffer ring did not think the kernel had: user space and
/// kernel disagree about ownership, and nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnershipError {
    /// The buffer id in question.
    pub bid: u16,
}

impl std::fmt::Display for OwnershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a completion named buffer {} but the buffer ring did not hand it to the kernel",
            self.bid
        )
    }
}

impl std::error::Error for OwnershipError {}

/// A registered ring of provided buffers: the memory, the entries shared with the kernel, and
/// who holds each buffer. Made by [`BufRing::registered`]; see the
/// [module docs](crate::backend::uring::buf_ring) for how a buffer travels and the contract.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    bgid: u16,
    /// The id of this ring's first buffer: its buffers are ids `base..base + entries`, so
    /// that two rings of one shard never name the same id (`Pools`).
    base: u16,
    incremental: bool,
    /// Local tail: entries written but maybe not yet published.
    tail: u16,
    published_tail: u16,
    /// References held by user space, per buffer (indexed by id - `base`, as are the other
    /// per-buffer fields).
    /// (`u32`: an incremental buffer of up to `MAX_BUF_SIZE` bytes can hold that many one-byte
    /// pieces, each with its own reference.)
    refs: Vec<u32>,
    /// The buffer is out of the buffer ring: the kernel handed all of it over.
    out: Vec<bool>,
    /// Bytes the kernel has filled so far (incremental mode).
    fill: Vec<u32>,
    /// Which buffer (id - `base`) was last written at each position of the buffer ring (for
    /// bundles).
    slot_bid: Vec<u16>,
    /// The ring position (unmasked) each buffer was last written at.
    bid_pos: Vec<u16>,
    /// Buffers with at least one user-space reference.
    held: usize,
    /// Buffers out of the buffer ring.
    out_count: usize,
    registered: bool,
    /// Registered once already: a second registration would restart the kernel's head at 0
    /// against our tail and hand out entries for buffers user space holds, so it is refused.
    ever_registered: bool,
}

impl BufRing {
    /// Maps `entries` buffers of `buf_size` bytes each and a ring naming all of them, and
    /// registers it with the kernel as buffer group `bgid` (`IORING_REGISTER_PBUF_RING`, 5.19).
    /// With `incremental` the kernel may fill each buffer in several pieces
    /// (`IOU_PBUF_RING_INC`, 6.12). Every buffer starts out in the buffer ring, for the kernel
    /// to pick.
    ///
    /// Call it on the thread that submits to the ring (`IORING_SETUP_SINGLE_ISSUER` refuses
    /// others with `EEXIST`).
    ///
    /// # Safety
    ///
    /// From here on the kernel writes into this memory whenever a receive selects a buffer,
    /// and only the completions tell user space which buffer it wrote. So, for as long as
    /// the buffer ring stays registered:
    ///
    /// - Pass [`on_completion`](Self::on_completion) only what completions of this ring say:
    ///   the buffer id, result and flags of a receive that selected from group `bgid`, once
    ///   per completion, with `bundle` set exactly for bundle receives. A made-up buffer id
    ///   would mark a buffer as handed over while the kernel may still fill it, and
    ///   [`data`](Self::data) would read memory the kernel is writing.
    /// - Call [`unregister`](Self::unregister) with this same ring's submitter, and only once
    ///   no receive that selects from group `bgid` is outstanding (each one has posted its
    ///   final completion, the one without `IORING_CQE_F_MORE`). Unregistering is what lets
    ///   `Drop` unmap the memory. If that moment never comes, do not unregister: a `BufRing`
    ///   dropped while registered leaks its memory rather than free memory the kernel could
    ///   still write, and so does one whose ring was dropped first.
    ///
    /// # Example
    ///
    /// One receive into a provided buffer, and the buffer back into the buffer ring:
    ///
    /// ```
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use io_uring::{cqueue, opcode, squeue, types, IoUring};
    /// use ringecho::backend::uring::BufRing;
    ///
    /// # let Ok(mut ring) = IoUring::new(4) else { return Ok(()) }; // io_uring blocked here
    /// # /*
    /// let mut ring = IoUring::new(4)?;
    /// # */
    /// // SAFETY: only this ring's receive completions reach `on_completion`; the buffer ring
    /// // is unregistered once no receive is outstanding.
    /// let mut bufs = unsafe { BufRing::registered(&ring.submitter(), 8, 1024, 0, false)? };
    ///
    /// let (mut peer, ours) = std::os::unix::net::UnixStream::pair()?;
    /// peer.write_all(b"hi")?;
    /// let recv = opcode::Recv::new(types::Fd(ours.as_raw_fd()), std::ptr::null_mut(), 1024)
    ///     .buf_group(0)
    ///     .build()
    ///     .flags(squeue::Flags::BUFFER_SELECT);
    /// // SAFETY: the SQE points at no memory: the kernel picks a buffer from group 0.
    /// unsafe { ring.submission().push(&recv).expect("room in the queue") };
    /// ring.submit_and_wait(1)?;
    /// let cqe = ring.completion().next().expect("a completion");
    ///
    /// let bid = cqueue::buffer_select(cqe.flags()).expect("the receive took a buffer");
    /// let mut segs = Vec::new();
    /// bufs.on_completion(bid, cqe.result() as u32, cqe.flags(), false, &mut segs)?;
    /// assert_eq!(bufs.data(bid, 0, segs[0].len), b"hi");
    /// bufs.release(bid); // the last reference: back at the tail...
    /// bufs.publish(); // ...and visible to the kernel
    /// assert_eq!((bufs.held(), bufs.available()), (0, 8));
    ///
    /// bufs.unregister(&ring.submitter())?; // nothing outstanding: Drop may unmap now
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BufRingError::BadCount`] and [`BufRingError::BadSize`] for a bad geometry,
    /// [`BufRingError::Map`] if the memory cannot be mapped, [`BufRingError::Register`] if the
    /// kernel refuses the registration.
    pub unsafe fn registered(
        submitter: &Submitter<'_>,
        entries: u32,
        buf_size: u32,
        bgid: u16,
        incremental: bool,
    ) -> Result<BufRing, BufRingError> {
        // SAFETY: our caller keeps the contract above, which is the same.
        unsafe { BufRing::registered_based(submitter, (entries, buf_size), (bgid, 0), incremental) }
    }

    /// [`registered`](Self::registered), with buffer ids starting at `base`.
    ///
    /// # Safety
    ///
    /// The contract of [`registered`](Self::registered).
    unsafe fn registered_based(
        submitter: &Submitter<'_>,
        (entries, buf_size): (u32, u32),
        (bgid, base): (u16, u16),
        incremental: bool,
    ) -> Result<BufRing, BufRingError> {
        let mut br = BufRing::new_based(entries, buf_size, bgid, incremental, base)?;
        // SAFETY: our caller keeps the contract above, which is `register`'s.
        unsafe { br.register(submitter) }.map_err(BufRingError::Register)?;
        Ok(br)
    }

    /// [`registered`](Self::registered) (`entries` buffers of `buf_size` bytes), failing
    /// with the error this crate's loops (the server's shards, the load generator's
    /// transports) report: a geometry or mapping failure is a configuration error; a refused
    /// registration names the size asked for and the usual cause, a `RLIMIT_MEMLOCK` too
    /// small for it (older kernels count buffer rings against it).
    ///
    /// # Safety
    ///
    /// The contract of [`registered`](Self::registered).
    pub(crate) unsafe fn create_and_register(
        submitter: &Submitter<'_>,
        (entries, buf_size): (u32, u32),
        (bgid, base): (u16, u16),
        incremental: bool,
    ) -> Result<BufRing, Error> {
        // SAFETY: our caller keeps the contract, which is the same.
        match unsafe {
            BufRing::registered_based(submitter, (entries, buf_size), (bgid, base), incremental)
        } {
            Ok(br) => Ok(br),
            Err(BufRingError::Register(e)) => Err(Error::io(
                format!(
                    "cannot register a buffer ring of {entries} x {buf_size} bytes \
                     (RLIMIT_MEMLOCK?)"
                ),
                e,
            )),
            Err(e) => Err(Error::Config(e.to_string())),
        }
    }

    /// Maps a ring of `entries` buffers of `buf_size` bytes each, for buffer group `bgid`.
    /// With `incremental`, the buffer ring is registered for incremental consumption (6.12).
    /// Every buffer starts out in the buffer ring (after [`register`](Self::register)).
    ///
    /// With [`register`](Self::register), the two halves of [`registered`](Self::registered),
    /// for the start-up probes, which tell a refused registration from other failures.
    pub(crate) fn new(
        entries: u32,
        buf_size: u32,
        bgid: u16,
        incremental: bool,
    ) -> Result<BufRing, BufRingError> {
        BufRing::new_based(entries, buf_size, bgid, incremental, 0)
    }

    /// [`new`](Self::new), with buffer ids starting at `base` (`entries` ids from there must
    /// fit in 16 bits).
    pub(crate) fn new_based(
        entries: u32,
        buf_size: u32,
        bgid: u16,
        incremental: bool,
        base: u16,
    ) -> Result<BufRing, BufRingError> {
        if entries == 0
            || !entries.is_power_of_two()
            || entries > MAX_ENTRIES
            || u32::from(base) + entries > 1 << 16
        {
            return Err(BufRingError::BadCount(entries));
        }
        let total = (entries as usize)
            .checked_mul(buf_size as usize)
            .filter(|&t| (1..=MAX_BUF_SIZE).contains(&buf_size) && t as u64 <= MAX_RING_BYTES)
            .ok_or(BufRingError::BadSize(buf_size))?;
        let ring = Mapping::new(entries as usize * std::mem::size_of::<RawBuf>())
            .map_err(BufRingError::Map)?;
        let bufs = Mapping::new(total).map_err(BufRingError::Map)?;
        let n = entries as usize;
        let mut br = BufRing {
            ring,
            bufs,
            entries: entries as u16,
            buf_size,
            bgid,
            base,
            incremental,
            tail: 0,
            published_tail: 0,
            refs: vec![0; n],
            out: vec![true; n],
            fill: vec![0; n],
            slot_bid: vec![0; n],
            bid_pos: vec![0; n],
            held: 0,
            out_count: n,
            registered: false,
            ever_registered: false,
        };
        for b in 0..n {
            br.push_entry(b);
        }
        Ok(br)
    }

    /// Registers the buffer ring with the kernel as buffer group `bgid` and publishes every
    /// buffer: the second half of [`registered`](Self::registered). A second registration is
    /// refused with `EEXIST`.
    ///
    /// # Safety
    ///
    /// From a successful return on, the contract of [`registered`](Self::registered).
    pub(crate) unsafe fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.ever_registered {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let flags = if self.incremental {
            IOU_PBUF_RING_INC
        } else {
            0
        };
        // SAFETY: the ring memory is a live mapping of `entries` entries owned by `self`; it stays
        // mapped until `unregister` succeeds, or forever (leaked in `Drop`) if it never does.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                self.entries,
                self.bgid,
                flags,
            )?;
        }
        self.registered = true;
        self.ever_registered = true;
        self.publish();
        Ok(())
    }

    /// Unregisters the buffer ring, so that `Drop` may unmap its memory. Only with the ring it
    /// was registered with, and only once no receive selecting from this group is outstanding
    /// (see [`registered`](Self::registered)).
    pub fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if self.registered {
            submitter.unregister_buf_ring(self.bgid)?;
            self.registered = false;
        }
        Ok(())
    }

    /// Buffer group id.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Number of buffers.
    pub fn count(&self) -> u32 {
        u32::from(self.entries)
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Whether buffers are consumed incrementally.
    pub fn is_incremental(&self) -> bool {
        self.incremental
    }

    /// Buffers user space holds references to (owed data, or a completion being handled).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Buffers in the buffer ring, ready for the kernel to fill (counting unpublished returns).
    pub fn available(&self) -> usize {
        self.count() as usize - self.out_count
    }

    /// Accounts for a receive completion that put `res` bytes into buffer `bid` (and, for a
    /// `bundle`, the buffers that followed it in the buffer ring); `flags` are the CQE's.
    /// Appends one [`Segment`] per buffer to `segs`, each holding one new reference that the
    /// caller drops with [`release`](Self::release) once it has used (or taken its own
    /// references to) the bytes.
    ///
    /// Where the bytes lie: in an incremental ring they start where the kernel's last fill of
    /// `bid` ended, otherwise at its start; a bundle's bytes run on into the buffers at the
    /// positions that followed `bid`'s, from their starts, each filled before the next. Every
    /// buffer but the last is then used up and out of the ring; the last one too, unless the
    /// ring is incremental and the kernel set `IORING_CQE_F_BUF_MORE` (it keeps filling the
    /// rest of it).
    pub fn on_completion(
        &mut self,
        bid: u16,
        res: u32,
        flags: u32,
        bundle: bool,
        segs: &mut Vec<Segment>,
    ) -> Result<(), OwnershipError> {
        let first = segs.len();
        let laid_out = self.lay_out(bid, res, bundle, segs);
        if let Err(e) = laid_out {
            // A disagreement changes nothing.
            segs.truncate(first);
            return Err(e);
        }
        let last = segs.len() - 1;
        for (k, seg) in segs.iter().enumerate().skip(first) {
            let i = self.held_index(seg.bid);
            self.fill[i] += seg.len;
            let kernel_keeps_it =
                k == last && self.incremental && io_uring::cqueue::buffer_more(flags);
            if !kernel_keeps_it {
                self.out[i] = true;
                self.out_count += 1;
            }
            self.add_ref(i);
        }
        Ok(())
    }

    /// The segments a completion of `res` bytes starting in `bid` covers (see
    /// [`on_completion`](Self::on_completion)), checked against what the buffer ring handed
    /// the kernel; appended to `segs`, nothing else changed.
    fn lay_out(
        &self,
        bid: u16,
        res: u32,
        bundle: bool,
        segs: &mut Vec<Segment>,
    ) -> Result<(), OwnershipError> {
        let Some(b) = self.index(bid).filter(|&b| !self.out[b]) else {
            return Err(OwnershipError { bid });
        };
        // Only an incremental ring has a partly filled buffer; otherwise `fill` is 0.
        let offset = self.fill[b];
        let len = res.min(self.buf_size - offset);
        if len < res && !bundle {
            return Err(OwnershipError { bid });
        }
        segs.push(Segment { bid, offset, len });
        let mut left = res - len;
        let start = self.bid_pos[b];
        let mask = self.entries.wrapping_sub(1);
        let mut k: u16 = 0;
        while left > 0 {
            k += 1;
            if u32::from(k) >= self.count() {
                return Err(OwnershipError { bid });
            }
            let pos = start.wrapping_add(k);
            let i = usize::from(self.slot_bid[(pos & mask) as usize]);
            let id = self.base + i as u16;
            if self.out[i] || self.bid_pos[i] != pos || self.fill[i] != 0 {
                return Err(OwnershipError { bid: id });
            }
            let len = left.min(self.buf_size);
            segs.push(Segment {
                bid: id,
                offset: 0,
                len,
            });
            left -= len;
        }
        Ok(())
    }

    /// Index of buffer `bid` in the per-buffer fields, if this ring has it.
    fn index(&self, bid: u16) -> Option<usize> {
        bid.checked_sub(self.base)
            .map(usize::from)
            .filter(|&b| b < self.refs.len())
    }

    /// Whether buffer `bid` is one of this ring's.
    pub fn owns(&self, bid: u16) -> bool {
        self.index(bid).is_some()
    }

    /// Index of buffer `bid`, which the caller says is this ring's.
    ///
    /// # Panics
    ///
    /// If it is not.
    fn held_index(&self, bid: u16) -> usize {
        self.index(bid)
            .expect("a buffer id of another ring (or none)")
    }

    fn add_ref(&mut self, b: usize) {
        let r = &mut self.refs[b];
        if *r == 0 {
            self.held += 1;
        }
        *r += 1;
    }

    /// Adds `n` references to a held buffer: say, one per reply that will be sent from it.
    ///
    /// # Panics
    ///
    /// If nobody holds `bid`: the buffer may be in the buffer ring, where the kernel can fill
    /// it.
    pub fn add_refs(&mut self, bid: u16, n: u32) {
        let b = self.held_index(bid);
        let r = &mut self.refs[b];
        assert!(*r > 0, "add_refs on a buffer nobody holds");
        *r = r
            .checked_add(n)
            .expect("a buffer's reference count overflowed");
    }

    /// Drops one reference. When the last one goes and the kernel is done with the buffer, it
    /// goes back in the buffer ring (published at the next [`publish`](Self::publish)).
    pub fn release(&mut self, bid: u16) {
        let b = self.held_index(bid);
        debug_assert!(self.refs[b] > 0, "release of a buffer nobody holds");
        if self.refs[b] == 0 {
            return;
        }
        self.refs[b] -= 1;
        if self.refs[b] == 0 {
            self.held -= 1;
            if self.out[b] {
                self.push_entry(b);
            }
        }
    }

    /// `len` bytes at `offset` of buffer `bid`, which the caller holds a reference to.
    ///
    /// # Panics
    ///
    /// If nobody holds `bid`, or the range is outside the buffer (outside what the kernel has
    /// filled so far, for an incremental ring).
    pub fn data(&self, bid: u16, offset: u32, len: u32) -> &[u8] {
        let b = self.held_index(bid);
        assert!(self.refs[b] > 0, "reading a buffer nobody holds");
        let end = u64::from(offset) + u64::from(len);
        assert!(end <= u64::from(self.buf_size));
        // An incremental buffer may still be in the ring, the kernel filling it past `fill`.
        assert!(!self.incremental || end <= u64::from(self.fill[b]));
        // SAFETY: the caller holds a reference to `bid`, and the range lies in bytes the kernel
        // has filled and handed over (it writes only past `fill` in incremental mode, nowhere in
        // a buffer out of the ring); the range is inside the buffer, inside the `bufs` mapping.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(b).add(offset as usize), len as usize) }
    }

    /// Address of byte `offset` of held buffer `bid`, for a send SQE.
    pub fn addr(&self, bid: u16, offset: u32) -> *const u8 {
        let b = self.held_index(bid);
        debug_assert!(self.refs[b] > 0);
        debug_assert!(offset <= self.buf_size);
        // SAFETY: in bounds of the `bufs` mapping (b < count, offset <= buf_size).
        unsafe { self.buf_ptr(b).add(offset as usize) }
    }

    /// Start of the buffer at index `b` (its id less `base`).
    fn buf_ptr(&self, b: usize) -> *mut u8 {
        assert!(b < self.refs.len());
        // SAFETY: b < count, so the offset stays inside the `bufs` mapping.
        unsafe { self.bufs.ptr.as_ptr().add(b * self.buf_size as usize) }
    }

    /// Writes a whole-buffer entry for the buffer at index `b` (id `base + b`) at the local
    /// tail (not yet visible to the kernel).
    fn push_entry(&mut self, b: usize) {
        debug_assert!(self.out[b]);
        self.out[b] = false;
        self.out_count -= 1;
        self.fill[b] = 0;
        let mask = self.entries.wrapping_sub(1);
        let idx = (self.tail & mask) as usize;
        self.slot_bid[idx] = b as u16;
        self.bid_pos[b] = self.tail;
        let addr = self.buf_ptr(b) as u64;
        let bid = self.base + b as u16;
        // SAFETY: idx < entries, inside the ring mapping. The slot is past the published tail,
        // so the kernel does not read it until `publish`. Fields are written one by one so the
        // `resv` field (which is the tail for entry 0) is never touched.
        unsafe {
            let e = self.ring.ptr.as_ptr().cast::<RawBuf>().add(idx);
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.buf_size);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes returned buffers visible to the kernel (one `Release` store, if anything changed).
    pub fn publish(&mut self) {
        if self.tail == self.published_tail || !self.registered {
            return;
        }
        // SAFETY: entry 0's `resv` field is the ring tail the kernel reads; it is 2-byte aligned
        // inside the live ring mapping. Only this thread writes it.
        let tail = unsafe {
            &*(ptr::addr_of_mut!((*self.ring.ptr.as_ptr().cast::<RawBuf>()).resv)
                as *const AtomicU16)
        };
        tail.store(self.tail, Ordering::Release);
        self.published_tail = self.tail;
    }
}

/// A TCP shard's provided buffers: the ring every receive may pick from, and a second ring
/// of larger buffers that receives of streams pick from while it has any (`--stream-bufs`).
///
/// A stream received into small buffers is sent back from many of them: a 64 KiB window in
/// 4 KiB buffers is sixteen pieces of memory for the kernel to copy into and then out of,
/// where one large buffer is one. Their ids never overlap (the large ring's start after the
/// small ring's), so an id alone says which ring a buffer is in, and everything that holds
/// buffers (replies, sends) keeps holding bare ids. Each ring keeps its own safety contract
/// ([`BufRing::registered`]).
pub(crate) struct Pools {
    /// The ring every receive may pick from.
    pub small: BufRing,
    /// Large buffers for streams, if any.
    pub large: Option<BufRing>,
    /// Receives armed on the large ring since the last enter: each will take at least one of
    /// its buffers, so the ring is empty for the next one once they match what it has.
    large_armed: usize,
    /// Piece buffers for capped streams' single-shot receives; ids after both rings'.
    pub pieces: PieceBufs,
}

/// Buffers a capped stream's piece receive writes into: ordinary memory named in the SQE, not
/// provided to the kernel, but counted like ring buffers, so that a piece's echo can point
/// into it. A buffer is lent to one receive (one reference, the receive's), each reply chunk
/// queued in it takes one more, and it is free again when the last goes: the free list hands
/// out the last-freed buffer first, still in cache. Made on first use, at most `max`, and
/// freed only with the shard, so a buffer outlives every operation and reply that names it.
pub(crate) struct PieceBufs {
    base: u16,
    size: usize,
    max: usize,
    bufs: Vec<Box<[u8]>>,
    refs: Vec<u32>,
    free: Vec<u16>,
    held: usize,
    /// Lent to a receive still in flight (held, but holding no data yet).
    armed: usize,
}

impl PieceBufs {
    /// Piece buffers of `size` bytes with ids from `base`, at most `max` of them.
    pub fn new(base: u16, size: usize, max: usize) -> PieceBufs {
        assert!(
            usize::from(base) + max <= usize::from(u16::MAX),
            "piece ids overflow"
        );
        PieceBufs {
            base,
            size,
            max,
            bufs: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            held: 0,
            armed: 0,
        }
    }

    /// Bytes in each buffer (what one receive may take).
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    fn owns(&self, bid: u16) -> bool {
        bid >= self.base && usize::from(bid - self.base) < self.bufs.len()
    }

    fn index(&self, bid: u16) -> usize {
        assert!(self.owns(bid), "not a piece buffer");
        usize::from(bid - self.base)
    }

    /// Lends a free buffer to a receive: its id and where the kernel may write `size` bytes.
    /// It holds one reference (the receive's) until [`release`](Self::release). None when all
    /// `max` are held.
    pub fn lend(&mut self) -> Option<(u16, *mut u8)> {
        let b = match self.free.pop() {
            Some(b) => usize::from(b),
            None if self.bufs.len() < self.max => {
                self.bufs.push(vec![0; self.size].into_boxed_slice());
                self.refs.push(0);
                self.bufs.len() - 1
            }
            None => return None,
        };
        debug_assert_eq!(self.refs[b], 0);
        self.refs[b] = 1;
        self.held += 1;
        self.armed += 1;
        Some((self.base + b as u16, self.bufs[b].as_mut_ptr()))
    }

    /// The receive buffer `bid` was lent to has completed: it holds data now (or nothing, and
    /// its reference goes at the next release), no longer a receive's empty buffer.
    pub fn received(&mut self, bid: u16) {
        let b = self.index(bid);
        debug_assert!(self.refs[b] > 0);
        self.armed -= 1;
    }

    fn add_refs(&mut self, bid: u16, n: u32) {
        let b = self.index(bid);
        assert!(self.refs[b] > 0, "add_refs on a piece buffer nobody holds");
        self.refs[b] = self.refs[b]
            .checked_add(n)
            .expect("a buffer's reference count overflowed");
    }

    fn release(&mut self, bid: u16) {
        let b = self.index(bid);
        assert!(self.refs[b] > 0, "release of a piece buffer nobody holds");
        self.refs[b] -= 1;
        if self.refs[b] == 0 {
            self.held -= 1;
            self.free.push(b as u16);
        }
    }

    fn data(&self, bid: u16, offset: u32, len: u32) -> &[u8] {
        let b = self.index(bid);
        assert!(self.refs[b] > 0, "reading a piece buffer nobody holds");
        &self.bufs[b][offset as usize..][..len as usize]
    }

    fn addr(&self, bid: u16, offset: u32) -> *const u8 {
        let b = self.index(bid);
        debug_assert!(self.refs[b] > 0);
        self.bufs[b][offset as usize..].as_ptr()
    }

    /// Buffers holding received data (its handler's, or replies' references); those lent to
    /// a receive still in flight do not count, as provided buffers still in the ring do not.
    pub fn held(&self) -> usize {
        self.held - self.armed
    }
}

impl Pools {
    /// The shard's rings: `large`'s ids must start after `small`'s. Piece buffers (at most
    /// `pieces` of `piece_size` bytes) take the ids after both.
    pub fn new(small: BufRing, large: Option<BufRing>, pieces: usize, piece_size: usize) -> Pools {
        if let Some(l) = &large {
            assert!(
                u32::from(l.base) >= u32::from(small.base) + small.count(),
                "the rings' ids overlap"
            );
        }
        let last = large.as_ref().unwrap_or(&small);
        let base = u32::from(last.base) + last.count();
        let base = u16::try_from(base).expect("buffer ids fit in 16 bits");
        Pools {
            small,
            large,
            large_armed: 0,
            pieces: PieceBufs::new(base, piece_size, pieces),
        }
    }

    fn ring(&self, bid: u16) -> &BufRing {
        match &self.large {
            Some(l) if l.owns(bid) => l,
            _ => &self.small,
        }
    }

    fn ring_mut(&mut self, bid: u16) -> &mut BufRing {
        match &mut self.large {
            Some(l) if l.owns(bid) => l,
            _ => &mut self.small,
        }
    }

    /// [`BufRing::on_completion`] on the ring that owns `bid`.
    pub fn on_completion(
        &mut self,
        bid: u16,
        res: u32,
        flags: u32,
        bundle: bool,
        segs: &mut Vec<Segment>,
    ) -> Result<(), OwnershipError> {
        // An id neither ring has is refused by the small one.
        self.ring_mut(bid)
            .on_completion(bid, res, flags, bundle, segs)
    }

    /// [`BufRing::add_refs`] on the ring that owns `bid`.
    pub fn add_refs(&mut self, bid: u16, n: u32) {
        if self.pieces.owns(bid) {
            return self.pieces.add_refs(bid, n);
        }
        self.ring_mut(bid).add_refs(bid, n);
    }

    /// [`BufRing::release`] on the ring that owns `bid` (or the piece buffers).
    pub fn release(&mut self, bid: u16) {
        if self.pieces.owns(bid) {
            return self.pieces.release(bid);
        }
        self.ring_mut(bid).release(bid);
    }

    /// [`BufRing::data`] on the ring that owns `bid` (or the piece buffers).
    pub fn data(&self, bid: u16, offset: u32, len: u32) -> &[u8] {
        if self.pieces.owns(bid) {
            return self.pieces.data(bid, offset, len);
        }
        self.ring(bid).data(bid, offset, len)
    }

    /// [`BufRing::addr`] on the ring that owns `bid` (or the piece buffers).
    pub fn addr(&self, bid: u16, offset: u32) -> *const u8 {
        if self.pieces.owns(bid) {
            return self.pieces.addr(bid, offset);
        }
        self.ring(bid).addr(bid, offset)
    }

    /// Whether owed data may keep holding buffer `bid` (else its bytes are copied out): both
    /// rings and the piece buffers hold at most `budget` buffers between them (a large buffer
    /// counts as one), and the large ring, or the piece buffers, at most half of their own (the
    /// rest stay for other streams). Asked while the completion still holds all of its
    /// buffers, so a bundle of more than half the large ring is copied out whole.
    pub fn may_hold(&self, bid: u16, budget: usize) -> bool {
        if self.pieces.owns(bid) {
            // And half the piece buffers at most, so that other streams' receives find one.
            return self.held() <= budget && self.pieces.held() * 2 <= self.pieces.max;
        }
        let large_ok = match &self.large {
            Some(l) if l.owns(bid) => l.held() <= l.count() as usize / 2,
            _ => true,
        };
        large_ok && self.held() <= budget
    }

    /// Whether buffer `bid` is one of the large ring's.
    pub fn is_large(&self, bid: u16) -> bool {
        self.large.as_ref().is_some_and(|l| l.owns(bid))
    }

    /// Buffers held, in both rings and the piece buffers.
    pub fn held(&self) -> usize {
        self.small.held() + self.large.as_ref().map_or(0, BufRing::held) + self.pieces.held()
    }

    /// The large ring's group for a receive about to be armed, if the receives already armed
    /// on it since the last enter leave it a buffer, and owed data may still hold what it
    /// brings ([`may_hold`](Self::may_hold) with `budget`: past it the bytes would be copied
    /// out, and large buffers would only let more of them in per turn); counted as armed.
    pub fn arm_large(&mut self, budget: usize) -> Option<u16> {
        let l = self.large.as_ref()?;
        let room = self.held() < budget && l.held() * 2 < l.count() as usize;
        (room && l.available() > self.large_armed).then(|| {
            self.large_armed += 1;
            l.bgid()
        })
    }

    /// [`BufRing::publish`] on both rings, just before an enter (which takes the buffers of
    /// the receives armed so far).
    pub fn publish(&mut self) {
        self.large_armed = 0;
        self.small.publish();
        if let Some(l) = &mut self.large {
            l.publish();
        }
    }

    /// [`BufRing::unregister`] on both rings, under the same condition (no receive of either
    /// group outstanding).
    pub fn unregister(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        if let Some(l) = &mut self.large {
            l.unregister(submitter)?;
        }
        self.small.unregister(submitter)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still pick these buffers: never free them.
            std::mem::forget(std::mem::replace(
                &mut self.bufs,
                Mapping {
                    ptr: NonNull::dangling(),
                    len: 0,
                },
            ));
            std::mem::forget(std::mem::replace(
                &mut self.ring,
                Mapping {
                    ptr: NonNull::dangling(),
                    len: 0,
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `IORING_CQE_F_BUF_MORE`.
    const F_BUF_MORE: u32 = 1 << 4;

    #[test]
    fn piece_buffers_are_lent_again_only_when_unheld_last_freed_first() {
        let mut p = PieceBufs::new(100, 64, 2);
        let (a, pa) = p.lend().expect("a first buffer");
        let (b, _) = p.lend().expect("a second buffer");
        assert_eq!((a, b), (100, 101), "ids follow the base");
        assert!(p.lend().is_none(), "at most `max`");
        assert_eq!(
            p.held(),
            0,
            "lent to receives in flight, holding no data yet"
        );
        p.received(a);
        p.received(b);
        assert_eq!(p.held(), 2);
        // A reply takes a reference; the receive's goes: still held, not lent.
        p.add_refs(a, 1);
        p.release(a);
        assert!(p.lend().is_none(), "a buffer a reply names is not lent");
        assert_eq!(
            p.data(a, 0, 64).as_ptr(),
            pa.cast_const(),
            "the memory lent"
        );
        p.release(b);
        p.release(a);
        assert_eq!(p.held(), 0);
        // The last one freed comes back first (still in cache).
        assert_eq!(p.lend().map(|(id, _)| id), Some(a));
        assert_eq!(p.lend().map(|(id, _)| id), Some(b));
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(matches!(
            BufRing::new(0, 64, 0, false),
            Err(BufRingError::BadCount(0))
        ));
        assert!(matches!(
            BufRing::new(3, 64, 0, false),
            Err(BufRingError::BadCount(3))
        ));
        assert!(matches!(
            BufRing::new(65536, 64, 0, false),
            Err(BufRingError::BadCount(_))
        ));
        assert!(matches!(
            BufRing::new(8, 0, 0, false),
            Err(BufRingError::BadSize(0))
        ));
    }

    #[test]
    fn a_buffer_returns_only_after_the_last_reference() {
        let mut br = BufRing::new(32768, 16, 0, false).unwrap();
        assert_eq!(br.available(), 32768);
        let mut segs = vec![];
        br.on_completion(5, 10, 0, false, &mut segs).unwrap();
        assert_eq!(
            segs,
            vec![Segment {
                bid: 5,
                offset: 0,
                len: 10
            }]
        );
        assert_eq!(
            br.on_completion(5, 3, 0, false, &mut segs),
            Err(OwnershipError { bid: 5 })
        );
        assert_eq!(
            br.on_completion(40000, 3, 0, false, &mut segs),
            Err(OwnershipError { bid: 40000 })
        );
        br.add_refs(5, 2);
        br.release(5);
        br.release(5);
        assert_eq!((br.held(), br.available()), (1, 32767));
        br.release(5);
        assert_eq!((br.held(), br.available()), (0, 32768));
        segs.clear();
        br.on_completion(5, 1, 0, false, &mut segs).unwrap();
    }

    /// With incremental consumption a large buffer can hold more one-byte pieces than a
    /// 16-bit count can number (each a reply's reference). The count must not wrap, or the
    /// buffer would go back to the kernel while replies still point into it.
    #[test]
    fn a_buffer_holds_more_than_65535_references_and_returns_only_after_the_last() {
        let mut br = BufRing::new(2, 1 << 20, 0, true).unwrap();
        let mut segs = vec![];
        br.on_completion(0, 100_000, F_BUF_MORE, false, &mut segs)
            .unwrap();
        let pieces = 70_000;
        br.add_refs(0, pieces);
        br.release(0); // the completion's own reference
        for _ in 0..pieces - 1 {
            br.release(0);
        }
        assert_eq!(br.held(), 1, "one reference is left");
        br.release(0);
        assert_eq!(br.held(), 0);
    }

    #[test]
    fn entries_are_written_at_the_tail_with_their_ids() {
        let mut br = BufRing::new(4, 8, 1, false).unwrap();
        assert_eq!(br.tail, 4);
        br.on_completion(2, 8, 0, false, &mut vec![]).unwrap();
        br.release(2);
        assert_eq!(br.tail, 5);
        // SAFETY (test): entry 0 lies inside the ring mapping.
        let e0 = unsafe { &*br.ring.ptr.as_ptr().cast::<RawBuf>() };
        assert_eq!(e0.bid, 2, "slot 4 & 3 == 0 now names buffer 2");
        assert_eq!(e0.len, 8);
        assert_eq!(e0.addr, br.buf_ptr(2) as u64);

        // A ring whose ids start at 1000: the kernel is given id 1000 + index.
        let mut br = BufRing::new_based(4, 8, 1, false, 1000).unwrap();
        br.on_completion(1002, 8, 0, false, &mut vec![]).unwrap();
        assert!(br.on_completion(2, 8, 0, false, &mut vec![]).is_err());
        br.release(1002);
        // SAFETY (test): entry 0 lies inside the ring mapping.
        let e0 = unsafe { &*br.ring.ptr.as_ptr().cast::<RawBuf>() };
        assert_eq!(e0.bid, 1002);
        assert_eq!(e0.addr, br.buf_ptr(2) as u64);
    }

    #[test]
    fn incremental_buffers_hand_out_consecutive_pieces_and_return_when_the_kernel_is_done() {
        let mut br = BufRing::new(4, 100, 0, true).unwrap();
        let mut segs = vec![];
        br.on_completion(0, 30, F_BUF_MORE, false, &mut segs)
            .unwrap();
        br.on_completion(0, 50, F_BUF_MORE, false, &mut segs)
            .unwrap();
        assert_eq!(
            segs[1],
            Segment {
                bid: 0,
                offset: 30,
                len: 50
            }
        );
        br.release(0);
        br.release(0);
        assert_eq!(
            br.available(),
            4,
            "the kernel still fills buffer 0: not returned, not out"
        );
        br.on_completion(0, 20, 0, false, &mut segs).unwrap();
        assert_eq!(
            segs[2],
            Segment {
                bid: 0,
                offset: 80,
                len: 20
            }
        );
        assert_eq!(br.available(), 3);
        assert_eq!(
            br.on_completion(0, 1, 0, false, &mut segs),
            Err(OwnershipError { bid: 0 }),
            "a finished buffer cannot be filled further"
        );
        br.release(0);
        assert_eq!(br.available(), 4);
        assert_eq!(br.fill[0], 0);
    }

    #[test]
    fn two_rings_share_one_id_space_and_each_id_finds_its_own_ring() {
        let small = BufRing::new(4, 10, 0, false).unwrap();
        let large = BufRing::new_based(2, 100, 1, false, 4).unwrap();
        // (Two large buffers, so holding both is more than half of them.)
        assert!(
            BufRing::new_based(2, 100, 1, false, 65535).is_err(),
            "ids past 65535"
        );
        let mut pools = Pools::new(small, Some(large), 4, 4096);
        let mut segs = vec![];
        assert!(
            pools.on_completion(6, 5, 0, false, &mut segs).is_err(),
            "no ring has id 6"
        );
        // A bundle in the large ring: ids 4 and 5, the second one's bytes from its start.
        pools.on_completion(4, 150, 0, true, &mut segs).unwrap();
        assert_eq!(
            segs,
            vec![
                Segment {
                    bid: 4,
                    offset: 0,
                    len: 100
                },
                Segment {
                    bid: 5,
                    offset: 0,
                    len: 50
                }
            ]
        );
        assert!(pools.is_large(5) && !pools.is_large(3));
        assert_eq!(pools.arm_large(100), None, "both large buffers are out");
        pools.on_completion(0, 7, 0, false, &mut segs).unwrap();
        assert_eq!(
            (
                pools.held(),
                pools.small.available() + pools.large.as_ref().unwrap().available()
            ),
            (3, 3)
        );
        assert!(
            pools.may_hold(0, 3) && !pools.may_hold(0, 2),
            "the budget counts both"
        );
        assert!(!pools.may_hold(4, 100), "no more than half the large ring");
        pools.release(5);
        pools.publish();
        assert_eq!(
            pools.arm_large(100),
            None,
            "id 5 is back, but owed data holds half the large ring already"
        );
        pools.release(4);
        pools.publish();
        assert_eq!(pools.arm_large(2), Some(1), "both are back");
        assert_eq!(
            pools.arm_large(2),
            Some(1),
            "a second receive takes the other"
        );
        assert_eq!(pools.arm_large(2), None, "and a third finds none left");
        pools.publish();
        assert_eq!(pools.arm_large(2), Some(1), "until the enter");
        assert_eq!(pools.arm_large(1), None, "nor when the budget is spent");
        assert_eq!(pools.small.available(), 3, "and not in the small one");
        pools.release(0);
        assert_eq!(
            (
                pools.held(),
                pools.small.available() + pools.large.as_ref().unwrap().available()
            ),
            (0, 6)
        );
    }

    #[test]
    fn bundles_cover_the_buffers_that_followed_in_the_ring() {
        let mut br = BufRing::new(4, 10, 0, false).unwrap();
        // Recycle buffer 1 so the ring order is 0, 2, 3, 1.
        br.on_completion(0, 5, 0, false, &mut vec![]).unwrap();
        br.on_completion(1, 5, 0, false, &mut vec![]).unwrap();
        br.release(1);
        br.release(0);
        // Ring order now (from slot 2): 2, 3, 1, 0.
        let mut segs = vec![];
        br.on_completion(2, 25, 0, true, &mut segs).unwrap();
        let ids: Vec<u16> = segs.iter().map(|s| s.bid).collect();
        assert_eq!(ids, vec![2, 3, 1]);
        assert_eq!(segs.iter().map(|s| s.len).sum::<u32>(), 25);
        assert_eq!(segs[2].len, 5);
        // A bundle that would run into a buffer already out is refused, changing nothing.
        assert!(br.on_completion(0, 20, 0, true, &mut vec![]).is_err());
        assert_eq!(br.available(), 1);
    }

    #[test]
    fn incremental_bundles_start_where_the_last_fill_ended_and_run_into_the_next_buffers() {
        let mut br = BufRing::new(4, 10, 0, true).unwrap();
        let mut segs = vec![];
        br.on_completion(0, 4, F_BUF_MORE, true, &mut segs).unwrap();
        // 6 bytes finish buffer 0, 10 fill buffer 1, 3 start buffer 2, which the kernel keeps.
        br.on_completion(0, 19, F_BUF_MORE, true, &mut segs)
            .unwrap();
        let seg = |bid, offset, len| Segment { bid, offset, len };
        assert_eq!(
            segs,
            [seg(0, 0, 4), seg(0, 4, 6), seg(1, 0, 10), seg(2, 0, 3)]
        );
        assert_eq!(
            br.available(),
            2,
            "buffers 0 and 1 are out, 2 is still filling"
        );
        // Buffer 2 goes on from byte 3; ending exactly at its end without BUF_MORE uses it up.
        br.on_completion(2, 7, 0, true, &mut segs).unwrap();
        assert_eq!(segs[4], seg(2, 3, 7));
        assert_eq!(br.available(), 1);
        for s in &segs {
            br.release(s.bid);
        }
        assert_eq!((br.held(), br.available()), (0, 4));
        // Without BUF_MORE the last buffer of a bundle is out even if not full.
        segs.clear();
        br.on_completion(3, 12, 0, true, &mut segs).unwrap();
        assert_eq!(segs, [seg(3, 0, 10), seg(0, 0, 2)]);
        assert_eq!(br.available(), 2);
        // More than the buffers that follow can hold is refused, changing nothing.
        let before = segs.clone();
        assert!(br.on_completion(1, 41, 0, true, &mut segs).is_err());
        assert_eq!((segs, br.available()), (before, 2));
    }
}
