//! The `resp_parser` target: the RESP push parser, fed a stream in
//! arbitrary chunks with a growable or a fixed payload buffer, must agree
//! with [`model`], a plain whole-stream reading of RESP2 written apart from
//! the parser (index arithmetic over the whole stream, no state machine).
//!
//! Checked: the same commands (argument by argument) and the same error;
//! `Partial` consumes everything; a command whole in one push is borrowed
//! from the input; the bytes held never exceed the request limit or the
//! buffer's room; after an error the parser stays failed.

use kvio_core::PayloadBuffer;
use kvio_core::protocol::{Parse, Parser};
use kvio_core::resp::{MAX_ARGS, MAX_INLINE_LEN, RequestParser, RespError};

use crate::frames::Inspect;
use crate::input::{Chunks, Cursor};

/// What a correct parser makes of a whole stream: the commands, then the error if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub commands: Vec<Vec<Vec<u8>>>,
    pub error: Option<RespError>,
}

/// A `*`/`$` number line whose sign or first digit is at `at`: its value
/// and the index after its `\r\n`, or the error and the index of the byte
/// that reveals it; `None`: the stream ends first.
fn number(stream: &[u8], at: usize, bad: RespError) -> Option<Result<(i128, usize), (RespError, usize)>> {
    let mut i = at;
    let negative = stream.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_start = i;
    while stream.get(i)?.is_ascii_digit() {
        // At most 20 digits, and no leading zero (Redis's string2ll).
        if i - digits_start == 20 || (i - digits_start == 1 && stream[digits_start] == b'0') {
            return Some(Err((bad, i)));
        }
        i += 1;
    }
    let minus_zero = negative && &stream[digits_start..i] == b"0";
    if stream[i] != b'\r' || i == digits_start || minus_zero {
        return Some(Err((bad, i)));
    }
    if *stream.get(i + 1)? != b'\n' {
        return Some(Err((RespError::ExpectedCrlf, i + 1)));
    }
    let value: i128 = std::str::from_utf8(&stream[digits_start..i]).unwrap().parse().unwrap();
    Some(Ok((if negative { -value } else { value }, i + 2)))
}

/// One command from `start`: its arguments and end, the error and the
/// byte revealing it, or `None` if the stream ends first (the limit aside).
enum One {
    Command(Vec<Vec<u8>>, usize),
    Error(RespError, usize),
    Incomplete,
}

fn one(stream: &[u8], start: usize, max_request_len: usize, limit: usize) -> One {
    if stream[start] != b'*' {
        let (bound, error) =
            if MAX_INLINE_LEN <= limit { (MAX_INLINE_LEN, RespError::TooBigInline) } else { (limit, RespError::TooBig) };
        return match stream[start..].iter().position(|&b| b == b'\n') {
            Some(at) if at < bound => {
                let words = stream[start..=start + at]
                    .split(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .filter(|w| !w.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                One::Command(words, start + at + 1)
            }
            // The byte that passes the bound reveals it.
            _ if stream.len() - start > bound => One::Error(error, start + bound),
            _ => One::Incomplete,
        };
    }
    let (count, mut at) = match number(stream, start + 1, RespError::InvalidMultibulkLength) {
        None => return One::Incomplete,
        Some(Err((e, i))) => return One::Error(e, i),
        Some(Ok(n)) => n,
    };
    if count > MAX_ARGS as i128 {
        return One::Error(RespError::InvalidMultibulkLength, at - 1);
    }
    let mut args = Vec::new();
    for _ in 0..count.max(0) {
        match stream.get(at) {
            None => return One::Incomplete,
            Some(b'$') => {}
            Some(&other) => return One::Error(RespError::ExpectedBulk(other), at),
        }
        let (len, body) = match number(stream, at + 1, RespError::InvalidBulkLength) {
            None => return One::Incomplete,
            Some(Err((e, i))) => return One::Error(e, i),
            Some(Ok(n)) => n,
        };
        if len < 0 || len > max_request_len as i128 {
            return One::Error(RespError::InvalidBulkLength, body - 1);
        }
        let len = len as usize;
        if body + len + 2 - start > limit {
            // Refused from its header.
            return One::Error(RespError::TooBig, body - 1);
        }
        for (k, want) in [(0, b'\r'), (1, b'\n')] {
            match stream.get(body + len + k) {
                None => return One::Incomplete,
                Some(&b) if b != want => return One::Error(RespError::ExpectedCrlf, body + len + k),
                Some(_) => {}
            }
        }
        args.push(stream[body..body + len].to_vec());
        at = body + len + 2;
    }
    One::Command(args, at)
}

/// Reads `stream` as RESP2 commands of at most `limit` bytes each.
pub fn model(stream: &[u8], max_request_len: usize, limit: usize) -> Model {
    let mut m = Model { commands: Vec::new(), error: None };
    let mut pos = 0;
    while pos < stream.len() {
        // The byte that makes the command longer than the limit, if the stream has it.
        let crossing = pos + limit;
        match one(stream, pos, max_request_len, limit) {
            One::Command(_, end) | One::Error(_, end) if crossing < end.min(stream.len()) => {
                m.error = Some(RespError::TooBig);
                break;
            }
            One::Incomplete if crossing < stream.len() => {
                m.error = Some(RespError::TooBig);
                break;
            }
            One::Command(args, end) => {
                if !args.is_empty() {
                    m.commands.push(args);
                }
                pos = end;
            }
            One::Error(e, _) => {
                m.error = Some(e);
                break;
            }
            One::Incomplete => break,
        }
    }
    m
}

/// The target: `[max_request_len: u16][buffer kind: u8][room: u16][n: u8][n+1 chunk sizes][stream...]`.
pub fn check(data: &[u8]) {
    let mut c = Cursor::new(data);
    let max_request_len = usize::from(c.u16());
    let kind = c.u8();
    let room = usize::from(c.u16());
    let n = usize::from(c.u8() % 16) + 1;
    let sizes = c.bytes(n);
    let stream = c.rest();
    for chunks in [Chunks::new(sizes), Chunks::whole()] {
        if kind.is_multiple_of(2) {
            run(stream, max_request_len, chunks, &mut Vec::new(), usize::MAX);
        } else {
            let room = room % (max_request_len + 1);
            run(stream, max_request_len, chunks, &mut vec![0; room][..], room);
        }
    }
}

fn run<B: Inspect + PayloadBuffer + ?Sized>(stream: &[u8], max: usize, mut chunks: Chunks, buf: &mut B, room: usize) {
    let limit = max.min(room);
    let model = model(stream, max, limit);
    let mut parser = RequestParser::new(max);
    let mut commands = 0;
    let mut chunk_start = 0;
    loop {
        let chunk_end = chunks.next_end(chunk_start, stream.len());
        let mut pos = chunk_start;
        while pos < chunk_end || (pos == chunk_end && chunk_start == chunk_end) {
            let input = &stream[pos..chunk_end];
            let input_addr = input.as_ptr() as usize;
            match parser.push(input, buf) {
                Ok((used, Parse::Complete(cmd))) => {
                    let want = model.commands.get(commands).expect("a command the model does not see");
                    let got: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
                    assert_eq!(&got, want, "command {commands}");
                    assert_eq!(cmd.argc(), got.len());
                    let (addr, len) = (cmd.raw().as_ptr() as usize, cmd.raw().len());
                    assert!(len <= limit);
                    if addr >= input_addr && addr < input_addr + input.len().max(1) {
                        // Borrowed from the input: it lies within the bytes consumed.
                        assert!(addr + len <= input_addr + used);
                    } else {
                        assert!(buf.holds(addr, len), "command {commands} from the input or the buffer");
                    }
                    assert!(parser.is_at_boundary());
                    commands += 1;
                    pos += used;
                }
                Ok((used, Parse::Partial)) => {
                    assert_eq!(used, input.len(), "Partial consumes everything");
                    break;
                }
                Err(e) => {
                    assert_eq!(Some(e), model.error, "error after {commands} commands");
                    assert_eq!(commands, model.commands.len(), "every command before the error");
                    assert_eq!(parser.error(), Some(e));
                    for more in [&[][..], b"PING\r\n", b"*1\r\n$4\r\nPING\r\n"] {
                        assert_eq!(parser.push(more, buf), Err(e), "stays failed");
                    }
                    return;
                }
            }
            assert!(parser.buffered() <= limit);
            assert!(buf.footprint() <= limit, "payload buffer grown past the request limit");
        }
        chunk_start = chunk_end;
        if chunk_start == stream.len() {
            break;
        }
    }
    assert_eq!(model.error, None, "the parser missed an error");
    assert_eq!(commands, model.commands.len());
}
