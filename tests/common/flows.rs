//! Many nonblocking connections driven from one thread with `poll(2)`: each sends its
//! [`Pattern`] (random write sizes, a bound on bytes in flight) and checks every byte that
//! comes back.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::{Pattern, Rng};

/// How one [`Flow`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct FlowSpec {
    /// Bytes to send (`u64::MAX` for "until the time is up", with [`drive_for`]).
    pub total: u64,
    /// Most bytes sent and not yet echoed back (1 message in flight = the message size).
    pub window: u64,
    /// Each write is a random size in `1..=max_write` (or exactly it, if `fixed_writes`).
    pub max_write: usize,
    /// Every write is exactly `max_write` bytes (request/response with fixed messages).
    pub fixed_writes: bool,
    /// `shutdown(SHUT_WR)` after the last byte, then expect every byte back and EOF.
    pub half_close: bool,
}

impl FlowSpec {
    /// `total` bytes in random writes of up to 16 KiB, up to 256 KiB in flight.
    pub fn bulk(total: u64) -> FlowSpec {
        FlowSpec {
            total,
            window: 256 * 1024,
            max_write: 16 * 1024,
            fixed_writes: false,
            half_close: false,
        }
    }
}

/// One client connection sending its [`Pattern`] and checking every echoed byte.
#[derive(Debug)]
pub struct Flow {
    /// Identifies the flow in errors (also its pattern seed).
    pub id: u64,
    /// The socket (nonblocking).
    pub stream: TcpStream,
    pat: Pattern,
    spec: FlowSpec,
    rng: Rng,
    /// Bytes written.
    pub sent: u64,
    /// Bytes read back (all checked).
    pub received: u64,
    /// Write side shut down.
    pub write_closed: bool,
    /// Read returned 0.
    pub eof: bool,
    /// When the flow finished.
    pub done_at: Option<Instant>,
}

impl Flow {
    /// Connects to `addr` and makes a flow with pattern `id`.
    pub fn connect(addr: SocketAddr, id: u64, spec: FlowSpec) -> io::Result<Flow> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        Ok(Flow::new(s, id, spec))
    }

    /// Wraps a connected stream (made nonblocking, `TCP_NODELAY`).
    pub fn new(stream: TcpStream, id: u64, spec: FlowSpec) -> Flow {
        stream.set_nonblocking(true).expect("nonblocking");
        stream.set_nodelay(true).expect("nodelay");
        Flow {
            id,
            stream,
            pat: Pattern::new(id),
            spec,
            rng: Rng::new(id ^ 0xf10e),
            sent: 0,
            received: 0,
            write_closed: false,
            eof: false,
            done_at: None,
        }
    }

    /// Every byte came back (and EOF, for a half-closing flow).
    pub fn finished(&self) -> bool {
        self.received == self.spec.total && (!self.spec.half_close || self.eof)
    }

    fn in_flight(&self) -> u64 {
        self.sent - self.received
    }

    fn wants_write(&self) -> bool {
        self.sent < self.spec.total && self.in_flight() < self.spec.window
    }

    fn on_readable(&mut self, buf: &mut [u8]) -> Result<(), String> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    if self.received < self.spec.total {
                        return Err(format!(
                            "flow {}: EOF after {} of {} bytes echoed (sent {})",
                            self.id, self.received, self.spec.total, self.sent
                        ));
                    }
                    return Ok(());
                }
                Ok(n) => {
                    if self.received + n as u64 > self.sent {
                        return Err(format!(
                            "flow {}: {} bytes echoed but only {} sent",
                            self.id,
                            self.received + n as u64,
                            self.sent
                        ));
                    }
                    self.pat
                        .check(self.received, &buf[..n])
                        .map_err(|e| format!("flow {}: {e}", self.id))?;
                    self.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "flow {}: read after {} bytes: {e}",
                        self.id, self.received
                    ));
                }
            }
        }
    }

    fn on_writable(&mut self, buf: &mut [u8]) -> Result<(), String> {
        while self.wants_write() {
            let size = if self.spec.fixed_writes {
                self.spec.max_write as u64
            } else {
                self.rng.range(1, self.spec.max_write as u64)
            };
            let n = size
                .min(self.spec.total - self.sent)
                .min(self.spec.window - self.in_flight()) as usize;
            self.pat.fill(self.sent, &mut buf[..n]);
            match self.stream.write(&buf[..n]) {
                Ok(k) => self.sent += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "flow {}: write after {} bytes: {e}",
                        self.id, self.sent
                    ));
                }
            }
        }
        if self.sent == self.spec.total && self.spec.half_close && !self.write_closed {
            self.stream
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("flow {}: shutdown(SHUT_WR): {e}", self.id))?;
            self.write_closed = true;
        }
        Ok(())
    }

    /// A one-line account of where the flow stands.
    pub fn progress(&self) -> String {
        format!(
            "flow {}: sent {}/{} echoed {} eof={}",
            self.id, self.sent, self.spec.total, self.received, self.eof
        )
    }
}

/// Drives `flows` until every one has finished; `Err` on the first wrong byte, early EOF,
/// error, or when `limit` passes (listing the flows still going).
pub fn drive(flows: &mut [Flow], limit: Duration) -> Result<(), String> {
    drive_until(flows, Instant::now() + limit, false)
}

/// Drives `flows` for `dur` (they need not finish); `Err` on a wrong byte, EOF or error.
pub fn drive_for(flows: &mut [Flow], dur: Duration) -> Result<(), String> {
    drive_until(flows, Instant::now() + dur, true)
}

fn drive_until(flows: &mut [Flow], deadline: Instant, open_ended: bool) -> Result<(), String> {
    let max_write = flows.iter().map(|f| f.spec.max_write).max().unwrap_or(1);
    let mut wbuf = vec![0u8; max_write];
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(flows.len());
    let mut which: Vec<usize> = Vec::with_capacity(flows.len());
    // Start every flow before waiting for any.
    for f in flows.iter_mut() {
        f.on_writable(&mut wbuf)?;
    }
    loop {
        pfds.clear();
        which.clear();
        for (i, f) in flows.iter_mut().enumerate() {
            if f.finished() {
                f.done_at.get_or_insert_with(Instant::now);
                continue;
            }
            let mut events = libc::POLLIN;
            if f.wants_write() {
                events |= libc::POLLOUT;
            }
            pfds.push(libc::pollfd {
                fd: f.stream.as_raw_fd(),
                events,
                revents: 0,
            });
            which.push(i);
        }
        if pfds.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            if open_ended {
                return Ok(());
            }
            let going: Vec<String> = which.iter().take(8).map(|&i| flows[i].progress()).collect();
            return Err(format!(
                "{} of {} flows unfinished at the deadline, e.g.:\n{}",
                which.len(),
                flows.len(),
                going.join("\n")
            ));
        }
        let wait_ms = (deadline - now).as_millis().clamp(1, 100) as i32;
        // SAFETY: `pfds` is a live, initialised array of `pfds.len()` pollfd structs that poll
        // may write `revents` into; nothing else touches it during the call.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for (p, &i) in pfds.iter().zip(&which) {
            if p.revents == 0 {
                continue;
            }
            let f = &mut flows[i];
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                f.on_readable(&mut rbuf)?;
            }
            if p.revents & libc::POLLOUT != 0 || f.wants_write() {
                f.on_writable(&mut wbuf)?;
            }
        }
    }
}
