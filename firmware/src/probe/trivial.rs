//! The size probes' stand-in for a payload format: the core's parser, store
//! and connection without protobuf. `key=value` stores and answers one byte
//! (1 = stored); any other payload is a key, answered with its value (empty
//! when absent). Shared by `size-core` and `size-core-bss` through `#[path]`.

use kvio_core::frame::{FrameError, encode_frame, write_frame};
use kvio_core::{Handler, KeyValueStore, Next, Output, OutputFull};

pub struct Trivial<S>(pub S);

impl<S: KeyValueStore> Handler for Trivial<S> {
    fn request<O: Output + ?Sized>(&mut self, payload: &[u8], _now: u64, out: &mut O) -> Result<Next, OutputFull> {
        match payload.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let stored = self.0.put(&payload[..eq], &payload[eq + 1..]).is_ok();
                write_frame(out, 1, |dst| dst[0] = stored as u8)?
            }
            None => self.0.get(payload, |value| encode_frame(value.unwrap_or_default(), out))?,
        }
        Ok(Next::Continue)
    }

    fn parse_error<O: Output + ?Sized>(&mut self, error: FrameError, out: &mut O) -> Result<(), OutputFull> {
        encode_frame(error.as_str().as_bytes(), out)
    }
}

pub const MAX_FRAME_LEN: u32 = 256;
/// A put, then a get of the same key.
pub const INPUT: &[u8] = b"\x16\x00\x00\x00DiskType=NVMe SSD@EOF@\x0d\x00\x00\x00DiskType@EOF@";
/// Stored, then the value.
pub const EXPECTED: &[u8] = b"\x06\x00\x00\x00\x01@EOF@\x0d\x00\x00\x00NVMe SSD@EOF@";

/// Feeds `INPUT` one byte per call and checks the answers.
pub fn serve<H: Handler>(handler: &mut H) -> bool {
    use core::hint::black_box;
    use kvio_core::{Connection, Outcome};
    let mut connection = Connection::new(MAX_FRAME_LEN, 128);
    let mut payload = [0u8; MAX_FRAME_LEN as usize];
    let mut output: heapless::Vec<u8, 256> = heapless::Vec::new();
    let mut ok = true;
    for byte in black_box(INPUT).chunks(1) {
        let received = connection.receive(byte, 0, &mut payload, handler, &mut output);
        ok &= received.outcome == Outcome::NeedMore && received.consumed == 1;
    }
    ok && output == black_box(EXPECTED)
}
