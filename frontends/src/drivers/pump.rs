//! What the drivers share: moving bytes between a socket and a
//! [`Session`]. The rules (time, closing) are the session's; this only does
//! the syscalls it asks for.
//!
//! - [`pump`]: one turn on a non-blocking socket of a [`Server`], for the
//!   readiness flavors (`epoll`, `busy-poll`): send what is queued, read
//!   what has arrived (at most [`READS_PER_TURN`] reads, none after a
//!   short one), answer, send, until nothing moves.
//! - [`run_blocking`]: a whole connection on a blocking socket, for the
//!   `blocking` and `threaded` flavors: it sleeps in `recv` or `send` with
//!   SO_RCVTIMEO/SO_SNDTIMEO derived from [`Session::poll_timeout`].
//! - [`Scratch`]: the buffers a loop lends to whichever session it serves.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use kvio_core::Handler;
use rustix::net::RecvFlags;

use crate::host::net::{self, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::memory::{ClientMemory, Share};
use crate::sansio::server::{Handle, Server};
use crate::sansio::session::{End, Phase, Session, Spare};
use crate::sansio::stats::Counters;

/// Bytes read per `recv` by the single-thread flavors (one buffer per loop).
pub const READ_CHUNK: usize = 64 * 1024;
/// Reads per [`pump`]: enough to drain a pipelined burst, few enough that
/// one busy client cannot starve the others of a loop.
pub const READS_PER_TURN: usize = 4;
/// Longest a blocking socket waits before the blocking flavor looks at the
/// stop flag again (a signal usually interrupts the wait sooner).
pub const TICK: Duration = Duration::from_millis(100);
/// How often a lingering close looks for late bytes once the server shut the
/// socket's reading side itself (reads then never wait).
const LINGER_PACE: Duration = Duration::from_millis(10);
/// Below this a change of a blocking socket's timeout is not worth a
/// setsockopt: the wait ends at most this late.
const TIMEOUT_SLACK: Duration = Duration::from_millis(5);

/// Buffers a loop lends to whichever session it is serving.
#[derive(Debug)]
pub struct Scratch {
    /// Where every `recv` lands, lingering closes' dropped bytes included.
    pub read: Box<[u8]>,
    /// Output buffers for sessions with responses to send.
    pub spare: Spare,
}

impl Scratch {
    /// Reads of up to `read_len` bytes.
    pub fn new(read_len: usize) -> Scratch {
        Scratch { read: vec![0u8; read_len].into_boxed_slice(), spare: Spare::default() }
    }
}

/// One turn on `handle`'s non-blocking socket `fd` at `now`, reads into
/// `read`. Returns whether any byte moved. Afterwards [`Server::poll_io`]
/// says whether to close `fd`, and what to wait for.
pub fn pump<H: Handler>(
    fd: BorrowedFd<'_>,
    server: &mut Server<'_, H>,
    handle: Handle,
    read: &mut [u8],
    now: Instant,
) -> bool {
    let mut moved_any = false;
    let mut reads = 0;
    loop {
        let mut moved = false;
        let Some(wants) = server.wants(handle) else { return moved_any };
        shut_write_if_asked(fd, wants.shut_write);
        if wants.write {
            match net::send(fd, server.transmit(handle)) {
                Ok(n) => {
                    moved = n > 0;
                    server.advance(handle, n, now);
                }
                Err(e) if net::would_block(&e) => {}
                Err(e) => server.socket_error(handle, e),
            }
        }
        if reads < READS_PER_TURN {
            let Some(wants) = server.wants(handle) else { return moved_any || moved };
            shut_write_if_asked(fd, wants.shut_write);
            if wants.read {
                reads += 1;
                match net::recv(fd, read, RecvFlags::DONTWAIT) {
                    Ok(0) => {
                        moved = true;
                        server.peer_closed(handle, now);
                    }
                    Ok(n) => {
                        moved = true;
                        if n < read.len() {
                            // A short read drained the socket: another recv now would only say EAGAIN.
                            reads = READS_PER_TURN;
                        }
                        server.received(handle, &read[..n], now);
                    }
                    Err(e) if net::would_block(&e) => {}
                    Err(e) => server.socket_error(handle, e),
                }
            }
        }
        moved_any |= moved;
        if !moved {
            // A shut asked for by this turn's last move comes out of Server::poll_io.
            return moved_any;
        }
    }
}

/// Shuts `fd`'s writing side if the session asked (a lingering close begins).
pub fn shut_write_if_asked(fd: BorrowedFd<'_>, asked: bool) {
    if asked {
        // ENOTCONN: the peer already reset; the next read ends on the error.
        let _ = net::shutdown_write(fd);
    }
}

/// How a connection served by [`run_blocking`] learns that the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadWait {
    /// Waits end every [`TICK`] at the latest to look at the stop flag.
    Tick,
    /// Reads sleep until the peer sends or a deadline comes (for ever when
    /// there is none): the server calls [`net::shutdown_read`] on the
    /// socket when the stop is requested, which ends the wait.
    UntilWoken,
}

/// What a connection served by [`run_blocking`] shares with its server.
#[derive(Clone, Copy)]
pub struct BlockingServer<'a> {
    /// How it learns of a stop.
    pub wait: ReadWait,
    /// The stop request.
    pub shutdown: &'a Shutdown,
    /// The server's counters.
    pub counters: &'a Counters,
    /// All connections' memory together.
    pub memory: &'a ClientMemory,
    /// This connection's charge, and other threads' request to evict it.
    pub share: &'a Share,
    /// Called when this connection's charge took the total over the cap:
    /// true if this connection holds the most and must go; otherwise it
    /// asks the connection holding the most to go.
    pub evict_biggest: &'a dyn Fn() -> bool,
    /// Called instead of reading while the total is over the cap and the
    /// connections asked to go have not freed their memory yet: returns
    /// when they have, or after the given time at the latest.
    pub wait_for_room: &'a dyn Fn(Duration),
    /// Called once this connection's eviction freed its memory.
    pub freed: &'a dyn Fn(),
}

impl std::fmt::Debug for BlockingServer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingServer").field("wait", &self.wait).field("share", &self.share).finish_non_exhaustive()
    }
}

/// Serves one connection on a blocking socket until its session closes,
/// and says why it ended. The caller then drops `fd`.
///
/// A thread sleeps in `send` while responses are queued (the peer reads
/// them, or the wait times out), else in `recv`. The socket timeouts come
/// from [`Session::poll_timeout`], so the thread wakes for the idle, frame,
/// grace and linger deadlines; sends always time out within a [`TICK`], so
/// that a peer that never reads cannot hide a stop.
pub fn run_blocking<H: Handler + ?Sized>(
    fd: BorrowedFd<'_>,
    session: &mut Session,
    server: &BlockingServer<'_>,
    scratch: &mut Scratch,
    handler: &mut H,
) -> End {
    let BlockingServer { wait, shutdown, counters, memory, share, .. } = *server;
    let mut timeouts = Timeouts::default();
    // Whether the server shut this socket's reading side to wake its thread
    // (a stop or an eviction, with ReadWait::UntilWoken): from then on a read
    // that says end of stream only means nothing is queued now.
    let mut read_shut = false;
    // Whether the eviction's freed memory was announced (see BlockingServer::freed).
    let mut told_freed = false;
    loop {
        let now = Instant::now();
        if shutdown.is_requested() && session.phase() == Phase::Open {
            session.begin_shutdown(now, net::has_unread(fd));
        }
        if share.is_evicting() {
            read_shut |= wait == ReadWait::UntilWoken;
            session.evict(handler, &mut scratch.spare);
        }
        session.handle_timeout(now);
        shut_write_if_asked(fd, session.take_shut_write());
        counters.requests(session.take_requests());
        counters.traffic(session.take_traffic());
        if session.phase() == Phase::Closed {
            memory.charge(share, 0);
            return session.take_end();
        }
        session.release_buffers(&mut scratch.spare);
        // Over the cap with others already asked to go: read nothing until they have.
        let mut hold_reads = false;
        if memory.charge(share, session.buffered()) {
            if (server.evict_biggest)() {
                session.evict(handler, &mut scratch.spare);
                memory.charge(share, session.buffered());
            } else {
                hold_reads = true;
            }
        }
        if session.is_evicted() && !told_freed {
            told_freed = true;
            (server.freed)();
        }
        let until = session.poll_timeout().map(|at| at.saturating_duration_since(now));
        let result = if session.wants_write() {
            let limit = Some(until.map_or(TICK, |until| until.min(TICK)));
            timeouts.set(fd, Kind::Send, limit).and_then(|()| net::send(fd, session.transmit())).map(|n| {
                session.advance(n, Instant::now(), handler);
            })
        } else if session.wants_read() && hold_reads {
            (server.wait_for_room)(until.map_or(TICK, |until| until.min(TICK)));
            Ok(())
        } else if session.wants_read() {
            let limit = match wait {
                ReadWait::Tick => Some(until.map_or(TICK, |until| until.min(TICK))),
                ReadWait::UntilWoken => until,
            };
            timeouts.set(fd, Kind::Recv, limit).and_then(|()| net::recv_once(fd, &mut scratch.read)).map(|n| {
                let now = Instant::now();
                match n {
                    // After a stop, the end of stream may be the stop's shutdown_read, not the peer's.
                    // Reads say end of stream from now on: the peer's, or the server's own
                    // shutdown_read, how a stop or an eviction wakes this thread.
                    0 => {
                        if share.is_evicting() {
                            read_shut |= wait == ReadWait::UntilWoken;
                            session.evict(handler, &mut scratch.spare);
                        }
                        if shutdown.is_requested() {
                            read_shut |= wait == ReadWait::UntilWoken;
                            session.begin_shutdown(now, false);
                        }
                        if !read_shut {
                            session.peer_closed(now);
                        } else if session.phase() == Phase::Lingering {
                            // The peer's end of stream cannot be told from ours: drop what
                            // comes until the linger's deadline or byte cap, looking every few ms.
                            let left =
                                session.poll_timeout().map_or(LINGER_PACE, |at| at.saturating_duration_since(now));
                            std::thread::sleep(left.min(LINGER_PACE));
                        } else {
                            session.stop_reading();
                        }
                    }
                    n => session.receive(&scratch.read[..n], now, handler, &mut scratch.spare),
                }
            })
        } else {
            // Only a deadline can move this session on: sleep until it.
            let nothing: &mut [rustix::event::PollFd<'_>] = &mut [];
            rustix::event::poll(nothing, Some(&timespec(until.unwrap_or(TICK).min(TICK)))).map(drop).map_err(Into::into)
        };
        match result {
            Ok(()) => {}
            // A timeout, or a signal: the loop looks at the clock and the stop flag.
            Err(e) if net::would_block(&e) || net::interrupted(&e) => {}
            Err(e) => session.io_error(e),
        }
    }
}

/// Serves `handle` of `server` on the blocking socket `fd` until the
/// server closes it (the blocking flavor: one connection at a time). The
/// thread sleeps in `send` while responses are queued, else in `recv`,
/// with socket timeouts from [`Server::poll_timeout`] capped at a
/// [`TICK`], so a stop requested from another thread is seen within a
/// tick (a signal interrupts the wait sooner). Every rule is the server's.
pub fn serve_blocking<H: Handler>(
    fd: BorrowedFd<'_>,
    server: &mut Server<'_, H>,
    handle: Handle,
    read: &mut [u8],
    shutdown: &Shutdown,
) {
    let mut timeouts = Timeouts::default();
    loop {
        let now = Instant::now();
        if shutdown.is_requested() && !server.is_stopping() {
            server.begin_stop(now, |_| net::has_unread(fd));
        }
        server.handle_timeout(now);
        while let Some(io) = server.poll_io() {
            if io.close {
                return;
            }
            shut_write_if_asked(fd, io.shut_write);
        }
        let until = server.poll_timeout().map(|at| at.saturating_duration_since(now));
        let limit = Some(until.map_or(TICK, |until| until.min(TICK)));
        let result = if server.wants_write(handle) {
            timeouts
                .set(fd, Kind::Send, limit)
                .and_then(|()| net::send(fd, server.transmit(handle)))
                .map(|n| server.advance(handle, n, Instant::now()))
        } else if server.wants_read(handle) {
            timeouts.set(fd, Kind::Recv, limit).and_then(|()| net::recv_once(fd, read)).map(|n| match n {
                0 => server.peer_closed(handle, Instant::now()),
                n => server.received(handle, &read[..n], Instant::now()),
            })
        } else {
            // Only a deadline can move this session on: sleep until it.
            let nothing: &mut [rustix::event::PollFd<'_>] = &mut [];
            rustix::event::poll(nothing, Some(&timespec(until.unwrap_or(TICK).min(TICK)))).map(drop).map_err(Into::into)
        };
        match result {
            Ok(()) => {}
            // A timeout, or a signal: the loop looks at the clock and the stop flag.
            Err(e) if net::would_block(&e) || net::interrupted(&e) => {}
            Err(e) => server.socket_error(handle, e),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Recv,
    Send,
}

/// The SO_RCVTIMEO/SO_SNDTIMEO now set, so that a wait costs a setsockopt
/// only when its timeout really changes.
#[derive(Debug, Default)]
struct Timeouts {
    recv: Option<Option<Duration>>,
    send: Option<Option<Duration>>,
}

impl Timeouts {
    fn set(&mut self, fd: BorrowedFd<'_>, kind: Kind, want: Option<Duration>) -> io::Result<()> {
        // 0 would mean "for ever" to the kernel.
        let want = want.map(|d| d.max(Duration::from_millis(1)));
        let current = match kind {
            Kind::Recv => &mut self.recv,
            Kind::Send => &mut self.send,
        };
        let close_enough = match (*current, want) {
            (Some(Some(now)), Some(want)) => now.abs_diff(want) < TIMEOUT_SLACK,
            (Some(now), want) => now == want,
            (None, _) => false,
        };
        if !close_enough {
            let option = match kind {
                Kind::Recv => rustix::net::sockopt::Timeout::Recv,
                Kind::Send => rustix::net::sockopt::Timeout::Send,
            };
            rustix::net::sockopt::set_socket_timeout(fd, option, want)?;
            *current = Some(want);
        }
        Ok(())
    }
}

fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ }
}

/// For the flavors that accept on a blocking listener: sleeps in `poll`
/// until a connection waits (true) or the stop is requested (false).
pub fn wait_for_connection(listener: &Listener, shutdown: &Shutdown) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    while !shutdown.is_requested() {
        let mut fds =
            [PollFd::new(listener, PollFlags::IN), PollFd::from_borrowed_fd(shutdown.wake_fd(), PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) if fds[0].revents().contains(PollFlags::IN) => return Ok(true),
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// An accept failed for another reason than a refusal: logged, and a
/// tick's pause, since whatever failed is likely to fail again at once.
pub fn accept_failed(counters: &Counters, e: &io::Error) {
    counters.error(format_args!("accept: {e}"));
    std::thread::sleep(TICK);
}
