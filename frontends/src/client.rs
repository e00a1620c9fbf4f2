//! A small blocking client (std::net): connect with a timeout, put, get,
//! send raw bytes, read one response frame with the core's parser. Used by
//! `kvio put` / `kvio get`, and handy in tests.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use kvio_core::frame::{FrameError, FrameParser, Parse, encode_frame};
use kvio_proto::{KeyValueMessage, Kind, Status};
use prost::Message;

/// Default connect, read and write timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest response frame the client accepts (`len` field): 64 MiB.
pub const MAX_RESPONSE_LEN: u32 = 64 << 20;

/// Why a request did not get the answer it wanted.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, reading or writing failed (timeouts included).
    Io(io::Error),
    /// The server closed the connection before answering.
    Closed,
    /// The response's framing is broken.
    Framing(FrameError),
    /// The response payload is not a `KeyValueMessage`.
    Decode(prost::DecodeError),
    /// The server answered with an error frame (`kind` 0) and this reason.
    Server(String),
    /// The server refused the request (`status` NotOk).
    Refused,
    /// The response does not answer the request (wrong kind or key).
    Unexpected(KeyValueMessage),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Closed => f.write_str("connection closed by the server"),
            ClientError::Framing(e) => write!(f, "bad response frame: {e}"),
            ClientError::Decode(e) => write!(f, "bad response payload: {e}"),
            ClientError::Server(reason) => write!(f, "server error: {reason}"),
            ClientError::Refused => f.write_str("refused by the server (NotOk)"),
            ClientError::Unexpected(m) => write!(f, "unexpected response: {m:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// One connection to a kvio server.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    parser: FrameParser,
    /// Bytes read and not yet parsed are `read[pos..filled]`.
    read: Box<[u8]>,
    pos: usize,
    filled: usize,
    payload: Vec<u8>,
}

impl Client {
    /// Connects to the first address of `addr` that answers within `timeout`,
    /// which also bounds every later read and write.
    pub fn connect(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Client> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
        for addr in addr.to_socket_addrs()? {
            match Self::connect_one(addr, timeout) {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn connect_one(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            parser: FrameParser::new(MAX_RESPONSE_LEN),
            read: vec![0u8; 16 * 1024].into_boxed_slice(),
            pos: 0,
            filled: 0,
            payload: Vec::new(),
        })
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        let response = self.request(&message(Kind::PutOrUpdate, key, value))?;
        match (Kind::from(response.kind), response.status) {
            (Kind::PutOrUpdate, s) if s == Status::Ok as i32 => Ok(()),
            (Kind::PutOrUpdate, _) => Err(ClientError::Refused),
            _ => Err(ClientError::Unexpected(response)),
        }
    }

    /// The value under `key`, `None` if there is none.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        let response = self.request(&message(Kind::Get, key, ""))?;
        match Kind::from(response.kind) {
            Kind::GetResponse if response.key != key => Err(ClientError::Unexpected(response)),
            Kind::GetResponse if response.status == Status::Ok as i32 => Ok(Some(response.value)),
            Kind::GetResponse => Ok(None),
            _ => Err(ClientError::Unexpected(response)),
        }
    }

    /// Sends `request` and reads its response (an error frame becomes [`ClientError::Server`]).
    pub fn request(&mut self, request: &KeyValueMessage) -> Result<KeyValueMessage, ClientError> {
        let mut frame = Vec::new();
        // Cannot fail: a Vec output grows.
        let _ = encode_frame(&request.encode_to_vec(), &mut frame);
        self.send_raw(&frame)?;
        let response = self.read_response()?;
        if Kind::from(response.kind) == Kind::Error {
            return Err(ClientError::Server(response.value));
        }
        Ok(response)
    }

    /// Writes `bytes` as they are (pipelined requests, broken frames...).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads and decodes one response.
    pub fn read_response(&mut self) -> Result<KeyValueMessage, ClientError> {
        let payload = self.read_frame()?;
        KeyValueMessage::decode(payload.as_slice()).map_err(ClientError::Decode)
    }

    /// Reads one response frame and returns its payload.
    pub fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if self.pos < self.filled {
                let (used, status) = self
                    .parser
                    .push(&self.read[self.pos..self.filled], &mut self.payload)
                    .map_err(ClientError::Framing)?;
                self.pos += used;
                if let Parse::Complete(payload) = status {
                    return Ok(payload.to_vec());
                }
            }
            // Partial consumed everything: refill from the start.
            let n = self.stream.read(&mut self.read)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            (self.pos, self.filled) = (0, n);
        }
    }

    /// The socket (to shut down a side, or set other timeouts).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

fn message(kind: Kind, key: &str, value: &str) -> KeyValueMessage {
    KeyValueMessage { key: key.into(), value: value.into(), kind: kind.into(), status: Status::Ok as i32 }
}
