#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvio_fuzz::journal::check(data));
