//! The `roundtrip` target: any `KeyValueMessage`, encoded by prost and
//! framed, parses back (whole or in chunks) to the same message; the
//! in-place encoders (response, and request when there is no status)
//! produce the same bytes; and the frame's `len`
//! is exactly the limit it needs (one less is refused from the header).

use kvio_core::frame::{FrameError, FrameParser, HEADER_LEN, MIN_FRAME_LEN, Parse, encoded_len};
use kvio_proto::{
    KeyValueMessage, Kind, Status, encode_request, encode_response, request_payload_len, response_payload_len,
};
use prost::Message;

use crate::input::{Chunks, Cursor};
use crate::model::frame_of;

/// The target: `[chunk: u8][kind: u32][status: i32][key_len: u16][key][value...]`
/// (key and value made UTF-8 lossily).
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let chunk = c.u8();
    let kind = c.u32();
    let status = c.u32() as i32;
    let key_len = usize::from(c.u16());
    let key = String::from_utf8_lossy(c.bytes(key_len)).into_owned();
    let value = String::from_utf8_lossy(c.rest()).into_owned();
    let msg = KeyValueMessage { key, value, kind, status };

    let payload = msg.encode_to_vec();
    let frame = frame_of(&msg);
    assert_eq!(frame.len(), encoded_len(payload.len()));
    assert_eq!(u32::from(Kind::from(kind)), kind);

    if let Ok(status) = Status::try_from(status) {
        let (key, value, kind) = (msg.key.as_bytes(), msg.value.as_bytes(), Kind::from(kind));
        assert_eq!(response_payload_len(key, value, kind, status), payload.len());
        let mut in_place = Vec::new();
        encode_response(&mut in_place, key, value, kind, status).expect("a Vec has room");
        assert_eq!(in_place, frame, "in-place encoding matches prost");
        if status == Status::Ok {
            // A request is a message without a status: the request encoder writes the same bytes.
            assert_eq!(request_payload_len(key, value, kind), payload.len());
            let mut request = Vec::new();
            encode_request(&mut request, key, value, kind).expect("a Vec has room");
            assert_eq!(request, frame, "in-place request encoding matches prost");
        }
    }

    let len = u32::try_from(frame.len() - HEADER_LEN).expect("inputs are small");
    for chunks in [Chunks::whole(), Chunks::new(&[chunk])] {
        assert_eq!(parse_one(&frame, len, chunks), msg);
    }
    if len > MIN_FRAME_LEN {
        let mut tight = FrameParser::new(len - 1);
        assert_eq!(tight.push(&frame, &mut Vec::new()), Err(FrameError::TooLong));
    }
}

/// The one message in `frame`, parsed in `chunks` with `max_frame_len`.
fn parse_one(frame: &[u8], max_frame_len: u32, mut chunks: Chunks) -> KeyValueMessage {
    let mut parser = FrameParser::new(max_frame_len);
    let mut buf = Vec::new();
    let mut start = 0;
    loop {
        let end = chunks.next_end(start, frame.len());
        match parser.push(&frame[start..end], &mut buf).expect("a well-formed frame") {
            (used, Parse::Complete(payload)) => {
                assert_eq!(start + used, frame.len(), "the frame ends at its footer");
                return KeyValueMessage::decode(payload).expect("decodes");
            }
            (used, Parse::Partial) => assert_eq!(used, end - start),
        }
        assert!(end < frame.len(), "the whole frame was pushed without completing");
        start = end;
    }
}
