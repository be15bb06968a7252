//! Server counters: kept as plain integers by each shard's loop, published to atomics once per
//! loop turn, summed across shards by whoever prints them.
//!
//! The field list is written once, in the `counters!` macro; the struct, the shared atomic mirror, the
//! sum and the `key=value` line all come from it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// A snapshot of every server counter. Gauges (`active`, `bufs_held`) are current
        /// values; the rest count events since start.
        ///
        /// New counters are added as the server learns to count new things, so the struct is
        /// `#[non_exhaustive]`: start from [`Counters::default`] or [`Counters::parse`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        /// The atomic mirror a shard publishes into and a printer reads from.
        #[derive(Debug, Default)]
        pub(crate) struct SharedCounters {
            $( $name: AtomicU64, )*
        }

        impl SharedCounters {
            /// Stores a shard's current counters (relaxed: each field is read on its own).
            pub fn publish(&self, c: &Counters) {
                $( self.$name.store(c.$name, Ordering::Relaxed); )*
            }

            /// Reads the last published counters.
            pub fn snapshot(&self) -> Counters {
                Counters { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }

        impl Counters {
            /// Field names in print order.
            pub const NAMES: &'static [&'static str] = &[$( stringify!($name), )*];

            /// What each field counts, in [`NAMES`](Self::NAMES) order: its doc comment, the
            /// lines joined (for a metrics exporter's help text).
            pub const HELP: &'static [&'static str] = &[$( concat!($($doc),*), )*];

            /// Field values in [`NAMES`](Self::NAMES) order.
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$name, )*]
            }

            /// Sets the field called `name`; false if there is none.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                match name {
                    $( stringify!($name) => self.$name = value, )*
                    _ => return false,
                }
                true
            }

            /// Adds another shard's counters to these.
            pub fn add(&mut self, o: &Counters) {
                $( self.$name += o.$name; )*
            }
        }
    };
}

counters! {
    /// Connections accepted.
    accepted,
    /// Connections open now (gauge), including those still closing.
    active,
    /// Connections closed.
    closed,
    /// Bytes received from peers and handed to the protocol.
    bytes_in,
    /// Bytes received from peers after their connection started ending (read and dropped, so
    /// that closing does not reset the connection).
    bytes_discarded,
    /// Bytes sent to peers.
    bytes_out,
    /// Receive completions that carried data.
    recv_cqes,
    /// Sends completed.
    sends,
    /// Sends that wrote fewer bytes than asked (the rest was resubmitted).
    short_sends,
    /// Receives ended by an empty buffer ring (`-ENOBUFS`).
    enobufs,
    /// Receives re-armed after a completion without `IORING_CQE_F_MORE` (or single-shot).
    recv_rearms,
    /// Multishot receives cancelled because the connection turned out to be a stream, or the
    /// shard's streams changed its share, so that it is now received in capped pieces
    /// (io_uring).
    recv_recaps,
    /// Looks at how many bytes wait in a capped stream's socket, every 64 pieces: the
    /// `SIOCINQ` socket command (io_uring, 6.7) or `FIONREAD` (epoll).
    sock_inqs,
    /// Receive completions whose data landed in the large buffers streams receive into
    /// (io_uring, `--stream-bufs`).
    stream_buf_recvs,
    /// Multishot accepts re-armed.
    accept_rearms,
    /// Times a connection's receive was paused by back-pressure.
    paused,
    /// Bytes copied to a connection's own buffer: echoed bytes that could not be sent from
    /// their provided buffer (epoll, or the ring-buffer budget was spent), and replies a
    /// protocol wrote by copy (HTTP responses up to 4 KiB, framed header bytes held over).
    copied_bytes,
    /// `io_uring_enter` calls (io_uring) or `epoll_wait` calls (epoll).
    enters,
    /// Every syscall the event loop made, `enters` included.
    syscalls,
    /// Completions (io_uring) or readiness events (epoll) handled.
    events,
    /// Times the kernel flagged a completion-queue overflow (`IORING_SQ_CQ_OVERFLOW`).
    cq_overflows,
    /// Completions the kernel dropped (its overflow counter, or `-EBADR` from a wait).
    cq_dropped,
    /// Completions for a connection that no longer exists (dropped).
    stale_cqes,
    /// Accept failures (including a full file table).
    accept_errors,
    /// Connections closed by an error (reset, broken pipe, ...).
    conn_errors,
    /// Connections closed at a protocol's request (the sum of the four below).
    proto_closes,
    /// Connections closed by `--idle-timeout`.
    idle_closes,
    /// UDP datagrams larger than a buffer (counted and dropped, never echoed short).
    dgram_truncated,
    /// UDP datagrams dropped because echoes were backed up.
    dgram_dropped,
    /// Protocol closes because the peer asked in-band (HTTP `Connection: close`, HTTP/1.0).
    proto_requested,
    /// Protocol closes because the input broke the grammar (HTTP `400`).
    proto_malformed,
    /// Protocol closes because the input exceeded a limit (framed: a length over
    /// `--max-frame`, the issue's `frame_too_large`; HTTP: a head over 8 KiB, `431`).
    proto_too_large,
    /// Protocol closes because the input asked for what is not implemented (HTTP chunked
    /// bodies, `501`).
    proto_unsupported,
    /// Provided buffers (and io_uring piece buffers) holding received data now (gauge).
    bufs_held,
}

/// How the `stats:` and `final:` lines are written ([`ServerBuilder::stats_format`]).
///
/// [`ServerBuilder::stats_format`]: crate::ServerBuilder::stats_format
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsFormat {
    /// `stats: t=1.0 accepted=3 ... rss_kib=5120` (what [`Counters::parse`] reads).
    #[default]
    Text,
    /// One JSON object a line: `{"kind":"stats","t":1.0,"accepted":3,...,"rss_kib":5120}`,
    /// `kind` being `stats` or `final`, then `t`, every counter in [`Counters::NAMES`] order,
    /// and `rss_kib`.
    Json,
}

impl StatsFormat {
    /// One line (without its newline): `kind` (`stats` or `final`), seconds since start, the
    /// counters and the resident memory in KiB.
    pub fn line(self, kind: &str, secs: f64, c: &Counters, rss_kib: u64) -> String {
        match self {
            StatsFormat::Text => format!("{kind}: t={secs:.1} {c} rss_kib={rss_kib}"),
            StatsFormat::Json => {
                // Keys and `kind` are identifiers: nothing to escape.
                let mut s = format!("{{\"kind\":\"{kind}\",\"t\":{secs:.3}");
                for (name, value) in Counters::NAMES.iter().zip(c.values()) {
                    s.push_str(&format!(",\"{name}\":{value}"));
                }
                s.push_str(&format!(",\"rss_kib\":{rss_kib}}}"));
                s
            }
        }
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in Counters::NAMES.iter().zip(self.values()).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

impl Counters {
    /// The fields that are current values (they go up and down); every other field only grows
    /// while the server runs.
    pub const GAUGES: &'static [&'static str] = &["active", "bufs_held"];

    /// Sums several shards' snapshots.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut total = Counters::default();
        for c in all {
            total.add(c);
        }
        total
    }

    /// Parses a `key=value ...` line as printed by `Display` (unknown keys are ignored).
    pub fn parse(line: &str) -> Counters {
        let mut c = Counters::default();
        for word in line.split_whitespace() {
            if let Some((k, v)) = word.split_once('=')
                && let Ok(v) = v.parse()
            {
                c.set(k, v);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let mut c = Counters::default();
        for (i, name) in Counters::NAMES.iter().enumerate() {
            assert!(c.set(name, i as u64 * 3 + 1));
        }
        assert_eq!(Counters::parse(&c.to_string()), c);
        assert!(!c.set("nonsense", 1));
    }

    #[test]
    fn every_field_has_help_and_the_gauges_are_fields() {
        assert_eq!(Counters::HELP.len(), Counters::NAMES.len());
        for (name, help) in Counters::NAMES.iter().zip(Counters::HELP) {
            assert!(help.trim().len() > 10, "{name}: {help:?}");
            assert!(!help.contains('\n'), "{name}: one line");
        }
        assert_eq!(Counters::HELP[0].trim(), "Connections accepted.");
        for g in Counters::GAUGES {
            assert!(Counters::NAMES.contains(g), "{g}");
        }
    }

    #[test]
    fn stats_lines_in_text_and_json() {
        let mut c = Counters::default();
        c.set("accepted", 3);
        c.set("bufs_held", 2);
        let text = StatsFormat::Text.line("stats", 1.25, &c, 5120);
        assert!(
            text.starts_with("stats: t=1.2 accepted=3 active=0 "),
            "{text}"
        );
        assert!(text.ends_with(" bufs_held=2 rss_kib=5120"), "{text}");
        assert_eq!(Counters::parse(&text), c);
        let json = StatsFormat::Json.line("final", 1.25, &c, 5120);
        assert!(
            json.starts_with(r#"{"kind":"final","t":1.250,"accepted":3,"active":0,"#),
            "{json}"
        );
        assert!(
            json.ends_with(r#","bufs_held":2,"rss_kib":5120}"#),
            "{json}"
        );
        assert_eq!(json.matches(':').count(), Counters::NAMES.len() + 3);
    }

    #[test]
    fn sums_and_publishes() {
        let a = Counters {
            accepted: 2,
            enters: 5,
            ..Default::default()
        };
        let b = Counters {
            accepted: 3,
            bytes_in: 7,
            ..Default::default()
        };
        let s = Counters::sum([&a, &b]);
        assert_eq!((s.accepted, s.enters, s.bytes_in), (5, 5, 7));
        let shared = SharedCounters::default();
        shared.publish(&s);
        assert_eq!(shared.snapshot(), s);
    }
}
