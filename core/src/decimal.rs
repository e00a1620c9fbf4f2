//! Decimal numbers written into replies without allocation or `core::fmt`
//! (which would cost a firmware several KiB of .text).

/// A decimal number, formatted without allocation.
pub struct Decimal {
    bytes: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn new(n: u64) -> Decimal {
        let mut bytes = [0u8; 20];
        let mut start = bytes.len();
        let mut n = n;
        loop {
            start -= 1;
            bytes[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal { bytes, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}
