//! The counters a server keeps (connections, requests, errors, closes by
//! reason, gets and puts by outcome, bytes), why a connection ended, and
//! the lines both produce: the start-up line on stdout, the log events of
//! refused and closed connections (per connection at `debug`, the operator
//! conditions rate-limited at `warn`: see [`crate::log`]), the final line.
//!
//! Counters are atomics so the threaded flavor's threads share one set; the
//! single-thread flavors pay an uncontended add. They are read (Relaxed)
//! by the metrics thread while the loops run ([`Counters::figures`]).

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use kvio_core::FrameError;

use crate::config::{Config, Flavor};
use crate::log;

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
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
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
    /// The byte stream broke (framing error).
    BadFrame,
    /// Evicted at the client-memory cap.
    MemoryEviction,
    /// The server stopped.
    Stop,
    /// A socket error, an oversized response or a panic.
    Error,
}

impl Close {
    /// Every reason, in label order.
    pub const ALL: [Close; 7] = [
        Close::Peer,
        Close::Idle,
        Close::FrameDeadline,
        Close::BadFrame,
        Close::MemoryEviction,
        Close::Stop,
        Close::Error,
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
    /// Gets that found the key, and that did not.
    pub get_hits: u64,
    /// Gets that did not find the key.
    pub get_misses: u64,
    /// Puts, by [`PutOutcome::ALL`] order.
    pub puts: [u64; PutOutcome::ALL.len()],
    /// Bytes received from clients.
    pub bytes_read: u64,
    /// Bytes sent to clients.
    pub bytes_written: u64,
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
        log::REFUSED.warn(format_args!("refusing connections: {}: {reason}", Peer(peer)));
    }

    /// A connection ended: counted by reason; logged at `debug`, or
    /// rate-limited at `warn` for an eviction at the memory cap.
    pub fn ended(&self, peer: Option<SocketAddr>, end: &End) {
        if end.is_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.closed[end.close() as usize].fetch_add(1, Ordering::Relaxed);
        if let End::MemoryLimit(held) = end {
            log::EVICTED.warn(format_args!(
                "evicting clients at the memory cap (--max-client-memory): closed the one holding the most, {held} bytes"
            ));
        }
        if end.is_logged() {
            tracing::debug!("closed {}: {end}", Peer(peer));
        }
    }

    /// A server-wide error that did not end the server (an accept error
    /// such as EMFILE; logged, rate-limited).
    pub fn error(&self, what: impl fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        log::SERVER_ERROR.warn(format_args!("{what}"));
    }

    /// A get found its key (`hit`) or not.
    pub fn get(&self, hit: bool) {
        self.gets[usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    /// A put went as `outcome`.
    pub fn put(&self, outcome: PutOutcome) {
        self.puts[outcome as usize].fetch_add(1, Ordering::Relaxed);
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
            bytes_read: load(&self.bytes_read),
            bytes_written: load(&self.bytes_written),
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

    /// The reason `/metrics` counts it under.
    pub fn close(&self) -> Close {
        match self {
            End::Eof => Close::Peer,
            End::Framing(_) => Close::BadFrame,
            End::Idle => Close::Idle,
            End::SlowFrame(_) => Close::FrameDeadline,
            End::Shutdown => Close::Stop,
            End::MemoryLimit(_) => Close::MemoryEviction,
            End::OutputFull | End::Io(_) | End::Panic => Close::Error,
        }
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
