//! `kvio bench compare`: starts each server (the five `kvio serve` flavors,
//! from the `kvio` binary beside this one, and the tokio and floor
//! baselines, from this binary) as a fresh child process per point,
//! pinned to one core while the load generator runs on the other, runs the
//! connection matrix and the idle-memory test, and hands the results to
//! [`crate::report`]. Whatever a server cannot hold is skipped and the
//! reason recorded.
//!
//! Then the multi-core points: `kvio serve --flavor epoll --threads N`
//! (`epoll-tN`) against tokio's multi-thread runtime with N workers
//! (`tokio-multi-wN`), for N in `--loops` (default 1..=the CPUs allowed),
//! at [`MULTICORE_POINTS`], with server and load generator unpinned: the
//! sweep of requests/s against loops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::load::{self, Load, LoadConfig, LoadReport};
use crate::progress::Progress;
use crate::report::{self, IdleResult, Results, RunResult};
use crate::sys;
use crate::wire::Check;

/// The matrix: (connections, pipeline).
pub const POINTS: [(usize, usize); 6] = [(1, 1), (16, 1), (256, 1), (1_000, 1), (10_000, 1), (16, 16)];
/// The multi-core points: (connections, pipeline).
pub const MULTICORE_POINTS: [(usize, usize); 2] = [(16, 16), (1_000, 1)];
/// Connections held open in the idle-memory test.
pub const IDLE_CONNECTIONS: usize = 10_000;
/// The server binary, looked for beside `kvio-bench`.
pub const KVIO_BINARY: &str = "kvio";
/// Bound on a server's start-up line and on its exit after SIGTERM.
const SERVER_WAIT: Duration = Duration::from_secs(10);

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// The floor baseline (bench-only).
    Floor,
    /// tokio, current-thread runtime (bench-only).
    TokioCurrent,
    /// tokio, multi-thread runtime (bench-only).
    TokioMulti,
    /// `kvio serve --flavor epoll`.
    Epoll,
    /// `kvio serve --flavor uring`.
    Uring,
    /// `kvio serve --flavor busy-poll`.
    BusyPoll,
    /// `kvio serve --flavor threaded`.
    Threaded,
    /// `kvio serve --flavor blocking`.
    Blocking,
}

impl Server {
    /// Every server, baselines first.
    pub const ALL: [Server; 8] = [
        Server::Floor,
        Server::TokioCurrent,
        Server::TokioMulti,
        Server::Epoll,
        Server::Uring,
        Server::BusyPoll,
        Server::Threaded,
        Server::Blocking,
    ];

    /// Name in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Server::Floor => "floor",
            Server::TokioCurrent => "tokio-current",
            Server::TokioMulti => "tokio-multi",
            Server::Epoll => "epoll",
            Server::Uring => "uring",
            Server::BusyPoll => "busy-poll",
            Server::Threaded => "threaded",
            Server::Blocking => "blocking",
        }
    }

    /// A `kvio serve` flavor rather than a bench baseline.
    fn is_flavor(self) -> bool {
        !matches!(self, Server::Floor | Server::TokioCurrent | Server::TokioMulti)
    }

    fn args(self) -> Vec<String> {
        let any_port = ["--addr", "127.0.0.1:0"];
        let mut args = match self {
            Server::Floor => vec!["floor-server"],
            Server::TokioCurrent => vec!["tokio-server", "--runtime", "current"],
            Server::TokioMulti => vec!["tokio-server", "--runtime", "multi"],
            flavor => vec!["serve", "--flavor", flavor.name()],
        };
        args.extend(any_port);
        args.into_iter().map(String::from).collect()
    }

    /// This server, pinned as `cores` says.
    fn target(self, cores: Cores) -> Target {
        Target { name: self.name().into(), kvio: self.is_flavor(), args: self.args(), cores, loops: None }
    }

    fn check(self) -> Check {
        if self == Server::Floor { Check::Framing } else { Check::Full }
    }

    /// Why this server is not run with `connections` at all.
    fn cannot_hold(self, connections: usize) -> Option<&'static str> {
        (self == Server::Blocking && connections > 1).then_some(
            "blocking serves one connection at a time: the others wait until it has been idle for \
             its timeout (200 ms), so closed-loop clients on them never get answers in a run",
        )
    }
}

/// `kvio bench compare` options.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Short runs (one round, 0.2 s warm-up, 1 s measured): the whole
    /// comparison in under 3 minutes on 2 cores. The full mode runs three
    /// rounds of 0.5 s + 2 s.
    #[arg(long)]
    pub short: bool,
    /// Also judge the run against the project's own performance goals (issue 5's, 12's and 14's), in a table after the
    /// results.
    #[arg(long)]
    pub goals: bool,
    /// Where results.json, results.csv, results.md and the SVG plots go.
    #[arg(long, default_value = "kvio-bench-results")]
    pub out: PathBuf,
    /// Servers to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub servers: Vec<Server>,
    /// Connection counts at pipeline 1 (default 1,16,256,1000,10000; 16x16 is always added).
    #[arg(long, value_delimiter = ',')]
    pub connections: Vec<usize>,
    /// Override the warm-up (ms).
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// Override the measured time (ms).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Rounds over the matrix (default 1 short, 3 full); figures are medians.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Skip the idle-memory test.
    #[arg(long)]
    pub no_idle: bool,
    /// The load generator polls without sleeping (see `kvio bench --spin`).
    #[arg(long)]
    pub spin: bool,
    /// Loops (epoll `--threads`) and tokio workers of the multi-core points
    /// (default: 1 to the number of CPUs allowed).
    #[arg(long, value_delimiter = ',')]
    pub loops: Vec<usize>,
    /// Skip the multi-core points.
    #[arg(long, conflicts_with = "multicore_only")]
    pub no_multicore: bool,
    /// Run only the multi-core points (no single-core matrix, no idle test).
    #[arg(long)]
    pub multicore_only: bool,
}

/// One server process to start: a name in the results, its `kvio`
/// arguments, where it runs, and its loops (multi-core points only).
#[derive(Clone, Debug)]
struct Target {
    name: String,
    /// Run by the `kvio` binary (a flavor), else by this one (a baseline).
    kvio: bool,
    args: Vec<String>,
    cores: Cores,
    loops: Option<usize>,
}

impl Target {
    /// `epoll-tN` and `tokio-multi-wN`: unpinned (`cores.all`).
    fn multicore(n: usize, cores: Cores) -> [Target; 2] {
        let unpinned = Cores { server: None, load: None, ..cores };
        let n_arg = n.to_string();
        let epoll = ["serve", "--flavor", "epoll", "--threads", &n_arg, "--addr", "127.0.0.1:0"];
        let tokio = ["tokio-server", "--runtime", "multi", "--workers", &n_arg, "--addr", "127.0.0.1:0"];
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        let (cores, loops) = (unpinned, Some(n));
        [
            Target { name: format!("epoll-t{n}"), kvio: true, args: args(&epoll), cores, loops },
            Target { name: format!("tokio-multi-w{n}"), kvio: false, args: args(&tokio), cores, loops },
        ]
    }
}

/// The program that runs a server: the `kvio` binary beside this one for
/// a flavor (`kvio`), this binary (`kvio-bench`) for a baseline.
pub(crate) fn program(kvio: bool) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    if !kvio {
        return Ok(exe);
    }
    let kvio = exe.with_file_name(KVIO_BINARY);
    if kvio.is_file() {
        Ok(kvio)
    } else {
        Err(format!(
            "{} not found: the flavors are `kvio serve`; build kvio beside kvio-bench with \
             `cargo build --release -p kvio` (or `-p kvio` without --release for a debug kvio-bench)",
            kvio.display()
        ))
    }
}

/// A server child process, its address, and its stdout lines.
pub(crate) struct Running {
    child: std::process::Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddrV4,
    pub(crate) lines: Receiver<Option<String>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Which cores the server and the load run on, when there are two; `None`
/// for both: anywhere (the first two of) `all` allows.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cores {
    server: Option<usize>,
    load: Option<usize>,
    /// The CPUs the lab itself was allowed (at most 64 tracked).
    all: u64,
}

impl Cores {
    /// Server on the first allowed CPU, load on the second, when there are two.
    pub(crate) fn pinned() -> Cores {
        let cpus = sys::allowed_cpus();
        let all = cpus.iter().filter(|&&c| c < 64).fold(0u64, |m, &c| m | (1 << c));
        if cpus.len() >= 2 {
            Cores { server: Some(cpus[0]), load: Some(cpus[1]), all }
        } else {
            Cores { server: None, load: None, all }
        }
    }

    fn all_cpus(&self) -> Vec<usize> {
        (0..64).filter(|c| self.all & (1 << c) != 0).collect()
    }

    /// `server on CPU 0, load on CPU 1`, or why nothing is pinned.
    pub(crate) fn describe(self) -> String {
        match (self.server, self.load) {
            (Some(s), Some(l)) => format!("server on CPU {s}, load on CPU {l}"),
            _ => "no pinning (fewer than 2 CPUs allowed)".to_owned(),
        }
    }
}

fn start(target: &Target) -> Result<Running, String> {
    let exe = program(target.kvio)?;
    let mut running = spawn(&exe, &target.args, target.cores)?;
    let first = match running.lines.recv_timeout(SERVER_WAIT) {
        Ok(Some(line)) => line,
        Ok(None) | Err(_) => {
            let why = running.stderr();
            running.kill();
            return Err(format!("{} printed no start-up line: {why}", target.name));
        }
    };
    let addr = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("no addr= in the start-up line {first:?}"));
    match addr {
        Ok(addr) => {
            running.addr = addr;
            Ok(running)
        }
        Err(e) => {
            running.kill();
            Err(e)
        }
    }
}

/// Starts `exe args` with the server's affinity (the load thread keeps the
/// load's), its stdout lines sent to `lines` and its first stderr lines
/// kept; `addr` is left unspecified for the caller to fill in.
pub(crate) fn spawn(exe: &std::path::Path, args: &[String], cores: Cores) -> Result<Running, String> {
    // The child inherits the affinity of the thread that spawns it.
    match cores.server {
        Some(c) => sys::pin_current_thread(&[c]).map_err(|e| format!("pin to CPU {c}: {e}"))?,
        None => sys::pin_current_thread(&cores.all_cpus()).map_err(|e| format!("unpin: {e}"))?,
    }
    let spawned =
        Command::new(exe).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    if let Some(c) = cores.load {
        sys::pin_current_thread(&[c]).map_err(|e| format!("pin to CPU {c}: {e}"))?;
    }
    let mut child = spawned.map_err(|e| format!("{}: {e}", exe.display()))?;
    let pid = child.id();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&stderr);
    let err = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() < 20 {
                kept.push(line);
            }
        }
    });
    let addr = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
    Ok(Running { child, pid, addr, lines, stderr })
}

impl Running {
    /// SIGKILL and reap: for a server that never became ready.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL if it does not come.
    pub(crate) fn stop(mut self) -> Option<String> {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid as i32).expect("child PIDs are positive"),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + SERVER_WAIT;
        let mut last = None;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(line)) => last = Some(line),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    break;
                }
            }
        }
        let _ = self.child.wait();
        last
    }

    /// The first lines the server wrote to stderr, joined.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().map(|l| l.join(" | ")).unwrap_or_default()
    }
}

/// The comparison; returns the exit code.
pub fn run(args: CompareArgs) -> i32 {
    let nofile = sys::raise_nofile_limit();
    let cpus = sys::allowed_cpus();
    let cores = Cores::pinned();
    let single = if args.servers.is_empty() { Server::ALL.to_vec() } else { args.servers.clone() };
    let single = if args.multicore_only { Vec::new() } else { single };
    let mut targets: Vec<Target> = single.iter().map(|s| s.target(cores)).collect();
    let loops: Vec<usize> = if args.loops.is_empty() { (1..=cpus.len().max(1)).collect() } else { args.loops.clone() };
    let multicore: Vec<Target> = if args.no_multicore {
        Vec::new()
    } else {
        loops.iter().filter(|&&n| n > 0).flat_map(|&n| Target::multicore(n, cores)).collect()
    };
    let single_count = targets.len();
    targets.extend(multicore);
    if let Some(Err(why)) = targets.iter().find(|t| t.kvio).map(|t| program(t.kvio)) {
        eprintln!("kvio bench compare: {why}");
        return 2;
    }
    let mut points: Vec<(usize, usize)> = if args.connections.is_empty() {
        POINTS.to_vec()
    } else {
        args.connections.iter().map(|&c| (c, 1)).chain([(16, 16)]).collect()
    };
    points.dedup();
    let (warmup, duration) = if args.short { (200, 1000) } else { (500, 2000) };
    let warmup = Duration::from_millis(args.warmup_ms.unwrap_or(warmup));
    let duration = Duration::from_millis(args.duration_ms.unwrap_or(duration));
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("kvio bench compare: {}: {e}", args.out.display());
        return 2;
    }
    let idle_servers: Vec<Server> = if args.no_idle { Vec::new() } else { single.clone() };
    let rounds = args.rounds.unwrap_or(if args.short { 1 } else { 3 }).max(1);
    // Single-core servers run the matrix; multi-core ones their own points.
    let points_of = |ti: usize| -> Vec<(usize, usize)> {
        if ti < single_count { points.clone() } else { MULTICORE_POINTS.to_vec() }
    };
    let runs: usize = (0..targets.len()).map(|ti| points_of(ti).len()).sum();
    // A step is a server start, its warm-up and its measured window.
    let planned = warmup + duration + Duration::from_millis(500);
    let mut bar = Progress::new("kvio bench compare", (rounds * runs + idle_servers.len()) as u64, planned);
    let mut step = 0;
    bar.println(&format!(
        "kvio bench compare: {} mode, {rounds} round(s), warm-up {warmup:?}, measured {duration:?}, single-core servers: {}, multi-core points (loops {loops:?}) unpinned, RLIMIT_NOFILE {nofile}",
        if args.short { "short" } else { "full" },
        cores.describe(),
    ));
    // With no single-core server, nothing ran pinned.
    let (server_cpu, load_cpu) = if single.is_empty() { (None, None) } else { (cores.server, cores.load) };
    let mut results = Results::new(args.short, warmup, duration, server_cpu, load_cpu);
    results.rounds = rounds;
    // Servers take turns at each point, round after round, so a change in
    // the machine's background load hits every server alike; each figure
    // is then the median over the rounds.
    let mut cells: Vec<Vec<(RunResult, Vec<LoadReport>)>> = targets
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let cell = |&(c, p): &(usize, usize)| {
                let mut result = RunResult::new(&t.name, c, p);
                result.loops = t.loops;
                (result, Vec::new())
            };
            points_of(ti).iter().map(cell).collect()
        })
        .collect();
    let mut failed_at: Vec<Option<(usize, String)>> = vec![None; targets.len()];
    let all_points: Vec<(usize, usize)> =
        points.iter().chain(MULTICORE_POINTS.iter()).fold(Vec::new(), |mut all, point| {
            if !all.contains(point) {
                all.push(*point);
            }
            all
        });
    for round in 0..rounds {
        for &(connections, pipeline) in &all_points {
            for (si, target) in targets.iter().enumerate() {
                let Some(pi) = points_of(si).iter().position(|&p| p == (connections, pipeline)) else { continue };
                let server = single.get(si).copied().filter(|_| si < single_count);
                bar.set(step, &format!("round {}/{rounds}: {} {connections}x{pipeline}", round + 1, target.name));
                step += 1;
                let (result, samples) = &mut cells[si][pi];
                if result.status != "ok" {
                    continue;
                }
                if let Some(why) = server.and_then(|s| s.cannot_hold(connections)) {
                    result.skip(why.to_string());
                } else if let Some((failed, why)) = failed_at[si].as_ref().filter(|(n, _)| connections > *n) {
                    result.skip(format!("failed at {failed} connections ({why})"));
                } else {
                    match start(target) {
                        Err(why) => result.fail(why),
                        Ok(running) => {
                            let cfg = LoadConfig {
                                connections,
                                pipeline,
                                warmup,
                                duration,
                                check: server.map_or(Check::Full, Server::check),
                                server_pid: Some(running.pid),
                                spin: args.spin,
                                ..LoadConfig::new(running.addr)
                            };
                            let report = load::run(cfg);
                            result.threads = sys::threads(running.pid).ok();
                            let stderr = running.stderr();
                            running.stop();
                            if report.errors > 0 {
                                let why = format!(
                                    "{} errors, first: {}{}",
                                    report.errors,
                                    report.first_error.as_deref().unwrap_or("?"),
                                    if stderr.is_empty() {
                                        String::new()
                                    } else {
                                        format!("; server stderr: {stderr}")
                                    }
                                );
                                if report.total_requests == 0 {
                                    failed_at[si] = Some((connections, why.clone()));
                                }
                                result.report = Some(report);
                                result.fail(why);
                            } else {
                                samples.push(report);
                            }
                        }
                    }
                }
                if let Some(why) = &result.reason {
                    bar.println(&format!("{} {connections}x{pipeline}: {} ({why})", target.name, result.status));
                }
            }
        }
    }
    for (mut result, samples) in cells.into_iter().flatten() {
        if result.status == "ok" {
            result.report = report::median(&samples);
        }
        results.runs.push(result);
    }
    for &server in &idle_servers {
        bar.set(step, &format!("{} idle {IDLE_CONNECTIONS}", server.name()));
        step += 1;
        let idle = idle_memory(server, cores, IDLE_CONNECTIONS, duration);
        if let Some(why) = &idle.reason {
            bar.println(&format!("{} idle memory: {} ({why})", server.name(), idle.status));
        }
        results.idle.push(idle);
    }
    bar.set(step, "writing the results");
    bar.finish();
    if args.goals {
        results.evaluate_goals();
    }
    match report::write_all(&results, &args.out) {
        Ok(table) => {
            println!("{table}");
            println!("results in {}", args.out.display());
        }
        Err(e) => {
            eprintln!("kvio bench compare: writing results: {e}");
            return 2;
        }
    }
    let failed = results.runs.iter().filter(|r| r.status == "failed").count();
    if failed > 0 { 1 } else { 0 }
}

/// RSS of `server` with `n` connections open and idle (each has made one
/// round trip, so the server has surely accepted and served it), minus
/// its RSS after one connection has come and gone.
fn idle_memory(server: Server, cores: Cores, n: usize, idle_window: Duration) -> IdleResult {
    let mut idle = IdleResult::new(server.name(), n);
    if let Some(why) = server.cannot_hold(n) {
        idle.skip(why.to_string());
        return idle;
    }
    let running = match start(&server.target(cores)) {
        Ok(r) => r,
        Err(why) => {
            idle.fail(why);
            return idle;
        }
    };
    let one_trip = |connections| LoadConfig {
        connections,
        requests_per_connection: Some(1),
        warmup: Duration::ZERO,
        duration: Duration::from_secs(60),
        check: server.check(),
        ..LoadConfig::new(running.addr)
    };
    let first = load::run(one_trip(1));
    let empty = sys::rss_kib(running.pid);
    let mut held = Load::new(one_trip(n)).map_err(|e| e.to_string());
    let outcome: Result<LoadReport, String> = held.as_mut().map_err(|e| e.clone()).and_then(|l| {
        l.connect()?;
        Ok(l.run())
    });
    let full = sys::rss_kib(running.pid);
    idle.threads = sys::threads(running.pid).ok();
    if held.is_ok() {
        // A measuring window, not a wait for an event: CPU burnt doing nothing.
        let before = (Instant::now(), sys::cpu_seconds(running.pid));
        std::thread::sleep(idle_window);
        if let (Ok(a), Ok(b)) = (before.1, sys::cpu_seconds(running.pid)) {
            idle.idle_cpu_percent = Some((b - a) * 100.0 / before.0.elapsed().as_secs_f64());
        }
    }
    let open = held.as_ref().map(|l| l.open_connections()).unwrap_or(0);
    drop(held);
    let stderr = running.stderr();
    running.stop();
    match (first.errors, outcome, empty, full) {
        (0, Ok(r), Ok(empty), Ok(full)) if r.errors == 0 && open == n => {
            idle.held = n;
            idle.rss_empty_kib = Some(empty);
            idle.rss_held_kib = Some(full);
            idle.per_connection_bytes = Some((full as f64 - empty as f64) * 1024.0 / n as f64);
        }
        (_, Ok(r), ..) => idle.fail(format!(
            "{open} of {n} connections held; {} errors, first: {}; server stderr: {stderr}",
            r.errors,
            r.first_error.or(first.first_error).as_deref().unwrap_or("?")
        )),
        (_, Err(why), ..) => idle.fail(format!("{why}; server stderr: {stderr}")),
    }
    idle
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_header_names_cpus_without_options() {
        assert_eq!(Cores { server: Some(0), load: Some(1), all: 3 }.describe(), "server on CPU 0, load on CPU 1");
        assert_eq!(Cores { server: None, load: None, all: 1 }.describe(), "no pinning (fewer than 2 CPUs allowed)");
        assert_eq!(Cores { server: None, load: None, all: 0b1010 }.all_cpus(), [1, 3]);
    }

    #[test]
    fn multicore_points_run_epoll_loops_and_tokio_workers_unpinned() {
        let [epoll, tokio] = Target::multicore(2, Cores { server: Some(0), load: Some(1), all: 3 });
        assert_eq!((epoll.name.as_str(), epoll.kvio, epoll.loops), ("epoll-t2", true, Some(2)));
        assert_eq!(epoll.args[..5], ["serve", "--flavor", "epoll", "--threads", "2"]);
        assert_eq!((tokio.name.as_str(), tokio.kvio), ("tokio-multi-w2", false));
        assert_eq!(tokio.args[..5], ["tokio-server", "--runtime", "multi", "--workers", "2"]);
        assert!(epoll.cores.server.is_none() && tokio.cores.load.is_none(), "unpinned");
    }

    #[test]
    fn flavors_run_from_kvio_and_baselines_from_kvio_bench() {
        assert_eq!(&Server::Epoll.args()[..3], ["serve", "--flavor", "epoll"]);
        assert_eq!(Server::Floor.args()[0], "floor-server");
        let me = std::env::current_exe().unwrap();
        assert_eq!(program(Server::TokioMulti.is_flavor()).unwrap(), me);
        match program(Server::Blocking.is_flavor()) {
            Ok(kvio) => assert_eq!(kvio, me.with_file_name("kvio")),
            Err(why) => assert!(why.contains("cargo build --release -p kvio"), "{why}"),
        }
    }
}
