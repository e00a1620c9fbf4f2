//! The counters a server keeps (connections, requests, errors), why a
//! connection ended, and the log lines both produce: the start-up line on
//! stdout, one stderr line per refused or dropped connection, the final line.
//!
//! Counters are atomics so the threaded flavor's threads share one set; the
//! single-thread flavors pay an uncontended add.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use kvio_core::FrameError;

use crate::config::{Config, Flavor};

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

/// Why a connection was closed.
#[derive(Debug)]
pub enum End {
    /// The client closed its side and every response was written.
    Eof,
    /// The byte stream broke; the error frame was sent.
    Framing(FrameError),
    /// A response did not fit the output buffer.
    OutputFull,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A frame begun was not complete within the frame deadline (blocking flavor).
    SlowFrame(std::time::Duration),
    /// The server is stopping.
    Shutdown,
    /// Evicted: all connections together held more than
    /// `--max-client-memory`, and this one held the most (bytes).
    MemoryLimit(usize),
    /// A socket error (reset, broken pipe...).
    Io(io::Error),
    /// The connection's thread panicked (threaded flavor).
    Panic,
}

impl End {
    /// Counted in [`Stats::errors`].
    pub fn is_error(&self) -> bool {
        matches!(self, End::Framing(_) | End::OutputFull | End::Io(_) | End::Panic | End::MemoryLimit(_))
    }

    fn is_logged(&self) -> bool {
        !matches!(self, End::Eof | End::Shutdown)
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("end of stream"),
            End::Framing(e) => write!(f, "framing error: {e}"),
            End::OutputFull => f.write_str("response larger than the output buffer"),
            End::Idle => f.write_str("idle timeout"),
            End::SlowFrame(limit) => write!(f, "frame not complete within {} ms of its first byte", limit.as_millis()),
            End::Shutdown => f.write_str("server stopping"),
            End::MemoryLimit(held) => {
                write!(f, "client memory limit reached; this connection held the most ({held} bytes)")
            }
            End::Io(e) => write!(f, "io error: {e}"),
            End::Panic => f.write_str("connection thread panicked"),
        }
    }
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
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

/// The start-up line: the first line on stdout, flushed, once the socket
/// listens; `threads` is the number of loops (1 for every single-loop
/// flavor, and for `threaded`, whose threads are per connection).
pub fn startup_line(flavor: Flavor, addr: SocketAddr, config: &Config, threads: usize) -> String {
    format!("kvio serve: flavor={flavor} addr={addr} {} threads={threads}", config.describe())
}

/// The final line.
pub fn stopped_line(stats: &Stats) -> String {
    format!("kvio serve: stopped connections={} requests={} errors={}", stats.connections, stats.requests, stats.errors)
}

/// Prints `line` on stdout and flushes (tests and the bench wait for it).
pub fn announce(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lines_match_the_contract() {
        let config = Config::for_flavor(Flavor::Epoll);
        assert_eq!(
            startup_line(Flavor::BusyPoll, "127.0.0.1:7878".parse().unwrap(), &config, 1),
            "kvio serve: flavor=busy-poll addr=127.0.0.1:7878 max_frame_len=1048576 store_entries=100000 \
             store_bytes=67108864 max_connections=10000 idle_timeout_ms=300000 output_limit=65536 \
             max_client_memory=268435456 threads=1"
        );
        let counters = Counters::default();
        counters.connection();
        counters.requests(3);
        counters.ended(None, &End::Framing(FrameError::BadFooter));
        counters.ended(None, &End::Eof);
        counters.ended(None, &End::Idle);
        assert_eq!(counters.snapshot(), Stats { connections: 1, requests: 3, errors: 1 });
        assert_eq!(stopped_line(&counters.snapshot()), "kvio serve: stopped connections=1 requests=3 errors=1");
    }
}
