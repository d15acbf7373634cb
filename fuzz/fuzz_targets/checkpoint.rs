//! A checkpoint file, or a format byte and a payload (`sluice::fuzzing::checkpoint`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::checkpoint(data));
