//! Size probe: the bare runtime, no kvio. It does the same chores as the
//! other probes (an input the optimizer cannot see through, a reachable
//! panic, a result line, an exit code) so that their size difference is kvio.
#![no_std]
#![no_main]

use core::hint::black_box;
use cortex_m_rt::entry;
use kvio_firmware::{exit, golden, print};

#[entry]
fn main() -> ! {
    let request = black_box(golden::PUT_REQUEST);
    assert!(request.len() > 4, "request shorter than a header");
    // Stands in for "serve the request": echo it, and check the echo.
    let mut output = [0u8; 64];
    let len = request.len().min(output.len());
    output[..len].copy_from_slice(&request[..len]);
    let ok = black_box(&output[..len]) == request;
    print(if ok { "baseline: ok\n" } else { "baseline: mismatch\n" });
    exit(ok)
}
