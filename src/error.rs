//! One error type; each variant prints as the one line a user sees.
//!
//! Callers match on the variant to decide what to do (fall back when io_uring is unavailable,
//! pick another port when an address is in use, fix a setting); the text is for people.
//!
//! ```
//! use std::io::ErrorKind;
//! use ringecho::{Error, Server};
//!
//! let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! match Server::builder().addr(taken.local_addr().unwrap()).bind() {
//!     Err(Error::Bind { addr, source }) if source.kind() == ErrorKind::AddrInUse => {
//!         assert_eq!(addr, taken.local_addr().unwrap());
//!     }
//!     other => panic!("expected `address in use`, got {:?}", other.err()),
//! }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Exit status for flags that are wrong or do not go together (`EX_USAGE` from sysexits.h):
/// distinct from 2, which means io_uring is unavailable.
pub const EXIT_USAGE: i32 = 64;

/// Everything that can stop ringecho from serving.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// io_uring cannot be used here (disabled, blocked, too old, out of locked memory). The
    /// message names the cause and a remedy. Exit status 2.
    UringUnavailable(String),
    /// Binding or listening on an address failed.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// A setting is invalid or inconsistent.
    Config(String),
    /// A system call failed.
    Io {
        /// What ringecho was doing.
        context: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// A shard thread panicked (a bug in ringecho or in a [`Protocol`]); the other shards
    /// were shut down.
    ///
    /// [`Protocol`]: crate::protocol::Protocol
    ShardPanicked,
}

impl Error {
    /// Wraps an `io::Error` with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit status this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::UringUnavailable(_) => 2,
            Error::Config(_) => EXIT_USAGE,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UringUnavailable(msg) => f.write_str(msg),
            Error::Bind { addr, source } => {
                let hint = match source.kind() {
                    io::ErrorKind::AddrInUse => " (address in use: is another server running?)",
                    io::ErrorKind::AddrNotAvailable => " (no local interface has that address)",
                    io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
                    _ => "",
                };
                write!(f, "cannot listen on {addr}: {source}{hint}")
            }
            Error::Config(msg) => f.write_str(msg),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::ShardPanicked => f.write_str("a shard thread panicked"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
