//! The soak's side of the wire: frames built with the core's encoder, a
//! connection that reads response frames with the core's parser, and a
//! small seeded random generator. Every socket made here has read and
//! write timeouts, so no soak thread can block without bound.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use kvio_core::FrameParser;
use kvio_core::frame::{Parse, encode_frame};
use kvio_proto::KeyValueMessage;
use prost::Message;

pub const GET: u32 = 1;
pub const GET_RESPONSE: u32 = 2;
pub const PUT: u32 = 3;
pub const DELETE: u32 = 4;
pub const OK: i32 = 0;
pub const NOT_OK: i32 = 1;

/// The reason of the answer to a payload that is not a `KeyValueMessage` (docs/protocol.md).
pub const MALFORMED: &str = "payload is not a valid KeyValueMessage";
/// The reason of the error frame sent to a connection closed by `--max-client-memory`.
pub const CLIENT_MEMORY: &str = "client memory limit reached";

/// A frame around `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    encode_frame(payload, &mut out).expect("a Vec grows");
    out
}

pub fn msg(kind: u32, key: &str, value: &str) -> KeyValueMessage {
    KeyValueMessage { key: key.to_owned(), value: value.to_owned(), kind, status: OK }
}

pub fn msg_frame(m: &KeyValueMessage) -> Vec<u8> {
    frame(&m.encode_to_vec())
}

pub fn get_frame(key: &str) -> Vec<u8> {
    msg_frame(&msg(GET, key, ""))
}

pub fn put_frame(key: &str, value: &str) -> Vec<u8> {
    msg_frame(&msg(PUT, key, value))
}

/// What reading one response gave.
#[derive(Debug)]
pub enum Reply {
    Msg(KeyValueMessage),
    /// The server closed (FIN or reset) before a whole frame came.
    Closed,
    /// Nothing whole within the socket's read timeout.
    TimedOut,
    /// The server sent something that is not a frame of a `KeyValueMessage`.
    Violation(String),
}

/// A client connection: bytes out, response frames in.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    parser: FrameParser,
    payload: Vec<u8>,
    input: Vec<u8>,
    at: usize,
}

impl Conn {
    /// Connects within `timeout`; reads and writes then time out after `timeout` too.
    pub fn connect(addr: SocketAddr, timeout: Duration, max_frame_len: u32) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, parser: FrameParser::new(max_frame_len), payload: Vec::new(), input: Vec::new(), at: 0 })
    }

    pub fn set_timeouts(&self, read: Duration, write: Duration) {
        let _ = self.stream.set_read_timeout(Some(read));
        let _ = self.stream.set_write_timeout(Some(write));
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes as much of `bytes` as the socket takes before its write
    /// timeout; returns how much that was.
    pub fn send_some(&mut self, bytes: &[u8]) -> usize {
        let mut sent = 0;
        while sent < bytes.len() {
            match self.stream.write(&bytes[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        sent
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Closes with SO_LINGER 0: the kernel sends a reset, not a FIN.
    pub fn reset(self) {
        let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(Duration::ZERO));
        drop(self);
    }

    /// The next response, decoded.
    pub fn read_reply(&mut self) -> Reply {
        loop {
            if self.at < self.input.len() {
                let (consumed, status) = match self.parser.push(&self.input[self.at..], &mut self.payload) {
                    Ok(pushed) => pushed,
                    Err(e) => return Reply::Violation(format!("bad response frame: {e}")),
                };
                let decoded = match status {
                    Parse::Complete(payload) => Some(KeyValueMessage::decode(payload)),
                    Parse::Partial => None,
                };
                self.at += consumed;
                match decoded {
                    Some(Ok(m)) => return Reply::Msg(m),
                    Some(Err(e)) => return Reply::Violation(format!("response is not a KeyValueMessage: {e}")),
                    None => {}
                }
            }
            self.input.clear();
            self.at = 0;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Reply::Closed,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Reply::TimedOut,
                Err(_) => return Reply::Closed,
            }
        }
    }

    /// Reads and drops up to `limit` bytes; returns how many came, and
    /// whether the server closed.
    pub fn read_raw(&mut self, limit: usize) -> (usize, bool) {
        let mut chunk = [0u8; 64 * 1024];
        let mut got = 0;
        while got < limit {
            let want = chunk.len().min(limit - got);
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return (got, true),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (got, false),
                Err(_) => return (got, true),
            }
        }
        (got, false)
    }
}

/// xorshift64*: reproducible from `--seed`, good enough to pick actions.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams and 0 is fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    pub fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below((hi_inclusive - lo + 1) as u64) as usize
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let r = self.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rng_stays_in_range_and_repeats_from_a_seed() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next(), b.next());
            let r = a.range(3, 5);
            assert!((3..=5).contains(&r));
            assert!(a.below(10) < 10);
            b.range(3, 5);
            b.below(10);
        }
        assert_ne!(Rng::new(7).next(), Rng::new(8).next());
    }

    #[test]
    fn a_frame_counts_payload_and_footer() {
        let f = frame(b"abc");
        assert_eq!(&f[..4], &8u32.to_le_bytes());
        assert_eq!(&f[4..7], b"abc");
        assert_eq!(&f[7..], b"@EOF@");
    }
}
