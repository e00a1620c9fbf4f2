//! What the drivers share: moving bytes between a socket and a
//! [`Server`]. The rules (time, closing) are the server's; this only does
//! the syscalls it asks for.
//!
//! - [`pump`]: one turn on a non-blocking socket of a [`Server`], for the
//!   readiness flavors (`epoll`, `busy-poll`): send what is queued, read
//!   what has arrived (at most [`READS_PER_TURN`] reads, none after a
//!   short one), answer, send, until nothing moves.
//! - [`serve_blocking`]: a whole connection on a blocking socket, for the
//!   `blocking` and `threaded` flavors: it sleeps in `recv` or `send` with
//!   SO_RCVTIMEO/SO_SNDTIMEO derived from [`Server::poll_timeout`].
//! - [`wait_for_connection`]: the blocking listener's wait, for the same two.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::net::RecvFlags;

use crate::host::durability::LoopJournal;
use crate::host::net::{self, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::server::{Handle, Server};
use crate::sansio::wire::Handlers;

/// Bytes read per `recv` by the single-thread flavors (one buffer per loop).
pub const READ_CHUNK: usize = 64 * 1024;
/// Reads per [`pump`]: enough to drain a pipelined burst, few enough that
/// one busy client cannot starve the others of a loop.
pub const READS_PER_TURN: usize = 4;
/// Longest a blocking socket waits before the blocking flavor looks at the
/// stop flag again (a signal usually interrupts the wait sooner).
pub const TICK: Duration = Duration::from_millis(100);
/// Below this a change of a blocking socket's timeout is not worth a
/// setsockopt: the wait ends at most this late.
const TIMEOUT_SLACK: Duration = Duration::from_millis(5);

/// One turn on `handle`'s non-blocking socket `fd` at `now`, reads into
/// `read`. Returns whether any byte moved. Afterwards [`Server::poll_io`]
/// says whether to close `fd`, and what to wait for.
pub fn pump<H: Handlers>(
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

/// Sends what `handle` may send now on non-blocking `fd` (answers the
/// journal just made durable), until it is sent or the socket is full.
pub fn pump_write<H: Handlers>(fd: BorrowedFd<'_>, server: &mut Server<'_, H>, handle: Handle, now: Instant) {
    while let Some(wants) = server.wants(handle) {
        shut_write_if_asked(fd, wants.shut_write);
        if !wants.write {
            return;
        }
        match net::send(fd, server.transmit(handle)) {
            Ok(0) => return,
            Ok(n) => server.advance(handle, n, now),
            Err(e) if net::would_block(&e) => return,
            Err(e) => {
                server.socket_error(handle, e);
                return;
            }
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

/// What a connection thread shares with the others of its flavor: the
/// threaded flavor's registry. Without one ([`serve_blocking`]'s `None`),
/// every wait ends within a [`TICK`] to look at the stop flag.
pub trait Wake {
    /// Whether this socket's reading side was shut from outside, to wake
    /// its thread for a stop or an eviction: from then on a read that says
    /// end of stream means only that nothing is queued now, not that the
    /// peer closed.
    fn read_shut(&self) -> bool;
    /// Waits until `holding()` is false (the server
    /// [holds](Server::is_holding) until other connections free client
    /// memory, or one of its own is asked to go), the stop comes, or
    /// `limit` passes.
    fn wait_for_room(&self, limit: Duration, holding: &dyn Fn() -> bool);
    /// Runs `intake` (the server's look at the cap, then its taking of
    /// input, which may add up to `growth` bytes to what it holds): at
    /// once while every intake under way fits under the cap
    /// ([`ClientMemory::has_room_for`](crate::sansio::memory::ClientMemory::has_room_for)),
    /// else as one of a bounded number of threads at once. Between the look
    /// and the charge of what the input made the session hold, a thread
    /// holds memory no other thread sees, so near the cap only a few may
    /// be there together.
    fn intake(&self, growth: usize, intake: &mut dyn FnMut());
}

/// Hands the `input` read from `handle`'s socket to `server` at `now`
/// (with a [`Wake`], as one of its [intakes](Wake::intake)); false if the
/// server [holds](Server::is_holding) for room: then nothing was handed
/// over, and the caller keeps `input` until it may.
fn hand_over<H: Handlers>(
    server: &mut Server<'_, H>,
    handle: Handle,
    input: &[u8],
    now: Instant,
    wake: Option<&dyn Wake>,
) -> bool {
    let Some(wake) = wake else {
        server.received(handle, input, now);
        return true;
    };
    let mut handed = false;
    let growth = server.max_growth(input.len());
    wake.intake(growth, &mut || {
        if !server.is_holding() {
            server.received(handle, input, now);
            handed = true;
        }
    });
    handed
}

/// Serves `handle` of `server` on the blocking socket `fd` until the
/// server closes it (the `blocking` flavor, one connection at a time, and
/// the `threaded` one, a server per connection thread). The thread sleeps
/// in `send` while responses are queued, else in `recv`, with socket
/// timeouts from [`Server::poll_timeout`]. Sends, and reads without a
/// [`Wake`], wait a [`TICK`] at most, so a stop requested from another
/// thread is seen within a tick (a signal interrupts the wait sooner);
/// reads with one sleep until the peer sends, a deadline, or the wake.
/// Every rule is the server's.
pub fn serve_blocking<H: Handlers>(
    fd: BorrowedFd<'_>,
    server: &mut Server<'_, H>,
    handle: Handle,
    read: &mut [u8],
    shutdown: &Shutdown,
    wake: Option<&dyn Wake>,
    journal: Option<&LoopJournal<'_>>,
) {
    let mut timeouts = Timeouts::default();
    // Bytes at the start of `read` taken from the socket, not yet handed
    // to the server: it began holding for room between the read and the hand-over.
    let mut unread = 0;
    loop {
        let now = Instant::now();
        if shutdown.is_requested() && !server.is_stopping() {
            server.begin_stop(now, |_| unread > 0 || net::has_unread(fd));
        }
        server.handle_asked();
        server.handle_timeout(now);
        if let Some(journal) = journal {
            // What the last read made the store write: one write (and sync,
            // as due) before its answers are sent.
            let turn = server.end_turn();
            let ended = journal.end_turn(now);
            if ended.durable >= ended.ended {
                server.durable(turn);
            }
            while server.take_released().is_some() {}
        }
        while let Some(io) = server.poll_io() {
            if io.close {
                return;
            }
            shut_write_if_asked(fd, io.shut_write);
        }
        if unread > 0 && hand_over(server, handle, &read[..unread], now, wake) {
            unread = 0;
            continue;
        }
        let wake_at = match (server.poll_timeout(), journal.and_then(LoopJournal::poll_timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let until = wake_at.map(|at| at.saturating_duration_since(now));
        let tick = until.map_or(TICK, |until| until.min(TICK));
        let result = if server.wants_write(handle) {
            timeouts
                .set(fd, Kind::Send, Some(tick))
                .and_then(|()| net::send(fd, server.transmit(handle)))
                .map(|n| server.advance(handle, n, Instant::now()))
        } else if unread == 0 && server.wants_read(handle) {
            let limit = if wake.is_some() { until } else { Some(tick) };
            timeouts.set(fd, Kind::Recv, limit).and_then(|()| net::recv_once(fd, read)).map(|n| {
                let now = Instant::now();
                match n {
                    0 if wake.is_some_and(|wake| wake.read_shut()) => {
                        // Woken from outside: the stop or an eviction is taken in now.
                        if shutdown.is_requested() && !server.is_stopping() {
                            server.begin_stop(now, |_| false);
                        }
                        server.handle_asked();
                        server.read_shut(handle, now);
                    }
                    0 => server.peer_closed(handle, now),
                    n if hand_over(server, handle, &read[..n], now, wake) => {}
                    n => unread = n,
                }
            })
        } else if let Some(wake) = wake.filter(|_| server.is_holding()) {
            wake.wait_for_room(tick, &|| server.is_holding());
            Ok(())
        } else {
            // Only a deadline can move this session on: sleep until it.
            let nothing: &mut [rustix::event::PollFd<'_>] = &mut [];
            rustix::event::poll(nothing, Some(&timespec(tick))).map(drop).map_err(Into::into)
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

/// What ended a [`wait_for_connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A connection waits on listener `i`.
    Connection(usize),
    /// The deadline passed (the caller calls its `handle_timeout`).
    Deadline,
    /// The stop was requested.
    Stop,
}

/// For the flavors that accept on a blocking listener: sleeps in `poll`
/// until a connection waits, `until` (the server's next deadline) passes,
/// or the stop is requested. While not `accepting` (a pause after an
/// accept failed), the listener is not looked at.
pub fn wait_for_connection(
    listeners: &[Listener],
    shutdown: &Shutdown,
    accepting: bool,
    until: Option<Instant>,
) -> io::Result<Waited> {
    use rustix::event::{PollFd, PollFlags};
    /// Listeners one thread waits on at most (one per protocol).
    const MOST: usize = 4;
    assert!(listeners.len() <= MOST, "a listener per protocol");
    while !shutdown.is_requested() {
        let wait = until.map(|at| at.saturating_duration_since(Instant::now()));
        if wait == Some(Duration::ZERO) {
            return Ok(Waited::Deadline);
        }
        let mut fds: [PollFd<'_>; 1 + MOST] = std::array::from_fn(|i| match i {
            0 => PollFd::from_borrowed_fd(shutdown.wake_fd(), PollFlags::IN),
            i if i <= listeners.len() => PollFd::new(&listeners[i - 1], PollFlags::IN),
            _ => PollFd::from_borrowed_fd(shutdown.wake_fd(), PollFlags::empty()),
        });
        let fds = if accepting { &mut fds[..1 + listeners.len()] } else { &mut fds[..1] };
        match rustix::event::poll(fds, wait.map(timespec).as_ref()) {
            Ok(0) => return Ok(Waited::Deadline),
            Ok(_) => {
                if let Some(i) = fds[1..].iter().position(|fd| fd.revents().contains(PollFlags::IN)) {
                    return Ok(Waited::Connection(i));
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Waited::Stop)
}
