//! The operator warnings the counters raise (refused connections,
//! evictions at the memory cap, puts refused because the store is full,
//! accept errors), rate-limited: one `tracing` line per kind per
//! [`WINDOW`], the next saying how many were not printed.
//!
//! It lives here, below the drivers, because the [`Counters`](super::stats::Counters)
//! raise them; `tracing` only hands the events to whatever subscriber the
//! application set up ([`crate::app::log`] is that set-up). The one clock
//! read is the rate limit's own, and only when `warn` is enabled.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
// A static, not a const: Rust 1.88 (the MSRV) refuses a const that points at interior-mutable statics.
static KINDS: [&Limited; 4] = [&REFUSED, &EVICTED, &STORE_FULL, &SERVER_ERROR];

/// One kind of operator condition: printed at most once per [`WINDOW`],
/// the next line saying how many were not.
#[derive(Debug)]
pub struct Limited {
    what: &'static str,
    /// Milliseconds since the rate limit's epoch of the last line printed, plus one (0: never).
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
}
