//! What to answer: pure functions from received bytes to replies.
//!
//! A [`Protocol`] sees each piece of received data once, in order, and says what goes back through
//! a [`Replies`] sink. It never touches a socket or a ring, so the same protocol runs unchanged on
//! both backends and can be unit-tested with plain byte slices ([`respond`]).
//!
//! Three come with ringecho: [`Echo`], [`Framed`] (length-prefixed frames with a size limit)
//! and [`Http`] (a fixed response to HTTP/1.1 requests). `examples/line_protocol.rs` writes a
//! line-based one in under 40 lines and serves it on both backends.

mod echo;
mod framed;
mod http;
pub(crate) mod replies;

pub use echo::Echo;
pub use framed::{DEFAULT_MAX_FRAME, Framed};
pub use http::{DEFAULT_HTTP_BODY, Http, MAX_HEAD};
pub use replies::Replies;

/// What the connection should do after a protocol has seen some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection open and keep receiving.
    Continue,
    /// Stop receiving; send what was already replied, then close the connection.
    Close(CloseReason),
}

/// Why a protocol asked to close a connection. Each reason has its own counter in the stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer asked for it in-band (for example `Connection: close`).
    Requested,
    /// The input broke the protocol's grammar.
    Malformed,
    /// The input announced or needed more than the configured limit.
    TooLarge,
    /// The input asked for something the protocol does not implement.
    Unsupported,
}

/// A request/response protocol, one value per connection.
///
/// The server clones the value given to [`Server::serve`](crate::Server::serve) (or
/// [`Server::run`](crate::Server::run)) for every connection it accepts, so per-connection
/// state (a partial line, a parser) lives in `self` and starts from that value. Shards are
/// threads, hence `Send + 'static`.
///
/// `on_data` is called with every run of received bytes, in order. Runs are split wherever the
/// kernel split them, so a protocol that needs whole messages keeps its own (bounded) partial
/// state between calls. Replies written to `out` are sent in the order they are written, after
/// everything replied earlier. Returning [`Verdict::Close`] stops the conversation: what was
/// replied is still sent, then the connection closes, and later input is read and dropped.
///
/// Nothing here knows about sockets or rings: [`Replies::echo`] is zero-copy on io_uring
/// (the reply is sent from the provided buffer the bytes arrived in) and a copy on epoll, and
/// the protocol cannot tell.
///
/// ```
/// use ringecho::protocol::{respond, CloseReason, Protocol, Replies, Verdict};
///
/// /// Answers every byte upper-cased; a `!` ends the conversation.
/// #[derive(Clone)]
/// struct Shout;
///
/// impl Protocol for Shout {
///     fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict {
///         match input.iter().position(|&b| b == b'!') {
///             Some(end) => {
///                 out.write(&input[..=end].to_ascii_uppercase());
///                 Verdict::Close(CloseReason::Requested)
///             }
///             None => {
///                 out.write(&input.to_ascii_uppercase());
///                 Verdict::Continue
///             }
///         }
///     }
/// }
///
/// assert_eq!(respond(&mut Shout, b"hi"), (b"HI".to_vec(), Verdict::Continue));
/// assert_eq!(
///     respond(&mut Shout, b"bye! ignored"),
///     (b"BYE!".to_vec(), Verdict::Close(CloseReason::Requested))
/// );
/// ```
///
/// # Before writing one
///
/// - **It runs on the event loop.** `on_data` is called on the shard's own thread, in the
///   middle of handling completions. Until it returns, no other connection of that shard makes
///   progress: never block in it (no blocking I/O, no sleeping, no lock held for long), and
///   keep long computations out of it.
/// - **`on_data` is the only hook.** Nothing is called when a connection opens, when the peer
///   sends FIN, or when time passes, and the protocol is not told the peer's address. A
///   connection's value is cloned when it is accepted and dropped after it has closed.
/// - **Which reply to use.** [`Replies::echo`] sends back bytes of the input itself (on
///   io_uring, from the buffer they arrived in, without a copy while the shard's buffer budget
///   lasts). [`Replies::write`] sends bytes made on the spot: they are copied, and consecutive
///   small writes go out in one send. [`Replies::write_static`] sends a constant without
///   copying it. [`Replies::write_shared`] sends a large reply built once and shared by every
///   connection through an `Arc`, without a copy per connection.
/// - **Back-pressure bounds input, not what one call writes.** Once a connection owes
///   [`max_pending`](crate::ServerBuilder::max_pending) bytes the server stops receiving from
///   it until its peer has read half of them, but that is checked after `on_data` returns: one
///   call can queue any amount (a small request asking for a huge answer).
///   [`Replies::owed`] says how much is queued; a protocol whose replies can grow large should
///   check it, and refuse (a [`Verdict::Close`] with [`CloseReason::TooLarge`]) rather than
///   queue without limit.
/// - **State shared between connections** goes in an `Arc` inside the value
///   (`Arc<AtomicU64>`, `Arc<Mutex<..>>`): each connection gets its own clone, so plain fields
///   are per connection, and connections on different shards run on different threads. Any
///   lock is taken on the event loop (see the first point).
/// - **A panic stops the server.** A panic in `on_data` ends its shard; the server then shuts
///   the other shards down, as on SIGTERM, and `serve` returns
///   [`Error::ShardPanicked`](crate::Error::ShardPanicked). Answer bad input with a
///   [`Verdict::Close`] and [`CloseReason::Malformed`] instead.
/// - **After [`Verdict::Close`]** the connection sends what was replied, then FIN, and reads
///   and drops input until the peer closes its side. A peer that never does is held for
///   [`lingering_close`](crate::ServerBuilder::lingering_close) (5 s by default), then closed.
pub trait Protocol: Send + 'static {
    /// Consumes `input` and writes replies to `out`.
    fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict;
}

/// Calls `proto.on_data(input, ..)` as a connection would and returns the bytes it replied,
/// in order, with its verdict: a protocol's unit test, without a socket or a ring.
///
/// Call it once per receive to test how a protocol copes with input split anywhere:
///
/// ```
/// use ringecho::protocol::{respond, Framed, Verdict};
///
/// let mut p = Framed::new(1024);
/// // A frame of 3 bytes, its header split across two receives.
/// assert_eq!(respond(&mut p, &[0, 0]), (vec![], Verdict::Continue));
/// assert_eq!(respond(&mut p, &[0, 3, b'a']), (vec![0, 0, 0, 3, b'a'], Verdict::Continue));
/// assert_eq!(respond(&mut p, b"bc"), (b"bc".to_vec(), Verdict::Continue));
/// ```
pub fn respond<P: Protocol>(proto: &mut P, input: &[u8]) -> (Vec<u8>, Verdict) {
    let mut q = replies::OutQueue::default();
    let verdict = proto.on_data(input, &mut Replies::new(&mut q, input, None));
    (q.to_vec(), verdict)
}

/// What protocol tests share: a deterministic PRNG and a harness that runs a protocol over a
/// reply queue the way a connection does.
#[cfg(test)]
pub(crate) mod testkit {
    use std::collections::HashMap;

    use super::replies::{OutQueue, SendSpan};
    use super::{CloseReason, Protocol, Replies, Verdict};

    pub use crate::rng::SplitMix64 as Rng;

    /// A protocol and its reply queue, driven as a connection drives them: input goes in as
    /// zero-copy provided buffers or as copies, input after the protocol closed is dropped, and
    /// every byte the connection would send is collected in `sent`. (`src/conn/props.rs` runs
    /// every protocol behind a real `Conn` too.)
    pub struct Wire<P> {
        proto: P,
        q: OutQueue,
        /// Provided buffers still referenced by owed chunks: id → (bytes, references).
        bufs: HashMap<u16, (Vec<u8>, u32)>,
        next_bid: u16,
        pub sent: Vec<u8>,
        /// The first close the protocol asked for.
        pub closed: Option<CloseReason>,
    }

    /// What one receive made the protocol do.
    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Fed {
        /// References taken to the receive's provided buffer.
        pub ring_refs: u32,
        /// Bytes copied into the queue.
        pub copied: usize,
    }

    impl<P: Protocol> Wire<P> {
        pub fn new(proto: P) -> Wire<P> {
            Wire {
                proto,
                q: OutQueue::default(),
                bufs: HashMap::new(),
                next_bid: 0,
                sent: Vec::new(),
                closed: None,
            }
        }

        /// The protocol state, for inspection (tests assert its memory stays bounded).
        pub fn protocol(&self) -> &P {
            &self.proto
        }

        /// Bytes owed and not yet sent.
        pub fn owed(&self) -> usize {
            self.q.owed()
        }

        /// Starts sending the front chunk, as [`drain`](Self::drain) does one at a time.
        pub fn next_send(&mut self) -> Option<SendSpan<'_>> {
            self.q.next_send()
        }

        /// Delivers one receive. `zero_copy` passes a buffer id, as io_uring does.
        pub fn feed(&mut self, data: &[u8], zero_copy: bool) -> Fed {
            let bid = self.next_bid;
            self.next_bid = self.next_bid.wrapping_add(1);
            if self.closed.is_some() || data.is_empty() {
                return Fed::default();
            }
            let mut out = Replies::new(&mut self.q, data, zero_copy.then_some((bid, 0)));
            let verdict = self.proto.on_data(data, &mut out);
            let fed = Fed {
                ring_refs: out.ring_refs(),
                copied: out.copied(),
            };
            if fed.ring_refs > 0 {
                assert!(!self.bufs.contains_key(&bid), "buffer id reused while held");
                self.bufs.insert(bid, (data.to_vec(), fed.ring_refs));
            }
            if let Verdict::Close(r) = verdict {
                assert!(self.closed.is_none(), "close reported twice");
                self.closed = Some(r);
            }
            fed
        }

        /// Sends what is owed, in short sends when `rng` is given.
        pub fn drain(&mut self, mut rng: Option<&mut Rng>) {
            loop {
                let bytes = match self.q.next_send() {
                    None => break,
                    Some(SendSpan::Mem(b)) => b.to_vec(),
                    Some(SendSpan::Ring { bid, offset, len }) => {
                        let (buf, _) = &self.bufs[&bid];
                        buf[offset as usize..(offset + len) as usize].to_vec()
                    }
                };
                let n = match rng.as_deref_mut() {
                    Some(r) => {
                        if r.one_in(3) {
                            1 + r.below(bytes.len())
                        } else {
                            bytes.len()
                        }
                    }
                    None => bytes.len(),
                };
                self.sent.extend_from_slice(&bytes[..n]);
                let bufs = &mut self.bufs;
                self.q.on_sent(n, |bid| {
                    let refs = &mut bufs.get_mut(&bid).expect("released a buffer not held").1;
                    *refs -= 1;
                    if *refs == 0 {
                        bufs.remove(&bid);
                    }
                });
            }
            if self.q.owed() == 0 {
                assert!(self.bufs.is_empty(), "buffer references leaked");
            }
        }

        /// Feeds `stream` in the given pieces (zero-copy or not at random), draining at random
        /// points, then drains everything.
        pub fn run(&mut self, stream: &[u8], pieces: &[std::ops::Range<usize>], rng: &mut Rng) {
            for r in pieces {
                let zc = rng.one_in(2);
                self.feed(&stream[r.clone()], zc);
                if rng.one_in(2) {
                    self.drain(Some(rng));
                }
            }
            self.drain(Some(rng));
        }
    }
}
