//! A write-ahead-log block file (`sluice::fuzzing::wal`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::wal(data));
