//! The key/value request handler: docs/protocol.md's table of requests and responses.

use kvio_core::frame::{FrameError, write_frame};
use kvio_core::store::PutOptions;
use kvio_core::{Handler, KeyValueStore, Next, Output, OutputFull};

use crate::wire::{self, WireType};
use crate::{Kind, MessageView, Status};

/// The `value` of the error response to a payload that is not a valid `KeyValueMessage`.
pub const MALFORMED_REASON: &str = "payload is not a valid KeyValueMessage";
/// The `value` of the error response to a `Get` of a value that is not
/// UTF-8 (stored over RESP or memcached, which are binary-safe): a proto3
/// `string` cannot carry it, so the get is refused, and the key stays.
pub const NOT_UTF8_REASON: &str = "value is not valid UTF-8; read it over RESP or memcached";
/// The `value` of the error response to a connection its host evicted:
/// all connections together held more than the host's client-memory cap,
/// and this one held the most.
pub const MEMORY_LIMIT_REASON: &str = "client memory limit reached";

/// Answers kvio requests against a store `S` (owned, `&mut`, or a
/// `&Shared` store). See the [crate docs](crate).
#[derive(Debug)]
pub struct KeyValueHandler<S> {
    store: S,
}

impl<S: KeyValueStore> KeyValueHandler<S> {
    /// A handler over `store`.
    pub const fn new(store: S) -> Self {
        KeyValueHandler { store }
    }

    /// The store.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }
}

impl<S: KeyValueStore> Handler for KeyValueHandler<S> {
    fn request<O: Output + ?Sized>(&mut self, payload: &[u8], now: u64, out: &mut O) -> Result<Next, OutputFull> {
        self.answer(payload, now, out).map(|()| Next::Continue)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
        encode_response(out, b"", error.as_str().as_bytes(), Kind::Error, Status::NotOk)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        encode_response(out, b"", MEMORY_LIMIT_REASON.as_bytes(), Kind::Error, Status::NotOk)
    }
}

impl<S: KeyValueStore> KeyValueHandler<S> {
    /// docs/protocol.md's table: one request payload, one response frame.
    fn answer<O: Output + ?Sized>(&mut self, payload: &[u8], now: u64, out: &mut O) -> Result<(), OutputFull> {
        let Ok(req) = MessageView::decode(payload) else {
            return encode_response(out, b"", MALFORMED_REASON.as_bytes(), Kind::Error, Status::NotOk);
        };
        let key = req.key.as_bytes();
        match Kind::from(req.kind) {
            Kind::PutOrUpdate => {
                // A refusal says why in `value` (a static string: nothing is
                // allocated); clients that ignore a put response's `value` are unaffected.
                // The view checked the value is UTF-8 (a proto3 string): the store keeps that.
                let opts = PutOptions { text: true, ..PutOptions::default() };
                match self.store.put_with(key, req.value.as_bytes(), opts, now, |_| ()).1 {
                    Ok(_) => encode_response(out, b"", b"", Kind::PutOrUpdate, Status::Ok),
                    Err(e) => encode_response(out, b"", e.as_str().as_bytes(), Kind::PutOrUpdate, Status::NotOk),
                }
            }
            Kind::Get => self.store.get_entry(key, now, |entry| {
                // One call site: the encoder is inlined once (callgrind: three
                // call sites cost ~60 instructions a get more).
                let (key, value, kind, status) = match entry {
                    // A value stored over RESP or memcached need not be UTF-8,
                    // which a proto3 string must be: refused, not cut or mangled.
                    Some(entry) if !entry.text && core::str::from_utf8(entry.value).is_err() => {
                        (&b""[..], NOT_UTF8_REASON.as_bytes(), Kind::Error, Status::NotOk)
                    }
                    Some(entry) => (key, entry.value, Kind::GetResponse, Status::Ok),
                    None => (key, &b""[..], Kind::GetResponse, Status::NotOk),
                };
                encode_response(out, key, value, kind, status)
            }),
            Kind::Delete => {
                let status = if self.store.delete_at(key, now) { Status::Ok } else { Status::NotOk };
                encode_response(out, b"", b"", Kind::Delete, status)
            }
            other => encode_response(out, b"", b"", other, Status::NotOk),
        }
    }
}

/// Decodes `payload` into `msg` with prost's own field decoders, the way
/// the official protobuf runtimes do: a known field that arrives with
/// another wire type than its own is kept as an unknown field (skipped)
/// instead of failing the message, as prost's derived `merge` would.
/// Invalid UTF-8, truncated fields and bad varints still fail.
///
/// The handler decodes with [`MessageView`], which needs no allocator;
/// this is the reference the tests hold the view to.
#[cfg(feature = "alloc")]
pub fn merge_request(msg: &mut crate::KeyValueMessage, mut payload: &[u8]) -> Result<(), prost::DecodeError> {
    use prost::bytes::Buf;
    use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};

    let ctx = DecodeContext::default();
    while payload.has_remaining() {
        let (tag, wire_type) = decode_key(&mut payload)?;
        let buf = &mut payload;
        match (tag, wire_type) {
            (1, WireType::LengthDelimited) => {
                prost::encoding::string::merge(wire_type, &mut msg.key, buf, ctx.clone())?
            }
            (2, WireType::LengthDelimited) => {
                prost::encoding::string::merge(wire_type, &mut msg.value, buf, ctx.clone())?
            }
            (3, WireType::Varint) => prost::encoding::uint32::merge(wire_type, &mut msg.kind, buf, ctx.clone())?,
            (4, WireType::Varint) => prost::encoding::int32::merge(wire_type, &mut msg.status, buf, ctx.clone())?,
            _ => skip_field(wire_type, tag, buf, ctx.clone())?,
        }
    }
    Ok(())
}

/// Length of the protobuf encoding of `{key, value, kind, status}`
/// (proto3: default values take no bytes).
#[inline]
pub fn response_payload_len(key: &[u8], value: &[u8], kind: Kind, status: Status) -> usize {
    payload_len(key.len(), value.len(), kind, status)
}

/// [`response_payload_len`] from the lengths alone.
#[inline]
fn payload_len(key_len: usize, value_len: usize, kind: Kind, status: Status) -> usize {
    let bytes_field =
        |len: usize| if len == 0 { 0 } else { wire::key_len(1) + wire::encoded_len_varint(len as u64) + len };
    let kind = u32::from(kind);
    let status = status as i32;
    bytes_field(key_len)
        + bytes_field(value_len)
        + if kind == 0 { 0 } else { wire::key_len(3) + wire::encoded_len_varint(kind as u64) }
        + if status == 0 { 0 } else { wire::key_len(4) + wire::encoded_len_varint(status as u64) }
}

/// Appends the frame of the response `{key, value, kind, status}` to
/// `out`, encoded in place (byte-identical to prost's and the official
/// runtime's encoding). Requests have their own twin, [`encode_request`].
///
/// ```
/// use kvio_proto::{Kind, Status, encode_response};
///
/// let mut frame = Vec::new();
/// encode_response(&mut frame, b"k", b"v", Kind::GetResponse, Status::Ok).unwrap();
/// // len (payload + footer), key, value, kind 2, the footer
/// assert_eq!(frame, b"\x0d\0\0\0\x0a\x01k\x12\x01v\x18\x02@EOF@");
/// ```
pub fn encode_response<O: Output + ?Sized>(
    out: &mut O,
    key: &[u8],
    value: &[u8],
    kind: Kind,
    status: Status,
) -> Result<(), OutputFull> {
    encode_message(out, key, value, kind, status)
}

/// Length of the protobuf encoding of the request `{key, value, kind}`.
#[inline]
pub fn request_payload_len(key: &[u8], value: &[u8], kind: Kind) -> usize {
    payload_len(key.len(), value.len(), kind, Status::Ok)
}

/// Appends the frame of the request `{key, value, kind}` to `out`, encoded
/// in place with no allocation (byte-identical to prost's and the official
/// runtime's encoding of the same message). A request carries no `status`:
/// servers ignore it, so none is written. The key and value must be UTF-8
/// for a server to accept the request (proto3 `string`); they are bytes
/// here so that a firmware or a test can send exactly what it holds.
///
/// A `Get` has no value (pass `b""`); a `PutOrUpdate` has both.
///
/// ```
/// use kvio_proto::{Kind, encode_request};
///
/// let mut frame = Vec::new();
/// encode_request(&mut frame, b"k", b"", Kind::Get).unwrap();
/// // len (payload + footer), key "k", kind 1, the footer: the golden `get_request` frame's layout
/// assert_eq!(frame, b"\x0a\0\0\0\x0a\x01k\x18\x01@EOF@");
///
/// // Into a fixed buffer, as a firmware would: a `heapless::Vec` refuses
/// // what does not fit (`OutputFull`) instead of growing.
/// let mut buf = heapless::Vec::<u8, 32>::new();
/// encode_request(&mut buf, b"greeting", b"hi", Kind::PutOrUpdate).unwrap();
/// assert_eq!(&buf[4..], b"\x0a\x08greeting\x12\x02hi\x18\x03@EOF@");
/// ```
pub fn encode_request<O: Output + ?Sized>(out: &mut O, key: &[u8], value: &[u8], kind: Kind) -> Result<(), OutputFull> {
    encode_message(out, key, value, kind, Status::Ok)
}

/// The one encoder behind [`encode_request`] and [`encode_response`]: the
/// format is the same message both ways, only the fields used differ.
#[inline]
fn encode_message<O: Output + ?Sized>(
    out: &mut O,
    key: &[u8],
    value: &[u8],
    kind: Kind,
    status: Status,
) -> Result<(), OutputFull> {
    let len = response_payload_len(key, value, kind, status);
    write_frame(out, len, |mut dst: &mut [u8]| {
        let dst = &mut dst;
        for (tag, bytes) in [(1, key), (2, value)] {
            if !bytes.is_empty() {
                wire::encode_key(tag, WireType::LengthDelimited, dst);
                wire::encode_varint(bytes.len() as u64, dst);
                wire::put_slice(bytes, dst);
            }
        }
        let kind = u32::from(kind);
        if kind != 0 {
            wire::encode_key(3, WireType::Varint, dst);
            wire::encode_varint(kind as u64, dst);
        }
        if status != Status::Ok {
            wire::encode_key(4, WireType::Varint, dst);
            wire::encode_varint(status as i32 as u64, dst);
        }
        debug_assert!(dst.is_empty(), "response_payload_len matches the encoding");
    })
}

#[cfg(all(test, feature = "alloc"))]
mod test {
    use super::*;
    use crate::KeyValueMessage;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use kvio_core::store::ArrayStore;
    use prost::Message as _;

    fn frame_of(msg: &KeyValueMessage) -> Vec<u8> {
        let mut out = Vec::new();
        kvio_core::frame::encode_frame(&msg.encode_to_vec(), &mut out).unwrap();
        out
    }

    fn msg(key: &str, value: &str, kind: u32, status: Status) -> KeyValueMessage {
        KeyValueMessage { key: key.to_string(), value: value.to_string(), kind, status: status as i32 }
    }

    fn answer<S: KeyValueStore>(h: &mut KeyValueHandler<S>, req: &KeyValueMessage) -> Vec<u8> {
        let mut out = Vec::new();
        h.request(&req.encode_to_vec(), 0, &mut out).unwrap();
        out
    }

    #[test]
    fn protocol_table() {
        let mut h = KeyValueHandler::new(ArrayStore::<16, 256, 128>::new());
        let get = msg("k", "", 1, Status::Ok);
        assert_eq!(answer(&mut h, &get), frame_of(&msg("k", "", 2, Status::NotOk)), "miss");
        assert_eq!(answer(&mut h, &msg("k", "v", 3, Status::Ok)), frame_of(&msg("", "", 3, Status::Ok)), "put");
        assert_eq!(answer(&mut h, &get), frame_of(&msg("k", "v", 2, Status::Ok)), "hit");
        let delete = msg("k", "", 4, Status::Ok);
        assert_eq!(answer(&mut h, &delete), frame_of(&msg("", "", 4, Status::Ok)), "deleted");
        assert_eq!(answer(&mut h, &get), frame_of(&msg("k", "", 2, Status::NotOk)), "gone");
        assert_eq!(answer(&mut h, &delete), frame_of(&msg("", "", 4, Status::NotOk)), "already absent");
        h.store().put(b"k", b"v").unwrap();
        for kind in [0, 2, 5, 7, u32::MAX] {
            let r = answer(&mut h, &msg("k", "x", kind, Status::Ok));
            assert_eq!(r, frame_of(&msg("", "", kind, Status::NotOk)), "kind {kind}");
        }
        // over the value limit (128-byte frames leave 51 bytes): refused with the reason, old value kept
        let big = "x".repeat(100);
        let refused = frame_of(&msg("", "value too long", 3, Status::NotOk));
        assert_eq!(answer(&mut h, &msg("k", &big, 3, Status::Ok)), refused);
        assert_eq!(answer(&mut h, &get), frame_of(&msg("k", "v", 2, Status::Ok)));
    }

    #[test]
    fn a_value_stored_as_bytes_is_served_if_it_is_utf8_and_refused_if_not() {
        let mut h = KeyValueHandler::new(ArrayStore::<16, 256, 128>::new());
        // Stored over another protocol: the store does not know it is text.
        h.store().put(b"utf8", "sm\u{f8}rrebr\u{f8}d".as_bytes()).unwrap();
        h.store().put(b"bytes", b"\xff\x00\xfe").unwrap();
        let get = |key: &str| msg(key, "", 1, Status::Ok);
        assert_eq!(answer(&mut h, &get("utf8")), frame_of(&msg("utf8", "sm\u{f8}rrebr\u{f8}d", 2, Status::Ok)));
        let refused = frame_of(&msg("", NOT_UTF8_REASON, 0, Status::NotOk));
        assert_eq!(answer(&mut h, &get("bytes")), refused, "an error response, not a miss");
        assert_eq!(h.store().get(b"bytes", |v| v.map(<[u8]>::len)), Some(3), "the key stays");
        // The golden frame docs/protocol.md shows.
        assert_eq!(
            refused,
            b"\x41\0\0\0\x12\x38value is not valid UTF-8; read it over RESP or memcached\x20\x01@EOF@".to_vec()
        );
    }

    #[test]
    fn a_refused_put_carries_the_store_reason_in_value() {
        // 128-byte frames: key limit 51, value limit 52; 4 slots hold 3 entries.
        let mut h = KeyValueHandler::new(ArrayStore::<4, 256, 128>::new());
        let refusal = |reason: &str| frame_of(&msg("", reason, 3, Status::NotOk));
        let long_key = "k".repeat(60);
        assert_eq!(answer(&mut h, &msg(&long_key, "v", 3, Status::Ok)), refusal("key too long"));
        assert_eq!(answer(&mut h, &msg("k", &"v".repeat(60), 3, Status::Ok)), refusal("value too long"));
        let ok = frame_of(&msg("", "", 3, Status::Ok));
        let mut stored = 0;
        let full = loop {
            let r = answer(&mut h, &msg(&alloc::format!("k{stored}"), "v", 3, Status::Ok));
            if r != ok {
                break r;
            }
            stored += 1;
            assert!(stored < 16, "the store never filled up");
        };
        assert_eq!(full, refusal("store full"));
        // The strings are the store's own, so the documentation and the wire agree.
        for (e, s) in [
            (kvio_core::StoreError::KeyTooLong, "key too long"),
            (kvio_core::StoreError::ValueTooLong, "value too long"),
            (kvio_core::StoreError::Full, "store full"),
        ] {
            assert_eq!(e.as_str(), s);
        }
        // An old client decoding with prost sees status NotOk; the reason is an extra field it may ignore.
        let decoded = KeyValueMessage::decode(&full[4..full.len() - 5]).unwrap();
        assert_eq!((decoded.kind, decoded.status, decoded.key.as_str()), (3, Status::NotOk as i32, ""));
    }

    #[test]
    fn malformed_payload_gets_an_error_response() {
        let mut h = KeyValueHandler::new(ArrayStore::<16, 256, 128>::new());
        for bad in [&[0xff][..], &[0x0a, 0x05, b'a'], &[0x0a, 0x01, 0xff]] {
            let mut out = Vec::new();
            h.request(bad, 0, &mut out).unwrap();
            assert_eq!(out, frame_of(&msg("", MALFORMED_REASON, 0, Status::NotOk)), "{bad:?}");
        }
    }

    #[test]
    fn known_fields_with_another_wire_type_are_skipped_like_unknown_fields() {
        // As the official runtime (upb) decodes them; prost's derived merge refuses these.
        let cases: [(&[u8], KeyValueMessage); 5] = [
            (&[0x0a, 0x01, b'k', 0x1d, 1, 0, 0, 0, 0x18, 0x01], msg("k", "", 1, Status::Ok)), // kind as fixed32, then kind=1
            (&[0x0a, 0x01, b'k', 0x18, 0x01, 0x22, 0x01, 0x01], msg("k", "", 1, Status::Ok)), // status length-delimited
            (&[0x0a, 0x01, b'k', 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x18, 0x01], msg("k", "", 1, Status::Ok)), // value fixed64
            (&[0x08, 0x01, 0x18, 0x01], msg("", "", 1, Status::Ok)), // key as a varint
            (&[0x0a, 0x01, b'k', 0x1a, 0x01, 0x01], msg("k", "", 0, Status::Ok)), // kind packed
        ];
        for (payload, expected) in cases.clone() {
            let mut got = KeyValueMessage::default();
            merge_request(&mut got, payload).unwrap();
            assert_eq!(got, expected, "{payload:02x?}");
        }
        // A Get sent with a stray fixed32 kind is still answered as a Get.
        let mut h = KeyValueHandler::new(ArrayStore::<16, 256, 128>::new());
        h.store().put(b"k", b"v").unwrap();
        let mut out = Vec::new();
        h.request(cases[0].0, 0, &mut out).unwrap();
        assert_eq!(out, frame_of(&msg("k", "v", 2, Status::Ok)));
    }

    #[test]
    fn same_fields_as_prost_for_well_typed_payloads() {
        let m = KeyValueMessage { key: "ключ".into(), value: "v".repeat(300), kind: u32::MAX, status: 7 };
        let mut got = KeyValueMessage::default();
        merge_request(&mut got, &m.encode_to_vec()).unwrap();
        assert_eq!(got, m);
        // duplicates: last one wins, as in prost and the official runtimes
        let mut got = KeyValueMessage::default();
        merge_request(&mut got, &[0x18, 0x01, 0x18, 0x03]).unwrap();
        assert_eq!(got.kind, 3);
    }

    #[test]
    fn response_overhead_is_the_most_any_response_adds_to_its_key_and_value() {
        // The core sizes its key and value limits with this constant; only
        // this crate knows the encoding. Lengths up to what a u32 frame carries.
        use kvio_core::store::{Limits, RESPONSE_OVERHEAD};
        let lengths = [0, 1, 127, 128, 16_383, 16_384, 1 << 21, 1 << 28, u32::MAX as usize / 2];
        let kinds = [0, 1, 2, 3, 127, 128, u32::MAX].map(Kind::from);
        let mut worst = 0;
        for key in lengths {
            for value in lengths {
                for kind in kinds {
                    for status in [Status::Ok, Status::NotOk] {
                        worst = worst.max(payload_len(key, value, kind, status) - key - value);
                    }
                }
            }
        }
        assert_eq!(worst, RESPONSE_OVERHEAD, "RESPONSE_OVERHEAD in kvio-core's store.rs must be this");
        // So the largest entry the store accepts fits its Get response in a frame.
        for max in [64, 65, 100, 1000, 1 << 14, 1 << 20, u32::MAX] {
            let limits = Limits::for_frame(max, 1, 1);
            let hit = payload_len(limits.max_key_len, limits.max_value_len, Kind::GetResponse, Status::Ok);
            assert!(hit + kvio_core::frame::FOOTER_LEN <= max as usize, "max frame {max}");
        }
    }

    #[test]
    fn encoded_requests_are_answered() {
        let mut h = KeyValueHandler::new(ArrayStore::<16, 256, 128>::new());
        let mut answer_to = |key: &[u8], value: &[u8], kind| {
            let mut frame = Vec::new();
            encode_request(&mut frame, key, value, kind).unwrap();
            let mut out = Vec::new();
            h.request(&frame[4..frame.len() - 5], 0, &mut out).unwrap();
            out
        };
        assert_eq!(answer_to(b"k", b"v", Kind::PutOrUpdate), frame_of(&msg("", "", 3, Status::Ok)));
        assert_eq!(answer_to(b"k", b"", Kind::Get), frame_of(&msg("k", "v", 2, Status::Ok)));
    }

    #[test]
    fn a_request_that_does_not_fit_is_refused_and_leaves_the_output_as_it_was() {
        let mut out: heapless::Vec<u8, 16> = heapless::Vec::new();
        encode_request(&mut out, b"k", b"", Kind::Get).unwrap();
        let before = out.clone();
        assert_eq!(encode_request(&mut out, b"key", b"a value too long", Kind::PutOrUpdate), Err(OutputFull));
        assert_eq!(out, before);
    }

    #[test]
    fn framing_error_frame_names_the_reason() {
        let mut h = KeyValueHandler::new(ArrayStore::<16, 256, 128>::new());
        let mut out = Vec::new();
        h.parse_error(FrameError::BadFooter, &mut out).unwrap();
        assert_eq!(out, frame_of(&msg("", "frame footer is not @EOF@", 0, Status::NotOk)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn in_place_encoding_matches_prost(key in ".{0,20}", value in ".{0,300}", kind in any::<u32>(), not_ok in any::<bool>()) {
                let status = if not_ok { Status::NotOk } else { Status::Ok };
                let mut out = Vec::new();
                encode_response(&mut out, key.as_bytes(), value.as_bytes(), Kind::from(kind), status).unwrap();
                prop_assert_eq!(out, frame_of(&msg(&key, &value, kind, status)));
            }

            #[test]
            fn in_place_request_encoding_matches_prost(key in ".{0,20}", value in ".{0,300}", kind in any::<u32>()) {
                let mut out = Vec::new();
                encode_request(&mut out, key.as_bytes(), value.as_bytes(), Kind::from(kind)).unwrap();
                prop_assert_eq!(&out, &frame_of(&msg(&key, &value, kind, Status::Ok)));
                prop_assert_eq!(out.len(), 4 + request_payload_len(key.as_bytes(), value.as_bytes(), Kind::from(kind)) + 5);
            }
        }
    }
}
