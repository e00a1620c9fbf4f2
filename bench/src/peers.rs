//! `kvio bench peers`: kvio (epoll, uring) against the servers people
//! would pick instead, Redis and memcached, each driven over its own
//! protocol (RESP, the memcached text protocol) with the same workload:
//! the same keys, values, get/put mix, connections and pipeline depth.
//! Every server runs one worker thread, a fresh process per point, pinned
//! like `compare`'s (server on the first allowed CPU, load on the second).
//! Then each is loaded with `--fill-keys` keys (1,000,000 by default) of
//! 16-byte values, and its RSS before and after gives bytes per entry.
//!
//! Redis and memcached are started when `redis-server` / `memcached` are
//! on PATH (Debian: `apt-get install redis-server memcached`), stopped by
//! PID; when one is missing, its rows say so and the rest still runs.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kvio_core::store::slots_for;

use crate::compare::Cores;
use crate::load::{self, LoadConfig, LoadReport};
pub use crate::peer_server::Peer;
use crate::peer_server::SERVER_WAIT;
use crate::{report, sys};

/// Bound on loading the fill keys (a few seconds per million on 2 cores).
const FILL_WAIT: Duration = Duration::from_secs(120);
/// Connections and pipeline depth of the fill.
const FILL_CONNECTIONS: usize = 16;
const FILL_PIPELINE: usize = 32;
/// Longest key the bench writes (`c<conn>k<n>`), for sizing kvio's store.
const MAX_KEY: usize = 16;
/// kvio's per-record header (slot, key length, value length).
const RECORD_HEADER: usize = kvio_core::store::RECORD_HEADER_LEN;

/// A point: connections × pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Point {
    /// Connections held.
    pub connections: usize,
    /// Requests outstanding per connection.
    pub pipeline: usize,
}

impl std::str::FromStr for Point {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (c, p) = s.split_once('x').ok_or_else(|| format!("{s:?}: expected CONNECTIONSxPIPELINE, like 16x1"))?;
        let n =
            |v: &str| v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| format!("{s:?}: {v:?} is not a count"));
        Ok(Point { connections: n(c)?, pipeline: n(p)? })
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.connections, self.pipeline)
    }
}

/// `kvio bench peers` options.
#[derive(Debug, clap::Args)]
pub struct PeersArgs {
    /// Short runs: one round of 0.2 s warm-up + 1 s per point (the full
    /// mode: three rounds of 0.5 s + 2 s, medians).
    #[arg(long)]
    pub short: bool,
    /// Where peers.json and peers.md go.
    #[arg(long, default_value = "kvio-bench-peers")]
    pub out: PathBuf,
    /// Servers to run (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub servers: Vec<Peer>,
    /// Points, CONNECTIONSxPIPELINE.
    #[arg(long, value_delimiter = ',', default_value = "16x1,1000x1,16x16")]
    pub points: Vec<Point>,
    /// Value sizes (bytes).
    #[arg(long, value_delimiter = ',', default_value = "1024,16384")]
    pub value_sizes: Vec<usize>,
    /// Fraction of requests that are puts.
    #[arg(long, default_value_t = 0.5)]
    pub put_ratio: f64,
    /// Keys in all, shared out between connections.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Override the warm-up (ms).
    #[arg(long)]
    pub warmup_ms: Option<u64>,
    /// Override the measured time (ms).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Rounds (default 1 short, 3 full); figures are medians.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Keys loaded for the memory figures (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    pub fill_keys: u64,
    /// Bytes per value of the fill.
    #[arg(long, default_value_t = 16)]
    pub fill_value_size: usize,
}

/// One server at one point and value size.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerRun {
    /// Server name.
    pub server: &'static str,
    /// Bytes per value.
    pub value_size: usize,
    /// Connections × pipeline.
    pub point: Point,
    /// For kvio over RESP or memcached's protocol: the server speaking it
    /// natively, whose CPU per request it is compared with.
    pub rival: Option<&'static str>,
    /// `ok`, `failed` or `skipped`.
    pub status: &'static str,
    /// Why not ok.
    pub reason: Option<String>,
    /// Medians over the rounds.
    pub report: Option<LoadReport>,
    /// Largest peak RSS (`VmHWM`) over the rounds (KiB).
    pub peak_rss_kib: Option<u64>,
}

/// One server loaded with the fill keys.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FillResult {
    /// Server name.
    pub server: &'static str,
    /// `ok`, `failed` or `skipped`.
    pub status: &'static str,
    /// Why not ok.
    pub reason: Option<String>,
    /// Keys put (each acknowledged).
    pub keys: u64,
    /// RSS before the first put (KiB).
    pub rss_before_kib: Option<u64>,
    /// RSS after the last put (KiB).
    pub rss_after_kib: Option<u64>,
    /// Peak RSS (`VmHWM`) after the last put (KiB).
    pub peak_rss_kib: Option<u64>,
    /// (RSS after − RSS before) / keys.
    pub bytes_per_entry: Option<f64>,
    /// kvio only: the store's preallocated capacity (slot table + arena)
    /// per key, touched or not.
    pub preallocated_bytes_per_entry: Option<f64>,
    /// kvio only: bytes per entry with the slot table counted. kvio writes
    /// its whole table when it builds the store (`vec![Slot::EMPTY; n]`), so
    /// the table is in `rss_before_kib`, where Redis's and memcached's hash
    /// tables grow during the load and are in their delta.
    pub bytes_per_entry_with_table: Option<f64>,
    /// kvio only: `--store-entries` and `--store-bytes` given.
    pub store: Option<(usize, usize)>,
    /// Puts per second while loading.
    pub puts_per_sec: Option<f64>,
}

impl FillResult {
    fn new(server: &'static str) -> Self {
        FillResult {
            server,
            status: "ok",
            reason: None,
            keys: 0,
            rss_before_kib: None,
            rss_after_kib: None,
            peak_rss_kib: None,
            bytes_per_entry: None,
            preallocated_bytes_per_entry: None,
            bytes_per_entry_with_table: None,
            store: None,
            puts_per_sec: None,
        }
    }
}

/// Everything one `kvio bench peers` run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeersResults {
    /// `short` or `full`.
    pub mode: &'static str,
    /// Rounds per point.
    pub rounds: usize,
    /// Warm-up and measured time per point (ms).
    pub warmup_ms: u64,
    /// Measured window per point (ms).
    pub duration_ms: u64,
    /// Fraction of puts.
    pub put_ratio: f64,
    /// Keys of the matrix.
    pub keys: u64,
    /// Where server and load ran.
    pub pinning: String,
    /// The matrix.
    pub runs: Vec<PeerRun>,
    /// The memory figures.
    pub fills: Vec<FillResult>,
}

/// kvio's store for `keys` keys of `value_size` bytes: an entry per key,
/// and a record (header + longest key + value) per key. Updates of the same
/// size are written in place, so this much never fills; the arena is
/// calloc'ed, so what is not written costs no RSS.
pub fn kvio_store_for(keys: u64, value_size: usize) -> (usize, usize) {
    let keys = keys.max(1) as usize;
    (keys, keys * (RECORD_HEADER + MAX_KEY + value_size))
}

/// Runs the comparison; returns the exit code (0 all ok or skipped, 1 a
/// run failed, 2 nothing could run).
pub fn run(args: PeersArgs) -> i32 {
    let nofile = sys::raise_nofile_limit();
    let cores = Cores::pinned();
    let servers = if args.servers.is_empty() { Peer::ALL.to_vec() } else { args.servers.clone() };
    if args.points.is_empty() || args.value_sizes.is_empty() {
        eprintln!("kvio bench peers: --points and --value-sizes need at least one each");
        return 2;
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("kvio bench peers: {}: {e}", args.out.display());
        return 2;
    }
    // A server that cannot be found is skipped, with the reason, everywhere.
    let missing: Vec<Option<String>> = servers.iter().map(|s| s.program().err()).collect();
    for (s, why) in servers.iter().zip(&missing) {
        if let Some(why) = why {
            eprintln!("kvio bench peers: {}: {why}", s.name());
        }
    }
    if missing.iter().all(Option::is_some) {
        eprintln!("kvio bench peers: no server to run");
        return 2;
    }
    let (warmup, duration) = if args.short { (200, 1000) } else { (500, 2000) };
    let warmup = args.warmup_ms.unwrap_or(warmup);
    let duration = args.duration_ms.unwrap_or(duration);
    let rounds = args.rounds.unwrap_or(if args.short { 1 } else { 3 }).max(1);
    let max_value = args.value_sizes.iter().copied().max().unwrap_or(0);
    let (entries, bytes) = kvio_store_for(args.keys, max_value);
    eprintln!(
        "kvio bench peers: {rounds} round(s) of {warmup} ms warm-up + {duration} ms per point, {} puts, {} keys, \
         {}; kvio store --store-entries {entries} --store-bytes {bytes}; RLIMIT_NOFILE {nofile}",
        args.put_ratio,
        args.keys,
        cores.describe()
    );
    let mut cells: Vec<(PeerRun, Vec<LoadReport>)> = Vec::new();
    for &value_size in &args.value_sizes {
        for &point in &args.points {
            for (si, &server) in servers.iter().enumerate() {
                let (status, reason) = match &missing[si] {
                    Some(why) => ("skipped", Some(why.clone())),
                    None => ("ok", None),
                };
                let run = PeerRun {
                    server: server.name(),
                    value_size,
                    point,
                    rival: server.rival().map(Peer::name),
                    status,
                    reason,
                    report: None,
                    peak_rss_kib: None,
                };
                cells.push((run, Vec::new()));
            }
        }
    }
    let started = Instant::now();
    for round in 0..rounds {
        // Servers take turns at each point, so background load hits them alike.
        for (ci, (run, samples)) in cells.iter_mut().enumerate() {
            if run.status != "ok" {
                continue;
            }
            let server = servers[ci % servers.len()];
            eprintln!(
                "kvio bench peers: round {}/{rounds}, {} {}B {} ({:.0} s)",
                round + 1,
                run.server,
                run.value_size,
                run.point,
                started.elapsed().as_secs_f64()
            );
            let cfg = LoadConfig {
                connections: run.point.connections,
                pipeline: run.point.pipeline,
                put_ratio: args.put_ratio,
                keys: args.keys,
                value_size: run.value_size,
                warmup: Duration::from_millis(warmup),
                duration: Duration::from_millis(duration),
                ..LoadConfig::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            };
            match measure(server, cores, entries, bytes, cfg) {
                Ok((report, peak)) => {
                    run.peak_rss_kib = run.peak_rss_kib.max(peak);
                    samples.push(report);
                }
                Err(why) => {
                    eprintln!("kvio bench peers: {} {} {}: {why}", run.server, run.value_size, run.point);
                    run.status = "failed";
                    run.reason = Some(why);
                }
            }
        }
    }
    let runs: Vec<PeerRun> = cells
        .into_iter()
        .map(|(mut run, samples)| {
            if run.status == "ok" {
                run.report = report::median(&samples);
            }
            run
        })
        .collect();
    let mut fills = Vec::new();
    if args.fill_keys > 0 {
        for (si, &server) in servers.iter().enumerate() {
            eprintln!(
                "kvio bench peers: {} loading {} keys ({:.0} s)",
                server.name(),
                args.fill_keys,
                started.elapsed().as_secs_f64()
            );
            let mut fill = FillResult::new(server.name());
            match &missing[si] {
                Some(why) => {
                    fill.status = "skipped";
                    fill.reason = Some(why.clone());
                }
                None => fill_one(server, cores, args.fill_keys, args.fill_value_size, &mut fill),
            }
            fills.push(fill);
        }
    }
    let results = PeersResults {
        mode: if args.short { "short" } else { "full" },
        rounds,
        warmup_ms: warmup,
        duration_ms: duration,
        put_ratio: args.put_ratio,
        keys: args.keys,
        pinning: cores.describe(),
        runs,
        fills,
    };
    let table = markdown(&results);
    let json = serde_json::to_string_pretty(&results).unwrap_or_default();
    let written = std::fs::write(args.out.join("peers.json"), json)
        .and_then(|()| std::fs::write(args.out.join("peers.md"), &table));
    println!("{table}");
    eprintln!("kvio bench peers: done in {:.0} s", started.elapsed().as_secs_f64());
    if let Err(e) = written {
        eprintln!("kvio bench peers: writing {}: {e}", args.out.display());
        return 2;
    }
    let failed =
        results.runs.iter().any(|r| r.status == "failed") || results.fills.iter().any(|f| f.status == "failed");
    i32::from(failed)
}

/// One load run against a fresh `server`: its report and the server's peak RSS.
fn measure(
    server: Peer,
    cores: Cores,
    entries: usize,
    bytes: usize,
    cfg: LoadConfig,
) -> Result<(LoadReport, Option<u64>), String> {
    let running = server.start(cores, entries, bytes)?;
    let cfg = LoadConfig { addr: running.addr, protocol: server.protocol(), server_pid: Some(running.pid), ..cfg };
    let report = load::run(cfg);
    let peak = sys::peak_rss_kib(running.pid).ok();
    let stderr = running.stderr();
    running.stop();
    if report.errors > 0 {
        let first = report.first_error.as_deref().unwrap_or("?");
        return Err(format!("{} errors, first: {first}; server stderr: {stderr}", report.errors));
    }
    Ok((report, peak))
}

/// Loads `keys` keys into a fresh `server` and records its RSS around it.
fn fill_one(server: Peer, cores: Cores, keys: u64, value_size: usize, fill: &mut FillResult) {
    let (entries, bytes) = kvio_store_for(keys, value_size);
    let running = match server.start(cores, entries, bytes) {
        Ok(r) => r,
        Err(why) => {
            fill.status = "failed";
            fill.reason = Some(why);
            return;
        }
    };
    let table = slots_for(entries) * size_of::<kvio_core::store::Slot>();
    if server.is_kvio() {
        // The slot table is written in full at start-up; the arena comes
        // zeroed from calloc and costs RSS only where records are written.
        fill.store = Some((entries, bytes));
        fill.preallocated_bytes_per_entry = Some((table + bytes) as f64 / keys as f64);
    }
    // One get (a miss) first, so whatever a server sets up on its first
    // connection or request is in the RSS before the load, not counted per entry.
    let first = load::run(LoadConfig {
        connections: 1,
        requests_per_connection: Some(1),
        put_ratio: 0.0,
        warmup: Duration::ZERO,
        duration: SERVER_WAIT,
        protocol: server.protocol(),
        ..LoadConfig::new(running.addr)
    });
    if first.errors > 0 {
        fill.status = "failed";
        fill.reason = Some(format!("the first get failed: {}", first.first_error.as_deref().unwrap_or("?")));
        running.stop();
        return;
    }
    fill.rss_before_kib = sys::rss_kib(running.pid).ok();
    let cfg = LoadConfig {
        connections: FILL_CONNECTIONS,
        pipeline: FILL_PIPELINE,
        put_ratio: 1.0,
        keys,
        value_size,
        warmup: Duration::ZERO,
        duration: FILL_WAIT,
        protocol: server.protocol(),
        fill: true,
        server_pid: Some(running.pid),
        ..LoadConfig::new(running.addr)
    };
    let report = load::run(cfg);
    fill.rss_after_kib = sys::rss_kib(running.pid).ok();
    fill.peak_rss_kib = sys::peak_rss_kib(running.pid).ok();
    let stderr = running.stderr();
    running.stop();
    fill.keys = report.total_requests;
    fill.puts_per_sec = Some(report.requests_per_sec);
    let expected = keys / FILL_CONNECTIONS as u64 * FILL_CONNECTIONS as u64;
    if report.errors > 0 || report.total_requests != expected {
        fill.status = "failed";
        fill.reason = Some(format!(
            "{} of {expected} puts acknowledged, {} errors, first: {}; server stderr: {stderr}",
            report.total_requests,
            report.errors,
            report.first_error.as_deref().unwrap_or("-")
        ));
        return;
    }
    if let (Some(before), Some(after)) = (fill.rss_before_kib, fill.rss_after_kib) {
        let per_entry = (after as f64 - before as f64) * 1024.0 / fill.keys as f64;
        fill.bytes_per_entry = Some(per_entry);
        if fill.store.is_some() {
            fill.bytes_per_entry_with_table = Some(per_entry + table as f64 / fill.keys as f64);
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// The results as Markdown: the matrix with ratios against kvio epoll at
/// the same point, then the memory figures.
pub fn markdown(r: &PeersResults) -> String {
    let mut s = format!(
        "{} mode: {} round(s) of {} ms warm-up + {} ms measured per point, medians over rounds; {} gets / {} puts, \
         {} keys; {}\n\n",
        r.mode,
        r.rounds,
        r.warmup_ms,
        r.duration_ms,
        1.0 - r.put_ratio,
        r.put_ratio,
        r.keys,
        r.pinning
    );
    s.push_str(
        "| server | value | conns x pipeline | req/s | p99 µs | server CPU µs/req | CPU/req vs epoll | req/s vs epoll | \
         p99 vs epoll | CPU/req vs the protocol's own server | peak RSS KiB | status |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for run in &r.runs {
        let base = r
            .runs
            .iter()
            .find(|b| b.server == "epoll" && b.value_size == run.value_size && b.point == run.point)
            .and_then(|b| b.report.as_ref());
        let rival = run
            .rival
            .and_then(|name| {
                r.runs.iter().find(|b| b.server == name && b.value_size == run.value_size && b.point == run.point)
            })
            .and_then(|b| b.report.as_ref())
            .and_then(|b| b.server_cpu_us_per_request);
        let against = match run.rival {
            Some(name) => {
                format!("{} x {name}", ratio(run.report.as_ref().and_then(|r| r.server_cpu_us_per_request), rival))
            }
            None => "-".into(),
        };
        let status = match &run.reason {
            Some(why) => format!("{}: {why}", run.status),
            None => run.status.to_owned(),
        };
        match &run.report {
            Some(rep) => s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {against} | {} | {status} |\n",
                run.server,
                run.value_size,
                run.point,
                rep.requests_per_sec,
                rep.p99_us,
                rep.server_cpu_us_per_request.map_or("-".into(), |c| format!("{c:.2}")),
                ratio(rep.server_cpu_us_per_request, base.and_then(|b| b.server_cpu_us_per_request)),
                ratio(Some(rep.requests_per_sec), base.map(|b| b.requests_per_sec)),
                ratio(Some(rep.p99_us), base.map(|b| b.p99_us)),
                opt(run.peak_rss_kib),
            )),
            None => s.push_str(&format!(
                "| {} | {} | {} | - | - | - | - | - | - | - | - | {status} |\n",
                run.server, run.value_size, run.point
            )),
        }
    }
    if !r.fills.is_empty() {
        s.push_str(
            "\n| server | keys loaded | RSS before KiB | RSS after KiB | peak RSS KiB | bytes / entry | vs epoll | \
             kvio: with its slot table | kvio: preallocated per entry | puts/s | status |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        );
        let base = r.fills.iter().find(|f| f.server == "epoll").and_then(|f| f.bytes_per_entry);
        for f in &r.fills {
            let status = match &f.reason {
                Some(why) => format!("{}: {why}", f.status),
                None => f.status.to_owned(),
            };
            let store = match (f.preallocated_bytes_per_entry, f.store) {
                (Some(b), Some((e, bytes))) => format!("{b:.1} (--store-entries {e} --store-bytes {bytes})"),
                _ => "-".into(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {store} | {} | {status} |\n",
                f.server,
                f.keys,
                opt(f.rss_before_kib),
                opt(f.rss_after_kib),
                opt(f.peak_rss_kib),
                f.bytes_per_entry.map_or("-".into(), |b| format!("{b:.1}")),
                ratio(f.bytes_per_entry, base),
                f.bytes_per_entry_with_table.map_or("-".into(), |b| format!("{b:.1}")),
                f.puts_per_sec.map_or("-".into(), |p| format!("{p:.0}")),
            ));
        }
    }
    s
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn points_parse_and_print() {
        let p: Point = "1000x16".parse().unwrap();
        assert_eq!((p.connections, p.pipeline), (1000, 16));
        assert_eq!(p.to_string(), "1000x16");
        for bad in ["16", "0x1", "16x", "ax1"] {
            assert!(bad.parse::<Point>().is_err(), "{bad}");
        }
    }

    #[test]
    fn kvio_store_holds_every_key_at_its_largest() {
        let (entries, bytes) = kvio_store_for(1_000_000, 16);
        assert_eq!(entries, 1_000_000);
        assert_eq!(bytes, 1_000_000 * (RECORD_HEADER + MAX_KEY + 16));
        let mut key = String::new();
        crate::wire::key_of(&mut key, 15, 62_499);
        assert!(key.len() <= MAX_KEY);
    }
}
