//! Flavor `blocking`: the article's first server.
//!
//! - Model: accept one connection, serve it with blocking reads and writes
//!   ([`driver::serve_blocking`]) until the [`Server`] closes it, then
//!   accept the next. Others wait in the listen backlog.
//! - Threads: 1. One listener (the article's one port): `--resp` and
//!   `--memcache` are refused for this flavor ([`ONE_LISTENER_REASON`]).
//! - Limits: one connection at a time. The idle timeout is on by default
//!   (200 ms) so that one silent client holds everybody else for at most
//!   that long, and the session's frame deadline is on
//!   ([`Timing::with_frame_deadline`](crate::sansio::session::Timing::with_frame_deadline)): a client trickling a byte at a time
//!   cannot hold the server either. A client that stops reading its
//!   responses stalls the writes and is dropped the same way.
//! - Closing after a framing error lingers in this one thread: the next
//!   client waits for that at most the linger time, unless the closing
//!   client closes its side first.
//! - Accept: an accept that gave nothing to serve is the server's to count
//!   ([`Server::accept_failed`]); while it pauses accepting after one that
//!   would repeat at once, the thread waits for the pause's end or the stop.
//! - Stop: the thread waits for a connection in `poll` on the listener and
//!   the stop's wake-up socket; a connection being served sees the stop
//!   when a signal interrupts its wait, or within a tick ([`TICK`]), and
//!   finishes as the server says.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use kvio_core::KeyValueStore;

use crate::drivers::pump::{self as driver, READ_CHUNK, TICK, Waited};
use crate::drivers::{Driver, Loop, handler};
use crate::host::net::{self, Accepted, Listener};
use crate::sansio::server::Server;

/// Why the blocking flavor refuses more than one listener.
pub const ONE_LISTENER: io::ErrorKind = io::ErrorKind::Unsupported;
/// What it says when asked to (the article's server has one port).
pub const ONE_LISTENER_REASON: &str = "flavor blocking serves one listener: --resp and --memcache need another flavor (threaded, busy-poll, epoll, uring)";

/// The blocking flavor as a [`Driver`]: one loop, one connection at a time.
#[derive(Debug)]
pub struct Blocking;

impl Driver for Blocking {
    fn serve_loop<S: KeyValueStore>(listeners: Vec<Listener>, run: Loop<'_>, store: S) -> io::Result<()> {
        let [mut listener] =
            <[Listener; 1]>::try_from(listeners).map_err(|_| io::Error::new(ONE_LISTENER, ONE_LISTENER_REASON))?;
        let shutdown = run.shutdown;
        let mut server = Server::new(run.limits, run.shared, handler(&run, store));
        if run.journal.is_some() {
            server.hold_answers();
        }
        let mut read = vec![0u8; READ_CHUNK].into_boxed_slice();
        // A safety net: accept never blocks longer than a tick, should the connection vanish after the poll.
        net::set_timeouts(listener.as_fd(), Some(TICK), None)?;
        loop {
            match driver::wait_for_connection(
                std::slice::from_ref(&listener),
                shutdown,
                server.accepting(),
                server.poll_timeout(),
            )? {
                Waited::Connection(_) => {}
                Waited::Deadline => {
                    server.handle_timeout(Instant::now());
                    continue;
                }
                Waited::Stop => break,
            }
            let now = Instant::now();
            match listener.accept(false) {
                Accepted::Connection(fd, peer) => {
                    // A refusal is counted by the server; dropping `fd` closes it.
                    let Ok(handle) = server.accept(peer, now, listener.protocol()) else { continue };
                    driver::serve_blocking(fd.as_fd(), &mut server, handle, &mut read, shutdown, None, run.journal);
                    drop(fd);
                    server.release(handle);
                }
                Accepted::Nothing => {}
                Accepted::Failed(failure) => server.accept_failed(failure, now),
            }
        }
        Ok(())
    }
}
