//! Flavor `blocking`: the article's first server.
//!
//! - Model: accept one connection, serve it with blocking reads and writes
//!   until it ends, then accept the next. Others wait in the listen backlog.
//! - Threads: 1.
//! - Limits: one connection at a time (`--max-connections` only matters at
//!   0). The idle timeout is on by default (200 ms) so that one silent
//!   client holds everybody else for at most that long; it is enforced with
//!   SO_RCVTIMEO/SO_SNDTIMEO ticks (no poll). A client that stops reading
//!   its responses stalls the writes and is dropped the same way.
//! - Frame deadline: every byte resets the idle timer, so a client
//!   trickling a byte per 100 ms would hold the server for ever (a 1 MiB
//!   frame at 10 B/s: 29 hours). Once a frame's first byte has arrived (or
//!   the previous request was answered) the frame must be whole within 10
//!   idle timeouts (2 s by default: a 1 MiB frame then needs 0.5 MiB/s,
//!   which loopback and any LAN exceed by far), else the connection is
//!   closed and logged ("frame not complete within ..."), without an error
//!   frame: the stream is not broken, the client is too slow.
//!   With `--idle-timeout-ms 0` there is no frame deadline either.
//! - Closing after a framing error lingers (up to 2 s, see
//!   `session::Linger`) in this one thread: the next client waits that long
//!   at most, unless the closing client closes its side first.
//! - Shutdown: the listener has a 100 ms SO_RCVTIMEO, so a blocked accept
//!   wakes up to look at the stop flag; the connection being served is
//!   finished (what it already sent is answered) before returning.

use std::io;
use std::os::fd::AsFd;

use kvio_proto::KeyValueHandler;

use crate::config::Config;
use crate::net::{self, Accepted, Listener};
use crate::session::{READ_CHUNK, ReadWait, Scratch, TICK, run_blocking};
use crate::shutdown::Shutdown;
use crate::stats::{Counters, Stats};

/// Serves until `shutdown` is requested.
pub fn serve(mut listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    let counters = Counters::default();
    let mut handler = KeyValueHandler::new(config.store());
    let mut scratch = Scratch::new(READ_CHUNK);
    net::set_timeouts(listener.as_fd(), Some(TICK), None)?;
    while !shutdown.is_requested() {
        match listener.accept(false) {
            Ok(Accepted::Connection(fd, peer)) => {
                if config.max_connections == 0 {
                    counters.refused(peer, "max connections (0) reached");
                    continue;
                }
                counters.connection();
                let end =
                    run_blocking(fd.as_fd(), config, shutdown, ReadWait::Tick, &mut scratch, &mut handler, &counters);
                counters.ended(peer, &end);
            }
            Ok(Accepted::Refused(e)) => counters.refused(None, format_args!("out of file descriptors: {e}")),
            Ok(Accepted::Nothing) => {}
            Err(e) => {
                counters.error(format_args!("accept: {e}"));
                // Whatever failed is likely to fail again at once: do not spin on it.
                std::thread::sleep(TICK);
            }
        }
    }
    Ok(counters.snapshot())
}
