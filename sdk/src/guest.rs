//! What the SDK's attribute macros expand to: decoding a partition, calling the user's function
//! once per record, encoding the results, and the exports of ABI 1 (on wasm32-unknown-unknown)
//! or the registration of ABI 2 (on wasm32-wasip2, see `component`). Not public API.

use std::cell::RefCell;
use std::string::{String, ToString};
use std::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::abi::{ABI_VERSION, Frames, FunctionInfo, FunctionKind};
use crate::describe::Describe;

/// Appends `value` as one frame.
#[inline]
pub fn write_frame<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    crate::abi::encode_frame(out, value).map_err(|err| format!("cannot encode an output record: {err}"))
}

#[inline]
fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8], index: usize) -> Result<T, String> {
    postcard::from_bytes(frame)
        .map_err(|err| format!("input record {index} does not decode as {}: {err}", std::any::type_name::<T>()))
}

fn check_end(frames: &Frames<'_>) -> Result<(), String> {
    if frames.rest().is_empty() {
        Ok(())
    } else {
        Err(format!("input ends with a truncated frame of {} bytes", frames.rest().len()))
    }
}

/// Runs a map function over a partition.
pub fn map<'a, I, O, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    O: Serialize,
    F: FnMut(I) -> O,
{
    let mut frames = Frames::new(input);
    for (index, frame) in frames.by_ref().enumerate() {
        write_frame(out, &f(decode(frame, index)?))?;
    }
    check_end(&frames)
}

/// Runs a flat_map function over a partition.
pub fn flat_map<'a, I, O, R, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    F: FnMut(I) -> R,
{
    let mut frames = Frames::new(input);
    for (index, frame) in frames.by_ref().enumerate() {
        for item in f(decode(frame, index)?) {
            write_frame(out, &item)?;
        }
    }
    check_end(&frames)
}

/// Runs a filter function over a partition: one keep byte per record.
pub fn filter<'a, I, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    F: FnMut(I) -> bool,
{
    let mut frames = Frames::new(input);
    for (index, frame) in frames.by_ref().enumerate() {
        out.push(u8::from(f(decode(frame, index)?)));
    }
    check_end(&frames)
}

/// Ends the output of a fallible function (one that returns `Result`): its records' errors,
/// each a frame of `(u32 record index, String message)`, then the byte length of those frames
/// as a `u32`. The host reads the trailer off the end (see `abi`'s module docs).
fn finish_failures(out: &mut Vec<u8>, failures: &[(u32, String)]) -> Result<(), String> {
    let start = out.len();
    for failure in failures {
        write_frame(out, failure)?;
    }
    let len = u32::try_from(out.len() - start).map_err(|_| "the errors exceed 4 GiB".to_string())?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Runs a fallible per-record function over a partition: `ok` writes a record's result,
/// `failed` what stands for a failed record (a filter's keep byte 0), and each `Err` is listed
/// in the trailer.
fn each_fallible<'a, I, T, E, F>(
    input: &'a [u8],
    out: &mut Vec<u8>,
    mut f: F,
    mut ok: impl FnMut(T, &mut Vec<u8>) -> Result<(), String>,
    failed: impl Fn(&mut Vec<u8>),
) -> Result<(), String>
where
    I: Deserialize<'a>,
    E: core::fmt::Display,
    F: FnMut(I) -> Result<T, E>,
{
    let mut frames = Frames::new(input);
    let mut failures = Vec::new();
    for (index, frame) in frames.by_ref().enumerate() {
        match f(decode(frame, index)?) {
            Ok(value) => ok(value, out)?,
            Err(err) => {
                failed(out);
                failures.push((index as u32, err.to_string()));
            }
        }
    }
    check_end(&frames)?;
    finish_failures(out, &failures)
}

/// Runs a map function that returns `Result` over a partition: an `Err` is that record's error.
pub fn map_fallible<'a, I, O, E, F>(input: &'a [u8], out: &mut Vec<u8>, f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    O: Serialize,
    E: core::fmt::Display,
    F: FnMut(I) -> Result<O, E>,
{
    each_fallible(input, out, f, |value, out| write_frame(out, &value), |_| {})
}

/// Runs a flat_map function that returns `Result` over a partition.
pub fn flat_map_fallible<'a, I, O, R, E, F>(input: &'a [u8], out: &mut Vec<u8>, f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    E: core::fmt::Display,
    F: FnMut(I) -> Result<R, E>,
{
    let each = |items: R, out: &mut Vec<u8>| items.into_iter().try_for_each(|item| write_frame(out, &item));
    each_fallible(input, out, f, each, |_| {})
}

/// Runs a filter function that returns `Result` over a partition: a failed record's keep byte
/// is 0 and its error is in the trailer.
pub fn filter_fallible<'a, I, E, F>(input: &'a [u8], out: &mut Vec<u8>, f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    E: core::fmt::Display,
    F: FnMut(I) -> Result<bool, E>,
{
    let keep = |keep: bool, out: &mut Vec<u8>| {
        out.push(u8::from(keep));
        Ok(())
    };
    each_fallible(input, out, f, keep, |out| out.push(0))
}

/// Runs a reduce function over groups of values: one output value per group.
pub fn reduce<'a, V, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    V: Deserialize<'a> + Serialize,
    F: FnMut(V, V) -> V,
{
    let mut frames = Frames::new(input);
    let mut index = 0;
    while let Some(count) = frames.read_u32() {
        let mut acc: Option<V> = None;
        for _ in 0..count {
            let frame = frames.next().ok_or_else(|| format!("group ends early at value {index}"))?;
            let value = decode(frame, index)?;
            index += 1;
            acc = Some(match acc {
                None => value,
                Some(acc) => f(acc, value),
            });
        }
        let acc = acc.ok_or_else(|| "empty group".to_string())?;
        write_frame(out, &acc)?;
    }
    check_end(&frames)
}

/// Runs a map_partitions or transform function over all records of its input at once.
pub fn map_partitions<'a, I, O, R, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    O: Serialize,
    R: IntoIterator<Item = O>,
    F: FnMut(Vec<I>) -> R,
{
    let mut frames = Frames::new(input);
    let mut records = Vec::new();
    for (index, frame) in frames.by_ref().enumerate() {
        records.push(decode(frame, index)?);
    }
    check_end(&frames)?;
    for item in f(records) {
        write_frame(out, &item)?;
    }
    Ok(())
}

/// A transform runs like map_partitions, over a whole batch.
pub use map_partitions as transform;

/// Runs an update_state function for each key: new values and old state in, new state out.
pub fn update_state<'a, V, S, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    V: Deserialize<'a>,
    S: Deserialize<'a> + Serialize,
    F: FnMut(Vec<V>, Option<S>) -> Option<S>,
{
    let mut frames = Frames::new(input);
    let mut index = 0;
    while let Some(count) = frames.read_u32() {
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let frame = frames.next().ok_or_else(|| format!("key ends early at value {index}"))?;
            values.push(decode(frame, index)?);
            index += 1;
        }
        let state = frames.next().ok_or_else(|| "a key has no state frame".to_string())?;
        let state: Option<S> = decode(state, index)?;
        write_frame(out, &f(values, state))?;
    }
    check_end(&frames)
}

/// Runs a map_with_state function for each key: key, new values (empty when timing out) and
/// state in; new state and output records out.
pub fn map_with_state<'a, K, V, S, O, R, F>(input: &'a [u8], out: &mut Vec<u8>, mut f: F) -> Result<(), String>
where
    K: Deserialize<'a>,
    V: Deserialize<'a>,
    S: Deserialize<'a> + Serialize,
    O: Serialize,
    R: IntoIterator<Item = O>,
    F: FnMut(K, Vec<V>, Option<S>) -> (Option<S>, R),
{
    let mut frames = Frames::new(input);
    let mut index = 0;
    while let Some(key) = frames.next() {
        let key: K = decode(key, index)?;
        let count = frames.read_u32().ok_or_else(|| "a key has no value count".to_string())?;
        let mut values = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let frame = frames.next().ok_or_else(|| format!("key ends early at value {index}"))?;
            values.push(decode(frame, index)?);
            index += 1;
        }
        let state = frames.next().ok_or_else(|| "a key has no state frame".to_string())?;
        let state: Option<S> = decode(state, index)?;
        let (state, emitted) = f(key, values, state);
        write_frame(out, &state)?;
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut emitted_count = 0u32;
        for item in emitted {
            write_frame(out, &item)?;
            emitted_count += 1;
        }
        out[at..at + 4].copy_from_slice(&emitted_count.to_le_bytes());
    }
    check_end(&frames)
}

fn info(name: &str, kind: FunctionKind, input: crate::TypeDesc, output: crate::TypeDesc) -> FunctionInfo {
    FunctionInfo { name: name.to_string(), kind, abi_version: ABI_VERSION, input, output }
}

/// Describes a map function from its signature.
pub fn describe_map<I: Describe, O: Describe, F: FnMut(I) -> O>(name: &str, _: &F) -> FunctionInfo {
    info(name, FunctionKind::Map, I::describe(), O::describe())
}

/// Describes a flat_map function from its signature.
pub fn describe_flat_map<I, O, R, F>(name: &str, _: &F) -> FunctionInfo
where
    I: Describe,
    O: Describe,
    R: IntoIterator<Item = O>,
    F: FnMut(I) -> R,
{
    info(name, FunctionKind::FlatMap, I::describe(), O::describe())
}

/// Describes a map function that returns `Result<O, E>`.
pub fn describe_map_fallible<I: Describe, O: Describe, E, F: FnMut(I) -> Result<O, E>>(
    name: &str,
    _: &F,
) -> FunctionInfo {
    info(name, FunctionKind::Map, I::describe(), O::describe())
}

/// Describes a flat_map function that returns `Result<impl IntoIterator, E>`.
pub fn describe_flat_map_fallible<I, O, R, E, F>(name: &str, _: &F) -> FunctionInfo
where
    I: Describe,
    O: Describe,
    R: IntoIterator<Item = O>,
    F: FnMut(I) -> Result<R, E>,
{
    info(name, FunctionKind::FlatMap, I::describe(), O::describe())
}

/// Describes a filter function that returns `Result<bool, E>`.
pub fn describe_filter_fallible<I: Describe, E, F: FnMut(I) -> Result<bool, E>>(name: &str, _: &F) -> FunctionInfo {
    info(name, FunctionKind::Filter, I::describe(), I::describe())
}

/// Describes a filter function from its signature.
pub fn describe_filter<I: Describe, F: FnMut(I) -> bool>(name: &str, _: &F) -> FunctionInfo {
    info(name, FunctionKind::Filter, I::describe(), I::describe())
}

/// Describes a reduce function from its signature.
pub fn describe_reduce<V: Describe, F: FnMut(V, V) -> V>(name: &str, _: &F) -> FunctionInfo {
    info(name, FunctionKind::Reduce, V::describe(), V::describe())
}

/// Describes a map_partitions function from its signature.
pub fn describe_map_partitions<I, O, R, F>(name: &str, _: &F) -> FunctionInfo
where
    I: Describe,
    O: Describe,
    R: IntoIterator<Item = O>,
    F: FnMut(Vec<I>) -> R,
{
    info(name, FunctionKind::MapPartitions, I::describe(), O::describe())
}

/// Describes a transform function from its signature.
pub fn describe_transform<I, O, R, F>(name: &str, _: &F) -> FunctionInfo
where
    I: Describe,
    O: Describe,
    R: IntoIterator<Item = O>,
    F: FnMut(Vec<I>) -> R,
{
    info(name, FunctionKind::Transform, I::describe(), O::describe())
}

/// Describes an update_state function from its signature.
pub fn describe_update_state<V: Describe, S: Describe, F: FnMut(Vec<V>, Option<S>) -> Option<S>>(
    name: &str,
    _: &F,
) -> FunctionInfo {
    info(name, FunctionKind::UpdateState, V::describe(), S::describe())
}

/// Describes a key_by function from its signature: input `T`, output the key `K`.
pub fn describe_key_by<I: Describe, K: Describe, F: FnMut(I) -> K>(name: &str, _: &F) -> FunctionInfo {
    info(name, FunctionKind::KeyBy, I::describe(), K::describe())
}

/// Describes a timestamp function from its signature.
pub fn describe_timestamp<I: Describe, F: FnMut(I) -> u64>(name: &str, _: &F) -> FunctionInfo {
    info(name, FunctionKind::Timestamp, I::describe(), u64::describe())
}

/// Describes a map_with_state function: input `(K, V)`, output `O`.
pub fn describe_map_with_state<K, V, S, O, R, F>(name: &str, _: &F) -> FunctionInfo
where
    K: Describe,
    V: Describe,
    S: Describe,
    O: Describe,
    R: IntoIterator<Item = O>,
    F: FnMut(K, Vec<V>, Option<S>) -> (Option<S>, R),
{
    info(name, FunctionKind::MapWithState, <(K, V)>::describe(), O::describe())
}

/// A key_by function runs like a map: one key per record.
pub use map as key_by;

/// Runs a timestamp function: one `u64` per record.
pub fn timestamp<'a, I, F>(input: &'a [u8], out: &mut Vec<u8>, f: F) -> Result<(), String>
where
    I: Deserialize<'a>,
    F: FnMut(I) -> u64,
{
    map(input, out, f)
}

thread_local! {
    /// Input of the next call, written by the host. Reused across calls.
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Output of the last call, read by the host. Reused across calls.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `sluice_input`: a buffer of at least `len` bytes for the host to write the next input into.
pub fn export_input(len: u32) -> u32 {
    INPUT.with_borrow_mut(|buf| {
        if buf.len() < len as usize {
            buf.resize(len as usize, 0);
        }
        buf.as_mut_ptr() as usize as u32
    })
}

/// `sluice_call_<fn>`: runs `call` over the first `len` input bytes.
pub fn export_call(len: u32, call: fn(&[u8], &mut Vec<u8>) -> Result<(), String>) -> u64 {
    init();
    INPUT.with_borrow(|input| {
        OUTPUT.with_borrow_mut(|out| {
            out.clear();
            let flag = match input.get(..len as usize) {
                Some(input) => match call(input, out) {
                    Ok(()) => 0,
                    Err(message) => {
                        out.clear();
                        out.extend_from_slice(message.as_bytes());
                        crate::abi::ERROR_FLAG
                    }
                },
                None => {
                    out.clear();
                    out.extend_from_slice(b"input length exceeds the input buffer");
                    crate::abi::ERROR_FLAG
                }
            };
            crate::metrics::flush();
            crate::abi::pack(out.as_ptr() as usize as u32, out.len() as u32 | flag)
        })
    })
}

/// A function's parameters (its last argument, `&P`), as the host sends them: the first frame
/// of every call's input. Each distinct encoding is decoded once and kept for the life of the
/// instance (the host sends one per stage that calls the function), so the function gets a
/// `&'static P` whatever its return type borrows.
#[derive(Debug)]
pub struct ParamsSlot<P: 'static> {
    decoded: RefCell<Vec<(Vec<u8>, &'static P)>>,
    current: std::cell::Cell<Option<&'static P>>,
}

impl<P: 'static> ParamsSlot<P> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self { decoded: RefCell::new(Vec::new()), current: std::cell::Cell::new(None) }
    }
}

impl<P: 'static> Default for ParamsSlot<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes the parameters frame off the front of `input` into `slot`; the rest is the partition.
pub fn take_params<'a, P>(
    input: &'a [u8],
    slot: &'static std::thread::LocalKey<ParamsSlot<P>>,
) -> Result<&'a [u8], String>
where
    P: for<'de> Deserialize<'de> + 'static,
{
    let mut frames = Frames::new(input);
    let frame = frames.next().ok_or_else(|| "the call carries no parameters frame".to_string())?;
    slot.with(|slot| {
        let mut decoded = slot.decoded.borrow_mut();
        let params = match decoded.iter().find(|(bytes, _)| bytes == frame) {
            Some((_, params)) => *params,
            None => {
                let params: P = postcard::from_bytes(frame)
                    .map_err(|err| format!("the parameters do not decode as {}: {err}", std::any::type_name::<P>()))?;
                let params: &'static P = Box::leak(Box::new(params));
                decoded.push((frame.to_vec(), params));
                params
            }
        };
        slot.current.set(Some(params));
        Ok::<(), String>(())
    })?;
    Ok(frames.rest())
}

/// The parameters of the call under way (set by [`take_params`]).
pub fn current_params<P: 'static>(slot: &'static std::thread::LocalKey<ParamsSlot<P>>) -> &'static P {
    slot.with(|slot| slot.current.get()).expect("take_params runs before the function")
}

/// `sluice_describe_<fn>` and `sluice_params_<fn>`: the function's description (a
/// [`FunctionInfo`]) or its parameters' type (a `TypeDesc`), postcard-encoded.
pub fn export_describe<T: Serialize>(describe: fn() -> T) -> u64 {
    OUTPUT.with_borrow_mut(|out| {
        out.clear();
        // Encoding a description into a Vec cannot fail.
        if let Ok(bytes) = postcard::to_allocvec(&describe()) {
            out.extend_from_slice(&bytes);
        }
        crate::abi::pack(out.as_ptr() as usize as u32, out.len() as u32)
    })
}

/// Routes panic messages to the host before the guest traps (ABI 1's `sluice.panic`, ABI 2's
/// `host.panic`): once, at the first call.
pub(crate) fn init() {
    #[cfg(target_family = "wasm")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info.to_string();
                crate::host::panic(&message);
            }));
        });
    }
}

/// ABI 2: the registry the attributes' static constructors fill (see `component`).
#[cfg(all(target_os = "wasi", target_env = "p2", feature = "abi2"))]
pub use crate::component::register;

#[cfg(all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))))]
#[unsafe(export_name = "sluice_abi_version")]
extern "C" fn sluice_abi_version() -> u32 {
    ABI_VERSION
}

#[cfg(all(target_family = "wasm", not(all(target_os = "wasi", target_env = "p2"))))]
#[unsafe(export_name = "sluice_input")]
extern "C" fn sluice_input(len: u32) -> u32 {
    export_input(len)
}
