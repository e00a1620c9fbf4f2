//! The memcached text protocol and its meta commands: a command line
//! (`get k1 k2\r\n`, `mg k v f t\r\n`), followed, for the storage commands
//! (`set`, `add`, `replace`, `append`, `prepend`, `cas`, `ms`), by a data
//! block of the length the line declares and `\r\n`.
//!
//! [`RequestParser`] is a push parser like the other two: fed slices split
//! at any byte, it yields the same [`Request`]s and the same error. A
//! request whole in one slice is borrowed from it; one in pieces is
//! assembled in the caller's [`PayloadBuffer`], each byte copied once.
//! Bounds, with memcached's answers:
//!
//! - a line is at most [`MAX_LINE_LEN`] bytes ([`McError::LineTooLong`],
//!   then the connection closes: without its end, the stream cannot be
//!   resynchronised);
//! - a data block longer than the value limit is read and dropped, never
//!   buffered, and the request comes out as [`Data::TooLarge`] (memcached's
//!   `SERVER_ERROR object too large for cache`); the stream goes on;
//! - a length that is not a number gives [`Data::BadLength`] (no block is
//!   read: memcached's `CLIENT_ERROR bad command line format`, and the next
//!   line is a command again, as in memcached);
//! - a block not followed by `\r\n` is [`McError::BadDataChunk`], and the
//!   connection closes.
//!
//! What each command does is [`handler`]'s.

use crate::buffer::PayloadBuffer;
use crate::protocol::{Parse, Parser};

pub mod handler;
pub mod reply;

pub use handler::{McHandler, NoStats, Stats};

/// Longest command line, its `\r\n` included (a `get` of 250 keys of 250
/// bytes fits).
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Longest key (memcached's `KEY_MAX_LENGTH`).
pub const MAX_KEY_LEN: usize = 250;

/// Why a memcached byte stream can no longer be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum McError {
    /// No `\n` within [`MAX_LINE_LEN`] bytes.
    LineTooLong,
    /// A data block not followed by `\r\n`.
    BadDataChunk,
}

impl McError {
    /// The reply's text after `CLIENT_ERROR `.
    pub const fn as_str(&self) -> &'static str {
        match self {
            McError::LineTooLong => "line too long",
            McError::BadDataChunk => "bad data chunk",
        }
    }
}

impl core::fmt::Display for McError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for McError {}

/// A storage command's data block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    /// The command has none.
    None,
    /// The block (without its `\r\n`).
    Bytes(&'a [u8]),
    /// The block was longer than the value limit: read and dropped (its declared length).
    TooLarge(u64),
    /// The line's length field is not a number: no block was read.
    BadLength,
}

/// One whole request: its line (without the line end) and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The command line, without `\r\n` (or `\n`).
    pub line: &'a [u8],
    /// The data block of a storage command.
    pub data: Data<'a>,
}

impl<'a> Request<'a> {
    /// The line's tokens (separated by spaces, as memcached splits them).
    pub fn tokens(&self) -> Tokens<'a> {
        Tokens { rest: self.line }
    }
}

/// The tokens of a command line.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| b != b' ')?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// Which token of a storage command's line is the data length: `set k f
/// e <bytes>` (and add, replace, append, prepend, cas) or `ms k <bytes>`.
fn length_token(name: &[u8]) -> Option<usize> {
    match name {
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => Some(4),
        b"ms" => Some(2),
        _ => None,
    }
}

/// The declared data length of a storage line: `None` if the line has no
/// block, `Some(None)` if its length is not a number memcached accepts.
fn declared_len(line: &[u8]) -> Option<Option<u64>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let at = length_token(Tokens { rest: line }.next()?)?;
    let token = Tokens { rest: line }.nth(at);
    Some(token.and_then(parse_u64).filter(|&n| n <= i32::MAX as u64 - 2))
}

/// A decimal number of at most 20 digits, no sign (as memcached's `safe_strtoull`).
pub fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    token.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum State {
    /// Reading a line: looking for its `\n`.
    Line,
    /// Reading a data block and its `\r\n` (`left` bytes to come) after a
    /// line of `line` bytes (line end included).
    Data { line: usize, left: u64 },
    /// Dropping a block too large to keep (`left` bytes to come).
    Swallow { line: usize, left: u64, declared: u64 },
    /// The stream broke.
    Failed(McError),
}

/// How a scan of one slice ended.
enum Scan {
    /// Every byte was taken; the request goes on.
    More,
    /// The request ended after this many bytes of the slice.
    Done(usize),
}

/// A push parser for memcached requests. See the [module docs](self).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestParser {
    max_value_len: usize,
    state: State,
    /// Bytes of the request kept so far (in the buffer, when `buffered`),
    /// dropped bytes of a swallowed block not counted.
    have: usize,
    buffered: bool,
    /// The request being read was too large: its block was dropped.
    too_large: Option<u64>,
    bad_length: bool,
}

impl RequestParser {
    /// A parser whose data blocks are at most `max_value_len` bytes (the
    /// store's value limit): longer ones are dropped as they come.
    pub const fn new(max_value_len: usize) -> Self {
        RequestParser {
            max_value_len,
            state: State::Line,
            have: 0,
            buffered: false,
            too_large: None,
            bad_length: false,
        }
    }

    fn fail(&mut self, error: McError) -> McError {
        debug!("memcache protocol error: {}", error.as_str());
        self.state = State::Failed(error);
        error
    }

    fn reset(&mut self) {
        *self = RequestParser::new(self.max_value_len);
    }

    /// Walks `input` from the current state: how far it took it, the
    /// state following. `kept` is the part of the line read before.
    fn scan(&mut self, input: &[u8], kept: &[u8], room: usize) -> Result<(usize, Scan), McError> {
        let mut i = 0;
        let line_bound = MAX_LINE_LEN.min(room);
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Line => match input[i..].iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        let end = i + at + 1;
                        if self.have + end > line_bound {
                            return Err(self.fail(McError::LineTooLong));
                        }
                        let line_len = self.have + end;
                        // The line: what was kept, then this slice's part.
                        let declared = if kept.is_empty() {
                            declared_len(&input[..end])
                        } else {
                            declared_split(kept, &input[..end])
                        };
                        i = end;
                        match declared {
                            None => return Ok((i, Scan::Done(i))),
                            Some(None) => {
                                self.bad_length = true;
                                return Ok((i, Scan::Done(i)));
                            }
                            // Too long for the store, or for the buffer it would be kept in.
                            Some(Some(n))
                                if n > self.max_value_len as u64 || (line_len as u64 + n + 2) > room as u64 =>
                            {
                                self.state = State::Swallow { line: line_len, left: n + 2, declared: n };
                            }
                            Some(Some(n)) => self.state = State::Data { line: line_len, left: n + 2 },
                        }
                    }
                    None => {
                        if self.have + input.len() > line_bound {
                            return Err(self.fail(McError::LineTooLong));
                        }
                        return Ok((input.len(), Scan::More));
                    }
                },
                State::Data { line, left } => {
                    if i == input.len() {
                        return Ok((i, Scan::More));
                    }
                    if left > 2 {
                        let take = (left - 2).min((input.len() - i) as u64);
                        self.state = State::Data { line, left: left - take };
                        i += take as usize;
                        continue;
                    }
                    let want = if left == 2 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(self.fail(McError::BadDataChunk));
                    }
                    i += 1;
                    if left == 1 {
                        return Ok((i, Scan::Done(i)));
                    }
                    self.state = State::Data { line, left: 1 };
                }
                State::Swallow { line, left, declared } => {
                    // Nothing of it is kept: the caller drops these bytes.
                    let take = left.min((input.len() - i) as u64);
                    let left = left - take;
                    i += take as usize;
                    if left == 0 {
                        self.too_large = Some(declared);
                        return Ok((i, Scan::Done(i)));
                    }
                    self.state = State::Swallow { line, left, declared };
                    return Ok((i, Scan::More));
                }
            }
        }
    }

    /// The request whose bytes (line, and block unless swallowed) are `raw`.
    fn request<'a>(&self, raw: &'a [u8]) -> Request<'a> {
        let (line_len, data) = match self.state {
            State::Data { line, .. } => (line, Some(&raw[line..raw.len() - 2])),
            State::Swallow { line, .. } => (line, None),
            _ => (raw.len(), None),
        };
        let mut line = &raw[..line_len.min(raw.len())];
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        let data = match (data, self.too_large, self.bad_length) {
            (Some(block), ..) => Data::Bytes(block),
            (None, Some(declared), _) => Data::TooLarge(declared),
            (None, None, true) => Data::BadLength,
            _ => Data::None,
        };
        Request { line, data }
    }
}

/// [`declared_len`] of a line split between `kept` and `tail`, without
/// assembling it (the length token is within the first tokens; a key is
/// at most 250 bytes, but the line may hold anything).
fn declared_split(kept: &[u8], tail: &[u8]) -> Option<Option<u64>> {
    // The line without its `\n` and one `\r` before it, as `declared_len` reads it.
    let total = kept.len() + tail.len();
    let byte = |i: usize| if i < kept.len() { kept[i] } else { tail[i - kept.len()] };
    let mut len = total.saturating_sub(1);
    if len > 0 && byte(len - 1) == b'\r' {
        len -= 1;
    }
    // Tokens may straddle the split: walk the line as one sequence, keeping
    // the first five tokens (a long one only as "long": no length token is).
    let mut tokens: [([u8; 24], usize, bool); 5] = [([0; 24], 0, false); 5];
    let mut n = 0;
    let mut in_token = false;
    for b in (0..len).map(byte) {
        if b == b' ' {
            if in_token {
                n += 1;
                in_token = false;
                if n == tokens.len() {
                    break;
                }
            }
            continue;
        }
        in_token = true;
        let (buf, len, long) = &mut tokens[n];
        if *len < buf.len() {
            buf[*len] = b;
            *len += 1;
        } else {
            *long = true;
        }
    }
    let count = n + usize::from(in_token);
    let token = |k: usize| -> Option<&[u8]> {
        let (buf, len, long) = &tokens[k];
        (k < count).then_some(if *long { &b"long"[..] } else { &buf[..*len] })
    };
    let at = length_token(token(0)?)?;
    Some(token(at).and_then(parse_u64).filter(|&n| n <= i32::MAX as u64 - 2))
}

impl Parser for RequestParser {
    type Request<'a> = Request<'a>;
    type Error = McError;

    fn push<'a, B>(&mut self, input: &'a [u8], buf: &'a mut B) -> Result<(usize, Parse<Request<'a>>), McError>
    where
        B: PayloadBuffer + ?Sized,
    {
        if input.is_empty() {
            return match self.state {
                State::Failed(e) => Err(e),
                _ => Ok((0, Parse::Partial)),
            };
        }
        let room = buf.max_payload();
        // The line kept so far (empty when nothing is buffered).
        let (used, scan) = {
            let kept: &[u8] = if self.buffered && self.state == State::Line {
                buf.payload(self.have).map_or(&[][..], |b| &*b)
            } else {
                &[]
            };
            self.scan(input, kept, room)?
        };
        let swallowing = matches!(self.state, State::Swallow { .. });
        if let (false, Scan::Done(end)) = (self.buffered, &scan) {
            // Whole in `input` (a swallowed block's bytes among them): borrowed.
            let keep = if swallowing { self.line_len() } else { *end };
            let request = self.request(&input[..keep]);
            self.reset();
            return Ok((used, Parse::Complete(request)));
        }
        // Keep these bytes (but for a swallowed block's) in the buffer.
        let keep = if swallowing {
            // The line, if it is in this slice and not kept yet.
            self.line_len().saturating_sub(self.have).min(used)
        } else {
            used
        };
        let before = self.have;
        self.have += keep;
        if keep > 0 || !self.buffered {
            let Some(dst) = buf.payload(self.have) else {
                return Err(self.fail(McError::LineTooLong));
            };
            dst[before..].copy_from_slice(&input[..keep]);
        }
        self.buffered = true;
        if let Scan::More = scan {
            return Ok((used, Parse::Partial));
        }
        let len = self.have;
        let raw: &'a [u8] = buf.payload(len).unwrap_or_default();
        let request = self.request(raw);
        self.reset();
        Ok((used, Parse::Complete(request)))
    }

    fn error(&self) -> Option<McError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn is_at_boundary(&self) -> bool {
        self.state == State::Line && self.have == 0
    }

    fn buffered(&self) -> usize {
        if self.buffered { self.have } else { 0 }
    }
}

impl RequestParser {
    fn line_len(&self) -> usize {
        match self.state {
            State::Data { line, .. } | State::Swallow { line, .. } => line,
            _ => self.have,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    type Buf = heapless::Vec<u8, 4096>;

    /// (line, data) of each request, or the error.
    type Parsed = (Vec<(Vec<u8>, Option<Vec<u8>>, Option<u64>, bool)>, Option<McError>);

    fn parse_all(input: &[u8], chunk: usize, max_value: usize) -> Parsed {
        let mut parser = RequestParser::new(max_value);
        let mut buf = Buf::new();
        let mut requests = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut at = 0;
            while at < piece.len() {
                match parser.push(&piece[at..], &mut buf) {
                    Ok((used, Parse::Complete(request))) => {
                        let (data, too_large, bad) = match request.data {
                            Data::None => (None, None, false),
                            Data::Bytes(b) => (Some(b.to_vec()), None, false),
                            Data::TooLarge(n) => (None, Some(n), false),
                            Data::BadLength => (None, None, true),
                        };
                        requests.push((request.line.to_vec(), data, too_large, bad));
                        at += used;
                        assert!(parser.is_at_boundary());
                    }
                    Ok((used, Parse::Partial)) => {
                        assert_eq!(used, piece.len() - at, "partial takes all");
                        at += used;
                    }
                    Err(e) => {
                        assert_eq!(parser.push(b"mn\r\n", &mut buf), Err(e), "stays failed");
                        return (requests, Some(e));
                    }
                }
            }
        }
        (requests, None)
    }

    fn line(l: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, Option<u64>, bool) {
        (l.to_vec(), None, None, false)
    }

    #[test]
    fn lines_and_data_blocks_however_split() {
        let input: &[u8] =
            b"get a b\r\nset k 5 0 4\r\nv\r\nx\r\nmn\nms key 2 T9\r\nhi\r\nset bad 0 0 -1\r\nsplit me\r\n";
        let want = vec![
            line(b"get a b"),
            (b"set k 5 0 4".to_vec(), Some(b"v\r\nx".to_vec()), None, false),
            line(b"mn"),
            (b"ms key 2 T9".to_vec(), Some(b"hi".to_vec()), None, false),
            (b"set bad 0 0 -1".to_vec(), None, None, true),
            line(b"split me"),
        ];
        for chunk in 1..=input.len() {
            assert_eq!(parse_all(input, chunk, 100), (want.clone(), None), "chunk {chunk}");
        }
    }

    #[test]
    fn a_block_over_the_value_limit_is_dropped_not_buffered() {
        let mut input = b"set big 0 0 300\r\n".to_vec();
        input.extend([b'z'; 300]);
        input.extend(b"\r\nget big\r\n");
        let want = vec![(b"set big 0 0 300".to_vec(), None, Some(300), false), line(b"get big")];
        for chunk in [1, 7, 64, 200, input.len()] {
            let mut parser = RequestParser::new(100);
            let mut buf = heapless::Vec::<u8, 64>::new();
            let mut got = Vec::new();
            for piece in input.chunks(chunk) {
                let mut at = 0;
                while at < piece.len() {
                    let (used, parsed) = parser.push(&piece[at..], &mut buf).expect("no error");
                    if let Parse::Complete(r) = parsed {
                        let too_large = if let Data::TooLarge(n) = r.data { Some(n) } else { None };
                        got.push((r.line.to_vec(), None, too_large, false));
                    }
                    assert!(buf.len() <= 40, "only the line is kept");
                    at += used;
                }
            }
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn broken_streams_fail() {
        let long = vec![b'g'; MAX_LINE_LEN + 1];
        let cases: &[(&[u8], McError)] =
            &[(b"set k 0 0 2\r\nabc\r\n", McError::BadDataChunk), (b"ms k 1\r\nx\rX", McError::BadDataChunk)];
        for (input, want) in cases {
            for chunk in 1..=input.len() {
                assert_eq!(parse_all(input, chunk, 100).1, Some(*want), "chunk {chunk}");
            }
        }
        let mut parser = RequestParser::new(100);
        let mut buf = std::boxed::Box::new(heapless::Vec::<u8, { MAX_LINE_LEN + 16 }>::new());
        let mut result = Ok((0, Parse::Partial));
        for piece in long.chunks(4096) {
            result = parser.push(piece, &mut *buf);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(McError::LineTooLong));
    }

    #[test]
    fn a_whole_request_is_borrowed_from_the_input() {
        let input = b"set k 0 0 1\r\nv\r\n";
        let mut parser = RequestParser::new(100);
        let mut buf = Buf::new();
        let (used, parsed) = parser.push(input, &mut buf).unwrap();
        let Parse::Complete(r) = parsed else { panic!("whole") };
        assert_eq!(used, input.len());
        assert!(core::ptr::eq(r.line.as_ptr(), input.as_ptr()));
        assert_eq!(r.tokens().collect::<Vec<_>>(), [&b"set"[..], b"k", b"0", b"0", b"1"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_split_length_token_is_read_across_the_split() {
        let key = [b'k'; 200];
        let mut input = b"set ".to_vec();
        input.extend(key);
        input.extend(b" 1 0 12\r\nhello world!\r\n");
        for chunk in 1..input.len() {
            let (got, error) = parse_all(&input, chunk, 100);
            assert_eq!(error, None);
            assert_eq!(got[0].1.as_deref(), Some(&b"hello world!"[..]), "chunk {chunk}");
        }
    }
}
