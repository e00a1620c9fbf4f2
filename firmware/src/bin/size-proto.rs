//! Size probe: kvio-core + kvio-proto — the store in a `static`, the
//! sans-IO connection fed the golden put and get byte by byte, and the
//! protobuf handler, which decodes in place: no allocator.
#![no_std]
#![no_main]

use core::hint::black_box;
use cortex_m_rt::entry;
use kvio_core::store::ArrayStore;
use kvio_core::{Connection, Outcome, Shared};
use kvio_firmware::{exit, golden, print};
use kvio_proto::KeyValueHandler;

const MAX_FRAME_LEN: u32 = 256;
/// The same store as the core-only probe: 64 slots, a 4 KiB byte budget.
static STORE: Shared<ArrayStore<64, 4096, MAX_FRAME_LEN>> = Shared::new(ArrayStore::new());

#[entry]
fn main() -> ! {
    let mut connection = Connection::new(MAX_FRAME_LEN, 128);
    let mut handler = KeyValueHandler::new(&STORE);
    let mut payload = [0u8; MAX_FRAME_LEN as usize];
    let mut output: heapless::Vec<u8, 256> = heapless::Vec::new();
    let mut ok = true;
    for request in [golden::PUT_REQUEST, golden::GET_REQUEST] {
        for byte in black_box(request).chunks(1) {
            let received = connection.receive(byte, 0, &mut payload, &mut handler, &mut output);
            ok &= received.outcome == Outcome::NeedMore && received.consumed == 1;
        }
    }
    let (put, get) = output.split_at(golden::PUT_RESPONSE_OK.len().min(output.len()));
    ok &= put == golden::PUT_RESPONSE_OK && get == golden::GET_RESPONSE_HIT;
    print(if ok { "size-proto: ok\n" } else { "size-proto: mismatch\n" });
    exit(ok)
}
