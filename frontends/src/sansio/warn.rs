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
/// Wrong secrets (the line names the peer, never the secret tried).
pub static AUTH_FAILED: Limited = Limited::new("failed authentications");
/// Peers refused by protected mode.
pub static DENIED: Limited = Limited::new("connections refused by protected mode");

/// Every rate-limited kind, for [`flush_suppressed`].
// A static, not a const: Rust 1.88 (the MSRV) refuses a const that points at interior-mutable statics.
static KINDS: [&Limited; 6] = [&REFUSED, &EVICTED, &STORE_FULL, &SERVER_ERROR, &AUTH_FAILED, &DENIED];

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
        self.claim(now_ms).map(|claimed| claimed.take(self))
    }

    /// At `now_ms`: the window, if a line is due and this caller won it;
    /// else counts one more suppressed.
    ///
    /// The count the line states is read *before* the window is claimed,
    /// and only that much is taken off ([`Claimed::take`]): a condition
    /// counted by another thread after it saw the new window (it lost the
    /// claim, or came just after) belongs to the next line or the summary
    /// at exit, never to this one. Taking the whole counter after the
    /// claim (a swap) let the first line of all say "(1 more ...)" for a
    /// condition that came after it.
    fn claim(&self, now_ms: u64) -> Option<Claimed> {
        let last = self.last.load(Ordering::Acquire);
        let window = WINDOW.as_millis() as u64;
        let due = last == 0 || now_ms + 1 >= last + window;
        let before = self.suppressed.load(Ordering::Relaxed);
        // Release: the read of `before` is ordered before the claim, so a
        // thread that sees the claim (Acquire) counts after that read.
        if !due || self.last.compare_exchange(last, now_ms + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Claimed { before })
    }

    /// Lines not printed since the last one.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

/// A window won by [`Limited::claim`], with the count suppressed before it.
#[derive(Debug)]
struct Claimed {
    before: u64,
}

impl Claimed {
    /// The count the line states, taken off `limited`'s counter.
    fn take(self, limited: &Limited) -> u64 {
        // Saturating: the exit's summary may have taken the count meanwhile.
        let _ = limited
            .suppressed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(self.before)));
        self.before
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

    /// The race of issue 27, step by step: a condition counted after a
    /// window was claimed is not in the line of that window.
    #[test]
    fn a_condition_after_the_claim_is_left_for_the_next_line() {
        let limited = Limited::new("test");
        let first = limited.claim(0).expect("the first line is due");
        assert_eq!(limited.admit(1), None, "another thread, just after the claim");
        assert_eq!(first.take(&limited), 0, "the first line states no count");
        assert_eq!(limited.suppressed(), 1, "the other is counted for the next line");
        let second = limited.claim(5_000).expect("a window later");
        assert_eq!(limited.admit(5_001), None);
        assert_eq!(second.take(&limited), 1);
        assert_eq!(limited.suppressed(), 1);
    }

    /// Threads racing for the first window: the line printed states no
    /// count (nothing came before it), and the lines' counts with the
    /// count left for the exit add up to every condition.
    #[test]
    fn the_first_line_states_no_count_and_every_condition_is_counted_once() {
        const THREADS: u64 = 4;
        const EACH: u64 = 20_000;
        for round in 0..20 {
            let limited = Limited::new("test");
            let start = std::sync::Barrier::new(THREADS as usize);
            let lines: Vec<Vec<u64>> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let (limited, start) = (&limited, &start);
                        s.spawn(move || {
                            // One clock for all: the first window, then (once every
                            // thread is done with it) a second at 5 s.
                            start.wait();
                            let mut lines: Vec<u64> = (0..EACH / 2).filter_map(|_| limited.admit(t)).collect();
                            start.wait();
                            lines.extend((0..EACH / 2).filter_map(|_| limited.admit(5_000 + t)));
                            lines
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let printed: Vec<u64> = lines.into_iter().flatten().collect();
            assert_eq!(printed.len(), 2, "round {round}: one line per window: {printed:?}");
            assert!(printed.contains(&0), "round {round}: the first line states no count: {printed:?}");
            let counted = printed.len() as u64 + printed.iter().sum::<u64>() + limited.suppressed();
            assert_eq!(counted, THREADS * EACH, "round {round}: {printed:?} and {} at exit", limited.suppressed());
        }
    }
}
