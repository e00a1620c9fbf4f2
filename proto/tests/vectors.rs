//! The golden frames (`frames.json` beside this file, made with the official
//! protobuf runtime; docs/protocol.md says how): every one encodes to exactly
//! its bytes, both with prost and with the in-place encoders (requests with
//! `encode_request`, responses with `encode_response`), and
//! decodes back. The refused-put frames that docs/protocol.md lists are the
//! handler's bytes too.
use kvio_core::frame::{FrameParser, Parse, encode_frame};
use kvio_proto::{KeyValueMessage, Kind, Status, encode_request, encode_response};
use prost::Message;

struct Vector {
    name: String,
    msg: KeyValueMessage,
    frame: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn vectors() -> Vec<Vector> {
    let json: serde_json::Value = serde_json::from_str(include_str!("frames.json")).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            msg: KeyValueMessage {
                key: v["key"].as_str().unwrap().to_owned(),
                value: v["value"].as_str().unwrap().to_owned(),
                kind: v["kind"].as_u64().unwrap() as u32,
                status: v["status"].as_i64().unwrap() as i32,
            },
            frame: hex(v["frame_hex"].as_str().unwrap()),
        })
        .collect()
}

/// docs/protocol.md, where the refused-put frames are written out.
const PROTOCOL_DOC: &str = include_str!("../../docs/protocol.md");

#[test]
fn the_documented_refusal_frames_are_the_encoders() {
    for reason in ["key too long", "value too long", "store full"] {
        let mut frame = Vec::new();
        encode_response(&mut frame, b"", reason.as_bytes(), Kind::PutOrUpdate, Status::NotOk).unwrap();
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        let row = PROTOCOL_DOC
            .lines()
            .find(|l| l.starts_with(&format!("| `{reason}` |")))
            .unwrap_or_else(|| panic!("docs/protocol.md has no row for {reason:?}"));
        let documented: String = row.split('`').nth(3).unwrap().split_whitespace().collect();
        assert_eq!(documented, hex, "{reason}");
        assert!(PROTOCOL_DOC.contains(&format!("`{reason}`")));
    }
}

#[test]
fn there_are_twenty_two_vectors() {
    assert_eq!(vectors().len(), 22);
}

#[test]
fn prost_encoding_matches_every_vector() {
    for v in vectors() {
        let mut frame = Vec::new();
        encode_frame(&v.msg.encode_to_vec(), &mut frame).unwrap();
        assert_eq!(frame, v.frame, "{}", v.name);
    }
}

#[test]
fn in_place_encoding_matches_every_vector() {
    // Requests with the request encoder, everything else with the response encoder.
    let mut requests = 0;
    for v in vectors() {
        let status = Status::try_from(v.msg.status).unwrap();
        let (key, value, kind) = (v.msg.key.as_bytes(), v.msg.value.as_bytes(), Kind::from(v.msg.kind));
        let mut frame = Vec::new();
        if v.name.contains("_request") {
            assert_eq!(status, Status::Ok, "{}: a request has no status", v.name);
            encode_request(&mut frame, key, value, kind).unwrap();
            requests += 1;
        } else {
            encode_response(&mut frame, key, value, kind, status).unwrap();
        }
        assert_eq!(frame, v.frame, "{}", v.name);
    }
    assert_eq!(requests, 10, "the golden request frames (delete_request and auth_request among them)");
}

#[test]
fn every_vector_parses_and_decodes_to_its_fields() {
    for v in vectors() {
        let mut parser = FrameParser::new(kvio_core::DEFAULT_MAX_FRAME_LEN);
        let mut buf = Vec::new(); // whole frames are borrowed, never copied here
        let (used, status) = parser.push(&v.frame, &mut buf).unwrap();
        assert_eq!(used, v.frame.len(), "{}", v.name);
        let Parse::Complete(payload) = status else { panic!("{}: partial", v.name) };
        assert_eq!(KeyValueMessage::decode(payload).unwrap(), v.msg, "{}", v.name);
    }
}
