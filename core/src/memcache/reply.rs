//! memcached replies, written straight into an [`Output`]: lines
//! (`STORED`, `END`, `HD c5 f0`), and values with their data block
//! (`VALUE k 0 3`, `VA 3 f0`). Each function appends one whole reply or
//! nothing (`OutputFull`).

use crate::buffer::{Output, OutputFull};

/// Appends the pieces as one reply: all of them, or nothing.
pub fn pieces<O: Output + ?Sized>(out: &mut O, pieces: &[&[u8]]) -> Result<(), OutputFull> {
    let len = pieces.iter().map(|p| p.len()).sum();
    let mut dst = out.append(len)?;
    for piece in pieces {
        let (head, tail) = dst.split_at_mut(piece.len());
        head.copy_from_slice(piece);
        dst = tail;
    }
    Ok(())
}

/// `<text>\r\n`.
pub fn line<O: Output + ?Sized>(out: &mut O, text: &[u8]) -> Result<(), OutputFull> {
    pieces(out, &[text, b"\r\n"])
}

/// `CLIENT_ERROR <reason>\r\n`.
pub fn client_error<O: Output + ?Sized>(out: &mut O, reason: &[u8]) -> Result<(), OutputFull> {
    pieces(out, &[b"CLIENT_ERROR ", reason, b"\r\n"])
}

/// `SERVER_ERROR <reason>\r\n`.
pub fn server_error<O: Output + ?Sized>(out: &mut O, reason: &[u8]) -> Result<(), OutputFull> {
    pieces(out, &[b"SERVER_ERROR ", reason, b"\r\n"])
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn replies_are_whole_or_absent() {
        let mut out: heapless::Vec<u8, 48> = heapless::Vec::new();
        line(&mut out, b"STORED").unwrap();
        client_error(&mut out, b"bad data chunk").unwrap();
        assert_eq!(&out[..], b"STORED\r\nCLIENT_ERROR bad data chunk\r\n");
        assert_eq!(server_error(&mut out, b"object too large for cache"), Err(OutputFull));
        assert_eq!(out.len(), 37, "nothing of the reply that did not fit");
    }
}
