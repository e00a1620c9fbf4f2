//! The server's log: `tracing` events on stderr, timestamped and levelled,
//! filtered by `--log-level` or `RUST_LOG` ([`init`]), and the rate limit
//! for the conditions an operator must act on ([`Limited`]): one line per
//! kind per [`WINDOW`], saying how many like it were not printed.
//!
//! Levels: `error` (the server cannot go on), `warn` (the operator
//! conditions: refused connections, evictions at the memory cap, puts
//! refused because the store is full, accept errors; a bind outside
//! loopback), `info` (the default: start, stopping, suppressed counts at
//! exit), `debug` (one line per connection closed for a reason other than
//! the client's end of stream or the stop), `trace` (nothing more yet).
//!
//! What it does not own: the start-up and stopped lines on stdout, which
//! scripts parse ([`crate::stats`]).

use std::fmt;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// The level used when neither `--log-level` nor `RUST_LOG` says.
pub const DEFAULT_LEVEL: &str = "info";
/// At most one line per kind of operator condition this often.
pub const WINDOW: Duration = Duration::from_secs(5);

/// Connections refused at the door (limit reached, out of descriptors).
pub static REFUSED: Limited = Limited::new("refused connections");
/// Connections evicted at `--max-client-memory`.
pub static EVICTED: Limited = Limited::new("evictions at the memory cap");
/// Puts refused because the store is full.
pub static STORE_FULL: Limited = Limited::new("puts refused: store full");
/// Accept errors (EMFILE...) and other errors the server survives.
pub static SERVER_ERROR: Limited = Limited::new("server errors");

/// Every rate-limited kind, for [`flush_suppressed`].
const KINDS: [&Limited; 4] = [&REFUSED, &EVICTED, &STORE_FULL, &SERVER_ERROR];

/// Sets up the log on stderr: `level` (an `EnvFilter` directive such as
/// `warn` or `kvio=debug`) if given, else `RUST_LOG`, else [`DEFAULT_LEVEL`].
/// Err: the directive is not valid. Once per process; later calls do nothing.
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => {
                EnvFilter::try_new(&env).map_err(|e| format!("invalid RUST_LOG {env:?}: {e}"))?
            }
            _ => EnvFilter::new(DEFAULT_LEVEL),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// Warns once that `ip` is not a loopback address: kvio has no
/// authentication, so anyone who can reach the port can read and write.
pub fn warn_if_exposed(what: &str, ip: IpAddr) {
    if let Some(warning) = exposure(what, ip) {
        tracing::warn!("{warning}");
    }
}

/// The warning for `what` listening on `ip`, if it is outside loopback.
fn exposure(what: &str, ip: IpAddr) -> Option<String> {
    (!ip.is_loopback()).then(|| {
        format!(
            "{what} listens on {ip}, outside loopback: kvio has no authentication, so anyone who can reach \
             this port can read and write every key; keep it behind a firewall or on a private network"
        )
    })
}

/// One kind of operator condition: printed at most once per [`WINDOW`],
/// the next line saying how many were not.
#[derive(Debug)]
pub struct Limited {
    what: &'static str,
    /// Milliseconds since [`epoch`] of the last line printed, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Limited {
    /// A kind named `what` in the exit summary.
    pub const fn new(what: &'static str) -> Limited {
        Limited { what, last: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Logs `line` at `warn` unless a line of this kind was printed less
    /// than [`WINDOW`] ago; then only counts it. Costs a clock read and
    /// two atomics when `warn` is enabled, a level check when it is not.
    pub fn warn(&self, line: fmt::Arguments<'_>) {
        if !tracing::enabled!(tracing::Level::WARN) {
            return;
        }
        if let Some(suppressed) = self.admit(millis_since_epoch()) {
            if suppressed > 0 {
                tracing::warn!("{line} ({suppressed} more like it not shown in the last {}s)", WINDOW.as_secs());
            } else {
                tracing::warn!("{line}");
            }
        }
    }

    /// At `now_ms`: `Some(count suppressed since the last line)` if a line
    /// may be printed now, else counts one more suppressed.
    fn admit(&self, now_ms: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let window = WINDOW.as_millis() as u64;
        let due = last == 0 || now_ms + 1 >= last + window;
        if !due || self.last.compare_exchange(last, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    /// Lines not printed since the last one.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

/// Says once that the server is stopping: the thread watching for the
/// signal says it at once, and the exit path says it if that thread had
/// not yet been scheduled; either way it comes before the totals.
pub fn stopping() {
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !TOLD.swap(true, Ordering::Relaxed) {
        tracing::info!("stopping: answering what was received, then closing every connection");
    }
}

/// At exit: one `info` line per kind with lines still unprinted, with the count.
pub fn flush_suppressed() {
    for kind in KINDS {
        let n = kind.suppressed.swap(0, Ordering::Relaxed);
        if n > 0 {
            tracing::info!("{n} more {} not shown (rate-limited)", kind.what);
        }
    }
}

fn millis_since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn one_line_per_window_then_the_count_of_the_rest() {
        let limited = Limited::new("test");
        assert_eq!(limited.admit(0), Some(0), "the first is printed");
        assert_eq!(limited.admit(1), None);
        assert_eq!(limited.admit(4_998), None);
        assert_eq!(limited.suppressed(), 2);
        assert_eq!(limited.admit(5_000), Some(2), "a window later, with the count");
        assert_eq!(limited.admit(5_001), None);
        assert_eq!(limited.admit(20_000), Some(1));
        assert_eq!(limited.suppressed(), 0);
    }

    #[test]
    fn a_bind_outside_loopback_is_warned_about() {
        for loopback in ["127.0.0.1", "127.8.9.10", "::1"] {
            assert_eq!(exposure("kvio serve", loopback.parse().unwrap()), None, "{loopback}");
        }
        for exposed in ["0.0.0.0", "::", "10.0.0.7", "192.168.1.2"] {
            let warning = exposure("kvio serve", exposed.parse().unwrap()).unwrap();
            assert!(warning.starts_with(&format!("kvio serve listens on {exposed}, outside loopback")), "{warning}");
            assert!(warning.contains("no authentication") && warning.contains("firewall"), "{warning}");
        }
    }

    #[test]
    fn levels_and_directives_are_checked() {
        assert!(EnvFilter::try_new("warn").is_ok());
        assert!(init(Some("kvio=debug,warn")).is_ok());
        assert!(init(Some("[bad")).unwrap_err().starts_with("invalid --log-level"));
    }
}
