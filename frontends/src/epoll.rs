//! Flavor `epoll`: one thread, non-blocking sockets, an epoll event loop.
//!
//! - Model: level-triggered epoll over the listener, the shutdown wake-up
//!   socket and every connection. `match token { LISTENER => accept until
//!   EAGAIN, SHUTDOWN => stop, token => serve(token) }`. A connection's
//!   interest is read while it [wants to read](Session::wants_read) (not
//!   under back-pressure) and write only while a write is pending.
//! - Tokens: connections live in a `Slab`; a token is the slot's index and
//!   its generation, bumped when the slot is freed, so an event queued for
//!   a connection that closed in the same batch (whose fd number may already
//!   be reused) finds a different generation and is dropped.
//! - Threads: 1; it sleeps in `epoll_wait` while idle (waking at most once
//!   per idle sweep, a quarter of the idle timeout capped at 1 s).
//! - Memory: an idle connection holds no user-space buffer, only its slab
//!   entry (about 200 bytes): reads go into one 64 KiB buffer per loop and
//!   responses into one shared output; a connection keeps a buffer only for
//!   a partial frame, input held back by back-pressure, or a partial write.
//! - Limits: `--max-connections` (10,000 by default; the next one is
//!   accepted and closed at once); EMFILE on accept closes that connection
//!   with a spare descriptor, or if even that fails pauses accepting for
//!   100 ms instead of spinning on a listener that stays readable; an fd is
//!   removed from epoll before it is closed.
//! - Syscalls: per wake-up one `epoll_wait` and, per ready connection, one
//!   `recvfrom` (a short read means drained, so no recv that would only say
//!   EAGAIN) and one `sendto` for all its answers; `epoll_ctl` only when a
//!   connection's interest changes (back-pressure, a partial write), and one
//!   clock read (vDSO) per wake-up. Counted with `perf stat -e
//!   'syscalls:sys_enter_*'` during `kvio bench` runs (server on CPU 0,
//!   load on CPU 1), per request, epoll vs the bench's floor server:
//!   16x1 2.14 vs 2.15, 16x16 0.145 vs 0.173, 1000x1 2.08 vs 2.04. Kernel
//!   CPU per request is the floor's too (16x16: 380-420 vs 360-375 ns, the
//!   rest is epoll's larger responses: gets carry their values). The gap is
//!   user time: ~210 ns/request at 16x16 with the bench's 10,000 keys, ~100
//!   ns with 160 keys; `perf record` puts the difference in the store's
//!   `find`/`read_u32` (a cache miss on the slot, then one on the record),
//!   i.e. in kvio-core, not in this loop (`Session::service`, `write_to` and
//!   this file are ~2% of the server's samples).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use kvio_proto::KeyValueHandler;
use rustix::buffer::spare_capacity;
use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::RecvFlags;

use crate::config::{Config, HostStore, SHUTDOWN_GRACE};
use crate::net::{self, Accepted, Listener};
use crate::session::{LINGER_TIME, Linger, READ_CHUNK, Scratch, Session, linger_all};
use crate::shutdown::Shutdown;
use crate::stats::{Counters, End, Stats};

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
    fd: OwnedFd,
    peer: Option<SocketAddr>,
    session: Session,
    interest: EventFlags,
    last_moved: Instant,
    /// Closing: only draining the peer's late bytes (see [`Linger`]).
    linger: Option<Linger>,
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

    /// Tokens of every connection.
    fn tokens(&self) -> Vec<u64> {
        let live = self.entries.iter().enumerate().filter(|(_, e)| e.client.is_some());
        live.map(|(i, e)| Self::token(i as u32, e.generation)).collect()
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

struct Server<'a> {
    config: &'a Config,
    epoll: OwnedFd,
    listener: Listener,
    listener_paused_until: Option<Instant>,
    slab: Slab,
    handler: KeyValueHandler<HostStore>,
    scratch: Scratch,
    counters: Counters,
    /// Lingering connections by deadline: every linger lasts
    /// [`LINGER_TIME`], so the queue is in deadline order.
    lingering: VecDeque<(Instant, u64)>,
}

/// Serves until `shutdown` is requested.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    net::set_nonblocking(listener.as_fd(), true)?;
    let epoll = epoll::create(CreateFlags::CLOEXEC)?;
    epoll::add(&epoll, &listener, EventData::new_u64(LISTENER), EventFlags::IN)?;
    epoll::add(&epoll, shutdown.wake_fd(), EventData::new_u64(SHUTDOWN), EventFlags::IN)?;
    let mut server = Server {
        config,
        epoll,
        listener,
        listener_paused_until: None,
        slab: Slab::default(),
        handler: KeyValueHandler::new(config.store()),
        scratch: Scratch::new(READ_CHUNK),
        counters: Counters::default(),
        lingering: VecDeque::new(),
    };
    let sweep_every =
        config.idle_timeout.map(|idle| (idle / 4).clamp(Duration::from_millis(1), Duration::from_secs(1)));
    let mut next_sweep = sweep_every.map(|every| Instant::now() + every);
    let mut events: Vec<Event> = Vec::with_capacity(EVENTS_PER_WAIT);
    let mut stopping = shutdown.is_requested();
    let mut now = Instant::now();
    while !stopping {
        let linger_at = server.lingering.front().map(|&(at, _)| at);
        let wake_at = [next_sweep, server.listener_paused_until, linger_at].into_iter().flatten().min();
        // From the clock read after the last wait: a sweep is at most one
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
                SHUTDOWN => stopping = true,
                token => server.serve(token, event.flags, now),
            }
        }
        server.end_lingers(now);
        if server.listener_paused_until.is_some_and(|at| now >= at) {
            server.resume_accepting();
        }
        if let (Some(at), Some(every), Some(idle)) = (next_sweep, sweep_every, config.idle_timeout)
            && now >= at
        {
            server.close_idle(now, idle);
            next_sweep = Some(now + every);
        }
    }
    Ok(server.finish())
}

impl Server<'_> {
    /// Accepts until EAGAIN.
    fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept(true) {
                Ok(Accepted::Connection(fd, peer)) => self.admit(fd, peer, now),
                Ok(Accepted::Refused(e)) => self.counters.refused(None, format_args!("out of file descriptors: {e}")),
                Ok(Accepted::Nothing) => return,
                Err(e) if net::out_of_descriptors(&e) => {
                    // Not even the spare descriptor could be had: stop listening for a while.
                    self.counters.error(format_args!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}"));
                    if epoll::modify(&self.epoll, &self.listener, EventData::new_u64(LISTENER), EventFlags::empty())
                        .is_ok()
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
        if let Err(e) = epoll::modify(&self.epoll, &self.listener, EventData::new_u64(LISTENER), EventFlags::IN) {
            self.counters.error(format_args!("resume accepting: {e}"));
        }
    }

    fn admit(&mut self, fd: OwnedFd, peer: Option<SocketAddr>, now: Instant) {
        if self.slab.len >= self.config.max_connections {
            self.counters.refused(peer, format_args!("max connections ({}) reached", self.config.max_connections));
            return;
        }
        let Some(token) = self.slab.vacant_token() else {
            self.counters.refused(peer, "no free token");
            return;
        };
        if let Err(e) = epoll::add(&self.epoll, &fd, EventData::new_u64(token), EventFlags::IN) {
            self.counters.refused(peer, format_args!("epoll add: {e}"));
            return;
        }
        let session = Session::new(self.config);
        let client = Client { fd, peer, session, interest: EventFlags::IN, last_moved: now, linger: None };
        let inserted = self.slab.insert(client);
        debug_assert_eq!(inserted, token);
        self.counters.connection();
    }

    /// Serves one connection's event; stale tokens find nothing.
    fn serve(&mut self, token: u64, flags: EventFlags, now: Instant) {
        let Some(client) = self.slab.get_mut(token) else { return };
        if let Some(linger) = &mut client.linger {
            if linger.drain(client.fd.as_fd(), &mut self.scratch.read) {
                self.discard(token);
            }
            return;
        }
        let serviced =
            client.session.service(client.fd.as_fd(), &mut self.scratch, &mut self.handler, RecvFlags::DONTWAIT);
        self.counters.requests(client.session.take_requests());
        let end = match serviced {
            Ok(progress) if !progress.moved && flags.intersects(EventFlags::ERR | EventFlags::HUP) => {
                // Level-triggered ERR/HUP would fire forever on a socket that can do nothing more.
                End::Io(io::Error::from(io::ErrorKind::ConnectionReset))
            }
            Ok(progress) => {
                if progress.moved {
                    client.last_moved = now;
                }
                client.session.release_buffers();
                let wanted = interest(&client.session);
                if wanted == client.interest {
                    return;
                }
                match epoll::modify(&self.epoll, &client.fd, EventData::new_u64(token), wanted) {
                    Ok(()) => {
                        client.interest = wanted;
                        return;
                    }
                    Err(e) => End::Io(e.into()),
                }
            }
            Err(end) => end,
        };
        self.close(token, end, now);
    }

    /// Ends a connection: at once, or by lingering if the peer may still be sending.
    fn close(&mut self, token: u64, end: End, now: Instant) {
        let Some(client) = self.slab.get_mut(token) else { return };
        self.counters.ended(client.peer, &end);
        if end.lingers() && client.linger.is_none() {
            // Every response is written (a session ends only then): the FIN follows them.
            let linger = Linger::start(client.fd.as_fd(), now + LINGER_TIME);
            client.session.release_buffers();
            if epoll::modify(&self.epoll, &client.fd, EventData::new_u64(token), EventFlags::IN).is_ok() {
                client.interest = EventFlags::IN;
                client.linger = Some(linger);
                self.lingering.push_back((linger.deadline(), token));
                return;
            }
        }
        self.discard(token);
    }

    /// Closes a connection already counted as ended.
    fn discard(&mut self, token: u64) {
        if let Some(client) = self.slab.remove(token) {
            // Out of the interest list before the fd number can be reused.
            let _ = epoll::delete(&self.epoll, &client.fd);
            drop(client.fd);
        }
    }

    /// Closes the lingering connections whose time is up.
    fn end_lingers(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.lingering.front() {
            if at > now {
                return;
            }
            self.lingering.pop_front();
            // The token may be stale (the linger ended early and the slot was reused): generations tell.
            if self.slab.get_mut(token).is_some_and(|c| c.linger.is_some()) {
                self.discard(token);
            }
        }
    }

    fn close_idle(&mut self, now: Instant, idle: Duration) {
        for token in self.slab.tokens() {
            if self.slab.get_mut(token).is_some_and(|c| c.linger.is_none() && now.duration_since(c.last_moved) >= idle)
            {
                self.close(token, End::Idle, now);
            }
        }
    }

    /// Stops accepting, answers what every connection already sent, closes them all.
    fn finish(mut self) -> Stats {
        let _ = epoll::delete(&self.epoll, &self.listener);
        drop(self.listener);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut closing = Vec::new();
        for token in self.slab.tokens() {
            if let Some(mut client) = self.slab.remove(token) {
                let _ = epoll::delete(&self.epoll, &client.fd);
                if let Some(linger) = client.linger {
                    closing.push((client.fd, linger));
                    continue;
                }
                let end = client.session.finish(client.fd.as_fd(), &mut self.scratch, &mut self.handler, deadline);
                self.counters.requests(client.session.take_requests());
                self.counters.ended(client.peer, &end);
                if end.lingers() {
                    let linger = Linger::start(client.fd.as_fd(), Instant::now() + LINGER_TIME);
                    closing.push((client.fd, linger));
                }
            }
        }
        // All at once: one client that never closes does not hold the others' closes.
        linger_all(closing, &mut self.scratch.read);
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn stale_tokens_never_reach_a_reused_slot() {
        let mut slab = Slab::default();
        let (a, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let client = |fd: std::os::unix::net::UnixStream| Client {
            fd: fd.into(),
            peer: None,
            session: Session::new(&Config::for_flavor(crate::config::Flavor::Epoll)),
            interest: EventFlags::IN,
            last_moved: Instant::now(),
            linger: None,
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
