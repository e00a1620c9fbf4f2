//! What every soak thread reports into: counters, the first failures in
//! words, and the flag that ends the run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Failures kept in words (the count goes on past it).
const FAILURES_KEPT: usize = 20;

/// The counters of one soak run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers compared with what the protocol and the model say.
    pub answers_checked: AtomicU64,
    /// Answers that differed, or responses that broke the wire format.
    pub wrong_answers: AtomicU64,
    /// Honest requests still unanswered when the server closed their connection.
    pub honest_cut: AtomicU64,
    /// Honest connections closed by the server (memory cap, idle timeout).
    pub honest_disconnects: AtomicU64,
    /// Honest requests that got no answer within the bound, the server still up.
    pub honest_stalls: AtomicU64,
    /// Connections closed with the client-memory error frame.
    pub memory_evictions: AtomicU64,
    /// Hostile connections made, all kinds together.
    pub hostile_connections: AtomicU64,
    /// Hostile episodes run, by kind (`hostile::Kind as usize`).
    pub hostile_episodes: [AtomicU64; 16],
    /// Hostile bytes sent.
    pub hostile_bytes: AtomicU64,
    /// Fresh-client probes answered, and those over the bound or failed.
    pub probes: AtomicU64,
    pub probe_failures: AtomicU64,
    /// The slowest probe, in microseconds.
    pub probe_worst_us: AtomicU64,
    failures: Mutex<(u64, Vec<String>)>,
    stop: AtomicBool,
}

impl Tally {
    pub fn checked(&self) {
        self.answers_checked.fetch_add(1, Relaxed);
    }

    /// A wrong answer: counted, and kept in words if among the first.
    pub fn wrong(&self, what: String) {
        self.wrong_answers.fetch_add(1, Relaxed);
        self.fail(what);
    }

    /// Any failed check, in words.
    pub fn fail(&self, what: String) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.0 += 1;
        if failures.1.len() < FAILURES_KEPT {
            failures.1.push(what);
        }
    }

    pub fn failures(&self) -> (u64, Vec<String>) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Sleeps `d`, in short steps so a stop is seen at once; false if stopping.
    pub fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stopping() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }
}
