//! The peers' wire code against byte fixtures: RESP (Redis) and the
//! memcached text protocol, encoded byte for byte as each server's
//! documentation spells its commands, and decoded from whole, partial
//! (cut at every byte) and pipelined replies, and from broken streams.

use kvio_bench::reply::{Decoded, MAX_LINE, Reply, WireError};
use kvio_bench::{memcache, resp};

/// Every reply in `stream`, decoded the way the load generator does it: the
/// bytes arrive `chunk` at a time into a buffer, and each decoded reply is
/// taken off its front. Returns the replies (owned) and the final error.
fn decode_all(decode: fn(&[u8]) -> Decoded<'_>, stream: &[u8], chunk: usize) -> (Vec<String>, Option<WireError>) {
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            match decode(&buf[pos..]) {
                Ok(Some((reply, used))) => {
                    assert!(used > 0 && pos + used <= buf.len(), "{used} of {}", buf.len() - pos);
                    out.push(show(&reply));
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        buf.drain(..pos);
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    (out, None)
}

fn show(r: &Reply<'_>) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match r {
        Reply::Stored => "stored".into(),
        Reply::Miss => "miss".into(),
        Reply::Value { key: Some(k), value } => format!("value {}={}", s(k), s(value)),
        Reply::Value { key: None, value } => format!("value {}", s(value)),
        Reply::Error(l) => format!("error {}", s(l)),
        Reply::Other(l) => format!("other {}", s(l)),
    }
}

/// The same replies whatever the read sizes: all at once, a byte at a
/// time, and every size between.
fn assert_stream(decode: fn(&[u8]) -> Decoded<'_>, stream: &[u8], want: &[&str]) {
    for chunk in 1..=stream.len() {
        let (got, err) = decode_all(decode, stream, chunk);
        assert_eq!(err, None, "chunk {chunk}");
        assert_eq!(got, want, "chunk {chunk}");
    }
}

#[test]
fn resp_encodes_set_and_get_as_arrays_of_bulk_strings() {
    let mut out = Vec::new();
    resp::encode_set(&mut out, b"c1k2", b"hello");
    resp::encode_get(&mut out, b"c1k2");
    resp::encode_set(&mut out, b"k", b"");
    assert_eq!(
        out,
        b"*3\r\n$3\r\nSET\r\n$4\r\nc1k2\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$4\r\nc1k2\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    );
}

#[test]
fn resp_decodes_pipelined_replies_cut_anywhere() {
    let stream = b"+OK\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n-ERR wrong number of arguments\r\n:1\r\n$7\r\nwith\r\nx\r\n";
    let want = [
        "stored",
        "value hello",
        "miss",
        "value ",
        "error -ERR wrong number of arguments",
        "other :1",
        "value with\r\nx",
    ];
    assert_stream(resp::decode, stream, &want);
}

#[test]
fn resp_refuses_broken_streams() {
    let cases: [(&[u8], WireError); 6] = [
        (b"*1\r\n$2\r\nOK\r\n", WireError::Unexpected(b'*')),
        (b"?\r\n", WireError::Unexpected(b'?')),
        (b"$5\r\nhelloXY", WireError::MissingCrlf),
        (b"$x\r\n", WireError::BadLength),
        (b"$999999999\r\n", WireError::BadLength),
        (b"+OK\n", WireError::MissingCrlf),
    ];
    for (bytes, want) in cases {
        assert_eq!(resp::decode(bytes), Err(want.clone()), "{:?}", String::from_utf8_lossy(bytes));
    }
    // A line that never ends is refused once it is too long to be a reply,
    // so a hostile server cannot make the client buffer without bound.
    let mut endless = b"+".to_vec();
    endless.resize(MAX_LINE + 1, b'a');
    assert_eq!(resp::decode(&endless), Ok(None));
    endless.push(b'a');
    assert_eq!(resp::decode(&endless), Err(WireError::LineTooLong));
}

#[test]
fn memcache_encodes_set_and_get_as_text_commands() {
    let mut out = Vec::new();
    memcache::encode_set(&mut out, b"c1k2", b"hello");
    memcache::encode_get(&mut out, b"c1k2");
    assert_eq!(out, b"set c1k2 0 0 5\r\nhello\r\nget c1k2\r\n");
}

#[test]
fn memcache_decodes_pipelined_replies_cut_anywhere() {
    let stream = b"STORED\r\nVALUE c1k2 0 5\r\nhello\r\nEND\r\nEND\r\nVALUE k 7 2 99\r\n\r\n\r\nEND\r\n\
                   NOT_STORED\r\nSERVER_ERROR out of memory storing object\r\nERROR\r\nCLIENT_ERROR bad data chunk\r\n";
    let want = [
        "stored",
        "value c1k2=hello",
        "miss",
        "value k=\r\n",
        "other NOT_STORED",
        "error SERVER_ERROR out of memory storing object",
        "error ERROR",
        "error CLIENT_ERROR bad data chunk",
    ];
    assert_stream(memcache::decode, stream, &want);
}

#[test]
fn memcache_refuses_broken_streams() {
    let cases: [(&[u8], WireError); 7] = [
        (b"VALUE k 0\r\n", WireError::BadValueLine),
        (b"VALUE k 0 5 1 extra\r\n", WireError::BadValueLine),
        (b"VALUE k 0 x\r\n", WireError::BadLength),
        (b"VALUE k 0 5\r\nhelloXY", WireError::MissingCrlf),
        (b"VALUE k 0 1\r\na\r\nVALUE j 0 1\r\nb\r\nEND\r\n", WireError::MissingEnd),
        (b"stored\r\n", WireError::Unexpected(b's')),
        (b"\r\n", WireError::Unexpected(b'\r')),
    ];
    for (bytes, want) in cases {
        assert_eq!(memcache::decode(bytes), Err(want.clone()), "{:?}", String::from_utf8_lossy(bytes));
    }
    // A VALUE is not whole until its END has arrived.
    assert_eq!(memcache::decode(b"VALUE k 0 1\r\na\r\nEN"), Ok(None));
}
