//! A pipeline file: parsed, validated and built (`sluice::fuzzing::pipeline`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::pipeline(data));
