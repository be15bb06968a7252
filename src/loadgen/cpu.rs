//! CPU time over the measured window: this process, the whole machine, optionally the server.
//!
//! On loopback the kernel does much of the receiving side's TCP work in the *sender's*
//! context (the packet is processed to the end of the receive path inside `send`), so client
//! and server CPU per message each include part of the other's cost. The machine-wide figure
//! from `/proc/stat` (every CPU, busy time) is the honest total.

use std::time::Instant;

use crate::sys;
use crate::sys::proc;

/// One reading of the CPU clocks.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    /// When.
    pub at: Instant,
    /// This process, user + system, µs.
    pub process_us: u64,
    /// Every CPU's busy time (not idle, not iowait), µs.
    pub machine_busy_us: Option<u64>,
    /// The server process, user + system, µs (its process CPU clock; see
    /// [`sys::process_cpu_nanos`]).
    pub server_us: Option<u64>,
}

/// Reads every clock now.
pub fn sample(server_pid: Option<u32>) -> CpuSample {
    let tick_us = 1_000_000 / proc::clock_ticks_per_sec();
    let machine_busy_us = proc::cpu_times().map(|t| t.busy * tick_us);
    // The server's process clock is exact; /proc/PID/stat (ticks) only where it cannot be read.
    let server_us = server_pid.and_then(|pid| {
        sys::process_cpu_nanos(pid)
            .map(|ns| ns / 1000)
            .or_else(|| proc::process_cpu_ticks(pid).map(|t| t * tick_us))
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
    fn samples_this_machine() {
        let a = sample(Some(std::process::id()));
        let b = sample(Some(std::process::id()));
        assert!(a.machine_busy_us.is_some());
        assert!(b.server_us.is_some());
        let u = CpuUse::between(&a, &b);
        assert!(u.wall_secs >= 0.0);
    }
}
