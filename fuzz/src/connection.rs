//! The `connection` target: a byte stream through `Connection`, the
//! key/value handler and a small store, read in arbitrary chunks by a client
//! that drains responses in arbitrary amounts (or not at all, until the
//! connection pushes back), into a growable or a fixed-size output.
//!
//! Checked: the bytes written are exactly one response per complete request
//! before any framing error, in order, as [`model::response`] predicts them
//! (prost encoding, `BTreeMap` store), then the error frame; each written
//! frame parses and decodes as a `KeyValueMessage`; `consumed` and
//! `Outcome` obey their contract; output and payload buffer stay bounded; a
//! fixed output reports `OutputFull` only when the next response does not
//! fit, and holds no half-written frame.

use kvio_core::StoreError;
use kvio_core::frame::{FrameError, FrameParser, MIN_FRAME_LEN, Parse, encoded_len};
use kvio_core::store::{Limits, Slot, Store};
use kvio_core::{Connection, Outcome, Output};
use kvio_proto::{KeyValueHandler, KeyValueMessage, Kind, MALFORMED_REASON, Status, response_payload_len};
use prost::Message;

use crate::frames;
use crate::input::{Chunks, Cursor};
use crate::model::{self, ModelStore};

/// Capacity of the fixed-size output (what a microcontroller might give).
pub const FIXED_OUTPUT: usize = 256;

/// An output the client drains from the front.
pub trait Sink: Output {
    /// Moves the first `n` bytes to `wire`.
    fn write_front(&mut self, n: usize, wire: &mut Vec<u8>);
    fn bytes(&self) -> &[u8];
    /// Total room, `None` when it grows.
    fn capacity(&self) -> Option<usize>;
}

impl Sink for Vec<u8> {
    fn write_front(&mut self, n: usize, wire: &mut Vec<u8>) {
        wire.extend(self.drain(..n));
    }

    fn bytes(&self) -> &[u8] {
        self
    }

    fn capacity(&self) -> Option<usize> {
        None
    }
}

impl<const N: usize> Sink for heapless::Vec<u8, N> {
    fn write_front(&mut self, n: usize, wire: &mut Vec<u8>) {
        wire.extend_from_slice(&self[..n]);
        let rest = heapless::Vec::from_slice(&self[n..]).expect("a suffix fits");
        *self = rest;
    }

    fn bytes(&self) -> &[u8] {
        self
    }

    fn capacity(&self) -> Option<usize> {
        Some(N)
    }
}

/// The connection's parameters, as decoded from the input.
#[derive(Debug, Clone)]
struct Config<'a> {
    max_frame_len: u32,
    output_limit: usize,
    slots: usize,
    arena: usize,
    budget: usize,
    entries: usize,
    reads: Chunks,
    drains: Vec<u8>,
    stream: &'a [u8],
}

/// The target: `[max_frame_len: u16][output_limit: u16][slots: u8][arena: u16][budget: u16]
/// [entries: u8][output: u8][n: u8][n+1 read sizes][m: u8][m+1 drain sizes][stream...]`.
///
/// `output` even: a growable `Vec`; odd: a `heapless::Vec` of [`FIXED_OUTPUT`] bytes.
/// Drain sizes: `0` leaves the output alone, `255` writes it all, any other
/// `d` writes `4 * d` bytes; under back-pressure at least one byte goes.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_frame_len = u32::from(c.u16());
    let output_limit = usize::from(c.u16());
    let slots = usize::from(c.u8());
    let arena = usize::from(c.u16() % 8192);
    let budget = usize::from(c.u16());
    let entries = usize::from(c.u8());
    let fixed = c.u8() % 2 == 1;
    let n = usize::from(c.u8() % 16) + 1;
    let reads = Chunks::new(c.bytes(n));
    let m = usize::from(c.u8() % 16) + 1;
    let drains = match c.bytes(m) {
        [] => vec![255],
        d => d.to_vec(),
    };
    let config = Config { max_frame_len, output_limit, slots, arena, budget, entries, reads, drains, stream: c.rest() };
    if fixed {
        run(config, heapless::Vec::<u8, FIXED_OUTPUT>::new());
    } else {
        run(config, Vec::new());
    }
}

fn run<O: Sink>(config: Config<'_>, mut out: O) {
    let Config { max_frame_len, output_limit, stream, mut reads, drains, .. } = config;
    let limits = Limits::for_frame(max_frame_len, config.entries, config.budget);
    let store = Store::with_storage(
        vec![Slot::EMPTY; config.slots].into_boxed_slice(),
        vec![0u8; config.arena].into_boxed_slice(),
        limits,
    );
    let mut model_store = ModelStore::new(store.limits());
    let mut handler = KeyValueHandler::new(store);
    let mut conn = Connection::new(max_frame_len, output_limit);
    let max_payload = (conn.parser().max_frame_len() - MIN_FRAME_LEN) as usize;
    // `Connection::new` raises a limit of 0 to 1.
    let output_limit = output_limit.max(1);

    // The longest response the handler can write: a `Get` miss echoes the key
    // and adds a status (2 bytes more than the shortest such request); the
    // error responses and refused puts have fixed reasons, which can outgrow a tiny frame limit.
    let largest_fixed = [FrameError::TooShort, FrameError::TooLong, FrameError::BadFooter]
        .iter()
        .map(|e| e.as_str())
        .chain([MALFORMED_REASON])
        .map(|reason| response_payload_len(b"", reason.as_bytes(), Kind::Error, Status::NotOk))
        .chain(
            [StoreError::KeyTooLong, StoreError::ValueTooLong, StoreError::Full]
                .iter()
                .map(|e| response_payload_len(b"", e.as_str().as_bytes(), Kind::PutOrUpdate, Status::NotOk)),
        )
        .max()
        .unwrap_or(0);
    let largest_response = encoded_len((max_payload + 2).max(largest_fixed));

    let mut buf = Vec::new();
    let mut wire = Vec::new();
    let mut next_drain = 0;
    let mut drain = |out: &mut O, wire: &mut Vec<u8>, at_least: usize| {
        let d = drains[next_drain % drains.len()];
        next_drain += 1;
        let n = match d {
            255 => out.pending(),
            d => (4 * usize::from(d)).max(at_least).min(out.pending()),
        };
        out.write_front(n, wire);
    };

    let mut requests = 0;
    let mut closed = None;
    let mut full_at = None;
    let mut start = 0;
    'stream: loop {
        let end = reads.next_end(start, stream.len());
        let mut input = &stream[start..end];
        start = end;
        loop {
            let pending_before = out.pending();
            let r = conn.receive(input, 0, &mut buf, &mut handler, &mut out);
            assert!(r.consumed <= input.len());
            assert!(out.pending() >= pending_before, "receive only appends");
            // Appending stops once the output reaches the limit, so it overshoots by one response at most.
            assert!(
                out.pending() < output_limit + largest_response,
                "output {} over the limit {output_limit}",
                out.pending()
            );
            if largest_fixed <= max_payload + 2 {
                assert!(
                    out.pending() <= conn.output_capacity_needed(),
                    "output {} over the documented capacity",
                    out.pending()
                );
            }
            assert!(conn.parser().buffered_payload() <= max_payload);
            assert!(buf.len() <= max_payload, "payload buffer grown past the frame limit");
            requests += r.requests;
            input = &input[r.consumed..];
            match r.outcome {
                Outcome::NeedMore => {
                    assert!(input.is_empty(), "NeedMore takes all input");
                    assert!(out.pending() < output_limit);
                    assert!(conn.wants_read(out.pending()));
                    drain(&mut out, &mut wire, 0);
                    break;
                }
                Outcome::Backpressure => {
                    assert!(out.pending() >= output_limit);
                    assert!(!conn.wants_read(out.pending()));
                    drain(&mut out, &mut wire, 1);
                }
                Outcome::Close(e) => {
                    assert!(input.is_empty(), "nothing is left to push after a framing error");
                    assert!(!conn.wants_read(0));
                    let again = conn.receive(b"\x05\0\0\0@EOF@", 0, &mut buf, &mut handler, &mut out);
                    assert_eq!((again.requests, again.outcome), (0, Outcome::Close(e)), "closed stays closed");
                    closed = Some(e);
                    break 'stream;
                }
                Outcome::Quit => unreachable!("kvio frames have no quit"),
                Outcome::OutputFull => {
                    assert!(out.capacity().is_some(), "a growable output is never full");
                    assert!(!conn.wants_read(0));
                    full_at = Some(out.pending());
                    let again = conn.receive(b"\x05\0\0\0@EOF@", 0, &mut buf, &mut handler, &mut out);
                    assert_eq!((again.consumed, again.requests, again.outcome), (0, 0, Outcome::OutputFull));
                    break 'stream;
                }
            }
        }
        if start == stream.len() {
            break;
        }
    }
    let pending = out.pending();
    out.write_front(pending, &mut wire);

    // What should have been written: every response up to the one that did
    // not fit (whose put still counts), or all of them and the error frame.
    let framing = frames::model(stream, max_frame_len, usize::MAX);
    assert_eq!(conn.requests(), requests as u64);
    let mut expected = Vec::new();
    let mut unsent = None;
    for (i, payload) in framing.payloads.iter().enumerate() {
        let response = model::frame_of(&model::response(&mut model_store, &stream[payload.clone()]));
        if i == requests {
            unsent = Some(response);
            break;
        }
        expected.extend(response);
    }
    match full_at {
        None => {
            assert_eq!(closed, framing.error.map(|(e, _)| e), "framing error");
            assert_eq!(requests, framing.payloads.len(), "one response per complete request");
            if let Some(e) = closed {
                expected.extend(model::frame_of(&model::error_response(e)));
            }
        }
        Some(pending) => {
            let unsent = unsent.unwrap_or_else(|| {
                let (e, _) = framing.error.expect("OutputFull with nothing to answer");
                model::frame_of(&model::error_response(e))
            });
            let capacity = out.capacity().expect("fixed");
            assert!(
                pending + unsent.len() > capacity,
                "OutputFull though {} bytes fit in {pending}/{capacity}",
                unsent.len()
            );
        }
    }
    assert_eq!(wire, expected, "written bytes");
    assert_well_formed(&wire);

    let store = handler.store();
    assert_eq!(store.len(), model_store.map.len());
    for (k, v) in &model_store.map {
        assert_eq!(store.get(k), Some(&v[..]));
    }
}

/// `wire` is a sequence of complete frames, each a `KeyValueMessage`.
fn assert_well_formed(mut wire: &[u8]) {
    let mut parser = FrameParser::new(u32::MAX);
    let mut buf = Vec::new();
    while !wire.is_empty() {
        match parser.push(wire, &mut buf) {
            Ok((used, Parse::Complete(payload))) => {
                KeyValueMessage::decode(payload).expect("response decodes");
                wire = &wire[used..];
            }
            other => panic!("output is not whole frames: {other:?}"),
        }
    }
}
