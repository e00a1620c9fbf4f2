//! Flavor `threaded`: a thread per connection.
//!
//! - Model: the main thread accepts (it waits in `poll` on the listener
//!   and the stop's wake-up socket) and hands each connection to a new
//!   thread that serves it with blocking IO ([`driver::run_blocking`]),
//!   like the blocking flavor but without its frame deadline: a client
//!   trickling bytes holds only its own thread.
//! - Threads: 1 + one per open connection, bounded by `--max-connections`
//!   (the next one is accepted and closed at once). Each has a
//!   [`STACK_SIZE`] (64 KiB) stack: twice what the deepest path measured
//!   needs (a panic with `RUST_BACKTRACE=1`; figures in
//!   `frontends/README.md`); the kernel only commits the pages touched.
//!   Buffers live on the heap: a 16 KiB read buffer and the output per thread.
//! - Store: the [`ShardedStore`](crate::sharded::ShardedStore) (a lock per shard, shards for every CPU
//!   the process may use), instead of one process-wide lock; the handler
//!   takes one shard for one put or get at a time, never across IO.
//! - Panics: a connection thread that panics is caught at its top
//!   (`catch_unwind`), counted as an error and logged; a shard's lock
//!   poisoned by the panic is taken over as it is (a put either had not
//!   begun or could no longer fail), so the other connections and the
//!   server carry on.
//! - Idle: a connection thread sleeps in `recv` until its client sends or
//!   the idle timeout (5 minutes by default) runs out; no periodic wake-up.
//!   The stop reaches it from outside: the accepting thread keeps a
//!   `Registry` of the live connections' sockets and, when the stop is
//!   requested, shuts down each one's reading side, which ends the `recv`;
//!   the thread then answers what it had already received and exits.
//!   Registered sockets are `Arc<OwnedFd>` shared with their thread, so a
//!   descriptor cannot be closed and its number reused while registered.
//!   An idle server makes no wake-up at all.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kvio_core::{Handler, KeyValueStore};
use kvio_proto::KeyValueHandler;

use crate::app::config::{Config, Flavor};
use crate::drivers::pump::{self as driver, BlockingServer, ReadWait, Scratch, TICK};
use crate::host::net::{self, Accepted, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::memory::{self, ClientMemory, Share};
use crate::sansio::session::{End, Session};
use crate::sansio::stats::{Counters, Stats};

/// Stack of a connection thread (see the [module docs](self) for the measurement).
pub const STACK_SIZE: usize = 64 * 1024;
/// Bytes read per `recv` by a connection thread.
pub const READ_CHUNK: usize = 16 * 1024;

/// What every connection thread shares.
struct Context<'a> {
    config: &'a Config,
    shutdown: &'a Shutdown,
    counters: &'a Counters,
    /// Connection threads running.
    active: &'a AtomicUsize,
    registry: &'a Registry,
    memory: &'a ClientMemory,
}

/// The connections being served, so that a stop can wake their threads out
/// of `recv` (see the [module docs](self)), and the client-memory cap can
/// evict the one holding the most, whichever thread serves it.
#[derive(Debug, Default)]
struct Registry {
    inner: Mutex<Sockets>,
    /// Signalled when client memory was freed (an evicted or ended
    /// connection), a connection was asked to go, or the stop came: what a
    /// thread holding off its reads for room waits for.
    room: Condvar,
}

#[derive(Debug, Default)]
struct Sockets {
    next: u64,
    live: HashMap<u64, Arc<Entry>>,
    /// The stop came: sockets registered from now on are woken at once.
    woken: bool,
}

/// A registered connection: its socket and its memory charge.
#[derive(Debug)]
struct Entry {
    fd: OwnedFd,
    share: Share,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Sockets> {
        // The map stays consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `entry` until the returned guard is dropped.
    fn register(&self, entry: &Arc<Entry>) -> Registered<'_> {
        let mut sockets = self.lock();
        let id = sockets.next;
        sockets.next += 1;
        if sockets.woken {
            wake(entry);
        }
        sockets.live.insert(id, Arc::clone(entry));
        Registered { registry: self, id }
    }

    /// Wakes every registered connection (and any registered later).
    fn wake_all(&self) {
        let mut sockets = self.lock();
        sockets.woken = true;
        sockets.live.values().for_each(|entry| wake(entry));
        self.room.notify_all();
    }

    /// Holds `me`'s thread (which reads nothing meanwhile) while every
    /// connection together holds more than the cap because the ones asked
    /// to go have not freed their memory yet: until they have, `me` is
    /// asked to go itself or the stop comes, for at most `limit`. Without
    /// it, 200 threads on 2 cores read on while the victims wait for a
    /// CPU, and the server held half again its cap.
    fn wait_for_room(&self, memory: &ClientMemory, me: &Share, limit: Duration) {
        let sockets = self.lock();
        let waited = self
            .room
            .wait_timeout_while(sockets, limit, |sockets| !sockets.woken && !me.is_evicting() && memory.is_over());
        drop(waited.unwrap_or_else(|poisoned| poisoned.into_inner()));
    }

    /// Client memory was freed: the threads holding off their reads look again.
    fn freed(&self) {
        let _sockets = self.lock();
        self.room.notify_all();
    }

    /// `me`'s charge took the total over the cap: true if `me` holds the
    /// most and must go itself (at once, in its own thread). Otherwise asks
    /// the connection charged the most to go and wakes its thread, unless
    /// the evictions already asked for free enough: their threads act a
    /// moment later, and every charge over the cap meanwhile would
    /// otherwise evict one more connection, down to well-behaved ones.
    fn evict_biggest(&self, memory: &ClientMemory, me: &Share) -> bool {
        let sockets = self.lock();
        if sockets.live.values().all(|e| e.share.held() <= me.held()) {
            return true;
        }
        let leaving: usize = sockets.live.values().filter(|e| e.share.is_evicting()).map(|e| e.share.held()).sum();
        if memory.total().saturating_sub(leaving) <= memory.cap() {
            return false;
        }
        // The one victim rule, over every thread's connections.
        let staying = sockets.live.values().filter(|e| !e.share.is_evicting()).map(|e| (e, e.share.held()));
        match memory::victim(staying) {
            Some(biggest) if biggest.share.held() > me.held() => {
                biggest.share.ask_to_evict();
                wake(biggest);
                // Its thread may be holding off its reads for room.
                self.room.notify_all();
                false
            }
            _ => true,
        }
    }
}

fn wake(entry: &Entry) {
    // ENOTCONN (the peer already reset the connection): its thread is not asleep.
    let _ = net::shutdown_read(entry.fd.as_fd());
}

/// A registered socket; unregisters on drop, panics included.
struct Registered<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
        // Its memory is free now (its charge went back to 0 before).
        self.registry.room.notify_all();
    }
}

/// Serves until `shutdown` is requested, then waits for every connection thread.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    let counters = Counters::default();
    let memory = ClientMemory::new(config.max_client_memory);
    let store = config.sharded_store(thread::available_parallelism().map_or(1, |n| n.get()));
    serve_with(listener, config, shutdown, (&counters, &memory), || &store)?;
    Ok(counters.snapshot())
}

/// [`serve`] counting into `counters`, charging `memory`, each connection
/// thread answering from the store `store()` gives it (one shared store,
/// seen through whatever wrapper the caller wants).
pub fn serve_with<S, F>(
    mut listener: Listener,
    config: &Config,
    shutdown: &Shutdown,
    (counters, memory): (&Counters, &ClientMemory),
    store: F,
) -> io::Result<()>
where
    S: KeyValueStore,
    F: Fn() -> S + Sync,
{
    let active = AtomicUsize::new(0);
    let registry = Registry::default();
    let ctx = Context { config, shutdown, counters, active: &active, registry: &registry, memory };
    // A safety net: accept never blocks longer than a tick, should the connection vanish after the poll.
    net::set_timeouts(listener.as_fd(), Some(TICK), None)?;
    thread::scope(|scope| {
        while driver::wait_for_connection(&listener, shutdown)? {
            match listener.accept(false) {
                Ok(Accepted::Connection(fd, peer)) => {
                    if active.load(Ordering::Acquire) >= config.max_connections {
                        counters.refused(peer, format_args!("max connections ({}) reached", config.max_connections));
                        continue;
                    }
                    active.fetch_add(1, Ordering::AcqRel);
                    let (ctx, store) = (&ctx, &store);
                    let spawned = thread::Builder::new()
                        .name("kvio-connection".into())
                        .stack_size(STACK_SIZE)
                        .spawn_scoped(scope, move || connection(fd, peer, ctx, KeyValueHandler::new(store())));
                    if let Err(e) = spawned {
                        active.fetch_sub(1, Ordering::AcqRel);
                        counters.refused(peer, format_args!("cannot start a thread: {e}"));
                    }
                }
                Ok(Accepted::Refused(e)) => counters.refused(None, format_args!("out of file descriptors: {e}")),
                Ok(Accepted::Nothing) => {}
                Err(e) => driver::accept_failed(counters, &e),
            }
        }
        // Stop accepting before the connections finish, then wake the ones asleep in recv.
        drop(listener);
        registry.wake_all();
        Ok::<(), io::Error>(())
    })
}

/// A connection thread's body: serves `fd` and counts how it ended, panics included.
fn connection<H: Handler>(fd: OwnedFd, peer: Option<SocketAddr>, ctx: &Context<'_>, mut handler: H) {
    let entry = Arc::new(Entry { fd, share: Share::default() });
    // Declared after `entry`: dropped first, so the registry's clone goes before the thread's.
    let _registered = ctx.registry.register(&entry);
    /// Frees the thread's place even if serving panics.
    struct Place<'a>(&'a AtomicUsize);
    impl Drop for Place<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _place = Place(ctx.active);
    ctx.counters.connection();
    let served = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut scratch = Scratch::new(READ_CHUNK);
        let limits = ctx.config.limits(Flavor::Threaded);
        let mut session = Session::new(limits.framing, limits.timing, Instant::now());
        let evict_biggest = || ctx.registry.evict_biggest(ctx.memory, &entry.share);
        let wait_for_room = |limit| ctx.registry.wait_for_room(ctx.memory, &entry.share, limit);
        let freed = || ctx.registry.freed();
        let server = BlockingServer {
            wait: ReadWait::UntilWoken,
            shutdown: ctx.shutdown,
            counters: ctx.counters,
            memory: ctx.memory,
            share: &entry.share,
            evict_biggest: &evict_biggest,
            wait_for_room: &wait_for_room,
            freed: &freed,
        };
        driver::run_blocking(entry.fd.as_fd(), &mut session, &server, &mut scratch, &mut handler)
    }));
    // A panic skipped the session's own release.
    ctx.memory.charge(&entry.share, 0);
    ctx.counters.ended(peer, &served.unwrap_or(End::Panic));
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::host::sharded::ShardedStore;
    use kvio_core::frame::{FrameError, encode_frame};
    use kvio_core::{Output, OutputFull};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// What a connection thread borrows, owned by one test.
    struct Fixture {
        config: Config,
        shutdown: Shutdown,
        counters: Counters,
        active: AtomicUsize,
        registry: Registry,
        memory: ClientMemory,
    }

    impl Fixture {
        /// A small store, one connection counted as running.
        fn new(idle_timeout: Option<Duration>) -> Self {
            let config =
                Config { idle_timeout, store_entries: 16, store_bytes: 4096, ..Config::for_flavor(Flavor::Threaded) };
            Fixture {
                config,
                shutdown: Shutdown::new().unwrap(),
                counters: Counters::default(),
                active: AtomicUsize::new(1),
                registry: Registry::default(),
                memory: ClientMemory::new(1 << 20),
            }
        }

        fn ctx(&self) -> Context<'_> {
            Context {
                config: &self.config,
                shutdown: &self.shutdown,
                counters: &self.counters,
                active: &self.active,
                registry: &self.registry,
                memory: &self.memory,
            }
        }
    }

    /// Panics on its first request while holding a shard's lock.
    struct Panicking<'a>(&'a ShardedStore);

    impl Handler for Panicking<'_> {
        fn request<O: Output + ?Sized>(&mut self, _: &[u8], _: &mut O) -> Result<(), OutputFull> {
            self.0.get(b"k", |_| panic!("injected panic while holding a shard"))
        }

        fn framing_error<O: Output + ?Sized>(&mut self, _: FrameError, _: &mut O) -> Result<(), OutputFull> {
            Ok(())
        }
    }

    #[test]
    fn a_stop_wakes_a_thread_asleep_in_recv_without_any_timeout() {
        use kvio_proto::{KeyValueMessage, Kind};
        use prost::Message;
        use std::net::{TcpListener, TcpStream};
        use std::sync::mpsc;
        // No idle timeout: only the registry's wake-up can end the thread's recv.
        let fixture = Fixture::new(None);
        let (ctx, registry, shutdown, counters) =
            (fixture.ctx(), &fixture.registry, &fixture.shutdown, &fixture.counters);
        let store = fixture.config.sharded_store(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let server = OwnedFd::from(listener.accept().unwrap().0);
        let get = KeyValueMessage { key: "k".into(), kind: Kind::Get.into(), ..Default::default() };
        let mut frame = Vec::new();
        encode_frame(&get.encode_to_vec(), &mut frame).unwrap();
        let (done, ended) = mpsc::channel();
        thread::scope(|scope| {
            let ctx = &ctx;
            let done = done.clone();
            thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(scope, move || {
                    connection(server, None, ctx, KeyValueHandler::new(&store));
                    done.send(()).unwrap();
                })
                .unwrap();
            client.write_all(&frame).unwrap();
            let mut response = [0u8; 64];
            let n = client.read(&mut response).unwrap();
            assert!(n > 9, "answered before the stop");
            assert_eq!(registry.lock().live.len(), 1);
            // The thread is back in recv with no timeout: it would sleep for ever.
            assert!(ended.recv_timeout(Duration::from_millis(200)).is_err(), "ended on its own");
            shutdown.trigger();
            registry.wake_all();
            let woken = ended.recv_timeout(Duration::from_secs(5)).is_ok();
            if !woken {
                // Let the scope join the thread instead of hanging: the peer's close ends its recv.
                client.shutdown(std::net::Shutdown::Both).unwrap();
            }
            assert!(woken, "the stop did not wake the thread");
        });
        assert_eq!(registry.lock().live.len(), 0, "unregistered");
        assert_eq!(counters.snapshot(), Stats { connections: 1, requests: 1, errors: 0 });
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0, "closed after the stop");
    }

    #[test]
    fn a_connection_registered_after_the_stop_is_woken_at_once() {
        let registry = Registry::default();
        registry.wake_all();
        let (client, server) = UnixStream::pair().unwrap();
        let entry = Arc::new(Entry { fd: OwnedFd::from(server), share: Share::default() });
        let registered = registry.register(&entry);
        let mut byte = [0u8; 1];
        assert_eq!(
            net::recv(entry.fd.as_fd(), &mut byte, rustix::net::RecvFlags::DONTWAIT).unwrap(),
            0,
            "reads see the end"
        );
        drop(registered);
        assert!(registry.lock().live.is_empty());
        drop(client);
    }

    #[test]
    fn a_panicking_connection_is_counted_and_the_store_stays_usable() {
        let fixture = Fixture::new(Some(Duration::from_secs(300)));
        let (ctx, active, counters) = (fixture.ctx(), &fixture.active, &fixture.counters);
        let store = fixture.config.sharded_store(1);
        let (client, server) = UnixStream::pair().unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut frame = Vec::new();
        encode_frame(b"anything", &mut frame).unwrap();
        (&client).write_all(&frame).unwrap();
        thread::scope(|scope| {
            let worker = thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(scope, || connection(OwnedFd::from(server), None, &ctx, Panicking(&store)))
                .unwrap();
            assert!(worker.join().is_ok(), "the panic did not escape the thread body");
        });
        assert_eq!(active.load(Ordering::Acquire), 0, "place released");
        assert_eq!(counters.snapshot().errors, 1);
        let mut rest = Vec::new();
        assert_eq!((&client).read_to_end(&mut rest).unwrap(), 0, "connection closed");
        // The shard's lock did not stay taken.
        store.put(b"k", b"v").unwrap();
        assert_eq!(store.get(b"k", |v| v.map(<[u8]>::to_vec)), Some(b"v".to_vec()));
    }
}
