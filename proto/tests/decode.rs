//! The borrowed [`MessageView`] decodes exactly as prost does: as
//! `merge_request` (prost's own field decoders, with the README's rule for
//! mistyped known fields) on every input, and as prost's derived
//! `KeyValueMessage::decode` wherever that one accepts the payload.
use kvio_proto::{KeyValueMessage, MessageView, merge_request};
use proptest::prelude::*;
use prost::Message;

/// prost's answer: the owned message, or `None` if the payload is malformed.
fn prost_decode(payload: &[u8]) -> Option<KeyValueMessage> {
    let mut msg = KeyValueMessage::default();
    merge_request(&mut msg, payload).ok().map(|()| msg)
}

fn owned(view: MessageView<'_>) -> KeyValueMessage {
    KeyValueMessage { key: view.key.into(), value: view.value.into(), kind: view.kind, status: view.status }
}

/// Fails unless the view and prost agree on `payload`.
fn agree(payload: &[u8]) -> Result<(), TestCaseError> {
    let view = MessageView::decode(payload);
    let reference = prost_decode(payload);
    prop_assert_eq!(view.ok().map(owned), reference.clone(), "payload {:02x?}, view {:?}", payload, view);
    // Where prost's derived decoder accepts, it finds the same fields.
    if let Ok(derived) = KeyValueMessage::decode(payload) {
        prop_assert_eq!(Some(derived), reference, "derived decoder on {:02x?}", payload);
    }
    Ok(())
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field on the wire, well formed or not: a key of any tag and wire
/// type (6 and 7 included), then a body shaped for some wire type.
fn field() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![4 => 1u64..=5, 1 => 0u64..=1 << 30, 1 => Just(0)];
    let body = prop_oneof![
        any::<u64>().prop_map(|v| {
            let mut b = Vec::new();
            varint(v, &mut b);
            b
        }),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|s| {
            let mut b = Vec::new();
            varint(s.len() as u64, &mut b);
            b.extend(s);
            b
        }),
        ".{0,6}".prop_map(|s: String| {
            let mut b = Vec::new();
            varint(s.len() as u64, &mut b);
            b.extend(s.as_bytes());
            b
        }),
        prop::collection::vec(any::<u8>(), 0..9),
    ];
    (tag, 0u64..8, body).prop_map(|(tag, wire, body)| {
        let mut b = Vec::new();
        varint(tag << 3 | wire, &mut b);
        b.extend(body);
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn valid_messages_decode_to_their_fields(key in ".{0,20}", value in ".{0,200}", kind in any::<u32>(), status in any::<i32>()) {
        let msg = KeyValueMessage { key, value, kind, status };
        let payload = msg.encode_to_vec();
        prop_assert_eq!(MessageView::decode(&payload).map(owned), Ok(msg));
        agree(&payload)?;
    }

    #[test]
    fn random_bytes(payload in prop::collection::vec(any::<u8>(), 0..48)) {
        agree(&payload)?;
    }

    #[test]
    fn random_fields(fields in prop::collection::vec(field(), 0..8), cut in any::<prop::sample::Index>()) {
        let payload = fields.concat();
        agree(&payload)?;
        // ... and cut anywhere (truncated fields).
        agree(&payload[..cut.index(payload.len() + 1)])?;
    }

    #[test]
    fn groups(tags in prop::collection::vec((1u64..=6, prop::bool::ANY), 0..12)) {
        // Start and end groups in any order, around a varint field.
        let mut payload = Vec::new();
        for (tag, start) in tags {
            varint(tag << 3 | if start { 3 } else { 4 }, &mut payload);
            payload.extend([0x08, 0x01]);
        }
        agree(&payload)?;
    }
}

/// The README's decoding table, row by row.
#[test]
fn every_case_of_the_readme_decoding_table() {
    let cases: &[(&str, &[u8])] = &[
        ("empty payload: every field its default", b""),
        ("a Get", b"\x0a\x01k\x18\x01"),
        ("a put", b"\x0a\x01k\x12\x01v\x18\x03"),
        ("status in a request", b"\x0a\x01k\x18\x01\x20\x01"),
        ("unknown status number", b"\x18\x01\x20\x07"),
        ("unknown varint field", b"\x28\x05\x18\x01"),
        ("unknown bytes field", b"\x0a\x01k\x32\x02xy\x18\x01"),
        ("unknown fixed64 and fixed32 fields", b"\x31\x01\x02\x03\x04\x05\x06\x07\x08\x3d\x01\x02\x03\x04\x18\x01"),
        ("unknown group", b"\x43\x08\x01\x12\x01v\x44\x18\x01"),
        ("kind as fixed32", b"\x0a\x01k\x1d\x01\x00\x00\x00\x18\x01"),
        ("kind packed", b"\x0a\x01k\x1a\x01\x01"),
        ("status length-delimited", b"\x0a\x01k\x18\x01\x22\x01\x01"),
        ("value as fixed64", b"\x0a\x01k\x11\x01\x02\x03\x04\x05\x06\x07\x08\x18\x01"),
        ("key as a varint", b"\x08\x01\x18\x01"),
        ("key as a group", b"\x0b\x18\x05\x0c\x18\x01"),
        ("duplicate kind: the last wins", b"\x18\x01\x18\x03"),
        ("duplicate key: the last wins", b"\x0a\x01a\x0a\x01b\x18\x01"),
        ("key not UTF-8", b"\x0a\x01\xff\x18\x01"),
        ("value not UTF-8", b"\x0a\x01k\x12\x02\xc3\x28\x18\x03"),
        ("a bad string replaced by a later good one is still malformed", b"\x0a\x01\xff\x0a\x01k\x18\x01"),
        ("truncated string", b"\x0a\x05abc"),
        ("truncated varint", b"\x18\x80"),
        ("11-byte varint", b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
        ("tag 0", b"\x00\x01"),
        ("wire type 6", b"\x0e\x01"),
        ("end group without start", b"\x0c"),
        ("group closed by another tag", b"\x0b\x14"),
    ];
    for (what, payload) in cases {
        agree(payload).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let ok = |payload: &[u8]| MessageView::decode(payload).is_ok();
    assert!(ok(b"") && ok(b"\x0a\x01k\x1d\x01\x00\x00\x00\x18\x01") && !ok(b"\x0a\x01\xff\x18\x01"));
}

/// The golden frames' payloads decode to their fields.
#[test]
fn golden_payloads() {
    let json: serde_json::Value = serde_json::from_str(include_str!("frames.json")).unwrap();
    for v in json.as_array().unwrap() {
        let frame: Vec<u8> = {
            let hex = v["frame_hex"].as_str().unwrap();
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
        };
        let payload = &frame[4..frame.len() - 5];
        let got = MessageView::decode(payload).unwrap();
        assert_eq!(got.key, v["key"].as_str().unwrap());
        assert_eq!(got.value, v["value"].as_str().unwrap());
        assert_eq!(u64::from(got.kind), v["kind"].as_u64().unwrap());
        assert_eq!(i64::from(got.status), v["status"].as_i64().unwrap());
        agree(payload).unwrap();
    }
}
