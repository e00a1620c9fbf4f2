//! RESP2 replies, written straight into an [`Output`]: simple strings
//! (`+OK`), errors (`-ERR ...`), integers (`:1`), bulk strings
//! (`$3\r\nabc`, or `$-1` for nil) and array headers (`*2`). Each function
//! appends one whole reply or nothing (`OutputFull`).

use crate::buffer::{Output, OutputFull};

use super::RespError;
pub(crate) use crate::decimal::Decimal;

const CRLF: &[u8; 2] = b"\r\n";

/// Appends the pieces as one reply: all of them, or nothing.
fn write(out: &mut (impl Output + ?Sized), pieces: &[&[u8]]) -> Result<(), OutputFull> {
    let len = pieces.iter().map(|p| p.len()).sum();
    let mut dst = out.append(len)?;
    for piece in pieces {
        let (head, tail) = dst.split_at_mut(piece.len());
        head.copy_from_slice(piece);
        dst = tail;
    }
    Ok(())
}

/// `+<text>\r\n` (the text must not hold `\r` or `\n`).
pub fn simple<O: Output + ?Sized>(out: &mut O, text: &[u8]) -> Result<(), OutputFull> {
    write(out, &[b"+", text, CRLF])
}

/// `+OK\r\n`.
pub fn ok<O: Output + ?Sized>(out: &mut O) -> Result<(), OutputFull> {
    write(out, &[b"+OK\r\n"])
}

/// `-<text>\r\n`: the text starts with the error's code (`ERR`,
/// `WRONGTYPE`, `NOPROTO`...). Pieces are joined (so a reply can quote a
/// command name without formatting into a buffer); none may hold `\r` or `\n`.
pub fn error<O: Output + ?Sized>(out: &mut O, pieces: &[&[u8]]) -> Result<(), OutputFull> {
    let len = 1 + pieces.iter().map(|p| p.len()).sum::<usize>() + 2;
    let mut dst = out.append(len)?;
    dst[0] = b'-';
    dst = &mut dst[1..];
    for piece in pieces {
        let (head, tail) = dst.split_at_mut(piece.len());
        for (d, &s) in head.iter_mut().zip(piece.iter()) {
            // A name quoted back must not break the line.
            *d = if s == b'\r' || s == b'\n' { b' ' } else { s };
        }
        dst = tail;
    }
    dst.copy_from_slice(CRLF);
    Ok(())
}

/// The error reply to a broken stream (Redis's words; the connection closes after it).
pub fn protocol_error<O: Output + ?Sized>(out: &mut O, e: RespError) -> Result<(), OutputFull> {
    match e {
        RespError::ExpectedBulk(got) => {
            let got = if got.is_ascii_graphic() || got == b' ' { [got] } else { [b'?'] };
            error(out, &[b"ERR Protocol error: expected '$', got '", &got, b"'"])
        }
        other => error(out, &[b"ERR ", other.as_str().as_bytes()]),
    }
}

/// `:<n>\r\n`.
pub fn integer<O: Output + ?Sized>(out: &mut O, n: i64) -> Result<(), OutputFull> {
    let digits = Decimal::new(n.unsigned_abs());
    let sign: &[u8] = if n < 0 { b"-" } else { b"" };
    write(out, &[b":", sign, digits.as_bytes(), CRLF])
}

/// `$<len>\r\n<bytes>\r\n`.
pub fn bulk<O: Output + ?Sized>(out: &mut O, bytes: &[u8]) -> Result<(), OutputFull> {
    let len = Decimal::new(bytes.len() as u64);
    write(out, &[b"$", len.as_bytes(), CRLF, bytes, CRLF])
}

/// `$-1\r\n`: nil.
pub fn nil<O: Output + ?Sized>(out: &mut O) -> Result<(), OutputFull> {
    write(out, &[b"$-1\r\n"])
}

/// `*<n>\r\n`: an array of `n` replies, which follow.
pub fn array<O: Output + ?Sized>(out: &mut O, n: usize) -> Result<(), OutputFull> {
    let len = Decimal::new(n as u64);
    write(out, &[b"*", len.as_bytes(), CRLF])
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn replies_are_byte_exact() {
        let mut out: heapless::Vec<u8, 256> = heapless::Vec::new();
        ok(&mut out).unwrap();
        simple(&mut out, b"PONG").unwrap();
        error(&mut out, &[b"ERR unknown command '", b"FO\r\nO", b"'"]).unwrap();
        integer(&mut out, -12).unwrap();
        integer(&mut out, 0).unwrap();
        bulk(&mut out, b"a\r\nb").unwrap();
        bulk(&mut out, b"").unwrap();
        nil(&mut out).unwrap();
        array(&mut out, 2).unwrap();
        protocol_error(&mut out, RespError::ExpectedBulk(b':')).unwrap();
        let want: &[u8] = b"+OK\r\n+PONG\r\n-ERR unknown command 'FO  O'\r\n:-12\r\n:0\r\n$4\r\na\r\nb\r\n$0\r\n\r\n$-1\r\n*2\r\n-ERR Protocol error: expected '$', got ':'\r\n";
        assert_eq!(&out[..], want);
        assert_eq!(Decimal::new(u64::MAX).as_bytes(), b"18446744073709551615");
    }

    #[test]
    fn a_reply_that_does_not_fit_leaves_nothing() {
        let mut out: heapless::Vec<u8, 8> = heapless::Vec::new();
        assert_eq!(bulk(&mut out, b"too long to fit"), Err(OutputFull));
        assert!(out.is_empty());
    }
}
