//! Redis's wire protocol (RESP2) as the load generator needs it: `SET` and
//! `GET` encoded as arrays of bulk strings, and the replies they get
//! (`+OK`, `$<len>` bulk strings, `$-1` for a miss, `-ERR ...`) decoded
//! from a byte stream that may hold part of a reply or several.

use std::io::Write as _;

use crate::reply::{Decoded, Reply, WireError, data, length, line};

/// Appends `SET key value`.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    bulk(out, key);
    bulk(out, value);
}

/// Appends `GET key`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    bulk(out, key);
}

fn bulk(out: &mut Vec<u8>, s: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "${}\r\n", s.len());
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

/// Decodes the first reply in `buf` (see [`Decoded`]). Arrays are refused:
/// neither `SET` nor `GET` answers with one.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some((head, used)) = line(buf)? else { return Ok(None) };
    let Some((&kind, rest)) = head.split_first() else { return Err(WireError::Unexpected(b'\r')) };
    let reply = match kind {
        b'+' if rest == b"OK" => Reply::Stored,
        b'+' | b':' => Reply::Other(head),
        b'-' => Reply::Error(head),
        b'$' if rest == b"-1" => Reply::Miss,
        b'$' => {
            let len = length(rest)?;
            let Some((value, more)) = data(&buf[used..], len)? else { return Ok(None) };
            return Ok(Some((Reply::Value { key: None, value }, used + more)));
        }
        other => return Err(WireError::Unexpected(other)),
    };
    Ok(Some((reply, used)))
}
