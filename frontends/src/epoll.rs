//! Flavor `epoll`: one thread, non-blocking sockets, an epoll event loop.
//!
//! - Model: level-triggered epoll over the listener, the shutdown wake-up
//!   socket and every connection. `match token { LISTENER => accept until
//!   EAGAIN, SHUTDOWN => stop, token => serve(token) }`. Serving is one
//!   [`driver::pump`] of the connection's [`Session`]; its interest is read
//!   while the session [wants to read](Session::wants_read) (not under
//!   back-pressure) and write only while a write is pending.
//! - Time: the loop sleeps in `epoll_wait` until the earliest deadline it
//!   knows of ([`Session::poll_timeout`] of each session it served), and
//!   then sweeps every session's [`Session::handle_timeout`]. A deadline
//!   that moved later (the connection was active) costs one early sweep.
//! - Tokens: connections live in a `Slab`; a token is the slot's index and
//!   its generation, bumped when the slot is freed, so an event queued for
//!   a connection that closed in the same batch (whose fd number may already
//!   be reused) finds a different generation and is dropped.
//! - Threads: 1 per loop; `--threads N` runs N of these loops
//!   ([`crate::loops`]), each with its own SO_REUSEPORT listener, over a
//!   shared sharded store, sharing the connection limit, the client-memory
//!   count and the stop.
//! - Memory: an idle connection holds no user-space buffer, only its slab
//!   entry: reads go into one 64 KiB buffer per loop, and responses into an
//!   output buffer borrowed from the loop while they are unsent.
//! - Limits: `--max-connections`, counted across every loop (the next one
//!   is accepted and closed at once); `--max-client-memory`, counted across
//!   every loop too (a loop that sees the total over the cap evicts its own
//!   biggest connections); EMFILE on accept closes that connection with a
//!   spare descriptor, or if even that fails pauses accepting for 100 ms instead
//!   of spinning on a listener that stays readable; an fd is removed from
//!   epoll before it is closed.
//! - Stop: the listener closes, every session [begins its
//!   shutdown](Session::begin_shutdown) and the loop goes on until the last
//!   one has closed (idle ones at once, the others within grace + linger).
//! - Syscalls: per wake-up one `epoll_wait` and one clock read (vDSO); per
//!   ready connection one `recvfrom` (a short read means drained) and one
//!   `sendto` for all its answers; `epoll_ctl` only when a connection's
//!   interest changes. Measured figures: `frontends/README.md`.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use kvio_core::KeyValueStore;
use kvio_proto::KeyValueHandler;
use rustix::buffer::spare_capacity;
use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use crate::config::Config;
use crate::driver::{self, Conn, READ_CHUNK, Scratch};
use crate::loops::{self, Loop, Places};
use crate::memory::ClientMemory;
use crate::net::{self, Accepted, Listener};
use crate::observed::{Fill, Observed};
use crate::session::{Phase, Session, Timing};
use crate::shutdown::Shutdown;
use crate::stats::{Counters, Stats};

/// The listening socket's token.
const LISTENER: u64 = u64::MAX;
/// The shutdown wake-up socket's token.
const SHUTDOWN: u64 = u64::MAX - 1;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;
/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// One connection.
#[derive(Debug)]
struct Client {
    conn: Conn,
    interest: EventFlags,
}

#[derive(Debug, Default)]
struct Entry {
    generation: u32,
    client: Option<Client>,
}

/// Connections by token: slot index in the low 32 bits, the slot's
/// generation in the high 32 bits.
#[derive(Debug, Default)]
struct Slab {
    entries: Vec<Entry>,
    free: Vec<u32>,
    len: usize,
}

impl Slab {
    /// Most slots: the two top indexes would collide with [`LISTENER`] and [`SHUTDOWN`].
    const MAX_SLOTS: usize = u32::MAX as usize - 1;

    fn token(index: u32, generation: u32) -> u64 {
        (u64::from(generation) << 32) | u64::from(index)
    }

    fn split(token: u64) -> (usize, u32) {
        ((token & u64::from(u32::MAX)) as usize, (token >> 32) as u32)
    }

    /// The token the next [`Slab::insert`] will use.
    fn vacant_token(&self) -> Option<u64> {
        match self.free.last() {
            Some(&index) => Some(Self::token(index, self.entries[index as usize].generation)),
            None if self.entries.len() < Self::MAX_SLOTS => Some(Self::token(self.entries.len() as u32, 0)),
            None => None,
        }
    }

    fn insert(&mut self, client: Client) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry::default());
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.client = Some(client);
        self.len += 1;
        Self::token(index, entry.generation)
    }

    fn get_mut(&mut self, token: u64) -> Option<&mut Client> {
        let (index, generation) = Self::split(token);
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        entry.client.as_mut()
    }

    fn remove(&mut self, token: u64) -> Option<Client> {
        let (index, generation) = Self::split(token);
        let entry = self.entries.get_mut(index)?;
        if entry.generation != generation {
            return None;
        }
        let client = entry.client.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        Some(client)
    }

    /// The token of slot `index`, if a connection lives there.
    fn token_at(&self, index: usize) -> Option<u64> {
        let entry = self.entries.get(index)?;
        entry.client.as_ref().map(|_| Self::token(index as u32, entry.generation))
    }
}

/// The interest a session needs now.
fn interest(session: &Session) -> EventFlags {
    let mut flags = EventFlags::empty();
    if session.wants_read() {
        flags |= EventFlags::IN;
    }
    if session.wants_write() {
        flags |= EventFlags::OUT;
    }
    flags
}

struct Server<'a, S> {
    config: &'a Config,
    timing: Timing,
    epoll: OwnedFd,
    /// `None` once stopping.
    listener: Option<Listener>,
    listener_paused_until: Option<Instant>,
    slab: Slab,
    handler: KeyValueHandler<Observed<'a, S>>,
    scratch: Scratch,
    counters: &'a Counters,
    /// Connections open across every loop of the server.
    places: &'a Places,
    /// What every connection of every loop holds, against `--max-client-memory`.
    memory: &'a ClientMemory,
    /// The earliest session deadline seen since the last sweep (maybe
    /// earlier than any real one: deadlines only move later).
    next_sweep: Option<Instant>,
}

/// Serves until `shutdown` is requested and every connection has closed.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    loops::single(listener, config, shutdown, |listener, run| serve_loop(listener, run, config.store()))
}

/// One loop of a server over `store`, counting into `run.counters`:
/// returns once `run.shutdown` is requested and its last connection has closed.
pub fn serve_loop<S: KeyValueStore + Fill>(listener: Listener, run: Loop<'_>, store: S) -> io::Result<()> {
    let (config, shutdown) = (run.config, run.shutdown);
    net::set_nonblocking(listener.as_fd(), true)?;
    let epoll = epoll::create(CreateFlags::CLOEXEC)?;
    epoll::add(&epoll, &listener, EventData::new_u64(LISTENER), EventFlags::IN)?;
    epoll::add(&epoll, shutdown.wake_fd(), EventData::new_u64(SHUTDOWN), EventFlags::IN)?;
    let mut server = Server {
        config,
        timing: Timing::new(config),
        epoll,
        listener: Some(listener),
        listener_paused_until: None,
        slab: Slab::default(),
        handler: KeyValueHandler::new(Observed::new(store, run.counters, run.fill)),
        scratch: Scratch::new(READ_CHUNK),
        counters: run.counters,
        places: run.places,
        memory: run.memory,
        next_sweep: None,
    };
    let mut events: Vec<Event> = Vec::with_capacity(EVENTS_PER_WAIT);
    let mut now = Instant::now();
    if shutdown.is_requested() {
        server.begin_shutdown(shutdown, now);
    }
    while server.listener.is_some() || server.slab.len > 0 {
        let wake_at = [server.next_sweep, server.listener_paused_until].into_iter().flatten().min();
        // From the clock read after the last wait: a deadline is at most one
        // batch's work late, and a wake-up reads the clock once, not twice.
        let timeout = wake_at.map(|at| {
            let wait = at.saturating_duration_since(now);
            Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ }
        });
        match epoll::wait(&server.epoll, spare_capacity(&mut events), timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        now = Instant::now();
        for event in events.drain(..) {
            match event.data.u64() {
                LISTENER => server.accept_all(now),
                SHUTDOWN => server.begin_shutdown(shutdown, now),
                token => server.serve(token, event.flags, now),
            }
            // At once, not once per batch: a batch could bring every client's first megabyte.
            if server.memory.is_over() {
                server.evict_biggest();
            }
        }
        if server.listener_paused_until.is_some_and(|at| now >= at) {
            server.resume_accepting();
        }
        if server.next_sweep.is_some_and(|at| now >= at) {
            server.sweep(now);
        }
    }
    Ok(())
}

impl<S: KeyValueStore + Fill> Server<'_, S> {
    /// Accepts until EAGAIN.
    fn accept_all(&mut self, now: Instant) {
        while let Some(listener) = &mut self.listener {
            match listener.accept(true) {
                Ok(Accepted::Connection(fd, peer)) => self.admit(fd, peer, now),
                Ok(Accepted::Refused(e)) => self.counters.refused(None, format_args!("out of file descriptors: {e}")),
                Ok(Accepted::Nothing) => return,
                Err(e) if net::out_of_descriptors(&e) => {
                    // Not even the spare descriptor could be had: stop listening for a while.
                    self.counters.error(format_args!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}"));
                    if epoll::modify(&self.epoll, &*listener, EventData::new_u64(LISTENER), EventFlags::empty()).is_ok()
                    {
                        self.listener_paused_until = Some(now + ACCEPT_PAUSE);
                    }
                    return;
                }
                Err(e) => {
                    self.counters.error(format_args!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn resume_accepting(&mut self) {
        self.listener_paused_until = None;
        let Some(listener) = &self.listener else { return };
        if let Err(e) = epoll::modify(&self.epoll, listener, EventData::new_u64(LISTENER), EventFlags::IN) {
            self.counters.error(format_args!("resume accepting: {e}"));
        }
    }

    fn admit(&mut self, fd: OwnedFd, peer: Option<SocketAddr>, now: Instant) {
        if !self.places.take(self.config.max_connections) {
            self.counters.refused(peer, format_args!("max connections ({}) reached", self.config.max_connections));
            return;
        }
        let Some(token) = self.slab.vacant_token() else {
            self.places.release();
            self.counters.refused(peer, "no free token");
            return;
        };
        if let Err(e) = epoll::add(&self.epoll, &fd, EventData::new_u64(token), EventFlags::IN) {
            self.places.release();
            self.counters.refused(peer, format_args!("epoll add: {e}"));
            return;
        }
        let session = Session::new(self.config, self.timing, now);
        self.next_sweep = earliest(self.next_sweep, session.poll_timeout());
        let inserted = self.slab.insert(Client { conn: Conn::new(fd, peer, session), interest: EventFlags::IN });
        debug_assert_eq!(inserted, token);
        self.counters.connection();
    }

    /// Serves one connection's event; stale tokens find nothing.
    fn serve(&mut self, token: u64, flags: EventFlags, now: Instant) {
        let Some(Client { conn, .. }) = self.slab.get_mut(token) else { return };
        let moved = conn.pump(&mut self.scratch, &mut self.handler, now);
        if !moved && flags.intersects(EventFlags::ERR | EventFlags::HUP) && conn.session.phase() != Phase::Closed {
            // Level-triggered ERR/HUP would fire forever on a socket that can do nothing more.
            conn.session.io_error(io::Error::from(io::ErrorKind::ConnectionReset));
        }
        self.settle(token);
    }

    /// After a session moved on: counts, closes it, or sets its interest
    /// and notes its next deadline.
    fn settle(&mut self, token: u64) {
        let Some(Client { conn, interest: current }) = self.slab.get_mut(token) else { return };
        let wanted = interest(&conn.session);
        if wanted != *current && conn.session.phase() != Phase::Closed {
            match epoll::modify(&self.epoll, &conn.fd, EventData::new_u64(token), wanted) {
                Ok(()) => *current = wanted,
                Err(e) => conn.session.io_error(e.into()),
            }
        }
        if conn.settle(&mut self.scratch, self.counters, self.memory) {
            self.discard(token);
            return;
        }
        self.next_sweep = earliest(self.next_sweep, conn.session.poll_timeout());
    }

    /// Closes a connection already counted as ended.
    fn discard(&mut self, token: u64) {
        if let Some(client) = self.slab.remove(token) {
            // Out of the interest list before the fd number can be reused.
            let _ = epoll::delete(&self.epoll, &client.conn.fd);
            drop(client);
            self.places.release();
        }
    }

    /// Every session acts on its passed deadlines; the next sweep is at the earliest one left.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = None;
        self.for_every_conn(|conn| conn.session.handle_timeout(now));
    }

    /// Applies `f` to every connection, then settles it.
    fn for_every_conn(&mut self, mut f: impl FnMut(&mut Conn)) {
        for index in 0..self.slab.entries.len() {
            let Some(token) = self.slab.token_at(index) else { continue };
            if let Some(client) = self.slab.get_mut(token) {
                f(&mut client.conn);
            }
            self.settle(token);
        }
    }

    /// Evicts the connections holding the most until all together are
    /// under the client-memory cap (each at most once).
    fn evict_biggest(&mut self) {
        for _ in 0..self.slab.len {
            if !self.memory.is_over() {
                return;
            }
            let slab = &self.slab;
            let live = (0..slab.entries.len()).filter_map(|i| slab.token_at(i));
            let conns =
                live.filter_map(|token| Some((token, &slab.entries[Slab::split(token).0].client.as_ref()?.conn)));
            let Some(token) = driver::biggest(conns) else { return };
            if let Some(client) = self.slab.get_mut(token) {
                client.conn.session.evict(&mut self.scratch.spare);
            }
            self.settle(token);
        }
    }

    /// Stops accepting; every session begins its shutdown.
    fn begin_shutdown(&mut self, shutdown: &Shutdown, now: Instant) {
        // Level-triggered: the wake-up socket stays readable.
        let _ = epoll::delete(&self.epoll, shutdown.wake_fd());
        if let Some(listener) = self.listener.take() {
            let _ = epoll::delete(&self.epoll, &listener);
        }
        self.listener_paused_until = None;
        self.for_every_conn(|conn| conn.begin_shutdown(now));
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    [a, b].into_iter().flatten().min()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn stale_tokens_never_reach_a_reused_slot() {
        let mut slab = Slab::default();
        let (a, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let client = |fd: std::os::unix::net::UnixStream| Client {
            conn: {
                let config = Config::for_flavor(crate::config::Flavor::Epoll);
                Conn::new(fd.into(), None, Session::new(&config, Timing::new(&config), Instant::now()))
            },
            interest: EventFlags::IN,
        };
        let first = slab.insert(client(a));
        assert!(slab.get_mut(first).is_some());
        assert!(slab.remove(first).is_some());
        let (b, _keep_b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(slab.vacant_token().map(Slab::split), Some((0, 1)));
        let second = slab.insert(client(b));
        assert_eq!(Slab::split(second), (0, 1), "same slot, next generation");
        assert!(slab.get_mut(first).is_none(), "stale token finds nothing");
        assert!(slab.remove(first).is_none());
        assert!(slab.get_mut(second).is_some());
        assert_eq!(slab.len, 1);
        assert_ne!(second, LISTENER);
        assert_ne!(second, SHUTDOWN);
    }
}
