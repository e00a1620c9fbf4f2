//! Flavor `busy-poll`: one thread polling non-blocking sockets in a loop.
//!
//! - Model: every pass tries `accept` until EAGAIN, then gives every
//!   connection one [`driver::pump`] (EAGAIN means "nothing now") and one
//!   look at its deadlines ([`Session::handle_timeout`]). No epoll, poll or
//!   select: readiness is discovered by trying. Unlike the article's
//!   version, which served one connection at a time, every connection is
//!   polled on every pass, so many are served at once.
//! - Threads: 1, and it never sleeps: a pass that moved nothing only yields
//!   the CPU. It burns a core while idle, and a pass costs a syscall or two
//!   per connection whether it has data or not, so latency grows with the
//!   number of connections.
//! - Limits: `--max-connections` (the next one is accepted and closed at
//!   once); a session between requests holds no buffer.
//! - Stop: the listener closes, every session begins its shutdown, and the
//!   passes go on until the last one has closed.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use kvio_proto::KeyValueHandler;

use crate::config::Config;
use crate::driver::{self, Conn, READ_CHUNK, Scratch};
use crate::loops::{self, Loop};
use crate::net::{self, Accepted, Listener};
use crate::observed::Observed;
use crate::session::{Session, Timing};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// Accepts per pass at most, so a connection storm cannot starve the open connections.
const ACCEPTS_PER_PASS: usize = 256;

/// Serves until `shutdown` is requested and every connection has closed.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    loops::single(listener, config, shutdown, serve_loop)
}

/// The server as one loop of [`loops`], counting into `run.counters`.
pub fn serve_loop(listener: Listener, run: Loop<'_>) -> io::Result<()> {
    let Loop { config, shutdown, counters, memory, .. } = run;
    let timing = Timing::new(config);
    let mut handler = KeyValueHandler::new(Observed::new(config.store(), counters, run.fill));
    let mut scratch = Scratch::new(READ_CHUNK);
    let mut conns: Vec<Conn> = Vec::new();
    net::set_nonblocking(listener.as_fd(), true)?;
    let mut listener = Some(listener);
    while listener.is_some() || !conns.is_empty() {
        let mut moved = false;
        let now = Instant::now();
        if listener.is_some() && shutdown.is_requested() {
            listener = None;
            conns.iter_mut().for_each(|c| c.begin_shutdown(now));
        }
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(listener) = &mut listener else { break };
            match listener.accept(true) {
                Ok(Accepted::Connection(fd, peer)) => {
                    moved = true;
                    if conns.len() >= config.max_connections {
                        counters.refused(peer, format_args!("max connections ({}) reached", config.max_connections));
                        continue;
                    }
                    counters.connection();
                    conns.push(Conn::new(fd, peer, Session::new(config, timing, now)));
                }
                Ok(Accepted::Refused(e)) => {
                    moved = true;
                    counters.refused(None, format_args!("out of file descriptors: {e}"));
                }
                Ok(Accepted::Nothing) => break,
                Err(e) => {
                    counters.error(format_args!("accept: {e}"));
                    break;
                }
            }
        }
        let mut i = 0;
        while i < conns.len() {
            let conn = &mut conns[i];
            moved |= conn.pump(&mut scratch, &mut handler, now);
            conn.session.handle_timeout(now);
            if conn.settle(&mut scratch, counters, memory) {
                conns.swap_remove(i);
            } else {
                i += 1;
            }
            // At once, not once per pass: a pass could bring every client's first megabyte.
            // Each eviction frees what that connection held; at most one per connection.
            for _ in 0..conns.len() {
                if !memory.is_over() {
                    break;
                }
                let Some(victim) = driver::biggest(conns.iter().enumerate()) else { break };
                conns[victim].session.evict(&mut scratch.spare);
                if conns[victim].settle(&mut scratch, counters, memory) {
                    conns.swap_remove(victim);
                    // The connection at `i` may have moved: serve the pass's rest from the start.
                    i = i.min(victim);
                }
            }
        }
        if !moved {
            std::thread::yield_now();
        }
    }
    Ok(())
}
