//! Flavor `busy-poll`: one thread polling non-blocking sockets in a loop.
//!
//! - Model: every pass tries `accept` until EAGAIN, then gives every
//!   connection one [`pump`] (EAGAIN means "nothing now"), and the server
//!   acts on the deadlines due ([`Server::handle_timeout`]). No epoll, poll or
//!   select: readiness is discovered by trying. Unlike the article's
//!   version, which served one connection at a time, every connection is
//!   polled on every pass, so many are served at once.
//! - Threads: 1 per loop (`--threads N` runs N loops, [`crate::host::loops`]),
//!   and it never sleeps: a pass that moved nothing only yields the CPU. It burns a core while idle, and a pass costs a syscall or two
//!   per connection whether it has data or not, so latency grows with the
//!   number of connections.
//! - Limits (the server's): `--max-connections` (the next one is accepted
//!   and closed at once), `--max-client-memory`; a session between
//!   requests holds no buffer. After an accept that failed, the passes
//!   try no accept while the server pauses accepting ([`Server::accepting`]).
//! - Stop: the listener closes, the server [begins the stop](Server::begin_stop),
//!   and the passes go on until the last connection has closed.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use kvio_core::KeyValueStore;

use crate::drivers::pump::{READ_CHUNK, pump, shut_write_if_asked};
use crate::drivers::{Driver, Loop, handler};
use crate::host::net::{self, Accepted, Listener};
use crate::sansio::server::{Handle, Server};

/// Accepts per pass at most, so a connection storm cannot starve the open connections.
const ACCEPTS_PER_PASS: usize = 256;

/// The busy-poll driver.
#[derive(Debug, Clone, Copy)]
pub struct BusyPoll;

impl Driver for BusyPoll {
    fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
        serve_loop(listeners, run, store)
    }
}

/// One loop over `store`: returns once `run.shutdown` is requested and its
/// last connection has closed.
pub fn serve_loop<S: KeyValueStore>(mut listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
    let mut server = Server::new(run.limits, run.shared, handler(&run, store));
    if run.journal.is_some() {
        server.hold_answers();
    }
    let mut read = vec![0u8; READ_CHUNK].into_boxed_slice();
    // By handle index.
    let mut sockets: Vec<Option<(Handle, OwnedFd)>> = Vec::new();
    for listener in &listeners {
        net::set_nonblocking(listener.as_fd(), true)?;
    }
    let mut listening = !listeners.is_empty();
    while listening || !server.is_empty() {
        let mut moved = false;
        let now = Instant::now();
        if listening && run.shutdown.is_requested() {
            listening = false;
            listeners.clear();
            let waiting = |handle: Handle| {
                sockets.get(handle.index()).and_then(Option::as_ref).is_some_and(|(_, fd)| net::has_unread(fd.as_fd()))
            };
            server.begin_stop(now, waiting);
        }
        for listener in &mut listeners {
            for _ in 0..ACCEPTS_PER_PASS {
                if !server.accepting() {
                    break;
                }
                match listener.accept(true) {
                    Accepted::Connection(fd, peer) => {
                        moved = true;
                        // A refusal is counted by the server; dropping `fd` closes it.
                        let Ok(handle) = server.accept(peer, now, listener.protocol()) else { continue };
                        if sockets.len() <= handle.index() {
                            sockets.resize_with(handle.index() + 1, || None);
                        }
                        sockets[handle.index()] = Some((handle, fd));
                    }
                    Accepted::Nothing => break,
                    Accepted::Failed(failure) => {
                        moved = true;
                        server.accept_failed(failure, now);
                    }
                }
            }
        }
        for (handle, fd) in sockets.iter().flatten() {
            moved |= pump(fd.as_fd(), &mut server, *handle, &mut read, now);
        }
        server.handle_timeout(now);
        if let Some(journal) = run.journal {
            // The pass's records in one write (and sync, as due); what that
            // made durable is sent by the next pass's pumps.
            let turn = server.end_turn();
            let ended = journal.end_turn(now);
            if ended.durable >= ended.ended {
                server.durable(turn);
            }
            while server.take_released().is_some() {}
        }
        while let Some(io) = server.poll_io() {
            let Some(socket) = sockets.get_mut(io.handle.index()) else { continue };
            let Some((handle, fd)) = socket.as_ref().filter(|(h, _)| *h == io.handle) else { continue };
            if io.close {
                let handle = *handle;
                *socket = None;
                server.release(handle);
            } else {
                shut_write_if_asked(fd.as_fd(), io.shut_write);
            }
        }
        if !moved {
            std::thread::yield_now();
        }
    }
    Ok(())
}
