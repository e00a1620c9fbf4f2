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

/// Why a request did not get the answer it wanted. Each error names the
/// server's address where it has one.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answered at `addr` (refused, unreachable, or timed out connecting).
    Connect {
        /// The address as given.
        addr: String,
        /// What the last address tried said.
        error: io::Error,
        /// The connect timeout.
        after: Duration,
    },
    /// No answer came from `addr` within `after`.
    Timeout {
        /// The address as given.
        addr: String,
        /// The read or write timeout.
        after: Duration,
    },
    /// Reading or writing failed for another reason.
    Io {
        /// The address as given.
        addr: String,
        /// What the socket said.
        error: io::Error,
    },
    /// The server closed the connection before answering.
    Closed,
    /// The response's framing is broken.
    Framing(FrameError),
    /// The response payload is not a `KeyValueMessage`.
    Decode(prost::DecodeError),
    /// The server answered with an error frame (`kind` 0) and this reason.
    Server(String),
    /// The server refused the put (`status` NotOk), with the reason it gave
    /// in the response's `value` (empty if it gave none).
    Refused(String),
    /// The response does not answer the request (wrong kind or key).
    Unexpected(KeyValueMessage),
}

/// `5 s`, `0.5 s`.
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { addr, error, after } if timed_out(error) => {
                write!(f, "timed out after {} connecting to {addr}", seconds(*after))
            }
            ClientError::Connect { addr, error, .. } => write!(f, "cannot connect to {addr}: {error}"),
            ClientError::Timeout { addr, after } => write!(f, "timed out after {} waiting for {addr}", seconds(*after)),
            ClientError::Io { addr, error } => write!(f, "connection to {addr}: {error}"),
            ClientError::Closed => f.write_str("connection closed by the server before it answered"),
            ClientError::Framing(e) => write!(f, "bad response frame: {e}"),
            ClientError::Decode(e) => write!(f, "bad response payload: {e}"),
            ClientError::Server(reason) => write!(f, "server error: {reason}"),
            ClientError::Refused(reason) if reason.is_empty() => f.write_str("refused by the server (no reason given)"),
            ClientError::Refused(reason) => write!(f, "refused by the server: {reason}"),
            ClientError::Unexpected(m) => write!(f, "unexpected response: {m:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A socket timeout: EAGAIN on a blocking socket with SO_RCVTIMEO, or ETIMEDOUT.
fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// One connection to a kvio server.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// The address as the caller gave it, for error messages.
    addr: String,
    timeout: Duration,
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
    pub fn connect<A: ToSocketAddrs + fmt::Display>(addr: A, timeout: Duration) -> Result<Client, ClientError> {
        let name = addr.to_string();
        let connect_error = |error| ClientError::Connect { addr: name.clone(), error, after: timeout };
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the name resolves to no address");
        for resolved in addr.to_socket_addrs().map_err(connect_error)? {
            match Self::connect_one(resolved, timeout) {
                Ok(stream) => return Ok(Client::from_stream(stream, name, timeout)),
                Err(e) => last = e,
            }
        }
        Err(connect_error(last))
    }

    fn connect_one(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn from_stream(stream: TcpStream, addr: String, timeout: Duration) -> Client {
        Client {
            stream,
            addr,
            timeout,
            parser: FrameParser::new(MAX_RESPONSE_LEN),
            read: vec![0u8; 16 * 1024].into_boxed_slice(),
            pos: 0,
            filled: 0,
            payload: Vec::new(),
        }
    }

    /// A socket error, named after the server, a timeout said as one.
    fn io_error(&self, error: io::Error) -> ClientError {
        if timed_out(&error) {
            ClientError::Timeout { addr: self.addr.clone(), after: self.timeout }
        } else {
            ClientError::Io { addr: self.addr.clone(), error }
        }
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        let response = self.request(&message(Kind::PutOrUpdate, key, value))?;
        match (Kind::from(response.kind), response.status) {
            (Kind::PutOrUpdate, s) if s == Status::Ok as i32 => Ok(()),
            (Kind::PutOrUpdate, _) => Err(ClientError::Refused(response.value)),
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

    /// Deletes `key`: true when it was there, false when it was not (or
    /// the server predates `Delete`, which it answers as an unknown kind:
    /// docs/protocol.md, "Delete and older servers").
    pub fn delete(&mut self, key: &str) -> Result<bool, ClientError> {
        let response = self.request(&message(Kind::Delete, key, ""))?;
        match Kind::from(response.kind) {
            Kind::Delete => Ok(response.status == Status::Ok as i32),
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
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(|e| self.io_error(e))
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
            let n = self.stream.read(&mut self.read).map_err(|e| self.io_error(e))?;
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
