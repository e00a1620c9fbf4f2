//! TLS as a byte transform between the driver's bytes and a
//! [`Session`](crate::sansio::session::Session)'s parser: ciphertext in,
//! plaintext to the parser; the parser's answers in, ciphertext out. It is
//! rustls's [`ServerConnection`], itself sans-IO (`read_tls`,
//! `process_new_packets`, `reader`, `writer`, `write_tls`), so no driver
//! changes how it waits: a readiness driver still sends what
//! `Server::transmit` holds, a completion driver still takes the buffer
//! (`Server::take_transmit`), only the bytes are records now.
//!
//! Bounds: a handshake is bounded in time by the session's idle timeout
//! (the session sees no plaintext, so nothing moves its deadline but what
//! the server sends), and in bytes by rustls (a record is at most 16 KiB
//! and 2 KiB of overhead, a handshake message at most 64 KiB; more, or
//! anything that is not TLS, is an error and the connection ends after
//! the alert). Plaintext waits in the session's output until the handshake
//! is done; once sealed, at most [`SEAL_AHEAD`] bytes of records wait here,
//! so back-pressure still reaches the session.
//!
//! What TLS allocates (and plaintext does not): rustls's buffers per
//! connection (a few tens of KiB while records move, given back as they
//! drain), the connection itself (boxed by the session), and the records
//! waiting for the socket in [`Tls::out`]; the decrypted bytes go through
//! one buffer per connection, kept.
//!
//! What it does not own: certificates and their reload (the host's
//! `tls` module builds the [`rustls::ServerConfig`]), time and closing
//! (the session).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::ServerConnection;

use crate::sansio::session::OutBuf;

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
    /// alert) are queued in [`Tls::out`]. An error ends the connection:
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
