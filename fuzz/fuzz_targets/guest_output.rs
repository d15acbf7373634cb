//! Lines, then one edit per plugin call: what the host makes of a plugin's output (`sluice::fuzzing::guest_output`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::guest_output(data));
