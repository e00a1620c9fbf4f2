//! `--threads N`: N copies of a single-thread flavor's loop, one thread
//! each, each on its own SO_REUSEPORT listener bound to the same address
//! (the kernel spreads connections over them), over one shared
//! [`ShardedStore`](crate::sharded::ShardedStore).
//!
//! What the loops share, and nothing else: the [`Config`], the stop
//! ([`Shutdown`]: one wake-up socket in every loop's epoll set, so one
//! SIGTERM stops them all), the count of open connections ([`Places`]:
//! `--max-connections` is for the whole server), the bytes all connections
//! hold ([`ClientMemory`]: `--max-client-memory` is for the whole server; a
//! loop that finds the total over the cap evicts its own biggest
//! connections) and the store. Each loop
//! keeps its own [`Counters`] (no cache line bounces between cores on the
//! request path); the stopped line is their sum ([`Loops::totals`]).
//!
//! [`run`] is flavor-agnostic: it takes a flavor's per-loop entry point, so
//! a completion flavor (io_uring) gets `--threads` by passing its own. Every
//! flavor has one (`serve_loop`), so every flavor runs as one loop of a
//! [`Loops`] whose figures the metrics thread reads while it runs. Only
//! `epoll` runs several today; the others refuse `--threads` other than 1
//! ([`supports_threads`]): `blocking` and `busy-poll` are the article's
//! single-thread models, and `threaded` already serves every connection on
//! its own thread (it uses the sharded store too, for its shard locks).
//!
//! `--pin` puts loop i on the i-th CPU the process may run on.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::config::{Config, Flavor};
use crate::memory::ClientMemory;
use crate::net::Listener;
use crate::observed::StoreFill;
use crate::shutdown::Shutdown;
use crate::stats::{Counters, Figures, Stats};

/// What one loop is given: its index, what all loops share, and its own counters.
#[derive(Debug, Clone, Copy)]
pub struct Loop<'a> {
    /// 0..N.
    pub index: usize,
    /// The limits.
    pub config: &'a Config,
    /// The stop, shared by every loop.
    pub shutdown: &'a Shutdown,
    /// This loop's counters.
    pub counters: &'a Counters,
    /// Connections open across every loop.
    pub places: &'a Places,
    /// What every connection of every loop holds.
    pub memory: &'a ClientMemory,
    /// How full the store is (one store for every loop).
    pub fill: &'a StoreFill,
}

/// Connections open across every loop, against `--max-connections`.
#[derive(Debug, Default)]
pub struct Places(AtomicUsize);

impl Places {
    /// Takes a place if fewer than `max` are taken.
    pub fn take(&self, max: usize) -> bool {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1)).is_ok()
    }

    /// Gives a place back (a connection taken with [`Places::take`] closed).
    pub fn release(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    /// Places taken.
    pub fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// The state of N loops that outlives them: built before the server
/// starts, readable while it runs (tests see which loop served what),
/// totalled at the end.
#[derive(Debug)]
pub struct Loops {
    counters: Box<[Counters]>,
    places: Places,
    /// Made by [`run`] from the config's cap.
    memory: OnceLock<ClientMemory>,
    fill: StoreFill,
    pin: bool,
}

impl Loops {
    /// `n` loops (at least 1); `pin`: loop i on the i-th allowed CPU.
    pub fn new(n: usize, pin: bool) -> Loops {
        Loops {
            counters: (0..n.max(1)).map(|_| Counters::default()).collect(),
            places: Places::default(),
            memory: OnceLock::new(),
            fill: StoreFill::default(),
            pin,
        }
    }

    /// Loop `i`'s figures so far (for `/metrics`).
    pub fn figures(&self, i: usize) -> Figures {
        self.counters[i].figures()
    }

    /// Bytes all connections hold now, and the cap (0, 0 before the start).
    pub fn client_memory(&self) -> (usize, usize) {
        self.memory.get().map_or((0, 0), |m| (m.total(), m.cap()))
    }

    /// Entries and budget bytes the store holds now.
    pub fn store_fill(&self) -> (u64, u64) {
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

/// Whether `flavor` runs N loops.
pub fn supports_threads(flavor: Flavor) -> bool {
    flavor == Flavor::Epoll
}

/// Serves `flavor` with one loop per listener (from
/// [`Listener::bind_many`]) until the stop, then returns the totals. One
/// loop serves the plain store, as the single-thread flavor does; more
/// share a [`ShardedStore`](crate::sharded::ShardedStore).
pub fn serve(
    flavor: Flavor,
    listeners: Vec<Listener>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
) -> io::Result<Stats> {
    if listeners.len() == 1 {
        return match flavor {
            Flavor::Blocking => run(listeners, config, shutdown, loops, crate::blocking::serve_loop),
            Flavor::Threaded => run(listeners, config, shutdown, loops, crate::threaded::serve_loop),
            Flavor::BusyPoll => run(listeners, config, shutdown, loops, crate::busy_poll::serve_loop),
            Flavor::Uring => run(listeners, config, shutdown, loops, crate::uring::serve_loop),
            Flavor::Epoll => run(listeners, config, shutdown, loops, |listener, run| {
                crate::epoll::serve_loop(listener, run, config.store())
            }),
        };
    }
    if !supports_threads(flavor) {
        return Err(io::Error::new(io::ErrorKind::Unsupported, format!("flavor {flavor} runs a single loop")));
    }
    let store = config.sharded_store(listeners.len());
    run(listeners, config, shutdown, loops, |listener, run| crate::epoll::serve_loop(listener, run, &store))
}

/// One loop of a single-loop server, on this thread: `serve_one` is given
/// a [`Loop`] over fresh counters, and the totals are returned.
pub fn single<F>(listener: Listener, config: &Config, shutdown: &Shutdown, serve_one: F) -> io::Result<Stats>
where
    F: FnOnce(Listener, Loop<'_>) -> io::Result<()>,
{
    let loops = Loops::new(1, false);
    let memory = loops.memory.get_or_init(|| ClientMemory::new(config.max_client_memory));
    let (counters, places, fill) = (&loops.counters[0], &loops.places, &loops.fill);
    serve_one(listener, Loop { index: 0, config, shutdown, counters, places, memory, fill })?;
    Ok(loops.totals())
}

/// Runs `serve_one(listener, loop)` on a thread per listener (pinned if
/// `loops` says so) and waits for them all. If one fails or panics, the
/// stop is requested so the others end too, and the first error returned.
pub fn run<F>(
    listeners: Vec<Listener>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
    serve_one: F,
) -> io::Result<Stats>
where
    F: Fn(Listener, Loop<'_>) -> io::Result<()> + Sync,
{
    assert_eq!(listeners.len(), loops.len(), "one listener per loop");
    let cpus = if loops.pin { allowed_cpus()? } else { Vec::new() };
    let serve_one = &serve_one;
    let memory = loops.memory.get_or_init(|| ClientMemory::new(config.max_client_memory));
    let fill = &loops.fill;
    let result = thread::scope(|scope| {
        let mut first_error = None;
        let mut running = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            let (counters, places) = (&loops.counters[index], &loops.places);
            let run = Loop { index, config, shutdown, counters, places, memory, fill };
            let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
            let spawned = thread::Builder::new().name(format!("kvio-loop-{index}")).spawn_scoped(scope, move || {
                if let Some(cpu) = cpu {
                    pin_current_thread(cpu)?;
                }
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

#[cfg(test)]
mod test {
    use super::*;

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
        let config = Config::for_flavor(Flavor::Epoll);
        let listeners = Listener::bind_many("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let shutdown = Shutdown::new().unwrap();
        let loops = Loops::new(2, false);
        let result = run(listeners, &config, &shutdown, &loops, |listener, run| {
            if run.index == 0 {
                return Err(io::Error::other("loop 0 fails"));
            }
            crate::epoll::serve_loop(listener, run, config.store())
        });
        assert_eq!(result.unwrap_err().to_string(), "loop 0 fails");
        assert!(shutdown.is_requested());
    }

    #[test]
    fn pinned_loops_run_on_their_cpu() {
        let config = Config::for_flavor(Flavor::Epoll);
        let cpus = allowed_cpus().unwrap();
        let n = cpus.len().min(4);
        let listeners = Listener::bind_many("127.0.0.1:0".parse().unwrap(), n).unwrap();
        let shutdown = Shutdown::new().unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        run(listeners, &config, &shutdown, &Loops::new(n, true), |_, run| {
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
