//! Flavor `threaded`: a thread per connection.
//!
//! - Model: the main thread accepts (it waits in `poll` on the listener
//!   and the stop's wake-up socket; an accept that gave nothing to serve
//!   is counted, and may pause accepting, by the rules of [`Listening`],
//!   which every server follows), admits the connection into a
//!   [`Server`] of its own, and hands both to a new thread that serves it
//!   with blocking IO ([`driver::serve_blocking`]), like the blocking
//!   flavor but without its frame deadline: a client trickling bytes holds
//!   only its own thread. The servers share what every loop of the other
//!   flavors shares: the places (`--max-connections`, the next one is
//!   accepted and closed at once), the client memory, the counters.
//! - Threads: 1 + one per open connection. Each has a
//!   [`STACK_SIZE`] (64 KiB) stack: twice what the deepest path measured
//!   needs (a panic with `RUST_BACKTRACE=1`; figures in
//!   `frontends/README.md`); the kernel only commits the pages touched.
//!   Buffers live on the heap: a 16 KiB read buffer and the output per thread.
//! - Store: the [`ShardedStore`](crate::host::sharded::ShardedStore) (a lock per shard, shards for every CPU
//!   the process may use), instead of one process-wide lock; the handler
//!   takes one shard for one put or get at a time, never across IO.
//! - Client memory: over `--max-client-memory`, the victim is picked over
//!   every thread's connections with the one rule
//!   ([`memory::victim`]): the registry is each server's
//!   [`Elsewhere`]. The victim's thread is woken to evict it, and a
//!   thread whose server [holds](Server::is_holding) reads nothing until
//!   the memory is freed. A thread's read goes into its own buffer; the
//!   hand-over to its server, which may allocate a whole frame and then
//!   charges it, goes at once while the memory has room for every
//!   hand-over under way, and near the cap is one of at most as many at
//!   once as there are CPUs (`Intakes`), the server looking at the cap
//!   inside it. And the
//!   threads share one malloc arena per CPU (`share_malloc_arenas`), so
//!   what one frees the next reuses. So the cap is
//!   passed by at most a frame per CPU, as with one loop per core:
//!   measured, 200 clients holding 1 MiB partial frames against a 64 MiB
//!   cap peak at 76-78 MiB resident (release; 82-83 MiB in debug), where they
//!   reached 98-153 MiB before.
//! - Panics: a connection thread that panics is caught at its top
//!   (`catch_unwind`); its server ends the session as a panic (an error,
//!   logged) and gives back the connection's place and memory. A
//!   shard's lock poisoned by the panic is taken over as it is (a put
//!   either had not begun or could no longer fail), so the other
//!   connections and the server carry on.
//! - Idle: a connection thread sleeps in `recv` until its client sends or
//!   the idle timeout (5 minutes by default) runs out; no periodic wake-up.
//!   The stop reaches it from outside: the accepting thread keeps a
//!   `Registry` of the live connections' sockets and, when the stop is
//!   requested, shuts down each one's reading side, which ends the `recv`;
//!   the thread then answers what it had already received and exits (a
//!   lingering close then reads at the pace the server sets,
//!   [`Server::read_shut`], as its reads can no longer wait).
//!   Registered sockets are `Arc<Entry>`s shared with their thread, so a
//!   descriptor cannot be closed and its number reused while registered.
//!   An idle server makes no wake-up at all.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kvio_core::KeyValueStore;

use crate::drivers::pump::{self as driver, TICK, Waited, Wake};
use crate::drivers::{Loop, handler};
use crate::host::durability::LoopJournal;
use crate::host::net::{self, Accepted, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::memory::{self, ClientMemory, Elsewhere, Room, Share};
use crate::sansio::server::{Handle, Listening, Server};
use crate::sansio::session::End;
use crate::sansio::wire::{Handlers, Protocol};

/// Stack of a connection thread (see the [module docs](self) for the measurement).
pub const STACK_SIZE: usize = 64 * 1024;
/// Bytes read per `recv` by a connection thread.
pub const READ_CHUNK: usize = 16 * 1024;
/// Caps glibc's malloc arenas at `cpus`, as many as loops would have. By
/// default glibc gives threads up to 8 arenas per core, and a big buffer
/// (after the first, a partial frame's megabyte) comes from the arena of
/// the thread that allocated it and stays there when freed, at the top of
/// that arena's heap, for that arena's threads only: at the cap, hundreds
/// of connection threads spread over 16 arenas kept evicted frames
/// resident that no other arena could reuse (about 20 MiB over a 64 MiB
/// cap, measured with 1 MiB frames, and more with longer ones). With one
/// arena per core, what one thread frees the next one reuses. The request
/// path allocates nothing, so the shared arenas' locks are taken only for
/// connections and big frames. (Pinning the mmap threshold instead would
/// unmap every big buffer at every free: 1.3-1.9x the server CPU per
/// request with 300 KB values; malloc_trim leaves non-main arenas' tops.)
fn share_malloc_arenas(cpus: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator, under its
    // own lock. Should it refuse (it returns 0), glibc keeps its default.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, libc::c_int::try_from(cpus.max(1)).unwrap_or(libc::c_int::MAX));
    }
}

/// The connections being served, so that a stop can wake their threads out
/// of `recv` (see the [module docs](self)), and the client-memory cap can
/// take the one holding the most, whichever thread serves it.
#[derive(Debug)]
struct Registry {
    inner: Mutex<Sockets>,
    /// Signalled when client memory was freed (an evicted or ended
    /// connection), a connection was asked to go, or the stop came: what a
    /// thread holding off its reads for room waits for.
    room: Condvar,
    /// The threads taking input at once ([`Wake::intake`]).
    intakes: Intakes,
}

impl Default for Registry {
    fn default() -> Registry {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        Registry { inner: Mutex::default(), room: Condvar::new(), intakes: Intakes::new(cpus) }
    }
}

/// The hand-overs of read input to the connections' servers under way.
/// Between a server's look at the client memory cap and its charge of
/// what the input made its session hold (a whole frame's buffer,
/// allocated by a read of its first bytes), a thread holds memory no
/// other thread sees. With a thread per connection and a few cores,
/// hundreds of threads would be preempted there at once near the cap,
/// each holding a frame, and pass the cap by that many frames. So a
/// hand-over goes at once while every one under way fits under the cap
/// even if each adds the most it can
/// ([`ClientMemory::has_room_for`], the common case: no wait, two atomic
/// operations); near the cap it takes one of `n` turns (a counting
/// semaphore), `n` the number of CPUs: no more run at once anyway, as
/// with one loop per core, and the cap is passed by at most that many
/// hand-overs' growth.
#[derive(Debug)]
struct Intakes {
    /// Hand-overs under way, either way.
    under_way: AtomicUsize,
    free: AtomicUsize,
    /// Threads waiting for a turn (or about to).
    waiting: AtomicUsize,
    lock: Mutex<()>,
    returned: Condvar,
}

impl Intakes {
    fn new(n: usize) -> Intakes {
        Intakes {
            under_way: AtomicUsize::new(0),
            free: AtomicUsize::new(n.max(1)),
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            returned: Condvar::new(),
        }
    }

    fn try_take(&self) -> bool {
        self.free.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |free| free.checked_sub(1)).is_ok()
    }

    /// Runs `f`, which adds at most `growth` bytes to `memory`: at once if
    /// every hand-over under way fits under the cap, else holding one of
    /// the `n` turns (given back if `f` panics).
    fn run(&self, memory: &ClientMemory, growth: usize, f: &mut dyn FnMut()) {
        let _under_way = UnderWay::count(&self.under_way);
        if memory.has_room_for(self.under_way.load(Ordering::SeqCst), growth) {
            return f();
        }
        if !self.try_take() {
            // The waiter counts itself before it looks, and whoever gives a
            // turn back looks at the count after: one of the two sees the other.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let mut lock = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            while !self.try_take() {
                lock = self.returned.wait(lock).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            drop(lock);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        let _turn = Turn(self);
        f();
    }
}

/// A hand-over counted in [`Intakes::under_way`] until dropped (panics included).
struct UnderWay<'a>(&'a AtomicUsize);

impl<'a> UnderWay<'a> {
    fn count(under_way: &'a AtomicUsize) -> UnderWay<'a> {
        under_way.fetch_add(1, Ordering::SeqCst);
        UnderWay(under_way)
    }
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of [`Intakes`]'s turns, given back on drop.
struct Turn<'a>(&'a Intakes);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let intakes = self.0;
        intakes.free.fetch_add(1, Ordering::SeqCst);
        if intakes.waiting.load(Ordering::SeqCst) > 0 {
            // Under the lock, so the waiter is either before its look or asleep.
            let _lock = intakes.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            intakes.returned.notify_one();
        }
    }
}

#[derive(Debug, Default)]
struct Sockets {
    next: u64,
    live: HashMap<u64, Arc<Entry>>,
    /// The stop came: sockets registered from now on are woken at once.
    woken: bool,
}

/// A registered connection: its socket, its memory charge (its server's
/// too), and whether the registry shut its reading side to wake its thread.
#[derive(Debug)]
struct Entry {
    fd: OwnedFd,
    share: Arc<Share>,
    woken: AtomicBool,
}

impl Entry {
    fn new(fd: OwnedFd, share: Arc<Share>) -> Arc<Entry> {
        Arc::new(Entry { fd, share, woken: AtomicBool::new(false) })
    }

    /// Ends the thread's `recv` (reads say end of stream from now on).
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        // ENOTCONN (the peer already reset the connection): its thread is not asleep.
        let _ = net::shutdown_read(self.fd.as_fd());
    }
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
            entry.wake();
        }
        sockets.live.insert(id, Arc::clone(entry));
        Registered { registry: self, id }
    }

    /// Wakes every registered connection (and any registered later).
    fn wake_all(&self) {
        let mut sockets = self.lock();
        sockets.woken = true;
        sockets.live.values().for_each(|entry| entry.wake());
        self.room.notify_all();
    }

    /// Holds a thread while its server holds for room (`holding()`, the
    /// server's rule: the connections asked to go have not freed their
    /// memory yet), until it no longer does or the stop comes, for at
    /// most `limit`. Whatever changes `holding()` notifies `room` under
    /// the lock, so no wake-up is lost between the look and the wait.
    fn wait_for_room(&self, limit: Duration, holding: &dyn Fn() -> bool) {
        let sockets = self.lock();
        let waited = self.room.wait_timeout_while(sockets, limit, |sockets| !sockets.woken && holding());
        drop(waited.unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
}

impl Elsewhere for Registry {
    fn make_room(&self, memory: &ClientMemory, mine: usize) -> bool {
        let sockets = self.lock();
        match memory::make_room(memory, mine, sockets.live.values().map(|entry| (entry, &*entry.share))) {
            Room::EvictMine => false,
            Room::Wait => true,
            Room::Asked(entry) => {
                entry.wake();
                // Its thread may be holding off its reads for room.
                self.room.notify_all();
                true
            }
        }
    }

    fn freed(&self) {
        let _sockets = self.lock();
        self.room.notify_all();
    }
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

/// What a connection thread shares with the others: the registry's [`Wake`].
struct Woken<'a> {
    registry: &'a Registry,
    memory: &'a ClientMemory,
    entry: &'a Entry,
}

impl Wake for Woken<'_> {
    fn read_shut(&self) -> bool {
        self.entry.woken.load(Ordering::Acquire)
    }

    fn wait_for_room(&self, limit: Duration, holding: &dyn Fn() -> bool) {
        self.registry.wait_for_room(limit, holding);
    }

    fn intake(&self, growth: usize, intake: &mut dyn FnMut()) {
        self.registry.intakes.run(self.memory, growth, intake);
    }
}

/// Serves until `run.shutdown` is requested, then waits for every
/// connection thread, with what `run` shares (places, client memory,
/// counters); each connection thread answers from the store `store()`
/// gives it (one shared store, seen through whatever wrapper the caller
/// wants).
///
/// Under `--data-dir`, `journals` are the journals the connection threads
/// share (connection n logs to journal n mod their number, its answers
/// held until its turn is durable there), and `store` is given the one
/// each connection's store logs to; empty: memory only.
pub fn serve<'a, S, F>(
    mut listeners: Vec<Listener>,
    run: Loop<'a>,
    journals: &'a [LoopJournal<'a>],
    store: F,
) -> io::Result<()>
where
    S: KeyValueStore + Send,
    F: Fn(Option<&'a LoopJournal<'a>>) -> S + Sync,
{
    let mut accepted = 0usize;
    let (shutdown, counters) = (run.shutdown, run.shared.counters);
    share_malloc_arenas(thread::available_parallelism().map_or(1, |n| n.get()));
    let registry = Registry::default();
    // The listener's rules; each connection's server has the rest.
    let mut listening = Listening::default();
    for listener in &listeners {
        // A safety net: accept never blocks longer than a tick, should the connection vanish after the poll.
        net::set_timeouts(listener.as_fd(), Some(TICK), None)?;
    }
    thread::scope(|scope| {
        loop {
            let waited =
                driver::wait_for_connection(&listeners, shutdown, listening.is_accepting(), listening.poll_timeout())?;
            let listener = match waited {
                Waited::Connection(i) => &mut listeners[i],
                Waited::Deadline => {
                    listening.handle_timeout(Instant::now());
                    continue;
                }
                Waited::Stop => break,
            };
            let now = Instant::now();
            let protocol = listener.protocol();
            match listener.accept(false) {
                Accepted::Connection(fd, peer) => {
                    // A refusal is counted by the server; dropping `fd` closes it.
                    let journal = (!journals.is_empty()).then(|| &journals[accepted % journals.len()]);
                    accepted = accepted.wrapping_add(1);
                    let handler = handler(&run, store(journal));
                    let Some(admitted) = admit(run, &registry, handler, fd, peer, protocol, journal) else {
                        continue;
                    };
                    let registry = &registry;
                    let spawned = thread::Builder::new()
                        .name("kvio-connection".into())
                        .stack_size(STACK_SIZE)
                        .spawn_scoped(scope, move || connection(admitted, registry, shutdown));
                    if let Err(e) = spawned {
                        // The server went with the closure: its drop gave the place back and counted the end.
                        counters.error(format_args!("cannot start a connection thread: {e}"));
                    }
                }
                Accepted::Nothing => {}
                Accepted::Failed(failure) => listening.failed(failure, now, counters),
            }
        }
        // Stop accepting before the connections finish, then wake the ones asleep in recv.
        drop(listeners);
        registry.wake_all();
        Ok::<(), io::Error>(())
    })
}

/// A connection admitted into a server of its own and registered: what
/// its thread is given.
struct Admitted<'a, H> {
    server: Server<'a, H>,
    handle: Handle,
    entry: Arc<Entry>,
    registered: Registered<'a>,
    journal: Option<&'a LoopJournal<'a>>,
}

/// Admits `fd` from `peer` into a new server sharing `run`'s places,
/// memory and counters (`None`: refused, counted and logged by the server).
fn admit<'a, H: Handlers>(
    run: Loop<'a>,
    registry: &'a Registry,
    handler: H,
    fd: OwnedFd,
    peer: Option<SocketAddr>,
    protocol: Protocol,
    journal: Option<&'a LoopJournal<'a>>,
) -> Option<Admitted<'a, H>> {
    let mut server = Server::new(run.limits, run.shared, handler);
    if journal.is_some() {
        server.hold_answers();
    }
    server.share_memory_with(registry);
    let share = Arc::new(Share::default());
    let handle = server.accept_with(peer, Instant::now(), protocol, Arc::clone(&share)).ok()?;
    let entry = Entry::new(fd, share);
    let registered = registry.register(&entry);
    Some(Admitted { server, handle, entry, registered, journal })
}

/// A connection thread's body: serves the connection until its session
/// closes; a panic is caught here and ends the session.
fn connection<H: Handlers>(admitted: Admitted<'_, H>, registry: &Registry, shutdown: &Shutdown) {
    let Admitted { mut server, handle, entry, registered, journal } = admitted;
    let wake = Woken { registry, memory: server.memory(), entry: &entry };
    let served = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut read = vec![0u8; READ_CHUNK].into_boxed_slice();
        driver::serve_blocking(entry.fd.as_fd(), &mut server, handle, &mut read, shutdown, Some(&wake), journal);
    }));
    if served.is_err() {
        server.abandon(|| End::Panic);
    }
    // The session is over: the socket goes (the registry's reference first), then the handle.
    drop(registered);
    drop(entry);
    server.release(handle);
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::host::loops::Loops;
    use crate::host::sharded::ShardedStore;
    use crate::sansio::server::{Limits, Places, Shared};
    use crate::sansio::session::Clock;
    use crate::sansio::session::{Framing, Timing};
    use crate::sansio::stats::{Counters, Stats};
    use crate::sansio::wire::Protocols;
    use kvio_core::StoreLimits;
    use kvio_core::frame::encode_frame;
    use kvio_core::{Next, Output, OutputFull, Parser};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// What a connection thread borrows, owned by one test.
    struct Fixture {
        limits: Limits,
        shutdown: Shutdown,
        counters: Counters,
        places: Places,
        registry: Registry,
        memory: ClientMemory,
        loops: Loops,
    }

    impl Fixture {
        fn new(idle_timeout: Option<Duration>) -> Self {
            let framing = Framing { max_frame_len: 1 << 20, output_limit: 64 * 1024 };
            Fixture {
                limits: Limits {
                    framing,
                    timing: Timing::new(idle_timeout),
                    clock: Clock::starting(Instant::now(), 0),
                    max_connections: 16,
                },
                shutdown: Shutdown::new().unwrap(),
                counters: Counters::default(),
                places: Places::default(),
                registry: Registry::default(),
                memory: ClientMemory::new(1 << 20),
                loops: Loops::new(1, false),
            }
        }

        /// A small store, for one shard.
        fn store(&self) -> ShardedStore {
            ShardedStore::new(StoreLimits::for_frame(self.limits.framing.max_frame_len, 16, 4096), 1)
        }

        fn run(&self) -> Loop<'_> {
            let shared = Shared {
                places: &self.places,
                memory: &self.memory,
                counters: &self.counters,
                security: &crate::sansio::security::OPEN,
            };
            Loop { index: 0, limits: self.limits, shutdown: &self.shutdown, shared, loops: &self.loops, journal: None }
        }

        /// Admits `fd`, answered by `handler`, and serves it on this thread.
        fn serve<H: Handlers>(&self, fd: OwnedFd, handler: H) {
            let admitted =
                admit(self.run(), &self.registry, handler, fd, None, Protocol::Kvio, None).expect("admitted");
            connection(admitted, &self.registry, &self.shutdown);
        }
    }

    /// Panics on its first request while holding a shard's lock.
    struct Panicking<'a>(&'a ShardedStore);

    impl<P: Parser> kvio_core::Handler<P> for Panicking<'_> {
        fn request<O: Output + ?Sized>(&mut self, _: P::Request<'_>, _: u64, _: &mut O) -> Result<Next, OutputFull> {
            self.0.get(b"k", |_| panic!("injected panic while holding a shard"))
        }

        fn parse_error<O: Output + ?Sized>(&mut self, _: P::Error, _: &mut O) -> Result<(), OutputFull> {
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
        let (registry, shutdown, counters) = (&fixture.registry, &fixture.shutdown, &fixture.counters);
        let store = fixture.store();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let server = OwnedFd::from(listener.accept().unwrap().0);
        let get = KeyValueMessage { key: "k".into(), kind: Kind::Get.into(), ..Default::default() };
        let mut frame = Vec::new();
        encode_frame(&get.encode_to_vec(), &mut frame).unwrap();
        let (done, ended) = mpsc::channel();
        thread::scope(|scope| {
            let fixture = &fixture;
            let done = done.clone();
            thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(scope, move || {
                    fixture.serve(server, Protocols::new(&store));
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
        assert_eq!(fixture.places.taken(), 0, "place given back");
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0, "closed after the stop");
    }

    #[test]
    fn near_the_cap_no_more_intakes_than_turns_at_once_and_a_panic_gives_its_turn_back() {
        let intakes = Intakes::new(2);
        // Full: no hand-over fits, each waits for a turn.
        let full = ClientMemory::new(0);
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..500 {
                        intakes.run(&full, 1, &mut || {
                            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            thread::yield_now();
                            inside.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                });
            }
        });
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "two turns, yet {most} threads inside at once");
        let panicked = panic::catch_unwind(AssertUnwindSafe(|| intakes.run(&full, 1, &mut || panic!("injected"))));
        assert!(panicked.is_err());
        assert_eq!(intakes.free.load(Ordering::SeqCst), 2, "every turn given back");
        assert_eq!(intakes.under_way.load(Ordering::SeqCst), 0, "and counted out");
    }

    #[test]
    fn far_from_the_cap_intakes_go_at_once() {
        let intakes = Intakes::new(1);
        let memory = ClientMemory::new(1000);
        let share = Share::default();
        memory.charge(&share, 500);
        intakes.run(&memory, 250, &mut || {
            assert_eq!(intakes.free.load(Ordering::SeqCst), 1, "no turn taken: 500 + 250 fit under 1000");
            // A second one under way with this one: 500 + 2 x 250 still fit.
            intakes.run(&memory, 250, &mut || {
                assert_eq!(intakes.free.load(Ordering::SeqCst), 1);
                // A third with those two would not (500 + 3 x 200): it takes the one turn.
                intakes.run(&memory, 200, &mut || assert_eq!(intakes.free.load(Ordering::SeqCst), 0));
            });
        });
        assert_eq!(intakes.under_way.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_connection_registered_after_the_stop_is_woken_at_once() {
        let registry = Registry::default();
        registry.wake_all();
        let (client, server) = UnixStream::pair().unwrap();
        let entry = Entry::new(OwnedFd::from(server), Arc::default());
        let registered = registry.register(&entry);
        let mut byte = [0u8; 1];
        assert_eq!(
            net::recv(entry.fd.as_fd(), &mut byte, rustix::net::RecvFlags::DONTWAIT).unwrap(),
            0,
            "reads see the end"
        );
        assert!(entry.woken.load(Ordering::Acquire), "and know it was the server's doing");
        drop(registered);
        assert!(registry.lock().live.is_empty());
        drop(client);
    }

    #[test]
    fn over_the_cap_the_biggest_connection_of_another_thread_is_asked_to_go() {
        let (registry, memory) = (Registry::default(), ClientMemory::new(100));
        let pair = || Entry::new(OwnedFd::from(UnixStream::pair().unwrap().0), Arc::default());
        let (big, small, me) = (pair(), pair(), pair());
        let _registered = [registry.register(&big), registry.register(&small), registry.register(&me)];
        memory.charge(&big.share, 60);
        memory.charge(&small.share, 20);
        assert!(memory.charge(&me.share, 30), "110 held, over 100");
        assert!(registry.make_room(&memory, 30), "the room is made elsewhere");
        assert!(big.share.is_evicting() && big.woken.load(Ordering::Acquire), "the biggest was asked, and woken");
        assert!(!small.share.is_evicting());
        assert!(registry.make_room(&memory, 30), "the one leaving frees enough: nobody else is asked");
        assert!(!small.share.is_evicting() && !me.share.is_evicting());
        memory.charge(&big.share, 0);
        memory.charge(&me.share, 90);
        assert!(!registry.make_room(&memory, 90), "holding the most, it goes itself");
    }

    #[test]
    fn a_panicking_connection_is_counted_and_the_store_stays_usable() {
        let fixture = Fixture::new(Some(Duration::from_secs(300)));
        let store = fixture.store();
        let (client, server) = UnixStream::pair().unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut frame = Vec::new();
        encode_frame(b"anything", &mut frame).unwrap();
        (&client).write_all(&frame).unwrap();
        thread::scope(|scope| {
            let worker = thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(scope, || fixture.serve(OwnedFd::from(server), Panicking(&store)))
                .unwrap();
            assert!(worker.join().is_ok(), "the panic did not escape the thread body");
        });
        assert_eq!(fixture.places.taken(), 0, "place released");
        assert_eq!(fixture.memory.total(), 0, "memory released");
        let figures = fixture.counters.figures();
        assert_eq!((fixture.counters.snapshot().errors, figures.open()), (1, 0), "one error, nothing open");
        let mut rest = Vec::new();
        assert_eq!((&client).read_to_end(&mut rest).unwrap(), 0, "connection closed");
        // The shard's lock did not stay taken.
        store.put(b"k", b"v").unwrap();
        assert_eq!(store.get(b"k", |v| v.map(<[u8]>::to_vec)), Some(b"v".to_vec()));
    }
}
