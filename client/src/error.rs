//! [`Error`]: why a request did not get the answer it wanted, naming the
//! server (and the key, where there is one).

use std::fmt;
use std::io;
use std::time::Duration;

use kvio_core::frame::FrameError;
use kvio_proto::DecodeError;

/// Why a request did not get the answer it wanted. Every variant names the
/// server's address as the caller gave it; a refused put names its key too.
///
/// ```
/// # include!("../tests/support/server.rs");
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
            | Error::Unexpected { addr, .. } => addr,
        }
    }

    /// Whether the connection is still usable after this error: only a
    /// refused put leaves it as it was.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kvio_client::Client;
    ///
    /// let error = Client::connect("127.0.0.1:1", Duration::from_secs(1)).unwrap_err();
    /// assert!(!error.is_refusal());
    /// ```
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused { .. })
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
            Error::BadFrame { addr, error } => write!(f, "bad response frame from {addr}: {error}"),
            Error::BadPayload { addr, error } => write!(f, "bad response payload from {addr}: {error}"),
            Error::Server { addr, reason } => write!(f, "{addr} answered with an error: {reason}"),
            Error::Refused { addr, key, reason } if reason.is_empty() => {
                write!(f, "{addr} refused the put of {key:?} (no reason given)")
            }
            Error::Refused { addr, key, reason } => write!(f, "{addr} refused the put of {key:?}: {reason}"),
            Error::Unexpected { addr, what } => write!(f, "unexpected response from {addr}: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect { source, .. } | Error::Io { source, .. } => Some(source),
            Error::BadFrame { error, .. } => Some(error),
            Error::BadPayload { error, .. } => Some(error),
            _ => None,
        }
    }
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
        ];
        for e in &errors {
            assert_eq!(e.addr(), "db1:7878");
            assert!(e.to_string().contains("db1:7878"), "{e}");
        }
        assert_eq!(errors[1].to_string(), "timed out after 0.5 s connecting to db1:7878");
        assert_eq!(errors[2].to_string(), "timed out after 5 s waiting for db1:7878");
        assert_eq!(errors[8].to_string(), "db1:7878 refused the put of \"k\": store full");
        assert_eq!(errors[9].to_string(), "db1:7878 refused the put of \"k\" (no reason given)");
        assert_eq!(errors.iter().filter(|e| e.is_refusal()).count(), 2);
    }
}
