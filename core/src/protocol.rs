//! The protocol seam: what a [`Connection`](crate::Connection) needs from a
//! wire protocol, in the shape of Pelikan's `Parse` / `Execute` / `Compose`.
//!
//! - [`Parser`]: a push state machine over a byte stream that may arrive
//!   split at any byte. It yields one whole request at a time, borrowed
//!   from the input when the request came whole in one slice, or from the
//!   caller's [`PayloadBuffer`] when it came in pieces; "need more bytes"
//!   is [`Parse::Partial`], and a broken stream is the parser's `Error`,
//!   after which it stays failed.
//! - [`Handler`]: executes a request against the store and composes its
//!   response straight into the connection's [`Output`] (no response value
//!   in between, so a stored value is copied once, from the store to the
//!   output); and writes the answer to a broken stream or an eviction.
//!
//! kvio's frames ([`FrameParser`](crate::FrameParser), with `kvio-proto`'s
//! handler) are the first protocol; [`resp`](crate::resp) (RESP2) and
//! [`memcache`](crate::memcache) (the memcached text and meta protocols)
//! are the others. A protocol is a type parameter, so a build that serves
//! only kvio frames (the firmware) does not link the other parsers.
//!
//! What it does not own: the framing loop, pipelining and back-pressure
//! ([`Connection`](crate::Connection)), and the store's rules ([`crate::store`]).

use crate::buffer::{Output, OutputFull, PayloadBuffer};

/// The result of a push that did not fail. (Named so as not to collide
/// with `kvio_proto::Status`, the protobuf status.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Parse<T> {
    /// A whole request was parsed.
    Complete(T),
    /// All input was consumed and the request is not complete yet.
    Partial,
}

/// A request parser: a push state machine (see the [module docs](self)).
pub trait Parser {
    /// One whole request, borrowing the input or the payload buffer.
    type Request<'a>;
    /// Why the byte stream can no longer be parsed.
    type Error: Copy + core::fmt::Debug + PartialEq;

    /// Feeds `input`: how many bytes were consumed, and either
    /// `Complete(request)` (the consumed bytes end with that request; push
    /// the rest again for the next one) or `Partial` (all of `input` was
    /// consumed). After an error every later push returns the same error.
    fn push<'a, B>(
        &mut self,
        input: &'a [u8],
        buf: &'a mut B,
    ) -> Result<(usize, Parse<Self::Request<'a>>), Self::Error>
    where
        B: PayloadBuffer + ?Sized;

    /// The error this parser stopped at, if any.
    fn error(&self) -> Option<Self::Error>;

    /// True between requests: no part of one is held anywhere.
    fn is_at_boundary(&self) -> bool;

    /// Bytes of a partial request kept in the caller's payload buffer (the
    /// buffer may be released when this is 0).
    fn buffered(&self) -> usize;
}

/// What the connection does after a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Next {
    /// Read the next request.
    Continue,
    /// The client asked to end the connection (RESP `QUIT`, memcached
    /// `quit`): take nothing more; close once the output is written.
    Close,
}

/// Executes the requests of protocol `P` and composes their responses
/// (kvio frames by default). See the [module docs](self).
pub trait Handler<P: Parser = crate::FrameParser> {
    /// Answers `request`, received at `now` (milliseconds on the caller's
    /// clock, which the store's expiry compares with), by appending its
    /// whole response to `out`, or nothing if `out` has no room. A protocol
    /// may answer some requests with nothing (a memcached `noreply`).
    fn request<O: Output + ?Sized>(
        &mut self,
        request: P::Request<'_>,
        now: u64,
        out: &mut O,
    ) -> Result<Next, OutputFull>;

    /// Appends the answer that tells the client why the connection closes:
    /// its byte stream broke.
    fn parse_error<O: Output + ?Sized>(&mut self, error: P::Error, out: &mut O) -> Result<(), OutputFull>;

    /// Appends the answer that tells a client its host evicted it (all its
    /// connections together held more memory than the host allows).
    /// Nothing by default: a host without such a cap never calls it.
    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        let _ = out;
        Ok(())
    }
}
