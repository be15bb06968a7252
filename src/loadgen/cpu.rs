//! CPU time over the measured window: this process, the whole machine, optionally the server.
//!
//! On loopback the kernel does much of the receiving side's TCP work in the *sender's*
//! context (the packet is processed to the end of the receive path inside `send`), so client
//! and server CPU per message each include part of the other's cost. The machine-wide figure
//! from `/proc/stat` (every CPU, busy time) is the honest total.

use std::time::Instant;

use crate::sys;

/// One reading of the CPU clocks.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// When.
    pub at: Instant,
    /// This process, user + system, µs.
    pub process_us: u64,
    /// Every CPU's busy time (not idle, not iowait), µs.
    pub machine_busy_us: Option<u64>,
    /// The server process, user + system, µs.
    pub server_us: Option<u64>,
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Busy ticks summed over every CPU, from the first line of `/proc/stat`.
pub fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// utime + stime ticks from a `/proc/PID/stat` line.
pub fn parse_pid_stat_ticks(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is f[0]; utime and stime are fields 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Reads every clock now.
pub fn sample(server_pid: Option<u32>) -> CpuSample {
    let tick_us = 1_000_000 / clock_ticks_per_sec();
    let machine_busy_us = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_proc_stat_busy(&s))
        .map(|t| t * tick_us);
    let server_us = server_pid.and_then(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_pid_stat_ticks(&s))
            .map(|t| t * tick_us)
    });
    CpuSample {
        at: Instant::now(),
        process_us: sys::process_cpu_micros(),
        machine_busy_us,
        server_us,
    }
}

/// The CPU used between two samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    /// Wall time between the samples, seconds.
    pub wall_secs: f64,
    /// This process, µs.
    pub process_us: u64,
    /// All CPUs, µs.
    pub machine_us: Option<u64>,
    /// The server, µs.
    pub server_us: Option<u64>,
}

impl CpuUse {
    /// `to - from`.
    pub fn between(from: &CpuSample, to: &CpuSample) -> CpuUse {
        let d = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        CpuUse {
            wall_secs: to.at.duration_since(from.at).as_secs_f64(),
            process_us: to.process_us.saturating_sub(from.process_us),
            machine_us: d(from.machine_busy_us, to.machine_busy_us),
            server_us: d(from.server_us, to.server_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let s = "cpu  100 5 50 1000 7 3 2 1 9 0\ncpu0 50 2 25 500 3 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat_busy(s), Some(100 + 5 + 50 + 3 + 2 + 1));
    }

    #[test]
    fn parses_pid_stat_with_awkward_names() {
        let s = "1234 (my (weird) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0";
        assert_eq!(parse_pid_stat_ticks(s), Some(325));
        assert_eq!(parse_pid_stat_ticks("garbage"), None);
    }

    #[test]
    fn samples_this_machine() {
        let a = sample(Some(std::process::id()));
        let b = sample(Some(std::process::id()));
        assert!(a.machine_busy_us.is_some());
        assert!(b.server_us.is_some());
        let u = CpuUse::between(&a, &b);
        assert!(u.wall_secs >= 0.0);
    }
}
