//! kvio's Linux frontends: five IO models (the four servers of "Many
//! flavors of Networking IO" on rustix and a fifth on io_uring) over one
//! sans-IO server, plus the `kvio` command line (its client
//! commands use the `kvio-client` crate).
//! The folders are the layers, each importing only from those below it:
//!
//! - [`sansio`]: every rule, no IO: [`session`] (one connection: time and
//!   closing), [`sansio::server`] (the set of connections: handles,
//!   admission, client memory and eviction, the stop, timers, counters),
//!   [`memory`], [`stats`].
//! - [`drivers`]: [`blocking`], [`threaded`], [`busy_poll`], [`epoll`],
//!   [`uring`]: each only moves bytes; the single-thread ones share the
//!   [`drivers::Driver`] trait.
//! - [`host`]: [`net`], [`shutdown`] (signals), [`sharded`] (the store),
//!   [`observed`] (the store counted), [`loops`] (any single-thread driver
//!   N times; what every loop keeps, readable while they run).
//! - [`app`]: `log` (levels, the non-loopback warning), `metrics` (the
//!   `/metrics` endpoint), `stats_command` (`kvio stats`), [`cli`] (with `size`, the one rule for byte counts, and
//!   `repl`, what a line of `kvio cli` means), [`config`], and [`serve`] / [`serve_loops`] here,
//!   which pick the driver for a [`Flavor`].

pub mod app;
pub mod drivers;
pub mod host;
pub mod sansio;

// The flat paths of before the layer folders, kept for users of the crate.
pub use app::{cli, config};
pub use drivers::pump as driver;
pub use drivers::{blocking, busy_poll, epoll, threaded, uring};
pub use host::{loops, net, observed, sharded, shutdown};
pub use sansio::{memory, session, stats};

use std::io;

pub use config::{Config, Flavor};
use drivers::blocking::Blocking;
use drivers::busy_poll::BusyPoll;
use drivers::epoll::Epoll;
use drivers::uring::Uring;
use drivers::{Driver, Loop};
use host::observed::Observed;
pub use loops::Loops;
pub use net::Listener;
pub use shutdown::Shutdown;
pub use stats::Stats;

/// Serves `listeners` (one per protocol: each says what its connections
/// speak) with `flavor` until `shutdown` is requested; then answers what
/// was received, closes every connection and returns the totals.
pub fn serve(flavor: Flavor, listeners: Vec<Listener>, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    serve_in(flavor, listeners, config, shutdown, &Loops::new(1, false))
}

/// [`serve`] as the one loop of `loops`, which the caller can read while
/// it runs (`/metrics`): its counters, client memory and store fill.
pub fn serve_in(
    flavor: Flavor,
    listeners: Vec<Listener>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
) -> io::Result<Stats> {
    match flavor {
        Flavor::Blocking => serve_one::<Blocking>(flavor, listeners, config, shutdown, loops),
        Flavor::Threaded => {
            let shared = loops.shared(0, config.max_client_memory);
            let store = config.sharded_store(std::thread::available_parallelism().map_or(1, |n| n.get()));
            let (counters, fill) = (shared.counters, loops.fill());
            let run = Loop { index: 0, limits: config.limits(flavor), shutdown, shared, loops, journal: None };
            threaded::serve(listeners, run, &[], |_| Observed::new(&store, counters, fill))?;
            app::lines::store_line(config, store.len(), store.evictions());
            Ok(loops.totals())
        }
        Flavor::BusyPoll => serve_one::<BusyPoll>(flavor, listeners, config, shutdown, loops),
        Flavor::Epoll => serve_one::<Epoll>(flavor, listeners, config, shutdown, loops),
        Flavor::Uring => serve_one::<Uring>(flavor, listeners, config, shutdown, loops),
    }
}

/// Whether `flavor` runs N loops (`--threads`): every single-thread
/// driver. `blocking` is the article's one-connection model, and
/// `threaded` already serves every connection on its own thread.
pub fn supports_threads(flavor: Flavor) -> bool {
    matches!(flavor, Flavor::BusyPoll | Flavor::Epoll | Flavor::Uring)
}

/// Serves `flavor` with one loop per element of `listeners` (each loop's
/// own listeners, one per protocol, from [`Listener::bind_many`]) until the
/// stop, then returns the totals. One loop serves the plain store, as the
/// single-loop server does; more share a [`ShardedStore`](sharded::ShardedStore).
pub fn serve_loops(
    flavor: Flavor,
    listeners: Vec<Vec<Listener>>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
) -> io::Result<Stats> {
    match flavor {
        Flavor::BusyPoll => loops_of::<BusyPoll>(flavor, listeners, config, shutdown, loops),
        Flavor::Epoll => loops_of::<Epoll>(flavor, listeners, config, shutdown, loops),
        Flavor::Uring => loops_of::<Uring>(flavor, listeners, config, shutdown, loops),
        Flavor::Blocking | Flavor::Threaded => {
            Err(io::Error::new(io::ErrorKind::Unsupported, format!("flavor {flavor} runs a single loop")))
        }
    }
}

/// One loop of driver `D` on the calling thread, as loop 0 of `loops`.
fn serve_one<D: Driver>(
    flavor: Flavor,
    listeners: Vec<Listener>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
) -> io::Result<Stats> {
    let shared = loops.shared(0, config.max_client_memory);
    let run = Loop { index: 0, limits: config.limits(flavor), shutdown, shared, loops, journal: None };
    let mut store = config.store();
    D::serve_loop(listeners, run, Observed::new(&mut store, shared.counters, loops.fill()))?;
    app::lines::store_line(config, store.len(), store.evictions());
    Ok(loops.totals())
}

fn loops_of<D: Driver>(
    flavor: Flavor,
    listeners: Vec<Vec<Listener>>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
) -> io::Result<Stats> {
    let (limits, memory) = (config.limits(flavor), config.max_client_memory);
    if listeners.len() == 1 {
        let store = std::sync::Mutex::new(config.store());
        let stats = loops::run(listeners, limits, memory, shutdown, loops, |listeners, run| {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            D::serve_loop(listeners, run, Observed::new(&mut *store, run.shared.counters, loops.fill()))
        })?;
        let store = store.into_inner().unwrap_or_else(|p| p.into_inner());
        app::lines::store_line(config, store.len(), store.evictions());
        return Ok(stats);
    }
    let store = config.sharded_store(listeners.len());
    let stats = loops::run(listeners, limits, memory, shutdown, loops, |listeners, run| {
        D::serve_loop(listeners, run, Observed::new(&store, run.shared.counters, loops.fill()))
    })?;
    app::lines::store_line(config, store.len(), store.evictions());
    Ok(stats)
}

/// Serves under `--data-dir`: every flavor's loops over `store` (its
/// state already loaded by [`Durability::open`](host::durability::Durability::open)),
/// each loop logging its writes to its journal and holding each turn's
/// answers until their records are durable; a rewrite thread meanwhile.
/// At the stop every loop's log is written and synced, whatever `--fsync`.
pub fn serve_durable(
    flavor: Flavor,
    listeners: Vec<Vec<Listener>>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
    store: &sharded::ShardedStore,
    durability: &host::durability::Durability,
) -> io::Result<Stats> {
    let (limits, memory) = (config.limits(flavor), config.max_client_memory);
    if flavor == Flavor::Threaded {
        return serve_durable_threaded(listeners, config, shutdown, loops, store, durability);
    }
    let stats = std::thread::scope(|scope| {
        let rewrites = std::thread::Builder::new().name("kvio-rewrite".into()).spawn_scoped(scope, || {
            durability.run_rewrites(store, |done| match done {
                Ok((records, bytes)) => {
                    tracing::info!("journal rewritten: a snapshot of {records} entries, {bytes} bytes")
                }
                Err(e) => tracing::warn!("journal rewrite failed: {e}"),
            })
        })?;
        let served = loops::run(listeners, limits, memory, shutdown, loops, |listeners, run| {
            let journal = host::durability::LoopJournal::new(durability, run.index, std::time::Instant::now());
            let run = Loop { journal: Some(&journal), ..run };
            let observed = Observed::new(journal.store(store), run.shared.counters, loops.fill());
            let served = match flavor {
                Flavor::Epoll => Epoll::serve_loop(listeners, run, observed),
                Flavor::Uring => Uring::serve_loop(listeners, run, observed),
                Flavor::BusyPoll => BusyPoll::serve_loop(listeners, run, observed),
                Flavor::Blocking => Blocking::serve_loop(listeners, run, observed),
                other => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "--data-dir: flavor {other} does not persist yet (epoll, uring, busy-poll and blocking do)"
                    ),
                )),
            };
            journal.finish(std::time::Instant::now());
            served
        });
        durability.stop();
        let _ = rewrites.join();
        served
    })?;
    app::lines::store_line(config, store.len(), store.evictions());
    Ok(stats)
}

/// [`serve_durable`] for the threaded flavor: the connection threads
/// share the journals (one per CPU, as the store's loops).
fn serve_durable_threaded(
    listeners: Vec<Vec<Listener>>,
    config: &Config,
    shutdown: &Shutdown,
    loops: &Loops,
    store: &sharded::ShardedStore,
    durability: &host::durability::Durability,
) -> io::Result<Stats> {
    let listeners = listeners.into_iter().flatten().collect();
    let now = std::time::Instant::now();
    let journals: Vec<_> =
        (0..durability.loops()).map(|i| host::durability::LoopJournal::new(durability, i, now)).collect();
    let shared = loops.shared(0, config.max_client_memory);
    let (counters, fill) = (shared.counters, loops.fill());
    let run = Loop { index: 0, limits: config.limits(Flavor::Threaded), shutdown, shared, loops, journal: None };
    let served = std::thread::scope(|scope| {
        let rewrites = std::thread::Builder::new().name("kvio-rewrite".into()).spawn_scoped(scope, || {
            durability.run_rewrites(store, |done| {
                if let Err(e) = done {
                    tracing::warn!("journal rewrite failed: {e}");
                }
            })
        })?;
        let served = threaded::serve(listeners, run, &journals, |journal| {
            let journal = journal.expect("a journal for each connection");
            Observed::new(journal.store(store), counters, fill)
        });
        durability.stop();
        let _ = rewrites.join();
        served
    });
    for journal in &journals {
        journal.finish(std::time::Instant::now());
    }
    served?;
    app::lines::store_line(config, store.len(), store.evictions());
    Ok(loops.totals())
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_client::{Client, Error as ClientError};
    use std::time::Duration;

    /// Every flavor in-process: client put/get, an error frame, then a stop with the right totals.
    fn serves_then_stops(flavor: Flavor) {
        let config = Config { store_entries: 64, store_bytes: 1 << 16, ..Config::for_flavor(flavor) };
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr();
        let shutdown = Shutdown::new().unwrap();
        let stop = shutdown.clone();
        let server = std::thread::spawn(move || serve(flavor, vec![listener], &config, &shutdown));
        let timeout = Duration::from_secs(5);
        {
            let mut client = Client::connect(addr, timeout).unwrap();
            client.put("DiskType", "NVMe SSD").unwrap();
            assert_eq!(client.get("DiskType").unwrap().as_deref(), Some("NVMe SSD"));
            assert_eq!(client.get("absent").unwrap(), None);
        }
        let mut broken = Client::connect(addr, timeout).unwrap();
        broken.send_raw(&[0, 0, 0, 0]).unwrap();
        match broken.read_response() {
            Ok(m) => assert_eq!((m.kind, m.status, m.value.as_str()), (0, 1, "frame length below 5")),
            Err(e) => panic!("{e}"),
        }
        assert!(matches!(broken.read_response(), Err(ClientError::Closed { .. })), "closed after the error frame");
        stop.trigger();
        let stats = server.join().unwrap().unwrap();
        assert_eq!(stats, Stats { connections: 2, requests: 3, errors: 1 });
    }

    #[test]
    fn blocking_serves_then_stops() {
        serves_then_stops(Flavor::Blocking);
    }

    #[test]
    fn threaded_serves_then_stops() {
        serves_then_stops(Flavor::Threaded);
    }

    #[test]
    fn busy_poll_serves_then_stops() {
        serves_then_stops(Flavor::BusyPoll);
    }

    #[test]
    fn epoll_serves_then_stops() {
        serves_then_stops(Flavor::Epoll);
    }

    #[test]
    fn uring_serves_then_stops() {
        // A refused io_uring fails this, unless KVIO_URING_REFUSED says why.
        if uring::runs_here("uring_serves_then_stops") {
            serves_then_stops(Flavor::Uring);
        }
    }
}
