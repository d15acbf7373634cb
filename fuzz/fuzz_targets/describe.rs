//! A function or type description, then a record (`sluice::fuzzing::describe`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::describe(data));
