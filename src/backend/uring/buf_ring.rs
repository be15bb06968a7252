//! The provided-buffer ring: the one place that owns the memory the kernel receives into.
//!
//! A buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19) is a ring of `struct io_uring_buf`
//! entries shared with the kernel. Each entry names one buffer (address, length, id). A receive
//! armed with `IOSQE_BUFFER_SELECT` and a buffer group id picks the buffer at the ring's head
//! only when data arrives, so idle connections hold no memory; its completion says which buffer
//! (`IORING_CQE_F_BUFFER`, id in the upper 16 bits of `flags`). From then on the buffer is ours
//! until we put it back by writing a new entry at the tail and publishing the tail.
//!
//! # Ownership, one buffer at a time
//!
//! ```text
//!   in the ring (kernel may write it)
//!        │  recv CQE with F_BUFFER: take(bid)            refs = 1 (the CQE's reference)
//!        ▼
//!   held by user space (kernel never touches it)
//!        │  connection queues an echo from it: add_refs   refs = 1 + n
//!        │  CQE handled: release                          refs = n
//!        │  each send of a chunk completes: release       refs - 1
//!        ▼  refs reaches 0: written at the tail, published at the end of the turn
//!   in the ring again
//! ```
//!
//! # Safety contract
//!
//! - The ring and the buffers are `mmap`ed here and unmapped in `Drop`, and only if the ring is
//!   not registered any more: unregister first ([`BufRing::unregister`]), and only once no
//!   receive that selects from this group is outstanding. A `BufRing` dropped while registered
//!   leaks its memory instead of freeing memory the kernel could still write.
//! - Registration and unregistration are made on the thread that submits to the ring
//!   (`IORING_SETUP_SINGLE_ISSUER` rejects others with `EEXIST`).
//! - The number of entries is a power of two, at most 32768; each buffer is at most 4 GiB.
//! - The kernel reads the tail (the `resv` field of entry 0) concurrently: it is only ever
//!   written with a `Release` store after the entries it covers, and entries are written field
//!   by field through raw pointers, never as a whole `io_uring_buf`.

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::Submitter;

/// The kernel's `struct io_uring_buf` (16 bytes). Entry 0's `resv` doubles as the ring tail.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// Largest ring the kernel accepts.
pub const MAX_ENTRIES: u32 = 32768;

/// Why a buffer ring could not be built.
#[derive(Debug)]
pub enum BufRingError {
    /// `entries` is zero, not a power of two, or above 32768.
    BadCount(u32),
    /// `buf_size` is zero or the total size overflows.
    BadSize(u32),
    /// `mmap` failed.
    Map(io::Error),
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
        }
    }
}

impl std::error::Error for BufRingError {}

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

/// A registered ring of provided buffers. See the module docs for the contract.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    bgid: u16,
    /// Local tail: entries written but maybe not yet published.
    tail: u16,
    published_tail: u16,
    /// References held by user space, per buffer id; 0 means the buffer is in the ring.
    refs: Vec<u16>,
    held: usize,
    registered: bool,
}

impl BufRing {
    /// Maps a ring of `entries` buffers of `buf_size` bytes each, for buffer group `bgid`.
    /// Every buffer starts out owned by the ring (after [`register`](Self::register)).
    pub fn new(entries: u32, buf_size: u32, bgid: u16) -> Result<BufRing, BufRingError> {
        if entries == 0 || !entries.is_power_of_two() || entries > MAX_ENTRIES {
            return Err(BufRingError::BadCount(entries));
        }
        let total = (entries as usize)
            .checked_mul(buf_size as usize)
            .filter(|&t| buf_size > 0 && t <= isize::MAX as usize)
            .ok_or(BufRingError::BadSize(buf_size))?;
        let ring = Mapping::new(entries as usize * std::mem::size_of::<RawBuf>())
            .map_err(BufRingError::Map)?;
        let bufs = Mapping::new(total).map_err(BufRingError::Map)?;
        let mut br = BufRing {
            ring,
            bufs,
            entries: entries as u16,
            buf_size,
            bgid,
            tail: 0,
            published_tail: 0,
            refs: vec![0; entries as usize],
            held: 0,
            registered: false,
        };
        for bid in 0..entries {
            br.push_entry(bid as u16);
        }
        Ok(br)
    }

    /// Registers the ring with the kernel as buffer group `bgid` and publishes every buffer.
    pub fn register(&mut self, submitter: &Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring memory is a live mapping of `entries` entries owned by `self`; it stays
        // mapped until `unregister` succeeds, or forever (leaked in `Drop`) if it never does.
        unsafe {
            submitter.register_buf_ring_with_flags(
                self.ring.ptr.as_ptr() as u64,
                self.entries,
                self.bgid,
                0,
            )?;
        }
        self.registered = true;
        self.publish();
        Ok(())
    }

    /// Unregisters the ring. Call only once no receive selecting from this group is outstanding.
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

    /// Buffers currently held by user space (not available to the kernel).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Buffers in the ring, ready for the kernel to fill (counting unpublished returns).
    pub fn available(&self) -> usize {
        self.count() as usize - self.held
    }

    /// Records that a completion handed buffer `bid` to user space, with one reference.
    /// Returns false (and changes nothing) if `bid` is out of range or already held, which
    /// would mean the kernel and ringecho disagree about ownership.
    pub fn take(&mut self, bid: u16) -> bool {
        match self.refs.get_mut(bid as usize) {
            Some(r @ 0) => {
                *r = 1;
                self.held += 1;
                true
            }
            _ => false,
        }
    }

    /// Adds `n` references to a held buffer.
    pub fn add_refs(&mut self, bid: u16, n: u16) {
        let r = &mut self.refs[bid as usize];
        debug_assert!(*r > 0, "add_refs on a buffer the ring owns");
        *r += n;
    }

    /// Drops one reference; the last one puts the buffer back in the ring (published at the
    /// next [`publish`](Self::publish)).
    pub fn release(&mut self, bid: u16) {
        let r = &mut self.refs[bid as usize];
        debug_assert!(*r > 0, "release of a buffer the ring owns");
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            self.held -= 1;
            self.push_entry(bid);
        }
    }

    /// The first `len` bytes of held buffer `bid`.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            self.refs[bid as usize] > 0,
            "reading a buffer the ring owns"
        );
        assert!(len <= self.buf_size as usize);
        // SAFETY: `bid` is held by user space (checked above), so the kernel does not write it;
        // the range lies inside the buffer, which lies inside the live `bufs` mapping.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// Address of byte `offset` of held buffer `bid`, for a send SQE.
    pub fn addr(&self, bid: u16, offset: u32) -> *const u8 {
        debug_assert!(self.refs[bid as usize] > 0);
        debug_assert!(offset <= self.buf_size);
        // SAFETY: in bounds of the `bufs` mapping (bid < count, offset <= buf_size).
        unsafe { self.buf_ptr(bid).add(offset as usize) }
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        debug_assert!((bid as u32) < self.count());
        // SAFETY: bid < count, so the offset stays inside the `bufs` mapping.
        unsafe {
            self.bufs
                .ptr
                .as_ptr()
                .add(bid as usize * self.buf_size as usize)
        }
    }

    /// Writes an entry for `bid` at the local tail (not yet visible to the kernel).
    fn push_entry(&mut self, bid: u16) {
        let mask = self.entries.wrapping_sub(1);
        let idx = (self.tail & mask) as usize;
        let addr = self.buf_ptr(bid) as u64;
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

    #[test]
    fn rejects_bad_geometry() {
        assert!(matches!(
            BufRing::new(0, 64, 0),
            Err(BufRingError::BadCount(0))
        ));
        assert!(matches!(
            BufRing::new(3, 64, 0),
            Err(BufRingError::BadCount(3))
        ));
        assert!(matches!(
            BufRing::new(65536, 64, 0),
            Err(BufRingError::BadCount(_))
        ));
        assert!(matches!(
            BufRing::new(8, 0, 0),
            Err(BufRingError::BadSize(0))
        ));
    }

    #[test]
    fn reference_counting_returns_a_buffer_only_after_the_last_release() {
        let mut br = BufRing::new(32768, 16, 0).unwrap();
        assert_eq!(br.count(), 32768);
        assert_eq!(br.available(), 32768);
        assert!(br.take(5));
        assert!(!br.take(5), "double take is refused");
        assert!(!br.take(40000), "out of range");
        br.add_refs(5, 2);
        br.release(5);
        br.release(5);
        assert_eq!(br.held(), 1);
        br.release(5);
        assert_eq!(br.held(), 0);
        assert!(br.take(5), "back in the ring, can be handed out again");
    }

    #[test]
    fn entries_are_written_at_the_tail_with_their_ids() {
        let mut br = BufRing::new(4, 8, 1).unwrap();
        assert_eq!(br.tail, 4);
        br.take(2);
        br.release(2);
        assert_eq!(br.tail, 5);
        // SAFETY (test): entry 0 lies inside the ring mapping.
        let e0 = unsafe { &*br.ring.ptr.as_ptr().cast::<RawBuf>() };
        assert_eq!(e0.bid, 2, "slot 4 & 3 == 0 now names buffer 2");
        assert_eq!(e0.len, 8);
        assert_eq!(e0.addr, br.buf_ptr(2) as u64);
    }
}
