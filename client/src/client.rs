//! [`Client`]: one blocking connection to a kvio server, and [`Pipeline`]:
//! many requests written at once, their answers read in order.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use kvio_core::frame::{FrameParser, Parse};
use kvio_proto::{Kind, MessageView, Status, encode_request};

use crate::error::{Error, shorten, timed_out};

/// The connect, read and write timeout the `kvio` command uses: 5 s.
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// use kvio_client::{Client, DEFAULT_TIMEOUT};
///
/// let mut client = Client::connect(server.addr(), DEFAULT_TIMEOUT)?;
/// assert_eq!(client.get("k")?, None);
/// # Ok(())
/// # }
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest response frame the client accepts (its `len` field): 64 MiB,
/// well over any kvio server's maximum frame. A longer `len` is a
/// [`Error::BadFrame`], refused from its 4 header bytes.
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
/// use kvio_client::{Error, MAX_RESPONSE_LEN};
///
/// assert_eq!(MAX_RESPONSE_LEN, 64 << 20);
/// # // A value the server stores is always far below it.
/// client.put("k", &"v".repeat(100_000))?;
/// assert_eq!(client.get("k")?.map(|v| v.len()), Some(100_000));
/// # Ok(())
/// # }
/// ```
pub const MAX_RESPONSE_LEN: u32 = 64 << 20;

/// Request bytes a pipeline writes before it reads the answers to them.
/// Small enough for the kernel's socket buffers to hold while a server
/// holds back (it stops reading a client that does not read its answers),
/// so a long pipeline can never deadlock; large enough to fill a round trip.
const WINDOW: usize = 64 * 1024;

/// One connection to a kvio server. Requests are answered in order; each
/// call waits for its answer (or use a [`Pipeline`]).
///
/// An answer is never matched to the wrong request: after a timeout, a
/// reset, a close or a bad frame (any error but a refusal, see
/// [`Error::is_refusal`]) the client drops the connection, since a late
/// answer may still be on its way, and the next call connects again to the
/// same address (resolved again), as redis-rs's `ConnectionManager` does.
/// The failed request is not retried: a put that timed out may or may not
/// have been stored.
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// # let addr = server.addr().to_string();
/// use std::time::Duration;
/// use kvio_client::Client;
///
/// let mut client = Client::connect(addr.as_str(), Duration::from_secs(5))?;
/// client.put("DiskType", "NVMe SSD")?;
/// assert_eq!(client.get("DiskType")?.as_deref(), Some("NVMe SSD"));
/// assert_eq!(client.get("absent")?, None);
/// # Ok(())
/// # }
/// ```
pub struct Client {
    /// `None` after an error that may have left answers in flight: the next
    /// request connects again.
    stream: Option<Conn>,
    /// The address as the caller gave it, for errors.
    addr: String,
    /// The secret and TLS, for every connection made.
    options: Options,
    timeout: Duration,
    /// Longest request frame (`len`) sent; see [`Client::set_max_frame_len`].
    max_frame_len: u32,
    parser: FrameParser,
    /// Bytes read and not yet parsed are `read[pos..filled]`.
    read: Box<[u8]>,
    pos: usize,
    filled: usize,
    /// A payload that arrived in several reads is assembled here.
    payload: Vec<u8>,
    /// The requests of the pipeline being built (kept for their capacity).
    queue: Queue,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("addr", &self.addr).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// A response as it came, for callers that send their own bytes with
/// [`Client::send_raw`] (tests of servers, mostly).
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
/// // A request of kind 7, which kvio answers with that kind and NotOk.
/// client.send_raw(&[7, 0, 0, 0, 0x18, 0x07, b'@', b'E', b'O', b'F', b'@'])?;
/// let response = client.read_response()?;
/// assert_eq!(response, kvio_client::Response { kind: 7, status: 1, ..Default::default() });
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// Field 1, the key.
    pub key: String,
    /// Field 2, the value (in error responses, the reason).
    pub value: String,
    /// Field 3, the kind (see [`kvio_proto::Kind`]).
    pub kind: u32,
    /// Field 4, the status as its wire number (0 Ok, 1 NotOk).
    pub status: i32,
}

/// The answer to one request of a [`Pipeline`].
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
/// use kvio_client::Reply;
///
/// let replies = client.pipeline().put("k", "v").get("k").get("other").run()?;
/// for reply in &replies {
///     match reply {
///         Reply::Stored => println!("stored"),
///         Reply::Refused(reason) => println!("refused: {reason}"),
///         Reply::Found(value) => println!("found {value}"),
///         Reply::NotFound => println!("not found"),
///         _ => println!("a reply of a newer request kind"),
///     }
/// }
/// assert_eq!(replies, [Reply::Stored, Reply::Found("v".into()), Reply::NotFound]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// A put: stored.
    Stored,
    /// A put: refused, nothing stored, with the server's reason (see
    /// [`Error::Refused`]).
    Refused(String),
    /// A get: the key's value.
    Found(String),
    /// A get: the key has no value. A delete: the key was not there (an
    /// older server without `Delete` answers a delete this way too).
    NotFound,
    /// A delete: the key was there and is gone.
    Deleted,
}

impl Reply {
    /// The variant's name, for errors (a `Found` may hold a megabyte).
    fn name(&self) -> &'static str {
        match self {
            Reply::Stored => "Stored",
            Reply::Refused(_) => "Refused",
            Reply::Found(_) => "Found",
            Reply::NotFound => "NotFound",
            Reply::Deleted => "Deleted",
        }
    }
}

impl Client {
    /// Connects to the first address of `addr` that answers within
    /// `timeout`, which also bounds every later read and write.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// use std::time::Duration;
    /// use kvio_client::Client;
    ///
    /// // Anything `ToSocketAddrs` takes: "localhost:7878", a SocketAddr...
    /// let client = Client::connect(server.addr(), Duration::from_secs(5))?;
    /// assert_eq!(client.addr(), server.addr().to_string());
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect<A: ToSocketAddrs + fmt::Display>(addr: A, timeout: Duration) -> Result<Client, Error> {
        Client::connect_with(addr, timeout, Options::default())
    }

    /// [`connect`](Self::connect), then what `options` say: TLS (with the
    /// `tls` feature), and the server's shared secret shown first. Every
    /// connection made again after an error does the same.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// use std::time::Duration;
    /// use kvio_client::{Client, Options};
    ///
    /// // Against `kvio serve --auth-file FILE`, the secret from the same file:
    /// // Options::default().secret(std::fs::read_to_string(FILE)?.trim())
    /// let options = Options::default();
    /// let mut client = Client::connect_with(server.addr(), Duration::from_secs(5), options)?;
    /// client.put("k", "v")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_with<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        timeout: Duration,
        options: Options,
    ) -> Result<Client, Error> {
        let name = addr.to_string();
        let stream = options.open(connect_to(&addr, &name, timeout)?, &name)?;
        let mut client = Client::from_stream(stream, name, timeout, options);
        let authenticated = client.authenticate();
        client.checked(authenticated)?;
        Ok(client)
    }

    fn from_stream(stream: Conn, addr: String, timeout: Duration, options: Options) -> Client {
        Client {
            stream: Some(stream),
            addr,
            options,
            timeout,
            max_frame_len: kvio_core::DEFAULT_MAX_FRAME_LEN,
            parser: FrameParser::new(MAX_RESPONSE_LEN),
            read: vec![0u8; 16 * 1024].into_boxed_slice(),
            pos: 0,
            filled: 0,
            payload: Vec::new(),
            queue: Queue::default(),
        }
    }

    /// The server's address as it was given to [`connect`](Self::connect).
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let addr = server.addr().to_string();
    /// let client = kvio_client::Client::connect(addr.as_str(), std::time::Duration::from_secs(5))?;
    /// assert_eq!(client.addr(), addr);
    /// # Ok(())
    /// # }
    /// ```
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the client holds a connection: false after an error that
    /// dropped it (see [`Client`]), until the next call connects again.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// // A broken frame: the server answers with an error frame and closes.
    /// client.send_raw(&[0, 0, 0, 0])?;
    /// client.read_response()?;
    /// assert!(client.read_response().is_err());
    /// assert!(!client.is_connected(), "dropped after the error");
    /// assert_eq!(client.get("k")?, None, "the next call connects again");
    /// assert!(client.is_connected());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// The longest request frame the client sends (its `len` field: the
    /// payload and the 5-byte footer): a kvio server's `--max-frame-len`,
    /// which the protocol does not carry, so the client assumes the
    /// default, 1 MiB. A request over it is [`Error::TooLong`], refused
    /// before a byte is sent; a server with a larger `--max-frame-len`
    /// takes longer ones once the client is told. A server with a smaller
    /// one refuses what is over its own limit with an error frame
    /// ([`Error::Server`]), which the client reads even when the server
    /// resets the connection before the request was all written.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// use kvio_client::Error;
    ///
    /// assert_eq!(client.max_frame_len(), 1 << 20);
    /// let big = "v".repeat(2 << 20);
    /// assert!(matches!(client.put("k", &big), Err(Error::TooLong { .. })), "not sent");
    /// assert!(client.is_connected(), "nothing was sent: the connection is kept");
    /// // For a server started with `kvio serve --max-frame-len 4MiB`:
    /// client.set_max_frame_len(4 << 20);
    /// assert_eq!(client.max_frame_len(), 4 << 20);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Sets [`max_frame_len`](Self::max_frame_len): the server's `--max-frame-len`.
    pub fn set_max_frame_len(&mut self, max_frame_len: u32) {
        self.max_frame_len = max_frame_len;
    }

    /// Stores `value` under `key`. A refusal is [`Error::Refused`] with the
    /// server's reason; the connection stays usable.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// client.put("colour", "blue")?;
    /// client.put("colour", "green")?; // replaces
    /// assert_eq!(client.get("colour")?.as_deref(), Some("green"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), Error> {
        match self.pipeline().put(key, value).one()? {
            Reply::Stored => Ok(()),
            Reply::Refused(reason) => Err(Error::Refused { addr: self.addr.clone(), key: key.to_owned(), reason }),
            other => Err(self.out_of_step(format!("{} to a put", other.name()))),
        }
    }

    /// The value under `key`, `None` if there is none.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// assert_eq!(client.get("never put")?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.pipeline().get(key).one()? {
            Reply::Found(value) => Ok(Some(value)),
            Reply::NotFound => Ok(None),
            other => Err(self.out_of_step(format!("{} to a get", other.name()))),
        }
    }

    /// Deletes `key`: `true` when it was there and is gone, `false` when it
    /// was not there (or the server predates `Delete`, which it answers as
    /// an unknown kind: docs/protocol.md, "Delete and older servers").
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// client.put("colour", "blue")?;
    /// assert!(client.delete("colour")?);
    /// assert!(!client.delete("colour")?, "already gone");
    /// assert_eq!(client.get("colour")?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&mut self, key: &str) -> Result<bool, Error> {
        match self.pipeline().delete(key).one()? {
            Reply::Deleted => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(self.out_of_step(format!("{} to a delete", other.name()))),
        }
    }

    /// A new, empty pipeline on this connection: queue requests, then
    /// [`run`](Pipeline::run) them all and read their answers in order.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// use kvio_client::Reply;
    ///
    /// let mut pipeline = client.pipeline();
    /// for i in 0..1000 {
    ///     pipeline.put(&format!("key{i}"), &format!("value{i}"));
    /// }
    /// pipeline.get("key7").get("nope");
    /// let replies = pipeline.run()?;
    /// assert_eq!(replies.len(), 1002);
    /// assert!(replies[..1000].iter().all(|r| *r == Reply::Stored));
    /// assert_eq!(replies[1000..], [Reply::Found("value7".into()), Reply::NotFound]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipeline(&mut self) -> Pipeline<'_> {
        self.queue.clear();
        Pipeline { client: self }
    }

    /// Writes `bytes` as they are: hand-made frames, broken ones, several
    /// at once. Read what comes back with [`read_response`](Self::read_response).
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// // len 0 is below the 5 footer bytes: a framing error, then the server closes.
    /// client.send_raw(&[0, 0, 0, 0])?;
    /// let response = client.read_response()?;
    /// assert_eq!((response.kind, response.status, response.value.as_str()), (0, 1, "frame length below 5"));
    /// assert!(matches!(client.read_response(), Err(kvio_client::Error::Closed { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let sent = self.write(bytes);
        self.checked(sent)
    }

    /// Writes `bytes`, connecting first if the connection was dropped.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let written = self.stream_mut()?.write_all(bytes);
        written.map_err(|e| self.io_error(e))
    }

    /// Reads the next response, whatever it is (see [`send_raw`](Self::send_raw)).
    /// After an error that dropped the connection, [`Error::Closed`]: the
    /// answers it was to carry are gone.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// // Two requests in one write (the golden put and get frames), two responses.
    /// let put = b"\x1b\0\0\0\x0a\x08DiskType\x12\x08NVMe SSD\x18\x03@EOF@";
    /// let get = b"\x11\0\0\0\x0a\x08DiskType\x18\x01@EOF@";
    /// client.send_raw(&[&put[..], &get[..]].concat())?;
    /// assert_eq!(client.read_response()?.kind, 3);
    /// assert_eq!(client.read_response()?.value, "NVMe SSD");
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_response(&mut self) -> Result<Response, Error> {
        let response = self.next_response(|m| Response {
            key: m.key.to_owned(),
            value: m.value.to_owned(),
            kind: m.kind,
            status: m.status,
        });
        self.checked(response)
    }

    /// The socket, to shut down a side or change its timeouts; `None`
    /// while the connection is dropped (see [`is_connected`](Self::is_connected)).
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// assert!(client.stream().is_some_and(|s| s.peer_addr().is_ok()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(&self) -> Option<&TcpStream> {
        self.stream.as_ref().map(Conn::socket)
    }

    /// The connection, made again (with TLS and the secret, if asked) if
    /// an error dropped it.
    fn stream_mut(&mut self) -> Result<&mut Conn, Error> {
        if self.stream.is_none() {
            let socket = connect_to(self.addr.as_str(), &self.addr, self.timeout)?;
            self.stream = Some(self.options.open(socket, &self.addr)?);
            let authenticated = self.authenticate();
            self.checked(authenticated)?;
        }
        Ok(self.stream.as_mut().expect("connected just now"))
    }

    /// Shows the secret, if there is one: the server answers `Auth` `Ok`,
    /// or the connection is of no use.
    fn authenticate(&mut self) -> Result<(), Error> {
        let Some(secret) = self.options.secret.clone() else { return Ok(()) };
        let mut frame = Vec::new();
        // A Vec output grows: this cannot fail.
        let _ = encode_request(&mut frame, b"", secret.as_bytes(), Kind::Auth);
        let Some(stream) = self.stream.as_mut() else { return Err(Error::Closed { addr: self.addr.clone() }) };
        stream.write_all(&frame).map_err(|e| io_error(&self.addr, self.timeout, e))?;
        let answer = self.next_response(|m| match (Kind::from(m.kind), m.status == Status::Ok as i32) {
            (Kind::Auth, true) => Ok(()),
            // A server with no secret (or older than Auth) answers as to an unknown kind.
            (Kind::Auth, false) if m.value.is_empty() => {
                Err("it asks for no secret (or predates authentication): connect without one".to_owned())
            }
            (Kind::Auth, false) => Err(format!("{}; check the secret", m.value)),
            (kind, _) => Err(format!("a response of kind {kind:?} to the secret")),
        })?;
        answer.map_err(|reason| Error::Auth { addr: self.addr.clone(), reason })
    }

    /// The one rule for keeping a connection: `result` passes through, and
    /// an error other than a refusal drops the connection (with what was
    /// read of it), so that no answer still in flight is ever read as the
    /// answer to a later request. [`ShardedClient`](crate::ShardedClient)'s
    /// connections are `Client`s: the same rule.
    fn checked<R>(&mut self, result: Result<R, Error>) -> Result<R, Error> {
        if let Err(e) = &result
            && !e.is_refusal()
        {
            self.stream = None;
            self.parser = FrameParser::new(MAX_RESPONSE_LEN);
            (self.pos, self.filled) = (0, 0);
            self.payload.clear();
        }
        result
    }

    /// Writes the queue's requests and reads their answers, [`WINDOW`]
    /// bytes of requests at a time.
    fn run_queue(&mut self) -> Result<Vec<Reply>, Error> {
        let queue = std::mem::take(&mut self.queue);
        let result = self.exchange(&queue);
        // Keep the buffers' capacity for the next pipeline.
        self.queue = queue;
        self.queue.clear();
        self.checked(result)
    }

    fn exchange(&mut self, queue: &Queue) -> Result<Vec<Reply>, Error> {
        // Refused whole before a byte is written: a server would answer a
        // frame over its limit with an error and close the connection.
        if let Some(op) = queue.ops.iter().find(|op| op.frame_len() > u64::from(self.max_frame_len)) {
            let key = queue.keys[op.key.clone()].to_owned();
            return Err(Error::TooLong { addr: self.addr.clone(), key, len: op.frame_len(), max: self.max_frame_len });
        }
        let mut replies = Vec::with_capacity(queue.ops.len());
        let mut first = 0;
        while first < queue.ops.len() {
            let start = queue.ops[first].end - queue.ops[first].len;
            // Whole requests up to WINDOW bytes, at least one.
            let mut last = first + 1;
            while last < queue.ops.len() && queue.ops[last].end - start <= WINDOW {
                last += 1;
            }
            let sent = self.write(&queue.requests[start..queue.ops[last - 1].end]);
            // A server that refuses a request (a frame over its limit) may
            // answer, then reset the connection before the client has
            // written it all: its answer is read before the reset is
            // reported. After a timeout there is nothing to wait for.
            if let Err(e) = &sent
                && !was_reset(e)
            {
                return Err(sent.unwrap_err());
            }
            for op in &queue.ops[first..last] {
                let key = &queue.keys[op.key.clone()];
                let reply = match self.next_response(|m| answer(op.kind, key, m)) {
                    Ok(reply) => reply,
                    Err(read) => return Err(sent.err().unwrap_or(read)),
                };
                replies.push(
                    reply
                        .map_err(|what| self.unexpected(what))?
                        .map_err(|reason| Error::Server { addr: self.addr.clone(), reason })?,
                );
            }
            sent?;
            first = last;
        }
        Ok(replies)
    }

    /// Reads one response frame and hands its decoded payload to `f`.
    fn next_response<R>(&mut self, f: impl FnOnce(MessageView<'_>) -> R) -> Result<R, Error> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Error::Closed { addr: self.addr.clone() });
        };
        loop {
            if self.pos < self.filled {
                let (used, status) = self
                    .parser
                    .push(&self.read[self.pos..self.filled], &mut self.payload)
                    .map_err(|error| Error::BadFrame { addr: self.addr.clone(), error })?;
                self.pos += used;
                if let Parse::Complete(payload) = status {
                    let view = MessageView::decode(payload)
                        .map_err(|error| Error::BadPayload { addr: self.addr.clone(), error })?;
                    return Ok(f(view));
                }
            }
            // The parser took everything it was given: refill from the start.
            let n = loop {
                match stream.read(&mut self.read) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error(&self.addr, self.timeout, e)),
                    Ok(n) => break n,
                }
            };
            if n == 0 {
                return Err(Error::Closed { addr: self.addr.clone() });
            }
            (self.pos, self.filled) = (0, n);
        }
    }

    /// A socket error, named after the server; a timeout said as one.
    fn io_error(&self, source: io::Error) -> Error {
        io_error(&self.addr, self.timeout, source)
    }

    fn unexpected(&self, what: String) -> Error {
        Error::Unexpected { addr: self.addr.clone(), what }
    }

    /// [`unexpected`](Self::unexpected), with the connection dropped.
    fn out_of_step(&mut self, what: String) -> Error {
        let e = self.unexpected(what);
        self.checked::<()>(Err(e)).unwrap_err()
    }
}

/// A socket error, named after the server at `addr`; a timeout said as one.
fn io_error(addr: &str, timeout: Duration, source: io::Error) -> Error {
    if timed_out(&source) {
        Error::Timeout { addr: addr.to_owned(), after: timeout }
    } else {
        Error::Io { addr: addr.to_owned(), source }
    }
}

/// A write that failed because the server reset or closed the connection
/// (as opposed to a timeout): its answer may already be in the socket.
fn was_reset(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if matches!(
        source.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    ))
}

/// How [`Client::connect_with`] reaches a server beyond its address: the
/// server's shared secret (`kvio serve --auth-file`), and TLS (feature
/// `tls`). The secret is never printed (`Debug` hides it).
#[derive(Clone, Default)]
pub struct Options {
    secret: Option<Arc<str>>,
    #[cfg(feature = "tls")]
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Options");
        d.field("secret", &self.secret.as_ref().map(|_| ".."));
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.as_ref().map(|(_, name)| name));
        d.finish()
    }
}

impl Options {
    /// Show `secret` first on every connection (kind 5, `Auth`).
    pub fn secret(mut self, secret: impl Into<String>) -> Options {
        self.secret = Some(Arc::from(secret.into()));
        self
    }

    /// Speak TLS with `config`, checking that the server's certificate is
    /// for `server_name` (a DNS name, or an IP address as a string).
    #[cfg(feature = "tls")]
    pub fn tls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Options {
        self.tls = Some((config, server_name));
        self
    }

    /// `socket`, with TLS if asked (the handshake done here, so that a
    /// certificate the client refuses is said at once).
    fn open(&self, socket: TcpStream, addr: &str) -> Result<Conn, Error> {
        #[cfg(feature = "tls")]
        if let Some((config, name)) = &self.tls {
            let mut conn = rustls::ClientConnection::new(config.clone(), name.clone())
                .map_err(|e| Error::Tls { addr: addr.to_owned(), source: io::Error::other(e) })?;
            let mut socket = socket;
            while conn.is_handshaking() {
                conn.complete_io(&mut socket).map_err(|source| Error::Tls { addr: addr.to_owned(), source })?;
            }
            return Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, socket))));
        }
        let _ = addr;
        Ok(Conn::Plain(socket))
    }
}

/// One connection: a socket, or TLS over one.
enum Conn {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Connects to the first address of `addr` that answers within `timeout`.
fn connect_to<A: ToSocketAddrs + ?Sized>(addr: &A, name: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let connect_error = |source| Error::Connect { addr: name.to_owned(), source, timeout };
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the name resolves to no address");
    for resolved in addr.to_socket_addrs().map_err(connect_error)? {
        match connect_one(resolved, timeout) {
            Ok(stream) => return Ok(stream),
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

/// The reply that `m` makes to a request of `kind` for `key`: `Err` if it
/// answers another request, `Ok(Err(reason))` for an error frame.
fn answer(kind: Kind, key: &str, m: MessageView<'_>) -> Result<Result<Reply, String>, String> {
    let ok = m.status == Status::Ok as i32;
    match (kind, Kind::from(m.kind)) {
        (_, Kind::Error) => Ok(Err(m.value.to_owned())),
        (Kind::PutOrUpdate, Kind::PutOrUpdate) if ok => Ok(Ok(Reply::Stored)),
        (Kind::PutOrUpdate, Kind::PutOrUpdate) => Ok(Ok(Reply::Refused(m.value.to_owned()))),
        (Kind::Get, Kind::GetResponse) if m.key != key => {
            Err(format!("the answer to a get of {} is for the key {}", shorten(key), shorten(m.key)))
        }
        (Kind::Get, Kind::GetResponse) if ok => Ok(Ok(Reply::Found(m.value.to_owned()))),
        (Kind::Get, Kind::GetResponse) => Ok(Ok(Reply::NotFound)),
        // The answer to a delete carries no key (docs/protocol.md).
        (Kind::Delete, Kind::Delete) if ok => Ok(Ok(Reply::Deleted)),
        (Kind::Delete, Kind::Delete) => Ok(Ok(Reply::NotFound)),
        (asked, got) => Err(format!("a response of kind {got:?} (status {}) to a {asked:?}", m.status)),
    }
}

/// Requests queued and not yet sent: their frames back to back, and for
/// each its kind, where its frame ends and where its key is in `keys`.
#[derive(Debug, Default)]
struct Queue {
    requests: Vec<u8>,
    keys: String,
    ops: Vec<Queued>,
}

#[derive(Debug)]
struct Queued {
    kind: Kind,
    key: Range<usize>,
    /// The end of its frame in `requests`, and the frame's length.
    end: usize,
    len: usize,
}

impl Queued {
    /// The frame's `len` field: all of it but the 4-byte length itself.
    fn frame_len(&self) -> u64 {
        (self.len - 4) as u64
    }
}

impl Queue {
    fn clear(&mut self) {
        self.requests.clear();
        self.keys.clear();
        self.ops.clear();
    }

    fn push(&mut self, kind: Kind, key: &str, value: &str) {
        let start = self.requests.len();
        // A Vec output grows: this cannot fail.
        let _ = encode_request(&mut self.requests, key.as_bytes(), value.as_bytes(), kind);
        let k = self.keys.len();
        self.keys.push_str(key);
        let end = self.requests.len();
        self.ops.push(Queued { kind, key: k..self.keys.len(), end, len: end - start });
    }
}

/// Requests queued on a [`Client`], written together and answered in
/// order by [`run`](Self::run): one round trip for many requests (a window
/// of 64 KiB of requests at a time). Made by [`Client::pipeline`].
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
/// use kvio_client::Reply;
///
/// let replies = client.pipeline().put("a", "1").put("b", "2").get("a").run()?;
/// assert_eq!(replies, [Reply::Stored, Reply::Stored, Reply::Found("1".into())]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Pipeline<'c> {
    client: &'c mut Client,
}

impl Pipeline<'_> {
    /// Queues a get of `key`; its reply is [`Reply::Found`] or [`Reply::NotFound`].
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// let replies = client.pipeline().get("x").run()?;
    /// assert_eq!(replies, [kvio_client::Reply::NotFound]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn get(&mut self, key: &str) -> &mut Self {
        self.client.queue.push(Kind::Get, key, "");
        self
    }

    /// Queues a put of `value` under `key`; its reply is [`Reply::Stored`]
    /// or [`Reply::Refused`] (which does not stop the pipeline).
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// use kvio_client::Reply;
    ///
    /// let too_long = "k".repeat(2000); // keys: at most 1024 bytes by default
    /// let replies = client.pipeline().put(&too_long, "v").put("k", "v").run()?;
    /// assert_eq!(replies, [Reply::Refused("key too long".into()), Reply::Stored]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn put(&mut self, key: &str, value: &str) -> &mut Self {
        self.client.queue.push(Kind::PutOrUpdate, key, value);
        self
    }

    /// Queues a delete of `key`; its reply is [`Reply::Deleted`] or
    /// [`Reply::NotFound`].
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// use kvio_client::Reply;
    ///
    /// let replies = client.pipeline().put("k", "v").delete("k").delete("k").run()?;
    /// assert_eq!(replies, [Reply::Stored, Reply::Deleted, Reply::NotFound]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn delete(&mut self, key: &str) -> &mut Self {
        self.client.queue.push(Kind::Delete, key, "");
        self
    }

    /// Requests queued and not yet run.
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// let mut pipeline = client.pipeline();
    /// assert!(pipeline.is_empty());
    /// pipeline.get("a").get("b");
    /// assert_eq!(pipeline.len(), 2);
    /// pipeline.run()?;
    /// assert!(pipeline.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.client.queue.ops.len()
    }

    /// Whether nothing is queued (see [`len`](Self::len)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends every queued request and reads their replies, in the order
    /// they were queued; the pipeline is then empty and can be filled
    /// again. A connection-level error (timeout, close, bad frame, an error
    /// frame) ends the run: the requests before it may have been applied,
    /// and the client drops the connection (the next call connects again).
    /// A request over [`Client::max_frame_len`] fails the run before
    /// anything is sent ([`Error::TooLong`]).
    ///
    /// ```
    /// # include!("../doc/server.rs");
    /// # fn main() -> Result<(), kvio_client::Error> {
    /// # let server = TestServer::start();
    /// # let mut client = kvio_client::Client::connect(server.addr(), std::time::Duration::from_secs(5))?;
    /// let mut pipeline = client.pipeline();
    /// pipeline.put("a", "1");
    /// assert_eq!(pipeline.run()?, [kvio_client::Reply::Stored]);
    /// // Empty again, and reusable.
    /// pipeline.get("a");
    /// assert_eq!(pipeline.run()?, [kvio_client::Reply::Found("1".into())]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn run(&mut self) -> Result<Vec<Reply>, Error> {
        self.client.run_queue()
    }

    /// The one reply of a one-request pipeline.
    fn one(&mut self) -> Result<Reply, Error> {
        let mut replies = self.run()?;
        debug_assert_eq!(replies.len(), 1);
        Ok(replies.swap_remove(0))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn view<'a>(key: &'a str, value: &'a str, kind: Kind, status: Status) -> MessageView<'a> {
        MessageView { key, value, kind: kind.into(), status: status as i32 }
    }

    #[test]
    fn each_response_answers_only_its_own_request() {
        let stored = view("", "", Kind::PutOrUpdate, Status::Ok);
        assert_eq!(answer(Kind::PutOrUpdate, "k", stored), Ok(Ok(Reply::Stored)));
        let refused = view("", "store full", Kind::PutOrUpdate, Status::NotOk);
        assert_eq!(answer(Kind::PutOrUpdate, "k", refused), Ok(Ok(Reply::Refused("store full".into()))));
        let hit = view("k", "v", Kind::GetResponse, Status::Ok);
        assert_eq!(answer(Kind::Get, "k", hit), Ok(Ok(Reply::Found("v".into()))));
        assert_eq!(answer(Kind::Get, "k", view("k", "", Kind::GetResponse, Status::NotOk)), Ok(Ok(Reply::NotFound)));
        let error = view("", "frame footer is not @EOF@", Kind::Error, Status::NotOk);
        assert_eq!(answer(Kind::Get, "k", error), Ok(Err("frame footer is not @EOF@".into())));
        // Out of step: another key, or a put's answer to a get.
        assert!(answer(Kind::Get, "other", hit).unwrap_err().contains("\"other\""));
        assert!(answer(Kind::Get, "k", stored).is_err());
        assert!(answer(Kind::PutOrUpdate, "k", hit).is_err());
        assert_eq!(answer(Kind::Delete, "k", view("", "", Kind::Delete, Status::Ok)), Ok(Ok(Reply::Deleted)));
        assert_eq!(answer(Kind::Delete, "k", view("", "", Kind::Delete, Status::NotOk)), Ok(Ok(Reply::NotFound)));
        assert!(answer(Kind::Delete, "k", stored).is_err());
    }

    #[test]
    fn a_queue_holds_whole_frames_and_the_keys() {
        let mut q = Queue::default();
        q.push(Kind::Get, "key", "");
        q.push(Kind::PutOrUpdate, "k2", "value");
        assert_eq!(q.ops.len(), 2);
        assert_eq!(&q.keys[q.ops[1].key.clone()], "k2");
        assert_eq!(q.ops[1].end, q.requests.len());
        let mut parser = FrameParser::new(MAX_RESPONSE_LEN);
        let first = &q.requests[..q.ops[0].end];
        let mut buf = Vec::new();
        let (used, parsed) = parser.push(first, &mut buf).unwrap();
        assert_eq!(used, first.len());
        assert!(matches!(parsed, Parse::Complete(p) if MessageView::decode(p).unwrap().key == "key"));
        q.clear();
        assert!(q.ops.is_empty() && q.requests.is_empty() && q.keys.is_empty());
    }
}
