//! The counters a server keeps (connections, requests, errors), why a
//! connection ended, and the log lines both produce: the start-up line on
//! stdout, one stderr line per refused or dropped connection, the final line.
//!
//! Counters are atomics so the threaded flavor's threads share one set; the
//! single-thread flavors pay an uncontended add.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection ended: the session decides it.
pub use crate::sansio::session::End;

/// Totals over a server's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections served (refused ones not included).
    pub connections: u64,
    /// Requests answered.
    pub requests: u64,
    /// Connections that ended badly: refused, framing error, IO error, panic.
    pub errors: u64,
}

/// [`Stats`] being counted.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    /// A connection starts being served.
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` more requests were answered.
    pub fn requests(&self, n: usize) {
        if n > 0 {
            self.requests.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// A connection was refused at the door (and logs why).
    pub fn refused(&self, peer: Option<SocketAddr>, reason: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("kvio serve: refused {}: {reason}", Peer(peer));
    }

    /// A connection ended; logs it unless it ended normally.
    pub fn ended(&self, peer: Option<SocketAddr>, end: &End) {
        if end.is_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if end.is_logged() {
            eprintln!("kvio serve: closed {}: {end}", Peer(peer));
        }
    }

    /// A server-wide error that did not end the server (logged).
    pub fn error(&self, what: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("kvio serve: {what}");
    }

    /// The totals so far.
    pub fn snapshot(&self) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

struct Peer(Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "connection from {addr}"),
            None => f.write_str("connection"),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    use kvio_core::FrameError;

    #[test]
    fn counters_count_errors_but_not_normal_ends() {
        let counters = Counters::default();
        counters.connection();
        counters.requests(3);
        counters.ended(None, &End::Framing(FrameError::BadFooter));
        counters.ended(None, &End::Eof);
        counters.ended(None, &End::Idle);
        assert_eq!(counters.snapshot(), Stats { connections: 1, requests: 3, errors: 1 });
    }
}
