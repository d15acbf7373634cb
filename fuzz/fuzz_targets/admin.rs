//! One request to the admin router (`sluice::fuzzing::admin`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::admin(data));
