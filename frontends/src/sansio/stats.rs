//! The counters a server keeps (connections, requests, errors, closes by
//! reason, gets, puts and deletes by outcome, bytes), and the log events
//! of refused and closed connections (per connection at `debug`; the
//! operator conditions rate-limited at `warn`: see [`super::warn`]).
//!
//! Counters are atomics so the threaded flavor's threads share one set; the
//! single-thread flavors pay an uncontended add. They are read (Relaxed)
//! by the metrics thread while the loops run ([`Counters::figures`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sansio::warn;

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

/// [`Stats`] being counted, and the finer figures `/metrics` shows.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    closed: [AtomicU64; Close::ALL.len()],
    gets: [AtomicU64; 2],
    puts: [AtomicU64; PutOutcome::ALL.len()],
    deletes: [AtomicU64; 2],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    auth_failures: AtomicU64,
}

/// Why a connection closed, as `/metrics` groups the [`End`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client closed its side.
    Peer,
    /// Idle timeout.
    Idle,
    /// A frame begun was not complete in time.
    FrameDeadline,
    /// The byte stream broke (a framing error, or broken RESP or memcached).
    BadFrame,
    /// Evicted at the client-memory cap.
    MemoryEviction,
    /// The server stopped.
    Stop,
    /// A socket error, an oversized response or a panic.
    Error,
    /// Refused by protected mode.
    Denied,
    /// Too many wrong secrets.
    AuthFailed,
    /// TLS failed (not TLS, a refused handshake, a bad record), or its
    /// handshake was not done within the handshake deadline.
    Tls,
}

impl Close {
    /// Every reason, in label order.
    pub const ALL: [Close; 10] = [
        Close::Peer,
        Close::Idle,
        Close::FrameDeadline,
        Close::BadFrame,
        Close::MemoryEviction,
        Close::Stop,
        Close::Error,
        Close::Denied,
        Close::AuthFailed,
        Close::Tls,
    ];

    /// The `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Close::Peer => "peer",
            Close::Idle => "idle",
            Close::FrameDeadline => "frame_deadline",
            Close::BadFrame => "bad_frame",
            Close::MemoryEviction => "memory_eviction",
            Close::Stop => "stop",
            Close::Error => "error",
            Close::Denied => "denied",
            Close::AuthFailed => "auth_failed",
            Close::Tls => "tls",
        }
    }
}

/// How a put went, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored.
    Stored,
    /// Refused: key or value over its limit.
    TooBig,
    /// Refused: no entry or byte left in the store.
    StoreFull,
    /// Refused for a reason this build does not name.
    Other,
}

impl PutOutcome {
    /// Every outcome, in label order.
    pub const ALL: [PutOutcome; 4] = [PutOutcome::Stored, PutOutcome::TooBig, PutOutcome::StoreFull, PutOutcome::Other];

    /// The `result` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            PutOutcome::Stored => "stored",
            PutOutcome::TooBig => "too_big",
            PutOutcome::StoreFull => "store_full",
            PutOutcome::Other => "other",
        }
    }
}

/// Everything one [`Counters`] holds, read at one moment (each figure
/// exact, the set not one atomic snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused at the door (limit, descriptors).
    pub refused: u64,
    /// Closes, by [`Close::ALL`] order.
    pub closed: [u64; Close::ALL.len()],
    /// Requests answered.
    pub requests: u64,
    /// Gets that found the key.
    pub get_hits: u64,
    /// Gets that did not find the key.
    pub get_misses: u64,
    /// Puts, by [`PutOutcome::ALL`] order.
    pub puts: [u64; PutOutcome::ALL.len()],
    /// Deletes that removed a key.
    pub delete_hits: u64,
    /// Deletes that found no key.
    pub delete_misses: u64,
    /// Bytes received from clients.
    pub bytes_read: u64,
    /// Bytes sent to clients.
    pub bytes_written: u64,
    /// Wrong secrets presented.
    pub auth_failures: u64,
}

impl Figures {
    /// Connections open: accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.accepted.saturating_sub(self.closed.iter().sum())
    }
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

    /// A connection was refused at the door (logged, rate-limited: an
    /// operator condition).
    pub fn refused(&self, peer: Option<SocketAddr>, reason: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.refused.fetch_add(1, Ordering::Relaxed);
        warn::REFUSED.warn(format_args!("refusing connections: {}: {reason}", Peer(peer)));
    }

    /// A connection ended: counted by reason; logged at `debug`, or
    /// rate-limited at `warn` for an eviction at the memory cap.
    pub fn ended(&self, peer: Option<SocketAddr>, end: &End) {
        if end.is_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.closed[close_of(end) as usize].fetch_add(1, Ordering::Relaxed);
        if let End::MemoryLimit(held) = end {
            warn::EVICTED.warn(format_args!(
                "evicting clients at the memory cap (--max-client-memory): closed the one holding the most, {held} bytes"
            ));
        }
        if end.is_logged() {
            tracing::debug!("closed {}: {end}", Peer(peer));
        }
    }

    /// `n` wrong secrets came from `peer`: counted, and logged
    /// (rate-limited) with the peer, never with what it sent.
    pub fn auth_failed(&self, peer: Option<SocketAddr>, n: u32) {
        if n > 0 {
            self.auth_failures.fetch_add(u64::from(n), Ordering::Relaxed);
            warn::AUTH_FAILED.warn(format_args!("wrong secret from {}", Peer(peer)));
        }
    }

    /// Protected mode refused `peer` (logged, rate-limited, with the way out).
    pub fn denied(&self, peer: Option<SocketAddr>) {
        warn::DENIED.warn(format_args!(
            "protected mode refused {}: not on loopback, and no --auth-file is set (see --protected-mode)",
            Peer(peer)
        ));
    }

    /// A server-wide error that did not end the server (an accept error
    /// such as EMFILE; logged, rate-limited).
    pub fn error(&self, what: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        warn::SERVER_ERROR.warn(format_args!("{what}"));
    }

    /// A get found its key (`hit`) or not.
    pub fn get(&self, hit: bool) {
        self.gets[usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    /// A put went as `outcome`.
    pub fn put(&self, outcome: PutOutcome) {
        self.puts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A delete removed its key (`hit`) or found none.
    pub fn delete(&self, hit: bool) {
        self.deletes[usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes received from and sent to clients since the last call.
    pub fn traffic(&self, (read, written): (u64, u64)) {
        if read > 0 {
            self.bytes_read.fetch_add(read, Ordering::Relaxed);
        }
        if written > 0 {
            self.bytes_written.fetch_add(written, Ordering::Relaxed);
        }
    }

    /// Every figure so far (for `/metrics`).
    pub fn figures(&self) -> Figures {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Figures {
            // Closes first: a connection closed between the two loads then
            // reads as still open, never as a negative count.
            closed: self.closed.each_ref().map(load),
            accepted: load(&self.connections),
            refused: load(&self.refused),
            requests: load(&self.requests),
            get_hits: load(&self.gets[0]),
            get_misses: load(&self.gets[1]),
            puts: self.puts.each_ref().map(load),
            delete_hits: load(&self.deletes[0]),
            delete_misses: load(&self.deletes[1]),
            bytes_read: load(&self.bytes_read),
            bytes_written: load(&self.bytes_written),
            auth_failures: load(&self.auth_failures),
        }
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

/// The reason `/metrics` counts an end under.
pub(crate) fn close_of(end: &End) -> Close {
    match end {
        End::Eof | End::Quit => Close::Peer,
        End::Protocol(_) => Close::BadFrame,
        End::Idle => Close::Idle,
        End::SlowFrame(_) => Close::FrameDeadline,
        End::Shutdown => Close::Stop,
        End::MemoryLimit(_) => Close::MemoryEviction,
        End::OutputFull | End::Io(_) | End::Panic => Close::Error,
        End::Denied => Close::Denied,
        End::AuthFailed => Close::AuthFailed,
        End::Tls(_) | End::SlowHandshake(_) => Close::Tls,
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

    use crate::sansio::wire::ProtocolError;
    use kvio_core::FrameError;

    #[test]
    fn counters_count_errors_but_not_normal_ends() {
        let counters = Counters::default();
        counters.connection();
        counters.requests(3);
        counters.ended(None, &End::Protocol(ProtocolError::Frame(FrameError::BadFooter)));
        counters.ended(None, &End::Eof);
        counters.ended(None, &End::Idle);
        assert_eq!(counters.snapshot(), Stats { connections: 1, requests: 3, errors: 1 });
    }
}
