//! kvio's benchmark lab, the `kvio-bench` binary (which `kvio bench` runs):
//! the load generator ([`load`]), the comparison of the four flavors against
//! two baselines ([`compare`]), the baselines themselves ([`floor`],
//! [`tokio_server`], bench-only code), and the results as a table, JSON, CSV
//! and SVG plots ([`report`]); and kvio against Redis and memcached
//! ([`peers`]), spoken to over their own protocols ([`resp`], [`memcache`],
//! decoded into a [`reply::Reply`]). The servers under test are the `kvio` binary
//! found beside `kvio-bench` (`kvio serve`), started as child processes; the
//! baselines are `kvio-bench` itself. The dependency points this way only:
//! the server never links tokio, plotters or the rest of the lab.
#![deny(missing_docs)]

pub mod compare;
pub mod floor;
pub mod load;
pub mod memcache;
pub(crate) mod peer_server;
pub mod peers;
pub mod progress;
pub mod reply;
pub mod report;
pub mod resp;
pub mod sys;
pub mod tokio_server;
pub mod wire;

use std::net::SocketAddrV4;
use std::time::Duration;

pub use load::{LoadConfig, LoadReport};
pub use wire::Check;

/// kvio's benchmark lab: a load run against --addr, or `compare`.
///
/// Also run as `kvio bench`. Exit codes: 0 every answer checked out, 1 some
/// answer was wrong or missing, 2 the run could not be made (nothing to
/// connect to, bad options).
#[derive(Debug, clap::Parser)]
#[command(name = "kvio-bench", version, args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    /// `compare`, or the hidden baseline servers it starts.
    #[command(subcommand)]
    pub command: Option<BenchSubcommand>,
    /// The load run (when no subcommand is given).
    #[command(flatten)]
    pub load: LoadArgs,
}

/// What `kvio bench` can do besides a single load run.
#[derive(Debug, clap::Subcommand)]
pub enum BenchSubcommand {
    /// Start every flavor and baseline on a free loopback port, run the
    /// connection matrix and the idle-memory test, write JSON, CSV and SVG.
    Compare(compare::CompareArgs),
    /// kvio (epoll, uring) against Redis and memcached, each over its own
    /// protocol, with the same workload; then bytes per entry after
    /// loading 1,000,000 small keys into each.
    Peers(peers::PeersArgs),
    /// The floor baseline server (fixed answers, no decoding): bench-only.
    #[command(hide = true)]
    FloorServer(BaselineArgs),
    /// The tokio baseline server: bench-only.
    #[command(hide = true)]
    TokioServer(TokioArgs),
}

/// Options of a single load run.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Server address (IPv4 loopback).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: SocketAddrV4,
    /// Connections held open, each a closed loop.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub pipeline: usize,
    /// Fraction of requests that are puts; the rest are gets.
    #[arg(long, default_value_t = 0.1)]
    pub put_ratio: f64,
    /// Keys in all, shared out between connections (each uses its own).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Warm-up before measuring (ms).
    #[arg(long, default_value_t = 500)]
    pub warmup_ms: u64,
    /// Measured time (ms).
    #[arg(long, default_value_t = 3000)]
    pub duration_ms: u64,
    /// A short run: 0.2 s warm-up, 1 s measured (as `compare --short`).
    #[arg(long, conflicts_with_all = ["warmup_ms", "duration_ms"])]
    pub short: bool,
    /// How answers are checked (`framing` for the floor server).
    #[arg(long, value_enum, default_value_t = Check::Full)]
    pub check: Check,
    /// The server's PID: adds its CPU per request and RSS to the report.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Poll for answers without sleeping: the load generator keeps its core
    /// busy, so CPU wake-up time is not added to every round trip.
    #[arg(long)]
    pub spin: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of the baseline servers.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Listen address (`127.0.0.1:0` picks a free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddrV4,
    /// Longest frame accepted.
    #[arg(long, default_value_t = kvio_core::DEFAULT_MAX_FRAME_LEN)]
    pub max_frame_len: u32,
}

/// Options of the tokio baseline.
#[derive(Debug, clap::Args)]
pub struct TokioArgs {
    /// Listen address and frame limit.
    #[command(flatten)]
    pub base: BaselineArgs,
    /// Which runtime.
    #[arg(long, value_enum, default_value_t = tokio_server::Runtime::Current)]
    pub runtime: tokio_server::Runtime,
    /// Worker threads of the multi-thread runtime (default: one per allowed CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Store entries.
    #[arg(long, default_value_t = 100_000)]
    pub store_entries: usize,
    /// Store byte budget.
    #[arg(long, default_value_t = 64 << 20)]
    pub store_bytes: usize,
}

/// Runs `kvio bench`; returns the process exit code (0 ok, 1 the run had
/// errors, 2 it could not run).
pub fn run(cmd: BenchCommand) -> i32 {
    match cmd.command {
        Some(BenchSubcommand::Compare(args)) => compare::run(args),
        Some(BenchSubcommand::Peers(args)) => peers::run(args),
        Some(BenchSubcommand::FloorServer(a)) => exit_code(floor::serve(a.addr, a.max_frame_len)),
        Some(BenchSubcommand::TokioServer(a)) => {
            let cfg = tokio_server::TokioConfig {
                runtime: a.runtime,
                workers: a.workers,
                max_frame_len: a.base.max_frame_len,
                store_entries: a.store_entries,
                store_bytes: a.store_bytes,
            };
            exit_code(tokio_server::serve(a.base.addr, cfg))
        }
        None => run_load(cmd.load),
    }
}

fn exit_code(r: std::io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kvio bench: {e}");
            EXIT_CANNOT_RUN
        }
    }
}

/// Runs `run` (a load run of `warmup_ms` + `duration_ms`) while a thread
/// shows its progress in milliseconds, ETA included.
fn with_progress<T>(warmup_ms: u64, duration_ms: u64, run: impl FnOnce() -> T) -> T {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let ticker = std::thread::spawn(move || {
        let mut progress = progress::Progress::timed("kvio bench", Duration::from_millis(warmup_ms + duration_ms));
        let start = std::time::Instant::now();
        progress.set(0, "warm-up");
        // Until the run ends (the sender drops); the tick only paces the bar.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_millis(250)) {
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            progress.set(ms, if ms < warmup_ms { "warm-up" } else { "measuring" });
        }
        progress.finish();
    });
    let result = run();
    drop(stop);
    let _ = ticker.join();
    result
}

/// Exit code of a run whose answers were wrong or missing.
pub const EXIT_WRONG_ANSWERS: i32 = 1;
/// Exit code of a run that could not be made.
pub const EXIT_CANNOT_RUN: i32 = 2;

fn run_load(a: LoadArgs) -> i32 {
    if a.connections == 0 || a.pipeline == 0 {
        eprintln!("kvio bench: --connections and --pipeline must be at least 1");
        return EXIT_CANNOT_RUN;
    }
    let (warmup_ms, duration_ms) = if a.short { (200, 1000) } else { (a.warmup_ms, a.duration_ms) };
    let cfg = LoadConfig {
        connections: a.connections,
        pipeline: a.pipeline,
        put_ratio: a.put_ratio,
        keys: a.keys,
        value_size: a.value_size,
        warmup: Duration::from_millis(warmup_ms),
        duration: Duration::from_millis(duration_ms),
        check: a.check,
        server_pid: a.server_pid,
        spin: a.spin,
        ..LoadConfig::new(a.addr)
    };
    let addr = cfg.addr;
    sys::raise_nofile_limit();
    let r = match load::Load::new(cfg) {
        Ok(mut load) => match load.connect() {
            Ok(()) => with_progress(warmup_ms, duration_ms, || load.run()),
            Err(why) => {
                eprintln!("kvio bench: could not connect to {addr}: {why}");
                return EXIT_CANNOT_RUN;
            }
        },
        Err(e) => {
            eprintln!("kvio bench: epoll: {e}");
            return EXIT_CANNOT_RUN;
        }
    };
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        println!("{}", report::summary_line(&r));
    }
    if let Some(e) = &r.first_error {
        eprintln!("kvio bench: {} errors; first: {e}", r.errors);
    }
    if r.errors > 0 { EXIT_WRONG_ANSWERS } else { 0 }
}
