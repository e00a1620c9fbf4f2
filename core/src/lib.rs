//! The allocation-free heart of kvio: everything the servers share, with no IO.
//!
//! - [`frame`]: the wire framing (`len: u32 LE | payload | "@EOF@"`), a push
//!   parser state machine fed arbitrary slices, and the frame encoder.
//! - [`store`]: a key/value store whose capacity (entries and a byte budget)
//!   is fixed at construction, plus [`store::Shared`], the
//!   `critical_section` wrapper that lets threads or interrupt handlers share it.
//! - [`protocol`]: the seam between a wire protocol and the rest: a
//!   request [`Parser`] and a [`Handler`] that executes requests and
//!   composes their responses (Pelikan's Parse / Execute / Compose).
//! - [`connection`]: the sans-IO connection over any protocol: bytes in,
//!   response bytes out, pipelining, error answers and back-pressure accounting.
//! - [`journal`]: the durability record format (encode, decode, CRC-32C),
//!   so that a host's log and snapshots (or a device's flash) share it.
//! - [`serial`]: a connection over a byte stream that never closes (a UART):
//!   resynchronisation by line silence, with time passed in.
//!
//! What it does not own: sockets, clocks, threads, buffers' allocation, and
//! the payload format (protobuf lives in `kvio-proto`, behind [`connection::Handler`]).
//!
//! The crate is `#![no_std]` and never allocates; with the `alloc` feature it
//! only gains trait impls for `Vec<u8>` so hosts can hand it growable buffers.
//!
//! # Example
//!
//! A [`Connection`] driven with a [`Handler`] (here one that answers each
//! payload reversed; `kvio-proto`'s `KeyValueHandler` answers key/value
//! requests), a buffer for payloads that arrive in pieces, and an output the
//! caller writes to its socket. Two pipelined requests arrive in two reads,
//! the first split inside a frame:
//!
//! ```
//! use kvio_core::frame::{FrameError, encode_frame, write_frame};
//! use kvio_core::{Connection, Handler, Next, Outcome, Output, OutputFull};
//!
//! struct Reverse;
//!
//! impl Handler for Reverse {
//!     fn request<O: Output + ?Sized>(&mut self, payload: &[u8], _now: u64, out: &mut O) -> Result<Next, OutputFull> {
//!         write_frame(out, payload.len(), |dst| {
//!             dst.copy_from_slice(payload);
//!             dst.reverse();
//!         })?;
//!         Ok(Next::Continue)
//!     }
//!
//!     fn parse_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
//!         encode_frame(error.as_str().as_bytes(), out)
//!     }
//! }
//!
//! // Frames up to 64 bytes; stop reading while 1 KiB of responses is unsent.
//! let mut conn = Connection::new(64, 1024);
//! // Holds a payload that arrives in pieces (whole ones are not copied).
//! let mut payload_buf = [0u8; 64];
//! // Responses to write; the caller bounds it (here a fixed-capacity vector).
//! let mut out = heapless::Vec::<u8, 2048>::new();
//!
//! let mut wire = heapless::Vec::<u8, 64>::new();
//! encode_frame(b"abc", &mut wire).unwrap();
//! encode_frame(b"xy", &mut wire).unwrap();
//! for read in [&wire[..10], &wire[10..]] {
//!     // 0: the time it arrived, for the store's expiry (none here).
//!     let received = conn.receive(read, 0, &mut payload_buf, &mut Reverse, &mut out);
//!     match received.outcome {
//!         // Everything was taken: read the socket again.
//!         Outcome::NeedMore => assert_eq!(received.consumed, read.len()),
//!         // Write `out` first, then push `read[received.consumed..]` again.
//!         Outcome::Backpressure => unreachable!("1 KiB is far off"),
//!         // Write `out` (it ends with the error frame), then close.
//!         Outcome::Close(_) | Outcome::Quit | Outcome::OutputFull => unreachable!("well-formed input"),
//!     }
//! }
//!
//! // What to write to the socket: one response per request, in order.
//! let mut want = heapless::Vec::<u8, 64>::new();
//! encode_frame(b"cba", &mut want).unwrap();
//! encode_frame(b"yx", &mut want).unwrap();
//! assert_eq!(&out[..], &want[..]);
//! assert_eq!(conn.requests(), 2);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

#[macro_use]
mod fmt;

pub mod buffer;
pub mod connection;
mod decimal;
pub mod frame;
pub mod journal;
pub mod memcache;
pub mod protocol;
pub mod resp;
pub mod serial;
pub mod store;

pub use buffer::{Output, OutputFull, PayloadBuffer};
pub use connection::{Connection, Outcome, Received};
pub use frame::{FrameError, FrameParser, Parse};
pub use protocol::{Handler, Next, Parser};
pub use serial::{LineState, SerialLink};
pub use store::{
    Condition, Entry, Expiry, KeyValueStore, Limits as StoreLimits, Millis, PutOptions, Quota, Shared, Store,
    StoreError, VisitCursor, WhenFull,
};

/// The default maximum frame length (`len` field: payload + 5 footer bytes): 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;
