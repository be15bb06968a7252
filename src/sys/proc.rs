//! Readings from `/proc`: CPU time (the machine's and one process's), memory (a process's and
//! the machine's), a process's limits, sockets (counts, memory, TCP tables, SNMP counters),
//! load average, CPU model.
//!
//! Each reading is two halves: a pure `parse_*` function over the file's text (unit-tested
//! below on captured text) and a reader that opens the file. Readers return `None` when the
//! file cannot be read or does not parse: a figure that is missing on some kernel leaves a
//! blank, never an error, in what the load generator, the comparison harness and the tests
//! report.

use std::fs;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`): the unit of `/proc`'s CPU times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Bytes per page (what `/proc/net/sockstat` counts TCP memory in).
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

// ---- CPU time ---------------------------------------------------------------------------------

/// CPU time summed over every CPU since boot, from the first line of `/proc/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Busy clock ticks: user, nice, system, irq, softirq and steal (guest time is already
    /// inside user).
    pub busy: u64,
    /// Busy ticks plus idle and iowait.
    pub total: u64,
    /// How many `cpuN` lines the file has (at least 1).
    pub cpus: usize,
}

/// Parses `/proc/stat`.
pub fn parse_cpu_times(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(CpuTimes {
        busy,
        total: busy + field(3) + field(4),
        cpus: cpus.max(1),
    })
}

/// The machine's CPU time now.
pub fn cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&fs::read_to_string("/proc/stat").ok()?)
}

/// utime + stime clock ticks (every thread of the process) from a `/proc/PID/stat` line.
pub fn parse_process_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is f[0]; utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The CPU time process `pid` has used so far, in clock ticks.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    parse_process_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The CPU model, from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

// ---- one process ------------------------------------------------------------------------------

/// A `Key:   N kB` line, as `/proc/PID/status` and `/proc/meminfo` write them (`key` without
/// the colon: `VmRSS`, `VmHWM`, `Slab`).
pub fn parse_kib_line(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| {
        l.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A `kB` field of process `pid`'s `/proc/PID/status`: `VmRSS` (resident now), `VmHWM` (peak).
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    parse_kib_line(
        &fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        key,
    )
}

/// A `kB` field of `/proc/meminfo` (whole machine): `Slab`, `MemFree`, ...
pub fn meminfo_kib(key: &str) -> Option<u64> {
    parse_kib_line(&fs::read_to_string("/proc/meminfo").ok()?, key)
}

/// The (soft, hard) values of one limit in `/proc/PID/limits`, by its name there (`Max open
/// files`). `None` for a limit that is `unlimited`.
pub fn parse_limit(limits: &str, name: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let mut v = line[name.len()..]
        .split_whitespace()
        .filter_map(|w| w.parse().ok());
    Some((v.next()?, v.next()?))
}

/// Process `pid`'s `RLIMIT_NOFILE` as (soft, hard).
pub fn nofile_limit(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_limit(&text, "Max open files")
}

// ---- sockets ----------------------------------------------------------------------------------

/// The `sockets:` and `TCP:` lines of `/proc/net/sockstat`. Counts are per network namespace;
/// TCP memory is for the whole machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStat {
    /// `sockets: used` (all families).
    pub sockets_used: u64,
    /// TCP sockets in use (every state except TIME_WAIT).
    pub tcp_inuse: u64,
    /// Orphaned TCP sockets.
    pub tcp_orphan: u64,
    /// TIME_WAIT sockets.
    pub tcp_tw: u64,
    /// Allocated TCP sockets.
    pub tcp_alloc: u64,
    /// Pages the kernel holds for every TCP socket on the machine (send and receive queues),
    /// client and server alike.
    pub tcp_mem_pages: u64,
}

impl SockStat {
    /// [`tcp_mem_pages`](Self::tcp_mem_pages) in KiB.
    pub fn tcp_mem_kib(&self) -> u64 {
        self.tcp_mem_pages * page_size() / 1024
    }
}

/// Parses `/proc/net/sockstat`; `None` without a `TCP:` line.
pub fn parse_sockstat(text: &str) -> Option<SockStat> {
    let mut s = SockStat::default();
    let mut tcp = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(kind) = words.next() else { continue };
        tcp |= kind == "TCP:";
        let words: Vec<&str> = words.collect();
        for pair in words.chunks(2) {
            let [k, v] = pair else { continue };
            let v: u64 = v.parse().unwrap_or(0);
            match (kind, *k) {
                ("sockets:", "used") => s.sockets_used = v,
                ("TCP:", "inuse") => s.tcp_inuse = v,
                ("TCP:", "orphan") => s.tcp_orphan = v,
                ("TCP:", "tw") => s.tcp_tw = v,
                ("TCP:", "alloc") => s.tcp_alloc = v,
                ("TCP:", "mem") => s.tcp_mem_pages = v,
                _ => {}
            }
        }
    }
    tcp.then_some(s)
}

/// The socket counts of process `pid`'s network namespace (`/proc/PID/net/sockstat`), or of
/// this process's with `None` (`/proc/net/sockstat`).
pub fn sockstat(pid: Option<u32>) -> Option<SockStat> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/net/sockstat"),
        None => "/proc/net/sockstat".to_string(),
    };
    parse_sockstat(&fs::read_to_string(path).ok()?)
}

/// One socket of a `/proc/net/tcp` or `/proc/net/tcp6` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// Local port.
    pub local_port: u16,
    /// TCP state as the kernel numbers it: `0x0A` LISTEN, `0x01` ESTABLISHED, `0x06`
    /// TIME_WAIT, ...
    pub state: u8,
    /// The pending timer: its kind (0 none, 1 retransmit, 2 keepalive, ...) and the clock
    /// ticks until it fires.
    pub timer: (u8, u64),
    /// The socket's inode: what `/proc/PID/fd/N` links to, as `socket:[INODE]`.
    pub inode: u64,
}

impl TcpSocket {
    /// `TCP_LISTEN`.
    pub const LISTEN: u8 = 0x0A;
    /// `TCP_ESTABLISHED`.
    pub const ESTABLISHED: u8 = 0x01;
    /// `TCP_TIME_WAIT`.
    pub const TIME_WAIT: u8 = 0x06;
}

/// Parses a `/proc/net/tcp` or `tcp6` table (header line first); lines that do not parse are
/// left out.
pub fn parse_tcp_table(text: &str) -> Vec<TcpSocket> {
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            // "tr:tm->when": the timer kind, then ticks until it fires.
            let (kind, when) = f.get(5)?.split_once(':').unwrap_or(("0", "0"));
            Some(TcpSocket {
                local_port,
                state,
                timer: (hex(kind).unwrap_or(0) as u8, hex(when).unwrap_or(0)),
                inode: f.get(9).and_then(|i| i.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// Every TCP socket (IPv4, then IPv6) of process `pid`'s network namespace; a table that
/// cannot be read adds none. io_uring direct descriptors never appear in `/proc/PID/fd`, so
/// this is how an observer sees a server's connections.
pub fn tcp_sockets(pid: u32) -> Vec<TcpSocket> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|file| fs::read_to_string(format!("/proc/{pid}/net/{file}")).ok())
        .flat_map(|table| parse_tcp_table(&table))
        .collect()
}

/// TCP sockets whose local port is a given port, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSockets {
    /// LISTEN.
    pub listen: usize,
    /// ESTABLISHED.
    pub established: usize,
    /// TIME_WAIT.
    pub time_wait: usize,
    /// Any other state (closing: CLOSE_WAIT, LAST_ACK, FIN_WAIT*, ...).
    pub other: usize,
}

impl PortSockets {
    /// Counts the sockets of `sockets` whose local port is `port`.
    pub fn of(sockets: &[TcpSocket], port: u16) -> PortSockets {
        let mut c = PortSockets::default();
        for s in sockets.iter().filter(|s| s.local_port == port) {
            match s.state {
                TcpSocket::LISTEN => c.listen += 1,
                TcpSocket::ESTABLISHED => c.established += 1,
                TcpSocket::TIME_WAIT => c.time_wait += 1,
                _ => c.other += 1,
            }
        }
        c
    }

    /// Sockets that hold kernel resources for a connection (everything but LISTEN/TIME_WAIT).
    pub fn open(&self) -> usize {
        self.established + self.other
    }
}

/// Counts process `pid`'s namespace's TCP sockets with local port `port`, by state.
pub fn port_sockets(pid: u32, port: u16) -> PortSockets {
    PortSockets::of(&tcp_sockets(pid), port)
}

/// The counters of one group (`Udp`, `Tcp`, `Ip`, ...) of a `/proc/net/snmp` file, which
/// writes each group as a line of names and a line of values.
pub fn parse_snmp<'a>(text: &'a str, group: &str) -> Vec<(&'a str, u64)> {
    let mut lines = text
        .lines()
        .filter(|l| l.strip_prefix(group).is_some_and(|r| r.starts_with(':')));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Vec::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
        .collect()
}

/// One group of the SNMP counters of the calling *thread*'s network namespace
/// (`/proc/thread-self/net/snmp`: a thread that entered a namespace of its own sees that one's);
/// empty if the file cannot be read.
pub fn thread_snmp(group: &str) -> Vec<(String, u64)> {
    let text = fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    parse_snmp(&text, group)
        .into_iter()
        .map(|(name, v)| (name.to_string(), v))
        .collect()
}

/// One cache's line of `/proc/slabinfo`: (active objects, object size in bytes).
pub fn parse_slab(slabinfo: &str, name: &str) -> Option<(u64, u64)> {
    slabinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() == Some(&name) {
            Some((f.get(1)?.parse().ok()?, f.get(3)?.parse().ok()?))
        } else {
            None
        }
    })
}

/// Kernel slab usage of one cache (`TCP`, ...), if `/proc/slabinfo` is readable (root only).
pub fn slab(name: &str) -> Option<(u64, u64)> {
    parse_slab(&fs::read_to_string("/proc/slabinfo").ok()?, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_times() {
        let s = "cpu  100 5 50 1000 7 3 2 1 9 0\ncpu0 50 2 25 500 3 1 1 0 0 0\n\
                 cpu1 50 3 25 500 4 2 1 1 0 0\nintr 5\n";
        let t = parse_cpu_times(s).unwrap();
        assert_eq!(t.busy, 100 + 5 + 50 + 3 + 2 + 1);
        assert_eq!((t.busy, t.total, t.cpus), (161, 1168, 2));
        assert_eq!(parse_cpu_times("intr 5\n"), None);
    }

    #[test]
    fn parses_process_cpu_ticks_with_awkward_names() {
        let s = "1234 (my (weird) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0";
        assert_eq!(parse_process_cpu_ticks(s), Some(325));
        assert_eq!(parse_process_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_kib_lines_by_whole_key() {
        let status = "Name:\tx\nVmHWMx:\t1 kB\nVmHWM:\t   3964 kB\nVmRSS:\t 3000 kB\n";
        assert_eq!(parse_kib_line(status, "VmHWM"), Some(3964));
        assert_eq!(parse_kib_line(status, "VmRSS"), Some(3000));
        assert_eq!(parse_kib_line(status, "VmSwap"), None);
    }

    #[test]
    fn parses_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limit(limits, "Max open files"), Some((1024, 524288)));
        assert_eq!(parse_limit(limits, "Max cpu time"), None);
    }

    #[test]
    fn parses_sockstat() {
        let text =
            "sockets: used 13\nTCP: inuse 1 orphan 0 tw 3248 alloc 1 mem 193\nUDP: inuse 0 mem 7\n";
        let s = parse_sockstat(text).unwrap();
        assert_eq!(s.tcp_mem_pages, 193);
        assert_eq!(
            s,
            SockStat {
                sockets_used: 13,
                tcp_inuse: 1,
                tcp_orphan: 0,
                tcp_tw: 3248,
                tcp_alloc: 1,
                tcp_mem_pages: 193,
            }
        );
        assert_eq!(parse_sockstat("garbage"), None);
    }

    #[test]
    fn parses_tcp_tables_and_counts_a_ports_sockets_by_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1E96 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n\
            1: 0100007F:1E96 0100007F:D2A4 01 00000000:00000000 02:000002BC 00000000  1000        0 4243 1\n\
            2: 0100007F:1E96 0100007F:D2A6 06 00000000:00000000 03:00000100 00000000     0        0 0 3\n\
            3: 0100007F:1E96 0100007F:D2A8 08 00000000:00000000 00:00000000 00000000  1000        0 4245 1\n\
            4: 0100007F:D2A4 0100007F:1E96 01 00000000:00000000 00:00000000 00000000  1000        0 4246 1\n\
            garbage\n";
        let sockets = parse_tcp_table(table);
        assert_eq!(sockets.len(), 5);
        assert_eq!(
            sockets[1],
            TcpSocket {
                local_port: 0x1E96,
                state: TcpSocket::ESTABLISHED,
                timer: (2, 0x2BC),
                inode: 4243,
            }
        );
        let c = PortSockets::of(&sockets, 0x1E96);
        assert_eq!(
            c,
            PortSockets {
                listen: 1,
                established: 1,
                time_wait: 1,
                other: 1,
            }
        );
        assert_eq!(c.open(), 2);
    }

    #[test]
    fn parses_snmp_groups() {
        let text = "Tcp: RtoAlgorithm InSegs\nTcp: 1 77\n\
                    Udp: InDatagrams NoPorts InErrors\nUdp: 12 3 0\n\
                    UdpLite: InDatagrams NoPorts\nUdpLite: 5 5\n";
        assert_eq!(
            parse_snmp(text, "Udp"),
            [("InDatagrams", 12), ("NoPorts", 3), ("InErrors", 0)]
        );
        assert!(parse_snmp(text, "Icmp").is_empty());
    }

    #[test]
    fn parses_slabinfo() {
        let text = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize>\n\
                    TCPv6 30 30 2432 13 8\nTCP 64 72 2304 14 8\n";
        assert_eq!(parse_slab(text, "TCP"), Some((64, 2304)));
        assert_eq!(parse_slab(text, "UDP"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_times().is_some_and(|t| t.total >= t.busy));
        assert!(process_cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmRSS").is_some_and(|kib| kib > 0));
        assert!(nofile_limit(me).is_some_and(|(soft, hard)| soft <= hard));
        assert!(sockstat(None).is_some());
        assert!(meminfo_kib("MemTotal").is_some_and(|kib| kib > 0));
        assert!(
            thread_snmp("Udp")
                .iter()
                .any(|(name, _)| name == "InDatagrams")
        );
    }
}
