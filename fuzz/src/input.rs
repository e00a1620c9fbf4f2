//! The byte reader that turns fuzz input into test parameters.

/// Reads little-endian numbers and byte runs from the front of the input;
/// past the end it yields zeros and empty slices, so any input decodes.
#[derive(Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer when the input runs out).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

/// Chunk sizes for splitting a stream, cycled: `0` is an empty push,
/// `255` is "everything left". All zeros would never progress, so they
/// mean one whole push.
#[derive(Debug, Clone)]
pub struct Chunks {
    sizes: Vec<u8>,
    next: usize,
}

impl Chunks {
    pub fn new(sizes: &[u8]) -> Self {
        let sizes = if sizes.iter().all(|&s| s == 0) { vec![255] } else { sizes.to_vec() };
        Chunks { sizes, next: 0 }
    }

    pub fn whole() -> Self {
        Chunks::new(&[255])
    }

    /// The end of the next chunk starting at `start` in a stream of `len` bytes.
    pub fn next_end(&mut self, start: usize, len: usize) -> usize {
        let size = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        if size == 255 { len } else { (start + usize::from(size)).min(len) }
    }
}
