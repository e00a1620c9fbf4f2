//! The Linux facts the lab reads and sets: RLIMIT_NOFILE, CPU affinity,
//! and a process's CPU time and RSS from `/proc`. Nothing here does IO on
//! sockets.

use std::fs;
use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Raises the soft open-file limit to the hard one (10,000 connections
/// need more than the usual 1,024); returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current != Some(max)
    {
        let raised = Rlimit { current: Some(max), maximum: Some(max) };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("kvio bench: cannot raise RLIMIT_NOFILE to {max}: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread (and the processes and threads it starts
/// afterwards, which inherit its mask) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    sched_setaffinity(None, &set).map_err(io::Error::from)
}

/// Clock ticks per second of `/proc/PID/stat` times. Linux has reported
/// USER_HZ = 100 on every mainstream architecture for decades.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds used so far by every thread of `pid`
/// (fields 14 and 15 of `/proc/PID/stat`; exited threads are included).
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| bad_stat(pid))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).ok_or_else(|| bad_stat(pid));
    Ok((tick(14)? + tick(15)?) as f64 / CLOCK_TICKS_PER_SEC)
}

fn bad_stat(pid: u32) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat format"))
}

/// Resident set size of `pid` in KiB: `Rss` of `/proc/PID/smaps_rollup`,
/// which walks the page tables (`VmRSS` of `/proc/PID/status` is kept in
/// per-CPU counters that may lag by many pages in a process of 10,000
/// threads); `VmRSS` only if smaps_rollup is missing.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let field = |file: &str, name: &str| -> io::Result<u64> {
        let text = fs::read_to_string(format!("/proc/{pid}/{file}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {name} in /proc/{pid}/{file}")))
    };
    field("smaps_rollup", "Rss:").or_else(|_| field("status", "VmRSS:"))
}

/// Peak resident set size of `pid` in KiB (`VmHWM` of `/proc/PID/status`).
pub fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no VmHWM in /proc/{pid}/status")))
}

/// Threads of `pid` (`Threads` of `/proc/PID/status`).
pub fn threads(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no Threads in /proc/{pid}/status")))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        // Burn CPU until a tick (10 ms) is counted: on a busy machine 30 ms of
        // wall clock may hold less than one tick of this process's CPU.
        let spin = std::time::Instant::now();
        while cpu_seconds(me).unwrap() == 0.0 && spin.elapsed().as_secs() < 10 {
            std::hint::black_box(0u64);
        }
        assert!(cpu_seconds(me).unwrap() > 0.0);
        assert!(rss_kib(me).unwrap() > 100);
        assert!(peak_rss_kib(me).unwrap() >= rss_kib(me).unwrap() / 2);
        assert!(threads(me).unwrap() >= 1);
        assert!(!allowed_cpus().is_empty());
    }
}
