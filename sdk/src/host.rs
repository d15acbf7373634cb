//! The host's imports behind three functions, `log`, `metric` and `panic`, whatever the target,
//! so that the rest of the SDK calls them without a `cfg`:
//!
//! - ABI 1 (wasm32-unknown-unknown, a core module): the raw imports of module `sluice`, which
//!   read their arguments out of our memory during the call (see [`crate::abi`]);
//! - ABI 2 (wasm32-wasip2 with feature `abi2`, a component): the WIT interface `host`;
//! - natively (tests, native twins): log lines and panics go to stderr; metrics stay in the
//!   table that [`crate::metrics::recorded`] shows until a call's flush drops them. A wasip2
//!   build without `abi2` compiles against this too, so that its one error is the
//!   `compile_error!` asking for the feature.
//!
//! `panic` is what the panic hook (`guest::init`) sends just before the guest traps.

#[cfg(all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))))]
pub(crate) use abi1::{log, metric, panic};
#[cfg(all(target_os = "wasi", target_env = "p2", feature = "abi2"))]
pub(crate) use abi2::{log, metric, panic};
#[cfg(not(any(
    all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))),
    all(target_os = "wasi", target_env = "p2", feature = "abi2")
)))]
#[allow(unused_imports, reason = "natively no panic hook calls `panic`")]
pub(crate) use native::{log, metric, panic};

use crate::Level;
use crate::metrics::Recorded;

#[cfg(all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))))]
mod abi1 {
    use super::{Level, Recorded};

    #[link(wasm_import_module = "sluice")]
    unsafe extern "C" {
        #[link_name = "panic"]
        fn host_panic(ptr: *const u8, len: usize);
        #[link_name = "log"]
        fn host_log(level: u32, ptr: *const u8, len: usize);
        #[link_name = "metric"]
        fn host_metric(kind: u32, name: *const u8, len: usize, value: *const u8);
    }

    /// `sluice.log`: the level (0 error … 3 debug) and the message.
    #[inline]
    pub(crate) fn log(level: Level, message: &str) {
        // SAFETY: the host reads `len` bytes at `ptr` from our memory during the call.
        unsafe { host_log(level as u32, message.as_ptr(), message.len()) }
    }

    /// `sluice.metric`: the kind, the name, and the value (or sum) and count as 16 bytes,
    /// little-endian.
    #[inline]
    pub(crate) fn metric(metric: &Recorded) {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&metric.value.to_le_bytes());
        value[8..].copy_from_slice(&metric.count.to_le_bytes());
        // SAFETY: the host reads `name` and the 16 bytes of `value` from our memory during the call.
        unsafe { host_metric(metric.kind as u32, metric.name.as_ptr(), metric.name.len(), value.as_ptr()) }
    }

    /// `sluice.panic`.
    #[inline]
    pub(crate) fn panic(message: &str) {
        // SAFETY: the host reads `len` bytes at `ptr` from our memory during the call.
        unsafe { host_panic(message.as_ptr(), message.len()) }
    }
}

#[cfg(all(target_os = "wasi", target_env = "p2", feature = "abi2"))]
mod abi2 {
    use super::{Level, Recorded};
    use crate::component::bindings::sluice::plugin::host as wit;
    use crate::metrics::Kind;

    /// `host.log`.
    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Error => wit::Level::Error,
            Level::Warn => wit::Level::Warn,
            Level::Info => wit::Level::Info,
            Level::Debug => wit::Level::Debug,
        };
        wit::log(level, message);
    }

    /// `host.metric`.
    pub(crate) fn metric(metric: &Recorded) {
        let kind = match metric.kind {
            Kind::Counter => wit::MetricKind::Counter,
            Kind::Gauge => wit::MetricKind::Gauge,
            Kind::Histogram => wit::MetricKind::Histogram,
        };
        wit::metric(kind, &metric.name, metric.value, metric.count);
    }

    /// `host.panic`.
    pub(crate) fn panic(message: &str) {
        wit::panic(message);
    }
}

#[cfg(not(any(
    all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))),
    all(target_os = "wasi", target_env = "p2", feature = "abi2")
)))]
mod native {
    use super::{Level, Recorded};

    pub(crate) fn log(level: Level, message: &str) {
        std::eprintln!("{level:?}: {message}");
    }

    pub(crate) fn metric(_metric: &Recorded) {}

    #[allow(dead_code, reason = "only the panic hook on wasm calls it")]
    pub(crate) fn panic(message: &str) {
        std::eprintln!("panic: {message}");
    }
}
