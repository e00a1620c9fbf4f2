//! Flavor `uring`: one thread, an io_uring completion loop.
//!
//! - Model: completions, not readiness. The loop queues operations in the
//!   ring's shared memory and the kernel posts their results: one
//!   multishot accept on the listener, one multishot receive per
//!   connection into a provided-buffer ring shared by every connection,
//!   and one send per connection with responses waiting. Each loop turn is
//!   one `io_uring_enter` that submits everything queued and waits for at
//!   least one completion; then every completion is handed to its
//!   connection's session through the [`Server`], exactly as the readiness drivers hand it
//!   the bytes of a `recv`.
//! - Buffers: received bytes land in one of [`RECV_BUFFERS`] buffers of
//!   [`RECV_BUFFER_LEN`] bytes the kernel picks from the ring; the buffer
//!   goes back to the ring as soon as [`Server::received`] has copied what
//!   it keeps, so an idle connection holds none. A send hands the kernel
//!   the session's output buffer ([`Server::take_transmit`]), which stays
//!   in the connection, untouched, until its completion gives it back
//!   ([`Server::transmitted`]); a partial send is resubmitted from there.
//! - Back-pressure: while a session does not [want to
//!   read](Server::wants_read) its multishot receive is cancelled (bytes
//!   the kernel posted before the cancel took effect go to the session,
//!   which holds them, or drops them if it reads nothing more); it is
//!   armed again once the session wants to read.
//! - Memory: an idle connection holds its slot and no buffer. The loop
//!   holds the receive buffers (4 MiB, made resident when it starts: the
//!   kernel takes them in turn, so they would all be touched soon anyway)
//!   and the rings. Over `--max-client-memory` the connection holding the
//!   most is evicted, as in the `epoll` flavor.
//! - Time: the wait carries a timeout (`IORING_ENTER_EXT_ARG`) to the
//!   earliest deadline the loop knows of, then every session's
//!   [`Server::handle_timeout`] sweeps the sessions due, as in the `epoll` flavor.
//! - Tokens: a completion's `user_data` holds the operation, the
//!   connection's slab slot and the slot's generation. A slot is freed only
//!   once every operation on its descriptor has completed (the receive and
//!   the send are cancelled first), and the descriptor is closed only then,
//!   so no completion can reach a connection that reused its number.
//! - Threads: 1 (`IORING_SETUP_SINGLE_ISSUER`, `DEFER_TASKRUN`: the
//!   kernel does the deferred work inside this thread's `io_uring_enter`,
//!   not in interrupts or kernel threads).
//! - Limits: `--max-connections` (the next one is accepted and closed at
//!   once); EMFILE ends the multishot accept, the pending connection is
//!   refused with a spare descriptor and the accept re-armed (with no
//!   connection pending, a poll on the listener waits for one: an accept
//!   would fail again at once). An accept that gave nothing to serve is
//!   the server's to count, and the accept is re-armed only while the
//!   server accepts ([`Server::accepting`]: not during the pause after a
//!   failure that would repeat). Needs Linux 6.0 (multishot
//!   receive) and an io_uring not disabled by a seccomp profile or
//!   `kernel.io_uring_disabled`: otherwise `kvio serve` refuses to start
//!   and names what is missing ([`probe`]).
//! - Stop: a poll on the shutdown wake-up socket completes; the accept is
//!   cancelled, the server [begins the stop](Server::begin_stop)
//!   and the loop goes on until the last one has closed.
//! - Syscalls: per loop turn one `io_uring_enter` and one clock read (vDSO),
//!   however many connections moved; `shutdown(SHUT_WR)` for a lingering
//!   close; per new connection `getpeername` and `setsockopt(TCP_NODELAY)`
//!   ([`net::set_up`], as every flavor's accept).
//!   Measured figures: `frontends/README.md`.
mod ring;

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use kvio_core::KeyValueStore;
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketFlags};
use rustix_uring::{cqueue, opcode, types};

use self::ring::{BUFFER_GROUP, Op, Ring, Token};
pub use self::ring::{RECV_BUFFER_LEN, RECV_BUFFERS, REFUSED_OPT_OUT, Unsupported, probe, runs_here};
use crate::drivers::pump::shut_write_if_asked;
use crate::drivers::{Driver, Loop, handler};
use crate::host::durability::LoopJournal;
use crate::host::loops::Loops;
use crate::host::net::{self, Accepted, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::server::{AcceptFailure, Handle, Io, Server};
use crate::sansio::session::OutBuf;
use crate::sansio::wire::{Protocol, Protocols};

/// POLLIN, as a poll operation takes it.
const POLL_IN: u32 = rustix::event::PollFlags::IN.bits() as u32;

/// The state of a connection's multishot receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Not in the kernel.
    Idle,
    /// In the kernel, posting what arrives.
    Armed,
    /// Cancel submitted; its last completion has not come yet.
    Cancelling,
}

/// What the loop has in the kernel for the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    /// Nothing.
    Idle,
    /// The multishot accept.
    Armed,
    /// A poll for a connection waiting: out of descriptors with an empty
    /// queue, where an accept would fail with EMFILE again at once.
    Polling,
}

/// One connection's descriptor, and what of it is in the kernel.
#[derive(Debug)]
struct Socket {
    handle: Handle,
    fd: OwnedFd,
    recv: Recv,
    /// The buffer of the send in flight: the kernel reads it until the send completes.
    sending: Option<OutBuf>,
    /// The server closed it: only waiting for its operations to complete.
    closing: bool,
}

impl Socket {
    fn in_flight(&self) -> bool {
        self.recv != Recv::Idle || self.sending.is_some()
    }
}

/// The uring driver.
#[derive(Debug, Clone, Copy)]
pub struct Uring;

impl Driver for Uring {
    fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
        serve_loop(listeners, run, store)
    }
}

/// A listener (one per protocol) and what of it is in the kernel.
struct Port {
    /// `None` once stopped and its accept has ended.
    listener: Option<Listener>,
    accepting: Accepting,
}

struct UringLoop<'a, S> {
    uring: Ring,
    /// By listener index, which their operations' tokens carry.
    ports: Vec<Port>,
    stopping: bool,
    /// By handle index.
    sockets: Vec<Option<Socket>>,
    server: Server<'a, Protocols<S, &'a Loops>>,
}

/// One loop over `store`: returns once `run.shutdown` is requested and its
/// last connection has closed.
pub fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
    let uring = Ring::new()?;
    let ports = listeners.into_iter().map(|l| Port { listener: Some(l), accepting: Accepting::Idle }).collect();
    let mut lp = UringLoop {
        uring,
        ports,
        stopping: false,
        sockets: Vec::new(),
        server: Server::new(run.limits, run.shared, handler(&run, store)),
    };
    if run.journal.is_some() {
        lp.server.hold_answers();
    }
    match lp.run(run.shutdown, run.journal) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Operations may still be in the kernel, reading send buffers
            // and writing receive buffers: leak them all rather than free
            // memory the kernel may touch.
            mem::forget(lp);
            Err(e)
        }
    }
}

impl<S: KeyValueStore> UringLoop<'_, S> {
    fn run(&mut self, shutdown: &Shutdown, journal: Option<&LoopJournal<'_>>) -> io::Result<()> {
        self.arm_accept()?;
        let wake = opcode::PollAdd::new(types::Fd(shutdown.wake_fd().as_raw_fd()), POLL_IN)
            .build()
            .user_data(Token::loop_op(Op::Wake).encode());
        // SAFETY: a poll points to no buffer; the wake-up socket outlives the loop.
        unsafe { self.uring.push(&wake)? };
        let mut now = Instant::now();
        if shutdown.is_requested() {
            self.begin_stop(now)?;
        }
        while self.ports.iter().any(|p| p.listener.is_some()) || !self.server.is_empty() {
            self.uring.bufs.publish();
            // From the clock read after the last wait, as in the epoll flavor.
            let wake = match (self.server.poll_timeout(), journal.and_then(LoopJournal::poll_timeout)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.uring.wait(wake.map(|at| at.saturating_duration_since(now)))?;
            now = Instant::now();
            while self.uring.reap() {
                let mut cqes = mem::take(&mut self.uring.cqes);
                for cqe in cqes.drain(..) {
                    self.complete(&cqe, now)?;
                }
                self.uring.cqes = cqes;
            }
            self.server.handle_timeout(now);
            self.apply()?;
            if let Some(journal) = journal {
                // The turn's records written (and synced, as due) in one go;
                // the answers that made durable are sent by the next apply.
                let turn = self.server.end_turn();
                let ended = journal.end_turn(now);
                if ended.durable >= ended.ended {
                    self.server.durable(turn);
                }
                while self.server.take_released().is_some() {}
                self.apply()?;
            }
            // Once a pause after an accept failure is over.
            self.arm_accept()?;
        }
        Ok(())
    }

    fn complete(&mut self, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        let Some(token) = Token::decode(cqe.user_data_u64()) else { return Ok(()) };
        match token.op {
            Op::Accept => self.accepted(token.handle.index(), cqe, now)?,
            Op::Listen => {
                let i = token.handle.index();
                if let Some(port) = self.ports.get_mut(i) {
                    port.accepting = Accepting::Idle;
                    self.listener_idle(i)?;
                }
            }
            Op::Wake => self.begin_stop(now)?,
            Op::Recv => self.received(token.handle, cqe, now),
            Op::Send => self.sent(token.handle, cqe, now),
            Op::Cancel | Op::Probe => {}
        }
        if matches!(token.op, Op::Recv | Op::Send) {
            // The completion changed what is in the kernel, maybe not the session.
            self.server.touch(token.handle);
        }
        self.apply()
    }

    fn socket(&mut self, handle: Handle) -> Option<&mut Socket> {
        self.sockets.get_mut(handle.index())?.as_mut().filter(|s| s.handle == handle)
    }

    /// Arms every listener's accept that is not in the kernel.
    fn arm_accept(&mut self) -> io::Result<()> {
        for i in 0..self.ports.len() {
            self.arm_accept_one(i)?;
        }
        Ok(())
    }

    fn arm_accept_one(&mut self, i: usize) -> io::Result<()> {
        let port = &mut self.ports[i];
        let Some(listener) = &port.listener else { return Ok(()) };
        if port.accepting != Accepting::Idle || self.stopping || !self.server.accepting() {
            return Ok(());
        }
        let accept = opcode::AcceptMulti::new(types::Fd(listener.as_fd().as_raw_fd()))
            .flags(SocketFlags::CLOEXEC)
            .build()
            .user_data(Token::listener_op(Op::Accept, i).encode());
        // SAFETY: a multishot accept without an address points to no buffer.
        unsafe { self.uring.push(&accept)? };
        port.accepting = Accepting::Armed;
        Ok(())
    }

    /// Nothing in the kernel for listener `i`: closes it when stopping, else accepts again.
    fn listener_idle(&mut self, i: usize) -> io::Result<()> {
        if self.stopping {
            self.ports[i].listener = None;
            return Ok(());
        }
        self.arm_accept_one(i)
    }

    fn accepted(&mut self, i: usize, cqe: &cqueue::Entry, now: Instant) -> io::Result<()> {
        let Some(port) = self.ports.get_mut(i) else { return Ok(()) };
        let ended = !cqueue::more(cqe.flags());
        if ended {
            port.accepting = Accepting::Idle;
        }
        let protocol = port.listener.as_ref().map(Listener::protocol).unwrap_or_default();
        match cqe.result() {
            Ok(fd) => {
                // SAFETY: an accept's result is a new descriptor, installed in
                // this process's table for this completion and owned by no one else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                let peer = net::peer_of(fd.as_fd());
                self.admit(net::set_up(fd, peer), protocol, now);
            }
            Err(Errno::CANCELED) => {}
            Err(e) if net::out_of_descriptors(&e.into()) => self.refuse_one(i, now)?,
            Err(e) => self.server.accept_failed(AcceptFailure::Failed(e.into()), now),
        }
        if ended && self.ports[i].accepting == Accepting::Idle {
            return self.listener_idle(i);
        }
        Ok(())
    }

    /// Out of descriptors: the connection waiting on listener `i` is taken
    /// off the queue with the spare descriptor and closed, as the other flavors do.
    fn refuse_one(&mut self, i: usize, now: Instant) -> io::Result<()> {
        let port = &mut self.ports[i];
        let Some(listener) = &mut port.listener else { return Ok(()) };
        let protocol = listener.protocol();
        // Non-blocking for this one accept only: the queue may be empty.
        let accepted = match net::set_nonblocking(listener.as_fd(), true) {
            Ok(()) => {
                let accepted = listener.accept(false);
                match net::set_nonblocking(listener.as_fd(), false) {
                    Ok(()) => accepted,
                    Err(e) => Accepted::Failed(AcceptFailure::Failed(e)),
                }
            }
            Err(e) => Accepted::Failed(AcceptFailure::Failed(e)),
        };
        match accepted {
            Accepted::Nothing if !self.stopping => {
                // Linux reserves the descriptor before it looks at the queue:
                // an accept now would fail at once, again and again. Wait for
                // a connection to refuse instead.
                let poll = opcode::PollAdd::new(types::Fd(listener.as_fd().as_raw_fd()), POLL_IN)
                    .build()
                    .user_data(Token::listener_op(Op::Listen, i).encode());
                // SAFETY: a poll points to no buffer.
                unsafe { self.uring.push(&poll)? };
                port.accepting = Accepting::Polling;
            }
            // A descriptor was free after all (another connection closed meanwhile).
            accepted => self.admit(accepted, protocol, now),
        }
        Ok(())
    }

    /// What an accept gave: a connection is admitted (or refused by the
    /// server: dropping `fd` closes it), a failure is the server's to count.
    fn admit(&mut self, accepted: Accepted, protocol: Protocol, now: Instant) {
        let (fd, peer) = match accepted {
            Accepted::Connection(fd, peer) => (fd, peer),
            Accepted::Nothing => return,
            Accepted::Failed(failure) => return self.server.accept_failed(failure, now),
        };
        let Ok(handle) = self.server.accept(peer, now, protocol) else { return };
        if self.sockets.len() <= handle.index() {
            self.sockets.resize_with(handle.index() + 1, || None);
        }
        self.sockets[handle.index()] = Some(Socket { handle, fd, recv: Recv::Idle, sending: None, closing: false });
    }

    fn received(&mut self, handle: Handle, cqe: &cqueue::Entry, now: Instant) {
        let flags = cqe.flags();
        let bid = cqueue::buffer_select(flags);
        if let Some(socket) = self.socket(handle) {
            if !cqueue::more(flags) {
                socket.recv = Recv::Idle;
            }
            match cqe.result() {
                Ok(0) => self.server.peer_closed(handle, now),
                Ok(n) => {
                    let bid = bid.expect("a receive of some bytes names its buffer");
                    let data = self.uring.bufs.data(bid, n as usize);
                    self.server.received(handle, data, now);
                }
                // The ring ran dry, or the receive was cancelled: armed again if the session wants.
                Err(Errno::NOBUFS) | Err(Errno::CANCELED) => {}
                Err(e) => self.server.socket_error(handle, e.into()),
            }
        }
        if let Some(bid) = bid {
            self.uring.bufs.give_back(bid);
        }
    }

    fn sent(&mut self, handle: Handle, cqe: &cqueue::Entry, now: Instant) {
        let Some(socket) = self.socket(handle) else { return };
        let buf = socket.sending.take().expect("a send completes the buffer it was given");
        match cqe.result() {
            Ok(n) => self.server.transmitted(handle, buf, n as usize, now),
            Err(e) => {
                self.server.transmitted(handle, buf, 0, now);
                if e != Errno::CANCELED {
                    self.server.socket_error(handle, e.into());
                }
            }
        }
    }

    /// Does what the server says for every handle it touched.
    fn apply(&mut self) -> io::Result<()> {
        while let Some(io) = self.server.poll_io() {
            self.sync(io)?;
        }
        Ok(())
    }

    /// Brings what `handle` has in the kernel in line with its session:
    /// sends what it has, arms or cancels its receive; once it is closed,
    /// cancels what is in flight, and once nothing is, closes the
    /// descriptor and releases the handle.
    fn sync(&mut self, io: Io) -> io::Result<()> {
        let handle = io.handle;
        let Some(socket) = self.sockets.get_mut(handle.index()).and_then(Option::as_mut).filter(|s| s.handle == handle)
        else {
            return Ok(());
        };
        let token = Token { op: Op::Recv, handle };
        if io.close {
            if !socket.closing {
                socket.closing = true;
                let (recv, sending) = (socket.recv == Recv::Armed, socket.sending.is_some());
                if recv {
                    socket.recv = Recv::Cancelling;
                    self.cancel(token.with_op(Op::Recv))?;
                }
                if sending {
                    // A send to a peer that reads nothing would wait for ever.
                    self.cancel(token.with_op(Op::Send))?;
                }
            }
            if !self.socket(handle).is_some_and(|s| s.in_flight()) {
                // Nothing of it left in the kernel: its number may be reused now.
                self.sockets[handle.index()] = None;
                self.server.release(handle);
            }
            return Ok(());
        }
        shut_write_if_asked(socket.fd.as_fd(), io.shut_write);
        let fd = socket.fd.as_raw_fd();
        if io.write
            && socket.sending.is_none()
            && let Some(buf) = self.server.take_transmit(handle)
        {
            let unsent = buf.unsent();
            let len = u32::try_from(unsent.len()).unwrap_or(u32::MAX);
            let send = opcode::Send::new(types::Fd(fd), unsent.as_ptr(), len)
                .flags(SendFlags::NOSIGNAL)
                .build()
                .user_data(token.with_op(Op::Send).encode());
            // The buffer moves into the socket's entry; its heap bytes do not move.
            self.socket(handle).expect("found above").sending = Some(buf);
            // SAFETY: the bytes are `sending`'s, which is left alone until
            // this send's completion takes it back (`sent`), and the entry
            // is not dropped while it is set.
            unsafe { self.uring.push(&send)? };
        }
        let socket = self.socket(handle).expect("found above");
        match (io.read, socket.recv) {
            (true, Recv::Idle) => {
                let recv = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
                    .build()
                    .user_data(token.with_op(Op::Recv).encode());
                socket.recv = Recv::Armed;
                // SAFETY: it writes only into the registered buffer ring, which outlives the loop.
                unsafe { self.uring.push(&recv)? };
            }
            (false, Recv::Armed) => {
                socket.recv = Recv::Cancelling;
                self.cancel(token.with_op(Op::Recv))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn cancel(&mut self, target: Token) -> io::Result<()> {
        let cancel =
            opcode::AsyncCancel::new(target.encode().into()).build().user_data(target.with_op(Op::Cancel).encode());
        // SAFETY: a cancel points to no buffer.
        unsafe { self.uring.push(&cancel) }
    }

    /// Stops accepting; the server fans the stop out.
    fn begin_stop(&mut self, now: Instant) -> io::Result<()> {
        if self.stopping {
            return Ok(());
        }
        self.stopping = true;
        for i in 0..self.ports.len() {
            match self.ports[i].accepting {
                // The listener closes once the last completion for it has come.
                Accepting::Armed => self.cancel(Token::listener_op(Op::Accept, i))?,
                Accepting::Polling => self.cancel(Token::listener_op(Op::Listen, i))?,
                Accepting::Idle => self.ports[i].listener = None,
            }
        }
        let sockets = &self.sockets;
        let waiting = |handle: Handle| {
            sockets.get(handle.index()).and_then(Option::as_ref).is_some_and(|s| net::has_unread(s.fd.as_fd()))
        };
        self.server.begin_stop(now, waiting);
        self.apply()
    }
}
