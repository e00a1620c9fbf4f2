//! The sans-IO session: one client connection's state above
//! `kvio_core::Connection`, with every rule about *time* and *closing*, and
//! no socket and no clock. The shape is quinn-proto's `Connection`: input
//! goes in with the time it arrived, bytes to transmit come out, and the
//! session says when it next needs to be woken.
//!
//! - **Input**: [`Session::receive`] (bytes that arrived at `now`) and
//!   [`Session::peer_closed`] (the peer shut its sending side).
//! - **Output**: [`Session::transmit`] and [`Session::advance`] for a
//!   readiness driver; [`Session::take_transmit`] and
//!   [`Session::transmitted`] for a completion driver, which hands the
//!   buffer to the kernel and gives it back when the send completes.
//! - **Interest**: [`Session::wants_read`], [`Session::wants_write`], and
//!   [`Session::take_shut_write`] (shut the writing side now: a lingering
//!   close begins).
//! - **Time**: [`Session::poll_timeout`] is the earliest of the idle
//!   deadline, the frame deadline, the TLS handshake deadline, the stop's
//!   grace deadline and the linger deadline; [`Session::handle_timeout`]
//!   acts on whichever has passed.
//! - **State**: one [`Phase`]: open, draining, lingering, closed. Why it
//!   ended is [`Session::take_end`].
//! - **Stop**: [`Session::begin_shutdown`].
//!
//! The rules, each in one place:
//!
//! - *Idle*: a connection that moves no byte for `idle` is closed.
//! - *Frame deadline* (the blocking flavor only, whose one connection holds
//!   the whole server): once a frame's first byte arrived, or the previous
//!   request was answered, the frame must be whole within `frame`, or the
//!   connection is closed (no error frame: the stream is not broken, the
//!   client is too slow). Without it a client trickling a byte per tick
//!   would hold the server for ever.
//! - *Handshake deadline* (TLS): the handshake must be done within
//!   `handshake` of the accept, whatever the idle timeout (off, or longer)
//!   and however the bytes trickle; else the connection is closed. The
//!   idle timeout still applies: whichever comes first closes it.
//! - *Back-pressure*: while the unsent responses reach the output limit the
//!   session does not want to read; input already read but not taken is
//!   held and pushed again as the output drains.
//! - *Draining*: after a framing error (the error frame is queued), a
//!   response too large for the output, the peer's end of stream, or a
//!   stop, nothing new is read (a stop still reads at most
//!   `stop_read_budget` bytes already waiting); what is owed is written.
//! - *Lingering close*: when the peer may still be sending (framing error,
//!   output full, a stop that caught the client with input or output in
//!   flight), the writing side is shut once everything owed is written, and
//!   late bytes are read and dropped until the peer's end of stream, the
//!   linger deadline or the linger byte cap. Closing with unread input
//!   would make Linux answer with a reset that throws away the responses
//!   still queued, the error frame included.
//! - *Stop*: a session that owes nothing and holds no unread input closes
//!   at once; any other drains for at most the grace time, then lingers for
//!   at most the linger time. So a stop ends within grace + linger whatever
//!   the client does.
//!
//! Buffers: responses are appended to an output buffer borrowed from the
//! loop's [`Spare`] pool, and given back once sent, so a session between
//! requests holds no heap at all ([`Session::release_buffers`]) and the
//! steady state allocates nothing. A payload that arrived split and input
//! held back by back-pressure are the only other buffers.
//!
//! What it does not own: sockets, the clock, and how a flavor waits. Those
//! are the drivers' (`driver.rs` and the flavor files).

use std::mem;
use std::time::{Duration, Instant};

use std::fmt;
use std::io;

use kvio_core::{Outcome, Output, OutputFull};

pub use crate::sansio::outbuf::OutBuf;
use crate::sansio::security::{Auth, Guard};
use crate::sansio::tls::Tls;
pub use crate::sansio::wire::Framing;
use crate::sansio::wire::{Handlers, Protocol, ProtocolError, Wire};

/// Longest a lingering close waits for the peer's end of stream. Long
/// enough for a client to read a few MB of responses still queued and
/// see the FIN (loopback: milliseconds), short enough that a stop, or the
/// blocking flavor, which lingers in its only thread, is held only that long.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most late bytes a lingering close reads and drops. Above Linux's
/// largest default TCP receive buffer (tcp_rmem max, 6 MiB), so whatever
/// a pipelining client had queued when the stream broke is drained; a
/// client still sending after that is flooding and gets the reset.
pub const LINGER_BYTES: usize = 8 << 20;
/// How many idle timeouts a frame may take from its first byte to its
/// last when the frame deadline is on (the blocking flavor).
pub const FRAME_DEADLINE_IDLE_TIMEOUTS: u32 = 10;
/// How long a TLS handshake may take from the accept (see
/// [`Timing::handshake`]). A handshake is one or two round trips: a few
/// milliseconds on a LAN, under 2 s over a slow intercontinental link or
/// with a client certificate. Ten seconds leaves room for a loaded server
/// and a client that opens its connections before handshaking on any
/// (redis-benchmark does), and it is what ASP.NET Kestrel's
/// `HandshakeTimeout` defaults to (Node's `handshakeTimeout`: 120 s,
/// Python asyncio's `ssl_handshake_timeout`: 60 s, both made for the
/// Internet at large). A slower client is closed, and tries again.
pub const HANDSHAKE_TIME: Duration = Duration::from_secs(10);
/// Bytes a stopping session may still read: requests already waiting in
/// the socket when the stop came are answered, and a client that never
/// stops sending cannot keep the stop going.
pub const STOP_READ_BUDGET: usize = 64 * 1024;
/// The `value` of the error frame sent to a connection evicted because all
/// connections together hold more than `--max-client-memory` (the
/// handler's `Handler::evicted` writes it).
pub use kvio_proto::MEMORY_LIMIT_REASON;
/// How long a stopping server keeps trying to deliver responses to
/// requests it had already received.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Spare output buffers a loop keeps for its sessions.
const SPARE_BUFFERS: usize = 8;
/// A spare buffer larger than this is freed rather than kept (a 1 MB
/// response needs a 1 MB buffer once, not for ever).
const SPARE_MAX_CAPACITY: usize = 256 * 1024;

/// The timing rules of a session (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Close after this long with no byte moved; `None`: never.
    pub idle: Option<Duration>,
    /// A frame begun must be whole within this long; `None`: no deadline.
    pub frame: Option<Duration>,
    /// A TLS handshake must be done within this long of the accept
    /// (without TLS, nothing).
    pub handshake: Duration,
    /// How long a stop keeps writing what is owed.
    pub grace: Duration,
    /// How long a lingering close waits for the peer's end of stream.
    pub linger: Duration,
    /// How many late bytes a lingering close drops before giving up.
    pub linger_bytes: usize,
    /// How many bytes a stopping session may still read.
    pub stop_read_budget: usize,
}

/// The store's clock: milliseconds since the Unix epoch, read once when the
/// server starts and carried forward by the monotonic clock, so the time
/// the store compares expiries with never goes back (a wall clock set back
/// would make entries live longer; one set forward, expire early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    origin: Instant,
    origin_ms: u64,
}

impl Clock {
    /// A clock that reads `origin_ms` at `origin`.
    pub const fn starting(origin: Instant, origin_ms: u64) -> Clock {
        Clock { origin, origin_ms }
    }

    /// Its reading at `now`, in milliseconds.
    #[inline]
    pub fn millis(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_millis();
        self.origin_ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

impl Timing {
    /// Closes after `idle` without a byte moved; the server's grace and linger; no frame deadline.
    pub fn new(idle: Option<Duration>) -> Timing {
        Timing {
            idle,
            frame: None,
            handshake: HANDSHAKE_TIME,
            grace: SHUTDOWN_GRACE,
            linger: LINGER_TIME,
            linger_bytes: LINGER_BYTES,
            stop_read_budget: STOP_READ_BUDGET,
        }
    }

    /// With the frame deadline of [`FRAME_DEADLINE_IDLE_TIMEOUTS`] idle
    /// timeouts (none when there is no idle timeout).
    pub fn with_frame_deadline(self) -> Timing {
        Timing { frame: self.idle.map(|idle| idle * FRAME_DEADLINE_IDLE_TIMEOUTS), ..self }
    }
}

/// An output that also counts the bytes a completion driver has in flight,
/// so back-pressure sees everything unsent.
struct Counted<'a> {
    out: &'a mut OutBuf,
    in_flight: usize,
}

impl Output for Counted<'_> {
    fn pending(&self) -> usize {
        self.out.pending() + self.in_flight
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull> {
        self.out.append(len)
    }

    fn truncate_back(&mut self, len: usize) {
        self.out.truncate_back(len);
    }
}

/// Output buffers a loop lends to its sessions: a session takes one when it
/// has responses to queue and gives it back once they are sent.
#[derive(Debug)]
pub struct Spare {
    bufs: Vec<OutBuf>,
}

impl Default for Spare {
    fn default() -> Spare {
        Spare { bufs: Vec::with_capacity(SPARE_BUFFERS) }
    }
}

impl Spare {
    /// A buffer (empty, maybe with capacity).
    pub fn take(&mut self) -> OutBuf {
        self.bufs.pop().unwrap_or_default()
    }

    /// Takes `buf` back for the next session, or frees it.
    pub fn put(&mut self, mut buf: OutBuf) {
        if buf.capacity() > 0 && buf.capacity() <= SPARE_MAX_CAPACITY && self.bufs.len() < SPARE_BUFFERS {
            buf.clear();
            self.bufs.push(buf);
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and answering them.
    Open,
    /// Reading nothing new (or what a stop still allows); writing what is owed.
    Draining,
    /// The writing side is shut (or about to be); late bytes are dropped.
    Lingering,
    /// Done: the driver closes the socket and reads [`Session::take_end`].
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Draining {
        /// The stop's grace deadline (`None`: no stop yet; idle still applies).
        deadline: Option<Instant>,
        /// Bytes it may still read.
        read_left: usize,
        /// Requests wait in the socket (the stop's driver saw them): not
        /// done before they were read.
        input_waiting: bool,
        /// Whether the peer may still be sending once everything is written.
        linger: bool,
    },
    Lingering {
        deadline: Instant,
        /// Late bytes it may still drop.
        left: usize,
        /// The driver was told to shut the writing side.
        shut: bool,
    },
    Closed,
}

/// One client connection, apart from its socket. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    wire: Wire,
    timing: Timing,
    state: State,
    /// Why it ends, decided when closing begins.
    end: Option<End>,
    /// A payload that arrived split (empty otherwise).
    payload: Vec<u8>,
    /// Input read but not taken because of back-pressure.
    held: Vec<u8>,
    /// Responses not handed to the socket yet.
    out: OutBuf,
    /// Bytes a completion driver is sending (see [`Session::take_transmit`]).
    in_flight: usize,
    /// When a byte last moved either way.
    last_active: Instant,
    /// When the frame now arriving began (or the last request was answered).
    frame_since: Option<Instant>,
    /// Requests already handed to [`Session::take_requests`].
    reported: u64,
    /// Bytes received and sent since the last [`Session::take_traffic`].
    traffic: (u64, u64),
    /// Unsent answers at which it stops reading (and an eviction closes at once).
    output_limit: usize,
    /// Evicted under the client-memory cap (whatever ended it first).
    evicted: bool,
    /// Authentication and TLS, when the server has either (boxed: a
    /// plaintext session without a secret stays as small as it was).
    secured: Option<Box<Secured>>,
}

/// What a session of a server with a secret or TLS keeps.
#[derive(Debug, Default)]
struct Secured {
    auth: Option<Auth>,
    tls: Option<Tls>,
    /// Its close_notify is queued.
    notified: bool,
    /// When its TLS handshake must be done (with TLS).
    handshake_by: Option<Instant>,
}

impl Session {
    /// A new connection speaking `protocol`, at `now`.
    pub fn new(framing: Framing, timing: Timing, now: Instant, protocol: Protocol) -> Session {
        Session {
            wire: Wire::new(protocol, framing),
            timing,
            state: State::Open,
            end: None,
            payload: Vec::new(),
            held: Vec::new(),
            out: OutBuf::default(),
            in_flight: 0,
            last_active: now,
            frame_since: None,
            reported: 0,
            traffic: (0, 0),
            output_limit: framing.output_limit,
            evicted: false,
            secured: None,
        }
    }

    fn secured(&mut self) -> &mut Secured {
        self.secured.get_or_insert_default()
    }

    /// Requests are answered only once the connection showed the secret
    /// (see [`crate::sansio::security`]).
    pub fn require_auth(&mut self, auth: Auth) {
        self.secured().auth = Some(auth);
    }

    /// The connection speaks TLS (see [`crate::sansio::tls`]): bytes in are
    /// records, bytes out are records; its handshake, begun at `now`, must
    /// be done within [`Timing::handshake`].
    pub fn speak_tls(&mut self, tls: Tls, now: Instant) {
        let by = now + self.timing.handshake;
        let secured = self.secured();
        secured.tls = Some(tls);
        secured.handshake_by = Some(by);
    }

    /// Protected mode refuses the connection: it is told why in its
    /// protocol (after the handshake, with TLS), then closed, lingering.
    pub fn deny(&mut self) {
        if self.out.capacity() == 0 {
            self.out = OutBuf::default();
        }
        self.wire.denied(&mut self.out);
        self.drain_then_linger(End::Denied);
        self.seal();
    }

    /// Failed attempts to authenticate since the last call.
    pub fn take_auth_failures(&mut self) -> u32 {
        self.auth_mut().map_or(0, Auth::take_failures)
    }

    /// Whether it showed the secret (true when none is asked).
    pub fn is_authenticated(&self) -> bool {
        self.secured.as_ref().and_then(|s| s.auth.as_ref()).is_none_or(Auth::is_authenticated)
    }

    fn auth_mut(&mut self) -> Option<&mut Auth> {
        self.secured.as_deref_mut().and_then(|s| s.auth.as_mut())
    }

    fn tls(&self) -> Option<&Tls> {
        self.secured.as_deref().and_then(|s| s.tls.as_ref())
    }

    fn tls_mut(&mut self) -> Option<&mut Tls> {
        self.secured.as_deref_mut().and_then(|s| s.tls.as_mut())
    }

    /// Whether its TLS handshake is under way (then it reads whatever its
    /// state, so that a refusal queued meanwhile can be delivered).
    fn is_handshaking(&self) -> bool {
        self.tls().is_some_and(Tls::is_handshaking)
    }

    /// When the TLS handshake under way must be done (`None`: no TLS, or done).
    fn handshake_deadline(&self) -> Option<Instant> {
        let secured = self.secured.as_deref()?;
        secured.tls.as_ref().filter(|tls| tls.is_handshaking()).and(secured.handshake_by)
    }

    /// The bytes for the socket: records with TLS, the answers without.
    fn wire_out(&self) -> &OutBuf {
        match self.tls() {
            Some(tls) => &tls.out,
            None => &self.out,
        }
    }

    fn wire_out_mut(&mut self) -> &mut OutBuf {
        match self.secured.as_deref_mut().and_then(|s| s.tls.as_mut()) {
            Some(tls) => &mut tls.out,
            None => &mut self.out,
        }
    }

    /// With TLS: seals the answers waiting into records (see [`Tls::seal`]).
    #[inline]
    fn seal(&mut self) {
        if let Some(secured) = self.secured.as_deref_mut()
            && let Some(tls) = secured.tls.as_mut()
        {
            tls.seal(&mut self.out);
        }
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Open => Phase::Open,
            State::Draining { .. } => Phase::Draining,
            State::Lingering { .. } => Phase::Lingering,
            State::Closed => Phase::Closed,
        }
    }

    /// Whether the driver should read from the socket now.
    pub fn wants_read(&self) -> bool {
        match self.state {
            State::Open => self.can_take_input(),
            State::Draining { read_left, .. } => (read_left > 0 && self.can_take_input()) || self.is_handshaking(),
            // Drivers shut the writing side (take_shut_write) before they read.
            State::Lingering { .. } => true,
            State::Closed => false,
        }
    }

    /// Whether bytes wait for [`Session::transmit`] (none while a completion
    /// driver's send is in flight).
    pub fn wants_write(&self) -> bool {
        !self.wire_out().is_empty() && self.in_flight == 0 && matches!(self.state, State::Open | State::Draining { .. })
    }

    /// True once, when the driver must shut the socket's writing side: a
    /// lingering close begins (every response owed was written).
    pub fn take_shut_write(&mut self) -> bool {
        match &mut self.state {
            State::Lingering { shut, .. } if !*shut => {
                *shut = true;
                true
            }
            _ => false,
        }
    }

    /// Unsent response bytes, in flight included.
    pub fn pending(&self) -> usize {
        self.out.pending() + self.in_flight + self.tls().map_or(0, Tls::pending)
    }

    /// The bytes to send next (readiness drivers).
    pub fn transmit(&self) -> &[u8] {
        self.wire_out().unsent()
    }

    /// `n` bytes of [`Session::transmit`] were sent at `now`. Input held
    /// back by back-pressure is answered as room frees up.
    /// (`ms` is `now` on the store's [`Clock`], for the requests it answers.)
    pub fn advance<H: Handlers + ?Sized>(&mut self, n: usize, now: Instant, ms: u64, handler: &mut H) {
        self.wire_out_mut().advance(n);
        self.traffic.1 += n as u64;
        if n > 0 {
            self.last_active = now;
        }
        self.after_output(now, ms, handler);
    }

    /// Hands every unsent byte to a completion driver, which keeps the
    /// buffer alive until [`Session::transmitted`]; later responses queue
    /// in a fresh buffer meanwhile. `None` when nothing waits or a send is
    /// already in flight.
    pub fn take_transmit(&mut self, spare: &mut Spare) -> Option<OutBuf> {
        if !self.wants_write() {
            return None;
        }
        let buf = mem::replace(self.wire_out_mut(), spare.take());
        self.in_flight = buf.pending();
        Some(buf)
    }

    /// The send of `buf` (from [`Session::take_transmit`]) completed with
    /// `n` bytes written at `now`; what it did not write goes out first next.
    pub fn transmitted<H: Handlers + ?Sized>(
        &mut self,
        mut buf: OutBuf,
        n: usize,
        now: Instant,
        ms: u64,
        handler: &mut H,
        spare: &mut Spare,
    ) {
        self.in_flight = 0;
        buf.advance(n);
        self.traffic.1 += n as u64;
        if !buf.is_empty() && !matches!(self.state, State::Lingering { .. } | State::Closed) {
            // The unsent rest came before everything queued since.
            let out = self.wire_out_mut();
            buf.extend_from_slice(out.unsent());
            spare.put(mem::replace(out, buf));
        } else {
            spare.put(buf);
        }
        if n > 0 {
            self.last_active = now;
        }
        self.after_output(now, ms, handler);
    }

    /// `input` arrived at `now`: every complete request in it is answered
    /// (responses queue for [`Session::transmit`]); what back-pressure
    /// leaves untaken is held. While lingering, it is counted and dropped;
    /// while draining with nothing left to read (broken stream, evicted,
    /// stop budget spent), it is dropped: a completion driver may deliver
    /// bytes the kernel received before its receive was cancelled.
    /// (`ms` is `now` on the store's [`Clock`], for the requests it answers.)
    pub fn receive<H: Handlers + ?Sized>(
        &mut self,
        input: &[u8],
        now: Instant,
        ms: u64,
        handler: &mut H,
        spare: &mut Spare,
    ) {
        if self.tls().is_some() {
            return self.receive_records(input, now, ms, handler, spare);
        }
        self.receive_plain(input, now, ms, handler, spare);
    }

    /// [`Session::receive`] with TLS: the records are decrypted (a
    /// handshake read whatever the state, so a refusal can be delivered),
    /// and the plaintext goes on as without TLS.
    fn receive_records<H: Handlers + ?Sized>(
        &mut self,
        input: &[u8],
        now: Instant,
        ms: u64,
        handler: &mut H,
        spare: &mut Spare,
    ) {
        let reading = match self.state {
            State::Open => true,
            State::Draining { read_left, .. } => read_left > 0 || self.is_handshaking(),
            State::Lingering { .. } | State::Closed => false,
        };
        if !reading {
            // Counted and dropped (a linger counts its bytes).
            return self.receive_plain(input, now, ms, handler, spare);
        }
        self.traffic.0 += input.len() as u64;
        let tls = self.tls_mut().expect("a TLS session");
        match tls.decrypt(input) {
            Ok(found) => {
                let plain = tls.take_plain();
                if !plain.is_empty() {
                    // The wire's bytes are what is counted: the plaintext
                    // (which may be more than this input: a record's last
                    // byte releases all of it) is not counted again.
                    let wire = self.traffic.0;
                    self.receive_plain(&plain, now, ms, handler, spare);
                    self.traffic.0 = wire;
                }
                if let Some(tls) = self.tls_mut() {
                    tls.put_plain(plain);
                }
                if found.closed {
                    self.peer_closed(now);
                }
            }
            Err(e) => {
                // The alert is queued: it is written, then the connection closes.
                self.end.get_or_insert(End::Tls(e));
                self.held.clear();
                self.state = State::Draining { deadline: None, read_left: 0, input_waiting: false, linger: false };
            }
        }
        self.settle(now);
    }

    /// [`Session::receive`] of plaintext.
    fn receive_plain<H: Handlers + ?Sized>(
        &mut self,
        input: &[u8],
        now: Instant,
        ms: u64,
        handler: &mut H,
        spare: &mut Spare,
    ) {
        self.traffic.0 += input.len() as u64;
        match &mut self.state {
            State::Open => {}
            State::Draining { read_left: 0, .. } => return,
            State::Draining { read_left, input_waiting, .. } => {
                *read_left = read_left.saturating_sub(input.len());
                *input_waiting = false;
            }
            State::Lingering { left, .. } => {
                *left = left.saturating_sub(input.len());
                if *left == 0 {
                    self.state = State::Closed;
                }
                return;
            }
            State::Closed => return,
        }
        if input.is_empty() {
            return;
        }
        self.last_active = now;
        if !self.held.is_empty() {
            self.held.extend_from_slice(input);
            return;
        }
        if self.out.capacity() == 0 {
            self.out = spare.take();
        }
        let used = self.push(input, now, ms, handler);
        self.held.extend_from_slice(&input[used..]);
        self.settle(now);
    }

    /// The peer shut its sending side: what it sent is answered and
    /// written, then the connection closes (at once if lingering).
    pub fn peer_closed(&mut self, now: Instant) {
        match &mut self.state {
            State::Open => {
                self.end = Some(End::Eof);
                self.state = State::Draining { deadline: None, read_left: 0, input_waiting: false, linger: false };
            }
            State::Draining { read_left, linger, input_waiting, .. } => {
                // Nothing more can arrive: no reason to linger.
                *read_left = 0;
                *linger = false;
                *input_waiting = false;
            }
            State::Lingering { .. } => self.state = State::Closed,
            State::Closed => {}
        }
        self.settle(now);
    }

    /// The driver can read nothing more (it shut the socket's reading side
    /// itself): what was read is answered and written, and the close
    /// still lingers if it was going to.
    pub fn stop_reading(&mut self) {
        match &mut self.state {
            State::Open => self.drain_then_linger(End::Shutdown),
            State::Draining { read_left, input_waiting, .. } => {
                *read_left = 0;
                *input_waiting = false;
            }
            State::Lingering { .. } | State::Closed => {}
        }
    }

    /// The socket failed: the connection is over (the first reason to end is kept).
    pub fn io_error(&mut self, error: io::Error) {
        self.end.get_or_insert(End::Io(error));
        self.state = State::Closed;
    }

    /// The server is over its client-memory cap and this session holds the
    /// most: what it holds of a partial frame or held-back input is
    /// dropped at once, and it reads nothing more. It still gets the
    /// answers already made, then an error frame ([`MEMORY_LIMIT_REASON`]),
    /// then a lingering close; but a session whose unsent answers reached
    /// the output limit (back-pressure: its peer is not reading them) is
    /// closed at once, as an error frame would only queue behind them.
    /// A session already draining keeps its way of closing, and one whose
    /// stream broke keeps its framing error frame as its last word.
    /// Calling it again changes nothing.
    pub fn evict<H: Handlers + ?Sized>(&mut self, handler: &mut H, spare: &mut Spare) {
        if self.evicted || !matches!(self.state, State::Open | State::Draining { .. }) {
            return;
        }
        self.evicted = true;
        let held = self.buffered();
        self.payload = Vec::new();
        self.held = Vec::new();
        if self.pending() >= self.output_limit {
            self.out = OutBuf::default();
            // Its answers are lost, whatever was ending it before: this is why it ends.
            self.end = Some(End::MemoryLimit(held));
            self.state = State::Closed;
            return;
        }
        // Broken (a framing error, or a response too large): its last frame is queued already.
        if self.wire.wants_read(0) {
            if self.out.capacity() == 0 {
                self.out = spare.take();
            }
            // A growable output always has room.
            self.wire.evicted(handler, &mut self.out);
        }
        match &mut self.state {
            State::Draining { read_left, input_waiting, .. } => {
                // Nothing more is read, not even what a stop found waiting.
                *read_left = 0;
                *input_waiting = false;
                self.end.get_or_insert(End::MemoryLimit(held));
            }
            _ => self.drain_then_linger(End::MemoryLimit(held)),
        }
        self.seal();
    }

    /// Whether it was evicted under the client-memory cap (even if it was
    /// already ending for another reason, which [`Session::take_end`] keeps).
    pub fn is_evicted(&self) -> bool {
        self.evicted
    }

    /// The server stops. A session that owes nothing and holds no unread
    /// input (`input_waiting`: the driver saw bytes waiting in the socket)
    /// closes at once; any other stops reading (but for
    /// [`STOP_READ_BUDGET`]: requests already waiting are answered), writes
    /// what is owed until the grace deadline, and lingers. Calling it again
    /// changes nothing.
    pub fn begin_shutdown(&mut self, now: Instant, input_waiting: bool) {
        let grace = now + self.timing.grace;
        let quiet = self.is_quiet() && !input_waiting;
        match &mut self.state {
            State::Open if quiet => {
                self.end = Some(End::Shutdown);
                self.state = State::Closed;
            }
            State::Open => {
                self.end = Some(End::Shutdown);
                let read_left = self.timing.stop_read_budget;
                self.state = State::Draining { deadline: Some(grace), read_left, input_waiting, linger: true };
            }
            State::Draining { deadline, .. } => {
                deadline.get_or_insert(grace);
            }
            State::Lingering { .. } | State::Closed => {}
        }
        self.settle(now);
    }

    /// When [`Session::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.timing.idle.map(|idle| self.last_active + idle);
        match self.state {
            State::Open => {
                let frame = self.frame_since.zip(self.timing.frame).map(|(since, limit)| since + limit);
                earliest(earliest(idle, frame), self.handshake_deadline())
            }
            State::Draining { deadline, .. } => earliest(earliest(deadline, idle), self.handshake_deadline()),
            State::Lingering { deadline, .. } => Some(deadline),
            State::Closed => None,
        }
    }

    /// Acts on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        let idle_over = self.timing.idle.is_some_and(|idle| now >= self.last_active + idle);
        if matches!(self.state, State::Open | State::Draining { .. })
            && self.handshake_deadline().is_some_and(|at| now >= at)
        {
            // Whatever it was waiting for (its next handshake record, or to
            // write a refusal or an alert), it had its time.
            return self.close(End::SlowHandshake(self.timing.handshake));
        }
        match self.state {
            State::Open if idle_over => self.close(End::Idle),
            State::Open => {
                if let Some(limit) = self.timing.frame {
                    self.close(End::SlowFrame(limit));
                }
            }
            State::Draining { deadline: Some(at), linger, .. } if now >= at => {
                // Still owed answers after the whole grace: the peer does not read them,
                // and a linger would not change what it gets.
                if linger && self.pending() == 0 {
                    self.start_linger(now);
                } else {
                    self.state = State::Closed;
                }
            }
            // Writing what is owed to a peer that reads nothing.
            State::Draining { .. } => self.close(End::Idle),
            State::Lingering { .. } => self.state = State::Closed,
            State::Closed => {}
        }
    }

    /// Why the connection ended (once [`Phase::Closed`]).
    pub fn take_end(&mut self) -> End {
        self.end.take().unwrap_or(End::Eof)
    }

    /// Requests answered since the last call.
    pub fn take_requests(&mut self) -> usize {
        let total = self.wire.requests();
        let new = total - self.reported;
        self.reported = total;
        new as usize
    }

    /// Bytes received and sent since the last call.
    pub fn take_traffic(&mut self) -> (u64, u64) {
        mem::take(&mut self.traffic)
    }

    /// Heap bytes this session holds (a completion driver's send in flight included).
    pub fn buffered(&self) -> usize {
        let tls = self.tls().map_or(0, Tls::buffered);
        self.payload.capacity() + self.held.capacity() + self.out.capacity() + self.in_flight + tls
    }

    /// Frees every buffer not in use: a session between frames, with
    /// nothing held back and nothing to write, keeps no heap.
    pub fn release_buffers(&mut self, spare: &mut Spare) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            spare.put(mem::take(&mut self.out));
        }
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = Vec::new();
        }
        if self.wire.buffered() == 0 && self.payload.capacity() > 0 {
            self.payload = Vec::new();
        }
        if let Some(tls) = self.tls_mut()
            && tls.out.is_empty()
            && tls.out.capacity() > 0
        {
            spare.put(mem::take(&mut tls.out));
        }
    }

    /// Open, between frames, nothing held, nothing unsent.
    fn is_quiet(&self) -> bool {
        self.wire.is_at_boundary() && self.held.is_empty() && self.pending() == 0
    }

    fn can_take_input(&self) -> bool {
        self.held.is_empty() && self.wire.wants_read(self.pending())
    }

    /// Pushes `input` through the connection; returns the bytes taken.
    fn push<H: Handlers + ?Sized>(&mut self, input: &[u8], now: Instant, ms: u64, handler: &mut H) -> usize {
        let was_at_boundary = self.wire.is_at_boundary();
        let mut out = Counted { out: &mut self.out, in_flight: self.in_flight };
        let auth = self.secured.as_deref_mut().and_then(|s| s.auth.as_mut());
        let received = match auth {
            None => self.wire.receive(input, ms, &mut self.payload, handler, &mut out),
            Some(auth) => self.wire.receive(input, ms, &mut self.payload, &mut Guard::new(handler, auth), &mut out),
        };
        match received.outcome {
            Outcome::NeedMore | Outcome::Backpressure => {}
            Outcome::Close(e) => self.drain_then_linger(End::Protocol(e)),
            Outcome::OutputFull => self.drain_then_linger(End::OutputFull),
            Outcome::Quit if self.auth_mut().is_some_and(|a| a.is_exhausted()) => {
                self.drain_then_linger(End::AuthFailed)
            }
            Outcome::Quit => self.drain_then_linger(End::Quit),
        }
        if self.timing.frame.is_some() {
            self.frame_since = if self.wire.is_at_boundary() {
                None
            } else if was_at_boundary || received.requests > 0 {
                Some(now)
            } else {
                self.frame_since
            };
        }
        received.consumed
    }

    /// Output was sent: answer held input if there is room now, then settle.
    fn after_output<H: Handlers + ?Sized>(&mut self, now: Instant, ms: u64, handler: &mut H) {
        if !self.held.is_empty() && self.wire.wants_read(self.pending()) {
            let held = mem::take(&mut self.held);
            let used = self.push(&held, now, ms, handler);
            self.held = held;
            self.held.drain(..used);
        }
        self.settle(now);
    }

    /// Ends a draining session once everything owed is written.
    fn settle(&mut self, now: Instant) {
        self.seal();
        let State::Draining { linger, input_waiting, .. } = self.state else { return };
        if self.wire.is_broken() || !self.wire.wants_read(0) {
            // Broken: nothing held can ever be answered.
            self.held.clear();
        }
        if self.pending() > 0 || !self.held.is_empty() || input_waiting {
            return;
        }
        if let Some(secured) = self.secured.as_deref_mut()
            && let Some(tls) = secured.tls.as_mut()
            && !secured.notified
            && !tls.is_handshaking()
            && !matches!(self.end, Some(End::Tls(_)))
        {
            // The peer may tell this end from a cut: close_notify, written first.
            secured.notified = true;
            tls.close_notify();
            if tls.pending() > 0 {
                return;
            }
        }
        if linger {
            self.start_linger(now);
        } else {
            self.state = State::Closed;
        }
    }

    /// Stops reading; closes once what is owed is written, lingering after.
    fn drain_then_linger(&mut self, end: End) {
        self.end.get_or_insert(end);
        let deadline = match self.state {
            State::Draining { deadline, .. } => deadline,
            _ => None,
        };
        self.state = State::Draining { deadline, read_left: 0, input_waiting: false, linger: true };
    }

    fn start_linger(&mut self, now: Instant) {
        // Whatever is still unsent will not be: the peer did not read it in time.
        self.out.clear();
        if let Some(tls) = self.tls_mut() {
            tls.out.clear();
        }
        self.held.clear();
        // No frame is parsed any more.
        self.payload = Vec::new();
        let (linger, left) = (self.timing.linger, self.timing.linger_bytes);
        self.state = State::Lingering { deadline: now + linger, left, shut: false };
    }

    fn close(&mut self, end: End) {
        self.end.get_or_insert(end);
        self.state = State::Closed;
    }
}

/// Why a connection was closed.
#[derive(Debug)]
pub enum End {
    /// The client closed its side and every response was written.
    Eof,
    /// The byte stream broke; the protocol's error answer was sent.
    Protocol(ProtocolError),
    /// The client asked to close (RESP `QUIT`, memcached `quit`).
    Quit,
    /// A response did not fit the output buffer.
    OutputFull,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A frame begun was not complete within the frame deadline (blocking flavor).
    SlowFrame(Duration),
    /// The TLS handshake was not done within [`Timing::handshake`] of the accept.
    SlowHandshake(Duration),
    /// The server is stopping.
    Shutdown,
    /// Evicted: all connections together held more than
    /// `--max-client-memory`, and this one held the most (bytes).
    MemoryLimit(usize),
    /// A socket error (reset, broken pipe...).
    Io(io::Error),
    /// The connection's thread panicked (threaded flavor).
    Panic,
    /// Protected mode refused the peer (told why, in its protocol).
    Denied,
    /// Too many wrong secrets ([`crate::sansio::security::MAX_AUTH_FAILURES`]).
    AuthFailed,
    /// TLS failed: not TLS, a handshake refused, a bad record (the alert was sent).
    Tls(rustls::Error),
}

impl End {
    /// Counted in the errors of the server's stats.
    pub fn is_error(&self) -> bool {
        matches!(self, End::Protocol(_) | End::OutputFull | End::Io(_) | End::Panic | End::MemoryLimit(_) | End::Tls(_))
    }

    /// Worth a log line (not a normal end).
    pub fn is_logged(&self) -> bool {
        !matches!(self, End::Eof | End::Quit | End::Shutdown)
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("end of stream"),
            End::Protocol(e) => write!(f, "{e}"),
            End::Quit => f.write_str("the client quit"),
            End::OutputFull => f.write_str("response larger than the output buffer"),
            End::Idle => f.write_str("idle timeout"),
            End::SlowFrame(limit) => write!(f, "frame not complete within {} ms of its first byte", limit.as_millis()),
            End::SlowHandshake(limit) => write!(f, "TLS handshake not done within {} ms", limit.as_millis()),
            End::Shutdown => f.write_str("server stopping"),
            End::MemoryLimit(held) => {
                write!(f, "client memory limit reached; this connection held the most ({held} bytes)")
            }
            End::Io(e) => write!(f, "io error: {e}"),
            End::Panic => f.write_str("connection thread panicked"),
            End::Denied => f.write_str("refused by protected mode (no --auth-file, and the peer is not on loopback)"),
            End::AuthFailed => {
                write!(f, "{} wrong secrets (AUTH) on one connection", crate::sansio::security::MAX_AUTH_FAILURES)
            }
            End::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::sansio::wire::Protocols;
    use kvio_core::FrameError;
    use kvio_core::frame::{FrameParser, Parse, encode_frame};
    use kvio_core::store::Slot;
    use kvio_core::{Store, StoreLimits};
    use kvio_proto::{KeyValueMessage, Kind};
    use prost::Message;

    const MS: Duration = Duration::from_millis(1);

    type TestStore = Store<Box<[Slot]>, Box<[u8]>>;

    fn framing() -> Framing {
        Framing { max_frame_len: kvio_core::DEFAULT_MAX_FRAME_LEN, output_limit: 1024 }
    }

    fn store() -> TestStore {
        let limits = StoreLimits::for_frame(kvio_core::DEFAULT_MAX_FRAME_LEN, 1000, 1 << 20);
        let slots = kvio_core::store::slots_for(1000);
        Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; 1 << 20].into_boxed_slice(), limits)
    }

    fn timing() -> Timing {
        Timing {
            idle: Some(1000 * MS),
            frame: None,
            handshake: 2000 * MS,
            grace: 300 * MS,
            linger: 500 * MS,
            linger_bytes: 10_000,
            stop_read_budget: 4096,
        }
    }

    fn request(kind: Kind, key: &str, value: &str) -> Vec<u8> {
        let msg = KeyValueMessage { key: key.into(), value: value.into(), kind: kind.into(), status: 0 };
        let mut frame = Vec::new();
        encode_frame(&msg.encode_to_vec(), &mut frame).unwrap();
        frame
    }

    /// Decodes every whole response frame in `wire`.
    fn responses(wire: &[u8]) -> Vec<KeyValueMessage> {
        let mut parser = FrameParser::new(1 << 20);
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < wire.len() {
            let (used, status) = parser.push(&wire[pos..], &mut buf).unwrap();
            pos += used;
            if let Parse::Complete(payload) = status {
                out.push(KeyValueMessage::decode(payload).unwrap());
            }
        }
        out
    }

    /// A session with a fake clock (`t0` plus what the test says) and a
    /// wire that takes `window` bytes per send.
    struct Rig {
        t0: Instant,
        session: Session,
        handler: Protocols<TestStore>,
        spare: Spare,
        wire: Vec<u8>,
    }

    impl Rig {
        fn new(timing: Timing) -> Rig {
            let t0 = Instant::now();
            Rig {
                t0,
                session: Session::new(framing(), timing, t0, Protocol::Kvio),
                handler: Protocols::new(store()),
                spare: Spare::default(),
                wire: Vec::new(),
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn receive(&mut self, ms: u64, bytes: &[u8]) {
            let now = self.at(ms);
            self.session.receive(bytes, now, 0, &mut self.handler, &mut self.spare);
        }

        /// The socket takes at most `window` bytes.
        fn send(&mut self, ms: u64, window: usize) -> usize {
            let n = self.session.transmit().len().min(window);
            self.wire.extend_from_slice(&self.session.transmit()[..n]);
            let now = self.at(ms);
            self.session.advance(n, now, 0, &mut self.handler);
            n
        }

        fn tick(&mut self, ms: u64) {
            let now = self.at(ms);
            self.session.handle_timeout(now);
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_an_idle_session_keeps_no_buffers() {
        let mut rig = Rig::new(timing());
        let mut burst = request(Kind::PutOrUpdate, "k", "v1");
        burst.extend(request(Kind::Get, "k", ""));
        burst.extend(request(Kind::Get, "missing", ""));
        rig.receive(0, &burst);
        assert_eq!(rig.session.take_requests(), 3);
        assert_eq!(rig.session.take_traffic(), (burst.len() as u64, 0), "bytes received, none sent yet");
        assert!(rig.session.wants_write());
        rig.send(0, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].kind, got[0].status), (3, 0));
        assert_eq!((got[1].key.as_str(), got[1].value.as_str(), got[1].status), ("k", "v1", 0));
        assert_eq!((got[2].key.as_str(), got[2].status), ("missing", 1));
        rig.session.release_buffers(&mut rig.spare);
        assert_eq!(rig.session.buffered(), 0, "idle session holds no heap");
        assert!(rig.session.wants_read() && !rig.session.wants_write());
    }

    #[test]
    fn idle_timeout_closes_a_silent_session_and_activity_postpones_it() {
        let mut rig = Rig::new(timing());
        assert_eq!(rig.session.poll_timeout(), Some(rig.at(1000)));
        rig.receive(600, &request(Kind::Get, "k", ""));
        rig.send(700, usize::MAX);
        assert_eq!(rig.session.poll_timeout(), Some(rig.at(1700)), "moved by the send");
        rig.tick(1699);
        assert_eq!(rig.session.phase(), Phase::Open);
        rig.tick(1700);
        assert_eq!(rig.session.phase(), Phase::Closed);
        assert!(matches!(rig.session.take_end(), End::Idle));
    }

    #[test]
    fn no_idle_timeout_means_no_deadline() {
        let rig = Rig::new(Timing { idle: None, ..timing() });
        assert_eq!(rig.session.poll_timeout(), None);
    }

    #[test]
    fn frame_deadline_cuts_a_trickled_frame_but_not_a_quiet_connection() {
        let slow = Timing { idle: Some(100 * MS), ..timing() }.with_frame_deadline();
        assert_eq!(slow.frame, Some(1000 * MS));
        let mut rig = Rig::new(slow);
        let frame = request(Kind::PutOrUpdate, "key", "a value that takes a while");
        // One byte every 50 ms keeps the idle timer happy...
        for (i, byte) in frame[..30].iter().enumerate() {
            let ms = 10 + 50 * i as u64;
            rig.receive(ms, std::slice::from_ref(byte));
            rig.tick(ms);
            if ms < 1010 {
                assert_eq!(rig.session.phase(), Phase::Open, "at {ms} ms");
            }
        }
        // ... but the frame began at 10 ms: it must be whole by 1010 ms.
        assert_eq!(rig.session.phase(), Phase::Closed);
        assert!(matches!(rig.session.take_end(), End::SlowFrame(d) if d == 1000 * MS));

        // Between frames only the idle timer runs.
        let mut quiet = Rig::new(Timing { idle: Some(100 * MS), ..timing() }.with_frame_deadline());
        quiet.receive(0, &request(Kind::Get, "k", ""));
        quiet.send(0, usize::MAX);
        assert_eq!(quiet.session.poll_timeout(), Some(quiet.at(100)));
    }

    #[test]
    fn frame_deadline_restarts_with_each_answered_request() {
        let mut rig = Rig::new(Timing { idle: Some(100 * MS), ..timing() }.with_frame_deadline());
        let frame = request(Kind::Get, "k", "");
        for i in 0..30u64 {
            // A whole request plus the first byte of the next, every 90 ms: 2.7 s in all.
            let mut bytes = frame[1..].to_vec();
            bytes.push(frame[0]);
            if i == 0 {
                bytes.insert(0, frame[0]);
            }
            rig.receive(i * 90, &bytes);
            rig.send(i * 90, usize::MAX);
            rig.tick(i * 90 + 89);
            assert_eq!(rig.session.phase(), Phase::Open, "request {i}");
        }
    }

    #[test]
    fn backpressure_stops_reading_and_resumes_once_the_output_drains() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::PutOrUpdate, "k", &"x".repeat(500)));
        rig.send(0, usize::MAX);
        rig.wire.clear();
        let get = request(Kind::Get, "k", "");
        let burst: Vec<u8> = get.iter().copied().cycle().take(get.len() * 10).collect();
        rig.receive(1, &burst);
        // Output limit 1024, each answer ~520 bytes: two answers, then held.
        assert!(!rig.session.wants_read(), "back-pressure");
        assert_eq!(rig.session.take_requests(), 3, "the put, and gets up to the limit");
        assert!(rig.session.pending() >= 1024);
        // The client reads a little: still over the limit, nothing resumes.
        rig.send(2, 100);
        assert!(!rig.session.wants_read());
        // The client reads everything: held requests are answered as room frees up.
        while rig.session.wants_write() {
            rig.send(3, 700);
        }
        assert!(rig.session.wants_read(), "reading again");
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|m| m.value.len() == 500 && m.kind == 2));
    }

    #[test]
    fn a_framing_error_answers_earlier_requests_then_the_error_then_lingers() {
        let mut rig = Rig::new(timing());
        let mut burst = request(Kind::PutOrUpdate, "k", "v");
        burst.extend_from_slice(&2u32.to_le_bytes());
        burst.extend(request(Kind::Get, "k", ""));
        rig.receive(0, &burst);
        assert_eq!(rig.session.phase(), Phase::Draining);
        assert!(!rig.session.wants_read());
        assert!(!rig.session.take_shut_write(), "not before the error frame is written");
        rig.send(1, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].kind, got[1].status, got[1].value.as_str()), (0, 1, FrameError::TooShort.as_str()));
        assert_eq!(rig.session.phase(), Phase::Lingering);
        assert!(rig.session.take_shut_write());
        assert!(!rig.session.take_shut_write(), "once");
        assert!(rig.session.wants_read(), "late bytes are read and dropped");
        assert!(matches!(rig.session.take_end(), End::Protocol(ProtocolError::Frame(FrameError::TooShort))));
    }

    /// A session lingering after a framing error at 0 ms, with the test's
    /// linger of 500 ms and 10,000 bytes.
    fn lingering() -> Rig {
        let mut rig = Rig::new(timing());
        rig.receive(0, &0u32.to_le_bytes());
        rig.send(0, usize::MAX);
        assert!(rig.session.take_shut_write());
        rig
    }

    #[test]
    fn linger_ends_at_the_peers_end_of_stream() {
        let mut rig = lingering();
        rig.receive(10, &request(Kind::Get, "late", ""));
        assert_eq!(rig.session.take_requests(), 0, "late requests are dropped, not answered");
        assert_eq!(rig.session.phase(), Phase::Lingering);
        rig.session.peer_closed(rig.at(20));
        assert_eq!(rig.session.phase(), Phase::Closed);
    }

    #[test]
    fn linger_ends_at_its_deadline() {
        let mut rig = lingering();
        assert_eq!(rig.session.poll_timeout(), Some(rig.at(500)));
        rig.tick(499);
        assert_eq!(rig.session.phase(), Phase::Lingering);
        rig.tick(500);
        assert_eq!(rig.session.phase(), Phase::Closed);
    }

    #[test]
    fn linger_ends_at_its_byte_cap() {
        let mut rig = lingering();
        rig.receive(1, &[0u8; 9_999]);
        assert_eq!(rig.session.phase(), Phase::Lingering);
        rig.receive(2, &[0u8; 1]);
        assert_eq!(rig.session.phase(), Phase::Closed);
    }

    #[test]
    fn a_stop_closes_an_idle_session_at_once() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::PutOrUpdate, "k", "v"));
        rig.send(0, usize::MAX);
        rig.session.begin_shutdown(rig.at(5), false);
        assert_eq!(rig.session.phase(), Phase::Closed, "owes nothing, holds nothing: no linger");
        assert!(!rig.session.take_shut_write());
        assert!(matches!(rig.session.take_end(), End::Shutdown));
    }

    #[test]
    fn a_stop_with_requests_waiting_in_the_socket_reads_and_answers_them() {
        let mut rig = Rig::new(timing());
        rig.session.begin_shutdown(rig.at(0), true);
        assert_eq!(rig.session.phase(), Phase::Draining, "not quiet: its requests wait in the socket");
        assert!(rig.session.wants_read());
        rig.receive(1, &request(Kind::Get, "k", "").repeat(3));
        rig.send(2, usize::MAX);
        assert_eq!(responses(&rig.wire).len(), 3);
        assert_eq!(rig.session.phase(), Phase::Lingering);
    }

    #[test]
    fn a_stop_mid_pipeline_writes_every_answer_then_lingers() {
        let mut rig = Rig::new(timing());
        let mut burst = Vec::new();
        for i in 0..20 {
            burst.extend(request(Kind::PutOrUpdate, &format!("k{i}"), &"v".repeat(100)));
        }
        // Half a frame more: the client was caught mid-send.
        let next = request(Kind::Get, "k1", "");
        burst.extend_from_slice(&next[..5]);
        rig.receive(0, &burst);
        rig.session.begin_shutdown(rig.at(1), false);
        assert_eq!(rig.session.phase(), Phase::Draining);
        assert_eq!(rig.session.poll_timeout(), Some(rig.at(301)), "the grace deadline");
        assert!(rig.session.wants_read(), "what already waits in the socket is still read");
        rig.receive(2, &next[5..]);
        rig.send(3, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 21, "every answer owed");
        assert_eq!(rig.session.phase(), Phase::Lingering);
        assert!(rig.session.take_shut_write());
        assert_eq!(rig.session.poll_timeout(), Some(rig.at(503)));
    }

    #[test]
    fn a_stop_reads_no_more_than_its_budget() {
        let mut rig = Rig::new(timing());
        let get = request(Kind::Get, "k", "");
        rig.receive(0, &get[..3]);
        rig.session.begin_shutdown(rig.at(1), false);
        rig.receive(1, &get[3..]);
        let mut answered = 0;
        for ms in 2..1000 {
            if !rig.session.wants_read() {
                break;
            }
            rig.receive(ms, &get);
            answered += rig.session.take_requests();
            rig.send(ms, usize::MAX);
        }
        assert!(!rig.session.wants_read(), "a client that never stops sending is cut off");
        assert!(answered * get.len() <= 4096 + get.len(), "{answered}");
    }

    #[test]
    fn a_stop_against_a_client_that_never_reads_ends_at_the_grace() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::PutOrUpdate, "k", &"x".repeat(900)));
        rig.send(0, usize::MAX);
        rig.receive(1, &request(Kind::Get, "k", "").repeat(5));
        rig.session.begin_shutdown(rig.at(10), false);
        // The client reads nothing: the grace runs out with answers unsent.
        rig.tick(309);
        assert_eq!(rig.session.phase(), Phase::Draining);
        rig.tick(310);
        assert_eq!(rig.session.phase(), Phase::Closed, "no linger for a peer that reads nothing");
        assert!(matches!(rig.session.take_end(), End::Shutdown));
    }

    #[test]
    fn a_stop_that_catches_half_a_frame_lingers_at_once() {
        let mut rig = Rig::new(timing());
        let get = request(Kind::Get, "k", "");
        rig.receive(0, &get[..4]);
        rig.session.begin_shutdown(rig.at(10), false);
        // Nothing owed, and the client may still be sending the rest: no answer, a linger.
        assert_eq!(rig.session.phase(), Phase::Lingering);
        assert!(rig.session.take_shut_write());
        rig.tick(509);
        assert_eq!(rig.session.phase(), Phase::Lingering);
        rig.tick(510);
        assert_eq!(rig.session.phase(), Phase::Closed);
        assert_eq!(rig.session.take_requests(), 0);
    }

    #[test]
    fn eviction_drops_a_partial_frame_and_sends_the_error_frame() {
        let mut rig = Rig::new(timing());
        let frame = request(Kind::PutOrUpdate, "k", &"v".repeat(5000));
        rig.receive(0, &frame[..10]);
        rig.receive(1, &frame[10..4000]);
        assert!(rig.session.buffered() >= 4000, "the partial payload is held");
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert!(rig.session.buffered() < 1000, "dropped at once: {}", rig.session.buffered());
        assert!(!rig.session.wants_read());
        rig.send(2, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].kind, got[0].status, got[0].value.as_str()), (0, 1, MEMORY_LIMIT_REASON));
        assert_eq!(rig.session.phase(), Phase::Lingering);
        assert!(matches!(rig.session.take_end(), End::MemoryLimit(n) if n >= 4000));
    }

    #[test]
    fn bytes_arriving_after_an_eviction_are_dropped_not_buffered() {
        let mut rig = Rig::new(timing());
        let frame = request(Kind::PutOrUpdate, "k", &"v".repeat(5000));
        rig.receive(0, &frame[..4000]);
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        let after = rig.session.buffered();
        // A completion driver's receive posted the rest before its cancel took effect.
        rig.receive(1, &frame[4000..]);
        assert_eq!(rig.session.buffered(), after, "the evicted payload grows again");
        assert_eq!(rig.session.take_requests(), 0);
        rig.send(2, usize::MAX);
        assert_eq!(responses(&rig.wire).len(), 1, "the error frame only");
    }

    #[test]
    fn eviction_sends_the_answers_owed_then_the_error_frame() {
        let mut rig = Rig::new(timing());
        let mut burst = request(Kind::PutOrUpdate, "k", "v");
        burst.extend(request(Kind::Get, "k", ""));
        let big = request(Kind::PutOrUpdate, "big", &"b".repeat(5000));
        burst.extend_from_slice(&big[..3000]);
        rig.receive(0, &burst);
        assert!(rig.session.pending() > 0, "two answers unsent");
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert!(rig.session.is_evicted());
        rig.send(1, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].kind, got[1].value.as_str()), (3, "v"));
        assert_eq!((got[2].kind, got[2].value.as_str()), (0, MEMORY_LIMIT_REASON));
        assert_eq!(rig.session.phase(), Phase::Lingering);
    }

    /// Found by the `server` fuzz target (fuzz/regressions/server/over-cap):
    /// a session draining after its peer's end of stream was evicted without
    /// being marked (its end stayed `Eof`), so the server picked it again and
    /// again, queueing an error frame each time, and never reached the next
    /// victim: the total stayed over the cap.
    #[test]
    fn evicting_a_session_draining_after_end_of_stream_marks_it_once() {
        let mut rig = Rig::new(timing());
        let mut burst = request(Kind::PutOrUpdate, "k", "v");
        burst.extend(request(Kind::Get, "k", ""));
        rig.receive(0, &burst);
        rig.session.peer_closed(rig.at(1));
        assert_eq!(rig.session.phase(), Phase::Draining, "two answers unsent");
        for _ in 0..3 {
            rig.session.evict(&mut rig.handler, &mut rig.spare);
            assert!(rig.session.is_evicted());
        }
        rig.send(2, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 3, "the two answers and one error frame: {got:?}");
        assert_eq!((got[2].kind, got[2].value.as_str()), (0, MEMORY_LIMIT_REASON));
        assert_eq!(rig.session.phase(), Phase::Closed, "the peer closed first: no linger");
    }

    /// The `server` fuzz target's crash-909bed7e: evicted during the stop,
    /// a session kept its first reason to end (the stop), so it did not
    /// count as evicted and the server evicted it again and again, each
    /// time queueing another error frame, while the others stayed over the cap.
    #[test]
    fn an_eviction_during_the_stop_happens_once() {
        let mut rig = Rig::new(timing());
        let frame = request(Kind::PutOrUpdate, "k", &"v".repeat(5000));
        rig.receive(0, &frame[..3000]);
        rig.session.begin_shutdown(rig.at(1), true);
        assert_eq!(rig.session.phase(), Phase::Draining);
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert!(rig.session.is_evicted(), "evicted, whatever ended it first");
        let owed = rig.session.pending();
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert_eq!(rig.session.pending(), owed, "a second eviction changes nothing");
        rig.send(2, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 1, "one error frame: {got:?}");
        assert_eq!(got[0].value, MEMORY_LIMIT_REASON);
        assert!(matches!(rig.session.take_end(), End::Shutdown), "the first reason to end is kept");
    }

    #[test]
    fn eviction_of_a_client_that_does_not_read_closes_at_once() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::PutOrUpdate, "k", &"x".repeat(900)));
        rig.send(0, usize::MAX);
        rig.receive(1, &request(Kind::Get, "k", "").repeat(5));
        assert!(rig.session.pending() > 0);
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert_eq!(rig.session.phase(), Phase::Closed);
        assert_eq!(rig.session.buffered(), 0);
    }

    /// The model's `evict-broken-stream` (fuzz/regressions/server): the
    /// stream broke, so its error frame is queued; an eviction far below
    /// the output limit must not lose the answers and the error frame.
    #[test]
    fn eviction_after_a_framing_error_keeps_the_answers_and_the_one_error_frame() {
        let mut rig = Rig::new(timing());
        let mut burst = request(Kind::PutOrUpdate, "k", "v");
        burst.extend(request(Kind::Get, "k", ""));
        burst.extend([0, 0, 0, 0]);
        rig.receive(0, &burst);
        assert_eq!(rig.session.phase(), Phase::Draining);
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert!(rig.session.is_evicted());
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        rig.send(1, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 3, "both answers, then one error frame: {got:?}");
        assert_eq!((got[0].kind, got[1].value.as_str()), (3, "v"));
        assert_eq!((got[2].kind, got[2].value.as_str()), (0, "frame length below 5"));
        assert_eq!(rig.session.phase(), Phase::Lingering);
    }

    /// The model's `evict-draining-after-eof`: evicted after the peer's
    /// end, it is evicted (once: one error frame), and closes without
    /// waiting for an end of stream that already came.
    #[test]
    fn eviction_of_a_session_draining_after_the_peers_end_is_one_eviction() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::Get, "k", ""));
        rig.session.peer_closed(rig.at(0));
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        assert!(rig.session.is_evicted(), "evicted, though the peer's end came first");
        rig.session.evict(&mut rig.handler, &mut rig.spare);
        rig.send(1, usize::MAX);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 2, "the answer, then one error frame: {got:?}");
        assert_eq!((got[1].kind, got[1].value.as_str()), (0, MEMORY_LIMIT_REASON));
        assert_eq!(rig.session.phase(), Phase::Closed, "the peer's end came: no linger");
    }

    #[test]
    fn end_of_stream_answers_what_was_sent_then_closes_without_linger() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::Get, "k", ""));
        rig.session.peer_closed(rig.at(0));
        assert_eq!(rig.session.phase(), Phase::Draining);
        rig.send(1, usize::MAX);
        assert_eq!(rig.session.phase(), Phase::Closed);
        assert!(!rig.session.take_shut_write());
        assert_eq!(responses(&rig.wire).len(), 1);
        assert!(matches!(rig.session.take_end(), End::Eof));
    }

    #[test]
    fn a_completion_driver_gets_the_buffer_and_partial_sends_keep_the_order() {
        let mut rig = Rig::new(timing());
        rig.receive(0, &request(Kind::PutOrUpdate, "a", "1"));
        let buf = rig.session.take_transmit(&mut rig.spare).expect("bytes to send");
        assert!(rig.session.take_transmit(&mut rig.spare).is_none(), "one send in flight");
        // A later request is answered into a fresh buffer meanwhile.
        rig.receive(1, &request(Kind::Get, "a", ""));
        assert!(rig.session.pending() > buf.pending());
        let sent = 3;
        rig.wire.extend_from_slice(&buf.unsent()[..sent]);
        let now = rig.at(2);
        rig.session.transmitted(buf, sent, now, 0, &mut rig.handler, &mut rig.spare);
        let rest = rig.session.take_transmit(&mut rig.spare).unwrap();
        rig.wire.extend_from_slice(rest.unsent());
        let n = rest.pending();
        rig.session.transmitted(rest, n, now, 0, &mut rig.handler, &mut rig.spare);
        let got = responses(&rig.wire);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].kind, got[1].value.as_str()), (3, "1"));
        assert_eq!(rig.session.pending(), 0);
    }
}
