//! [`Error`]: why a request did not get the answer it wanted, naming the
//! server (and the key, where there is one).

use std::fmt;
use std::io;
use std::time::Duration;

use kvio_core::frame::FrameError;
use kvio_proto::DecodeError;

/// Why a request did not get the answer it wanted. Every variant names the
/// server's address as the caller gave it; a refused put names its key too
/// (cut by [`shorten`]: a 2,000-byte key is not printed whole).
///
/// After an error the [`Client`](crate::Client) keeps its connection only
/// if the request was refused ([`is_refusal`](Error::is_refusal)); after
/// any other (a timeout, a reset, a bad frame) it drops the connection, so
/// that a late answer can never be read as the answer to the next request,
/// and its next call connects afresh.
///
/// ```
/// # include!("../doc/server.rs");
/// # fn main() -> Result<(), kvio_client::Error> {
/// # let server = TestServer::start();
/// use std::time::Duration;
/// use kvio_client::{Client, Error};
///
/// let mut client = Client::connect(server.addr(), Duration::from_secs(5))?;
/// // kvio's keys are at most 1024 bytes by default: this one is refused.
/// let long_key = "k".repeat(2000);
/// match client.put(&long_key, "v") {
///     Err(Error::Refused { reason, .. }) => assert_eq!(reason, "key too long"),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Nothing answered at `addr` (refused, unreachable, no such name, or
    /// timed out connecting).
    Connect {
        /// The address as given.
        addr: String,
        /// What the last address tried said.
        source: io::Error,
        /// The connect timeout.
        timeout: Duration,
    },
    /// No answer came from `addr` within `after` (the read or write timeout).
    Timeout {
        /// The address as given.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// Reading or writing failed for another reason (a reset, for one).
    Io {
        /// The address as given.
        addr: String,
        /// What the socket said.
        source: io::Error,
    },
    /// The server closed the connection before it answered every request.
    Closed {
        /// The address as given.
        addr: String,
    },
    /// The response's framing is broken (length or footer): the
    /// connection can no longer be trusted.
    BadFrame {
        /// The address as given.
        addr: String,
        /// What is wrong with the frame.
        error: FrameError,
    },
    /// A response's payload is not a `KeyValueMessage`.
    BadPayload {
        /// The address as given.
        addr: String,
        /// What is wrong with the payload.
        error: DecodeError,
    },
    /// The server answered with an error frame (`kind` 0): it could not
    /// read a request (a framing error closes the connection after it).
    Server {
        /// The address as given.
        addr: String,
        /// The reason the server gave.
        reason: String,
    },
    /// The server refused to store `key` (`status` NotOk); nothing was
    /// stored and the key's old value, if any, is kept.
    Refused {
        /// The address as given.
        addr: String,
        /// The key of the put.
        key: String,
        /// The reason the server gave (`key too long`, `value too long`,
        /// `store full` from kvio; empty if the server gave none).
        reason: String,
    },
    /// A response does not answer its request (another kind, or another key).
    Unexpected {
        /// The address as given.
        addr: String,
        /// What was asked and what came back.
        what: String,
    },
    /// The server did not take the secret ([`Options::secret`](crate::Options::secret)):
    /// wrong, or it asks for none. The connection is dropped.
    Auth {
        /// The address as given.
        addr: String,
        /// Why (never the secret).
        reason: String,
    },
    /// The TLS handshake failed (the server's certificate was refused, say).
    Tls {
        /// The address as given.
        addr: String,
        /// What TLS said.
        source: io::Error,
    },
    /// A request's frame is longer than the client's limit
    /// ([`Client::set_max_frame_len`](crate::Client::set_max_frame_len),
    /// by default a kvio server's default `--max-frame-len`, 1 MiB): it
    /// was not sent, nor was any other request of its pipeline, and the
    /// connection is kept. A server would refuse it and close the
    /// connection.
    TooLong {
        /// The address as given.
        addr: String,
        /// The key of the request.
        key: String,
        /// The frame's `len` field (its payload and footer).
        len: u64,
        /// The client's limit.
        max: u32,
    },
}

impl Error {
    /// The server the error is about, as the caller named it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvio_client::Client;
    ///
    /// // Port 1 on loopback: nothing listens there.
    /// let error = Client::connect("127.0.0.1:1", Duration::from_secs(1)).unwrap_err();
    /// assert_eq!(error.addr(), "127.0.0.1:1");
    /// assert!(error.to_string().starts_with("cannot connect to 127.0.0.1:1"), "{error}");
    /// ```
    pub fn addr(&self) -> &str {
        match self {
            Error::Connect { addr, .. }
            | Error::Timeout { addr, .. }
            | Error::Io { addr, .. }
            | Error::Closed { addr }
            | Error::BadFrame { addr, .. }
            | Error::BadPayload { addr, .. }
            | Error::Server { addr, .. }
            | Error::Refused { addr, .. }
            | Error::Unexpected { addr, .. }
            | Error::Auth { addr, .. }
            | Error::Tls { addr, .. }
            | Error::TooLong { addr, .. } => addr,
        }
    }

    /// Whether the request was refused, by the server (a put, [`Error::Refused`])
    /// or before it was sent ([`Error::TooLong`]): nothing changed and the
    /// connection is kept. After any other error the connection is dropped
    /// and the next request connects again (see [`Error`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvio_client::Client;
    ///
    /// let error = Client::connect("127.0.0.1:1", Duration::from_secs(1)).unwrap_err();
    /// assert!(!error.is_refusal());
    /// ```
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused { .. } | Error::TooLong { .. })
    }
}

/// `5 s`, `0.5 s`.
struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { addr, source, timeout } if timed_out(source) => {
                write!(f, "timed out after {} connecting to {addr}", Seconds(*timeout))
            }
            Error::Connect { addr, source, .. } => write!(f, "cannot connect to {addr}: {source}"),
            Error::Timeout { addr, after } => write!(f, "timed out after {} waiting for {addr}", Seconds(*after)),
            Error::Io { addr, source } => write!(f, "connection to {addr}: {source}"),
            Error::Closed { addr } => write!(f, "{addr} closed the connection before it answered"),
            // What a server of another protocol (HTTP, say) gets: its bytes read as a kvio frame.
            Error::BadFrame { addr, error } => {
                write!(f, "bad response frame from {addr}: {error}; {NOT_KVIO}")
            }
            Error::BadPayload { addr, error } => {
                write!(f, "bad response payload from {addr}: {error}; {NOT_KVIO}")
            }
            Error::Server { addr, reason } => write!(f, "{addr} answered with an error: {reason}"),
            Error::Refused { addr, key, reason } if reason.is_empty() => {
                write!(f, "{addr} refused the put of {} (no reason given)", shorten(key))
            }
            Error::Refused { addr, key, reason } => write!(f, "{addr} refused the put of {}: {reason}", shorten(key)),
            Error::Unexpected { addr, what } => write!(f, "unexpected response from {addr}: {what}"),
            Error::Auth { addr, reason } => write!(f, "{addr} refused the secret: {reason}"),
            Error::Tls { addr, source } => write!(f, "TLS with {addr}: {source}"),
            Error::TooLong { addr, key, len, max } => write!(
                f,
                "not sent to {addr}: the request for {} is a {}-byte frame, over the client's limit of {} bytes \
                 (a kvio server's --max-frame-len; raise it with set_max_frame_len if the server's is larger)",
                shorten(key),
                thousands(*len),
                thousands(u64::from(*max)),
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Io { source, .. } | Error::Tls { source, .. } => Some(source),
            Error::BadFrame { error, .. } => Some(error),
            Error::BadPayload { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Said after a response that is not a kvio frame: the usual cause is an
/// address that is another server's (an HTTP port, such as `--metrics`).
const NOT_KVIO: &str = "is this a kvio server?";

/// How many characters of a key or value a message repeats.
const ECHO_CHARS: usize = 64;

/// A key or value as kvio's messages repeat it: quoted and escaped, cut to
/// 64 characters with its full length in bytes when longer, so that a
/// 100 KiB key does not fill a log or a terminal. The `kvio` command says
/// keys this way too.
///
/// ```
/// use kvio_client::shorten;
///
/// assert_eq!(shorten("user:42"), "\"user:42\"");
/// assert_eq!(shorten(&"k".repeat(2000)), format!("\"{}…\" (2,000 bytes)", "k".repeat(64)));
/// ```
pub fn shorten(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        None => format!("\"{}\"", text.escape_debug()),
        Some((cut, _)) => format!("\"{}…\" ({} bytes)", text[..cut].escape_debug(), thousands(text.len() as u64)),
    }
}

/// `1,048,576`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A socket timeout: EAGAIN on a blocking socket with SO_RCVTIMEO, or ETIMEDOUT.
pub(crate) fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_message_names_the_server() {
        let addr = || "db1:7878".to_owned();
        let errors = [
            Error::Connect {
                addr: addr(),
                source: io::ErrorKind::ConnectionRefused.into(),
                timeout: Duration::from_secs(5),
            },
            Error::Connect {
                addr: addr(),
                source: io::ErrorKind::TimedOut.into(),
                timeout: Duration::from_millis(500),
            },
            Error::Timeout { addr: addr(), after: Duration::from_secs(5) },
            Error::Io { addr: addr(), source: io::ErrorKind::ConnectionReset.into() },
            Error::Closed { addr: addr() },
            Error::BadFrame { addr: addr(), error: FrameError::BadFooter },
            Error::BadPayload { addr: addr(), error: DecodeError::NotUtf8 },
            Error::Server { addr: addr(), reason: "payload is not a valid KeyValueMessage".into() },
            Error::Refused { addr: addr(), key: "k".into(), reason: "store full".into() },
            Error::Refused { addr: addr(), key: "k".into(), reason: String::new() },
            Error::Unexpected { addr: addr(), what: "a response of kind 7".into() },
            Error::TooLong { addr: addr(), key: "k".into(), len: 9_000_021, max: 1 << 20 },
        ];
        for e in &errors {
            assert_eq!(e.addr(), "db1:7878");
            assert!(e.to_string().contains("db1:7878"), "{e}");
        }
        assert_eq!(errors[1].to_string(), "timed out after 0.5 s connecting to db1:7878");
        assert_eq!(errors[2].to_string(), "timed out after 5 s waiting for db1:7878");
        assert_eq!(errors[8].to_string(), "db1:7878 refused the put of \"k\": store full");
        assert_eq!(errors[9].to_string(), "db1:7878 refused the put of \"k\" (no reason given)");
        assert_eq!(errors.iter().filter(|e| e.is_refusal()).count(), 3);
        assert_eq!(
            errors[11].to_string(),
            "not sent to db1:7878: the request for \"k\" is a 9,000,021-byte frame, over the client's limit of \
             1,048,576 bytes (a kvio server's --max-frame-len; raise it with set_max_frame_len if the server's is larger)"
        );
    }

    #[test]
    fn a_response_that_is_not_a_kvio_frame_asks_whether_it_is_a_kvio_server() {
        // An HTTP server's "HTTP/1.1 400" read as a frame: its `len` is 0x50545448.
        let e = Error::BadFrame { addr: "127.0.0.1:9878".into(), error: FrameError::TooLong };
        assert_eq!(
            e.to_string(),
            "bad response frame from 127.0.0.1:9878: frame length over maximum; is this a kvio server?"
        );
        let e = Error::BadPayload { addr: "127.0.0.1:9878".into(), error: DecodeError::NotUtf8 };
        assert!(e.to_string().ends_with("; is this a kvio server?"), "{e}");
    }

    #[test]
    fn a_long_key_is_cut_to_64_characters_with_its_length() {
        let key = "k".repeat(2000);
        let e = Error::Refused { addr: "db1:7878".into(), key, reason: "key too long".into() };
        assert_eq!(
            e.to_string(),
            format!("db1:7878 refused the put of \"{}…\" (2,000 bytes): key too long", "k".repeat(64))
        );
        assert_eq!(shorten("k"), "\"k\"");
        assert_eq!(shorten(&"é".repeat(64)), format!("\"{}\"", "é".repeat(64)));
        assert_eq!(shorten(&"é".repeat(65)), format!("\"{}…\" (130 bytes)", "é".repeat(64)));
        assert_eq!(shorten(&"k".repeat(100 * 1024)), format!("\"{}…\" (102,400 bytes)", "k".repeat(64)));
        assert_eq!(shorten("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!([0, 999, 1000, 1_048_576].map(thousands), ["0", "999", "1,000", "1,048,576"]);
    }
}
