//! Flavor `epoll`: one thread, non-blocking sockets, an epoll event loop.
//!
//! - Model: level-triggered epoll over the listeners (one per protocol),
//!   the shutdown wake-up socket and every connection. `match token {
//!   SHUTDOWN => stop, a listener's => accept until EAGAIN, token =>
//!   serve(token) }`. Serving is one
//!   [`pump`] of the connection; its interest is what the
//!   [`Server`] says ([`Server::poll_io`]): read while the session wants
//!   to (not under back-pressure), write only while a write is pending.
//! - Time: the loop sleeps in `epoll_wait` until [`Server::poll_timeout`],
//!   then calls [`Server::handle_timeout`].
//! - Tokens: a token is the server's [`Handle`] (slot and generation), so
//!   an event queued for a connection that closed in the same batch (whose
//!   fd number may already be reused) names another generation and finds
//!   nothing.
//! - Threads: 1 per loop; `--threads N` runs N of these loops
//!   ([`crate::host::loops`]), each with its own SO_REUSEPORT listener, over a
//!   shared sharded store, sharing the connection limit, the client-memory
//!   count and the stop.
//! - Memory: an idle connection holds no user-space buffer, only its slab
//!   entry: reads go into one 64 KiB buffer per loop, and responses into an
//!   output buffer borrowed from the loop while they are unsent.
//! - Limits (the server's): `--max-connections`, counted across every loop (the next one
//!   is accepted and closed at once); `--max-client-memory`, counted across
//!   every loop too (a loop that sees the total over the cap evicts its own
//!   biggest connections). EMFILE on accept closes that connection with a
//!   spare descriptor; an accept that fails anyway is the server's to count,
//!   and while the server pauses accepting ([`Server::accepting`]) the
//!   listener is out of the interest list instead of spinning the loop as
//!   a listener that stays readable would; an fd is removed from epoll
//!   before it is closed.
//! - Stop: the listener closes, the server [begins the
//!   stop](Server::begin_stop) and the loop goes on until the last
//!   connection has closed (idle ones at once, the others within grace + linger).
//! - Syscalls: per wake-up one `epoll_wait` and one clock read (vDSO); per
//!   ready connection one `recvfrom` (a short read means drained) and one
//!   `sendto` for all its answers; `epoll_ctl` only when a connection's
//!   interest changes. Measured figures: `frontends/README.md`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use kvio_core::KeyValueStore;
use rustix::buffer::spare_capacity;
use rustix::event::Timespec;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::io::Errno;

use crate::drivers::pump::{READ_CHUNK, pump, pump_write, shut_write_if_asked};
use crate::drivers::{Driver, Loop, handler};
use crate::host::durability::LoopJournal;
use crate::host::loops::Loops;
use crate::host::net::{self, Accepted, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::server::{Handle, Io, Server};
use crate::sansio::wire::Protocols;

/// The shutdown wake-up socket's token (a handle fits in 56 bits).
const SHUTDOWN: u64 = u64::MAX;
/// Listener `i`'s token is `LISTENER - i` (one per protocol, a few at most).
const LISTENER: u64 = u64::MAX - 1;
/// Tokens at or above this are listeners'.
const LISTENERS_END: u64 = LISTENER - 15;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// The epoll driver.
#[derive(Debug, Clone, Copy)]
pub struct Epoll;

impl Driver for Epoll {
    fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
        serve_loop(listeners, run, store)
    }
}

/// A connection's descriptor and the interest registered for it.
#[derive(Debug)]
struct Socket {
    handle: Handle,
    fd: OwnedFd,
    interest: EventFlags,
}

fn flags(io: &Io) -> EventFlags {
    let mut flags = EventFlags::empty();
    if io.read {
        flags |= EventFlags::IN;
    }
    if io.write {
        flags |= EventFlags::OUT;
    }
    flags
}

struct EpollLoop<'a, S> {
    epoll: OwnedFd,
    /// One per protocol; empty once stopping.
    listeners: Vec<Listener>,
    /// The listeners are in the interest list with IN (not while the server pauses accepting).
    listening: bool,
    /// By handle index.
    sockets: Vec<Option<Socket>>,
    server: Server<'a, Protocols<S, &'a Loops>>,
    read: Box<[u8]>,
}

/// One loop over `store`: returns once `run.shutdown` is requested and its
/// last connection has closed.
pub fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
    let shutdown = run.shutdown;
    let epoll = epoll::create(CreateFlags::CLOEXEC)?;
    assert!(listeners.len() as u64 <= LISTENER - LISTENERS_END, "a few listeners per loop");
    for (i, listener) in listeners.iter().enumerate() {
        net::set_nonblocking(listener.as_fd(), true)?;
        epoll::add(&epoll, listener, EventData::new_u64(LISTENER - i as u64), EventFlags::IN)?;
    }
    epoll::add(&epoll, shutdown.wake_fd(), EventData::new_u64(SHUTDOWN), EventFlags::IN)?;
    let mut lp = EpollLoop {
        epoll,
        listening: !listeners.is_empty(),
        listeners,
        sockets: Vec::new(),
        server: Server::new(run.limits, run.shared, handler(&run, store)),
        read: vec![0u8; READ_CHUNK].into_boxed_slice(),
    };
    if run.journal.is_some() {
        lp.server.hold_answers();
    }
    let mut events: Vec<Event> = Vec::with_capacity(EVENTS_PER_WAIT);
    let mut now = Instant::now();
    if shutdown.is_requested() {
        lp.begin_stop(shutdown, now);
    }
    while !lp.listeners.is_empty() || !lp.server.is_empty() {
        // From the clock read after the last wait: a deadline is at most one
        // batch's work late, and a wake-up reads the clock once, not twice.
        let wake = match (lp.server.poll_timeout(), run.journal.and_then(|j| j.poll_timeout())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = wake.map(|at| {
            let wait = at.saturating_duration_since(now);
            Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ }
        });
        match epoll::wait(&lp.epoll, spare_capacity(&mut events), timeout.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        now = Instant::now();
        for event in events.drain(..) {
            match event.data.u64() {
                SHUTDOWN => lp.begin_stop(shutdown, now),
                token if token >= LISTENERS_END => lp.accept_all((LISTENER - token) as usize, now),
                token => lp.serve(Handle::from_bits(token), event.flags, now),
            }
            lp.apply();
        }
        lp.server.handle_timeout(now);
        lp.apply();
        if let Some(journal) = run.journal {
            lp.end_turn(journal, now);
        }
        lp.listen_if_accepting();
    }
    Ok(())
}

impl<S: KeyValueStore> EpollLoop<'_, S> {
    fn socket(&self, handle: Handle) -> Option<&Socket> {
        self.sockets.get(handle.index())?.as_ref().filter(|s| s.handle == handle)
    }

    /// Accepts from listener `i` until EAGAIN, or until the server stops accepting.
    fn accept_all(&mut self, i: usize, now: Instant) {
        while let Some(listener) = self.listeners.get_mut(i)
            && self.server.accepting()
        {
            match listener.accept(true) {
                Accepted::Connection(fd, peer) => {
                    // A refusal is counted by the server; dropping `fd` closes it.
                    let Ok(handle) = self.server.accept(peer, now, listener.protocol()) else { continue };
                    let added = epoll::add(&self.epoll, &fd, EventData::new_u64(handle.to_bits()), EventFlags::IN);
                    if self.sockets.len() <= handle.index() {
                        self.sockets.resize_with(handle.index() + 1, || None);
                    }
                    self.sockets[handle.index()] = Some(Socket { handle, fd, interest: EventFlags::IN });
                    if let Err(e) = added {
                        self.server.socket_error(handle, e.into());
                    }
                }
                Accepted::Nothing => break,
                Accepted::Failed(failure) => self.server.accept_failed(failure, now),
            }
        }
        self.listen_if_accepting();
    }

    /// Keeps the listener in the interest list exactly while the server
    /// accepts: level-triggered, a listener left in while paused would
    /// wake every wait at once.
    fn listen_if_accepting(&mut self) {
        let accepting = self.server.accepting();
        if self.listeners.is_empty() || accepting == self.listening {
            return;
        }
        let flags = if accepting { EventFlags::IN } else { EventFlags::empty() };
        self.listening = accepting;
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Err(e) = epoll::modify(&self.epoll, listener, EventData::new_u64(LISTENER - i as u64), flags) {
                self.listening = !accepting;
                self.server.counters().error(format_args!("listener interest: {e}"));
            }
        }
    }

    /// Serves one connection's event; stale tokens find nothing.
    fn serve(&mut self, handle: Handle, flags: EventFlags, now: Instant) {
        let Some(socket) = self.sockets.get(handle.index()).and_then(Option::as_ref).filter(|s| s.handle == handle)
        else {
            return;
        };
        let moved = pump(socket.fd.as_fd(), &mut self.server, handle, &mut self.read, now);
        if !moved && flags.intersects(EventFlags::ERR | EventFlags::HUP) && !self.server.is_closed(handle) {
            // Level-triggered ERR/HUP would fire forever on a socket that can do nothing more.
            self.server.socket_error(handle, io::Error::from(io::ErrorKind::ConnectionReset));
        }
    }

    /// Does what the server says for every handle it touched: shut the
    /// writing side, change the interest, or close.
    fn apply(&mut self) {
        while let Some(io) = self.server.poll_io() {
            let Some(socket) = self.socket(io.handle) else { continue };
            if io.close {
                let socket = self.sockets[io.handle.index()].take().expect("found above");
                // Out of the interest list before the fd number can be reused.
                let _ = epoll::delete(&self.epoll, &socket.fd);
                drop(socket);
                self.server.release(io.handle);
                continue;
            }
            shut_write_if_asked(socket.fd.as_fd(), io.shut_write);
            let wanted = flags(&io);
            if wanted != socket.interest {
                match epoll::modify(&self.epoll, &socket.fd, EventData::new_u64(io.handle.to_bits()), wanted) {
                    Ok(()) => self.sockets[io.handle.index()].as_mut().expect("found above").interest = wanted,
                    Err(e) => self.server.socket_error(io.handle, e.into()),
                }
            }
        }
    }

    /// Ends the turn under `--data-dir`: the journal writes (and, as due,
    /// syncs) the turn's records in one go, then the answers it made
    /// durable are sent.
    fn end_turn(&mut self, journal: &LoopJournal<'_>, now: Instant) {
        let turn = self.server.end_turn();
        let ended = journal.end_turn(now);
        if ended.durable >= ended.ended {
            self.server.durable(turn);
        }
        while let Some(handle) = self.server.take_released() {
            let socket = self.sockets.get(handle.index()).and_then(Option::as_ref).filter(|s| s.handle == handle);
            if let Some(socket) = socket {
                pump_write(socket.fd.as_fd(), &mut self.server, handle, now);
            }
        }
        self.apply();
    }

    /// Stops accepting; the server fans the stop out.
    fn begin_stop(&mut self, shutdown: &Shutdown, now: Instant) {
        // Level-triggered: the wake-up socket stays readable.
        let _ = epoll::delete(&self.epoll, shutdown.wake_fd());
        for listener in self.listeners.drain(..) {
            let _ = epoll::delete(&self.epoll, &listener);
        }
        let sockets = &self.sockets;
        let waiting = |handle: Handle| {
            sockets.get(handle.index()).and_then(Option::as_ref).is_some_and(|s| net::has_unread(s.fd.as_fd()))
        };
        self.server.begin_stop(now, waiting);
        self.apply();
    }
}
