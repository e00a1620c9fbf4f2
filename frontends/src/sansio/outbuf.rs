//! The bytes a session owes its socket, drained from the front: what the
//! session writes answers into, and what TLS seals them into. Its own file
//! so that `session` and `tls` both import it and neither imports the other
//! back.

use kvio_core::{Output, OutputFull};

/// Response bytes waiting for the socket, drained from the front.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    start: usize,
}

impl OutBuf {
    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Bytes of heap held.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Forgets everything (keeps the allocation).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// The bytes not sent yet.
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Appends `bytes` after what is waiting.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `n` bytes were sent.
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.clear();
        }
    }
}

impl Output for OutBuf {
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Written bytes at the front are dead: reclaim them before growing.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let at = self.buf.len();
        let end = at.checked_add(len).ok_or(OutputFull)?;
        self.buf.resize(end, 0);
        Ok(&mut self.buf[at..end])
    }

    fn truncate_back(&mut self, len: usize) {
        let keep = self.buf.len().saturating_sub(len).max(self.start);
        self.buf.truncate(keep);
    }
}
