//! Which protocol a connection speaks, and the one handler every protocol
//! answers through: the seam between a [`Session`](crate::sansio::session::Session),
//! which knows nothing of any protocol, and the core's parsers and command
//! tables (kvio frames, RESP2, memcached).
//!
//! - [`Protocol`]: what a listener speaks; the [`Server`](crate::sansio::server::Server)
//!   is told it with each accepted connection.
//! - [`Wire`]: one connection's protocol state, whichever protocol (one
//!   `match` per read, not per request).
//! - [`Handlers`]: a handler that answers all three; [`Protocols`] is the
//!   one the servers use: one store, each protocol's command table over it,
//!   and what the host tells `INFO` and `stats`.
//!
//! What it does not own: the parsers and command tables (`kvio_core::frame`,
//! `kvio_proto`, `kvio_core::resp`, `kvio_core::memcache`), time and closing
//! (the session).

use std::fmt;

use kvio_core::StoreLimits;
use kvio_core::memcache::{self, McError, McHandler};
use kvio_core::resp::{self, NoInfo, RespError, RespHandler};
use kvio_core::{
    Connection, FrameError, FrameParser, Handler, KeyValueStore, Next, Outcome, Output, OutputFull, Parser,
};
use kvio_proto::encode_response;
use kvio_proto::{KeyValueHandler, Kind, Status};

use crate::sansio::security::DENIED_REASON;

/// The framing limits of a connection, whichever protocol it speaks (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Largest frame `len` accepted.
    pub max_frame_len: u32,
    /// Unsent response bytes at which the session stops reading.
    pub output_limit: usize,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// kvio's frames (docs/protocol.md).
    #[default]
    Kvio,
    /// RESP2, what Redis clients speak.
    Resp,
    /// The memcached text and meta protocols.
    Memcache,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Kvio, Protocol::Resp, Protocol::Memcache];

    /// Its name in flags, logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Kvio => "kvio",
            Protocol::Resp => "resp",
            Protocol::Memcache => "memcache",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection's byte stream can no longer be parsed, in its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// kvio frames.
    Frame(FrameError),
    /// RESP.
    Resp(RespError),
    /// memcached.
    Memcache(McError),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => write!(f, "framing error: {e}"),
            ProtocolError::Resp(e) => write!(f, "RESP error: {e}"),
            ProtocolError::Memcache(e) => write!(f, "memcached protocol error: {e}"),
        }
    }
}

/// A handler for every protocol: what a [`Server`](crate::sansio::server::Server) answers with.
pub trait Handlers: Handler<FrameParser> + Handler<resp::RequestParser> + Handler<memcache::RequestParser> {}

impl<H> Handlers for H where
    H: Handler<FrameParser> + Handler<resp::RequestParser> + Handler<memcache::RequestParser> + ?Sized
{
}

/// One connection's protocol state. kvio frames' is inline; RESP's and
/// memcached's (a few dozen bytes more) are boxed, so a session of any
/// protocol is as small as a kvio one was (an idle connection's memory is
/// its session), and only the other protocols' connections pay that
/// allocation, once, when accepted.
#[derive(Debug)]
pub enum Wire {
    /// kvio frames.
    Kvio(Connection<FrameParser>),
    /// RESP.
    Resp(Box<Connection<resp::RequestParser>>),
    /// memcached.
    Memcache(Box<Connection<memcache::RequestParser>>),
}

/// Calls `$body` with `$conn` bound to the connection, whatever its protocol.
macro_rules! each {
    ($wire:expr, $conn:ident => $body:expr) => {
        match $wire {
            Wire::Kvio($conn) => $body,
            Wire::Resp($conn) => $body,
            Wire::Memcache($conn) => $body,
        }
    };
}

/// What [`Wire::receive`] tells the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Input bytes taken.
    pub consumed: usize,
    /// Requests answered.
    pub requests: usize,
    /// What follows (see [`kvio_core::Outcome`]).
    pub outcome: Outcome<ProtocolError>,
}

impl Wire {
    /// A fresh connection speaking `protocol` within `framing`'s limits:
    /// one request is at most the frame limit (RESP), a data block at most
    /// the store's value limit (memcached).
    pub fn new(protocol: Protocol, framing: Framing) -> Wire {
        let limit = framing.output_limit;
        match protocol {
            Protocol::Kvio => Wire::Kvio(Connection::new(framing.max_frame_len, limit)),
            Protocol::Resp => {
                let parser = resp::RequestParser::new(framing.max_frame_len as usize);
                Wire::Resp(Box::new(Connection::with_parser(parser, limit)))
            }
            Protocol::Memcache => {
                let max_value = StoreLimits::for_frame(framing.max_frame_len, 0, 0).max_value_len;
                Wire::Memcache(Box::new(Connection::with_parser(memcache::RequestParser::new(max_value), limit)))
            }
        }
    }

    /// Its protocol.
    pub fn protocol(&self) -> Protocol {
        match self {
            Wire::Kvio(_) => Protocol::Kvio,
            Wire::Resp(_) => Protocol::Resp,
            Wire::Memcache(_) => Protocol::Memcache,
        }
    }

    /// Whether to read more, given the unsent output.
    #[inline]
    pub fn wants_read(&self, pending: usize) -> bool {
        each!(self, c => c.wants_read(pending))
    }

    /// Requests answered over the connection's life.
    pub fn requests(&self) -> u64 {
        each!(self, c => c.requests())
    }

    /// Between requests: nothing of one is held.
    pub fn is_at_boundary(&self) -> bool {
        each!(self, c => c.parser().is_at_boundary())
    }

    /// The stream broke.
    pub fn is_broken(&self) -> bool {
        each!(self, c => c.parser().error().is_some())
    }

    /// Bytes of a partial request kept in the payload buffer.
    pub fn buffered(&self) -> usize {
        each!(self, c => c.parser().buffered())
    }

    /// [`Connection::receive`] in its protocol, at `now` (ms on the store's clock).
    #[inline]
    pub fn receive<H, O>(&mut self, input: &[u8], now: u64, buf: &mut Vec<u8>, handler: &mut H, out: &mut O) -> Received
    where
        H: Handlers + ?Sized,
        O: Output + ?Sized,
    {
        fn received<E>(r: kvio_core::Received<E>, error: impl Fn(E) -> ProtocolError) -> Received {
            let outcome = match r.outcome {
                Outcome::NeedMore => Outcome::NeedMore,
                Outcome::Backpressure => Outcome::Backpressure,
                Outcome::Close(e) => Outcome::Close(error(e)),
                Outcome::Quit => Outcome::Quit,
                Outcome::OutputFull => Outcome::OutputFull,
            };
            Received { consumed: r.consumed, requests: r.requests, outcome }
        }
        match self {
            Wire::Kvio(c) => received(c.receive(input, now, buf, handler, out), ProtocolError::Frame),
            Wire::Resp(c) => received(c.receive(input, now, buf, handler, out), ProtocolError::Resp),
            Wire::Memcache(c) => received(c.receive(input, now, buf, handler, out), ProtocolError::Memcache),
        }
    }

    /// Appends the protocol's answer to an eviction.
    pub fn evicted<H: Handlers + ?Sized, O: Output + ?Sized>(&self, handler: &mut H, out: &mut O) {
        // A growable output always has room.
        let _ = match self {
            Wire::Kvio(_) => Handler::<FrameParser>::evicted(handler, out),
            Wire::Resp(_) => Handler::<resp::RequestParser>::evicted(handler, out),
            Wire::Memcache(_) => Handler::<memcache::RequestParser>::evicted(handler, out),
        };
    }

    /// Appends the protocol's refusal of a peer by protected mode
    /// ([`DENIED_REASON`]): RESP's `-DENIED`, memcached's `SERVER_ERROR`, an
    /// error frame.
    pub fn denied<O: Output + ?Sized>(&self, out: &mut O) {
        let reason = DENIED_REASON.as_bytes();
        let pieces: [&[u8]; 3] = match self {
            Wire::Kvio(_) => {
                // A growable output always has room.
                let _ = encode_response(out, b"", reason, Kind::Error, Status::NotOk);
                return;
            }
            Wire::Resp(_) => [b"-DENIED ", reason, b"\r\n"],
            Wire::Memcache(_) => [b"SERVER_ERROR ", reason, b"\r\n"],
        };
        let len = pieces.iter().map(|p| p.len()).sum();
        if let Ok(mut at) = out.append(len) {
            for piece in pieces {
                let (head, rest) = at.split_at_mut(piece.len());
                head.copy_from_slice(piece);
                at = rest;
            }
        }
    }
}

/// What the host tells RESP's `INFO` and memcached's `stats`.
pub trait HostInfo: resp::Info + memcache::Stats {}

impl<T: resp::Info + memcache::Stats> HostInfo for T {}

/// The servers' handler: one store `S`, each protocol's command table
/// over it, and `I`, what the host tells `INFO` and `stats`.
#[derive(Debug)]
pub struct Protocols<S, I = NoInfo> {
    store: S,
    info: I,
}

impl<S: KeyValueStore> Protocols<S, NoInfo> {
    /// Over `store`, telling `INFO` and `stats` nothing but the entries.
    pub fn new(store: S) -> Self {
        Protocols { store, info: NoInfo }
    }
}

impl<S: KeyValueStore, I: HostInfo> Protocols<S, I> {
    /// Over `store`, with the host's `INFO` and `stats`.
    pub fn with_info(store: S, info: I) -> Self {
        Protocols { store, info }
    }

    /// The store.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }
}

impl<S: KeyValueStore, I: HostInfo> Handler<FrameParser> for Protocols<S, I> {
    #[inline]
    fn request<O: Output + ?Sized>(&mut self, payload: &[u8], now: u64, out: &mut O) -> Result<Next, OutputFull> {
        KeyValueHandler::new(&mut self.store).request(payload, now, out)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
        KeyValueHandler::new(&mut self.store).parse_error(error, out)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        Handler::<FrameParser>::evicted(&mut KeyValueHandler::new(&mut self.store), out)
    }
}

impl<S: KeyValueStore, I: HostInfo> Handler<resp::RequestParser> for Protocols<S, I> {
    #[inline]
    fn request<O: Output + ?Sized>(
        &mut self,
        command: resp::Command<'_>,
        now: u64,
        out: &mut O,
    ) -> Result<Next, OutputFull> {
        RespHandler::with_info(&mut self.store, &mut self.info).request(command, now, out)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: RespError, out: &mut O) -> Result<(), OutputFull> {
        RespHandler::with_info(&mut self.store, &mut self.info).parse_error(error, out)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        RespHandler::with_info(&mut self.store, &mut self.info).evicted(out)
    }
}

impl<S: KeyValueStore, I: HostInfo> Handler<memcache::RequestParser> for Protocols<S, I> {
    #[inline]
    fn request<O: Output + ?Sized>(
        &mut self,
        request: memcache::Request<'_>,
        now: u64,
        out: &mut O,
    ) -> Result<Next, OutputFull> {
        McHandler::with_stats(&mut self.store, &mut self.info).request(request, now, out)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: McError, out: &mut O) -> Result<(), OutputFull> {
        McHandler::with_stats(&mut self.store, &mut self.info).parse_error(error, out)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        McHandler::with_stats(&mut self.store, &mut self.info).evicted(out)
    }
}
