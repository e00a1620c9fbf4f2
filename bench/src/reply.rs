//! What the peers' text protocols ([`crate::resp`], [`crate::memcache`])
//! decode into: one reply to one request, borrowed from the read buffer,
//! and why a byte stream could not be decoded. The load generator checks a
//! [`Reply`] the way it checks a kvio frame ([`crate::wire::Checker`]).

/// Longest header line accepted before its `\r\n`: the replies we ask for
/// have lines of a few dozen bytes, so a longer one is a broken stream, not
/// a reason to buffer without bound.
pub const MAX_LINE: usize = 1024;

/// Longest value accepted (memcached's default item limit is 1 MiB, Redis
/// strings go to 512 MiB; the bench never puts more than a few KiB).
pub const MAX_VALUE: usize = 64 << 20;

/// One decoded reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The put was stored (RESP `+OK`, memcached `STORED`).
    Stored,
    /// A get found no value (RESP `$-1`, memcached a bare `END`).
    Miss,
    /// A get found this value; memcached also names the key.
    Value {
        /// The key the server says this is (memcached's `VALUE` line).
        key: Option<&'a [u8]>,
        /// The value's bytes.
        value: &'a [u8],
    },
    /// The server refused the request (RESP `-ERR ...`, memcached
    /// `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`): the line.
    Error(&'a [u8]),
    /// A well-formed reply that answers neither a get nor a set (RESP `+QUEUED`,
    /// `:1`; memcached `NOT_STORED`, ...): the line.
    Other(&'a [u8]),
}

impl core::fmt::Display for Reply<'_> {
    /// As a person reads it: the server's own line, values cut at 80 bytes.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
        match self {
            Reply::Stored => f.write_str("stored"),
            Reply::Miss => f.write_str("a miss"),
            Reply::Value { key: Some(k), value } => write!(f, "value of {:?}: {:?}", text(k), text(value)),
            Reply::Value { key: None, value } => write!(f, "value {:?}", text(value)),
            Reply::Error(line) | Reply::Other(line) => write!(f, "{:?}", text(line)),
        }
    }
}

/// Why the bytes received are not a reply: the stream cannot be resynced,
/// so the connection is given up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// No `\r\n` within [`MAX_LINE`] bytes.
    LineTooLong,
    /// A length that is not a number, or over [`MAX_VALUE`].
    BadLength,
    /// Data not followed by `\r\n`.
    MissingCrlf,
    /// A reply of a type the bench never asks for, or garbage: the first byte.
    Unexpected(u8),
    /// memcached: a `VALUE` line with the wrong number of fields.
    BadValueLine,
    /// memcached: a `VALUE` block not closed by `END` (the bench asks for
    /// one key per get).
    MissingEnd,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::LineTooLong => write!(f, "no \\r\\n within {MAX_LINE} bytes"),
            WireError::BadLength => write!(f, "bad length (not a number, or over {MAX_VALUE})"),
            WireError::MissingCrlf => f.write_str("data not followed by \\r\\n"),
            WireError::Unexpected(b) => write!(f, "unexpected reply starting with byte {b:#04x}"),
            WireError::BadValueLine => f.write_str("malformed VALUE line"),
            WireError::MissingEnd => f.write_str("VALUE block not closed by END"),
        }
    }
}

impl std::error::Error for WireError {}

/// What a decoder returns: a reply and the bytes it took, `None` when `buf`
/// does not hold a whole reply yet (read more and call again with the
/// bytes appended), or why the stream is broken.
pub type Decoded<'a> = Result<Option<(Reply<'a>, usize)>, WireError>;

/// The first line of `buf` without its `\r\n`, and the bytes it took;
/// `None` if the line is not complete yet.
pub(crate) fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    match buf.iter().take(MAX_LINE + 2).position(|&b| b == b'\n') {
        Some(nl) if nl > 0 && buf[nl - 1] == b'\r' => Ok(Some((&buf[..nl - 1], nl + 1))),
        Some(_) => Err(WireError::MissingCrlf),
        None if buf.len() > MAX_LINE + 1 => Err(WireError::LineTooLong),
        None => Ok(None),
    }
}

/// A decimal length, at most [`MAX_VALUE`].
pub(crate) fn length(digits: &[u8]) -> Result<usize, WireError> {
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(WireError::BadLength);
    }
    let n = digits.iter().fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
    if n > MAX_VALUE { Err(WireError::BadLength) } else { Ok(n) }
}

/// `len` bytes of data followed by `\r\n` at the start of `buf`: the data,
/// and the bytes taken; `None` if not all there yet.
pub(crate) fn data(buf: &[u8], len: usize) -> Result<Option<(&[u8], usize)>, WireError> {
    if buf.len() < len + 2 {
        return Ok(None);
    }
    if &buf[len..len + 2] != b"\r\n" {
        return Err(WireError::MissingCrlf);
    }
    Ok(Some((&buf[..len], len + 2)))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lines_lengths_and_data() {
        assert_eq!(line(b"+OK\r\nrest"), Ok(Some((&b"+OK"[..], 5))));
        assert_eq!(line(b"+OK\r"), Ok(None));
        assert_eq!(line(b"+OK\n"), Err(WireError::MissingCrlf));
        assert_eq!(line(&[b'x'; MAX_LINE + 1]), Ok(None));
        assert_eq!(line(&[b'x'; MAX_LINE + 2]), Err(WireError::LineTooLong));
        assert_eq!(length(b"16384"), Ok(16384));
        for bad in [&b""[..], b"-1", b"1x", b"99999999999"] {
            assert_eq!(length(bad), Err(WireError::BadLength), "{bad:?}");
        }
        assert_eq!(data(b"abc\r\nEND", 3), Ok(Some((&b"abc"[..], 5))));
        assert_eq!(data(b"abc\r", 3), Ok(None));
        assert_eq!(data(b"abcd\r\n", 3), Err(WireError::MissingCrlf));
    }
}
