//! RESP2, the Redis serialization protocol: requests as multibulk arrays
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every Redis client sends) or
//! inline commands (`GET k\r\n`, what a person types into `telnet`), and
//! the replies ([`reply`]).
//!
//! [`RequestParser`] is a push parser like the kvio frame parser: fed
//! slices split at any byte, it yields the same [`Command`]s and the same
//! error. A command that arrives whole in one slice is borrowed from it and
//! checked in one pass; one that arrives in pieces is assembled in the
//! caller's [`PayloadBuffer`], each byte copied once and looked at once (the
//! lengths are parsed as their digits arrive, never re-scanned). A command
//! is bounded by `max_request_len` bytes (the server's frame limit): a
//! longer one, or a bulk length over it, is refused from its header, before
//! its body is buffered. Once failed, the parser stays failed: the byte
//! stream cannot be trusted (a Redis server closes such a connection too).
//!
//! The command table (what GET, SET... do) is [`handler`]'s.

use crate::buffer::PayloadBuffer;
use crate::protocol::{Parse, Parser};

pub mod handler;
pub mod reply;

pub use handler::{Info, NoInfo, RespHandler};

/// Longest inline command (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE_LEN: usize = 64 * 1024;
/// Most arguments of one multibulk command (Redis's own bound).
pub const MAX_ARGS: u64 = 1024 * 1024;
/// Longest `*<count>` or `$<length>` line: a sign and 20 digits.
const MAX_NUMBER_DIGITS: u8 = 20;

/// Why a RESP byte stream can no longer be parsed. The reply texts are
/// Redis's own where Redis has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RespError {
    /// `*<count>` is not a number, or is over [`MAX_ARGS`].
    InvalidMultibulkLength,
    /// `$<length>` is not a number, is negative, or is over the request limit.
    InvalidBulkLength,
    /// An argument of a multibulk does not start with `$` (the byte found).
    ExpectedBulk(u8),
    /// A `\r` not followed by `\n`, or a bulk not followed by `\r\n`.
    ExpectedCrlf,
    /// An inline command longer than [`MAX_INLINE_LEN`].
    TooBigInline,
    /// The command is longer than the request limit.
    TooBig,
}

impl RespError {
    /// The reason, as the `-ERR` reply says it (without the byte of
    /// [`RespError::ExpectedBulk`], which [`reply::protocol_error`] adds).
    pub const fn as_str(&self) -> &'static str {
        match self {
            RespError::InvalidMultibulkLength => "Protocol error: invalid multibulk length",
            RespError::InvalidBulkLength => "Protocol error: invalid bulk length",
            RespError::ExpectedBulk(_) => "Protocol error: expected '$'",
            RespError::ExpectedCrlf => "Protocol error: expected CRLF",
            RespError::TooBigInline => "Protocol error: too big inline request",
            RespError::TooBig => "Protocol error: request longer than the server's limit (--max-frame-len)",
        }
    }
}

impl core::fmt::Display for RespError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RespError::ExpectedBulk(got) => write!(f, "Protocol error: expected '$', got '{}'", char::from(*got)),
            other => f.write_str(other.as_str()),
        }
    }
}

impl core::error::Error for RespError {}

/// One whole command, borrowed from the input or the payload buffer.
/// Its arguments are read on demand from the bytes the parser checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    raw: &'a [u8],
    argc: usize,
    inline: bool,
}

impl<'a> Command<'a> {
    /// The bytes of the command as they came, the final `\r\n` included.
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// How many arguments, the command's name included.
    pub const fn argc(&self) -> usize {
        self.argc
    }

    /// The arguments in order, the command's name first.
    pub fn args(&self) -> Args<'a> {
        if self.inline {
            Args { rest: self.raw, left: self.argc, inline: true }
        } else {
            // Skip the `*<count>\r\n` line.
            let start = self.raw.iter().position(|&b| b == b'\n').map_or(self.raw.len(), |i| i + 1);
            Args { rest: &self.raw[start..], left: self.argc, inline: false }
        }
    }

    /// The first argument: the command's name (as sent; compare it ignoring case).
    pub fn name(&self) -> &'a [u8] {
        self.args().next().unwrap_or_default()
    }

    fn inline(raw: &'a [u8]) -> Command<'a> {
        let argc = Args { rest: raw, left: usize::MAX, inline: true }.count();
        Command { raw, argc, inline: true }
    }
}

/// The arguments of a [`Command`].
#[derive(Debug, Clone)]
pub struct Args<'a> {
    rest: &'a [u8],
    left: usize,
    inline: bool,
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        let arg = if self.inline { self.next_word() } else { self.next_bulk() };
        if arg.is_some() {
            self.left -= 1;
        } else {
            self.left = 0;
        }
        arg
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.inline { (0, Some(self.left)) } else { (self.left, Some(self.left)) }
    }
}

impl<'a> Args<'a> {
    /// `$<len>\r\n<bytes>\r\n`, checked by the parser already.
    fn next_bulk(&mut self) -> Option<&'a [u8]> {
        let digits_end = self.rest.iter().position(|&b| b == b'\r')?;
        let len = self.rest.get(1..digits_end)?.iter().try_fold(0usize, |n, &d| {
            d.is_ascii_digit().then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))?
        })?;
        let start = digits_end + 2;
        let arg = self.rest.get(start..start.checked_add(len)?)?;
        self.rest = self.rest.get(start + len + 2..).unwrap_or_default();
        Some(arg)
    }

    /// The next word of an inline line (separated by spaces and tabs).
    fn next_word(&mut self) -> Option<&'a [u8]> {
        let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        let start = self.rest.iter().position(|b| !is_space(b))?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(is_space).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// A number being read digit by digit: `*<count>` or `$<length>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Number {
    value: u64,
    digits: u8,
    negative: bool,
    /// The `\r` came; the `\n` must follow.
    cr: bool,
}

/// What one byte did to a [`Number`].
enum Digit {
    /// Read on.
    More,
    /// The line ended: the number is whole.
    Done,
    /// Not a number line.
    Bad,
}

impl Number {
    #[inline]
    fn take(&mut self, byte: u8) -> Result<Digit, RespError> {
        if self.cr {
            return if byte == b'\n' { Ok(Digit::Done) } else { Err(RespError::ExpectedCrlf) };
        }
        // As Redis's string2ll: no leading zero, no "-0".
        let leading_zero = self.digits == 1 && self.value == 0;
        match byte {
            b'\r' if self.digits > 0 && !(self.negative && self.value == 0) => self.cr = true,
            b'-' if self.digits == 0 && !self.negative => self.negative = true,
            b'0'..=b'9' if self.digits < MAX_NUMBER_DIGITS && !leading_zero => {
                self.value = self.value.saturating_mul(10).saturating_add(u64::from(byte - b'0'));
                self.digits += 1;
            }
            _ => return Ok(Digit::Bad),
        }
        Ok(Digit::More)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum State {
    /// Between commands.
    Start,
    /// An inline command: looking for its `\n`.
    Inline,
    /// `*` read: the argument count.
    Count(Number),
    /// An argument's `$<length>` line (`dollar`: the `$` was read).
    BulkHead { dollar: bool, len: Number, args_left: u64 },
    /// An argument's bytes and its `\r\n`: `left` of them still to come.
    Bulk { left: u64, args_left: u64 },
    /// The stream broke.
    Failed(RespError),
}

/// A push parser for RESP2 commands. See the [module docs](self).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestParser {
    max_request_len: usize,
    state: State,
    /// Bytes of the command being read, so far.
    have: usize,
    /// Its arguments (multibulk).
    argc: u64,
    /// Whether the first `have` bytes are in the caller's buffer.
    buffered: bool,
}

/// How a scan of one slice ended.
enum Scan {
    /// Every byte was taken; the command goes on.
    More,
    /// The command ended after this many bytes of the slice.
    Done(usize),
}

impl RequestParser {
    /// A parser refusing commands longer than `max_request_len` bytes.
    pub const fn new(max_request_len: usize) -> Self {
        RequestParser { max_request_len, state: State::Start, have: 0, argc: 0, buffered: false }
    }

    /// The longest command accepted.
    pub const fn max_request_len(&self) -> usize {
        self.max_request_len
    }

    fn fail(&mut self, error: RespError) -> RespError {
        debug!("resp protocol error: {}", error.as_str());
        self.state = State::Failed(error);
        error
    }

    fn reset(&mut self) {
        self.state = State::Start;
        self.have = 0;
        self.argc = 0;
        self.buffered = false;
    }

    /// Walks `input` from the current state, as far as the end of the
    /// command or of `input`; the state follows.
    fn scan(&mut self, input: &[u8], limit: usize) -> Result<Scan, RespError> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                State::Failed(e) => return Err(*e),
                State::Start => {
                    if input[i] == b'*' {
                        self.state = State::Count(Number::default());
                        i += 1;
                    } else {
                        self.state = State::Inline;
                    }
                }
                State::Inline => {
                    // Bounded by whichever is lower: Redis's inline bound, or the request limit.
                    let (bound, error) = if MAX_INLINE_LEN <= limit {
                        (MAX_INLINE_LEN, RespError::TooBigInline)
                    } else {
                        (limit, RespError::TooBig)
                    };
                    match input[i..].iter().position(|&b| b == b'\n') {
                        Some(at) if self.have + i + at < bound => return Ok(Scan::Done(i + at + 1)),
                        None if self.have + input.len() <= bound => i = input.len(),
                        _ => return Err(self.fail(error)),
                    }
                }
                State::Count(count) => {
                    match count.take(input[i]) {
                        Ok(Digit::More) => {}
                        Ok(Digit::Done) if count.negative || count.value == 0 => {
                            // `*0` and `*-1`: an empty command, which Redis skips.
                            self.argc = 0;
                            return Ok(Scan::Done(i + 1));
                        }
                        Ok(Digit::Done) if count.value <= MAX_ARGS => {
                            self.argc = count.value;
                            self.state =
                                State::BulkHead { dollar: false, len: Number::default(), args_left: count.value };
                        }
                        Ok(_) => return Err(self.fail(RespError::InvalidMultibulkLength)),
                        Err(e) => return Err(self.fail(e)),
                    }
                    i += 1;
                }
                State::BulkHead { dollar, len, args_left } => {
                    let byte = input[i];
                    if !*dollar {
                        if byte != b'$' {
                            return Err(self.fail(RespError::ExpectedBulk(byte)));
                        }
                        *dollar = true;
                    } else {
                        match len.take(byte) {
                            Ok(Digit::More) => {}
                            Ok(Digit::Done) if !len.negative && len.value <= self.max_request_len as u64 => {
                                let (left, args_left) = (len.value + 2, *args_left);
                                // Refused from its header when the rest cannot fit: nothing of it is buffered.
                                if (self.have + i + 1) as u64 + left > limit as u64 {
                                    return Err(self.fail(RespError::TooBig));
                                }
                                self.state = State::Bulk { left, args_left };
                            }
                            Ok(_) => return Err(self.fail(RespError::InvalidBulkLength)),
                            Err(e) => return Err(self.fail(e)),
                        }
                    }
                    i += 1;
                }
                State::Bulk { left, args_left } => {
                    if *left > 2 {
                        let take = (*left - 2).min((input.len() - i) as u64);
                        *left -= take;
                        i += take as usize;
                        continue;
                    }
                    let want = if *left == 2 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(self.fail(RespError::ExpectedCrlf));
                    }
                    i += 1;
                    *left -= 1;
                    if *left == 0 {
                        *args_left -= 1;
                        if *args_left == 0 {
                            return Ok(Scan::Done(i));
                        }
                        self.state = State::BulkHead { dollar: false, len: Number::default(), args_left: *args_left };
                    }
                }
            }
            if self.have + i > limit {
                return Err(self.fail(RespError::TooBig));
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok(Scan::More)
    }
}

impl Parser for RequestParser {
    type Request<'a> = Command<'a>;
    type Error = RespError;

    fn push<'a, B>(&mut self, input: &'a [u8], buf: &'a mut B) -> Result<(usize, Parse<Command<'a>>), RespError>
    where
        B: PayloadBuffer + ?Sized,
    {
        if input.is_empty() {
            return match self.state {
                State::Failed(e) => Err(e),
                _ => Ok((0, Parse::Partial)),
            };
        }
        let limit = self.max_request_len.min(buf.max_payload());
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            let scan = self.scan(rest, limit)?;
            let used = match scan {
                Scan::Done(used) => used,
                Scan::More => rest.len(),
            };
            if self.have + used > limit {
                return Err(self.fail(RespError::TooBig));
            }
            let whole_here = !self.buffered;
            if let (Scan::Done(_), true) = (&scan, whole_here) {
                // The whole command is in `input`: borrowed, not copied.
                let raw = &rest[..used];
                let (argc, inline) = (self.argc, self.state == State::Inline);
                self.reset();
                pos += used;
                let command = if inline { Command::inline(raw) } else { Command { raw, argc: argc as usize, inline } };
                if command.argc == 0 {
                    // An empty command (a blank line, `*0`): nothing to answer.
                    if pos == input.len() {
                        return Ok((pos, Parse::Partial));
                    }
                    continue;
                }
                return Ok((pos, Parse::Complete(command)));
            }
            // Assemble in the buffer: what came before, then these bytes.
            let before = self.have;
            self.have += used;
            self.buffered = true;
            pos += used;
            let Some(dst) = buf.payload(self.have) else {
                return Err(self.fail(RespError::TooBig));
            };
            dst[before..].copy_from_slice(&rest[..used]);
            if let Scan::More = scan {
                return Ok((pos, Parse::Partial));
            }
            let (argc, inline) = (self.argc, self.state == State::Inline);
            let argc = if inline { Command::inline(dst).argc } else { argc as usize };
            let len = self.have;
            self.reset();
            if argc != 0 {
                // Borrowed again for the caller's lifetime only on the way out.
                let raw: &'a [u8] = buf.payload(len).unwrap_or_default();
                return Ok((pos, Parse::Complete(Command { raw, argc, inline })));
            }
            if pos == input.len() {
                return Ok((pos, Parse::Partial));
            }
        }
    }

    fn error(&self) -> Option<RespError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn is_at_boundary(&self) -> bool {
        self.state == State::Start
    }

    fn buffered(&self) -> usize {
        if self.buffered { self.have } else { 0 }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The payload buffer of the tests (the crate's tests run without `alloc`).
    type Buf = heapless::Vec<u8, 2048>;

    fn parse_all(input: &[u8], chunk: usize, max: usize) -> (Vec<Vec<Vec<u8>>>, Option<RespError>) {
        let mut parser = RequestParser::new(max);
        let mut buf = Buf::new();
        let mut commands = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut at = 0;
            while at < piece.len() {
                match parser.push(&piece[at..], &mut buf) {
                    Ok((used, Parse::Complete(cmd))) => {
                        assert_eq!(cmd.args().count(), cmd.argc(), "argc matches the arguments");
                        commands.push(cmd.args().map(<[u8]>::to_vec).collect());
                        at += used;
                    }
                    Ok((used, Parse::Partial)) => {
                        assert_eq!(used, piece.len() - at, "partial takes all");
                        at += used;
                    }
                    Err(e) => {
                        assert_eq!(parser.push(b"*1\r\n$4\r\nPING\r\n", &mut buf), Err(e), "stays failed");
                        return (commands, Some(e));
                    }
                }
            }
        }
        (commands, None)
    }

    fn words(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_commands_however_split() {
        let input =
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET k v\r\n\r\n*0\r\n*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\nPING\n";
        let want = vec![
            words(&[b"GET", b"k"]),
            words(&[b"SET", b"k", b"v"]),
            words(&[b"SET", b"k\r\n", b""]),
            words(&[b"PING"]),
        ];
        for chunk in 1..=input.len() {
            assert_eq!(parse_all(input, chunk, 1024), (want.clone(), None), "chunk {chunk}");
        }
    }

    #[test]
    fn a_command_whole_in_one_slice_is_borrowed_not_copied() {
        let input = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI";
        let mut parser = RequestParser::new(1024);
        let mut buf = Buf::new();
        let (used, parsed) = parser.push(input, &mut buf).unwrap();
        let Parse::Complete(cmd) = parsed else { panic!("whole") };
        assert_eq!(used, 14);
        assert!(core::ptr::eq(cmd.raw().as_ptr(), input.as_ptr()), "borrowed from the input");
        assert!(buf.is_empty());
        assert_eq!(parser.push(&input[used..], &mut buf).unwrap(), (10, Parse::Partial));
        assert_eq!(parser.buffered(), 10);
        let (_, parsed) = parser.push(b"NG\r\n", &mut buf).unwrap();
        let Parse::Complete(cmd) = parsed else { panic!("whole") };
        assert_eq!(cmd.name(), b"PING");
        assert!(parser.is_at_boundary());
        assert_eq!(parser.buffered(), 0);
    }

    #[test]
    fn broken_streams_fail_with_redis_reasons() {
        let cases: &[(&[u8], RespError)] = &[
            (b"*x\r\n", RespError::InvalidMultibulkLength),
            (b"*2000000\r\n", RespError::InvalidMultibulkLength),
            (b"*1\r\n$-1\r\n", RespError::InvalidBulkLength),
            (b"*1\r\n$-0\r\n", RespError::InvalidBulkLength),
            (b"*1\r\n$01\r\n", RespError::InvalidBulkLength),
            (b"*01\r\n", RespError::InvalidMultibulkLength),
            (b"*1\r\n$abc\r\n", RespError::InvalidBulkLength),
            (b"*1\r\n$2000\r\n", RespError::InvalidBulkLength),
            (b"*1\r\n:3\r\n", RespError::ExpectedBulk(b':')),
            (b"*1\r\n$1\r\nab\r\n", RespError::ExpectedCrlf),
            (b"*1\rX", RespError::ExpectedCrlf),
            (b"*2\r\n$990\r\n", RespError::TooBig),
        ];
        for (input, want) in cases {
            for chunk in 1..=input.len() {
                let (commands, error) = parse_all(input, chunk, 1000);
                assert!(commands.is_empty());
                assert_eq!(error, Some(*want), "{:?} in chunks of {chunk}", core::str::from_utf8(input));
            }
        }
    }

    #[test]
    fn an_oversized_bulk_is_refused_from_its_header() {
        let mut parser = RequestParser::new(100);
        let mut buf = Buf::new();
        assert_eq!(parser.push(b"*1\r\n$101\r\n", &mut buf), Err(RespError::InvalidBulkLength));
        assert!(buf.is_empty(), "nothing of the body was buffered");
    }

    #[test]
    fn an_inline_line_is_bounded() {
        let mut parser = RequestParser::new(1 << 20);
        let mut buf = std::boxed::Box::new(heapless::Vec::<u8, { MAX_INLINE_LEN + 2048 }>::new());
        let line = [b'a'; 1024];
        let mut result = Ok((0, Parse::Partial));
        for _ in 0..=MAX_INLINE_LEN / line.len() {
            result = parser.push(&line, &mut *buf);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(RespError::TooBigInline));
        assert!(buf.len() <= MAX_INLINE_LEN);
    }

    #[test]
    fn a_fixed_buffer_bounds_what_is_assembled() {
        let mut parser = RequestParser::new(1 << 20);
        let mut buf = [0u8; 16];
        assert_eq!(parser.push(b"*1\r\n$20\r\n0123", &mut buf[..]), Err(RespError::TooBig));
    }
}
