//! Flavor `blocking`: the article's first server.
//!
//! - Model: accept one connection, serve it with blocking reads and writes
//!   ([`driver::run_blocking`]) until it ends, then accept the next. Others
//!   wait in the listen backlog.
//! - Threads: 1.
//! - Limits: one connection at a time. The idle timeout is on by default
//!   (200 ms) so that one silent client holds everybody else for at most
//!   that long, and the session's frame deadline is on
//!   ([`Timing::with_frame_deadline`]): a client trickling a byte at a time
//!   cannot hold the server either. A client that stops reading its
//!   responses stalls the writes and is dropped the same way.
//! - Closing after a framing error lingers in this one thread: the next
//!   client waits for that at most the linger time, unless the closing
//!   client closes its side first.
//! - Stop: the thread waits for a connection in `poll` on the listener and
//!   the stop's wake-up socket; a connection being served sees the stop
//!   when a signal interrupts its wait, or within a tick
//!   ([`ReadWait::Tick`]), and finishes as its session says.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use kvio_proto::KeyValueHandler;

use crate::config::Config;
use crate::driver::{self, BlockingServer, READ_CHUNK, ReadWait, Scratch, TICK};
use crate::loops::{self, Loop};
use crate::memory::Share;
use crate::net::{self, Accepted, Listener};
use crate::observed::Observed;
use crate::session::{Session, Timing};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// Serves until `shutdown` is requested.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    loops::single(listener, config, shutdown, serve_loop)
}

/// The server as one loop of [`loops`], counting into `run.counters`.
pub fn serve_loop(mut listener: Listener, run: Loop<'_>) -> io::Result<()> {
    let Loop { config, shutdown, counters, memory, .. } = run;
    let timing = Timing::new(config).with_frame_deadline();
    let mut handler = KeyValueHandler::new(Observed::new(config.store(), counters, run.fill));
    let mut scratch = Scratch::new(READ_CHUNK);
    // A safety net: accept never blocks longer than a tick, should the connection vanish after the poll.
    net::set_timeouts(listener.as_fd(), Some(TICK), None)?;
    while driver::wait_for_connection(&listener, shutdown)? {
        match listener.accept(false) {
            Ok(Accepted::Connection(fd, peer)) => {
                counters.connection();
                let mut session = Session::new(config, timing, Instant::now());
                let share = Share::default();
                // One connection at a time: the biggest is this one.
                let evict_itself = || true;
                let wait = ReadWait::Tick;
                let server =
                    BlockingServer { wait, shutdown, counters, memory, share: &share, evict_biggest: &evict_itself };
                let end = driver::run_blocking(fd.as_fd(), &mut session, &server, &mut scratch, &mut handler);
                counters.ended(peer, &end);
            }
            Ok(Accepted::Refused(e)) => counters.refused(None, format_args!("out of file descriptors: {e}")),
            Ok(Accepted::Nothing) => {}
            Err(e) => driver::accept_failed(counters, &e),
        }
    }
    Ok(())
}
