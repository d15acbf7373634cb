//! Functions whose output is not a function of their input: the test plugin of a pipeline's
//! `[capabilities]`. As a component (`clock-abi2.wasm`) it imports `wasi:clocks`, so it is
//! refused unless the pipeline gives it `clocks`; its random numbers come from the host's
//! entropy only with `random` (else from the same fixed seed for every instance).
//! As an ABI 1 module (no WASI) reading the clock traps.

use std::hash::BuildHasher;
use std::time::{SystemTime, UNIX_EPOCH};

/// The line with the wall-clock time it was seen, in ms since the Unix epoch.
#[sluice_sdk::map]
pub fn stamp(line: &str) -> (String, u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    (line.to_string(), now)
}

/// A random number per line: the line hashed with a `HashMap`'s random keys.
#[sluice_sdk::map]
pub fn draw(line: &str) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(line)
}
