//! The two kinds of storage the caller lends the core: where response bytes
//! go ([`Output`]) and where a payload that arrives in pieces is assembled
//! ([`PayloadBuffer`]). The core never allocates: these traits are how a host
//! decides whether that storage is a fixed array or a growable `Vec`.

/// The output has no room for the bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutputFull;

impl core::fmt::Display for OutputFull {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("output buffer full")
    }
}

impl core::error::Error for OutputFull {}

/// Where response frames are appended; the IO side drains it from the front.
pub trait Output {
    /// Bytes appended and not yet taken by the IO side.
    fn pending(&self) -> usize;

    /// Appends `len` bytes (zeroed or stale: the caller overwrites them all)
    /// and returns them to be filled, or refuses if it has no room.
    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull>;

    /// Removes the last `len` bytes again (used to undo an append whose
    /// filling failed, so no half-written frame ever goes out).
    fn truncate_back(&mut self, len: usize);
}

impl<const N: usize> Output for heapless::Vec<u8, N> {
    fn pending(&self) -> usize {
        self.len()
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull> {
        let start = self.len();
        let end = start.checked_add(len).ok_or(OutputFull)?;
        self.resize(end, 0).map_err(|_| OutputFull)?;
        Ok(&mut self[start..end])
    }

    fn truncate_back(&mut self, len: usize) {
        let keep = self.len().saturating_sub(len);
        self.truncate(keep);
    }
}

#[cfg(feature = "alloc")]
impl Output for alloc::vec::Vec<u8> {
    fn pending(&self) -> usize {
        self.len()
    }

    fn append(&mut self, len: usize) -> Result<&mut [u8], OutputFull> {
        let start = self.len();
        let end = start.checked_add(len).ok_or(OutputFull)?;
        self.resize(end, 0);
        Ok(&mut self[start..end])
    }

    fn truncate_back(&mut self, len: usize) {
        let keep = self.len().saturating_sub(len);
        self.truncate(keep);
    }
}

/// Storage for a payload that arrives split over several pushes.
///
/// A frame that arrives whole in one slice is never copied here; this is
/// only for the bytes the parser must keep between pushes.
pub trait PayloadBuffer {
    /// Storage of exactly `len` bytes for the payload being assembled, or
    /// `None` if this buffer cannot hold that many (the parser then refuses
    /// the frame as too long). Called again with the same `len` while the
    /// same payload is assembled: keep the bytes written so far.
    fn payload(&mut self, len: usize) -> Option<&mut [u8]>;

    /// The longest payload [`payload`](Self::payload) can ever hold; the
    /// parser refuses longer frames from their header, however they arrive.
    fn max_payload(&self) -> usize;
}

impl PayloadBuffer for [u8] {
    fn payload(&mut self, len: usize) -> Option<&mut [u8]> {
        self.get_mut(..len)
    }

    fn max_payload(&self) -> usize {
        self.len()
    }
}

impl<const N: usize> PayloadBuffer for [u8; N] {
    fn payload(&mut self, len: usize) -> Option<&mut [u8]> {
        self.get_mut(..len)
    }

    fn max_payload(&self) -> usize {
        N
    }
}

impl<const N: usize> PayloadBuffer for heapless::Vec<u8, N> {
    fn payload(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > N {
            return None;
        }
        if self.len() < len {
            // Cannot fail: len <= N was checked above.
            self.resize(len, 0).ok()?;
        }
        Some(&mut self[..len])
    }

    fn max_payload(&self) -> usize {
        N
    }
}

#[cfg(feature = "alloc")]
impl PayloadBuffer for alloc::vec::Vec<u8> {
    fn payload(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.len() < len {
            self.resize(len, 0);
        }
        Some(&mut self[..len])
    }

    fn max_payload(&self) -> usize {
        usize::MAX
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn heapless_output_refuses_past_capacity_and_keeps_contents() {
        let mut out: heapless::Vec<u8, 8> = heapless::Vec::new();
        out.append(5).unwrap().copy_from_slice(b"hello");
        assert_eq!(out.append(4), Err(OutputFull));
        assert_eq!(&out[..], b"hello");
        out.truncate_back(2);
        assert_eq!(&out[..], b"hel");
    }

    #[test]
    fn fixed_payload_buffer_refuses_longer_payloads() {
        let mut buf = [0u8; 4];
        assert!(PayloadBuffer::payload(&mut buf, 4).is_some());
        assert!(PayloadBuffer::payload(&mut buf, 5).is_none());
    }
}
