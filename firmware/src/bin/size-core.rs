//! Size probe: kvio-core alone — frame parser, the store in a `static`
//! behind the core's critical-section wrapper, the sans-IO connection — with
//! a trivial handler instead of protobuf, fed byte by byte. No allocator.
#![no_std]
#![no_main]

#[path = "../probe/trivial.rs"]
mod trivial;

use cortex_m_rt::entry;
use kvio_core::Shared;
use kvio_core::store::ArrayStore;
use kvio_firmware::{exit, print};

/// 64 slots (up to 55 entries) and a 4 KiB byte budget.
static STORE: Shared<ArrayStore<64, 4096, { trivial::MAX_FRAME_LEN }>> = Shared::new(ArrayStore::new());

#[entry]
fn main() -> ! {
    let ok = trivial::serve(&mut trivial::Trivial(&STORE));
    print(if ok { "size-core: ok\n" } else { "size-core: mismatch\n" });
    exit(ok)
}
