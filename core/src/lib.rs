//! The allocation-free heart of kvio: everything the servers share, with no IO.
//!
//! - [`frame`]: the wire framing (`len: u32 LE | payload | "@EOF@"`), a push
//!   parser state machine fed arbitrary slices, and the frame encoder.
//! - [`store`]: a key/value store whose capacity (entries and a byte budget)
//!   is fixed at construction, plus [`store::Shared`], the
//!   `critical_section` wrapper that lets threads or interrupt handlers share it.
//! - [`connection`]: the sans-IO connection: bytes in, response bytes out,
//!   pipelining, error frames and back-pressure accounting.
//! - [`serial`]: a connection over a byte stream that never closes (a UART):
//!   resynchronisation by line silence, with time passed in.
//!
//! What it does not own: sockets, clocks, threads, buffers' allocation, and
//! the payload format (protobuf lives in `kvio-proto`, behind [`connection::Handler`]).
//!
//! The crate is `#![no_std]` and never allocates; with the `alloc` feature it
//! only gains trait impls for `Vec<u8>` so hosts can hand it growable buffers.
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
pub mod frame;
pub mod serial;
pub mod store;

pub use buffer::{Output, OutputFull, PayloadBuffer};
pub use connection::{Connection, Handler, Outcome, Received};
pub use frame::{FrameError, FrameParser, Status};
pub use serial::{LineState, SerialLink};
pub use store::{KeyValueStore, Limits as StoreLimits, Shared, Store, StoreError};

/// The default maximum frame length (`len` field: payload + 5 footer bytes): 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 1 << 20;
