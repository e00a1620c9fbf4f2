//! The connection adapter: moves bytes between a socket and one
//! `kvio_core::Connection` driving a request [`Handler`]. Every flavor uses
//! it; they differ only in when they call it and on what kind of socket.
//!
//! One [`Session::service`] call writes what is pending (responses go out in
//! order), re-pushes input held back by back-pressure, reads (until a short
//! read, at most 4 times), answers
//! into a [`Scratch`] output shared by the loop, and writes. Only what the
//! socket would not take yet is copied into the session's own buffer, so a
//! session between requests holds no buffer at all once
//! [`Session::release_buffers`] ran (the epoll flavor's 10,000 idle
//! connections hold no buffer, only their ~200-byte slab entries).
//!
//! Back-pressure: while `unsent responses >= output_limit` the session does
//! not read ([`Session::wants_read`] is false); input already read but not
//! taken by the connection is kept and pushed again once output drains.
//!
//! On a blocking socket the same calls block ([`run_blocking`]): only the
//! first read of a service call waits for the peer, the others only drain.
//! SO_RCVTIMEO/SO_SNDTIMEO timeouts turn into "nothing moved" so the caller
//! can check the idle timeout and shutdown. How a read learns of a stop is
//! the caller's choice ([`ReadWait`]): a [`TICK`] timeout that polls the stop
//! flag (blocking flavor), or a read that sleeps until the peer sends, the
//! idle timeout runs out, or the stopping server shuts the socket's reading
//! side down (threaded flavor: an idle thread costs no wake-up at all).
//!
//! Closing while the peer may still be sending (a framing error, a full
//! output, shutdown) goes through a lingering close ([`Linger`]): everything
//! owed is written, the write side is shut, and late bytes are read and
//! dropped until the peer's EOF, [`LINGER_TIME`] or [`LINGER_BYTES`]. Closing
//! with unread input would make Linux answer with a reset and throw away the
//! responses still queued, the error frame included.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use kvio_core::{Connection, FrameError, Handler, Outcome, Output, OutputFull};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::RecvFlags;

use crate::config::Config;
use crate::net;
use crate::shutdown::Shutdown;
use crate::stats::{Counters, End};

/// Bytes read per `recv` by the single-thread flavors (one buffer per loop).
pub const READ_CHUNK: usize = 64 * 1024;
/// Reads per [`Session::service`] call: enough to drain a pipelined burst,
/// few enough that one busy client cannot starve the others of a loop.
const READS_PER_SERVICE: usize = 4;
/// Longest a blocking socket waits before the caller looks at shutdown and
/// idle time again.
pub const TICK: Duration = Duration::from_millis(100);
/// Send timeout while finishing connections at shutdown.
const FINISH_TICK: Duration = Duration::from_millis(50);
/// Longest a lingering close waits for the peer's end of stream. Long
/// enough for a client to read a few MB of responses still queued and
/// see the FIN (loopback: milliseconds), short enough that the blocking
/// flavor, which lingers in its only thread, is held only that long.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most late bytes a lingering close reads and drops. Above Linux's
/// largest default TCP receive buffer (tcp_rmem max, 6 MiB), so whatever
/// a pipelining client had queued when the stream broke is drained; a
/// client still sending after that is flooding and gets the reset.
pub const LINGER_BYTES: usize = 8 << 20;
/// How many idle timeouts a frame may take from its first byte to its
/// last in the blocking flavor (see [`run_blocking`]).
pub const FRAME_DEADLINE_IDLE_TIMEOUTS: u32 = 10;

/// Response bytes waiting for the socket, drained from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    start: usize,
}

impl OutBuf {
    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Bytes of heap held.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Forgets everything (keeps the allocation).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    fn unsent(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn advance(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.clear();
        }
    }

    /// Writes until empty or the socket would block (partial writes
    /// finished, EINTR retried). Returns the bytes written.
    pub fn write_to(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            match net::send(fd, self.unsent()) {
                Ok(0) => break,
                Ok(n) => {
                    self.advance(n);
                    total += n;
                }
                Err(e) if net::would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn take_unsent_from(&mut self, other: &mut OutBuf) {
        self.buf.extend_from_slice(other.unsent());
        other.clear();
    }
}

impl Output for OutBuf {
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Written bytes at the front are dead: reclaim them before growing.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let at = self.buf.len();
        let end = at.checked_add(len).ok_or(OutputFull)?;
        self.buf.resize(end, 0);
        Ok(&mut self.buf[at..end])
    }

    fn truncate_back(&mut self, len: usize) {
        let keep = self.buf.len().saturating_sub(len).max(self.start);
        self.buf.truncate(keep);
    }
}

/// Buffers a loop lends to whichever session it is serving.
#[derive(Debug)]
pub struct Scratch {
    /// Also where lingering closes drop the peer's late bytes.
    pub(crate) read: Box<[u8]>,
    out: OutBuf,
}

impl Scratch {
    /// Reads of up to `read_len` bytes.
    pub fn new(read_len: usize) -> Scratch {
        Scratch { read: vec![0u8; read_len].into_boxed_slice(), out: OutBuf::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The peer closed its side; close once everything is answered and written.
    Eof,
    /// Framing error: the error frame is queued; close once it is written.
    Broken(FrameError),
    /// A response did not fit the output.
    Full,
}

/// What one [`Session::service`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Some byte was read or written (the connection is not idle).
    pub moved: bool,
}

/// One client connection's state, apart from its socket. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    conn: Connection,
    /// A payload that arrived split (empty otherwise).
    payload: Vec<u8>,
    /// Input read but not taken because of back-pressure.
    held: Vec<u8>,
    /// Responses the socket has not taken yet.
    out: OutBuf,
    state: State,
    /// Requests already handed to [`Session::take_requests`].
    reported: u64,
}

impl Session {
    /// A session with `config`'s frame and output limits.
    pub fn new(config: &Config) -> Session {
        Session {
            conn: config.connection(),
            payload: Vec::new(),
            held: Vec::new(),
            out: OutBuf::default(),
            state: State::Open,
            reported: 0,
        }
    }

    /// Whether the socket should be read now (epoll read interest).
    pub fn wants_read(&self) -> bool {
        self.state == State::Open && self.held.is_empty() && self.conn.wants_read(self.out.pending())
    }

    /// Whether responses wait for the socket (epoll write interest).
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Requests answered since the last call.
    pub fn take_requests(&mut self) -> usize {
        let total = self.conn.requests();
        let new = total - self.reported;
        self.reported = total;
        new as usize
    }

    /// Heap bytes this session holds.
    pub fn buffered(&self) -> usize {
        self.payload.capacity() + self.held.capacity() + self.out.capacity()
    }

    /// Frees every buffer not in use: a session between frames, with
    /// nothing held back and nothing to write, keeps no heap.
    pub fn release_buffers(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = OutBuf::default();
        }
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = Vec::new();
        }
        if self.conn.parser().buffered_payload() == 0 && self.payload.capacity() > 0 {
            self.payload = Vec::new();
        }
    }

    /// Moves what can move now; `Err` says why the connection must close
    /// (every response it owed is written by then, the error frame included).
    /// `read_flags` is `DONTWAIT` to never wait for input on a blocking socket.
    pub fn service<H: Handler + ?Sized>(
        &mut self,
        fd: BorrowedFd<'_>,
        scratch: &mut Scratch,
        handler: &mut H,
        read_flags: RecvFlags,
    ) -> Result<Progress, End> {
        scratch.out.clear();
        let mut progress = Progress::default();
        let mut reads = 0;
        loop {
            let mut moved = false;
            if !self.out.is_empty() {
                moved |= self.out.write_to(fd)? > 0;
            }
            // Older responses still queued: newer ones queue behind them.
            let to_scratch = self.out.is_empty();
            let out = if to_scratch { &mut scratch.out } else { &mut self.out };
            if !self.held.is_empty() && self.conn.wants_read(out.pending()) {
                let used = answer(&mut self.conn, &mut self.payload, &mut self.state, &self.held, out, handler);
                self.held.drain(..used);
                moved |= used > 0;
            }
            if reads < READS_PER_SERVICE
                && self.state == State::Open
                && self.held.is_empty()
                && self.conn.wants_read(out.pending())
            {
                // Only the first read may wait (on a blocking socket); the next ones drain what came meanwhile.
                let flags = if reads == 0 { read_flags } else { read_flags | RecvFlags::DONTWAIT };
                reads += 1;
                match net::recv(fd, &mut scratch.read, flags) {
                    Ok(0) => {
                        self.state = State::Eof;
                        moved = true;
                    }
                    Ok(n) => {
                        moved = true;
                        if n < scratch.read.len() {
                            // A short read drained the socket: another recv now would only say EAGAIN.
                            reads = READS_PER_SERVICE;
                        }
                        let input = &scratch.read[..n];
                        let used = answer(&mut self.conn, &mut self.payload, &mut self.state, input, out, handler);
                        self.held.extend_from_slice(&input[used..]);
                    }
                    Err(e) if net::would_block(&e) => {}
                    Err(e) => return Err(End::Io(e)),
                }
            }
            if to_scratch {
                if !scratch.out.is_empty() {
                    moved |= scratch.out.write_to(fd)? > 0;
                    self.out.take_unsent_from(&mut scratch.out);
                }
            } else {
                moved |= self.out.write_to(fd)? > 0;
            }
            progress.moved |= moved;
            if !moved {
                break;
            }
        }
        if self.out.is_empty() {
            match self.state {
                State::Broken(e) => return Err(End::Framing(e)),
                State::Full => return Err(End::OutputFull),
                State::Eof if self.held.is_empty() => return Err(End::Eof),
                _ => {}
            }
        }
        Ok(progress)
    }

    /// At shutdown: answers what was already received (reads never wait),
    /// writes it with a short send timeout until `deadline`, and says why
    /// the connection ends. The socket is left blocking.
    pub fn finish<H: Handler + ?Sized>(
        &mut self,
        fd: BorrowedFd<'_>,
        scratch: &mut Scratch,
        handler: &mut H,
        deadline: Instant,
    ) -> End {
        if let Err(e) = net::set_nonblocking(fd, false).and_then(|()| net::set_timeouts(fd, None, Some(FINISH_TICK))) {
            return End::Io(e);
        }
        loop {
            match self.service(fd, scratch, handler, RecvFlags::DONTWAIT) {
                Err(end) => return end,
                Ok(p) if !p.moved && !self.wants_write() && self.held.is_empty() => return End::Shutdown,
                Ok(_) if Instant::now() >= deadline => return End::Shutdown,
                Ok(_) => {}
            }
        }
    }
}

/// Pushes `input` through the connection into `out`; returns the bytes taken.
fn answer<H: Handler + ?Sized>(
    conn: &mut Connection,
    payload: &mut Vec<u8>,
    state: &mut State,
    input: &[u8],
    out: &mut OutBuf,
    handler: &mut H,
) -> usize {
    let received = conn.receive(input, payload, handler, out);
    match received.outcome {
        Outcome::NeedMore | Outcome::Backpressure => {}
        Outcome::Close(e) => *state = State::Broken(e),
        Outcome::OutputFull => *state = State::Full,
    }
    received.consumed
}

/// A lingering close in progress: the writing side is shut down (the peer
/// gets every queued response, then a FIN) and what the peer still sends is
/// read and dropped until it closes too, [`LINGER_BYTES`] were dropped or the
/// deadline passes. Closing at once instead, with the peer's late requests
/// unread, makes Linux answer with a reset that also throws away the
/// responses still in the send queue (PROTOCOL.md: every response owed and
/// the error frame must arrive). Holds no buffer: reads go into the
/// caller's scratch buffer.
#[derive(Debug, Clone, Copy)]
pub struct Linger {
    deadline: Instant,
    left: usize,
}

impl Linger {
    /// Shuts `fd`'s writing side down (call it once every response is written).
    pub fn start(fd: BorrowedFd<'_>, deadline: Instant) -> Linger {
        // ENOTCONN: the peer already reset; the first drain then ends on the error.
        let _ = net::shutdown_write(fd);
        Linger { deadline, left: LINGER_BYTES }
    }

    /// When the close happens whatever the peer does.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads and drops what is queued, never waiting (a few reads at most,
    /// like [`Session::service`]); true once `fd` can be closed: end of
    /// stream, a socket error, or the byte budget spent.
    pub fn drain(&mut self, fd: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
        for _ in 0..READS_PER_SERVICE {
            match net::recv(fd, buf, RecvFlags::DONTWAIT) {
                Ok(0) => return true,
                Ok(n) => {
                    self.left = self.left.saturating_sub(n);
                    if self.left == 0 {
                        return true;
                    }
                    if n < buf.len() {
                        return false;
                    }
                }
                Err(e) if net::would_block(&e) => return false,
                Err(_) => return true,
            }
        }
        false
    }
}

/// Lingers on all of `fds` at once (poll), each until its [`Linger`] is
/// done or its deadline; then drops (closes) them. For the closes that may
/// block: the blocking flavors' connections and every connection at shutdown.
pub fn linger_all<F: AsFd>(mut fds: Vec<(F, Linger)>, buf: &mut [u8]) {
    loop {
        let now = Instant::now();
        fds.retain_mut(|(fd, linger)| !linger.drain(fd.as_fd(), buf) && now < linger.deadline);
        let Some(first) = fds.iter().map(|(_, linger)| linger.deadline).min() else { return };
        let wait = first.saturating_duration_since(now).max(Duration::from_millis(1));
        let timeout = Timespec { tv_sec: wait.as_secs() as _, tv_nsec: wait.subsec_nanos() as _ };
        let mut polled: Vec<PollFd<'_>> =
            fds.iter().map(|(fd, _)| PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::IN)).collect();
        // EINTR or any other failure: the loop drains and looks at the clock again.
        let _ = rustix::event::poll(&mut polled, Some(&timeout));
    }
}

/// How a connection served by [`run_blocking`] learns that the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadWait {
    /// Reads time out every [`TICK`] to look at the stop flag.
    Tick,
    /// Reads sleep until the peer sends or the idle timeout runs out (for
    /// ever when there is none): the server calls [`net::shutdown_read`] on
    /// the socket when the stop is requested, which ends the wait.
    UntilWoken,
}

/// Serves one connection on a blocking socket until it ends: EOF, framing
/// error, socket error, idle timeout (nothing moved for `config.idle_timeout`)
/// or shutdown (seen within a [`TICK`], or at once with [`ReadWait::UntilWoken`]).
///
/// Writes always time out every [`TICK`]: a write blocks only while the
/// client is not reading, and a stop must not wait for such a client.
///
/// With [`ReadWait::Tick`] (the blocking flavor, whose one connection
/// holds the whole server) a frame must also arrive whole within
/// [`FRAME_DEADLINE_IDLE_TIMEOUTS`] idle timeouts (2 s by default) of its
/// first byte, or of the previous request answered: otherwise a client
/// trickling a byte per tick would reset the idle timer for ever
/// ([`End::SlowFrame`], logged; no error frame, the stream is not broken).
/// The flavors that serve connections concurrently do not need it: a
/// trickler holds only itself.
///
/// When the connection ends while the peer may still be sending
/// ([`End::lingers`]), the close lingers ([`Linger`], at most
/// [`LINGER_TIME`]) before returning; the caller then drops `fd`.
pub fn run_blocking<H: Handler + ?Sized>(
    fd: BorrowedFd<'_>,
    config: &Config,
    shutdown: &Shutdown,
    wait: ReadWait,
    scratch: &mut Scratch,
    handler: &mut H,
    counters: &Counters,
) -> End {
    let end = serve_blocking(fd, config, shutdown, wait, scratch, handler, counters);
    if end.lingers() {
        linger_all(vec![(fd, Linger::start(fd, Instant::now() + LINGER_TIME))], &mut scratch.read);
    }
    end
}

fn serve_blocking<H: Handler + ?Sized>(
    fd: BorrowedFd<'_>,
    config: &Config,
    shutdown: &Shutdown,
    wait: ReadWait,
    scratch: &mut Scratch,
    handler: &mut H,
    counters: &Counters,
) -> End {
    // The socket timeouts for a wait of at most `left` (`None`: no idle timeout).
    let timeouts = |left: Option<Duration>| {
        let floor = |d: Duration| d.max(Duration::from_millis(1));
        let tick = floor(left.map_or(TICK, |left| left.min(TICK)));
        let read = match wait {
            ReadWait::Tick => Some(tick),
            ReadWait::UntilWoken => left.map(floor),
        };
        (read, Some(tick))
    };
    let mut session = Session::new(config);
    let mut set = timeouts(config.idle_timeout);
    if let Err(e) = net::set_timeouts(fd, set.0, set.1) {
        return End::Io(e);
    }
    let mut last_moved = Instant::now();
    let frame_limit = match wait {
        ReadWait::Tick => config.idle_timeout.map(|idle| idle * FRAME_DEADLINE_IDLE_TIMEOUTS),
        ReadWait::UntilWoken => None,
    };
    // When the frame now being received began (or the last request was answered).
    let mut frame_since: Option<Instant> = None;
    loop {
        if shutdown.is_requested() {
            let end = session.finish(fd, scratch, handler, Instant::now() + crate::config::SHUTDOWN_GRACE);
            counters.requests(session.take_requests());
            return end;
        }
        let serviced = session.service(fd, scratch, handler, RecvFlags::empty());
        let answered = session.take_requests();
        counters.requests(answered);
        let moved = match serviced {
            // The end of stream may be the stop's shutdown_read rather than the peer's.
            Err(End::Eof) if shutdown.is_requested() => return End::Shutdown,
            Err(end) => return end,
            Ok(p) => p.moved,
        };
        if moved {
            last_moved = Instant::now();
        }
        if let Some(limit) = frame_limit {
            if session.conn.parser().is_at_boundary() {
                frame_since = None;
            } else if answered > 0 || frame_since.is_none() {
                frame_since = Some(last_moved);
            } else if frame_since.is_some_and(|since| since.elapsed() >= limit) {
                return End::SlowFrame(limit);
            }
        }
        if let Some(idle) = config.idle_timeout {
            let quiet = last_moved.elapsed();
            if quiet >= idle {
                return End::Idle;
            }
            // After progress the next wait is a whole idle period (the same
            // timeouts as now, so no setsockopt per request); after a
            // timeout, only what is left of it.
            let want = timeouts(Some(if moved { idle } else { idle - quiet }));
            if want != set {
                if let Err(e) = net::set_timeouts(fd, want.0, want.1) {
                    return End::Io(e);
                }
                set = want;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::{Flavor, HostStore};
    use kvio_core::frame::{FrameParser, Parse, encode_frame};
    use kvio_proto::{KeyValueHandler, KeyValueMessage, Kind};
    use prost::Message;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn config() -> Config {
        Config { store_entries: 1000, store_bytes: 1 << 20, output_limit: 1024, ..Config::for_flavor(Flavor::Epoll) }
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

    struct Pair {
        client: UnixStream,
        server: UnixStream,
        session: Session,
        scratch: Scratch,
        handler: KeyValueHandler<HostStore>,
    }

    impl Pair {
        fn new(config: &Config) -> Pair {
            let (client, server) = UnixStream::pair().unwrap();
            server.set_nonblocking(true).unwrap();
            client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Pair {
                client,
                server,
                session: Session::new(config),
                scratch: Scratch::new(READ_CHUNK),
                handler: KeyValueHandler::new(config.store()),
            }
        }

        fn service(&mut self) -> Result<Progress, End> {
            self.session.service(self.server.as_fd(), &mut self.scratch, &mut self.handler, RecvFlags::DONTWAIT)
        }

        fn read_available(&mut self) -> Vec<u8> {
            self.client.set_nonblocking(true).unwrap();
            let mut wire = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match self.client.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => wire.extend_from_slice(&buf[..n]),
                    Err(e) if net::would_block(&e) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            self.client.set_nonblocking(false).unwrap();
            wire
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_idle_session_keeps_no_buffers() {
        let mut pair = Pair::new(&config());
        let mut burst = request(Kind::PutOrUpdate, "k", "v1");
        burst.extend(request(Kind::Get, "k", ""));
        burst.extend(request(Kind::Get, "missing", ""));
        pair.client.write_all(&burst).unwrap();
        assert!(pair.service().unwrap().moved);
        assert_eq!(pair.session.take_requests(), 3);
        let got = responses(&pair.read_available());
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].kind, got[0].status), (3, 0));
        assert_eq!((got[1].key.as_str(), got[1].value.as_str(), got[1].status), ("k", "v1", 0));
        assert_eq!((got[2].key.as_str(), got[2].status), ("missing", 1));
        pair.session.release_buffers();
        assert_eq!(pair.session.buffered(), 0, "idle session holds no heap");
        assert!(!pair.service().unwrap().moved, "nothing to do");
    }

    #[test]
    fn a_split_frame_keeps_only_its_payload_until_complete() {
        let mut pair = Pair::new(&config());
        let frame = request(Kind::PutOrUpdate, "key", "a value");
        pair.client.write_all(&frame[..9]).unwrap();
        pair.service().unwrap();
        pair.session.release_buffers();
        assert!(pair.session.buffered() > 0, "partial payload kept");
        pair.client.write_all(&frame[9..]).unwrap();
        pair.service().unwrap();
        pair.session.release_buffers();
        assert_eq!(pair.session.buffered(), 0);
        assert_eq!(responses(&pair.read_available())[0].status, 0);
    }

    #[test]
    fn backpressure_stops_reading_until_the_client_reads() {
        let config = config();
        let mut pair = Pair::new(&config);
        pair.client.write_all(&request(Kind::PutOrUpdate, "k", &"x".repeat(500))).unwrap();
        pair.service().unwrap();
        pair.read_available();
        // Each response carries 500 bytes of value; the client reads none of them.
        let get = request(Kind::Get, "k", "");
        let count = 2000;
        let mut sent = 0;
        pair.client.set_nonblocking(true).unwrap();
        let mut wire = Vec::new();
        for _ in 0..count {
            wire.extend_from_slice(&get);
        }
        let mut stalled_once = false;
        let mut received = Vec::new();
        let mut rounds = 0;
        while received.len() < count * 520 && rounds < 100_000 {
            rounds += 1;
            if sent < wire.len() {
                match pair.client.write(&wire[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if net::would_block(&e) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            pair.service().unwrap();
            assert!(pair.session.out.pending() <= config.output_limit + 600, "output bounded");
            if !pair.session.wants_read() {
                stalled_once = true;
                // Only now does the client read: the server was held back meanwhile.
                let mut buf = [0u8; 8192];
                match pair.client.read(&mut buf) {
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(e) if net::would_block(&e) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if sent == wire.len() && pair.session.wants_read() {
                pair.client.set_nonblocking(false).unwrap();
                received.extend(pair.read_available());
                pair.client.set_nonblocking(true).unwrap();
                if responses(&received).len() == count {
                    break;
                }
            }
        }
        assert!(stalled_once, "back-pressure engaged");
        let got = responses(&received);
        assert_eq!(got.len(), count);
        assert!(got.iter().all(|m| m.value.len() == 500 && m.kind == 2));
    }

    #[test]
    fn framing_error_answers_earlier_requests_then_the_error_then_ends() {
        let mut pair = Pair::new(&config());
        let mut burst = request(Kind::PutOrUpdate, "k", "v");
        burst.extend_from_slice(&2u32.to_le_bytes());
        burst.extend(request(Kind::Get, "k", ""));
        pair.client.write_all(&burst).unwrap();
        assert!(matches!(pair.service(), Err(End::Framing(FrameError::TooShort))));
        let got = responses(&pair.read_available());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, 3);
        assert_eq!((got[1].kind, got[1].status, got[1].value.as_str()), (0, 1, FrameError::TooShort.as_str()));
    }

    #[test]
    fn eof_after_requests_answers_them_then_ends() {
        let mut pair = Pair::new(&config());
        pair.client.write_all(&request(Kind::Get, "k", "")).unwrap();
        pair.client.shutdown(std::net::Shutdown::Write).unwrap();
        // The short read answers the request; the next service sees the end of stream.
        let end = (0..3).find_map(|_| pair.service().err());
        assert!(matches!(end, Some(End::Eof)), "{end:?}");
        let Pair { mut client, server, .. } = pair;
        drop(server); // as the flavors do on Err
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).unwrap();
        assert_eq!(responses(&wire).len(), 1);
    }

    #[test]
    fn blocking_run_ends_on_idle_timeout() {
        let config = Config { idle_timeout: Some(Duration::from_millis(50)), ..config() };
        let (client, server) = UnixStream::pair().unwrap();
        let shutdown = Shutdown::new().unwrap();
        let counters = Counters::default();
        let mut handler = KeyValueHandler::new(config.store());
        let mut scratch = Scratch::new(4096);
        let worker = std::thread::spawn(move || {
            let started = Instant::now();
            let end =
                run_blocking(server.as_fd(), &config, &shutdown, ReadWait::Tick, &mut scratch, &mut handler, &counters);
            (end, started.elapsed())
        });
        (&client).write_all(&request(Kind::Get, "k", "")).unwrap();
        let (end, took) = worker.join().unwrap();
        assert!(matches!(end, End::Idle), "{end}");
        assert!(took >= Duration::from_millis(50) && took < Duration::from_secs(2), "{took:?}");
        drop(client);
    }
}
