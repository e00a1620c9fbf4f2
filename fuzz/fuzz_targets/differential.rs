#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvio_fuzz::differential::check(data));
