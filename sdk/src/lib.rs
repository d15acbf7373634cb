#![doc = include_str!("../README.md")]

extern crate alloc;

pub mod abi;
pub mod abi2;
mod describe;
mod flume;
#[doc(hidden)]
pub mod guest;
mod kafka;
mod kinesis;
pub mod metrics;

pub use describe::{Describe, TypeDesc, Variant};
pub use flume::FlumeRecord;
pub use kafka::KafkaRecord;
pub use kinesis::KinesisRecord;
pub use sluice_sdk_macros::{
    Describe, filter, flat_map, key_by, map, map_partitions, map_with_state, reduce, timestamp, transform, update_state,
};

#[doc(hidden)]
pub use guest as __private;

/// The plugin's allocator (feature `allocator`, on by default): talc, much faster than the
/// default dlmalloc for the allocate-per-record pattern of stream functions.
#[cfg(all(feature = "allocator", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Log levels of [`log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something looks wrong.
    Warn = 1,
    /// Worth knowing.
    Info = 2,
    /// Detail for debugging.
    Debug = 3,
}

/// Writes a line to the host's log, tagged with the plugin's name. Call it per partition or on
/// rare events, not per record: each call crosses the Wasm boundary. On the host (native
/// builds, tests) it prints to stderr.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

#[cfg(all(target_os = "wasi", target_env = "p2", not(feature = "abi2")))]
compile_error!(
    "sluice-sdk: a wasm32-wasip2 plugin is a WebAssembly component (ABI 2): enable the `abi2` feature \
     of sluice-sdk, e.g. `sluice-sdk = { version = \"...\", features = [\"abi2\"] }`, or give the plugin \
     a feature `abi2 = [\"sluice-sdk/abi2\"]` and build with `--features abi2`"
);

/// ABI 2 (wasm32-wasip2): the component's exports and its registry of functions.
#[cfg(all(target_os = "wasi", target_env = "p2", feature = "abi2"))]
mod component;
mod host;
