//! The runtime every kvio firmware shares on QEMU's mps2-an386 (Cortex-M4F):
//! semihosting output and exit, the panic handler, and the golden frames.
//!
//! It owns no kvio logic: the binaries in `src/bin/` use kvio as a device
//! would. Output goes to the host through semihosting, as text or, with the
//! `defmt` feature, as defmt frames that `defmt-print` decodes; the exit code
//! (0 = every check passed) reaches the host as QEMU's exit status.
#![no_std]

#[cfg(all(feature = "defmt", feature = "terse-panic"))]
compile_error!("`defmt` and `terse-panic` each bring a panic handler: pick one");

#[cfg(feature = "defmt")]
use defmt_semihosting as _;
// Prints the panic message and exits 1 (its `exit` feature), so a panic
// fails the run instead of hanging QEMU until the timeout.
#[cfg(not(any(feature = "defmt", feature = "terse-panic")))]
use panic_semihosting as _;

use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};

/// The golden frames of `proto/tests/frames.json`, one constant each
/// (`PUT_REQUEST`, `GET_RESPONSE_HIT`, ...). With the `fail` feature,
/// `PUT_RESPONSE_OK` has one byte corrupted.
pub mod golden {
    include!(concat!(env!("OUT_DIR"), "/golden.rs"));
}

/// Prints one line on the host: semihosting text, or a defmt `println!`
/// with the `defmt` feature (then only `{}` placeholders, which both accept).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::println!($($arg)*);
        #[cfg(not(feature = "defmt"))]
        ::cortex_m_semihosting::hprintln!($($arg)*);
    }};
}

/// Writes `text` to the host's stdout as is, without `core::fmt` (the size
/// probes use this so the formatting machinery is not what they measure).
pub fn print(text: &str) {
    if let Ok(mut stdout) = cortex_m_semihosting::hio::hstdout() {
        // Nothing to do if the host refuses the write: the exit code still tells.
        let _ = stdout.write_all(text.as_bytes());
    }
}

/// An allocator for a firmware that wants a heap; neither the core nor the
/// proto handler needs one (the `kvio` and `size-proto` firmwares have none).
pub use embedded_alloc::LlffHeap as Heap;

/// Declares the global allocator over a static region of `$bytes` bytes
/// (in `.bss`) and `fn init_heap()`, to be called first thing in `main`.
#[macro_export]
macro_rules! global_heap {
    ($bytes:expr) => {
        #[global_allocator]
        static HEAP: $crate::Heap = $crate::Heap::empty();

        fn init_heap() {
            use core::mem::MaybeUninit;
            use core::sync::atomic::{AtomicBool, Ordering};
            static DONE: AtomicBool = AtomicBool::new(false);
            static mut HEAP_MEM: [MaybeUninit<u8>; $bytes] = [MaybeUninit::uninit(); $bytes];
            assert!(!DONE.swap(true, Ordering::AcqRel), "heap initialized twice");
            // SAFETY: the assert above makes this run once, so the region is
            // handed to the allocator once; nothing else names HEAP_MEM (it is
            // local to this function), and `&raw mut` takes its address
            // without creating a reference.
            unsafe { HEAP.init((&raw mut HEAP_MEM) as usize, $bytes) }
        }
    };
}

/// Ends the run: QEMU exits with 0 if `success`, else 1.
pub fn exit(success: bool) -> ! {
    debug::exit(if success { EXIT_SUCCESS } else { EXIT_FAILURE });
    // Only reached without a semihosting host (real hardware, no debugger).
    loop {
        cortex_m::asm::wfi();
    }
}

/// Exits 1 with a fixed line: nothing formats the message, so any
/// `core::fmt` left in the image was asked for by the code itself.
#[cfg(feature = "terse-panic")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    print("panicked\n");
    exit(false)
}

#[cfg(feature = "defmt")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::println!("panicked: {}", defmt::Display2Format(info));
    exit(false)
}
