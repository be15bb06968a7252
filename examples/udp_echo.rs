//! A UDP echo server through the builder: every datagram goes back to its sender.
//!
//! ```text
//! cargo run --example udp_echo -- --addr 127.0.0.1:7878 --backend uring
//! printf 'hello' | nc -u -w1 127.0.0.1 7878
//! ```
//!
//! On io_uring each shard arms one multishot `IORING_OP_RECVMSG` per socket with buffer
//! select (6.0): the kernel writes each datagram into a provided buffer, laid out as a header,
//! the sender's address, then the payload, and posts a completion naming the buffer. The echo
//! is an `IORING_OP_SENDMSG` to that address straight from the same buffer, which goes back to
//! the ring when the send completes (`src/backend/uring/udp.rs`). On epoll it is `recvmmsg`
//! and `sendmmsg` through one scratch buffer. Either way a datagram larger than a buffer
//! (less the 144 bytes of header and address io_uring puts in front, so that both backends
//! take the same sizes: [`udp_max_payload`]) is counted in `dgram_truncated` and dropped,
//! never echoed short.
//!
//! [`udp_max_payload`]: ringecho::backend::udp_max_payload

use ringecho::protocol::Echo;
use ringecho::{Backend, Server};

fn main() -> Result<(), ringecho::Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].as_str())
    };
    let addr = arg("--addr")
        .unwrap_or("127.0.0.1:7878")
        .parse()
        .expect("--addr HOST:PORT");
    let backend: Backend = arg("--backend")
        .unwrap_or("auto")
        .parse()
        .expect("--backend");
    let server = Server::builder()
        .addr(addr)
        .backend(backend)
        .udp(true) // UDP sockets instead of TCP listeners, bound at `bind`.
        .buf_size(2048) // Datagrams up to 2048 - 144 = 1904 bytes come back.
        .bind()?;
    server.shutdown_handle().shutdown_on_signals()?;
    // UDP has no connections and no protocol: each datagram is echoed as it is.
    let ready = |addrs: &[std::net::SocketAddr]| println!("listening on {}", addrs[0]);
    server.run(Echo, ready, &mut std::io::stderr())?;
    Ok(())
}
