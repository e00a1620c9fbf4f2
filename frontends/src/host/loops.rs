//! `--threads N`: N copies of a single-thread driver's loop, one thread
//! each, each on its own SO_REUSEPORT listener bound to the same address
//! (the kernel spreads connections over them), over one shared
//! [`ShardedStore`](crate::host::sharded::ShardedStore), the way monoio and
//! glommio run one driver per core.
//!
//! What the loops share, and nothing else: the server's limits, the stop
//! ([`Shutdown`]: one wake-up socket that every loop waits on, so one
//! SIGTERM stops them all), the count of open connections ([`Places`]:
//! `--max-connections` is for the whole server), the bytes all connections
//! hold ([`ClientMemory`]: `--max-client-memory` is for the whole server; a
//! loop that finds the total over the cap evicts its own biggest
//! connections) and the store. Each loop
//! keeps its own [`Counters`] (no cache line bounces between cores on the
//! request path); the stopped line is their sum ([`Loops::totals`]).
//!
//! [`run`] is driver-agnostic: it takes a per-loop entry point (given a
//! [`Loop`]: what one loop is told), in practice `Driver::serve_loop` of
//! any single-thread driver (`epoll`, `busy-poll`, `uring`); the drivers
//! sit above the host and import it, never the other way round.
//!
//! `--pin` puts loop i on the i-th CPU the process may run on.

use std::io;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kvio_core::WhenFull;

use crate::host::durability::{JournalFigures, LoopJournal};
use crate::host::net::Listener;
use crate::host::observed::{Filled, StoreFill};
use crate::host::shutdown::Shutdown;
use crate::sansio::memory::ClientMemory;
use crate::sansio::security::{self, Security};
pub use crate::sansio::server::Places;
use crate::sansio::server::{Limits, Shared};
use crate::sansio::stats::{Counters, Figures, Stats};

/// What one loop is given: its index, its server's limits, the stop, and
/// what it shares with the other loops.
#[derive(Debug, Clone, Copy)]
pub struct Loop<'a> {
    /// 0..N.
    pub index: usize,
    /// Its server's limits.
    pub limits: Limits,
    /// The stop, shared by every loop.
    pub shutdown: &'a Shutdown,
    /// Places, client memory, and this loop's counters.
    pub shared: Shared<'a>,
    /// Every loop's state: what `INFO` and `stats` tell.
    pub loops: &'a Loops,
    /// Under `--data-dir`: this loop's journal. The driver holds the
    /// answers of each turn ([`Server::hold_answers`](crate::sansio::server::Server::hold_answers)),
    /// ends every turn with [`LoopJournal::end_turn`] and releases what it
    /// made durable, and wakes for [`LoopJournal::poll_timeout`].
    pub journal: Option<&'a LoopJournal<'a>>,
}

/// The state of N loops that outlives them: built before the server
/// starts, readable while it runs (tests see which loop served what),
/// totalled at the end.
#[derive(Debug)]
pub struct Loops {
    counters: Box<[Counters]>,
    places: Places,
    /// Made by [`run`] (or [`Loops::shared`]) from the server's cap.
    memory: OnceLock<ClientMemory>,
    fill: StoreFill,
    /// Under `--data-dir`: the journal's figures.
    journal: OnceLock<Arc<JournalFigures>>,
    pin: bool,
    /// What the server was started with (for `INFO` and `stats`).
    description: OnceLock<Description>,
    /// Its start, if [`Loops::describe`] was not called.
    started: Description,
    /// Who may talk to the server (set once, before the loops start).
    security: OnceLock<Security>,
}

impl Loops {
    /// `n` loops (at least 1); `pin`: loop i on the i-th allowed CPU.
    pub fn new(n: usize, pin: bool) -> Loops {
        Loops {
            counters: (0..n.max(1)).map(|_| Counters::default()).collect(),
            places: Places::default(),
            memory: OnceLock::new(),
            fill: StoreFill::default(),
            journal: OnceLock::new(),
            pin,
            description: OnceLock::new(),
            started: Description::now("kvio"),
            security: OnceLock::new(),
        }
    }

    /// Says who may talk to the server (the first call counts; none:
    /// [`security::OPEN`]).
    pub fn secure(&self, security: Security) {
        let _ = self.security.set(security);
    }

    /// Says what the server was started with (the first call counts).
    pub fn describe(&self, description: Description) {
        let _ = self.description.set(description);
    }

    /// What the server was started with.
    pub fn description(&self) -> Description {
        self.description.get().copied().unwrap_or(self.started)
    }

    /// What loop `i` shares with the others (the client memory capped at
    /// `max_client_memory` the first time it is asked).
    pub fn shared(&self, i: usize, max_client_memory: usize) -> Shared<'_> {
        let memory = self.memory.get_or_init(|| ClientMemory::new(max_client_memory));
        let security = self.security.get().unwrap_or(&security::OPEN);
        Shared { places: &self.places, memory, counters: &self.counters[i], security }
    }

    /// Under `--data-dir`: the journal's figures (log size, syncs, rewrites, errors).
    pub fn journal(&self) -> Option<&JournalFigures> {
        self.journal.get().map(|j| &**j)
    }

    /// Under `--data-dir`: the journal whose figures `/metrics` shows.
    pub fn set_journal(&self, figures: Arc<JournalFigures>) {
        let _ = self.journal.set(figures);
    }

    /// The store's figures, kept by whoever wraps the store in
    /// [`Observed`](crate::host::observed::Observed).
    pub fn fill(&self) -> &StoreFill {
        &self.fill
    }

    /// Loop `i`'s figures so far (for `/metrics`).
    pub fn figures(&self, i: usize) -> Figures {
        self.counters[i].figures()
    }

    /// Bytes all connections hold now (0 before the loops start).
    pub fn client_memory(&self) -> usize {
        self.memory.get().map_or(0, ClientMemory::total)
    }

    /// Entries, budget bytes and evictions of the store now.
    pub fn store_fill(&self) -> Filled {
        self.fill.get()
    }

    /// How many loops.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Never: there is at least one loop.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Loop `i`'s counters so far.
    pub fn stats(&self, i: usize) -> Stats {
        self.counters[i].snapshot()
    }

    /// Connections open now, over every loop.
    pub fn open_connections(&self) -> usize {
        self.places.taken()
    }

    /// The sum of every loop's counters.
    pub fn totals(&self) -> Stats {
        self.counters.iter().map(Counters::snapshot).fold(Stats::default(), |a, b| Stats {
            connections: a.connections + b.connections,
            requests: a.requests + b.requests,
            errors: a.errors + b.errors,
        })
    }
}

/// `--threads 0`: one loop per CPU this process may use.
pub fn resolve_threads(threads: usize) -> usize {
    match threads {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Runs `serve_one(listeners, loop)` on a thread per loop (each given its
/// own listeners, one per protocol; pinned if `loops` says so) and waits for
/// them all. If one fails or panics, the stop is requested so the others end
/// too, and the first error returned.
pub fn run<F>(
    listeners: Vec<Vec<Listener>>,
    limits: Limits,
    max_client_memory: usize,
    shutdown: &Shutdown,
    loops: &Loops,
    serve_one: F,
) -> io::Result<Stats>
where
    F: Fn(Vec<Listener>, Loop<'_>) -> io::Result<()> + Sync,
{
    assert_eq!(listeners.len(), loops.len(), "listeners for each loop");
    let cpus = if loops.pin { allowed_cpus()? } else { Vec::new() };
    let serve_one = &serve_one;
    let result = thread::scope(|scope| {
        let mut first_error = None;
        let mut running = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
            let spawned = thread::Builder::new().name(format!("kvio-loop-{index}")).spawn_scoped(scope, move || {
                if let Some(cpu) = cpu {
                    pin_current_thread(cpu)?;
                }
                // Made on the loop's thread: a journal the caller adds stays there.
                let shared = loops.shared(index, max_client_memory);
                let run = Loop { index, limits, shutdown, shared, loops, journal: None };
                serve_one(listener, run)
            });
            match spawned {
                Ok(handle) => running.push(handle),
                Err(e) => {
                    first_error = Some(e);
                    shutdown.trigger();
                    break;
                }
            }
        }
        for (index, handle) in running.into_iter().enumerate() {
            let outcome = handle.join().unwrap_or_else(|_| Err(io::Error::other(format!("loop {index} panicked"))));
            if let Err(e) = outcome {
                // The others would serve on without this loop's listener: stop them too.
                shutdown.trigger();
                first_error.get_or_insert(e);
            }
        }
        first_error
    });
    match result {
        Some(e) => Err(e),
        None => Ok(loops.totals()),
    }
}

fn allowed_cpus() -> io::Result<Vec<usize>> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    let set = sched_getaffinity(None)?;
    Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

fn pin_current_thread(cpu: usize) -> io::Result<()> {
    use rustix::thread::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    set.set(cpu);
    Ok(sched_setaffinity(None, &set)?)
}

/// What a server was started with, for `INFO` and `stats`.
#[derive(Debug, Clone, Copy)]
pub struct Description {
    /// The IO model's name.
    pub flavor: &'static str,
    /// When it started.
    pub started: Instant,
    /// Its start as a Unix time in seconds.
    pub started_unix: u64,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--store-entries`.
    pub store_entries: usize,
    /// `--store-bytes`.
    pub store_bytes: usize,
    /// `--when-full`.
    pub when_full: WhenFull,
}

impl Description {
    /// Started now (reads the clocks: the application's to call).
    pub fn now(flavor: &'static str) -> Description {
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Description {
            flavor,
            started: Instant::now(),
            started_unix,
            max_connections: 0,
            store_entries: 0,
            store_bytes: 0,
            when_full: WhenFull::Refuse,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    use crate::sansio::session::{Clock, Framing, Timing};
    use std::time::Instant;

    /// Limits for loops that serve nobody: [`run`] only hands them on.
    fn limits() -> Limits {
        let framing = Framing { max_frame_len: 1 << 20, output_limit: 64 * 1024 };
        Limits { framing, timing: Timing::new(None), clock: Clock::starting(Instant::now(), 0), max_connections: 16 }
    }

    /// Each loop's listeners: one each.
    fn one_each(n: usize) -> Vec<Vec<Listener>> {
        let listeners = Listener::bind_many("127.0.0.1:0".parse().unwrap(), n).unwrap();
        listeners.into_iter().map(|l| vec![l]).collect()
    }

    #[test]
    fn places_are_counted_against_the_limit() {
        let places = Places::default();
        assert!(places.take(2));
        assert!(places.take(2));
        assert!(!places.take(2), "full");
        assert_eq!(places.taken(), 2);
        places.release();
        assert!(places.take(2));
        assert!(!places.take(0));
    }

    #[test]
    fn threads_zero_is_one_loop_per_cpu() {
        assert_eq!(resolve_threads(0), thread::available_parallelism().unwrap().get());
        assert_eq!(resolve_threads(3), 3);
    }

    #[test]
    fn a_failing_loop_stops_the_others() {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let listeners = one_each(2);
        let shutdown = Shutdown::new().unwrap();
        let loops = Loops::new(2, false);
        let result = run(listeners, limits(), 1 << 20, &shutdown, &loops, |_, run| {
            if run.index == 0 {
                return Err(io::Error::other("loop 0 fails"));
            }
            // Loop 1 serves until the stop, as a driver's loop does: it
            // ends only if loop 0's failure requested it (or after 10 s).
            let mut wake = [PollFd::from_borrowed_fd(run.shutdown.wake_fd(), PollFlags::IN)];
            let ten_seconds = Timespec { tv_sec: 10, tv_nsec: 0 };
            while !run.shutdown.is_requested() {
                if rustix::event::poll(&mut wake, Some(&ten_seconds))? == 0 {
                    return Err(io::Error::other("loop 1 was never stopped"));
                }
            }
            Ok(())
        });
        assert_eq!(result.unwrap_err().to_string(), "loop 0 fails");
        assert!(shutdown.is_requested());
    }

    #[test]
    fn pinned_loops_run_on_their_cpu() {
        let cpus = allowed_cpus().unwrap();
        let n = cpus.len().min(4);
        let listeners = one_each(n);
        let shutdown = Shutdown::new().unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        run(listeners, limits(), 1 << 20, &shutdown, &Loops::new(n, true), |_, run| {
            let set = rustix::thread::sched_getaffinity(None)?;
            let mine: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect();
            seen.lock().unwrap().push((run.index, mine));
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let expected: Vec<(usize, Vec<usize>)> = (0..n).map(|i| (i, vec![cpus[i]])).collect();
        assert_eq!(seen, expected);
    }
}
