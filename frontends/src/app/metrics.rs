//! `kvio serve --metrics ADDR`: the figures the loops keep, served as
//! `GET /metrics` in the Prometheus text format (version 0.0.4), on a
//! thread of its own, off the request path. It reads the loops' atomics
//! ([`Loops`]) and the process's own figures from `/proc/self` at each scrape.
//!
//! The format is written by the official `prometheus-client` crate. The
//! HTTP side is a few lines here rather than `tiny_http`, which starts a
//! thread per connection with no cap and sets no socket timeout: this one
//! answers one connection at a time, reads at most [`MAX_REQUEST`] bytes
//! for at most [`REQUEST_DEADLINE`], answers `GET /metrics` (200), any
//! other path (404) or method (405), and closes.
//!
//! What it does not own: the counting ([`crate::sansio::stats`], [`crate::host::observed`]).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::app::config::{Config, Flavor};
use crate::host::loops::Loops;
use crate::host::observed::Filled;
use crate::host::shutdown::Shutdown;
use crate::sansio::stats::{Close, Figures, PutOutcome};

/// Default `--metrics` address (Prometheus exporters' habit: a port beside the service's).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9878";
/// The one path served.
pub const PATH: &str = "/metrics";
/// The longest request read (headers included).
pub const MAX_REQUEST: usize = 8 * 1024;
/// The longest a client may take to send its request, and each write of the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// What a scrape reads: the loops' figures and the settings they run under.
#[derive(Debug, Clone)]
pub struct Source {
    /// The running server's loops.
    pub loops: Arc<Loops>,
    /// Its limits (the capacities shown).
    pub config: Config,
    /// Its flavor (the `kvio_info` label).
    pub flavor: Flavor,
}

/// The thread beside the loops: says "stopping" on the first signal, and
/// serves `/metrics` on `listener` if given, until the process exits.
pub fn spawn(listener: Option<TcpListener>, source: Source, shutdown: Shutdown) -> io::Result<()> {
    std::thread::Builder::new()
        .name("kvio-watch".into())
        .spawn(move || watch(listener.as_ref(), &source, &shutdown))?;
    Ok(())
}

fn watch(listener: Option<&TcpListener>, source: &Source, shutdown: &Shutdown) {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut told = false;
    loop {
        let mut fds = Vec::with_capacity(2);
        if let Some(listener) = listener {
            fds.push(PollFd::new(listener, PollFlags::IN));
        }
        if !told {
            fds.push(PollFd::from_borrowed_fd(shutdown.wake_fd(), PollFlags::IN));
        }
        if fds.is_empty() {
            return;
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::error!("metrics: poll: {e}; /metrics is no longer served");
                return;
            }
        }
        let ready = listener.is_some() && fds[0].revents().contains(PollFlags::IN);
        drop(fds);
        if !told && shutdown.is_requested() {
            told = true;
            crate::app::log::stopping();
        }
        if let (true, Some(listener)) = (ready, listener) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, source) {
                        tracing::debug!("metrics: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    // EMFILE and the like: whatever failed likely fails again at once.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, source: &Source) -> io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let head = read_head(&mut stream)?;
    let (status, body) = match route(&head) {
        Route::Metrics => ("200 OK", encode(source)),
        Route::NotFound => ("404 Not Found", format!("not found: kvio serves {PATH} only\n")),
        Route::BadMethod => ("405 Method Not Allowed", format!("method not allowed: GET {PATH}\n")),
        Route::Bad => ("400 Bad Request", "bad request\n".to_owned()),
    };
    let content_type = if status.starts_with("200") {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAllow: GET\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    // The client reads to the end: FIN after the body, not a reset over unread request bytes.
    let _ = rustix::net::shutdown(stream.as_fd(), rustix::net::Shutdown::Write);
    Ok(())
}

/// The request's head (up to the blank line), within the size and time bounds.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() >= MAX_REQUEST {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n.min(MAX_REQUEST - head.len())]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(head)
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Bad,
}

/// What the request line asks for.
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next()) else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/") {
        return Route::Bad;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", PATH) => Route::Metrics,
        (_, PATH) => Route::BadMethod,
        _ => Route::NotFound,
    }
}

/// The exposition text of `source` now.
pub fn encode(source: &Source) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape::read(source)));
    let mut text = String::with_capacity(8 * 1024);
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        let _ = writeln!(text, "# encoding failed: {e}");
    }
    text
}

/// Everything one scrape shows, read at once.
#[derive(Debug)]
struct Scrape {
    flavor: Flavor,
    loops: Vec<Figures>,
    store: Filled,
    config: Config,
    client_memory: usize,
    /// Under `--data-dir`: bytes, last sync and rewrite (Unix ms), rewrites, errors, failing loops.
    journal: Option<[u64; 6]>,
    process: Process,
}

impl Scrape {
    fn read(source: &Source) -> Scrape {
        Scrape {
            flavor: source.flavor,
            loops: (0..source.loops.len()).map(|i| source.loops.figures(i)).collect(),
            store: source.loops.store_fill(),
            config: source.config,
            client_memory: source.loops.client_memory(),
            journal: source.loops.journal().map(|j| {
                let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                [
                    load(&j.bytes),
                    load(&j.last_sync_ms),
                    load(&j.last_rewrite_ms),
                    load(&j.rewrites),
                    load(&j.write_errors),
                    load(&j.failing),
                ]
            }),
            process: Process::read(),
        }
    }

    /// `(labels, value)` per loop: no label with one loop, `loop="i"` with several.
    fn per_loop(&self, value: impl Fn(&Figures) -> u64) -> Vec<(Labels, u64)> {
        let several = self.loops.len() > 1;
        let label = |i: usize| if several { vec![("loop", i.to_string())] } else { Vec::new() };
        self.loops.iter().enumerate().map(|(i, f)| (label(i), value(f))).collect()
    }

    /// Per loop and per `key` label value.
    fn per_loop_by<T: Copy>(
        &self,
        key: &'static str,
        kinds: &[(T, &'static str)],
        value: impl Fn(&Figures, T) -> u64,
    ) -> Vec<(Labels, u64)> {
        let mut out = Vec::new();
        for (labels, i) in self.per_loop(|_| 0).into_iter().map(|(l, _)| l).zip(0..) {
            for &(kind, name) in kinds {
                let mut labels = labels.clone();
                labels.push((key, name.to_owned()));
                out.push((labels, value(&self.loops[i], kind)));
            }
        }
        out
    }
}

type Labels = Vec<(&'static str, String)>;

fn one(value: u64) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), value)]
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let closes: Vec<(Close, &str)> = Close::ALL.iter().map(|&c| (c, c.as_str())).collect();
        let puts: Vec<(PutOutcome, &str)> = PutOutcome::ALL.iter().map(|&p| (p, p.as_str())).collect();
        let info =
            vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned()), ("flavor", self.flavor.to_string())], 1)];
        gauge(&mut e, "kvio_info", "The server: its version and IO flavor (always 1).", &info)?;
        gauge(&mut e, "kvio_loops", "Event loops serving (--threads).", &one(self.loops.len() as u64))?;
        gauge(&mut e, "kvio_connections_open", "Connections open now.", &self.per_loop(Figures::open))?;
        let limit = self.config.max_connections as u64;
        gauge(
            &mut e,
            "kvio_connections_limit",
            "Connections served at once at most (--max-connections).",
            &one(limit),
        )?;
        let accepted = self.per_loop(|f| f.accepted);
        counter(&mut e, "kvio_connections_accepted", "Connections accepted and served.", &accepted)?;
        let refused = self.per_loop(|f| f.refused);
        counter(
            &mut e,
            "kvio_connections_refused",
            "Connections refused at the door (limit reached, out of descriptors).",
            &refused,
        )?;
        let closed = self.per_loop_by("reason", &closes, |f, c| f.closed[c as usize]);
        counter(&mut e, "kvio_connections_closed", "Connections closed, by reason.", &closed)?;
        counter(
            &mut e,
            "kvio_auth_failures",
            "Wrong secrets presented, every protocol (what was sent is never recorded).",
            &self.per_loop(|f| f.auth_failures),
        )?;
        counter(&mut e, "kvio_requests", "Requests answered, every kind.", &self.per_loop(|f| f.requests))?;
        let gets =
            self.per_loop_by(
                "result",
                &[(true, "hit"), (false, "miss")],
                |f, hit| {
                    if hit { f.get_hits } else { f.get_misses }
                },
            );
        counter(&mut e, "kvio_gets", "Get requests, by result (hit: the key was found).", &gets)?;
        let put_counts = self.per_loop_by("result", &puts, |f, p| f.puts[p as usize]);
        counter(
            &mut e,
            "kvio_puts",
            "Put requests, by result (stored, or refused: too_big, store_full).",
            &put_counts,
        )?;
        let deletes = self.per_loop_by("result", &[(true, "deleted"), (false, "not_found")], |f, hit| {
            if hit { f.delete_hits } else { f.delete_misses }
        });
        counter(&mut e, "kvio_deletes", "Delete requests, by result (deleted: the key was there).", &deletes)?;
        counter(&mut e, "kvio_received_bytes", "Bytes received from clients.", &self.per_loop(|f| f.bytes_read))?;
        counter(&mut e, "kvio_sent_bytes", "Bytes sent to clients.", &self.per_loop(|f| f.bytes_written))?;
        let limits = self.config.store_limits();
        gauge(&mut e, "kvio_store_entries", "Entries in the store.", &one(self.store.entries))?;
        let max_entries = limits.max_entries as u64;
        gauge(&mut e, "kvio_store_entries_capacity", "Entries the store holds at most.", &one(max_entries))?;
        gauge(
            &mut e,
            "kvio_store_bytes",
            "Store budget bytes used: keys, values, a 12-byte header an entry (more with expiry, flags or cas).",
            &one(self.store.bytes),
        )?;
        counter(
            &mut e,
            "kvio_store_evictions",
            "Entries evicted to make room for a put (--when-full evict; 0 under refuse).",
            &one(self.store.evictions),
        )?;
        let budget = limits.byte_budget as u64;
        gauge(&mut e, "kvio_store_bytes_capacity", "Store budget bytes (--store-bytes).", &one(budget))?;
        // The cap from the config: the loops make their ClientMemory a moment after the start-up line.
        let (held, cap) = (self.client_memory, self.config.max_client_memory);
        gauge(
            &mut e,
            "kvio_client_memory_bytes",
            "Bytes all connections hold in partial frames and unsent responses.",
            &one(held as u64),
        )?;
        gauge(
            &mut e,
            "kvio_client_memory_limit_bytes",
            "Cap on kvio_client_memory_bytes (--max-client-memory).",
            &one(cap as u64),
        )?;
        if let Some([bytes, last_sync, last_rewrite, rewrites, errors, failing]) = self.journal {
            gauge(
                &mut e,
                "kvio_journal_bytes",
                "Bytes of the journal's files (--data-dir): snapshot and logs.",
                &one(bytes),
            )?;
            gauge(
                &mut e,
                "kvio_journal_last_sync_timestamp_seconds",
                "Unix time of the last sync of a log (0: none yet).",
                &one(last_sync / 1000),
            )?;
            gauge(
                &mut e,
                "kvio_journal_last_rewrite_timestamp_seconds",
                "Unix time the last rewrite (snapshot and fresh logs) committed (0: none yet).",
                &one(last_rewrite / 1000),
            )?;
            counter(&mut e, "kvio_journal_rewrites", "Rewrites committed.", &one(rewrites))?;
            counter(
                &mut e,
                "kvio_journal_write_errors",
                "Writes or syncs of a log that failed (disk full, IO error): puts are refused meanwhile.",
                &one(errors),
            )?;
            gauge(
                &mut e,
                "kvio_journal_failing_loops",
                "Loops whose log cannot be written now: their puts are answered \"not persisted\".",
                &one(failing),
            )?;
        }
        self.process.encode(&mut e)
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    if let [(labels, value)] = samples
        && labels.is_empty()
    {
        return ConstCounter::new(*value).encode(family);
    }
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, samples: &[(Labels, u64)]) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    if let [(labels, value)] = samples
        && labels.is_empty()
    {
        return ConstGauge::new(*value).encode(family);
    }
    for (labels, value) in samples {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// The process figures, named as the official Prometheus clients export them.
#[derive(Debug, Default)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: u64,
    open_fds: u64,
    max_fds: u64,
}

impl Process {
    /// From `/proc/self/stat`, `/proc/stat` and `/proc/self/fd`; a figure
    /// that cannot be read is 0.
    fn read() -> Process {
        let mut process = Process::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // After the command name (which may hold spaces and parentheses): field 3 on.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
            process.cpu_seconds = (field(14) + field(15)) as f64 / ticks;
            process.virtual_bytes = field(23);
            process.resident_bytes = field(24) * rustix::param::page_size() as u64;
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|t| t.trim().parse::<u64>().ok()))
            });
            process.start_time_seconds = boot.unwrap_or(0) + field(22) / ticks as u64;
        }
        process.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        process.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(0);
        process
    }

    fn encode(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cpu = e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.cpu_seconds).encode(cpu)?;
        gauge(e, "process_resident_memory_bytes", "Resident memory size in bytes.", &one(self.resident_bytes))?;
        gauge(e, "process_virtual_memory_bytes", "Virtual memory size in bytes.", &one(self.virtual_bytes))?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            &one(self.start_time_seconds),
        )?;
        gauge(e, "process_open_fds", "Number of open file descriptors.", &one(self.open_fds))?;
        gauge(e, "process_max_fds", "Maximum number of open file descriptors.", &one(self.max_fds))
    }
}

/// Binds the `--metrics` listener (before the start-up line, so a scraper
/// that read it finds the port open).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"garbage\r\n\r\n"), Route::Bad);
        assert_eq!(route(b""), Route::Bad);
    }

    #[test]
    fn the_exposition_names_every_figure() {
        let loops = Arc::new(Loops::new(2, false));
        let source = Source { loops, config: Config::for_flavor(Flavor::Epoll), flavor: Flavor::Epoll };
        let text = encode(&source);
        for needle in [
            "# TYPE kvio_requests_total counter",
            "kvio_requests_total{loop=\"1\"} 0",
            "kvio_connections_closed_total{loop=\"0\",reason=\"memory_eviction\"} 0",
            "kvio_puts_total{loop=\"0\",result=\"store_full\"} 0",
            "kvio_gets_total{loop=\"1\",result=\"miss\"} 0",
            "kvio_deletes_total{loop=\"0\",result=\"deleted\"} 0",
            "kvio_deletes_total{loop=\"1\",result=\"not_found\"} 0",
            "# TYPE kvio_store_evictions_total counter",
            "kvio_store_evictions_total 0",
            "kvio_store_entries_capacity 100000",
            "kvio_info{version=",
            "# TYPE process_cpu_seconds_total counter",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let process = Process::read();
        assert!(process.resident_bytes > 0 && process.open_fds > 0 && process.start_time_seconds > 1_600_000_000);
    }

    #[test]
    fn the_journal_figures_appear_only_under_a_data_dir() {
        use std::sync::atomic::Ordering;
        let loops = Arc::new(Loops::new(1, false));
        let source =
            Source { loops: Arc::clone(&loops), config: Config::for_flavor(Flavor::Epoll), flavor: Flavor::Epoll };
        assert!(!encode(&source).contains("kvio_journal"), "memory only: no journal figures");
        let figures = Arc::new(crate::host::durability::JournalFigures::default());
        figures.bytes.store(4096, Ordering::Relaxed);
        figures.last_sync_ms.store(1_700_000_000_500, Ordering::Relaxed);
        figures.write_errors.store(3, Ordering::Relaxed);
        figures.failing.store(1, Ordering::Relaxed);
        loops.set_journal(figures);
        let text = encode(&source);
        for needle in [
            "kvio_journal_bytes 4096",
            "kvio_journal_last_sync_timestamp_seconds 1700000000",
            "kvio_journal_last_rewrite_timestamp_seconds 0",
            "kvio_journal_rewrites_total 0",
            "kvio_journal_write_errors_total 3",
            "kvio_journal_failing_loops 1",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}
