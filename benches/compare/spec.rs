//! What to run: the cases (conns × size × depth) and the servers under test, parsed from the
//! strings `make bench CASES=... SERVERS=... PEERS=...` passes in.

use std::fmt;
use std::path::{Path, PathBuf};

/// The default matrix: the five ping-pong and pipelined cases of issue 5, the streams and
/// open-loop latency cases of issue 13 (with four streams between the lone one and ten: the
/// share rule takes them in pieces, ten it does not), and UDP.
pub const DEFAULT_CASES: &str = "1x64x1 50x128x1 500x128x1 50x4096x1 100x64x16 \
    1x65536x4 4x16384x4 10x16384x4 1x4096x16 50x128x16@20000 50x128x16@100000 udp:50x64x1 udp:50x1400x1";

/// The default servers: both ringecho backends, io_uring first (the ratios' baseline).
pub const DEFAULT_SERVERS: &str = "uring; epoll";

/// One cell of the matrix: how `ringecho bench` drives the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// Connections (UDP: connected sockets).
    pub conns: u32,
    /// Message size, bytes.
    pub size: u32,
    /// Messages in flight per connection (open loop: at most).
    pub depth: u32,
    /// Open loop: messages per second offered across all connections, on a fixed schedule
    /// (`ringecho bench --rate`); None: closed loop.
    pub rate: Option<u32>,
    /// Datagrams (`ringecho bench --udp` against `serve --udp`) instead of TCP streams.
    pub udp: bool,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.udp {
            f.write_str("udp:")?;
        }
        write!(f, "{}x{}x{}", self.conns, self.size, self.depth)?;
        if let Some(r) = self.rate {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

impl Case {
    /// A closed-loop TCP case.
    pub fn tcp(conns: u32, size: u32, depth: u32) -> Case {
        Case {
            conns,
            size,
            depth,
            rate: None,
            udp: false,
        }
    }

    /// `50 conns × 128 B × depth 1`, for headings (with the rate or the transport if any).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} {}{} × {} B × depth {}",
            self.conns,
            if self.udp { "UDP socket" } else { "conn" },
            if self.conns == 1 { "" } else { "s" },
            self.size,
            self.depth
        );
        if let Some(r) = self.rate {
            s.push_str(&format!(", open loop at {r} msgs/s"));
        }
        s
    }

    /// Whether bytes per second say more than messages per second (streams).
    pub fn is_bulk(&self) -> bool {
        self.size >= 4096 && !self.udp
    }
}

/// Parses `1x64x1 50x128x1, 100x64x16` (`x` or `×`; the depth may be left out and is then 1),
/// with `@RATE` for an open-loop case (`50x128x16@20000`) and a `udp:` prefix for datagrams.
pub fn parse_cases(s: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for word in s.split(|c: char| c.is_whitespace() || c == ',' || c == ';') {
        if word.is_empty() {
            continue;
        }
        let (udp, rest) = match word.strip_prefix("udp:") {
            Some(r) => (true, r),
            None => (false, word),
        };
        let (shape, rate) = match rest.split_once('@') {
            Some((shape, r)) => (shape, Some(r)),
            None => (rest, None),
        };
        let parts: Vec<&str> = shape.split(['x', 'X', '×']).collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(format!(
                "case {word:?}: expected [udp:]CONNSxSIZE[xDEPTH][@RATE], e.g. 50x128x1"
            ));
        }
        let num = |what: &str, v: &str| -> Result<u32, String> {
            match v.parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "case {word:?}: {what} {v:?} is not a positive integer"
                )),
            }
        };
        let case = Case {
            conns: num("conns", parts[0])?,
            size: num("size", parts[1])?,
            depth: match parts.get(2) {
                Some(d) => num("depth", d)?,
                None => 1,
            },
            rate: rate.map(|r| num("rate", r)).transpose()?,
            udp,
        };
        if !cases.contains(&case) {
            cases.push(case);
        }
    }
    if cases.is_empty() {
        return Err("no cases given".into());
    }
    Ok(cases)
}

/// How a server under test is started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `ringecho serve` with these flags (after `--addr`); it reports its own counters.
    Ringecho {
        /// Flags, e.g. `--backend uring --batch-wait-us 0`.
        flags: Vec<String>,
    },
    /// Any other echo server: a program and its arguments, `{addr}` replaced by the address
    /// to listen on (appended as the last argument when no argument mentions `{addr}`).
    External {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

/// A server under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Its column/row name, e.g. `uring`, `epoll`, `tokio`, `uring-nobatch`.
    pub name: String,
    /// How to start it.
    pub launch: Launch,
}

impl Server {
    /// Shard threads the server will run (ringecho: its `--threads`, 1 unless a variant sets
    /// it; external servers: 1, which is what the peers are).
    pub fn threads(&self) -> usize {
        match &self.launch {
            Launch::Ringecho { flags } => flag_value(flags, "--threads")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            Launch::External { .. } => 1,
        }
    }

    /// The command line, for the report.
    pub fn command_line(&self, ringecho: &Path) -> String {
        match &self.launch {
            Launch::Ringecho { .. } => {
                let mut v = vec![ringecho.display().to_string(), "serve".into()];
                v.extend(self.ringecho_args("127.0.0.1:0", &Case::tcp(1, 1, 1)));
                v.join(" ")
            }
            Launch::External { program, args } => {
                let mut v = vec![
                    format!("{EXTERNAL_ENV}={EXTERNAL_ENV_VALUE}"),
                    program.clone(),
                ];
                v.extend(external_args(args, "127.0.0.1:0"));
                v.join(" ")
            }
        }
    }

    /// `ringecho serve` arguments (without `serve`): the address, one shard unless the variant
    /// says otherwise, `--udp` for a datagram case, then the variant's flags.
    pub fn ringecho_args(&self, addr: &str, case: &Case) -> Vec<String> {
        let Launch::Ringecho { flags } = &self.launch else {
            return Vec::new();
        };
        let mut v = vec!["--addr".to_string(), addr.to_string()];
        if flag_value(flags, "--threads").is_none() {
            v.extend(["--threads".into(), "1".into()]);
        }
        if case.udp {
            v.push("--udp".into());
        }
        v.extend(flags.iter().cloned());
        v
    }

    /// Why this server sits out `case`, if it does: the peers are TCP echo servers.
    pub fn skips(&self, case: &Case) -> Option<&'static str> {
        (case.udp && !self.self_counting()).then_some("a TCP-only server: no UDP echo")
    }

    /// Whether the server counts its own syscalls (ringecho's `final:` line).
    pub fn self_counting(&self) -> bool {
        matches!(self.launch, Launch::Ringecho { .. })
    }
}

/// Set in every external server's environment. The peers of `../shared/peers` leave Nagle on
/// unless it is set, which stalls any case with more than one message in flight on delayed
/// ACKs (~40 ms a time); ringecho turns Nagle off by default (`--nodelay`). Comparing like
/// with like means both off.
pub const EXTERNAL_ENV: &str = "NODELAY";
/// ...to this.
pub const EXTERNAL_ENV_VALUE: &str = "1";

/// An external server's arguments with `{addr}` filled in (or the address appended).
pub fn external_args(args: &[String], addr: &str) -> Vec<String> {
    if args.iter().any(|a| a.contains("{addr}")) {
        args.iter().map(|a| a.replace("{addr}", addr)).collect()
    } else {
        let mut v = args.to_vec();
        v.push(addr.to_string());
        v
    }
}

/// The value of `--name V` or `--name=V` in a flag list.
fn flag_value<'a>(flags: &'a [String], name: &str) -> Option<&'a str> {
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == name {
            return it.next().map(String::as_str);
        }
        if let Some(v) = f.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
    }
    None
}

/// Parses a server list: entries separated by `;` or newlines, each one of
/// - `uring` or `epoll`: ringecho with that backend;
/// - `NAME=uring FLAGS...`, `NAME=epoll FLAGS...` or `NAME=--flag ...`: a ringecho variant;
/// - `NAME=PROGRAM ARGS...`: an external echo server (`{addr}` in ARGS is replaced by the
///   address, otherwise the address is appended).
///
/// Words are split on whitespace; there is no quoting.
pub fn parse_servers(s: &str) -> Result<Vec<Server>, String> {
    let mut servers: Vec<Server> = Vec::new();
    for entry in s.split([';', '\n']) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let server = parse_server(entry)?;
        if servers.iter().any(|o| o.name == server.name) {
            return Err(format!(
                "server name {:?} is given twice; give each entry its own NAME=",
                server.name
            ));
        }
        servers.push(server);
    }
    Ok(servers)
}

fn parse_server(entry: &str) -> Result<Server, String> {
    let (name, command) = match entry.split_once('=') {
        Some((n, c)) => (n.trim(), c.trim()),
        None if entry == "uring" || entry == "epoll" => (entry, entry),
        None => {
            return Err(format!(
                "server {entry:?}: expected `uring`, `epoll`, `NAME=uring|epoll FLAGS...`, \
                 `NAME=--flag ...` or `NAME=COMMAND ARGS...`"
            ));
        }
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    {
        return Err(format!(
            "server {entry:?}: the name {name:?} must be non-empty letters, digits, `-`, `_`, `.` or `+`"
        ));
    }
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    let Some(first) = words.first() else {
        return Err(format!("server {entry:?}: nothing after `{name}=`"));
    };
    let launch = if first == "uring" || first == "epoll" {
        let mut flags = vec!["--backend".to_string(), first.clone()];
        flags.extend(words[1..].iter().cloned());
        Launch::Ringecho { flags }
    } else if first.starts_with('-') {
        Launch::Ringecho { flags: words }
    } else {
        Launch::External {
            program: first.clone(),
            args: words[1..].to_vec(),
        }
    };
    if let Launch::Ringecho { flags } = &launch {
        for f in ["--addr", "--stats-interval"] {
            if flag_value(flags, f).is_some() {
                return Err(format!(
                    "server {entry:?}: {f} is set by the harness; leave it out"
                ));
            }
        }
    }
    Ok(Server {
        name: name.to_string(),
        launch,
    })
}

/// Finds an external program: a path as given, or a bare name on `PATH`.
pub fn find_program(program: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{program}: no such file (build the peers first, e.g. `make bench-peers`)"
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{program}: not found on PATH"))
}
