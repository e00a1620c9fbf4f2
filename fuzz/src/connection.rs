//! The `connection` target: a byte stream through `Connection`, the
//! key/value handler and a small store, read in arbitrary chunks by a client
//! that drains responses in arbitrary amounts (or not at all, until the
//! connection pushes back).
//!
//! Checked: the bytes written are exactly one response per complete request
//! before any framing error, in order, as [`model::response`] predicts them
//! (prost encoding, `BTreeMap` store), then the error frame; each written
//! frame parses and decodes as a `KeyValueMessage`; `consumed` and
//! `Outcome` obey their contract; output and payload buffer stay bounded.

use kvio_core::frame::{FrameError, FrameParser, MIN_FRAME_LEN, Status, encoded_len};
use kvio_core::store::{Limits, Slot, Store};
use kvio_core::{Connection, Outcome};
use kvio_proto::{KeyValueHandler, KeyValueMessage, Kind, MALFORMED_REASON, Status as KvStatus, response_payload_len};
use prost::Message;

use crate::frames;
use crate::input::{Chunks, Cursor};
use crate::model::{self, ModelStore};

/// The target: `[max_frame_len: u16][output_limit: u16][slots: u8][arena: u16][budget: u16]
/// [entries: u8][n: u8][n+1 read sizes][m: u8][m+1 drain sizes][stream...]`.
///
/// Drain sizes: `0` leaves the output alone, `255` writes it all, any other
/// `d` writes `4 * d` bytes; under back-pressure at least one byte goes.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_frame_len = u32::from(c.u16());
    // A limit of 0 would push back before the first request (see the README).
    let output_limit = usize::from(c.u16()).max(1);
    let slots = usize::from(c.u8());
    let arena = usize::from(c.u16() % 8192);
    let budget = usize::from(c.u16());
    let entries = usize::from(c.u8());
    let n = usize::from(c.u8() % 16) + 1;
    let mut reads = Chunks::new(c.bytes(n));
    let m = usize::from(c.u8() % 16) + 1;
    let drains = match c.bytes(m) {
        [] => vec![255],
        d => d.to_vec(),
    };
    let stream = c.rest();

    let limits = Limits::for_frame(max_frame_len, entries, budget);
    let store =
        Store::with_storage(vec![Slot::EMPTY; slots].into_boxed_slice(), vec![0u8; arena].into_boxed_slice(), limits);
    let mut model_store = ModelStore::new(store.limits());
    let mut handler = KeyValueHandler::new(store);
    let mut conn = Connection::new(max_frame_len, output_limit);
    let max_payload = (conn.parser().max_frame_len() - MIN_FRAME_LEN) as usize;

    // The longest response the handler can write: a `Get` miss echoes the key
    // and adds a status (2 bytes more than the shortest such request); the
    // error responses have fixed reasons, which can outgrow a tiny frame limit.
    let largest_fixed = [FrameError::TooShort, FrameError::TooLong, FrameError::BadFooter]
        .iter()
        .map(|e| e.as_str())
        .chain([MALFORMED_REASON])
        .map(|reason| response_payload_len(b"", reason.as_bytes(), Kind::Error, KvStatus::NotOk))
        .max()
        .unwrap_or(0);
    let largest_response = encoded_len((max_payload + 2).max(largest_fixed));

    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut wire = Vec::new();
    let mut next_drain = 0;
    let mut drain = |out: &mut Vec<u8>, wire: &mut Vec<u8>, at_least: usize| {
        let d = drains[next_drain % drains.len()];
        next_drain += 1;
        let n = match d {
            255 => out.len(),
            d => (4 * usize::from(d)).max(at_least).min(out.len()),
        };
        wire.extend(out.drain(..n));
    };

    let mut requests = 0;
    let mut closed = None;
    let mut start = 0;
    'stream: loop {
        let end = reads.next_end(start, stream.len());
        let mut input = &stream[start..end];
        start = end;
        loop {
            let pending_before = out.len();
            let r = conn.receive(input, &mut buf, &mut handler, &mut out);
            assert!(r.consumed <= input.len());
            assert!(out.len() >= pending_before, "receive only appends");
            // Appending stops once the output reaches the limit, so it overshoots by one response at most.
            assert!(
                out.len() <= output_limit - 1 + largest_response,
                "output {} over the limit {output_limit}",
                out.len()
            );
            if largest_fixed <= max_payload + 2 {
                assert!(
                    out.len() <= conn.output_capacity_needed(),
                    "output {} over the documented capacity",
                    out.len()
                );
            }
            assert!(conn.parser().buffered_payload() <= max_payload);
            assert!(buf.len() <= max_payload, "payload buffer grown past the frame limit");
            requests += r.requests;
            input = &input[r.consumed..];
            match r.outcome {
                Outcome::NeedMore => {
                    assert!(input.is_empty(), "NeedMore takes all input");
                    assert!(out.len() < output_limit);
                    assert!(conn.wants_read(out.len()));
                    drain(&mut out, &mut wire, 0);
                    break;
                }
                Outcome::Backpressure => {
                    assert!(out.len() >= output_limit);
                    assert!(!conn.wants_read(out.len()));
                    drain(&mut out, &mut wire, 1);
                }
                Outcome::Close(e) => {
                    assert!(input.is_empty(), "nothing is left to push after a framing error");
                    assert!(!conn.wants_read(0));
                    let again = conn.receive(b"\x05\0\0\0@EOF@", &mut buf, &mut handler, &mut out);
                    assert_eq!((again.requests, again.outcome), (0, Outcome::Close(e)), "closed stays closed");
                    closed = Some(e);
                    break 'stream;
                }
                Outcome::OutputFull => panic!("a Vec output is never full"),
            }
        }
        if start == stream.len() {
            break;
        }
    }
    wire.append(&mut out);

    // What should have been written.
    let framing = frames::model(stream, max_frame_len, usize::MAX);
    assert_eq!(closed, framing.error.map(|(e, _)| e), "framing error");
    assert_eq!(requests, framing.payloads.len(), "one response per complete request");
    assert_eq!(conn.requests(), requests as u64);
    let mut expected = Vec::new();
    for payload in &framing.payloads {
        expected.extend(model::frame_of(&model::response(&mut model_store, &stream[payload.clone()])));
    }
    if let Some(e) = closed {
        expected.extend(model::frame_of(&model::error_response(e)));
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
            Ok((used, Status::Complete(payload))) => {
                KeyValueMessage::decode(payload).expect("response decodes");
                wire = &wire[used..];
            }
            other => panic!("output is not whole frames: {other:?}"),
        }
    }
}
