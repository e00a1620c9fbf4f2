//! Flavor `blocking`: the article's first server.
//!
//! - Model: accept one connection, serve it with blocking reads and writes
//!   ([`driver::serve_blocking`]) until the [`Server`] closes it, then
//!   accept the next. Others wait in the listen backlog.
//! - Threads: 1.
//! - Limits: one connection at a time. The idle timeout is on by default
//!   (200 ms) so that one silent client holds everybody else for at most
//!   that long, and the session's frame deadline is on
//!   ([`Timing::with_frame_deadline`](crate::sansio::session::Timing::with_frame_deadline)): a client trickling a byte at a time
//!   cannot hold the server either. A client that stops reading its
//!   responses stalls the writes and is dropped the same way.
//! - Closing after a framing error lingers in this one thread: the next
//!   client waits for that at most the linger time, unless the closing
//!   client closes its side first.
//! - Stop: the thread waits for a connection in `poll` on the listener and
//!   the stop's wake-up socket; a connection being served sees the stop
//!   when a signal interrupts its wait, or within a tick ([`TICK`]), and
//!   finishes as the server says.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use kvio_core::KeyValueStore;
use kvio_proto::KeyValueHandler;

use crate::app::config::{Config, Flavor};
use crate::drivers::pump::{self as driver, READ_CHUNK, TICK};
use crate::drivers::{Driver, Loop};
use crate::host::net::{self, Accepted, Listener};
use crate::host::shutdown::Shutdown;
use crate::sansio::memory::ClientMemory;
use crate::sansio::server::{Places, Server, Shared};
use crate::sansio::stats::{Counters, Stats};

/// Serves until `shutdown` is requested, over its own counters and store.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    let (counters, places) = (Counters::default(), Places::default());
    let memory = ClientMemory::new(config.max_client_memory);
    let shared = Shared { places: &places, memory: &memory, counters: &counters };
    let run = Loop { index: 0, limits: config.limits(Flavor::Blocking), shutdown, shared };
    Blocking::serve_loop(listener, run, config.store())?;
    Ok(counters.snapshot())
}

/// The blocking flavor as a [`Driver`]: one loop, one connection at a time.
#[derive(Debug)]
pub struct Blocking;

impl Driver for Blocking {
    fn serve_loop<S: KeyValueStore>(mut listener: Listener, run: Loop<'_>, store: S) -> io::Result<()> {
        let (shutdown, counters) = (run.shutdown, run.shared.counters);
        let mut server = Server::new(run.limits, run.shared, KeyValueHandler::new(store));
        let mut read = vec![0u8; READ_CHUNK].into_boxed_slice();
        // A safety net: accept never blocks longer than a tick, should the connection vanish after the poll.
        net::set_timeouts(listener.as_fd(), Some(TICK), None)?;
        while driver::wait_for_connection(&listener, shutdown)? {
            match listener.accept(false) {
                Ok(Accepted::Connection(fd, peer)) => {
                    // A refusal is counted by the server; dropping `fd` closes it.
                    let Ok(handle) = server.accept(peer, Instant::now()) else { continue };
                    driver::serve_blocking(fd.as_fd(), &mut server, handle, &mut read, shutdown, None);
                    drop(fd);
                    server.release(handle);
                }
                Ok(Accepted::Refused(e)) => counters.refused(None, format_args!("out of file descriptors: {e}")),
                Ok(Accepted::Nothing) => {}
                Err(e) => driver::accept_failed(counters, &e),
            }
        }
        Ok(())
    }
}
