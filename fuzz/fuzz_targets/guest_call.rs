//! One call of a real ABI 1 module: reading its output buffer (`sluice::fuzzing::guest_call`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::guest_call(data));
