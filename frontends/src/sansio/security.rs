//! Who may talk to the server, apart from any socket: protected mode (the
//! [`Server`](crate::sansio::server::Server)'s admission rule), the shared
//! secret (each session's authentication, through a [`Guard`] around the
//! server's handler), and what a refused or unauthenticated client is told,
//! in its own protocol.
//!
//! - [`Security`]: what a server is told at start-up (the secret, whether
//!   protected mode is on, the TLS configuration). [`OPEN`] is none of it.
//! - [`Secret`]: the shared secret, compared in constant time and never
//!   printed (its `Debug` says `Secret(..)`).
//! - [`Auth`]: one connection's authentication state: whether it has
//!   shown the secret, and how many times it failed.
//! - [`Guard`]: the handler a session answers through while a secret is
//!   configured: it answers `AUTH` / `HELLO ... AUTH` (RESP), kind 5
//!   (kvio frames) and memcached's `set` with `user secret` itself, refuses
//!   everything else until the secret was shown, and passes the rest to the
//!   server's handler. It lives on the stack for one call: the `Handler`
//!   trait and the core's command tables know nothing of it.
//!
//! Why a wrapper and not a command in each table: the core is `no_std` and
//! runs on a microcontroller that has no secret to keep; and one place
//! decides, for every protocol, what an unauthenticated request gets.
//!
//! What it does not own: TLS (the session's byte transform, [`crate::sansio::tls`]),
//! reading the secret's file (the application), counting and logging the
//! failures (the server's [`Counters`](crate::sansio::stats::Counters)).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use kvio_core::memcache::{self, Data};
use kvio_core::resp::{self, RequestParser};
use kvio_core::{FrameParser, Handler, Next, Output, OutputFull, Parser};
use kvio_proto::encode_response;
use kvio_proto::{Kind, MessageView, Status};
use subtle::ConstantTimeEq;

/// Failed attempts after which a connection is closed: brute force costs
/// a connection (a TCP handshake, and a TLS one with TLS) every few tries.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// The one explanation a client refused by protected mode gets, in its
/// protocol (Redis's `-DENIED` is the model: what happened, why, and the
/// ways out).
pub const DENIED_REASON: &str = "kvio is running in protected mode because no secret is set (--auth-file) \
     and it listens beyond loopback: only loopback clients are served. To serve this client, restart kvio serve \
     with --auth-file FILE (and TLS: --tls-cert, --tls-key) and give clients the secret; or, if every host that \
     can reach the port is trusted, with --protected-mode no";

/// The `value` of a kvio frame refused for want of authentication.
pub const AUTH_REQUIRED_REASON: &str = "authentication required";
/// The `value` of a kvio `Auth` answered `NotOk`: the secret is wrong.
pub const WRONG_SECRET_REASON: &str = "wrong secret";

/// RESP: what a command gets before `AUTH` (Redis's words, which clients match).
pub const RESP_NOAUTH: &[u8] = b"NOAUTH Authentication required.";
/// RESP: what a wrong secret gets (Redis's words).
pub const RESP_WRONGPASS: &[u8] = b"WRONGPASS invalid username-password pair or user is disabled.";
/// RESP: `HELLO` without `AUTH` before authenticating (Redis's words).
const RESP_HELLO_NOAUTH: &[u8] = b"NOAUTH HELLO must be called with the client already authenticated, otherwise the \
     HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol \
     version at the same time";
/// memcached: what a command gets before authenticating (memcached's words, `-Y`).
pub const MC_UNAUTHENTICATED: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
/// memcached: what a wrong secret gets (memcached's words).
pub const MC_AUTH_FAILURE: &[u8] = b"CLIENT_ERROR authentication failure\r\n";

/// The shared secret: compared in constant time, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

/// Why a secret was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    /// Empty (once a final line end is dropped).
    Empty,
    /// It holds a byte other than printable ASCII (a space, a tab, a line
    /// end, a control byte, UTF-8 beyond ASCII): RESP's inline commands and
    /// memcached's `user secret` block split on spaces, and every client
    /// must be able to type and send it.
    NotPrintable,
}

impl SecretError {
    /// What went wrong, in a sentence that does not quote the secret.
    pub const fn as_str(&self) -> &'static str {
        match self {
            SecretError::Empty => "the secret is empty",
            SecretError::NotPrintable => {
                "the secret holds a space, a tab, a line end, a control character or a non-ASCII byte \
                 (one line of printable ASCII is expected, such as the output of `openssl rand -base64 32`)"
            }
        }
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for SecretError {}

impl Secret {
    /// The secret in a file's `contents`: one line (a final `\n` or `\r\n`
    /// is dropped), not empty, printable ASCII with no space.
    pub fn from_file_contents(contents: &[u8]) -> Result<Secret, SecretError> {
        let line = contents.strip_suffix(b"\n").unwrap_or(contents);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(SecretError::Empty);
        }
        if !line.iter().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotPrintable);
        }
        Ok(Secret(line.into()))
    }

    /// Whether `candidate` is the secret, in a time that depends on
    /// `candidate`'s length only (which its sender knows): neither the
    /// secret's bytes nor its length leak through the answer's timing.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = &self.0;
        // Never empty (from_file_contents), so the index below is defined.
        let mut same = (candidate.len() as u64).ct_eq(&(secret.len() as u64));
        for (i, byte) in candidate.iter().enumerate() {
            same &= byte.ct_eq(&secret[i % secret.len()]);
        }
        same.into()
    }

    /// The secret's bytes, for a client that sends it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a server is told about who may talk to it.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The shared secret every connection must show first; `None`: none.
    pub secret: Option<Arc<Secret>>,
    /// Protected mode: connections from peers outside loopback are
    /// refused with [`DENIED_REASON`]. The application turns it on when no
    /// secret (nor client certificate) authenticates clients and a
    /// listener is bound beyond loopback, unless told `--protected-mode no`.
    pub protected: bool,
    /// Every connection speaks TLS with this configuration; `None`: plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// No secret, no protected mode, no TLS: what the tests and an embedded
/// server use.
pub static OPEN: Security = Security { secret: None, protected: false, tls: None };

impl Security {
    /// Whether a connection from `peer` is refused by protected mode: it
    /// is on and the peer is not on loopback (an unknown peer is refused).
    pub fn denies(&self, peer: Option<SocketAddr>) -> bool {
        self.protected && !peer.is_some_and(|p| is_loopback(p.ip()))
    }
}

/// Loopback, an IPv4-mapped IPv6 loopback address (`::ffff:127.0.0.1`,
/// what a dual-stack listener reports) included.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// One connection's authentication (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Auth {
    secret: Arc<Secret>,
    authenticated: bool,
    failures: u32,
    unreported: u32,
}

impl Auth {
    /// A connection that has not shown `secret` yet.
    pub fn new(secret: Arc<Secret>) -> Auth {
        Auth { secret, authenticated: false, failures: 0, unreported: 0 }
    }

    /// Whether it showed the secret.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Whether it failed [`MAX_AUTH_FAILURES`] times (it is closed).
    pub fn is_exhausted(&self) -> bool {
        self.failures >= MAX_AUTH_FAILURES
    }

    /// Failed attempts since the last call (for the counters).
    pub fn take_failures(&mut self) -> u32 {
        std::mem::take(&mut self.unreported)
    }

    /// Checks `candidate`: a match authenticates the connection; a
    /// mismatch is a failure (an authenticated connection stays so, as in
    /// Redis).
    fn check(&mut self, candidate: &[u8]) -> bool {
        if self.secret.matches(candidate) {
            self.authenticated = true;
            return true;
        }
        self.fail();
        false
    }

    /// RESP's `user` and `candidate`: there is one user, `default`.
    fn check_user(&mut self, user: &[u8], candidate: &[u8]) -> bool {
        if user != b"default" {
            self.fail();
            return false;
        }
        self.check(candidate)
    }

    fn fail(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.unreported = self.unreported.saturating_add(1);
    }

    /// After a failed attempt: close once there were too many.
    fn after_failure(&self) -> Next {
        if self.is_exhausted() { Next::Close } else { Next::Continue }
    }
}

/// The server's handler `H`, behind one connection's [`Auth`] (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Guard<'a, H: ?Sized> {
    inner: &'a mut H,
    auth: &'a mut Auth,
}

impl<'a, H: ?Sized> Guard<'a, H> {
    /// `inner`, answering for a connection in the state `auth`.
    pub fn new(inner: &'a mut H, auth: &'a mut Auth) -> Self {
        Guard { inner, auth }
    }
}

fn write<O: Output + ?Sized>(out: &mut O, pieces: &[&[u8]]) -> Result<(), OutputFull> {
    let len = pieces.iter().map(|p| p.len()).sum();
    let mut at = out.append(len)?;
    for piece in pieces {
        let (head, rest) = at.split_at_mut(piece.len());
        head.copy_from_slice(piece);
        at = rest;
    }
    Ok(())
}

impl<H: Handler<FrameParser> + ?Sized> Handler<FrameParser> for Guard<'_, H> {
    fn request<O: Output + ?Sized>(&mut self, payload: &[u8], now: u64, out: &mut O) -> Result<Next, OutputFull> {
        let view = MessageView::decode(payload);
        match view {
            Ok(req) if Kind::from(req.kind) == Kind::Auth => {
                if self.auth.check(req.value.as_bytes()) {
                    encode_response(out, b"", b"", Kind::Auth, Status::Ok)?;
                    return Ok(Next::Continue);
                }
                encode_response(out, b"", WRONG_SECRET_REASON.as_bytes(), Kind::Auth, Status::NotOk)?;
                Ok(self.auth.after_failure())
            }
            _ if self.auth.authenticated => self.inner.request(payload, now, out),
            // The error response (kind 0): every client reads it as an
            // error, never as a miss or a refused put; the connection stays.
            _ => {
                encode_response(out, b"", AUTH_REQUIRED_REASON.as_bytes(), Kind::Error, Status::NotOk)?;
                Ok(Next::Continue)
            }
        }
    }

    fn parse_error<O: Output + ?Sized>(
        &mut self,
        error: <FrameParser as Parser>::Error,
        out: &mut O,
    ) -> Result<(), OutputFull> {
        self.inner.parse_error(error, out)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        self.inner.evicted(out)
    }
}

/// `HELLO 2`, what an authenticated `HELLO 2 AUTH user secret` is answered as.
const HELLO_2: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n2\r\n";

impl<H: Handler<RequestParser> + ?Sized> Handler<RequestParser> for Guard<'_, H> {
    fn request<O: Output + ?Sized>(
        &mut self,
        command: resp::Command<'_>,
        now: u64,
        out: &mut O,
    ) -> Result<Next, OutputFull> {
        let name = command.name();
        if name.eq_ignore_ascii_case(b"auth") {
            // AUTH secret, or AUTH default secret (the one user there is).
            let mut args = command.args().skip(1);
            let (user, secret) = match (command.argc(), args.next(), args.next()) {
                (2, Some(secret), _) => (&b"default"[..], secret),
                (3, Some(user), Some(secret)) => (user, secret),
                _ => {
                    write(out, &[b"-ERR syntax error\r\n"])?;
                    return Ok(Next::Continue);
                }
            };
            if self.auth.check_user(user, secret) {
                write(out, &[b"+OK\r\n"])?;
                return Ok(Next::Continue);
            }
            write(out, &[b"-", RESP_WRONGPASS, b"\r\n"])?;
            return Ok(self.auth.after_failure());
        }
        if name.eq_ignore_ascii_case(b"hello") {
            return self.hello(command, now, out);
        }
        if self.auth.authenticated || name.eq_ignore_ascii_case(b"quit") {
            return self.inner.request(command, now, out);
        }
        write(out, &[b"-", RESP_NOAUTH, b"\r\n"])?;
        Ok(Next::Continue)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: resp::RespError, out: &mut O) -> Result<(), OutputFull> {
        self.inner.parse_error(error, out)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        self.inner.evicted(out)
    }
}

impl<H: Handler<RequestParser> + ?Sized> Guard<'_, H> {
    /// `HELLO [2 [AUTH user secret] [SETNAME name]]`: the version is the
    /// server's to judge first (as Redis does), then the credentials.
    fn hello<O: Output + ?Sized>(
        &mut self,
        command: resp::Command<'_>,
        now: u64,
        out: &mut O,
    ) -> Result<Next, OutputFull> {
        let mut args = command.args().skip(1);
        let version = args.next();
        if version.is_some_and(|v| v != b"2") {
            return self.inner.request(command, now, out);
        }
        let mut credentials = None;
        while let Some(option) = args.next() {
            if option.eq_ignore_ascii_case(b"auth") {
                credentials = args.next().zip(args.next());
            }
        }
        match credentials {
            Some((user, secret)) => {
                if !self.auth.check_user(user, secret) {
                    write(out, &[b"-", RESP_WRONGPASS, b"\r\n"])?;
                    return Ok(self.auth.after_failure());
                }
                // Answered as `HELLO 2`: the server's reply, without the
                // credentials it would refuse (it has no password itself).
                let mut parser = RequestParser::new(HELLO_2.len());
                let mut none: Vec<u8> = Vec::new();
                match parser.push(HELLO_2, &mut none) {
                    Ok((_, kvio_core::Parse::Complete(hello))) => self.inner.request(hello, now, out),
                    _ => unreachable!("HELLO 2 is one whole command"),
                }
            }
            None if self.auth.authenticated => self.inner.request(command, now, out),
            None => write(out, &[b"-", RESP_HELLO_NOAUTH, b"\r\n"]).map(|()| Next::Continue),
        }
    }
}

impl<H: Handler<memcache::RequestParser> + ?Sized> Handler<memcache::RequestParser> for Guard<'_, H> {
    /// memcached's own text-protocol authentication (`memcached -Y`):
    /// before anything else, a `set` of any key whose data is `user secret`
    /// (any user: there is one secret); `STORED` if right, and nothing is
    /// stored. Once authenticated, a `set` is a `set`.
    fn request<O: Output + ?Sized>(
        &mut self,
        request: memcache::Request<'_>,
        now: u64,
        out: &mut O,
    ) -> Result<Next, OutputFull> {
        if self.auth.authenticated {
            return self.inner.request(request, now, out);
        }
        let name = request.tokens().next().unwrap_or_default();
        match (name, request.data) {
            (b"set", Data::Bytes(data)) => {
                let secret = data.iter().position(|&b| b == b' ').map_or(&b""[..], |at| &data[at + 1..]);
                if self.auth.check(secret) {
                    write(out, &[b"STORED\r\n"])?;
                    return Ok(Next::Continue);
                }
                write(out, &[MC_AUTH_FAILURE])?;
                Ok(self.auth.after_failure())
            }
            (b"quit", _) => self.inner.request(request, now, out),
            _ => write(out, &[MC_UNAUTHENTICATED]).map(|()| Next::Continue),
        }
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: memcache::McError, out: &mut O) -> Result<(), OutputFull> {
        self.inner.parse_error(error, out)
    }

    fn evicted<O: Output + ?Sized>(&mut self, out: &mut O) -> Result<(), OutputFull> {
        self.inner.evicted(out)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use kvio_core::frame::encode_frame;
    use kvio_core::resp::NoInfo;
    use kvio_core::store::Slot;
    use kvio_core::{Connection, Store, StoreLimits};
    use kvio_proto::KeyValueMessage;
    use prost::Message;

    use crate::sansio::wire::Protocols;

    type TestStore = Store<Box<[Slot]>, Box<[u8]>>;

    fn handler() -> Protocols<TestStore, NoInfo> {
        let slots = kvio_core::store::slots_for(16);
        Protocols::new(Store::with_storage(
            vec![Slot::EMPTY; slots].into_boxed_slice(),
            vec![0u8; 1 << 16].into_boxed_slice(),
            StoreLimits::for_frame(1 << 16, 16, 1 << 16),
        ))
    }

    fn secret() -> Arc<Secret> {
        Arc::new(Secret::from_file_contents(b"s3cret-Pa55\n").unwrap())
    }

    #[test]
    fn a_secret_is_one_printable_line_and_never_shown() {
        let s = Secret::from_file_contents(b"abc\r\n").unwrap();
        assert_eq!(s.expose(), b"abc");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert_eq!(Secret::from_file_contents(b"\n"), Err(SecretError::Empty));
        assert_eq!(Secret::from_file_contents(b"a b"), Err(SecretError::NotPrintable));
        assert_eq!(Secret::from_file_contents(b"ab\n\n"), Err(SecretError::NotPrintable));
        assert_eq!(Secret::from_file_contents("caf\u{e9}".as_bytes()), Err(SecretError::NotPrintable));
    }

    #[test]
    fn matches_only_the_same_bytes_whatever_the_length() {
        let s = secret();
        assert!(s.matches(b"s3cret-Pa55"));
        for wrong in
            [&b""[..], b"s", b"s3cret-Pa5", b"s3cret-Pa555", b"s3cret-Pa56", b"S3cret-Pa55", b"s3cret-Pa55s3cret-Pa55"]
        {
            assert!(!s.matches(wrong), "{:?}", String::from_utf8_lossy(wrong));
        }
    }

    #[test]
    fn protected_mode_refuses_every_peer_but_loopback() {
        let on = Security { protected: true, ..Security::default() };
        for peer in ["127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(!on.denies(Some(peer.parse().unwrap())), "{peer}");
        }
        for peer in
            ["10.0.0.1:1", "192.168.1.2:1", "8.8.8.8:1", "[2001:db8::1]:1", "[::ffff:10.0.0.1]:1", "[fe80::1]:1"]
        {
            assert!(on.denies(Some(peer.parse().unwrap())), "{peer}");
            assert!(!OPEN.denies(Some(peer.parse().unwrap())), "off: {peer}");
        }
        assert!(on.denies(None), "an unknown peer is not known to be local");
    }

    /// Pushes `input` through a connection of protocol `P` answered by a
    /// [`Guard`]: the answers, and whether it asked to close.
    fn run<P: Parser>(parser: P, auth: &mut Auth, input: &[u8]) -> (Vec<u8>, bool)
    where
        for<'a> Guard<'a, Protocols<TestStore, NoInfo>>: Handler<P>,
    {
        let mut h = handler();
        let mut conn = Connection::with_parser(parser, 1 << 20);
        let (mut out, mut buf) = (Vec::new(), Vec::new());
        let received = conn.receive(input, 0, &mut buf, &mut Guard::new(&mut h, auth), &mut out);
        (out, matches!(received.outcome, kvio_core::Outcome::Quit))
    }

    fn resp(auth: &mut Auth, input: &str) -> (String, bool) {
        let (out, closed) = run(RequestParser::new(1 << 16), auth, input.as_bytes());
        (String::from_utf8(out).unwrap(), closed)
    }

    #[test]
    fn resp_before_wrong_and_right() {
        let mut auth = Auth::new(secret());
        assert_eq!(resp(&mut auth, "SET k v\r\nGET k\r\n").0, "-NOAUTH Authentication required.\r\n".repeat(2));
        assert!(resp(&mut auth, "HELLO 2\r\n").0.starts_with("-NOAUTH HELLO must be called"));
        let wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
        assert_eq!(resp(&mut auth, "AUTH nope\r\n"), (wrong.to_owned(), false));
        assert_eq!(resp(&mut auth, "AUTH someone s3cret-Pa55\r\n").0, wrong, "one user: default");
        assert!(!auth.is_authenticated());
        assert_eq!(auth.take_failures(), 2);
        assert_eq!(resp(&mut auth, "AUTH default s3cret-Pa55\r\nSET k v\r\nGET k\r\n").0, "+OK\r\n+OK\r\n$1\r\nv\r\n");
        assert_eq!(resp(&mut auth, "AUTH s3cret-Pa55\r\n").0, "+OK\r\n", "again: still right");
        assert_eq!(resp(&mut auth, "AUTH a b c\r\n").0, "-ERR syntax error\r\n");
    }

    #[test]
    fn resp_hello_authenticates_and_answers_as_hello_2() {
        let mut auth = Auth::new(secret());
        let (answer, _) = resp(&mut auth, "HELLO 2 AUTH default s3cret-Pa55 SETNAME me\r\n");
        assert!(answer.starts_with("*14\r\n$6\r\nserver\r\n"), "{answer}");
        assert!(auth.is_authenticated());
        assert!(resp(&mut auth, "HELLO 3\r\n").0.starts_with("-NOPROTO"), "the version is judged as before");
        let mut other = Auth::new(secret());
        assert!(resp(&mut other, "HELLO 2 AUTH default wrong\r\n").0.starts_with("-WRONGPASS"));
        assert!(resp(&mut other, "HELLO 3 AUTH default s3cret-Pa55\r\n").0.starts_with("-NOPROTO"));
        assert!(!other.is_authenticated(), "NOPROTO before the credentials, as Redis does");
    }

    #[test]
    fn resp_quit_is_answered_before_auth_and_three_failures_close() {
        let mut auth = Auth::new(secret());
        assert_eq!(resp(&mut auth, "QUIT\r\n"), ("+OK\r\n".to_owned(), true));
        let mut auth = Auth::new(secret());
        assert!(!resp(&mut auth, "AUTH a\r\nAUTH b\r\n").1);
        let (answers, closed) = resp(&mut auth, "AUTH c\r\nGET k\r\n");
        assert!(closed, "the third failure closes");
        assert_eq!(answers.matches("WRONGPASS").count(), 1, "nothing after it: {answers}");
        assert!(auth.is_exhausted());
    }

    fn frame(kind: Kind, key: &str, value: &str) -> Vec<u8> {
        let msg = KeyValueMessage { key: key.into(), value: value.into(), kind: kind.into(), status: 0 };
        let mut out = Vec::new();
        encode_frame(&msg.encode_to_vec(), &mut out).unwrap();
        out
    }

    fn answers(wire: &[u8]) -> Vec<KeyValueMessage> {
        let mut rest = wire;
        let mut got = Vec::new();
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            got.push(KeyValueMessage::decode(&rest[4..4 + len - 5]).unwrap());
            rest = &rest[4 + len..];
        }
        got
    }

    #[test]
    fn kvio_frames_before_wrong_and_right() {
        let mut auth = Auth::new(secret());
        let mut input = frame(Kind::PutOrUpdate, "k", "v");
        input.extend(frame(Kind::Get, "k", ""));
        input.extend(frame(Kind::Auth, "", "wrong"));
        input.extend(frame(Kind::Auth, "", "s3cret-Pa55"));
        input.extend(frame(Kind::PutOrUpdate, "k", "v"));
        input.extend(frame(Kind::Get, "k", ""));
        let (out, closed) = run(FrameParser::default(), &mut auth, &input);
        assert!(!closed);
        let got = answers(&out);
        let summary: Vec<_> = got.iter().map(|m| (m.kind, m.status, m.value.as_str())).collect();
        assert_eq!(
            summary,
            [
                (0, 1, AUTH_REQUIRED_REASON),
                (0, 1, AUTH_REQUIRED_REASON),
                (5, 1, WRONG_SECRET_REASON),
                (5, 0, ""),
                (3, 0, ""),
                (2, 0, "v"),
            ]
        );
    }

    #[test]
    fn kvio_frames_three_wrong_secrets_close() {
        let mut auth = Auth::new(secret());
        let (_, closed) = run(FrameParser::default(), &mut auth, &frame(Kind::Auth, "", "a").repeat(3));
        assert!(closed && auth.is_exhausted());
        assert_eq!(auth.take_failures(), 3);
    }

    fn mc(auth: &mut Auth, input: &str) -> (String, bool) {
        let (out, closed) = run(memcache::RequestParser::new(1 << 16), auth, input.as_bytes());
        (String::from_utf8(out).unwrap(), closed)
    }

    #[test]
    fn memcached_before_wrong_and_right() {
        let mut auth = Auth::new(secret());
        assert_eq!(mc(&mut auth, "get k\r\n").0, "CLIENT_ERROR unauthenticated\r\n");
        assert_eq!(mc(&mut auth, "set auth 0 0 7\r\nu wrong\r\n").0, "CLIENT_ERROR authentication failure\r\n");
        assert_eq!(
            mc(&mut auth, "set auth 0 0 13\r\nu s3cret-Pa55\r\nget auth\r\n").0,
            "STORED\r\nEND\r\n",
            "nothing stored"
        );
        assert_eq!(mc(&mut auth, "set k 0 0 1\r\nv\r\nget k\r\n").0, "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n");
    }
}

/// The rules as the [`Server`](crate::sansio::server::Server) applies
/// them: admission by peer address, and authentication per connection.
#[cfg(test)]
pub(crate) mod server_test {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use kvio_core::store::Slot;
    use kvio_core::{Store, StoreLimits};

    use super::*;
    use crate::sansio::memory::ClientMemory;
    use crate::sansio::server::{Handle, Limits, Places, Server, Shared};
    use crate::sansio::session::{Clock, Framing, Timing};
    use crate::sansio::stats::{Close, Counters};
    use crate::sansio::wire::{Protocol, Protocols};

    pub(crate) type TestServer<'a> = Server<'a, Protocols<Store<Box<[Slot]>, Box<[u8]>>>>;

    /// What a test server shares: places, memory, counters, and `security`.
    pub(crate) struct Shares {
        places: Places,
        memory: ClientMemory,
        pub(crate) counters: Counters,
        security: Security,
    }

    impl Shares {
        pub(crate) fn new(security: Security) -> Shares {
            Shares {
                places: Places::default(),
                memory: ClientMemory::new(1 << 26),
                counters: Counters::default(),
                security,
            }
        }

        pub(crate) fn server(&self) -> TestServer<'_> {
            self.server_timed(Timing {
                idle: Some(Duration::from_secs(10)),
                frame: None,
                handshake: crate::sansio::session::HANDSHAKE_TIME,
                grace: Duration::from_secs(1),
                linger: Duration::from_secs(1),
                linger_bytes: 4096,
                stop_read_budget: 4096,
            })
        }

        /// A test server with `timing`.
        pub(crate) fn server_timed(&self, timing: Timing) -> TestServer<'_> {
            let limits = Limits {
                framing: Framing { max_frame_len: 1 << 16, output_limit: 64 * 1024 },
                timing,
                clock: Clock::starting(Instant::now(), 0),
                max_connections: 1000,
            };
            let slots = kvio_core::store::slots_for(64);
            let store = Store::with_storage(
                vec![Slot::EMPTY; slots].into_boxed_slice(),
                vec![0u8; 1 << 16].into_boxed_slice(),
                StoreLimits::for_frame(1 << 16, 64, 1 << 16),
            );
            let shared = Shared {
                places: &self.places,
                memory: &self.memory,
                counters: &self.counters,
                security: &self.security,
            };
            Server::new(limits, shared, Protocols::new(store))
        }
    }

    /// Sends `input` on `handle` and takes every byte the server answers.
    pub(crate) fn exchange(server: &mut TestServer<'_>, handle: Handle, input: &[u8]) -> Vec<u8> {
        let now = Instant::now();
        server.received(handle, input, now);
        let mut got = Vec::new();
        while server.wants_write(handle) {
            let bytes = server.transmit(handle).to_vec();
            got.extend_from_slice(&bytes);
            server.advance(handle, bytes.len(), now);
        }
        got
    }

    fn peer(addr: &str) -> Option<SocketAddr> {
        Some(addr.parse().unwrap())
    }

    fn secured() -> Security {
        Security {
            secret: Some(Arc::new(Secret::from_file_contents(b"hunter2-but-longer").unwrap())),
            ..Security::default()
        }
    }

    #[test]
    fn protected_mode_tells_a_peer_outside_loopback_why_in_its_protocol_then_closes() {
        let shares = Shares::new(Security { protected: true, ..Security::default() });
        let mut server = shares.server();
        let now = Instant::now();
        let expected: [(Protocol, &[u8]); 3] = [
            (Protocol::Resp, b"-DENIED kvio is running in protected mode"),
            (Protocol::Memcache, b"SERVER_ERROR kvio"),
            (Protocol::Kvio, b""),
        ];
        for (protocol, start) in expected {
            for addr in ["10.0.0.7:40000", "192.168.1.20:1", "[2001:db8::2]:9", "[::ffff:172.16.0.1]:5"] {
                let handle = server.accept(peer(addr), now, protocol).expect("accepted, to be told why");
                let said = exchange(&mut server, handle, b"");
                assert!(said.starts_with(start), "{protocol} {addr}: {}", String::from_utf8_lossy(&said));
                assert!(String::from_utf8_lossy(&said).contains("--auth-file"), "says how to fix it");
                // Whatever it sends is not answered.
                let late = match protocol {
                    Protocol::Resp => &b"SET k v\r\n"[..],
                    Protocol::Memcache => b"set k 0 0 1\r\nv\r\n",
                    Protocol::Kvio => &[5, 0, 0, 0, b'@', b'E', b'O', b'F', b'@'],
                };
                assert!(exchange(&mut server, handle, late).is_empty());
                assert!(server.is_lingering(handle) && server.take_shut_write(handle), "{protocol} {addr}");
            }
            // Loopback is served.
            let local = server.accept(peer("127.0.0.1:5"), now, protocol).unwrap();
            assert!(!server.is_lingering(local));
            if protocol == Protocol::Resp {
                assert_eq!(exchange(&mut server, local, b"PING\r\n"), b"+PONG\r\n");
            }
        }
        // Each refusal closes with its own reason.
        while let Some(io) = server.poll_io() {
            let _ = io;
        }
        let later = now + Duration::from_secs(2);
        server.handle_timeout(later);
        while server.poll_io().is_some() {}
        assert_eq!(shares.counters.figures().closed[Close::Denied as usize], 12);
    }

    #[test]
    fn with_a_secret_any_peer_may_authenticate_and_each_connection_does_so_itself() {
        let shares = Shares::new(secured());
        let mut server = shares.server();
        let now = Instant::now();
        let a = server.accept(peer("10.9.8.7:1000"), now, Protocol::Resp).unwrap();
        let b = server.accept(peer("10.9.8.7:1001"), now, Protocol::Resp).unwrap();
        assert_eq!(exchange(&mut server, a, b"GET k\r\n"), b"-NOAUTH Authentication required.\r\n");
        assert_eq!(exchange(&mut server, a, b"AUTH hunter2-but-longer\r\nSET k v\r\n"), b"+OK\r\n+OK\r\n");
        assert_eq!(exchange(&mut server, b, b"GET k\r\n"), b"-NOAUTH Authentication required.\r\n", "per connection");
        let c = server.accept(peer("10.9.8.7:1002"), now, Protocol::Memcache).unwrap();
        assert_eq!(exchange(&mut server, c, b"get k\r\n"), b"CLIENT_ERROR unauthenticated\r\n");
        assert_eq!(
            exchange(&mut server, c, b"set x 0 0 20\r\nx hunter2-but-longer\r\nget k\r\n"),
            b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
        );
    }

    #[test]
    fn two_hundred_wrong_secrets_cost_a_connection_every_three_and_are_counted() {
        let shares = Shares::new(secured());
        let mut server = shares.server();
        let now = Instant::now();
        let served = server.accept(peer("10.0.0.1:1"), now, Protocol::Resp).unwrap();
        assert_eq!(exchange(&mut server, served, b"AUTH default hunter2-but-longer\r\n"), b"+OK\r\n");
        let mut conn = server.accept(peer("10.0.0.2:1"), now, Protocol::Resp).unwrap();
        let mut connections = 1;
        for i in 0..200 {
            if server.is_lingering(conn) || server.is_closed(conn) {
                conn = server.accept(peer("10.0.0.2:1"), now, Protocol::Resp).unwrap();
                connections += 1;
            }
            let said = exchange(&mut server, conn, format!("AUTH guess-{i}\r\n").as_bytes());
            assert!(said.starts_with(b"-WRONGPASS"), "{i}: {}", String::from_utf8_lossy(&said));
            // The one authenticated meanwhile is served on.
            assert_eq!(exchange(&mut server, served, b"PING\r\n"), b"+PONG\r\n");
        }
        assert_eq!(connections, 67, "one connection per {MAX_AUTH_FAILURES} tries");
        let figures = shares.counters.figures();
        assert_eq!(figures.auth_failures, 200);
        server.handle_timeout(now + Duration::from_secs(2));
        while server.poll_io().is_some() {}
        assert_eq!(shares.counters.figures().closed[Close::AuthFailed as usize], 66);
        let fresh = server.accept(peer("10.0.0.2:1"), now, Protocol::Resp).unwrap();
        assert_eq!(
            exchange(&mut server, fresh, b"AUTH hunter2-but-longer\r\n"),
            b"+OK\r\n",
            "the right one still works"
        );
    }
}
