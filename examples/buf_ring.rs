//! The buffer ring on its own, with a plain `io_uring::IoUring` and no other ringecho piece:
//! receive from a socket pair into provided buffers, read them, give them back, and see what
//! happens when user space holds every buffer.
//!
//! ```text
//! cargo run --example buf_ring
//! ```
//!
//! Needs Linux 5.19+ (provided-buffer rings) with io_uring allowed.

use std::error::Error;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use ringecho::backend::uring::BufRing;

/// Buffer group id the receives name.
const BGID: u16 = 7;
/// Four buffers of 64 bytes: small enough to run out of.
const BUFS: u32 = 4;
const BUF_SIZE: u32 = 64;

fn main() -> Result<(), Box<dyn Error>> {
    let (mut peer, ours) = UnixStream::pair()?;
    let mut ring = IoUring::new(8)?;
    // SAFETY: only our receives' completions reach `on_completion` (through `receive`), and the
    // ring is unregistered at the end, when no receive is outstanding.
    let mut bufs = unsafe { BufRing::registered(&ring.submitter(), BUFS, BUF_SIZE, BGID, false)? };
    println!(
        "{} buffers in the ring, {} held",
        bufs.available(),
        bufs.held()
    );

    // More messages than buffers: each buffer goes back after use, so the ring never runs dry.
    for i in 0..10 {
        peer.write_all(format!("message {i}").as_bytes())?;
        let (bid, len) = receive(&mut ring, &mut bufs, ours.as_raw_fd())?.expect("a buffer");
        // The kernel handed buffer `bid` over: it is out of the ring, ours to read.
        let text = String::from_utf8_lossy(bufs.data(bid, 0, len)).into_owned();
        println!("buffer {bid}: {text:?} (held {})", bufs.held());
        // Our only reference: the buffer goes to the ring's tail, then `publish` makes the
        // kernel see it (a `Release` store of the tail; no system call).
        bufs.release(bid);
        bufs.publish();
    }

    // Now hold every buffer: the fifth receive finds the ring empty.
    let mut held = Vec::new();
    for i in 0..BUFS + 1 {
        peer.write_all(format!("held {i}").as_bytes())?;
        match receive(&mut ring, &mut bufs, ours.as_raw_fd())? {
            Some((bid, _)) => held.push(bid),
            None => println!(
                "receive {i}: -ENOBUFS, the ring is empty ({} held)",
                bufs.held()
            ),
        }
    }
    // Give one back and the waiting bytes arrive.
    bufs.release(held.pop().expect("held buffers"));
    bufs.publish();
    let (bid, len) = receive(&mut ring, &mut bufs, ours.as_raw_fd())?.expect("a buffer");
    println!(
        "after one came back, buffer {bid}: {:?}",
        String::from_utf8_lossy(bufs.data(bid, 0, len))
    );
    for bid in held.into_iter().chain([bid]) {
        bufs.release(bid);
    }

    // No receive is outstanding: unregistering is safe, and lets `Drop` unmap the memory.
    bufs.unregister(&ring.submitter())?;
    println!(
        "done: {} buffers available, {} held",
        bufs.available(),
        bufs.held()
    );
    Ok(())
}

/// One single-shot receive with buffer select; `Ok(None)` when the ring was empty.
fn receive(
    ring: &mut IoUring,
    bufs: &mut BufRing,
    fd: i32,
) -> Result<Option<(u16, u32)>, Box<dyn Error>> {
    // IORING_OP_RECV with IOSQE_BUFFER_SELECT: no buffer address in the SQE; when data is
    // there the kernel takes the buffer at the head of group BGID's ring and fills it.
    let sqe = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), BUF_SIZE)
        .buf_group(BGID)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
    // SAFETY: the SQE points at no memory of ours; the kernel picks a provided buffer.
    unsafe { ring.submission().push(&sqe)? };
    ring.submit_and_wait(1)?;
    let cqe = ring.completion().next().expect("one completion");
    if cqe.result() == -libc::ENOBUFS {
        return Ok(None);
    }
    let len = u32::try_from(cqe.result())
        .map_err(|_| std::io::Error::from_raw_os_error(-cqe.result()))?;
    // IORING_CQE_F_BUFFER: the buffer id is in the upper 16 bits of the flags.
    let bid = cqueue::buffer_select(cqe.flags()).expect("a receive with data names its buffer");
    let mut segs = Vec::new();
    bufs.on_completion(bid, len, cqe.flags(), false, &mut segs)?;
    Ok(Some((bid, len)))
}
