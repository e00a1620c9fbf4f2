//! The `memcache_parser` target: the memcached push parser, fed a stream
//! in arbitrary chunks with a growable or a fixed payload buffer, must
//! agree with [`model`], a plain whole-stream reading of the text protocol
//! written apart from the parser.
//!
//! Checked: the same requests (line, data block, dropped or bad length)
//! and the same error; `Partial` consumes everything; a request whole in
//! one push is borrowed from the input; the buffer never holds more than
//! its room, and never a block over the value limit; after an error the
//! parser stays failed.

use kvio_core::PayloadBuffer;
use kvio_core::memcache::{Data, MAX_LINE_LEN, McError, RequestParser};
use kvio_core::protocol::{Parse, Parser};

use crate::frames::Inspect;
use crate::input::{Chunks, Cursor};

/// A request as the model sees it: its line, and its block, dropped
/// length or bad length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    None,
    Bytes(Vec<u8>),
    TooLarge(u64),
    BadLength,
}

/// What a correct parser makes of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub requests: Vec<(Vec<u8>, Block)>,
    pub error: Option<McError>,
}

/// The data length a storage line declares (memcached's token rules).
fn declared(line: &[u8]) -> Option<Option<u64>> {
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').filter(|w| !w.is_empty()).collect();
    let at = match *words.first()? {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => 4,
        b"ms" => 2,
        _ => return None,
    };
    let n = words.get(at).and_then(|w| {
        if w.is_empty() || w.len() > 20 || !w.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(w).ok()?.parse::<u64>().ok()
    });
    Some(n.filter(|&n| n <= i32::MAX as u64 - 2))
}

/// Reads `stream` as memcached requests, blocks at most `max_value` bytes
/// and kept requests at most `room` bytes.
pub fn model(stream: &[u8], max_value: usize, room: usize) -> Model {
    let mut m = Model { requests: Vec::new(), error: None };
    let bound = MAX_LINE_LEN.min(room);
    let mut pos = 0;
    while pos < stream.len() {
        let line_len = match stream[pos..].iter().position(|&b| b == b'\n') {
            Some(at) if at < bound => at + 1,
            None if stream.len() - pos <= bound => break,
            _ => {
                m.error = Some(McError::LineTooLong);
                break;
            }
        };
        let raw = &stream[pos..pos + line_len - 1];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw).to_vec();
        let body = pos + line_len;
        let block = match declared(&line) {
            None => Block::None,
            Some(None) => Block::BadLength,
            Some(Some(n)) => {
                let end = body as u64 + n + 2;
                if n > max_value as u64 || line_len as u64 + n + 2 > room as u64 {
                    if (stream.len() as u64) < end {
                        break;
                    }
                    pos = end as usize;
                    m.requests.push((line, Block::TooLarge(n)));
                    continue;
                }
                let end = end as usize;
                let n = n as usize;
                match (stream.get(body + n), stream.get(body + n + 1)) {
                    (Some(&b'\r'), Some(&b'\n')) => {}
                    (Some(&b'\r'), None) | (None, _) => break,
                    _ => {
                        m.error = Some(McError::BadDataChunk);
                        break;
                    }
                }
                m.requests.push((line, Block::Bytes(stream[body..body + n].to_vec())));
                pos = end;
                continue;
            }
        };
        m.requests.push((line, block));
        pos = body;
    }
    m
}

/// The target: `[max_value: u16][buffer kind: u8][room: u16][n: u8][n+1 chunk sizes][stream...]`.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_value = usize::from(c.u16());
    let kind = c.u8();
    let room = usize::from(c.u16());
    let n = usize::from(c.u8() % 16) + 1;
    let sizes = c.bytes(n);
    let stream = c.rest();
    for chunks in [Chunks::new(sizes), Chunks::whole()] {
        if kind.is_multiple_of(2) {
            run(stream, max_value, chunks, &mut Vec::new(), usize::MAX);
        } else {
            run(stream, max_value, chunks, &mut vec![0; room][..], room);
        }
    }
}

fn run<B: Inspect + PayloadBuffer + ?Sized>(stream: &[u8], max_value: usize, mut chunks: Chunks, buf: &mut B, room: usize) {
    let model = model(stream, max_value, room);
    let mut parser = RequestParser::new(max_value);
    let mut requests = 0;
    let mut chunk_start = 0;
    loop {
        let chunk_end = chunks.next_end(chunk_start, stream.len());
        let mut pos = chunk_start;
        loop {
            let input = &stream[pos..chunk_end];
            let input_addr = input.as_ptr() as usize;
            match parser.push(input, buf) {
                Ok((used, Parse::Complete(request))) => {
                    let want = model.requests.get(requests).expect("a request the model does not see");
                    let block = match request.data {
                        Data::None => Block::None,
                        Data::Bytes(b) => Block::Bytes(b.to_vec()),
                        Data::TooLarge(n) => Block::TooLarge(n),
                        Data::BadLength => Block::BadLength,
                    };
                    assert_eq!((request.line.to_vec(), block), *want, "request {requests}");
                    if let Data::Bytes(b) = request.data {
                        assert!(b.len() <= max_value, "a block over the value limit");
                    }
                    let (addr, len) = (request.line.as_ptr() as usize, request.line.len());
                    let in_input = addr >= input_addr && addr < input_addr + input.len();
                    assert!(in_input || len == 0 || buf.holds(addr, len), "request {requests} from the input or the buffer");
                    assert!(parser.is_at_boundary());
                    requests += 1;
                    pos += used;
                    if pos == chunk_end {
                        break;
                    }
                }
                Ok((used, Parse::Partial)) => {
                    assert_eq!(used, input.len(), "Partial consumes everything");
                    break;
                }
                Err(e) => {
                    assert_eq!(Some(e), model.error, "error after {requests} requests");
                    assert_eq!(requests, model.requests.len(), "every request before the error");
                    assert_eq!(parser.error(), Some(e));
                    for more in [&[][..], b"mn\r\n"] {
                        assert_eq!(parser.push(more, buf), Err(e), "stays failed");
                    }
                    return;
                }
            }
            assert!(parser.buffered() <= room);
            assert!(buf.footprint() <= room.min(MAX_LINE_LEN + max_value + 2), "payload buffer past its bound");
        }
        chunk_start = chunk_end;
        if chunk_start == stream.len() {
            break;
        }
    }
    assert_eq!(model.error, None, "the parser missed an error");
    assert_eq!(requests, model.requests.len());
}
