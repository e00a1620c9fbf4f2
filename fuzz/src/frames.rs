//! The `frame_parser` target: the push parser, fed a stream in arbitrary
//! chunks with one of three payload buffers, must agree with [`Model`], a
//! plain whole-stream reading of the framing, frame by frame and byte by byte.
//!
//! Checked: the same payloads and the same error as the model; each
//! `Complete` consumes exactly up to its frame's footer, each `Partial`
//! everything; an error is raised by the push holding the byte that reveals
//! it, and stays; payloads and the bytes held for them never exceed the
//! maximum frame length or the buffer's room; a frame that arrives whole in
//! one push is borrowed from the input, not copied.

use std::ops::Range;

use kvio_core::PayloadBuffer;
use kvio_core::frame::{FOOTER, FOOTER_LEN, FrameError, FrameParser, HEADER_LEN, MIN_FRAME_LEN, Parse};

use crate::input::{Chunks, Cursor};

/// What a correct parser makes of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Payloads of the complete frames, as ranges of the stream.
    pub payloads: Vec<Range<usize>>,
    /// The framing error, and the index of the byte that reveals it.
    pub error: Option<(FrameError, usize)>,
    /// The first byte not in a complete frame.
    pub end: usize,
    /// Payload bytes a parser holds for the unfinished last frame (if no error).
    pub buffered: usize,
}

/// Reads `stream` as frames of at most `max_frame_len` (raised to 5, as the
/// parser does) whose payload fits in `room` bytes.
pub fn model(stream: &[u8], max_frame_len: u32, room: usize) -> Model {
    let max = max_frame_len.max(MIN_FRAME_LEN);
    let mut m = Model { payloads: Vec::new(), error: None, end: 0, buffered: 0 };
    let mut pos = 0;
    while let Some(header) = stream.get(pos..pos + HEADER_LEN) {
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes"));
        let last_header_byte = pos + HEADER_LEN - 1;
        if len < MIN_FRAME_LEN {
            m.error = Some((FrameError::TooShort, last_header_byte));
            break;
        }
        let payload_len = (len - MIN_FRAME_LEN) as usize;
        if len > max || payload_len > room {
            m.error = Some((FrameError::TooLong, last_header_byte));
            break;
        }
        let body = pos + HEADER_LEN;
        let payload_end = body + payload_len;
        let footer = stream.get(payload_end..).unwrap_or_default();
        let footer = &footer[..footer.len().min(FOOTER_LEN)];
        if let Some(i) = footer.iter().zip(FOOTER).position(|(&got, want)| got != want) {
            m.error = Some((FrameError::BadFooter, payload_end + i));
            break;
        }
        if footer.len() < FOOTER_LEN {
            m.buffered = payload_len.min(stream.len() - body);
            break;
        }
        m.payloads.push(body..payload_end);
        pos = payload_end + FOOTER_LEN;
    }
    m.end = pos;
    m
}

/// A payload buffer whose footprint and address range the checks can see.
pub trait Inspect: PayloadBuffer {
    /// Bytes the parser has made this buffer hold (its length for a `Vec`).
    fn footprint(&self) -> usize;
    /// Whether `[addr, addr + len)` lies inside the buffer.
    fn holds(&self, addr: usize, len: usize) -> bool;
}

fn inside(slice: &[u8], addr: usize, len: usize) -> bool {
    let start = slice.as_ptr() as usize;
    addr >= start && addr + len <= start + slice.len()
}

impl Inspect for Vec<u8> {
    fn footprint(&self) -> usize {
        self.len()
    }

    fn holds(&self, addr: usize, len: usize) -> bool {
        inside(self, addr, len)
    }
}

impl Inspect for [u8] {
    fn footprint(&self) -> usize {
        0
    }

    fn holds(&self, addr: usize, len: usize) -> bool {
        inside(self, addr, len)
    }
}

/// The target: `[max_frame_len: u16][buffer kind: u8][room: u16][n: u8][n+1 chunk sizes][stream...]`.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_frame_len = u32::from(c.u16());
    let max_payload = (max_frame_len.max(MIN_FRAME_LEN) - MIN_FRAME_LEN) as usize;
    let kind = c.u8();
    let room = usize::from(c.u16());
    let n = usize::from(c.u8() % 16) + 1;
    let sizes = c.bytes(n);
    let stream = c.rest();

    for chunks in [Chunks::new(sizes), Chunks::whole()] {
        match kind % 3 {
            // Grows on demand: only the frame length limit bounds it.
            0 => run(stream, max_frame_len, chunks, &mut Vec::new(), usize::MAX),
            // Exactly the room the contract asks for.
            1 => run(stream, max_frame_len, chunks, &mut vec![0; max_payload][..], max_payload),
            // Less room than the frame length allows: longer frames are refused from the header.
            _ => {
                let room = room % (max_payload + 1);
                run(stream, max_frame_len, chunks, &mut vec![0; room][..], room)
            }
        }
    }
}

/// Pushes `stream` in `chunks` and checks every result against the model.
pub fn run<B: Inspect + ?Sized>(stream: &[u8], max_frame_len: u32, mut chunks: Chunks, buf: &mut B, room: usize) {
    let model = model(stream, max_frame_len, room);
    let mut parser = FrameParser::new(max_frame_len);
    let max_payload = (parser.max_frame_len() - MIN_FRAME_LEN) as usize;
    assert_eq!(parser.max_frame_len(), max_frame_len.max(MIN_FRAME_LEN));
    let mut frames = 0;
    let mut chunk_start = 0;
    loop {
        let chunk_end = chunks.next_end(chunk_start, stream.len());
        let mut pos = chunk_start;
        loop {
            let input = &stream[pos..chunk_end];
            let input_addr = input.as_ptr() as usize;
            match parser.push(input, buf) {
                Ok((used, Parse::Complete(payload))) => {
                    let (addr, len) = (payload.as_ptr() as usize, payload.len());
                    let want = model.payloads.get(frames).expect("a frame the model does not see").clone();
                    assert_eq!(payload, &stream[want.clone()], "frame {frames}");
                    assert_eq!(pos + used, want.end + FOOTER_LEN, "frame {frames} ends after its footer");
                    assert!(len <= max_payload);
                    if len > 0 {
                        if want.start - HEADER_LEN >= pos {
                            // The whole frame was in this push: borrowed in place, not copied.
                            assert_eq!(addr, input_addr + (want.start - pos), "frame {frames} borrowed from input");
                        } else {
                            assert!(
                                buf.holds(addr, len) || addr == input_addr + (want.start - pos),
                                "frame {frames} comes from the buffer or the input"
                            );
                        }
                    }
                    assert!(parser.is_at_boundary());
                    assert_eq!(parser.buffered_payload(), 0);
                    frames += 1;
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
                    let (want, at) = model.error.expect("an error the model does not see");
                    assert_eq!(e, want);
                    assert!((pos..chunk_end).contains(&at), "{e:?} at byte {at}, raised by push of {pos}..{chunk_end}");
                    assert_eq!(frames, model.payloads.len(), "every frame before the error");
                    assert_eq!(parser.error(), Some(e));
                    assert!(!parser.is_at_boundary());
                    for more in [&[][..], &[5, 0, 0, 0], b"@EOF@"] {
                        assert_eq!(parser.push(more, buf), Err(e), "stays failed");
                    }
                    return;
                }
            }
            assert!(parser.buffered_payload() <= room.min(max_payload));
            assert!(buf.footprint() <= max_payload, "payload buffer grown past the frame limit");
        }
        assert!(parser.buffered_payload() <= room.min(max_payload));
        assert!(buf.footprint() <= max_payload, "payload buffer grown past the frame limit");
        chunk_start = chunk_end;
        if chunk_start == stream.len() {
            break;
        }
    }
    assert_eq!(model.error, None, "the parser missed an error");
    assert_eq!(parser.error(), None);
    assert_eq!(frames, model.payloads.len());
    assert_eq!(parser.is_at_boundary(), model.end == stream.len());
    assert_eq!(parser.buffered_payload(), model.buffered);
}
