#![doc = include_str!("../README.md")]

extern crate alloc;

pub mod abi;
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
    #[cfg(target_family = "wasm")]
    // SAFETY: the host reads `len` bytes at `ptr` from our memory during the call.
    unsafe {
        host::log(level as u32, message.as_ptr(), message.len())
    };
    #[cfg(not(target_family = "wasm"))]
    eprintln!("{level:?}: {message}");
}

#[cfg(target_family = "wasm")]
mod host {
    #[link(wasm_import_module = "sluice")]
    unsafe extern "C" {
        pub(crate) fn panic(ptr: *const u8, len: usize);
        pub(crate) fn log(level: u32, ptr: *const u8, len: usize);
        pub(crate) fn metric(kind: u32, name: *const u8, len: usize, value: *const u8);
    }
}
