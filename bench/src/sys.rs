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

/// User + system CPU seconds used so far by every thread of `pid`, exited
/// threads included: the process's CPU-time clock, which the kernel keeps
/// in nanoseconds; `/proc/PID/stat`'s ticks if that clock cannot be read.
///
/// Ticks are 10 ms. On a shared 2-core machine a server may get only 10-20 %
/// of its core, 150-300 ms of CPU in a 1.5 s window, so a tick more or less
/// moved its CPU per request by 3-7 %: more than the differences measured.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    process_clock_seconds(pid).or_else(|_| stat_cpu_seconds(pid))
}

/// `clock_gettime` on `clock_getcpuclockid(pid)`: the sum of every thread's
/// time on a CPU (the same total `/proc/PID/stat` splits into user and
/// system), to the nanosecond.
fn process_clock_seconds(pid: u32) -> io::Result<f64> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: writes one clockid_t through a pointer to a local.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec through a pointer to a local.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9)
}

/// Fields 14 and 15 (utime, stime) of `/proc/PID/stat`, in 10 ms ticks;
/// exited threads are included.
fn stat_cpu_seconds(pid: u32) -> io::Result<f64> {
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
        // The clock and the ticks count the same time (a tick apart at most,
        // and the clock read second has run on).
        let (ticks, clock) = (stat_cpu_seconds(me).unwrap(), process_clock_seconds(me).unwrap());
        assert!(clock >= ticks - 0.011 && clock < ticks + 1.0, "clock {clock} s, ticks {ticks} s");
        // Another process's clock can be read too: the server's, by PID.
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let theirs = process_clock_seconds(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(theirs.unwrap() < 1.0);
        assert!(rss_kib(me).unwrap() > 100);
        assert!(peak_rss_kib(me).unwrap() >= rss_kib(me).unwrap() / 2);
        assert!(threads(me).unwrap() >= 1);
        assert!(!allowed_cpus().is_empty());
    }
}
