//! memcached's text protocol as the load generator needs it: `set` (flags
//! 0, no expiry) and single-key `get`, and their replies (`STORED`,
//! `VALUE <key> <flags> <bytes>` + data + `END`, a bare `END` for a miss,
//! `ERROR` / `CLIENT_ERROR` / `SERVER_ERROR`) decoded from a byte stream
//! that may hold part of a reply or several.
//!
//! Keys go on the command line as they are: the caller's keys must be
//! 1..=250 bytes with no space or control character (the bench's
//! `c<conn>k<n>` are).

use std::io::Write as _;

use crate::reply::{Decoded, Reply, WireError, data, length, line};

/// Appends `set key 0 0 <len>` and the value.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key);
    // Writing to a Vec cannot fail.
    let _ = write!(out, " 0 0 {}\r\n", value.len());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `get key`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"get ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

/// Decodes the first reply in `buf` (see [`Decoded`]). A `VALUE` reply is
/// whole only with its `END`; a second `VALUE` before it is refused (the
/// bench asks for one key per `get`).
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some((head, used)) = line(buf)? else { return Ok(None) };
    let reply = match head {
        b"STORED" => Reply::Stored,
        b"END" => Reply::Miss,
        _ if head.starts_with(b"VALUE ") => return value(head, buf, used),
        _ if head == b"ERROR" || head.starts_with(b"CLIENT_ERROR") || head.starts_with(b"SERVER_ERROR") => {
            Reply::Error(head)
        }
        _ if !head.is_empty() && head.iter().all(|b| b.is_ascii_uppercase() || *b == b'_') => Reply::Other(head),
        _ => return Err(WireError::Unexpected(head.first().copied().unwrap_or(b'\r'))),
    };
    Ok(Some((reply, used)))
}

/// `VALUE <key> <flags> <bytes> [<cas>]`, the data, `END`.
fn value<'a>(head: &'a [u8], buf: &'a [u8], used: usize) -> Decoded<'a> {
    let mut fields = head.split(|&b| b == b' ').skip(1);
    let (Some(key), Some(_flags), Some(bytes)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(WireError::BadValueLine);
    };
    if key.is_empty() || fields.nth(1).is_some() {
        return Err(WireError::BadValueLine);
    }
    let len = length(bytes)?;
    let Some((value, more)) = data(&buf[used..], len)? else { return Ok(None) };
    let used = used + more;
    match line(&buf[used..])? {
        None => Ok(None),
        Some((b"END", end)) => Ok(Some((Reply::Value { key: Some(key), value }, used + end))),
        Some(_) => Err(WireError::MissingEnd),
    }
}
