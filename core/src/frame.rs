//! The kvio wire framing: `len: u32 LE | payload (len - 5 bytes) | "@EOF@"`.
//!
//! [`FrameParser`] is a push parser: feed it slices of any size, split at any
//! byte, and it yields the same frames and the same error. "Need more bytes"
//! is [`Parse::Partial`], not an error. The state machine is
//! `Header -> Payload -> Footer`: the 4 length bytes are looked at once, an
//! oversized or undersized `len` is refused from those 4 bytes alone, payload
//! bytes are copied at most once (and not at all when a frame arrives whole in
//! one slice), and each footer byte is compared once. Nothing is ever re-scanned.
//!
//! The parser owns no payload storage: a payload that arrives in pieces is
//! assembled in the [`PayloadBuffer`] the caller passes in, so the caller
//! bounds memory. After an error the parser stays failed: the byte stream can
//! no longer be trusted.

use crate::buffer::{Output, OutputFull, PayloadBuffer};
pub use crate::protocol::Parse;
use crate::protocol::Parser;

/// Field offsets of the frame header.
mod field {
    use core::ops::Range;

    /// The little-endian `len` field: payload length + footer length.
    pub const LEN: Range<usize> = 0..4;
}

/// Length of the header (the `len` field).
pub const HEADER_LEN: usize = field::LEN.end;
/// The footer that closes every frame.
pub const FOOTER: [u8; 5] = *b"@EOF@";
/// Length of the footer.
pub const FOOTER_LEN: usize = FOOTER.len();
/// Smallest valid `len`: an empty payload plus the footer.
pub const MIN_FRAME_LEN: u32 = FOOTER_LEN as u32;

/// Why a byte stream can no longer be parsed into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameError {
    /// `len` is below 5 (it must count at least the footer).
    TooShort,
    /// `len` is above the maximum frame length (or the payload buffer's room).
    TooLong,
    /// The 5 bytes after the payload are not `@EOF@`.
    BadFooter,
}

impl FrameError {
    /// A short reason, also sent to the client in the error frame.
    pub const fn as_str(&self) -> &'static str {
        match self {
            FrameError::TooShort => "frame length below 5",
            FrameError::TooLong => "frame length over maximum",
            FrameError::BadFooter => "frame footer is not @EOF@",
        }
    }
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for FrameError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum State {
    /// Reading the 4 length bytes; `have` of them are in `bytes`.
    Header { bytes: [u8; HEADER_LEN], have: u8 },
    /// Reading a payload of `len` bytes; `have` are in the payload buffer.
    Payload { len: u32, have: u32 },
    /// Payload of `len` bytes complete; `have` footer bytes matched so far.
    Footer { len: u32, have: u8 },
    /// A framing error happened; nothing more is parsed.
    Failed(FrameError),
}

impl State {
    const START: State = State::Header { bytes: [0; HEADER_LEN], have: 0 };
}

/// What [`FrameParser::push`] returns.
type PushResult<'a> = Result<(usize, Parse<&'a [u8]>), FrameError>;

/// A push parser for kvio frames. See the [module docs](self).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameParser {
    max_frame_len: u32,
    state: State,
}

impl FrameParser {
    /// A parser refusing frames whose `len` exceeds `max_frame_len`
    /// (raised to [`MIN_FRAME_LEN`] if lower).
    pub const fn new(max_frame_len: u32) -> Self {
        let max_frame_len = if max_frame_len < MIN_FRAME_LEN { MIN_FRAME_LEN } else { max_frame_len };
        FrameParser { max_frame_len, state: State::START }
    }

    /// The largest `len` this parser accepts.
    pub const fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// True at a frame boundary: no part of a frame is held anywhere.
    pub const fn is_at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// The framing error this parser stopped at, if any.
    pub const fn error(&self) -> Option<FrameError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Bytes of a partial payload currently kept in the caller's payload
    /// buffer (the buffer may be released when this is 0).
    pub const fn buffered_payload(&self) -> usize {
        match self.state {
            State::Payload { have, .. } => have as usize,
            State::Footer { len, .. } => len as usize,
            _ => 0,
        }
    }

    /// Feeds `input` to the parser.
    ///
    /// Returns how many bytes of `input` were consumed and either
    /// `Complete(payload)` (the consumed bytes end with that frame's footer;
    /// push the rest of `input` again for the next frame) or `Partial` (all of
    /// `input` was consumed). The payload borrows `input` when the frame came
    /// whole in this push, and `buf` otherwise.
    ///
    /// After an error every later push returns the same error.
    pub fn push<'a, B>(&mut self, input: &'a [u8], buf: &'a mut B) -> PushResult<'a>
    where
        B: PayloadBuffer + ?Sized,
    {
        if let Some(whole) = self.whole_frame(input, buf.max_payload()) {
            return whole;
        }
        let mut pos = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Header { .. } => {
                    pos += self.decode_head(&input[pos..], buf.max_payload())?;
                    if matches!(self.state, State::Header { .. }) {
                        return Ok((pos, Parse::Partial));
                    }
                }
                State::Payload { len, have } => {
                    let rest = &input[pos..];
                    let len = len as usize;
                    if have == 0 && rest.len() >= len + FOOTER_LEN {
                        // The whole body is in this slice: check it in place, copy nothing.
                        let (payload, footer) = (&rest[..len], &rest[len..len + FOOTER_LEN]);
                        if footer != FOOTER {
                            return Err(self.fail(FrameError::BadFooter));
                        }
                        self.state = State::START;
                        return Ok((pos + len + FOOTER_LEN, Parse::Complete(payload)));
                    }
                    pos += self.decode_payload(rest, buf)?;
                    if matches!(self.state, State::Payload { .. }) {
                        return Ok((pos, Parse::Partial));
                    }
                }
                State::Footer { len, .. } => {
                    pos += self.decode_footer(&input[pos..])?;
                    if matches!(self.state, State::Footer { .. }) {
                        return Ok((pos, Parse::Partial));
                    }
                    let payload = if len == 0 {
                        &[][..]
                    } else {
                        // The buffer held these bytes a moment ago, so it can,
                        // unless the caller passed another, smaller one since.
                        match buf.payload(len as usize) {
                            Some(payload) => payload,
                            None => return Err(self.fail(FrameError::TooLong)),
                        }
                    };
                    return Ok((pos, Parse::Complete(payload)));
                }
            }
        }
    }

    /// The pipelined case: at a frame boundary, with the whole frame in
    /// `input` and its `len` acceptable, the frame is checked in place in one
    /// step, the state untouched. `None` leaves everything to the state machine.
    #[inline]
    fn whole_frame<'a>(&mut self, input: &'a [u8], room: usize) -> Option<PushResult<'a>> {
        if !self.is_at_boundary() {
            return None;
        }
        let len = u32::from_le_bytes(*input.first_chunk::<HEADER_LEN>()?);
        if len < MIN_FRAME_LEN || len > self.max_frame_len || (len - MIN_FRAME_LEN) as usize > room {
            return None;
        }
        let end = HEADER_LEN.checked_add(len as usize)?;
        let (frame, footer) = input.get(..end)?.split_at(end - FOOTER_LEN);
        if footer != FOOTER {
            return Some(Err(self.fail(FrameError::BadFooter)));
        }
        Some(Ok((end, Parse::Complete(&frame[HEADER_LEN..]))))
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        debug!("framing error: {}", error);
        self.state = State::Failed(error);
        error
    }

    #[inline]
    /// Takes header bytes; on the 4th, checks `len` and moves to `Payload`.
    fn decode_head(&mut self, input: &[u8], room: usize) -> Result<usize, FrameError> {
        let State::Header { mut bytes, have } = self.state else { return Ok(0) };
        let have = have as usize;
        let take = (HEADER_LEN - have).min(input.len());
        bytes[have..have + take].copy_from_slice(&input[..take]);
        let have = have + take;
        if have < HEADER_LEN {
            self.state = State::Header { bytes, have: have as u8 };
            return Ok(take);
        }
        let len = u32::from_le_bytes(bytes);
        if len < MIN_FRAME_LEN {
            return Err(self.fail(FrameError::TooShort));
        }
        let payload_len = len - MIN_FRAME_LEN;
        if len > self.max_frame_len || payload_len as usize > room {
            return Err(self.fail(FrameError::TooLong));
        }
        self.state = State::Payload { len: payload_len, have: 0 };
        Ok(take)
    }

    /// Copies payload bytes into `buf`; when all are in, moves to `Footer`.
    fn decode_payload<B>(&mut self, input: &[u8], buf: &mut B) -> Result<usize, FrameError>
    where
        B: PayloadBuffer + ?Sized,
    {
        let State::Payload { len, have } = self.state else { return Ok(0) };
        let (len, have) = (len as usize, have as usize);
        let take = (len - have).min(input.len());
        if take > 0 {
            let Some(dst) = buf.payload(len) else {
                return Err(self.fail(FrameError::TooLong));
            };
            dst[have..have + take].copy_from_slice(&input[..take]);
        }
        let have = have + take;
        self.state = if have == len {
            State::Footer { len: len as u32, have: 0 }
        } else {
            State::Payload { len: len as u32, have: have as u32 }
        };
        Ok(take)
    }

    /// Matches footer bytes one by one; a wrong byte fails at once.
    fn decode_footer(&mut self, input: &[u8]) -> Result<usize, FrameError> {
        let State::Footer { len, have } = self.state else { return Ok(0) };
        let have = have as usize;
        let take = (FOOTER_LEN - have).min(input.len());
        if input[..take] != FOOTER[have..have + take] {
            return Err(self.fail(FrameError::BadFooter));
        }
        let have = have + take;
        self.state = if have == FOOTER_LEN { State::START } else { State::Footer { len, have: have as u8 } };
        Ok(take)
    }
}

/// kvio's frames as a [`Parser`]: a request is a frame's payload.
impl Parser for FrameParser {
    type Request<'a> = &'a [u8];
    type Error = FrameError;

    #[inline]
    fn push<'a, B>(&mut self, input: &'a [u8], buf: &'a mut B) -> PushResult<'a>
    where
        B: PayloadBuffer + ?Sized,
    {
        FrameParser::push(self, input, buf)
    }

    fn error(&self) -> Option<FrameError> {
        FrameParser::error(self)
    }

    fn is_at_boundary(&self) -> bool {
        FrameParser::is_at_boundary(self)
    }

    fn buffered(&self) -> usize {
        self.buffered_payload()
    }
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser::new(crate::DEFAULT_MAX_FRAME_LEN)
    }
}

/// Length on the wire of a frame carrying `payload_len` payload bytes.
pub const fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len + FOOTER_LEN
}

/// Appends one frame of `payload_len` payload bytes to `out`; `fill` writes
/// the payload into the slice it is given (exactly `payload_len` long).
///
/// Fails with [`OutputFull`] if `out` has no room or the length does not fit
/// the `u32` length field; `out` is then unchanged.
pub fn write_frame<O, F>(out: &mut O, payload_len: usize, fill: F) -> Result<(), OutputFull>
where
    O: Output + ?Sized,
    F: FnOnce(&mut [u8]),
{
    let len = u32::try_from(payload_len).ok().and_then(|n| n.checked_add(MIN_FRAME_LEN)).ok_or(OutputFull)?;
    let frame = out.append(encoded_len(payload_len))?;
    let (header, rest) = frame.split_at_mut(HEADER_LEN);
    let (payload, footer) = rest.split_at_mut(payload_len);
    header.copy_from_slice(&len.to_le_bytes());
    fill(payload);
    footer.copy_from_slice(&FOOTER);
    Ok(())
}

/// Appends one frame carrying `payload` to `out`.
pub fn encode_frame<O: Output + ?Sized>(payload: &[u8], out: &mut O) -> Result<(), OutputFull> {
    write_frame(out, payload.len(), |dst| dst.copy_from_slice(payload))
}

#[cfg(test)]
mod test {
    use super::*;
    use heapless::Vec;

    // golden `put_request` and `put_response_ok` from proto/tests/frames.json
    const PUT_REQUEST: [u8; 31] = [
        0x1b, 0x00, 0x00, 0x00, 0x0a, 0x08, b'D', b'i', b's', b'k', b'T', b'y', b'p', b'e', 0x12, 0x08, b'N', b'V',
        b'M', b'e', b' ', b'S', b'S', b'D', 0x18, 0x03, b'@', b'E', b'O', b'F', b'@',
    ];
    const PUT_RESPONSE_OK: [u8; 11] = [0x07, 0x00, 0x00, 0x00, 0x18, 0x03, b'@', b'E', b'O', b'F', b'@'];
    const EMPTY: [u8; 9] = [0x05, 0, 0, 0, b'@', b'E', b'O', b'F', b'@'];

    type Frames = Vec<Vec<u8, 64>, 64>;

    /// Pushes `input` in chunks of the given sizes (cycled), collecting frames.
    fn parse_split(input: &[u8], chunks: &[usize], max: u32) -> (Frames, Option<FrameError>) {
        let mut parser = FrameParser::new(max);
        let mut buf = [0u8; 64];
        let mut frames = Frames::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < input.len() {
            let n = chunks[i % chunks.len()].max(1).min(input.len() - pos);
            i += 1;
            let mut chunk = &input[pos..pos + n];
            pos += n;
            while !chunk.is_empty() {
                match parser.push(chunk, &mut buf[..]) {
                    Ok((used, Parse::Complete(p))) => {
                        frames.push(Vec::from_slice(p).unwrap()).unwrap();
                        chunk = &chunk[used..];
                    }
                    Ok((used, Parse::Partial)) => {
                        assert_eq!(used, chunk.len(), "partial must consume everything");
                        chunk = &[];
                    }
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
        (frames, parser.error())
    }

    fn stream() -> Vec<u8, 256> {
        let mut s = Vec::new();
        s.extend_from_slice(&PUT_REQUEST).unwrap();
        s.extend_from_slice(&EMPTY).unwrap();
        s.extend_from_slice(&PUT_RESPONSE_OK).unwrap();
        s.extend_from_slice(&PUT_REQUEST).unwrap();
        s
    }

    #[test]
    fn whole_stream_yields_every_payload() {
        let (frames, err) = parse_split(&stream(), &[usize::MAX], 1024);
        assert_eq!(err, None);
        assert_eq!(frames.len(), 4);
        assert_eq!(&frames[0][..], &PUT_REQUEST[4..26]);
        assert_eq!(&frames[1][..], b"");
        assert_eq!(&frames[2][..], &[0x18, 0x03]);
    }

    #[test]
    fn every_split_point_and_byte_by_byte_agree() {
        let s = stream();
        let whole = parse_split(&s, &[usize::MAX], 1024);
        assert_eq!(parse_split(&s, &[1], 1024), whole);
        for cut in 0..s.len() {
            assert_eq!(parse_split(&s, &[cut, usize::MAX], 1024), whole, "cut at {cut}");
        }
        for a in 1..8 {
            for b in 1..8 {
                assert_eq!(parse_split(&s, &[a, b], 1024), whole, "chunks {a},{b}");
            }
        }
    }

    #[test]
    fn length_below_five_is_refused_from_the_header() {
        for len in 0u32..5 {
            let mut parser = FrameParser::new(1024);
            let header = len.to_le_bytes();
            assert_eq!(parser.push(&header[..3], &mut [0u8; 8][..]), Ok((3, Parse::Partial)));
            assert_eq!(parser.push(&header[3..], &mut [0u8; 8][..]), Err(FrameError::TooShort));
            assert_eq!(parser.push(b"@EOF@", &mut [0u8; 8][..]), Err(FrameError::TooShort), "stays failed");
        }
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut parser = FrameParser::new(100);
        assert_eq!(parser.push(&101u32.to_le_bytes(), &mut [0u8; 0][..]), Err(FrameError::TooLong));
        let mut parser = FrameParser::new(100);
        assert_eq!(parser.push(&u32::MAX.to_le_bytes(), &mut [0u8; 0][..]), Err(FrameError::TooLong));
        // exactly the maximum is fine
        let mut parser = FrameParser::new(100);
        assert_eq!(parser.push(&100u32.to_le_bytes(), &mut [0u8; 95][..]), Ok((4, Parse::Partial)));
    }

    #[test]
    fn a_payload_buffer_smaller_than_the_frame_refuses_it() {
        let mut parser = FrameParser::new(1024);
        assert_eq!(parser.push(&PUT_REQUEST, &mut [0u8; 4][..]), Err(FrameError::TooLong));
    }

    #[test]
    fn bad_footer_fails_at_the_first_wrong_byte() {
        let mut frame = PUT_RESPONSE_OK;
        frame[7] = b'X'; // "@XOF@"
        let (frames, err) = parse_split(&frame, &[1], 1024);
        assert!(frames.is_empty());
        assert_eq!(err, Some(FrameError::BadFooter));
        let mut parser = FrameParser::new(1024);
        assert_eq!(parser.push(&frame[..7], &mut [0u8; 8][..]), Ok((7, Parse::Partial)));
        assert_eq!(parser.push(&frame[7..8], &mut [0u8; 8][..]), Err(FrameError::BadFooter));
    }

    #[test]
    fn frames_before_an_error_are_yielded() {
        let mut s: Vec<u8, 64> = Vec::new();
        s.extend_from_slice(&PUT_RESPONSE_OK).unwrap();
        s.extend_from_slice(&[2, 0, 0, 0]).unwrap();
        s.extend_from_slice(&PUT_RESPONSE_OK).unwrap();
        for chunk in 1..s.len() {
            let (frames, err) = parse_split(&s, &[chunk], 1024);
            assert_eq!(frames.len(), 1);
            assert_eq!(err, Some(FrameError::TooShort));
        }
    }

    #[test]
    fn whole_frames_are_not_copied_and_split_ones_are() {
        let mut parser = FrameParser::new(1024);
        let mut buf = [0xAAu8; 32];
        let (used, status) = parser.push(&PUT_REQUEST, &mut buf[..]).unwrap();
        assert_eq!(used, PUT_REQUEST.len());
        let Parse::Complete(p) = status else { panic!("expected a frame") };
        assert_eq!(p.as_ptr(), PUT_REQUEST[4..].as_ptr(), "payload borrowed from input");
        assert_eq!(buf, [0xAA; 32], "buffer untouched");
        assert!(parser.is_at_boundary());

        assert_eq!(parser.push(&PUT_REQUEST[..10], &mut buf[..]), Ok((10, Parse::Partial)));
        assert_eq!(parser.buffered_payload(), 6);
        let (used, status) = parser.push(&PUT_REQUEST[10..], &mut buf[..]).unwrap();
        assert_eq!(used, 21);
        assert_eq!(status, Parse::Complete(&PUT_REQUEST[4..26]));
    }

    #[test]
    fn a_smaller_buffer_at_the_footer_fails_the_parser_for_good() {
        // The payload went into a 32-byte buffer; the footer's last byte comes
        // with a 4-byte one, which cannot hand the payload back.
        let mut parser = FrameParser::new(1024);
        let mut buf = [0u8; 32];
        let end = PUT_REQUEST.len() - 1;
        assert_eq!(parser.push(&PUT_REQUEST[..end], &mut buf[..]), Ok((end, Parse::Partial)));
        let mut small = [0u8; 4];
        assert_eq!(parser.push(&PUT_REQUEST[end..], &mut small[..]), Err(FrameError::TooLong));
        assert_eq!(parser.error(), Some(FrameError::TooLong));
        // As the doc promises: every later push returns the same error.
        assert_eq!(parser.push(&PUT_REQUEST, &mut buf[..]), Err(FrameError::TooLong));
        assert_eq!(parser.push(&[], &mut buf[..]), Err(FrameError::TooLong));
    }

    #[test]
    fn encoder_produces_golden_bytes() {
        let mut out: Vec<u8, 64> = Vec::new();
        encode_frame(&[0x18, 0x03], &mut out).unwrap();
        assert_eq!(&out[..], &PUT_RESPONSE_OK);
        let mut out: Vec<u8, 64> = Vec::new();
        encode_frame(&[], &mut out).unwrap();
        assert_eq!(&out[..], &EMPTY);
        let mut small: Vec<u8, 8> = Vec::new();
        assert_eq!(encode_frame(&[1, 2], &mut small), Err(OutputFull));
        assert!(small.is_empty(), "a refused frame leaves nothing behind");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn frame_bytes() -> impl Strategy<Value = std::vec::Vec<u8>> {
            prop::collection::vec(any::<u8>(), 0..40).prop_map(|payload| {
                let mut f = std::vec::Vec::new();
                f.extend_from_slice(&(payload.len() as u32 + 5).to_le_bytes());
                f.extend_from_slice(&payload);
                f.extend_from_slice(&FOOTER);
                f
            })
        }

        proptest! {
            #[test]
            fn random_splits_give_the_same_frames(
                frames in prop::collection::vec(frame_bytes(), 0..5),
                garbage in prop::collection::vec(any::<u8>(), 0..12),
                chunks in prop::collection::vec(1usize..20, 1..8),
            ) {
                let mut s = std::vec::Vec::new();
                for f in &frames { s.extend_from_slice(f); }
                s.extend_from_slice(&garbage);
                prop_assert_eq!(parse_split(&s, &chunks, 64), parse_split(&s, &[usize::MAX], 64));
                let (got, _) = parse_split(&s, &chunks, 64);
                prop_assert!(got.len() >= frames.len());
                for (g, f) in got.iter().zip(&frames) {
                    prop_assert_eq!(&g[..], &f[4..f.len() - 5]);
                }
            }
        }
    }
}
