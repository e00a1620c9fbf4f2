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
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use kvio_proto::KeyValueHandler;

use crate::config::Config;
use crate::driver::{self, READ_CHUNK, Scratch};
use crate::net::{self, Accepted, Listener};
use crate::session::{Session, Timing};
use crate::shutdown::Shutdown;
use crate::stats::{Counters, Stats};

/// Accepts per pass at most, so a connection storm cannot starve the open connections.
const ACCEPTS_PER_PASS: usize = 256;

struct Client {
    fd: OwnedFd,
    peer: Option<SocketAddr>,
    session: Session,
}

/// Serves until `shutdown` is requested and every connection has closed.
pub fn serve(listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    let counters = Counters::default();
    let timing = Timing::new(config);
    let mut handler = KeyValueHandler::new(config.store());
    let mut scratch = Scratch::new(READ_CHUNK);
    let mut clients: Vec<Client> = Vec::new();
    net::set_nonblocking(listener.as_fd(), true)?;
    let mut listener = Some(listener);
    while listener.is_some() || !clients.is_empty() {
        let mut moved = false;
        let now = Instant::now();
        if listener.is_some() && shutdown.is_requested() {
            listener = None;
            clients.iter_mut().for_each(|c| c.session.begin_shutdown(now));
        }
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(listener) = &mut listener else { break };
            match listener.accept(true) {
                Ok(Accepted::Connection(fd, peer)) => {
                    moved = true;
                    if clients.len() >= config.max_connections {
                        counters.refused(peer, format_args!("max connections ({}) reached", config.max_connections));
                        continue;
                    }
                    counters.connection();
                    clients.push(Client { fd, peer, session: Session::new(config, timing, now) });
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
        while i < clients.len() {
            let client = &mut clients[i];
            let session = &mut client.session;
            moved |= driver::pump(client.fd.as_fd(), session, &mut scratch, &mut handler, now);
            session.handle_timeout(now);
            if driver::settle(client.fd.as_fd(), session, &mut scratch, &counters, client.peer) {
                clients.swap_remove(i);
            } else {
                i += 1;
            }
        }
        if !moved {
            std::thread::yield_now();
        }
    }
    Ok(counters.snapshot())
}
