//! Size probe: `size-core` with the store built at run time by
//! `Store::with_storage` over `cortex_m::singleton!` arrays (zero-initialized,
//! in `.bss`) instead of a const `static ArrayStore` — the path for a device
//! that picks its limits at run time. Same RAM, also all in `.bss`.
#![no_std]
#![no_main]

#[path = "../probe/trivial.rs"]
mod trivial;

use cortex_m::singleton;
use cortex_m_rt::entry;
use kvio_core::Shared;
use kvio_core::store::{Limits, Slot, Store};
use kvio_firmware::{exit, print};

type DeviceStore = Store<&'static mut [Slot; 64], &'static mut [u8; 4096]>;

#[entry]
fn main() -> ! {
    let slots = singleton!(: [Slot; 64] = [Slot::EMPTY; 64]).expect("first call");
    let arena = singleton!(: [u8; 4096] = [0; 4096]).expect("first call");
    let limits = Limits::for_frame(trivial::MAX_FRAME_LEN, usize::MAX, usize::MAX);
    let store: &'static Shared<DeviceStore> =
        singleton!(: Shared<DeviceStore> = Shared::new(Store::with_storage(slots, arena, limits))).expect("first call");
    let ok = trivial::serve(&mut trivial::Trivial(store));
    print(if ok { "size-core-bss: ok\n" } else { "size-core-bss: mismatch\n" });
    exit(ok)
}
