//! The host/guest contract, shared by the SDK (guest side) and the engine (host side).
//!
//! Everything that crosses the Wasm boundary is defined here, once, and versioned by
//! [`ABI_VERSION`]. A plugin is a core WebAssembly module (target `wasm32-unknown-unknown`).
//! ABI 2, a plugin as a component (target `wasm32-wasip2`, see [`crate::abi2`]), carries the
//! same bytes: the buffers below, one call per partition.
//!
//! # Exports of a plugin
//! | export | signature | meaning |
//! |---|---|---|
//! | `memory` | memory | the guest's linear memory |
//! | `sluice_abi_version` | `() -> i32` | must equal [`ABI_VERSION`] |
//! | `sluice_input` | `(len: i32) -> i32` | a guest buffer of at least `len` bytes for the next call's input |
//! | `sluice_describe_<fn>` | `() -> i64` | a [`FunctionInfo`] (postcard), as a [packed result](pack) |
//! | `sluice_call_<fn>` | `(len: i32) -> i64` | run `<fn>` over the first `len` input bytes |
//! | `sluice_params_<fn>` (optional) | `() -> i64` | the [`TypeDesc`] of `<fn>`'s parameters (postcard), as a packed result |
//! | `sluice_fallible_<fn>` (optional) | `() -> i32` | `<fn>` (a map, flat_map or filter) returns `Result`: its output ends with its records' errors |
//!
//! A fallible function's output is the kind's output for the records that succeeded (a filter:
//! keep byte 0 for a failed record), then one frame of `(u32 record index, String message)` per
//! failed record, then the byte length of those frames as a `u32` (little-endian). The host
//! treats each as that one record's failure, under the stage's `on_error`.
//!
//! A function with parameters (a last argument `&P`; the stage's `params` table) has the
//! optional `sluice_params_<fn>` export; the host then puts one frame holding the postcard of the stage's parameters
//! before the partition in every call's input. Plugins without it load as before.
//!
//! The host writes one whole partition into the input buffer and calls `sluice_call_<fn>` once:
//! one call per partition, never per record. The output stays in a guest buffer until the next call.
//!
//! # Imports a plugin may use (module `sluice`)
//! `panic(ptr: i32, len: i32)` — the panic message, sent just before the guest traps;
//! `log(level: i32, ptr: i32, len: i32)` — a log line (level: 0 error, 1 warn, 2 info, 3 debug);
//! `metric(kind: i32, name_ptr: i32, name_len: i32, value_ptr: i32)` — a metric recorded during
//! the call (kind: 0 counter, 1 gauge, 2 histogram; at `value_ptr`, 16 bytes: the value or sum as
//! an `f64`, then the count as a `u64`, little-endian), sent at the end of the call.
//!
//! # Buffers
//! A *partition* is a sequence of frames: `u32` little-endian length, then that many bytes of one
//! record encoded with postcard. A keyed record is the 2-tuple `(K, V)`: its frame holds the
//! postcard of `K` followed by the postcard of `V`, so the host finds the key bytes by skipping
//! one value of type `K` (see [`TypeDesc`]); it never decodes values.
//!
//! | kind | input | output |
//! |---|---|---|
//! | map | frames | one frame per input record |
//! | flat_map | frames | zero or more frames per input record |
//! | filter | frames | one byte per input record: 1 keep, 0 drop |
//! | reduce | groups: `u32` count, then that many frames of `V` | one frame of `V` per group |
//! | map_partitions, transform | frames (a partition, or a whole batch) | frames |
//! | update_state | per key: `u32` count, that many frames of `V`, one frame of `Option<S>` | one frame of `Option<S>` per key |
//! | key_by, timestamp | frames | one frame (the key; the `u64` event time) per input record |
//! | map_with_state | per key: one frame of `K`, `u32` count, that many frames of `V` (none: the key timed out), one frame of `Option<S>` | per key: one frame of `Option<S>`, `u32` count, that many frames of output records |

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use crate::describe::TypeDesc;

/// Version of this contract. A plugin built against another version is refused.
pub const ABI_VERSION: u32 = 1;

/// Name of the export that returns the plugin's ABI version.
pub const EXPORT_ABI_VERSION: &str = "sluice_abi_version";
/// Name of the export that hands out the input buffer.
pub const EXPORT_INPUT: &str = "sluice_input";
/// Prefix of the export that describes one function.
pub const EXPORT_DESCRIBE_PREFIX: &str = "sluice_describe_";
/// Prefix of the export that describes one function's parameters (optional).
pub const EXPORT_PARAMS_PREFIX: &str = "sluice_params_";
/// Prefix of the export that marks a function as fallible (optional).
pub const EXPORT_FALLIBLE_PREFIX: &str = "sluice_fallible_";
/// Prefix of the export that runs one function over a partition.
pub const EXPORT_CALL_PREFIX: &str = "sluice_call_";
/// Module name of the host imports.
pub const IMPORT_MODULE: &str = "sluice";

/// Bit set in a packed result's length when the buffer holds an error message, not output.
pub const ERROR_FLAG: u32 = 1 << 31;

/// Packs a guest pointer and length into the `i64` a call returns.
pub const fn pack(ptr: u32, len: u32) -> u64 {
    ((ptr as u64) << 32) | len as u64
}

/// Splits a packed result into pointer, length and whether it is an error message.
pub const fn unpack(packed: u64) -> (u32, u32, bool) {
    let len = packed as u32;
    ((packed >> 32) as u32, len & !ERROR_FLAG, len & ERROR_FLAG != 0)
}

/// The shape of a function: what the host must hand it and what it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FunctionKind {
    /// One record in, one record out.
    Map,
    /// One record in, any number out.
    FlatMap,
    /// One record in, keep or drop.
    Filter,
    /// Two values in, one out; associative and commutative.
    Reduce,
    /// All records of a partition in, any number out.
    MapPartitions,
    /// All records of a batch in, any number out.
    Transform,
    /// A key's new values and its old state in, its new state (or none: delete) out.
    UpdateState,
    /// One record in, its key out (the host pairs them: `(K, T)`).
    KeyBy,
    /// One record in, its event time (ms since the Unix epoch) out.
    Timestamp,
    /// A key, its new values (none when it times out) and its state in; new state and records out.
    MapWithState,
}

impl FunctionKind {
    /// The snake_case name used in pipeline files and in the SDK attributes.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::FlatMap => "flat_map",
            Self::Filter => "filter",
            Self::Reduce => "reduce",
            Self::MapPartitions => "map_partitions",
            Self::Transform => "transform",
            Self::UpdateState => "update_state",
            Self::KeyBy => "key_by",
            Self::Timestamp => "timestamp",
            Self::MapWithState => "map_with_state",
        }
    }
}

impl core::fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a plugin says about one of its functions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// The Rust name of the function, as referenced by `function = "..."`.
    pub name: String,
    /// Its shape.
    pub kind: FunctionKind,
    /// ABI version the SDK that built it speaks.
    pub abi_version: u32,
    /// Type of one input record (for reduce and update_state: of one value; for map_with_state:
    /// the keyed record `(K, V)`).
    pub input: TypeDesc,
    /// Type of one output record (for filter: the input type; for reduce: the value type; for
    /// update_state: the state type).
    pub output: TypeDesc,
}

/// Length of a frame header.
pub const FRAME_HEADER: usize = 4;

/// Iterates the frames of a partition buffer. Stops at the first truncated frame; callers that
/// must tell a clean end from a truncated one compare [`Frames::rest`] with empty.
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    /// Frames of `buf`.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// Bytes not yet consumed (non-empty after iteration means a truncated buffer).
    pub const fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Reads one `u32` count (a reduce group header).
    pub fn read_u32(&mut self) -> Option<u32> {
        let (head, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(u32::from_le_bytes(*head))
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_first_chunk::<FRAME_HEADER>()?;
        let len = u32::from_le_bytes(*head) as usize;
        if rest.len() < len {
            return None;
        }
        let (frame, rest) = rest.split_at(len);
        self.rest = rest;
        Some(frame)
    }
}

/// A postcard flavor that appends to a borrowed `Vec`, so a value is encoded in place.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `value`, postcard-encoded in place, as one frame: the one frame writer of guest and
/// host. On error `out` is left as it was.
#[inline]
pub fn encode_frame<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> postcard::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    if let Err(err) = postcard::serialize_with_flavor(value, Append(out)) {
        out.truncate(start);
        return Err(err);
    }
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends one frame holding `payload` to `out`.
#[inline]
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one frame whose payload is the concatenation of `parts` (a key and a value).
#[inline]
pub fn push_frame_parts(out: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    out.extend_from_slice(&((a.len() + b.len()) as u32).to_le_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
}

/// A plugin function compiled into the host process: the same SDK code as the Wasm export,
/// called directly. Used for native twins in benchmarks and tests.
#[derive(Clone, Copy, Debug)]
pub struct NativeFunction {
    /// Returns the function's description.
    pub describe: fn() -> FunctionInfo,
    /// The type of its parameters, if it takes any (its input then starts with their frame).
    pub params: Option<fn() -> TypeDesc>,
    /// Whether it returns `Result` (its output then ends with its records' errors).
    pub fallible: bool,
    /// Runs the function over one input buffer, appending to the output buffer.
    pub call: fn(&[u8], &mut Vec<u8>) -> Result<(), String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_pointer_length_and_error_flag() {
        assert_eq!(unpack(pack(7, 42)), (7, 42, false));
        assert_eq!(unpack(pack(u32::MAX, 3 | ERROR_FLAG)), (u32::MAX, 3, true));
    }

    #[test]
    fn frames_stop_at_a_truncated_frame() {
        let mut buf = Vec::new();
        push_frame(&mut buf, b"ab");
        push_frame_parts(&mut buf, b"c", b"de");
        buf.extend_from_slice(&[9, 0, 0, 0, 1]);
        let mut frames = Frames::new(&buf);
        assert_eq!(frames.next(), Some(&b"ab"[..]));
        assert_eq!(frames.next(), Some(&b"cde"[..]));
        assert_eq!(frames.next(), None);
        assert_eq!(frames.rest(), &[9, 0, 0, 0, 1]);
    }
}
