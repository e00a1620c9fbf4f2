//! TLS as a byte transform between the driver's bytes and a
//! [`Session`](crate::sansio::session::Session)'s parser: ciphertext in,
//! plaintext to the parser; the parser's answers in, ciphertext out. It is
//! rustls's [`ServerConnection`], itself sans-IO (`read_tls`,
//! `process_new_packets`, `reader`, `writer`, `write_tls`), so no driver
//! changes how it waits: a readiness driver still sends what
//! `Server::transmit` holds, a completion driver still takes the buffer
//! (`Server::take_transmit`), only the bytes are records now.
//!
//! Bounds: a handshake is bounded in time by the session (its handshake
//! deadline, [`Timing::handshake`](crate::sansio::session::Timing::handshake),
//! 10 s from the accept, or its idle timeout if that comes first), and in
//! bytes by rustls (a record is at most 16 KiB and 2 KiB of overhead, a
//! handshake message at most 64 KiB; more, or anything that is not TLS, is
//! an error and the connection ends after the alert). The records rustls
//! skips during a handshake are counted by it too (at most 4 warning
//! alerts and 2 ChangeCipherSpec; an empty or early application record is
//! an error), so a client cannot keep a handshake going with bytes: a
//! test holds rustls to it. Plaintext waits in the session's output until
//! the handshake is done; once sealed, at most [`SEAL_AHEAD`] bytes of
//! records wait here, so back-pressure still reaches the session.
//!
//! What TLS allocates (and plaintext does not): rustls's buffers per
//! connection (a few tens of KiB while records move, given back as they
//! drain), the connection itself (boxed by the session), and the records
//! waiting for the socket in `Tls::out`; the decrypted bytes go through
//! one buffer per connection, kept.
//!
//! What it does not own: certificates and their reload (the host's
//! `tls` module builds the [`rustls::ServerConfig`]), time and closing
//! (the session).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::ServerConnection;

use crate::sansio::outbuf::OutBuf;

/// Records waiting for the socket past which no more plaintext is sealed
/// (the rest waits in the session's output, which back-pressure sees).
pub const SEAL_AHEAD: usize = 256 * 1024;

/// One connection's TLS (see the [module docs](self)).
#[derive(Debug)]
pub struct Tls {
    conn: ServerConnection,
    /// Records waiting for the socket.
    pub(crate) out: OutBuf,
    /// The last decrypted bytes.
    plain: Vec<u8>,
}

/// What [`Tls::decrypt`] found besides plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decrypted {
    /// The peer sent its close_notify: nothing more will come.
    pub closed: bool,
}

impl Tls {
    /// A server side of a handshake not begun, with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Tls, rustls::Error> {
        Ok(Tls { conn: ServerConnection::new(config)?, out: OutBuf::default(), plain: Vec::new() })
    }

    /// The handshake is not done: no plaintext goes either way yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Decrypts `input` (every byte is taken): the plaintext is in
    /// [`Tls::take_plain`]; records the server owes (the handshake's, an
    /// alert) are queued in `Tls::out`. An error ends the connection:
    /// the alert that says why is queued first.
    pub fn decrypt(&mut self, mut input: &[u8]) -> Result<Decrypted, rustls::Error> {
        self.plain.clear();
        let mut found = Decrypted::default();
        while !input.is_empty() {
            let result = match self.conn.read_tls(&mut input) {
                Ok(_) => self.conn.process_new_packets(),
                // Only when rustls would buffer more than it accepts: not TLS.
                Err(e) => Err(rustls::Error::General(format!("reading records: {e}"))),
            };
            let state = match result {
                Ok(state) => state,
                Err(e) => {
                    self.flush();
                    return Err(e);
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = self.plain.len();
                self.plain.resize(at + n, 0);
                // rustls said n bytes are there.
                self.conn.reader().read_exact(&mut self.plain[at..]).expect("the plaintext rustls counted");
            }
            found.closed |= state.peer_has_closed();
        }
        self.flush();
        Ok(found)
    }

    /// The plaintext of the last [`Tls::decrypt`] (give it back with
    /// [`Tls::put_plain`], so its buffer is kept).
    pub fn take_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.plain)
    }

    /// Gives the plaintext buffer back.
    pub fn put_plain(&mut self, plain: Vec<u8>) {
        self.plain = plain;
    }

    /// Seals what waits in `plain` into records (once the handshake is
    /// done, and while fewer than [`SEAL_AHEAD`] bytes of records wait),
    /// taking it from `plain`; queues every record owed.
    pub fn seal(&mut self, plain: &mut OutBuf) {
        if !self.conn.is_handshaking() {
            while !plain.is_empty() && self.out.unsent().len() < SEAL_AHEAD {
                let n = self.conn.writer().write(plain.unsent()).unwrap_or(0);
                if n == 0 {
                    break;
                }
                plain.advance(n);
                self.flush();
            }
        }
        self.flush();
    }

    /// Queues a close_notify: the peer may tell an end from a cut.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
        self.flush();
    }

    /// Records waiting for the socket.
    pub fn pending(&self) -> usize {
        self.out.unsent().len()
    }

    /// Heap held by the buffers this module keeps (rustls's own are not seen).
    pub fn buffered(&self) -> usize {
        self.out.capacity() + self.plain.capacity()
    }

    fn flush(&mut self) {
        while self.conn.wants_write() {
            // Writing into memory never fails.
            if self.conn.write_tls(&mut self.out).is_err() {
                break;
            }
        }
    }
}

impl Write for OutBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        use kvio_core::Output;
        let at = self.append(bytes.len()).map_err(|_| io::Error::other("output full"))?;
        at.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use crate::sansio::security::server_test::{Shares, TestServer, exchange};
    use crate::sansio::security::{Secret, Security};
    use crate::sansio::server::Handle;
    use crate::sansio::session::Timing;
    use crate::sansio::stats::Close;
    use crate::sansio::wire::Protocol;

    /// A server configuration with a fresh self-signed certificate for
    /// `localhost`, and a client that trusts it.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let key = PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
        let provider = crate::host::tls::provider();
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    fn name() -> ServerName<'static> {
        ServerName::try_from("localhost").unwrap()
    }

    /// Moves records both ways until neither side has any to send.
    fn pump(server: &mut TestServer<'_>, handle: Handle, client: &mut ClientConnection) -> Vec<u8> {
        pump_at(server, handle, client, Instant::now())
    }

    /// [`pump`] at `now`.
    fn pump_at(server: &mut TestServer<'_>, handle: Handle, client: &mut ClientConnection, now: Instant) -> Vec<u8> {
        let mut got = Vec::new();
        for _ in 0..100 {
            let mut moved = false;
            while client.wants_write() {
                let mut wire = Vec::new();
                client.write_tls(&mut wire).unwrap();
                server.received(handle, &wire, now);
                moved = true;
            }
            while server.wants_write(handle) {
                let bytes = server.transmit(handle).to_vec();
                server.advance(handle, bytes.len(), now);
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    client.read_tls(&mut rest).unwrap();
                    client.process_new_packets().unwrap();
                    let _ = client.reader().read_to_end(&mut got);
                }
                moved = true;
            }
            if !moved {
                return got;
            }
        }
        panic!("the exchange never settles");
    }

    #[test]
    fn a_rustls_client_handshakes_and_round_trips_every_protocol() {
        let (server_config, client_config) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let mut server = shares.server();
        let now = Instant::now();
        let cases: [(Protocol, &[u8], &[u8]); 2] = [
            (Protocol::Resp, b"SET k v\r\nGET k\r\n", b"+OK\r\n$1\r\nv\r\n"),
            (Protocol::Memcache, b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n"),
        ];
        for (protocol, ask, answer) in cases {
            let handle = server.accept(Some("127.0.0.1:9".parse().unwrap()), now, protocol).unwrap();
            let mut client =
                ClientConnection::new(client_config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
            client.writer().write_all(ask).unwrap();
            let got = pump(&mut server, handle, &mut client);
            assert!(!client.is_handshaking());
            assert_eq!(got, answer, "{protocol}");
        }
        // A large answer comes back whole, in several records.
        let handle = server.accept(None, now, Protocol::Resp).unwrap();
        let mut client = ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
        let big = "x".repeat(40_000);
        client.writer().write_all(format!("SET big {big}\r\nGET big\r\n").as_bytes()).unwrap();
        let got = pump(&mut server, handle, &mut client);
        assert!(got == format!("+OK\r\n$40000\r\n{big}\r\n").as_bytes(), "{} bytes", got.len());
        assert!(shares.counters.figures().bytes_read > 40_000);
    }

    #[test]
    fn records_that_arrive_a_byte_at_a_time_are_counted_once() {
        // The byte that completes a record releases more plaintext than
        // itself: the received bytes counted are the wire's (this
        // overflowed, debug builds panicked, before).
        let (server_config, client_config) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let mut server = shares.server();
        let now = Instant::now();
        let handle = server.accept(None, now, Protocol::Resp).unwrap();
        let mut client = ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
        pump(&mut server, handle, &mut client);
        let read_before = shares.counters.figures().bytes_read;
        client.writer().write_all(b"SET k v\r\nGET k\r\n").unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        for byte in wire.chunks(1) {
            server.received(handle, byte, now);
        }
        assert_eq!(pump(&mut server, handle, &mut client), b"+OK\r\n$1\r\nv\r\n");
        assert_eq!(shares.counters.figures().bytes_read - read_before, wire.len() as u64, "the wire's bytes");
    }

    #[test]
    fn a_plaintext_client_and_junk_are_closed_with_an_alert_and_others_go_on() {
        let (server_config, client_config) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let mut server = shares.server();
        let now = Instant::now();
        let good = server.accept(None, now, Protocol::Resp).unwrap();
        let mut client = ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
        pump(&mut server, good, &mut client);
        for junk in [&b"PING\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3], &[0u8; 64]] {
            let bad = server.accept(None, now, Protocol::Resp).unwrap();
            let said = exchange(&mut server, bad, junk);
            assert_eq!(said.first(), Some(&0x15), "an alert record: {said:?}");
            assert!(server.is_closed(bad), "closed once the alert is written");
        }
        client.writer().write_all(b"PING\r\n").unwrap();
        assert_eq!(pump(&mut server, good, &mut client), b"+PONG\r\n");
        while server.poll_io().is_some() {}
        assert_eq!(shares.counters.figures().closed[Close::Tls as usize], 3);
    }

    #[test]
    fn a_handshake_that_never_ends_is_closed_at_the_idle_timeout() {
        let (server_config, _) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let mut server = shares.server();
        let now = Instant::now();
        let silent = server.accept(None, now, Protocol::Kvio).unwrap();
        let deadline = server.poll_timeout().expect("an idle deadline");
        assert!(deadline <= now + Duration::from_secs(10));
        server.handle_timeout(deadline);
        assert!(server.is_closed(silent));
    }

    #[test]
    fn a_handshake_is_closed_at_its_deadline_even_with_no_idle_timeout() {
        // No idle timeout: before the handshake deadline, a silent client
        // held its connection for ever.
        let (server_config, client_config) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let handshake = Duration::from_secs(10);
        let mut server = shares.server_timed(Timing { handshake, ..Timing::new(None) });
        let t0 = Instant::now();
        let silent = server.accept(None, t0, Protocol::Kvio).unwrap();
        assert_eq!(server.poll_timeout(), Some(t0 + handshake));
        // Half a handshake: its ClientHello at 1 s is answered, its
        // Finished never comes. The deadline counts from the accept.
        let half = server.accept(None, t0, Protocol::Resp).unwrap();
        let mut stalled = ClientConnection::new(client_config.clone(), name()).unwrap();
        let mut hello = Vec::new();
        stalled.write_tls(&mut hello).unwrap();
        let one = t0 + Duration::from_secs(1);
        server.received(half, &hello, one);
        assert!(server.wants_write(half), "the server's flight");
        let flight = server.transmit(half).len();
        server.advance(half, flight, one);
        // A whole handshake at 1 s: no deadline is left on it.
        let done = server.accept(None, t0, Protocol::Resp).unwrap();
        let mut client = ClientConnection::new(client_config, name()).unwrap();
        client.writer().write_all(b"PING\r\n").unwrap();
        assert_eq!(pump_at(&mut server, done, &mut client, one), b"+PONG\r\n");

        server.handle_timeout(t0 + handshake - Duration::from_millis(1));
        assert!(!server.is_closed(silent) && !server.is_closed(half));
        assert_eq!(server.poll_timeout(), Some(t0 + handshake));
        server.handle_timeout(t0 + handshake);
        assert!(server.is_closed(silent), "silent");
        assert!(server.is_closed(half), "half a handshake");
        assert!(!server.is_closed(done), "a handshake done in time");
        while server.poll_io().is_some() {}
        assert_eq!(shares.counters.figures().closed[Close::Tls as usize], 2);
        assert_eq!(server.poll_timeout(), None, "nothing left to time");
        client.writer().write_all(b"PING\r\n").unwrap();
        assert_eq!(pump_at(&mut server, done, &mut client, t0 + handshake * 10), b"+PONG\r\n");
    }

    #[test]
    fn the_idle_timeout_still_closes_a_handshake_first_when_it_is_shorter() {
        let (server_config, _) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let idle = Duration::from_secs(3);
        let mut server = shares.server_timed(Timing::new(Some(idle)));
        let t0 = Instant::now();
        let silent = server.accept(None, t0, Protocol::Kvio).unwrap();
        assert_eq!(server.poll_timeout(), Some(t0 + idle));
        server.handle_timeout(t0 + idle);
        assert!(server.is_closed(silent));
    }

    #[test]
    fn a_handshake_kept_going_with_records_is_closed_within_a_few_of_them() {
        // The bytes a handshake may take are rustls's bound: records it
        // skips are counted, others are errors, a message is at most 64 KiB.
        // Should a rustls upgrade let one of these through, this fails.
        let (server_config, client_config) = configs();
        let shares = Shares::new(Security { tls: Some(server_config), ..Security::default() });
        let mut server = shares.server_timed(Timing::new(None));
        let now = Instant::now();
        let mut huge = vec![0x16, 3, 3, 0x40, 0];
        huge.resize(5 + 0x4000, 0);
        let fillers: [(&str, &[u8], usize); 6] = [
            ("empty handshake records", &[0x16, 3, 3, 0, 0], 100),
            ("warning alerts", &[0x15, 3, 3, 0, 2, 1, 90], 100),
            ("ChangeCipherSpec records", &[0x14, 3, 3, 0, 1, 1], 100),
            ("application data", &[0x17, 3, 3, 0, 4, 1, 2, 3, 4], 100),
            ("heartbeats", &[0x18, 3, 3, 0, 1, 1], 100),
            ("a handshake message without end", &huge, 80 * 1024),
        ];
        for (what, filler, most) in fillers {
            let handle = server.accept(None, now, Protocol::Resp).unwrap();
            let mut client = ClientConnection::new(client_config.clone(), name()).unwrap();
            let mut hello = Vec::new();
            client.write_tls(&mut hello).unwrap();
            server.received(handle, &hello, now);
            let mut sent = 0;
            while sent < 1 << 20 && !server.is_closed(handle) {
                server.received(handle, filler, now);
                while server.wants_write(handle) {
                    let n = server.transmit(handle).len();
                    server.advance(handle, n, now);
                }
                sent += filler.len();
            }
            assert!(server.is_closed(handle), "{what}: still open after {sent} bytes");
            assert!(sent <= most, "{what}: closed after {sent} bytes");
        }
    }

    #[test]
    fn secret_and_tls_together_and_a_refusal_is_delivered_after_the_handshake() {
        let (server_config, client_config) = configs();
        let secret = Some(Arc::new(Secret::from_file_contents(b"pw-pw-pw").unwrap()));
        let shares = Shares::new(Security { tls: Some(server_config.clone()), secret, protected: false });
        let mut server = shares.server();
        let handle = server.accept(None, Instant::now(), Protocol::Resp).unwrap();
        let mut client =
            ClientConnection::new(client_config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
        client.writer().write_all(b"GET k\r\nAUTH pw-pw-pw\r\nGET k\r\n").unwrap();
        assert_eq!(pump(&mut server, handle, &mut client), b"-NOAUTH Authentication required.\r\n+OK\r\n$-1\r\n");

        let shares = Shares::new(Security { tls: Some(server_config), secret: None, protected: true });
        let mut server = shares.server();
        let handle = server.accept(Some("10.1.1.1:1".parse().unwrap()), Instant::now(), Protocol::Resp).unwrap();
        let mut client = ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
        assert!(pump(&mut server, handle, &mut client).starts_with(b"-DENIED"));
    }
}
