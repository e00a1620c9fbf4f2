//! `kvio stats [--metrics ADDR] [--watch SECS [--count N]]`: scrapes a
//! running server's `/metrics` and prints the figures as a short table,
//! or with `--watch` one line per interval with rates, as
//! `redis-cli --stat` does. Exit 0, or 2 when nothing answers at ADDR.
//!
//! What it does not own: the figures' names and meaning ([`crate::app::metrics`]).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::app::config::resolve;
use crate::app::metrics::PATH;

/// One sample: metric name, its labels as written (`{a="b"}` or empty), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (`kvio_requests_total`).
    pub name: String,
    /// Its labels, as written between the braces.
    pub labels: String,
    /// Its value.
    pub value: f64,
}

/// A scrape, parsed.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
    /// When it was taken.
    at: Option<Instant>,
}

impl Scrape {
    /// Parses the Prometheus text format (comments skipped, one sample a line).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                Some(Sample { name: name.to_owned(), labels: labels.to_owned(), value: value.trim().parse().ok()? })
            })
            .collect();
        Scrape { samples, at: None }
    }

    /// The sum of `name` over every series whose labels contain `label` (e.g. `result="hit"`; "" for all).
    pub fn sum(&self, name: &str, label: &str) -> f64 {
        self.samples.iter().filter(|s| s.name == name && s.labels.contains(label)).map(|s| s.value).sum()
    }

    /// The value of label `key` in the first series of `name`.
    pub fn label(&self, name: &str, key: &str) -> Option<String> {
        let sample = self.samples.iter().find(|s| s.name == name)?;
        let start = sample.labels.find(&format!("{key}=\""))? + key.len() + 2;
        let rest = &sample.labels[start..];
        Some(rest[..rest.find('"')?].to_owned())
    }
}

/// Why a scrape failed.
#[derive(Debug)]
pub enum ScrapeError {
    /// Nothing answers at the address.
    Unreachable(SocketAddr, io::Error),
    /// Something answered, but not with metrics.
    Bad(String),
}

impl std::fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScrapeError::Unreachable(addr, e) => {
                write!(f, "nothing answers at {addr} ({e}): is a server running with `kvio serve --metrics {addr}`?")
            }
            ScrapeError::Bad(why) => f.write_str(why),
        }
    }
}

/// `GET /metrics` from `addr` (HOST:PORT), within `timeout` per step.
pub fn scrape(addr: &str, timeout: Duration) -> Result<Scrape, ScrapeError> {
    let addrs = resolve(addr).map_err(ScrapeError::Bad)?;
    let target = addrs[0];
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| ScrapeError::Unreachable(target, e))?;
    let unreachable = |e| ScrapeError::Unreachable(target, e);
    stream.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    stream.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    let request = format!("GET {PATH} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut answer = Vec::new();
    // A scrape is a few KiB; a server that sends without end is cut at 16 MiB.
    stream.take(16 << 20).read_to_end(&mut answer).map_err(unreachable)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| ScrapeError::Bad(format!("{addr} did not answer HTTP (is it the --metrics address?)")))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.") || status.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Bad(format!("{addr}{PATH} answered {status:?}")));
    }
    let mut scrape = Scrape::parse(body);
    if scrape.sum("kvio_info", "") == 0.0 {
        return Err(ScrapeError::Bad(format!("{addr}{PATH} holds no kvio figures (is it a kvio server?)")));
    }
    scrape.at = Some(Instant::now());
    Ok(scrape)
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 { format!("{:.1}%", 100.0 * part / whole) } else { "-".to_owned() }
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n:.0} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The table `kvio stats` prints.
pub fn table(s: &Scrape) -> String {
    let flavor = s.label("kvio_info", "flavor").unwrap_or_else(|| "?".into());
    let version = s.label("kvio_info", "version").unwrap_or_else(|| "?".into());
    let (hits, misses) = (s.sum("kvio_gets_total", "result=\"hit\""), s.sum("kvio_gets_total", "result=\"miss\""));
    let closed = ["peer", "idle", "frame_deadline", "bad_frame", "memory_eviction", "stop", "error"]
        .iter()
        .map(|r| format!("{r} {}", s.sum("kvio_connections_closed_total", &format!("reason=\"{r}\""))))
        .collect::<Vec<_>>()
        .join(", ");
    let store_entries = (s.sum("kvio_store_entries", ""), s.sum("kvio_store_entries_capacity", ""));
    let store_bytes = (s.sum("kvio_store_bytes", ""), s.sum("kvio_store_bytes_capacity", ""));
    let memory = (s.sum("kvio_client_memory_bytes", ""), s.sum("kvio_client_memory_limit_bytes", ""));
    let started = s.sum("process_start_time_seconds", "");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut rows: Vec<(&str, String)> = vec![
        ("server", format!("kvio {version}, flavor {flavor}, {} loop(s)", s.sum("kvio_loops", ""))),
        ("uptime", format!("{:.0} s", (now - started).max(0.0))),
        (
            "connections",
            format!("{} open (limit {})", s.sum("kvio_connections_open", ""), s.sum("kvio_connections_limit", "")),
        ),
        ("accepted", format!("{}", s.sum("kvio_connections_accepted_total", ""))),
        ("refused", format!("{}", s.sum("kvio_connections_refused_total", ""))),
        ("closed", closed),
        ("requests", format!("{}", s.sum("kvio_requests_total", ""))),
        (
            "gets",
            format!("{} (hits {hits}, misses {misses}, hit ratio {})", hits + misses, percent(hits, hits + misses)),
        ),
        (
            "puts",
            format!(
                "{} (stored {}, too big {}, store full {})",
                s.sum("kvio_puts_total", ""),
                s.sum("kvio_puts_total", "result=\"stored\""),
                s.sum("kvio_puts_total", "result=\"too_big\""),
                s.sum("kvio_puts_total", "result=\"store_full\"")
            ),
        ),
        (
            "deletes",
            format!(
                "{} (deleted {}, not found {})",
                s.sum("kvio_deletes_total", ""),
                s.sum("kvio_deletes_total", "result=\"deleted\""),
                s.sum("kvio_deletes_total", "result=\"not_found\"")
            ),
        ),
        ("received", bytes(s.sum("kvio_received_bytes_total", ""))),
        ("sent", bytes(s.sum("kvio_sent_bytes_total", ""))),
        (
            "store entries",
            format!("{} of {} ({})", store_entries.0, store_entries.1, percent(store_entries.0, store_entries.1)),
        ),
        ("store evictions", format!("{}", s.sum("kvio_store_evictions_total", ""))),
        (
            "store bytes",
            format!("{} of {} ({})", bytes(store_bytes.0), bytes(store_bytes.1), percent(store_bytes.0, store_bytes.1)),
        ),
        ("client memory", format!("{} of {} ({})", bytes(memory.0), bytes(memory.1), percent(memory.0, memory.1))),
        ("resident memory", bytes(s.sum("process_resident_memory_bytes", ""))),
        ("cpu", format!("{:.2} s", s.sum("process_cpu_seconds_total", ""))),
        ("open fds", format!("{} of {}", s.sum("process_open_fds", ""), s.sum("process_max_fds", ""))),
    ];
    if s.samples.iter().any(|x| x.name == "kvio_journal_bytes") {
        let ago = |name: &str| {
            let at = s.sum(name, "");
            if at > 0.0 { format!("{:.0} s ago", (now - at).max(0.0)) } else { "never".to_owned() }
        };
        rows.push(("journal", bytes(s.sum("kvio_journal_bytes", ""))));
        rows.push(("last sync", ago("kvio_journal_last_sync_timestamp_seconds")));
        rows.push((
            "last rewrite",
            format!(
                "{} ({} so far)",
                ago("kvio_journal_last_rewrite_timestamp_seconds"),
                s.sum("kvio_journal_rewrites_total", "")
            ),
        ));
        rows.push((
            "write errors",
            format!(
                "{} ({} loop(s) failing now)",
                s.sum("kvio_journal_write_errors_total", ""),
                s.sum("kvio_journal_failing_loops", "")
            ),
        ));
    }
    let mut out = String::new();
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<16} {value}");
    }
    out
}

/// The header of `--watch`.
pub const WATCH_HEADER: &str =
    "   req/s   hit%   open conns  refused/s  store entries  store fill  client mem       rss";

/// One `--watch` line: rates between `before` and `now`, levels at `now`.
pub fn watch_line(before: &Scrape, now: &Scrape) -> String {
    let seconds = match (before.at, now.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    let delta = |name: &str, label: &str| (now.sum(name, label) - before.sum(name, label)).max(0.0);
    let (hits, misses) = (delta("kvio_gets_total", "result=\"hit\""), delta("kvio_gets_total", "result=\"miss\""));
    let entries = now.sum("kvio_store_entries", "");
    let fill = percent(now.sum("kvio_store_bytes", ""), now.sum("kvio_store_bytes_capacity", ""));
    format!(
        "{:>8.0} {:>6} {:>12} {:>10.0} {:>14} {:>11} {:>10} {:>9}",
        delta("kvio_requests_total", "") / seconds,
        percent(hits, hits + misses),
        now.sum("kvio_connections_open", ""),
        delta("kvio_connections_refused_total", "") / seconds,
        entries,
        fill,
        bytes(now.sum("kvio_client_memory_bytes", "")),
        bytes(now.sum("process_resident_memory_bytes", "")),
    )
}

/// Runs `kvio stats`; the exit code.
pub fn run(addr: &str, watch: Option<Duration>, count: Option<u64>, timeout: Duration) -> u8 {
    let fail = |e: ScrapeError| {
        eprintln!("kvio stats: {e}");
        crate::cli::EXIT_FAILURE
    };
    let mut before = match scrape(addr, timeout) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let mut out = io::stdout().lock();
    let Some(every) = watch else {
        return match out.write_all(table(&before).as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("kvio stats: stdout: {e}");
                crate::cli::EXIT_FAILURE
            }
        };
    };
    let mut printed = 0u64;
    let mut next = Instant::now() + every;
    if writeln!(out, "{WATCH_HEADER}").and_then(|()| out.flush()).is_err() {
        return crate::cli::EXIT_FAILURE;
    }
    while count.is_none_or(|n| printed < n) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        let now = match scrape(addr, timeout) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        if writeln!(out, "{}", watch_line(&before, &now)).and_then(|()| out.flush()).is_err() {
            // The reader went away (`| head`): done.
            return 0;
        }
        before = now;
        printed += 1;
    }
    0
}

#[cfg(test)]
mod test {
    use super::*;

    const TEXT: &str = "# HELP kvio_gets_total Gets.\n# TYPE kvio_gets_total counter\n\
        kvio_gets_total{loop=\"0\",result=\"hit\"} 3\nkvio_gets_total{loop=\"1\",result=\"hit\"} 4\n\
        kvio_gets_total{loop=\"0\",result=\"miss\"} 1\nkvio_info{version=\"0.1.0\",flavor=\"epoll\"} 1\n\
        kvio_requests_total 10\nprocess_cpu_seconds_total 0.25\n";

    #[test]
    fn samples_are_summed_over_labels() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.sum("kvio_gets_total", "result=\"hit\""), 7.0);
        assert_eq!(scrape.sum("kvio_gets_total", ""), 8.0);
        assert_eq!(scrape.sum("kvio_requests_total", ""), 10.0);
        assert_eq!(scrape.sum("process_cpu_seconds_total", ""), 0.25);
        assert_eq!(scrape.label("kvio_info", "flavor").as_deref(), Some("epoll"));
        let table = table(&scrape);
        assert!(table.contains("gets             8 (hits 7, misses 1, hit ratio 87.5%)"), "{table}");
    }

    #[test]
    fn the_journal_rows_show_under_a_data_dir() {
        assert!(!table(&Scrape::parse(TEXT)).contains("journal"), "memory only: no journal rows");
        let text = format!(
            "{TEXT}kvio_journal_bytes 2048\nkvio_journal_last_sync_timestamp_seconds 1700000000\n\
             kvio_journal_last_rewrite_timestamp_seconds 0\nkvio_journal_rewrites_total 0\n\
             kvio_journal_write_errors_total 2\nkvio_journal_failing_loops 1\n"
        );
        let table = table(&Scrape::parse(&text));
        assert!(table.contains("journal          2.0 KiB"), "{table}");
        assert!(table.contains("last sync        ") && table.contains(" s ago"), "{table}");
        assert!(table.contains("last rewrite     never (0 so far)"), "{table}");
        assert!(table.contains("write errors     2 (1 loop(s) failing now)"), "{table}");
    }

    #[test]
    fn watch_lines_show_rates() {
        let start = Instant::now();
        let before = Scrape { at: Some(start), ..Scrape::parse("kvio_requests_total 100\n") };
        let now = Scrape { at: Some(start + Duration::from_secs(2)), ..Scrape::parse("kvio_requests_total 300\n") };
        let line = watch_line(&before, &now);
        assert_eq!(line.split_whitespace().next(), Some("100"), "{line}");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(percent(1.0, 0.0), "-");
    }
}
