//! The sans-IO server: every rule a server has about *the set of* its
//! connections, above the [`Session`]s, with no socket, no clock and no
//! thread. The shape is quinn-proto's `Endpoint` and smoltcp's
//! `Interface::poll_at`.
//!
//! - **Table**: sessions keyed by a small [`Handle`] (slot index and the
//!   slot's generation), which a driver maps to its descriptor.
//! - **Admission**: [`Server::accept`] admits or refuses against
//!   `max_connections`, counted across every loop ([`Places`]). An accept
//!   that gave nothing to serve is reported too ([`Server::accept_failed`]):
//!   the server counts the refusal or the error, and pauses accepting
//!   after a failure that would only repeat at once ([`Listening`];
//!   [`Server::accepting`] says when the driver may accept).
//! - **Client memory**: every session's heap is charged to the
//!   [`ClientMemory`] shared by every loop; whenever the total passes the
//!   cap, the [victim](crate::sansio::memory::victim) is evicted at once
//!   ([`Session::evict`]; the error frame is the handler's).
//! - **Stop**: [`Server::begin_stop`] fans the stop out to every session;
//!   [`Server::is_done`] says when the last one has been released.
//! - **Time**: [`Server::poll_timeout`] is the earliest deadline over all
//!   sessions and the end of an accept pause; [`Server::handle_timeout`]
//!   acts on every one due.
//! - **Reads**: one rule says whether a session is read now
//!   ([`Server::wants_read`], [`Server::wants`] and [`Server::poll_io`]
//!   all use it): the session wants input, the server is not
//!   [holding](Server::is_holding) for room under the memory cap, and a
//!   lingering session whose socket's reading side the driver shut itself
//!   is looked at only every [`LINGER_PACE`] ([`Server::read_shut`]).
//! - **Counters**: [`Counters`], shared with whoever reads them.
//!
//! Events in: [`Server::accept`], [`Server::accept_failed`], [`Server::received`],
//! [`Server::peer_closed`], [`Server::advance`] / [`Server::transmitted`],
//! [`Server::socket_error`], [`Server::read_shut`], [`Server::begin_stop`],
//! [`Server::handle_timeout`]. Out, per handle: bytes to send
//! ([`Server::transmit`] / [`Server::take_transmit`]), read and write
//! interest and close ([`Server::poll_io`], for every handle whose answer
//! may have changed since it was last asked).
//!
//! A handle is never reused while the driver may still hold its
//! descriptor: a closed session keeps its slot until the driver says it
//! has let the descriptor go ([`Server::release`]).
//!
//! Timers: one lazily kept earliest deadline, and a sweep over every
//! session when it passes. A request moves its session's idle deadline
//! later; a heap or a wheel would be updated on every request for that,
//! this costs one comparison on the request path, and a sweep of 10,000
//! sessions (~0.3 ms, `benches/server.rs`, against ~90 ns for a request)
//! happens about once per idle timeout. A deadline that moved later costs
//! one early sweep.

use std::fmt;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::sansio::memory::{self, ClientMemory, Elsewhere, Share};
use crate::sansio::security::{Auth, Security};
use crate::sansio::session::{Clock, End, Framing, OutBuf, Phase, Session, Spare, Timing};
use crate::sansio::stats::{Close, Counters, close_of};
use crate::sansio::tls::Tls;
use crate::sansio::wire::{Handlers, Protocol};

/// Bits of a handle's generation: a handle fits in 56 bits, so a
/// completion driver has the top byte of its `user_data` for the operation.
pub const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// What a server is told: its own plain limits, not the command line's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Each connection's framing limits.
    pub framing: Framing,
    /// Each connection's timing rules.
    pub timing: Timing,
    /// The store's clock (expiries), for the requests every connection sends.
    pub clock: Clock,
    /// Connections served at once, over every loop.
    pub max_connections: usize,
}

/// What a server shares with the other loops of the process: thread-safe,
/// readable while the loops run.
#[derive(Debug, Clone, Copy)]
pub struct Shared<'a> {
    /// Connections open over every loop.
    pub places: &'a Places,
    /// What every connection of every loop holds.
    pub memory: &'a ClientMemory,
    /// This loop's counters.
    pub counters: &'a Counters,
    /// Who may talk to the server ([`OPEN`](crate::sansio::security::OPEN): anyone, in plaintext).
    pub security: &'a Security,
}

/// Connections open across every loop, against `max_connections`.
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

/// A connection's name: its slot and the slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    index: u32,
    generation: u32,
}

impl Handle {
    /// The slot: a driver may index its own table of descriptors with it.
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The handle in 56 bits (generation above the index).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The handle of [`Handle::to_bits`] (the top byte is ignored).
    pub fn from_bits(bits: u64) -> Handle {
        Handle { index: bits as u32, generation: (bits >> 32) as u32 & GENERATION_MASK }
    }
}

/// Why [`Server::accept`] refused a connection (the driver closes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Full(usize),
    /// No handle left (2^32 slots).
    NoHandle,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Full(max) => write!(f, "max connections ({max}) reached"),
            Refused::NoHandle => f.write_str("no free handle"),
        }
    }
}

/// How long accepting pauses after an accept failed for want of a
/// resource (descriptors, kernel memory): tried again at once, it would
/// only fail again, and a readiness loop would spin on a listener that
/// stays readable.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// How often a lingering session whose socket's reading side the driver
/// shut itself ([`Server::read_shut`]) is read again: such a read never
/// waits (it says end of stream when nothing is queued), so late bytes
/// are looked for at this pace until the linger ends.
pub const LINGER_PACE: Duration = Duration::from_millis(10);

/// An accept that gave no connection to serve, as the driver reports it
/// ([`Server::accept_failed`]). A descriptor it may have taken is closed.
#[derive(Debug)]
pub enum AcceptFailure {
    /// The process is out of descriptors: the connection waiting was
    /// taken with a spare descriptor and closed, so that it is refused
    /// rather than left to make the listener ready for ever.
    OutOfDescriptors(io::Error),
    /// A connection (from the address, if known) was taken, but its
    /// socket could not be set up for serving (TCP_NODELAY): closed.
    Setup(Option<SocketAddr>, io::Error),
    /// The accept itself failed (out of descriptors with no spare left
    /// to refuse with, out of memory, or anything else).
    Failed(io::Error),
}

/// The listener's rules, apart from any connection: what an accept that
/// gave nothing to serve means, and the pause after one that failed for
/// want of a resource. Every [`Server`] keeps one; the threaded flavor's
/// accepting thread, which serves no connection itself, keeps its own.
#[derive(Debug, Default)]
pub struct Listening {
    paused_until: Option<Instant>,
}

impl Listening {
    /// `failure` happened at `now`: a refusal or an error is counted (and
    /// logged, rate-limited) in `counters`; a failure that would repeat
    /// at once pauses accepting for [`ACCEPT_PAUSE`].
    pub fn failed(&mut self, failure: AcceptFailure, now: Instant, counters: &Counters) {
        match failure {
            AcceptFailure::OutOfDescriptors(e) => counters.refused(None, format_args!("out of file descriptors: {e}")),
            AcceptFailure::Setup(peer, e) => counters.refused(peer, format_args!("TCP_NODELAY: {e}")),
            AcceptFailure::Failed(e) if connection_gone(&e) => counters.error(format_args!("accept: {e}")),
            AcceptFailure::Failed(e) => {
                counters.error(format_args!("accept: {e}; pausing accepts for {ACCEPT_PAUSE:?}"));
                self.paused_until = Some(now + ACCEPT_PAUSE);
            }
        }
    }

    /// Whether the driver may accept now (not while paused).
    pub fn is_accepting(&self) -> bool {
        self.paused_until.is_none()
    }

    /// When a pause ends, if accepting is paused.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends a pause that is over at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|at| now >= at) {
            self.paused_until = None;
        }
    }
}

/// An accept error that is the waiting connection's own (it was reset, or
/// its network failed; accept(2) says to treat these like EAGAIN): the
/// next connection may be accepted at once.
fn connection_gone(e: &io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(
            Errno::CONNABORTED
                | Errno::PROTO
                | Errno::NETDOWN
                | Errno::NOPROTOOPT
                | Errno::HOSTDOWN
                | Errno::NONET
                | Errno::HOSTUNREACH
                | Errno::OPNOTSUPP
                | Errno::NETUNREACH
                | Errno::PERM
        )
    )
}

/// What a driver does for one handle now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    /// Which connection.
    pub handle: Handle,
    /// Wait for (or go on reading) input.
    pub read: bool,
    /// Bytes wait to be sent.
    pub write: bool,
    /// Shut the socket's writing side now (a lingering close begins).
    pub shut_write: bool,
    /// The session is over: let the descriptor go (cancel what is in
    /// flight, close it), then [`Server::release`] the handle.
    pub close: bool,
}

/// What a session wants now ([`Server::wants`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    /// Input.
    pub read: bool,
    /// To send what [`Server::transmit`] holds.
    pub write: bool,
    /// The socket's writing side shut, now.
    pub shut_write: bool,
}

#[derive(Debug)]
struct Conn {
    session: Session,
    share: Arc<Share>,
    peer: Option<SocketAddr>,
    /// Ended and counted; the slot waits for [`Server::release`].
    closed: bool,
    /// Why it ended, once closed.
    ended: Option<Close>,
    /// In `Server::touched`.
    touched: bool,
    /// The driver shut the socket's reading side itself while the session
    /// lingers: it is read again at this instant ([`LINGER_PACE`]).
    look_again: Option<Instant>,
    /// Its answers wait until the journal's epoch reaches this turn
    /// ([`Server::hold_answers`]); 0: nothing held.
    held_until: u64,
}

impl Conn {
    /// Whether the session is read now, but for the server's holding.
    fn reads(&self) -> bool {
        !self.closed && self.look_again.is_none() && self.session.wants_read()
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// Answers held until the journal holds the records of their turn
/// ([`Server::hold_answers`]): group commit's other half.
#[derive(Debug, Default)]
struct Hold {
    /// The current turn (epoch).
    turn: u64,
    /// Every turn up to this one is durable: its answers may leave.
    durable: u64,
    /// Connections with answers held.
    held: Vec<Handle>,
    /// Connections whose answers were released, for the driver to send.
    released: Vec<Handle>,
}

/// The connections of one loop, and every rule about them. See the [module docs](self).
#[derive(Debug)]
pub struct Server<'a, H> {
    limits: Limits,
    shared: Shared<'a>,
    handler: H,
    spare: Spare,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots in use (closed ones awaiting release included).
    held: usize,
    stopping: bool,
    /// The earliest session deadline seen since the last sweep (maybe
    /// earlier than any real one: deadlines only move later).
    next_sweep: Option<Instant>,
    /// Handles whose [`Io`] may have changed since the driver last asked.
    touched: Vec<Handle>,
    /// Charges changed since the shared total was last written (at the end
    /// of [`Server::poll_io`], or once they pass [`PUBLISH_AT`]); counted
    /// in this server's cap checks meanwhile, invisible to other loops'.
    unpublished: isize,
    /// Other servers' connections the cap may take ([`Server::share_memory_with`]).
    elsewhere: Option<&'a dyn Elsewhere>,
    listening: Listening,
    /// With a journal: answers wait for their turn's records.
    hold: Option<Hold>,
    /// The store's clock read last, and at which instant. The epoll and
    /// uring loops read the clock once per wake-up and hand that instant to
    /// every event of the batch, so most events reuse the reading:
    /// `Instant` arithmetic to milliseconds was ~55 instructions per call,
    /// two calls per request at 16x1 (a read and a send), 5 % of the user
    /// time of a request (callgrind, issue 26).
    clock_read: Option<(Instant, u64)>,
}

/// Unpublished charges that are written to the shared total at once, not
/// at the end of the turn. Other loops do not see this server's
/// unpublished charges, so N loops together can pass the cap by at most
/// N - 1 times this (plus a change being written): without it, a turn
/// that read a megabyte frame into every one of its connections could
/// pass the cap by a whole cap per other loop. A request's buffers
/// (at most one spare output buffer's worth) stay under it, so the request
/// path writes nothing shared.
pub const PUBLISH_AT: usize = 256 * 1024;

impl<'a, H: Handlers> Server<'a, H> {
    /// No connection yet; requests are answered by `handler`.
    pub fn new(limits: Limits, shared: Shared<'a>, handler: H) -> Self {
        Server {
            limits,
            shared,
            handler,
            spare: Spare::default(),
            slots: Vec::new(),
            free: Vec::new(),
            held: 0,
            stopping: false,
            next_sweep: None,
            touched: Vec::new(),
            unpublished: 0,
            elsewhere: None,
            listening: Listening::default(),
            hold: None,
            clock_read: None,
        }
    }

    /// `now` on the store's clock (milliseconds), read again only when
    /// `now` is not the instant last read.
    #[inline]
    fn millis(&mut self, now: Instant) -> u64 {
        match self.clock_read {
            Some((at, ms)) if at == now => ms,
            _ => {
                let ms = self.limits.clock.millis(now);
                self.clock_read = Some((now, ms));
                ms
            }
        }
    }

    /// Under `--data-dir`: from now on, the answers a turn produces wait
    /// until the driver says the journal holds that turn's records
    /// ([`Server::durable`]): written, and synced under `--fsync always`.
    /// A turn is what the driver does between two [`Server::end_turn`]s.
    /// An answer to a write therefore leaves only after its record, and a
    /// read answered after a write on the same connection waits with it.
    pub fn hold_answers(&mut self) {
        self.hold = Some(Hold { turn: 1, ..Hold::default() });
    }

    /// Ends the turn: answers produced from now on belong to the next.
    /// Returns the turn that ended (0 without [`Server::hold_answers`]).
    pub fn end_turn(&mut self) -> u64 {
        let Some(hold) = &mut self.hold else { return 0 };
        hold.turn += 1;
        hold.turn - 1
    }

    /// Every turn up to `turn` is durable: their answers may leave. The
    /// connections released come out of [`Server::take_released`] (send
    /// their bytes now) and [`Server::poll_io`].
    pub fn durable(&mut self, turn: u64) {
        let Some(hold) = &mut self.hold else { return };
        hold.durable = hold.durable.max(turn);
        let mut i = 0;
        while i < hold.held.len() {
            let handle = hold.held[i];
            match find(&mut self.slots, handle) {
                Some(conn) if conn.held_until > hold.durable => i += 1,
                found => {
                    hold.held.swap_remove(i);
                    if let Some(conn) = found {
                        conn.held_until = 0;
                        hold.released.push(handle);
                        if !conn.touched {
                            conn.touched = true;
                            self.touched.push(handle);
                        }
                    }
                }
            }
        }
    }

    /// The next connection whose answers [`Server::durable`] released.
    pub fn take_released(&mut self) -> Option<Handle> {
        self.hold.as_mut()?.released.pop()
    }

    /// Whether `conn`'s answers wait for the journal.
    fn is_held(hold: &Option<Hold>, conn: &Conn) -> bool {
        hold.as_ref().is_some_and(|h| conn.held_until > h.durable)
    }

    /// Over the cap, the [victim](memory::victim) may be a connection of
    /// another server (`elsewhere`): then that one is asked to go. And
    /// while all connections together are over the cap, this server's read
    /// nothing ([`Server::is_holding`]): a read may allocate a whole frame
    /// before its charge is seen, and with hundreds of servers on a few
    /// cores, many such reads would be between the two at once. For
    /// servers of one connection each, the threaded flavor's.
    pub fn share_memory_with(&mut self, elsewhere: &'a dyn Elsewhere) {
        self.elsewhere = Some(elsewhere);
    }

    /// Over the cap, this server (sharing its memory with others) waits
    /// for connections to free theirs: its sessions read nothing meanwhile
    /// ([`Server::wants_read`] is false), and the driver waits for room,
    /// until this is false again: the total is back under the cap, or one
    /// of this server's connections was asked to go (act on it:
    /// [`Server::handle_asked`]).
    pub fn is_holding(&self) -> bool {
        self.elsewhere.is_some() && self.shared.memory.is_over_with(self.unpublished) && !self.is_asked()
    }

    /// Whether another server asked one of this server's connections to
    /// go, and it has not gone yet.
    fn is_asked(&self) -> bool {
        self.slots
            .iter()
            .filter_map(|slot| slot.conn.as_ref())
            .any(|c| !c.closed && c.share.is_evicting() && !c.session.is_evicted())
    }

    /// The most one [`Server::received`] of `input` bytes can add to what
    /// a session holds (by capacity, as charged): a frame's whole buffer
    /// (its header may be in `input`), the answers it makes (up to the
    /// output limit and one response as long as a frame past it, in a
    /// buffer that may double) and input held back (at most `input`, in a
    /// buffer that may double). With [`ClientMemory::has_room_for`], a
    /// driver that takes input on many threads tells the hand-overs that
    /// cannot pass the cap from those that must wait their turn.
    pub fn max_growth(&self, input: usize) -> usize {
        let (frame, output) = (self.limits.framing.max_frame_len as usize, self.limits.framing.output_limit);
        let answers = output.saturating_add(frame).saturating_mul(2);
        frame.saturating_add(answers).saturating_add(input.saturating_mul(2))
    }

    /// Acts on evictions other servers asked for ([`Elsewhere::make_room`])
    /// since the last event on those connections.
    pub fn handle_asked(&mut self) {
        for index in 0..self.slots.len() {
            let Some(handle) = self.live_at(index) else { continue };
            let conn = self.conn(handle).expect("live");
            if conn.share.is_evicting() && !conn.session.is_evicted() {
                self.settle(handle);
            }
        }
    }

    /// The client memory this server charges (shared with every loop).
    pub fn memory(&self) -> &'a ClientMemory {
        self.shared.memory
    }

    /// The counters this server counts into.
    pub fn counters(&self) -> &'a Counters {
        self.shared.counters
    }

    /// Handles held (open connections, and closed ones not yet released).
    pub fn len(&self) -> usize {
        self.held
    }

    /// No handle held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Whether the stop began.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// The stop began and every handle has been released: the loop may end.
    pub fn is_done(&self) -> bool {
        self.stopping && self.held == 0
    }

    /// Whether the driver may take connections off its listener now: not
    /// during the stop, nor while accepting is paused after a failure
    /// ([`Server::accept_failed`]; the pause ends at a
    /// [`Server::handle_timeout`]).
    pub fn accepting(&self) -> bool {
        !self.stopping && self.listening.is_accepting()
    }

    /// An accept at `now` gave no connection to serve: counted and logged
    /// (as a refusal, or an error), and accepting may pause (see
    /// [`Listening::failed`]).
    pub fn accept_failed(&mut self, failure: AcceptFailure, now: Instant) {
        self.listening.failed(failure, now, self.shared.counters);
    }

    /// A connection from `peer` was accepted at `now`: its handle, or why
    /// it is refused (counted and logged; the driver closes it). Accepted
    /// during a stop, it is told to stop at once.
    pub fn accept(&mut self, peer: Option<SocketAddr>, now: Instant, protocol: Protocol) -> Result<Handle, Refused> {
        self.accept_with(peer, now, protocol, Arc::default())
    }

    /// [`Server::accept`], with the connection's memory charge in `share`,
    /// which whoever picks victims [elsewhere](Elsewhere) reads too.
    pub fn accept_with(
        &mut self,
        peer: Option<SocketAddr>,
        now: Instant,
        protocol: Protocol,
        share: Arc<Share>,
    ) -> Result<Handle, Refused> {
        let refused = if !self.shared.places.take(self.limits.max_connections) {
            Some(Refused::Full(self.limits.max_connections))
        } else if self.free.is_empty() && self.slots.len() >= u32::MAX as usize {
            self.shared.places.release();
            Some(Refused::NoHandle)
        } else {
            None
        };
        if let Some(why) = refused {
            self.shared.counters.refused(peer, why);
            return Err(why);
        }
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let session = self.session(peer, now, protocol);
        let slot = &mut self.slots[index as usize];
        slot.conn = Some(Conn {
            session,
            share,
            peer,
            closed: false,
            ended: None,
            touched: false,
            look_again: None,
            held_until: 0,
        });
        self.held += 1;
        self.shared.counters.connection();
        let handle = Handle { index, generation: slot.generation };
        if self.stopping {
            self.conn(handle).expect("just inserted").session.begin_shutdown(now, false);
        }
        self.settle(handle);
        Ok(handle)
    }

    /// A new session for a connection from `peer`, as the server's
    /// [`Security`] says: TLS, a secret to show first, or the refusal of
    /// protected mode (one answer saying why, then the close).
    fn session(&self, peer: Option<SocketAddr>, now: Instant, protocol: Protocol) -> Session {
        let mut session = Session::new(self.limits.framing, self.limits.timing, now, protocol);
        let security = self.shared.security;
        if let Some(config) = &security.tls {
            match Tls::new(config.clone()) {
                Ok(tls) => session.speak_tls(tls, now),
                // Only for a configuration rustls refuses; the application checked it.
                Err(e) => session.io_error(io::Error::other(e)),
            }
        }
        if security.denies(peer) {
            self.shared.counters.denied(peer);
            session.deny();
        } else if let Some(secret) = &security.secret {
            session.require_auth(Auth::new(secret.clone()));
        }
        session
    }

    /// `input` arrived on `handle` at `now`: every complete request in it is answered.
    pub fn received(&mut self, handle: Handle, input: &[u8], now: Instant) {
        let ms = self.millis(now);
        let Some(conn) = find_open(&mut self.slots, handle) else { return };
        conn.session.receive(input, now, ms, &mut self.handler, &mut self.spare);
        if let Some(hold) = &mut self.hold
            && conn.session.wants_write()
        {
            if conn.held_until == 0 {
                hold.held.push(handle);
            }
            conn.held_until = hold.turn;
        }
        self.settle(handle);
    }

    /// The peer of `handle` shut its sending side.
    pub fn peer_closed(&mut self, handle: Handle, now: Instant) {
        let Some(conn) = self.open(handle) else { return };
        conn.session.peer_closed(now);
        self.settle(handle);
    }

    /// The socket of `handle` failed: its session is over.
    pub fn socket_error(&mut self, handle: Handle, error: std::io::Error) {
        let Some(conn) = self.open(handle) else { return };
        conn.session.io_error(error);
        self.settle(handle);
    }

    /// A read of `handle` at `now` said end of stream after the driver
    /// shut the socket's reading side itself (to wake its thread for the
    /// stop or an eviction): from then on nothing tells the peer's end of
    /// stream from that one, and reads never wait. A lingering session
    /// still drops late bytes until its linger ends, so it is read again
    /// every [`LINGER_PACE`] ([`Server::poll_timeout`] says when); any
    /// other reads nothing more, and finishes what it owes.
    pub fn read_shut(&mut self, handle: Handle, now: Instant) {
        let Some(conn) = self.open(handle) else { return };
        if conn.session.phase() == Phase::Lingering {
            conn.look_again = Some(now + LINGER_PACE);
        } else {
            conn.session.stop_reading();
        }
        self.settle(handle);
    }

    /// What `handle`'s session wants now, in one look (a readiness
    /// driver's turn asks this between its syscalls); taking `shut_write`.
    /// `None` once the session is over, or for a stale handle.
    pub fn wants(&mut self, handle: Handle) -> Option<Wants> {
        let holding = self.is_holding();
        let conn = find_open(&mut self.slots, handle)?;
        let read = conn.reads() && !holding;
        let write = !Self::is_held(&self.hold, conn) && conn.session.wants_write();
        Some(Wants { read, write, shut_write: conn.session.take_shut_write() })
    }

    /// Whether `handle`'s session is read now (the one rule: see the [module docs](self)).
    pub fn wants_read(&self, handle: Handle) -> bool {
        self.get(handle).is_some_and(Conn::reads) && !self.is_holding()
    }

    /// Whether `handle`'s session is in its lingering close: it only drops
    /// what comes until the peer closes or the linger ends.
    pub fn is_lingering(&self, handle: Handle) -> bool {
        self.get(handle).is_some_and(|c| !c.closed && c.session.phase() == Phase::Lingering)
    }

    /// Whether `handle`'s session has bytes for [`Server::transmit`].
    pub fn wants_write(&self, handle: Handle) -> bool {
        self.get(handle).is_some_and(|c| !c.closed && !Self::is_held(&self.hold, c) && c.session.wants_write())
    }

    /// True once, when the driver must shut `handle`'s writing side.
    pub fn take_shut_write(&mut self, handle: Handle) -> bool {
        self.open(handle).is_some_and(|c| c.session.take_shut_write())
    }

    /// Whether `handle`'s session is over (or the handle is stale).
    pub fn is_closed(&self, handle: Handle) -> bool {
        self.get(handle).is_none_or(|c| c.closed)
    }

    /// The bytes to send next on `handle` (readiness drivers).
    pub fn transmit(&self, handle: Handle) -> &[u8] {
        match self.get(handle) {
            Some(conn) if !conn.closed && !Self::is_held(&self.hold, conn) => conn.session.transmit(),
            _ => &[],
        }
    }

    /// `n` bytes of [`Server::transmit`] were sent at `now`.
    pub fn advance(&mut self, handle: Handle, n: usize, now: Instant) {
        let ms = self.millis(now);
        let Some(conn) = find_open(&mut self.slots, handle) else { return };
        conn.session.advance(n, now, ms, &mut self.handler);
        self.settle(handle);
    }

    /// Every unsent byte of `handle`, for a completion driver that keeps
    /// the buffer until [`Server::transmitted`].
    pub fn take_transmit(&mut self, handle: Handle) -> Option<OutBuf> {
        let conn = find_open(&mut self.slots, handle)?;
        if Self::is_held(&self.hold, conn) {
            return None;
        }
        conn.session.take_transmit(&mut self.spare)
    }

    /// The send of `buf` (from [`Server::take_transmit`]) wrote `n` bytes
    /// at `now`. A closed session's buffer is simply kept for reuse.
    pub fn transmitted(&mut self, handle: Handle, buf: OutBuf, n: usize, now: Instant) {
        let ms = self.millis(now);
        match find_open(&mut self.slots, handle) {
            Some(conn) => {
                conn.session.transmitted(buf, n, now, ms, &mut self.handler, &mut self.spare);
                self.settle(handle);
            }
            None => self.spare.put(buf),
        }
    }

    /// The server stops: no new work is taken, and every session begins
    /// its shutdown (`waiting(handle)`: requests wait unread in that
    /// socket). Calling it again changes nothing.
    pub fn begin_stop(&mut self, now: Instant, mut waiting: impl FnMut(Handle) -> bool) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for index in 0..self.slots.len() {
            let Some(handle) = self.live_at(index) else { continue };
            let conn = self.conn(handle).expect("live");
            let waiting = conn.session.phase() == Phase::Open && waiting(handle);
            conn.session.begin_shutdown(now, waiting);
            self.settle(handle);
        }
    }

    /// When [`Server::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_sweep, self.listening.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Acts on every deadline passed by `now`: the sessions', and the end
    /// of an accept pause.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.listening.handle_timeout(now);
        if self.next_sweep.is_none_or(|at| now < at) {
            return;
        }
        self.next_sweep = None;
        for index in 0..self.slots.len() {
            let Some(handle) = self.live_at(index) else { continue };
            let conn = self.conn(handle).expect("live");
            if conn.look_again.is_some_and(|at| now >= at) {
                conn.look_again = None;
            }
            conn.session.handle_timeout(now);
            self.settle(handle);
        }
    }

    /// What to do for the next handle whose answer may have changed, until
    /// none is left. Every change comes out here: after an event on a
    /// handle, after a sweep, a stop or an eviction that touched others.
    pub fn poll_io(&mut self) -> Option<Io> {
        while let Some(handle) = self.touched.pop() {
            let holding = self.is_holding();
            let Some(conn) = find(&mut self.slots, handle) else { continue };
            conn.touched = false;
            if conn.closed {
                return Some(Io { handle, read: false, write: false, shut_write: false, close: true });
            }
            let read = conn.reads() && !holding;
            let write = !Self::is_held(&self.hold, conn) && conn.session.wants_write();
            let shut_write = conn.session.take_shut_write();
            return Some(Io { handle, read, write, shut_write, close: false });
        }
        if self.unpublished != 0 {
            self.shared.memory.add(mem::take(&mut self.unpublished));
        }
        None
    }

    /// Something of `handle` changed on the driver's side only (a
    /// completion came that the session did not see): [`Server::poll_io`]
    /// names it again.
    pub fn touch(&mut self, handle: Handle) {
        if let Some(conn) = self.conn(handle)
            && !conn.touched
        {
            conn.touched = true;
            self.touched.push(handle);
        }
    }

    /// The driver let `handle`'s descriptor go (nothing of it is left in
    /// the kernel): its slot may be reused, with a new generation.
    pub fn release(&mut self, handle: Handle) {
        let Some(slot) = self.slots.get_mut(handle.index()) else { return };
        if slot.generation != handle.generation || !slot.conn.as_ref().is_some_and(|c| c.closed) {
            return;
        }
        slot.conn = None;
        slot.generation = (slot.generation + 1) & GENERATION_MASK;
        self.free.push(handle.index);
        self.held -= 1;
        self.shared.places.release();
    }

    /// Why `handle`'s session ended, while the driver still holds it
    /// (closed, not yet [released](Server::release)).
    pub fn ended(&self, handle: Handle) -> Option<Close> {
        self.get(handle)?.ended
    }

    /// Sessions not over yet.
    pub fn open_sessions(&self) -> usize {
        self.slots.iter().filter(|s| s.conn.as_ref().is_some_and(|c| !c.closed)).count()
    }

    /// Every open session's handle, what it is charged against the client
    /// memory, and whether it was evicted (for checks and metrics).
    pub fn charges(&self) -> impl Iterator<Item = (Handle, usize, bool)> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let conn = slot.conn.as_ref().filter(|c| !c.closed)?;
            let handle = Handle { index: index as u32, generation: slot.generation };
            Some((handle, conn.share.held(), conn.session.is_evicted()))
        })
    }

    fn get(&self, handle: Handle) -> Option<&Conn> {
        let slot = self.slots.get(handle.index())?;
        if slot.generation != handle.generation {
            return None;
        }
        slot.conn.as_ref()
    }

    fn conn(&mut self, handle: Handle) -> Option<&mut Conn> {
        find(&mut self.slots, handle)
    }

    /// The connection of `handle` if its session is not over.
    fn open(&mut self, handle: Handle) -> Option<&mut Conn> {
        find_open(&mut self.slots, handle)
    }

    fn live_at(&self, index: usize) -> Option<Handle> {
        let slot = &self.slots[index];
        slot.conn.as_ref().filter(|c| !c.closed).map(|_| Handle { index: index as u32, generation: slot.generation })
    }

    /// After `handle`'s session moved on: counts what it answered, charges
    /// what it holds, counts how it ended once it is over, notes its next
    /// deadline and that its [`Io`] may have changed; then, if all
    /// connections together hold more than the cap, evicts.
    fn settle(&mut self, handle: Handle) {
        if self.settle_one(handle) {
            self.evict_over_cap();
        }
    }

    /// [`Server::settle`] without the eviction: true if over the cap.
    fn settle_one(&mut self, handle: Handle) -> bool {
        let (counters, memory) = (self.shared.counters, self.shared.memory);
        let Some(slot) = self.slots.get_mut(handle.index()) else { return false };
        let Some(conn) = slot.conn.as_mut().filter(|c| !c.closed) else { return false };
        let asked = conn.share.is_evicting() && !conn.session.is_evicted();
        if asked {
            conn.session.evict(&mut self.handler, &mut self.spare);
        }
        if conn.session.is_evicted() {
            conn.share.evicted();
        }
        counters.requests(conn.session.take_requests());
        counters.traffic(conn.session.take_traffic());
        counters.auth_failed(conn.peer, conn.session.take_auth_failures());
        if !conn.touched {
            conn.touched = true;
            self.touched.push(handle);
        }
        if conn.session.phase() == Phase::Closed {
            self.unpublished += memory.recharge(&conn.share, 0);
            let end = conn.session.take_end();
            counters.ended(conn.peer, &end);
            conn.ended = Some(close_of(&end));
            conn.closed = true;
            return false;
        }
        conn.session.release_buffers(&mut self.spare);
        self.unpublished += memory.recharge(&conn.share, conn.session.buffered());
        // A server of one connection among thousands (threaded) publishes every change.
        if self.unpublished.unsigned_abs() > PUBLISH_AT || self.elsewhere.is_some() {
            memory.add(mem::take(&mut self.unpublished));
        }
        if asked && let Some(elsewhere) = self.elsewhere {
            memory.add(mem::take(&mut self.unpublished));
            elsewhere.freed();
        }
        let over = memory.is_over_with(self.unpublished);
        if let Some(at) = conn.session.poll_timeout() {
            self.next_sweep = Some(self.next_sweep.map_or(at, |next| next.min(at)));
        }
        if let Some(at) = conn.look_again {
            self.next_sweep = Some(self.next_sweep.map_or(at, |next| next.min(at)));
        }
        over
    }

    /// Evicts [victims](memory::victim) until all connections together
    /// are under the cap (each connection at most once), then, sharing
    /// memory, asks elsewhere: one pass more than its connections.
    fn evict_over_cap(&mut self) {
        for _ in 0..=self.held {
            if !self.shared.memory.is_over_with(self.unpublished) {
                return;
            }
            let candidates = self.slots.iter().enumerate().filter_map(|(index, slot)| {
                let conn = slot.conn.as_ref().filter(|c| !c.closed && !c.session.is_evicted())?;
                Some((Handle { index: index as u32, generation: slot.generation }, conn.share.held()))
            });
            let victim = memory::victim(candidates);
            if let Some(elsewhere) = self.elsewhere {
                // What the others see is what they compare with.
                self.shared.memory.add(mem::take(&mut self.unpublished));
                // None of its own left (evicted, and freed too little): the next victim is elsewhere.
                let mine = victim.map_or(0, |v| find(&mut self.slots, v).expect("a candidate").share.held());
                if elsewhere.make_room(self.shared.memory, mine) {
                    return;
                }
            }
            let Some(victim) = victim else { return };
            let conn = find(&mut self.slots, victim).expect("a candidate");
            conn.session.evict(&mut self.handler, &mut self.spare);
            self.settle_one(victim);
            if let Some(elsewhere) = self.elsewhere {
                self.shared.memory.add(mem::take(&mut self.unpublished));
                elsewhere.freed();
            }
        }
    }
}

impl<H> Server<'_, H> {
    /// Ends every open session as `end()` says (counted, its memory given
    /// back) without another word to its peer: its thread panicked, say.
    /// The driver still closes and releases the handles.
    pub fn abandon(&mut self, end: impl Fn() -> End) {
        let (memory, counters) = (self.shared.memory, self.shared.counters);
        for conn in self.slots.iter_mut().filter_map(|slot| slot.conn.as_mut()).filter(|conn| !conn.closed) {
            self.unpublished += memory.recharge(&conn.share, 0);
            let end = end();
            counters.ended(conn.peer, &end);
            conn.ended = Some(close_of(&end));
            conn.closed = true;
        }
        memory.add(mem::take(&mut self.unpublished));
    }
}

/// A server dropped with sessions open (its thread panicked, or never
/// ran) gives back what they held: their places, their client memory, and
/// their count as open (ended by an IO error, unless
/// [abandoned](Server::abandon) first with a better reason).
impl<H> Drop for Server<'_, H> {
    fn drop(&mut self) {
        self.abandon(|| End::Io(std::io::Error::other("the server was dropped with the connection open")));
        for _ in self.slots.iter_mut().filter_map(|slot| slot.conn.take()) {
            self.shared.places.release();
        }
    }
}

fn find(slots: &mut [Slot], handle: Handle) -> Option<&mut Conn> {
    let slot = slots.get_mut(handle.index())?;
    if slot.generation != handle.generation {
        return None;
    }
    slot.conn.as_mut()
}

/// The connection of `handle` if its session is not over.
fn find_open(slots: &mut [Slot], handle: Handle) -> Option<&mut Conn> {
    find(slots, handle).filter(|c| !c.closed)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::sansio::session::Timing;
    use crate::sansio::wire::Protocols;
    use kvio_core::store::Slot;
    use kvio_core::{Store, StoreLimits};
    use std::time::Duration;

    const FRAME: usize = 1 << 20;
    const CAP: usize = 8 * FRAME;

    type TestStore = Store<Box<[Slot]>, Box<[u8]>>;

    fn server<'a>(shared: Shared<'a>) -> Server<'a, Protocols<TestStore>> {
        let limits = Limits {
            framing: Framing { max_frame_len: FRAME as u32, output_limit: 64 * 1024 },
            timing: Timing {
                idle: None,
                frame: None,
                handshake: Duration::from_secs(1),
                grace: Duration::from_secs(1),
                linger: Duration::from_secs(1),
                linger_bytes: 4096,
                stop_read_budget: 4096,
            },
            clock: Clock::starting(Instant::now(), 0),
            max_connections: 1000,
        };
        let slots = kvio_core::store::slots_for(16);
        let store = Store::with_storage(
            vec![Slot::EMPTY; slots].into_boxed_slice(),
            vec![0u8; 1 << 16].into_boxed_slice(),
            StoreLimits::for_frame(FRAME as u32, 16, 1 << 16),
        );
        Server::new(limits, shared, Protocols::new(store))
    }

    /// A loop's places, memory capped at [`CAP`] and counters.
    struct Shares {
        places: Places,
        memory: ClientMemory,
        counters: Counters,
    }

    impl Shares {
        fn new() -> Shares {
            Shares { places: Places::default(), memory: ClientMemory::new(CAP), counters: Counters::default() }
        }

        fn shared(&self) -> Shared<'_> {
            Shared {
                places: &self.places,
                memory: &self.memory,
                counters: &self.counters,
                security: &crate::sansio::security::OPEN,
            }
        }
    }

    fn errno(e: Errno) -> io::Error {
        io::Error::from_raw_os_error(e.raw_os_error())
    }

    #[test]
    fn a_failed_accept_that_would_repeat_pauses_accepting_until_its_deadline() {
        let shares = Shares::new();
        let mut server = server(shares.shared());
        let t0 = Instant::now();
        assert!(server.accepting());
        server.accept_failed(AcceptFailure::Failed(errno(Errno::MFILE)), t0);
        assert!(!server.accepting(), "no spare descriptor left: accepting pauses");
        assert_eq!(server.poll_timeout(), Some(t0 + ACCEPT_PAUSE), "the loop wakes when the pause ends");
        server.handle_timeout(t0 + ACCEPT_PAUSE - Duration::from_millis(1));
        assert!(!server.accepting(), "not before");
        server.handle_timeout(t0 + ACCEPT_PAUSE);
        assert!(server.accepting());
        assert_eq!(server.poll_timeout(), None);
        let figures = shares.counters.figures();
        assert_eq!((shares.counters.snapshot().errors, figures.refused), (1, 0), "an error, not a refusal");
    }

    #[test]
    fn refusals_at_the_door_are_counted_and_a_lost_connection_pauses_nothing() {
        let shares = Shares::new();
        let mut server = server(shares.shared());
        let now = Instant::now();
        server.accept_failed(AcceptFailure::OutOfDescriptors(errno(Errno::MFILE)), now);
        let peer = Some("127.0.0.1:9".parse().unwrap());
        server.accept_failed(AcceptFailure::Setup(peer, errno(Errno::INVAL)), now);
        assert_eq!(shares.counters.figures().refused, 2, "refused with the spare, and with no TCP_NODELAY");
        server.accept_failed(AcceptFailure::Failed(errno(Errno::CONNABORTED)), now);
        server.accept_failed(AcceptFailure::Failed(errno(Errno::PROTO)), now);
        assert!(server.accepting(), "the next connection may be accepted at once");
        assert_eq!(server.poll_timeout(), None);
        assert_eq!((shares.counters.snapshot().errors, shares.counters.figures().refused), (4, 2));
        server.begin_stop(now, |_| false);
        assert!(!server.accepting(), "nor during the stop");
    }

    /// The store's clock is read once per instant and reused (the drivers
    /// hand one instant to a whole batch), but a later instant is read
    /// again: an entry set with a 1 s expiry is there at once, gone 2 s on.
    #[test]
    fn the_store_clock_follows_each_new_instant() {
        let shares = Shares::new();
        let mut server = server(shares.shared());
        let t0 = Instant::now();
        let handle = server.accept(None, t0, Protocol::Resp).expect("admitted");
        let ask = |server: &mut Server<'_, Protocols<TestStore>>, request: &[u8], now: Instant| {
            server.received(handle, request, now);
            let answer = server.transmit(handle).to_vec();
            server.advance(handle, answer.len(), now);
            answer
        };
        assert_eq!(
            ask(&mut server, b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nPX\r\n$4\r\n1000\r\n", t0),
            b"+OK\r\n"
        );
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(ask(&mut server, get, t0), b"$1\r\nv\r\n", "the same instant: the reading reused");
        let later = t0 + Duration::from_secs(2);
        assert_eq!(ask(&mut server, get, later), b"$-1\r\n", "2 s on, past the expiry: read again");
    }

    /// A session that answered a broken frame with an error frame and
    /// lingers, its writing side shut.
    fn lingering(server: &mut Server<'_, Protocols<TestStore>>, now: Instant) -> Handle {
        let handle = server.accept(None, now, Protocol::Kvio).expect("admitted");
        server.received(handle, &[0, 0, 0, 0], now);
        let n = server.transmit(handle).len();
        server.advance(handle, n, now);
        assert!(server.is_lingering(handle) && server.take_shut_write(handle));
        handle
    }

    #[test]
    fn a_linger_whose_reading_side_the_driver_shut_is_read_at_a_pace_until_it_ends() {
        let shares = Shares::new();
        let mut server = server(shares.shared());
        let t0 = Instant::now();
        let handle = lingering(&mut server, t0);
        while server.poll_io().is_some() {}
        assert!(server.wants_read(handle), "lingering: late bytes are read and dropped");
        server.read_shut(handle, t0);
        assert!(!server.wants_read(handle), "a read now would say end of stream at once");
        let io = std::iter::from_fn(|| server.poll_io()).find(|io| io.handle == handle).expect("touched");
        assert!(!io.read && !io.close, "poll_io agrees: {io:?}");
        assert_eq!(server.wants(handle).map(|w| w.read), Some(false), "and wants agrees");
        assert_eq!(server.poll_timeout(), Some(t0 + LINGER_PACE));
        server.handle_timeout(t0 + LINGER_PACE - Duration::from_millis(1));
        assert!(!server.wants_read(handle));
        server.handle_timeout(t0 + LINGER_PACE);
        assert!(server.wants_read(handle), "looked at again after the pace");
        // The linger still ends at its deadline (1 s here), paced or not.
        let mut now = t0 + LINGER_PACE;
        while !server.is_closed(handle) {
            server.read_shut(handle, now);
            now = server.poll_timeout().expect("a deadline");
            assert!(now <= t0 + Duration::from_secs(1), "past the linger's deadline: {:?}", now - t0);
            server.handle_timeout(now);
        }
        assert_eq!(server.ended(handle), Some(Close::BadFrame));
    }

    #[test]
    fn a_session_whose_reading_side_the_driver_shut_reads_no_more_and_finishes() {
        use kvio_core::frame::encode_frame;
        use kvio_proto::{KeyValueMessage, Kind};
        use prost::Message;
        let shares = Shares::new();
        let mut server = server(shares.shared());
        let now = Instant::now();
        let handle = server.accept(None, now, Protocol::Kvio).expect("admitted");
        let get = KeyValueMessage { key: "k".into(), kind: Kind::Get.into(), ..Default::default() };
        let mut frame = Vec::new();
        encode_frame(&get.encode_to_vec(), &mut frame).unwrap();
        server.received(handle, &frame, now);
        server.read_shut(handle, now);
        assert!(!server.wants_read(handle), "nothing more is read");
        assert!(server.wants_write(handle), "the answer owed is still sent");
    }

    /// Group commit: with answers held, a turn's answers leave only once
    /// the driver says its turn is durable; a turn that failed to become
    /// durable keeps them until a later one does; without a hold nothing
    /// waits.
    #[test]
    fn held_answers_leave_only_once_their_turn_is_durable() {
        use kvio_core::frame::encode_frame;
        use kvio_proto::{KeyValueMessage, Kind};
        use prost::Message;
        let put = KeyValueMessage { key: "k".into(), value: "v".into(), kind: Kind::PutOrUpdate.into(), status: 0 };
        let mut frame = Vec::new();
        encode_frame(&put.encode_to_vec(), &mut frame).unwrap();
        let shares = Shares::new();
        let mut server = server(shares.shared());
        server.hold_answers();
        let now = Instant::now();
        let (a, b) =
            (server.accept(None, now, Protocol::Kvio).unwrap(), server.accept(None, now, Protocol::Kvio).unwrap());
        server.received(a, &frame, now);
        assert!(!server.wants_write(a) && server.transmit(a).is_empty() && server.take_transmit(a).is_none());
        while let Some(io) = server.poll_io() {
            assert!(!io.write, "no write interest while held: {io:?}");
        }
        let first = server.end_turn();
        server.received(b, &frame, now);
        let second = server.end_turn();
        // The first turn's records failed to reach the disk: nothing goes.
        assert_eq!(server.take_released(), None);
        server.durable(first);
        assert_eq!(server.take_released(), Some(a), "the first turn's answer goes");
        assert_eq!(server.take_released(), None);
        assert!(server.wants_write(a) && !server.transmit(a).is_empty());
        assert!(!server.wants_write(b), "the second turn's still waits");
        server.durable(second);
        assert_eq!(server.take_released(), Some(b));
        assert!(server.wants(b).is_some_and(|w| w.write));
        let mut plain = super::test::server(shares.shared());
        let c = plain.accept(None, now, Protocol::Kvio).unwrap();
        plain.received(c, &frame, now);
        assert!(plain.wants_write(c), "no hold without a journal");
        assert_eq!(plain.end_turn(), 0);
    }

    /// Other servers' connections, none of which can make room.
    #[derive(Debug)]
    struct NoOtherServer;

    impl Elsewhere for NoOtherServer {
        fn make_room(&self, _: &ClientMemory, _: usize) -> bool {
            false
        }
    }

    #[test]
    fn holding_for_room_is_one_rule_for_every_question_and_ends_when_one_of_mine_is_asked_to_go() {
        let shares = Shares::new();
        let mut server = server(shares.shared());
        server.share_memory_with(&NoOtherServer);
        let now = Instant::now();
        let mine = Arc::new(Share::default());
        let handle = server.accept_with(None, now, Protocol::Kvio, Arc::clone(&mine)).expect("admitted");
        while server.poll_io().is_some() {}
        assert!(!server.is_holding() && server.wants_read(handle));
        // Another server's connection takes the memory past the cap.
        let theirs = Share::default();
        shares.memory.charge(&theirs, CAP + 1);
        assert!(server.is_holding());
        assert!(!server.wants_read(handle));
        assert_eq!(server.wants(handle).map(|w| w.read), Some(false));
        server.touch(handle);
        assert!(!server.poll_io().expect("touched").read, "poll_io holds too");
        mine.ask_to_evict();
        assert!(!server.is_holding(), "asked to go: the driver must act on it, not wait");
        server.handle_asked();
        assert!(server.is_holding(), "evicted (it held nothing), and the total still over the cap");
        shares.memory.charge(&theirs, 0);
        assert!(!server.is_holding());
    }

    /// A frame's length prefix and all but 100 bytes of its payload.
    fn partial_frame() -> Vec<u8> {
        let mut wire = (FRAME as u32).to_le_bytes().to_vec();
        wire.resize(4 + FRAME - 100, b'x');
        wire
    }

    /// Two loops (servers over one [`ClientMemory`]), each reading partial
    /// megabyte frames into many connections in one turn, with no
    /// [`Server::poll_io`] between: the other loop sees the charges in time,
    /// so the two together stay within the cap and a [`PUBLISH_AT`] each.
    #[test]
    fn loops_sharing_the_cap_see_each_others_charges_within_a_turn() {
        let (places, counters) = (Places::default(), Counters::default());
        let memory = ClientMemory::new(CAP);
        let shared =
            Shared { places: &places, memory: &memory, counters: &counters, security: &crate::sansio::security::OPEN };
        let (mut a, mut b) = (server(shared), server(shared));
        let (now, wire) = (Instant::now(), partial_frame());
        for _ in 0..2 * CAP / FRAME {
            for server in [&mut a, &mut b] {
                let handle = server.accept(None, now, Protocol::Kvio).expect("admitted");
                for chunk in wire.chunks(64 * 1024) {
                    server.received(handle, chunk, now);
                }
            }
        }
        let held =
            |s: &Server<'_, _>| s.charges().filter(|(.., evicted)| !evicted).map(|(_, held, _)| held).sum::<usize>();
        let (held_a, held_b) = (held(&a), held(&b));
        let evicted = a.charges().chain(b.charges()).filter(|(.., evicted)| *evicted).count();
        assert!(evicted > 0, "over the cap, someone is evicted");
        assert!(
            held_a + held_b <= CAP + 2 * PUBLISH_AT,
            "the loops hold {} + {} bytes together, over the cap {CAP} + 2 x {PUBLISH_AT}",
            held_a,
            held_b
        );
        let published = memory.total() as isize;
        assert!(
            (published - (held_a + held_b) as isize).unsigned_abs() <= 2 * PUBLISH_AT,
            "published {published}, held {}",
            held_a + held_b
        );
    }
}
