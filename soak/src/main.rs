//! `kvio-soak`: the soak and chaos run of one flavor (issue 10).
//!
//! It starts `kvio serve --flavor F` with caps that the hostile clients
//! would exceed, runs honest model-checked clients ([`honest`]) beside
//! hostile ones ([`hostile`]) for the given time, probes with a fresh
//! client every second, samples the server's RSS every second (written as
//! CSV), then sends SIGTERM with the abuse still going and times the exit.
//!
//! Checks, each printed with its numbers and its bound:
//!
//! - zero wrong answers (honest clients, probes, and hostile clients where
//!   the protocol fixes the answer), and no honest request left without an
//!   answer while the server runs;
//! - every probe (connect, put, get) answered within the probe bound: 1 s,
//!   or for `blocking`, which serves one connection at a time, the time the
//!   connections ahead of it may each hold the server (see [`Plan::probe_bound`]);
//! - the server's RSS, sampled and peak (VmHWM), under the memory bound
//!   (see [`Plan::rss_bound_kib`]);
//! - SIGTERM to exit within grace + linger + 0.5 s = 4.5 s, exit status 0,
//!   and the `kvio serve: stopped` line printed.
//!
//! Every loop is bounded in time and count, every socket has timeouts, and
//! only 127.0.0.1 is used.

mod honest;
mod hostile;
mod server;
mod tally;
mod wire;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use kvio_core::StoreLimits;

use crate::honest::SharedKeys;
use crate::server::Server;
use crate::tally::Tally;
use crate::wire::Rng;

/// A key put once before the run and never changed: hostile clients that
/// send gets know its answer.
pub const FIXED_KEY: &str = "soak/fixed";
pub const FIXED_VALUE: &str = "the value every hostile get must see";
/// The value the non-readers and the resetting clients ask for.
pub const BIG_KEY: &str = "soak/big";
const BIG_LEN: usize = 256 * 1024;

/// The server's stop times (docs/protocol.md: a 2 s grace, a 2 s linger) and the slack the issue allows.
const GRACE: Duration = Duration::from_secs(2);
const LINGER: Duration = Duration::from_secs(2);
const STOP_SLACK: Duration = Duration::from_millis(500);
/// How long the soak waits for an exit before it kills the server (and fails).
const STOP_WAIT: Duration = Duration::from_secs(15);
/// The answer bound of a fresh client on the flavors that serve connections concurrently.
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// How long an honest or hostile client waits for an answer on those flavors.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The caps the server runs with.
const MAX_FRAME_LEN: u32 = 1 << 20;
const STORE_ENTRIES: usize = 10_000;
const STORE_BYTES: usize = 16 << 20;
const OUTPUT_LIMIT: usize = 64 * 1024;
const MAX_CONNECTIONS: usize = 1_000;
const MAX_CLIENT_MEMORY: u64 = 64 << 20;
/// `blocking` must drop a silent client fast; its frame deadline is 10 of these.
const BLOCKING_IDLE_MS: u64 = 100;
const IDLE_MS: u64 = 3_000;
/// The blocking flavor's frame deadline, in idle timeouts (docs/protocol.md).
const FRAME_DEADLINE_IDLE_TIMEOUTS: u32 = 10;

/// Memory the server may use beyond its client buffers and its store:
/// the binary, libc, the allocator's slack and the spare output buffers
/// (measured at start-up: about 2–3 MiB), with room to spare.
const FIXED_OVERHEAD_KIB: u64 = 32 * 1024;
/// What one open connection may cost beyond its counted buffers: a
/// threaded connection's 64 KiB stack and 16 KiB read buffer, a session,
/// the allocator's rounding.
const PER_CONNECTION_OVERHEAD_KIB: u64 = 128;

/// Soak one kvio flavor: honest model-checked clients beside hostile ones,
/// then SIGTERM; exit 0 if every check passed.
#[derive(Debug, Parser)]
#[command(name = "kvio-soak")]
struct Args {
    /// The flavor to run (`kvio serve --flavor`).
    #[arg(long)]
    flavor: String,
    /// Seconds of abuse before the SIGTERM.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The kvio binary [default: `kvio` next to this program].
    #[arg(long)]
    kvio: Option<PathBuf>,
    /// Where the RSS series goes (`rss-<flavor>.csv`).
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 10)]
    seed: u64,
    /// `kvio serve --threads`: loops of a single-thread flavor (1: the flag is not passed).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// How many clients of each kind, per flavor.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub honest: usize,
    /// Batches per honest connection before it reconnects (low, high).
    pub session_batches: (usize, usize),
    pub slowloris: usize,
    pub idle: usize,
    pub non_readers: usize,
    pub partial: usize,
    /// Whether an honest connection closed by the server is a failure:
    /// on the concurrent flavors only the memory cap may close one (and
    /// says so with its error frame); on `blocking` the idle timeout may.
    pub report_disconnects: bool,
}

impl Profile {
    fn for_flavor(flavor: &str) -> Profile {
        if flavor == "blocking" {
            // One connection at a time: every connection open is one the
            // probe may wait behind, so few of each.
            Profile {
                honest: 2,
                session_batches: (1, 5),
                slowloris: 1,
                idle: 2,
                non_readers: 1,
                partial: 1,
                report_disconnects: false,
            }
        } else {
            // 80 partial frames of ~1 MiB are 80 MiB, over the 64 MiB cap.
            Profile {
                honest: 3,
                session_batches: (20, 200),
                slowloris: 4,
                idle: 200,
                // Issue 10's second repro: 10 clients with 1,000 gets each, never reading.
                non_readers: 10,
                partial: 80,
                report_disconnects: true,
            }
        }
    }

    /// How many connections a hostile kind holds at once.
    pub fn connections(&self, kind: hostile::Kind) -> usize {
        match kind {
            hostile::Kind::Slowloris => self.slowloris,
            hostile::Kind::IdleFlood => self.idle,
            hostile::Kind::NonReader => self.non_readers,
            hostile::Kind::PartialFrame => self.partial,
            _ => 1,
        }
    }

    /// The most connections the soak holds open at once (the probe's included).
    fn max_open(&self) -> usize {
        self.honest + 1 + hostile::Kind::ALL.iter().map(|&k| self.connections(k)).sum::<usize>()
    }
}

/// What every soak thread shares.
#[derive(Debug)]
pub struct Ctx {
    pub addr: SocketAddr,
    pub max_frame_len: u32,
    pub key_limit: usize,
    pub value_limit: usize,
    pub io_timeout: Duration,
    pub probe_bound: Duration,
    pub serves_concurrently: bool,
    pub profile: Profile,
    pub tally: Tally,
    pub shared: Arc<SharedKeys>,
    stop_sent: AtomicBool,
}

impl Ctx {
    /// Whether SIGTERM was sent: from then on closes and timeouts are expected.
    pub fn stop_sent(&self) -> bool {
        self.stop_sent.load(Relaxed)
    }
}

/// The run's bounds, from the server's settings.
#[derive(Debug)]
struct Plan {
    /// The server runs with `--max-client-memory`.
    capped: bool,
    probe_bound: Duration,
    rss_bound_kib: u64,
    rss_bound_why: String,
}

impl Plan {
    fn new(flavor: &str, server: &Server, profile: &Profile, baseline_kib: u64) -> Plan {
        let kib = |bytes: u64| bytes.div_ceil(1024);
        let max_frame = server.number("max_frame_len").unwrap_or(u64::from(MAX_FRAME_LEN));
        let output = server.number("output_limit").unwrap_or(OUTPUT_LIMIT as u64);
        let store = server.number("store_bytes").unwrap_or(STORE_BYTES as u64);
        let entries = server.number("store_entries").unwrap_or(STORE_ENTRIES as u64);
        let open = profile.max_open() as u64;
        // The slot table: at most 2 slots an entry, 32 bytes a slot.
        let store_kib = kib(store) + kib(entries * 2 * 32);
        let conn_kib = open * PER_CONNECTION_OVERHEAD_KIB;
        let (clients_kib, clients_why) = match server.number("max_client_memory") {
            Some(cap) => (kib(cap), format!("max_client_memory {} KiB", kib(cap))),
            None => {
                // No total cap: each connection may hold a partial frame,
                // its unsent output, and one response past the limit.
                let each = kib(max_frame + output + max_frame);
                (
                    open * each,
                    format!(
                        "no max_client_memory: {open} connections x {each} KiB (frame + output limit + one response)"
                    ),
                )
            }
        };
        let rss_bound_kib = baseline_kib + FIXED_OVERHEAD_KIB + store_kib + conn_kib + clients_kib;
        let rss_bound_why = format!(
            "{rss_bound_kib} KiB = start-up RSS {baseline_kib} + fixed overhead {FIXED_OVERHEAD_KIB} + store {store_kib} \
             + {open} connections x {PER_CONNECTION_OVERHEAD_KIB} + client buffers {clients_kib} ({clients_why})"
        );
        let probe_bound = if flavor == "blocking" {
            // Each connection ahead of the probe holds the one thread at
            // most for its frame deadline and then a lingering close.
            let idle = Duration::from_millis(server.number("idle_timeout_ms").unwrap_or(BLOCKING_IDLE_MS));
            let hold = idle * FRAME_DEADLINE_IDLE_TIMEOUTS + LINGER;
            hold * (open as u32 - 1) + PROBE_BOUND
        } else {
            PROBE_BOUND
        };
        let capped = server.number("max_client_memory").is_some();
        Plan { capped, probe_bound, rss_bound_kib, rss_bound_why }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match soak(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("soak {}: FAILED: {e}", args.flavor);
            ExitCode::FAILURE
        }
    }
}

/// One flavor's run; `Ok(false)` if a check failed.
fn soak(args: &Args) -> Result<bool, String> {
    let kvio = match &args.kvio {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("kvio"),
    };
    let flavor = args.flavor.as_str();
    let profile = Profile::for_flavor(flavor);
    let blocking = flavor == "blocking";
    let idle_ms = if blocking { BLOCKING_IDLE_MS } else { IDLE_MS };
    let mut server_args: Vec<String> = [
        ("--max-frame-len", u64::from(MAX_FRAME_LEN)),
        ("--store-entries", STORE_ENTRIES as u64),
        ("--store-bytes", STORE_BYTES as u64),
        ("--output-limit", OUTPUT_LIMIT as u64),
        ("--max-connections", MAX_CONNECTIONS as u64),
        ("--idle-timeout-ms", idle_ms),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    if args.threads != 1 {
        server_args.extend(["--threads".to_owned(), args.threads.to_string()]);
    }
    let capped = Server::supports(&kvio, "--max-client-memory");
    if capped {
        server_args.extend(["--max-client-memory".to_owned(), MAX_CLIENT_MEMORY.to_string()]);
    }
    let mut server = Server::start(&kvio, flavor, &server_args)?;
    println!("soak {flavor}: {} (pid {})", server.startup_line, server.pid);
    if !capped {
        println!("soak {flavor}: this kvio has no --max-client-memory; the RSS bound is per connection");
    }
    let baseline = server.memory().ok_or("cannot read the server's /proc/PID/status")?;
    let plan = Plan::new(flavor, &server, &profile, baseline.rss_kib);
    let max_frame_len = server.number("max_frame_len").unwrap_or(u64::from(MAX_FRAME_LEN)) as u32;
    let limits = StoreLimits::for_frame(max_frame_len, STORE_ENTRIES, STORE_BYTES);
    let io_timeout = if blocking { plan.probe_bound } else { IO_TIMEOUT };
    let ctx = Arc::new(Ctx {
        addr: server.addr,
        max_frame_len,
        key_limit: limits.max_key_len,
        value_limit: limits.max_value_len,
        io_timeout,
        probe_bound: plan.probe_bound,
        serves_concurrently: !blocking,
        profile,
        tally: Tally::default(),
        shared: honest::shared_keys(),
        stop_sent: AtomicBool::new(false),
    });
    honest::setup_put(&ctx, FIXED_KEY, FIXED_VALUE)?;
    honest::setup_put(&ctx, BIG_KEY, &"b".repeat(BIG_LEN))?;
    warm_store(&ctx, server.number("store_bytes").unwrap_or(STORE_BYTES as u64))?;
    let warmed = server.memory().map_or(0, |m| m.rss_kib);
    println!("soak {flavor}: RSS {} KiB at start-up, {warmed} KiB once the store's arena is warm", baseline.rss_kib);

    let mut seeds = Rng::new(args.seed);
    let mut threads = Vec::new();
    for id in 0..profile.honest {
        let (ctx, rng) = (Arc::clone(&ctx), Rng::new(seeds.next()));
        threads.push(("honest", thread::spawn(move || honest::run(&ctx, id, rng))));
    }
    for kind in hostile::Kind::ALL {
        let (ctx, rng) = (Arc::clone(&ctx), Rng::new(seeds.next()));
        threads.push((kind.name(), thread::spawn(move || hostile::run(&ctx, kind, rng))));
    }
    {
        let (ctx, rng) = (Arc::clone(&ctx), Rng::new(seeds.next()));
        threads.push(("probe", thread::spawn(move || honest::probe(&ctx, rng))));
    }

    // The run: one RSS sample a second.
    let start = Instant::now();
    let duration = Duration::from_secs(args.seconds);
    let mut samples: Vec<(f64, u64)> = vec![(0.0, baseline.rss_kib)];
    let mut died = None;
    let mut next = start;
    while start.elapsed() < duration {
        next += Duration::from_secs(1);
        thread::sleep(next.saturating_duration_since(Instant::now()).min(duration.saturating_sub(start.elapsed())));
        if !server.running() {
            died = Some(start.elapsed());
            break;
        }
        if let Some(m) = server.memory() {
            samples.push((start.elapsed().as_secs_f64(), m.rss_kib));
        }
    }
    let hwm = server.memory().map_or(0, |m| m.hwm_kib);

    // The stop, with every client still at it.
    ctx.stop_sent.store(true, Relaxed);
    let stopped = if died.is_none() { Some(server.terminate(STOP_WAIT)) } else { None };
    ctx.tally.stop();
    let join_until = Instant::now() + Duration::from_secs(10);
    let mut stuck = Vec::new();
    for (name, handle) in threads {
        while !handle.is_finished() && Instant::now() < join_until {
            thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            if handle.join().is_err() {
                ctx.tally.fail(format!("the {name} thread panicked"));
            }
        } else {
            stuck.push(name);
        }
    }

    // The report and the RSS series are named after the run: `uring-threads2`.
    let run = if args.threads == 1 { flavor.to_owned() } else { format!("{flavor}-threads{}", args.threads) };
    let csv = write_csv(&args.out, &run, &samples)?;
    let passed = report(&run, &ctx, &plan, &samples, hwm, died, stopped.as_ref(), &stuck, &server, &csv);
    Ok(passed)
}

/// The store appends every update of another size and compacts only when
/// its arena's end is reached, so its RSS climbs to the whole arena over
/// the first pass. Updates of one key that sum past the arena make that
/// pass now, before the run: the slope then shows the clients' memory, not
/// the store's first pass (which is bounded by `store_bytes` anyway).
fn warm_store(ctx: &Ctx, store_bytes: u64) -> Result<(), String> {
    let step = (ctx.value_limit / 2).max(1);
    let puts = store_bytes / step as u64 + 2;
    let value = "w".repeat(step + puts as usize);
    for i in 0..puts as usize {
        // Each a different size, so none is written in place.
        honest::setup_put(ctx, "soak/warm", &value[..step + i])?;
    }
    Ok(())
}

fn write_csv(dir: &std::path::Path, flavor: &str, samples: &[(f64, u64)]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(format!("rss-{flavor}.csv"));
    let mut text = String::from("seconds,rss_kib\n");
    for (t, kib) in samples {
        let _ = writeln!(text, "{t:.1},{kib}");
    }
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

/// The least-squares slope of RSS over the second half of the run, in KiB per minute.
fn slope_kib_per_min(samples: &[(f64, u64)]) -> Option<f64> {
    let half = &samples[samples.len() / 2..];
    slope(half.iter().map(|&(t, kib)| (t / 60.0, kib as f64)))
}

/// The least-squares slope of `y` over `x`; `None` under 3 points.
fn slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let n = points.clone().count() as f64;
    if n < 3.0 {
        return None;
    }
    let mx = points.clone().map(|p| p.0).sum::<f64>() / n;
    let my = points.clone().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.clone().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The largest RSS sample of each whole minute of the run.
fn per_minute_max(samples: &[(f64, u64)]) -> Vec<u64> {
    let minutes = (samples.last().map_or(0.0, |s| s.0) / 60.0).floor() as usize;
    (0..minutes)
        .map(|m| {
            let within = samples.iter().filter(|s| s.0 >= m as f64 * 60.0 && s.0 < (m + 1) as f64 * 60.0);
            within.map(|s| s.1).max().unwrap_or(0)
        })
        .collect()
}

/// Prints every figure and check; true if all passed.
#[allow(clippy::too_many_arguments)]
fn report(
    flavor: &str,
    ctx: &Ctx,
    plan: &Plan,
    samples: &[(f64, u64)],
    hwm: u64,
    died: Option<Duration>,
    stopped: Option<&server::Stopped>,
    stuck: &[&str],
    server: &Server,
    csv: &std::path::Path,
) -> bool {
    let t = &ctx.tally;
    let mut failed = Vec::new();
    let mut out = String::new();
    let p = |out: &mut String, line: String| {
        let _ = writeln!(out, "soak {flavor}: {line}");
    };
    let wrong = Tally::get(&t.wrong_answers);
    p(
        &mut out,
        format!(
            "answers checked {}, wrong {wrong}; honest connections ended by the server {} ({} requests unanswered), \
             stalls {}; memory-cap evictions seen {}; hostile connections {}, bytes {}",
            Tally::get(&t.answers_checked),
            Tally::get(&t.honest_disconnects),
            Tally::get(&t.honest_cut),
            Tally::get(&t.honest_stalls),
            Tally::get(&t.memory_evictions),
            Tally::get(&t.hostile_connections),
            Tally::get(&t.hostile_bytes),
        ),
    );
    let episodes: Vec<String> = hostile::Kind::ALL
        .iter()
        .map(|&k| format!("{} {}", k.name(), Tally::get(&t.hostile_episodes[k as usize])))
        .collect();
    p(&mut out, format!("hostile episodes: {}", episodes.join(", ")));
    if wrong > 0 {
        failed.push(format!("{wrong} wrong answers"));
    }
    if Tally::get(&t.honest_stalls) > 0 {
        failed.push(format!("{} honest requests unanswered within {:?}", Tally::get(&t.honest_stalls), ctx.io_timeout));
    }
    let worst = Duration::from_micros(Tally::get(&t.probe_worst_us));
    p(
        &mut out,
        format!(
            "fresh-client probes {}, failed or late {}, worst {:.1} ms (bound {} ms)",
            Tally::get(&t.probes),
            Tally::get(&t.probe_failures),
            worst.as_secs_f64() * 1e3,
            plan.probe_bound.as_millis()
        ),
    );
    if Tally::get(&t.probe_failures) > 0 {
        failed.push(format!("{} probes failed or were late", Tally::get(&t.probe_failures)));
    }
    if Tally::get(&t.probes) == 0 && died.is_none() {
        failed.push("no probe completed".into());
    }
    let max_rss = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let half_slope = match slope_kib_per_min(samples) {
        Some(s) if samples.len() > 60 => format!("{s:+.0} KiB/min"),
        Some(s) => format!("{s:+.0} KiB/min (noise in a run under a minute)"),
        None => "n/a".into(),
    };
    p(
        &mut out,
        format!(
            "RSS max {max_rss} KiB, peak (VmHWM) {hwm} KiB, bound {}; slope over the second half {half_slope}; series in {}",
            plan.rss_bound_why,
            csv.display()
        ),
    );
    let deciles: Vec<String> = (0..=10)
        .filter_map(|d| samples.get((samples.len() - 1) * d / 10))
        .map(|(s, kib)| format!("{s:.0}s:{kib}"))
        .collect();
    p(&mut out, format!("RSS over time (KiB): {}", deciles.join(" ")));
    let minutes = per_minute_max(samples);
    if minutes.len() >= 2 {
        let table: Vec<String> = minutes.iter().enumerate().map(|(m, kib)| format!("{}:{kib}", m + 1)).collect();
        // The first minute is the warm-up: the partial frames fill the cap then.
        let trend = slope(minutes.iter().enumerate().skip(1).map(|(m, &kib)| (m as f64, kib as f64)))
            .map_or("n/a (under 4 minutes)".into(), |s| format!("{s:+.0} KiB/min"));
        p(
            &mut out,
            format!("RSS max per minute (KiB): {}; slope of these after the first minute {trend}", table.join(" ")),
        );
    }
    if max_rss.max(hwm) > plan.rss_bound_kib {
        failed.push(format!("RSS {} KiB over the bound {} KiB", max_rss.max(hwm), plan.rss_bound_kib));
    }
    // 80 partial frames of ~1 MiB held at once are over a 64 MiB cap: the
    // server must have closed some, with the error frame.
    if plan.capped && ctx.serves_concurrently && samples.len() > 5 && Tally::get(&t.memory_evictions) == 0 {
        failed.push(format!(
            "{} partial 1 MiB frames held at once, yet no `client memory limit reached` error frame seen",
            ctx.profile.partial
        ));
    }
    let stop_bound = GRACE + LINGER + STOP_SLACK;
    match (died, stopped) {
        (Some(at), _) => failed.push(format!("the server exited on its own {:.1} s into the run", at.as_secs_f64())),
        (None, Some(s)) => {
            let line = s.stdout.iter().find(|l| l.starts_with("kvio serve: stopped "));
            let took = s.elapsed.map_or(format!("not within {} s (killed)", STOP_WAIT.as_secs()), |e| {
                format!("{:.3} s", e.as_secs_f64())
            });
            p(
                &mut out,
                format!(
                    "SIGTERM to exit {took} (bound {:.1} s), status {}, {}",
                    stop_bound.as_secs_f64(),
                    s.status.map_or("none".into(), |st| st.to_string()),
                    line.map_or("no stopped line".into(), |l| format!("{l:?}"))
                ),
            );
            if s.elapsed.is_none_or(|e| e > stop_bound) {
                failed.push(format!("stop took {took}, over {:.1} s", stop_bound.as_secs_f64()));
            }
            if !s.status.is_some_and(|st| st.success()) {
                failed.push(format!("exit status {:?}, not 0", s.status));
            }
            if line.is_none() {
                failed.push("no `kvio serve: stopped` line".into());
            }
        }
        (None, None) => {}
    }
    if !stuck.is_empty() {
        failed.push(format!("soak threads still running 10 s after the stop: {stuck:?}"));
    }
    let (n, failures) = t.failures();
    for f in &failures {
        p(&mut out, format!("  check failed: {f}"));
    }
    if n > failures.len() as u64 {
        p(&mut out, format!("  ... and {} more", n - failures.len() as u64));
    }
    if n > 0 && failed.is_empty() {
        failed.push(format!("{n} checks failed (above)"));
    }
    let (lines, head) = server.stderr_head();
    p(&mut out, format!("server log lines {lines}; first: {:?}", head.first()));
    if failed.is_empty() {
        p(&mut out, "PASS".into());
    } else {
        p(&mut out, format!("FAIL: {}", failed.join("; ")));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
    failed.is_empty()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line = (0..10).map(|x| (f64::from(x), 3.0 * f64::from(x) + 1.0));
        assert!((slope(line).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope((0..10).map(|x| (f64::from(x), 5.0))), Some(0.0));
        assert_eq!(slope([(0.0, 1.0), (1.0, 2.0)].into_iter()), None);
    }

    #[test]
    fn per_minute_max_takes_whole_minutes_only() {
        let samples: Vec<(f64, u64)> = (0..=150u32).map(|t| (f64::from(t), u64::from(t) % 60)).collect();
        assert_eq!(per_minute_max(&samples), vec![59, 59]);
        // The slope over the second half of a series that climbs 1 KiB a second is 60 KiB/min.
        let climbing: Vec<(f64, u64)> = (0..=100u32).map(|t| (f64::from(t), u64::from(t))).collect();
        assert!((slope_kib_per_min(&climbing).unwrap() - 60.0).abs() < 1e-6);
    }
}
