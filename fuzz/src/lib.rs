//! Invariants behind kvio's fuzz targets. Each target in `fuzz_targets/` is a
//! one-line call into a module here, so the checks can be read (and reused)
//! apart from libFuzzer:
//!
//! - [`frames`]: the push parser against a whole-stream model of the framing,
//!   under arbitrary splits and payload buffers.
//! - [`connection`]: byte streams through connection + handler + store, against
//!   responses predicted by prost and a model store, with arbitrary reads and drains.
//! - [`resp`], [`memcache`]: the RESP2 and memcached push parsers against
//!   whole-stream models, under arbitrary splits and payload buffers.
//! - [`differential`]: one operation sequence over kvio frames, RESP and
//!   memcached, which must agree on every answer and leave the same stores.
//! - [`store`]: put/get sequences against a `BTreeMap` with the same limits.
//! - [`roundtrip`]: any `KeyValueMessage` framed and parsed back.
//! - [`journal`]: the journal's record decoder on any bytes, and recovery
//!   on logs cut or damaged anywhere, against the records wholly before.
//! - [`decode`]: any payload through the borrowed `MessageView` and prost's
//!   decoders, which must agree.
//! - `server` (its invariants are `kvio::sansio::model`'s): interleavings of
//!   accepts, partial and pipelined requests, slow and non-reading peers,
//!   closes, time jumps and the stop through the sans-IO server.
//!
//! Inputs are decoded with [`input::Cursor`], a byte reader that yields zeros
//! once the data runs out, so every input is valid and seeds are easy to write
//! by hand (see `seeds.py`).

pub mod connection;
pub mod decode;
pub mod differential;
pub mod frames;
pub mod input;
pub mod journal;
pub mod memcache;
pub mod model;
pub mod resp;
pub mod roundtrip;
pub mod store;
