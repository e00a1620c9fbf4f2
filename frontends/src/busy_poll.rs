//! Flavor `busy-poll`: one thread polling non-blocking sockets in a loop.
//!
//! - Model: every pass tries `accept` until EAGAIN, then gives every
//!   connection one [`Session::service`] (EAGAIN means "nothing now"). No
//!   epoll, poll or select: readiness is discovered by trying. Unlike the
//!   article's version, which served one connection at a time, every
//!   connection is polled on every pass, so many are served at once.
//! - Threads: 1, and it never sleeps: a pass that moved nothing only yields
//!   the CPU. It burns a core while idle, and a pass costs a syscall or two
//!   per connection whether it has data or not, so latency grows with the
//!   number of connections.
//! - Limits: `--max-connections` (the next one is accepted and closed at
//!   once); idle connections are closed after the idle timeout; a session
//!   between requests holds no buffer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use kvio_proto::KeyValueHandler;
use rustix::net::RecvFlags;

use crate::config::{Config, SHUTDOWN_GRACE};
use crate::net::{self, Accepted, Listener};
use crate::session::{LINGER_TIME, Linger, READ_CHUNK, Scratch, Session, linger_all};
use crate::shutdown::Shutdown;
use crate::stats::{Counters, End, Stats};

/// Accepts per pass at most, so a connection storm cannot starve the open connections.
const ACCEPTS_PER_PASS: usize = 256;

struct Client {
    fd: OwnedFd,
    peer: Option<SocketAddr>,
    session: Session,
    last_moved: Instant,
    /// Closing: only draining the peer's late bytes (see [`Linger`]).
    linger: Option<Linger>,
}

/// Serves until `shutdown` is requested.
pub fn serve(mut listener: Listener, config: &Config, shutdown: &Shutdown) -> io::Result<Stats> {
    let counters = Counters::default();
    let mut handler = KeyValueHandler::new(config.store());
    let mut scratch = Scratch::new(READ_CHUNK);
    let mut clients: Vec<Client> = Vec::new();
    net::set_nonblocking(listener.as_fd(), true)?;
    while !shutdown.is_requested() {
        let mut moved = false;
        for _ in 0..ACCEPTS_PER_PASS {
            match listener.accept(true) {
                Ok(Accepted::Connection(fd, peer)) => {
                    moved = true;
                    if clients.len() >= config.max_connections {
                        counters.refused(peer, format_args!("max connections ({}) reached", config.max_connections));
                        continue;
                    }
                    counters.connection();
                    let session = Session::new(config);
                    clients.push(Client { fd, peer, session, last_moved: Instant::now(), linger: None });
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
        let now = Instant::now();
        let mut i = 0;
        while i < clients.len() {
            let client = &mut clients[i];
            if let Some(linger) = &mut client.linger {
                if linger.drain(client.fd.as_fd(), &mut scratch.read) || now >= linger.deadline() {
                    clients.swap_remove(i);
                } else {
                    i += 1;
                }
                continue;
            }
            let serviced = client.session.service(client.fd.as_fd(), &mut scratch, &mut handler, RecvFlags::DONTWAIT);
            counters.requests(client.session.take_requests());
            let end = match serviced {
                Ok(p) if p.moved => {
                    moved = true;
                    client.last_moved = now;
                    None
                }
                Ok(_) if config.idle_timeout.is_some_and(|idle| now.duration_since(client.last_moved) >= idle) => {
                    Some(End::Idle)
                }
                Ok(_) => None,
                Err(end) => Some(end),
            };
            match end {
                None => {
                    client.session.release_buffers();
                    i += 1;
                }
                Some(end) => {
                    counters.ended(client.peer, &end);
                    if end.lingers() {
                        // Every response is written (a session ends only then): the FIN follows them.
                        client.linger = Some(Linger::start(client.fd.as_fd(), now + LINGER_TIME));
                        client.session.release_buffers();
                        i += 1;
                    } else {
                        clients.swap_remove(i);
                    }
                }
            }
        }
        if !moved {
            std::thread::yield_now();
        }
    }
    drop(listener);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let mut closing = Vec::new();
    for mut client in clients {
        if let Some(linger) = client.linger {
            closing.push((client.fd, linger));
            continue;
        }
        let end = client.session.finish(client.fd.as_fd(), &mut scratch, &mut handler, deadline);
        counters.requests(client.session.take_requests());
        counters.ended(client.peer, &end);
        if end.lingers() {
            let linger = Linger::start(client.fd.as_fd(), Instant::now() + LINGER_TIME);
            closing.push((client.fd, linger));
        }
    }
    // All at once: one client that never closes does not hold the others' closes.
    linger_all(closing, &mut scratch.read);
    Ok(counters.snapshot())
}
