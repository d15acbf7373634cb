//! Plugin instances and calls: one instance per version per worker thread, kept across batches.

use std::cell::RefCell;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use sluice_sdk::abi;
use wasmtime::{Caller, Engine, InstancePre, Linker, Memory, Store, TypedFunc};

use super::{CallError, Implementation, Limits, PluginVersion};

/// What a store carries for its instance.
#[derive(Debug)]
pub(crate) struct StoreState {
    plugin: Arc<str>,
    /// The version's short hash and the stage of the call under way: the labels of the
    /// plugin's metrics and log lines.
    version: Arc<str>,
    stage: Option<Arc<str>>,
    /// A serving version's call in a shadow run (`batch/shadow.rs`): its metrics and log lines
    /// are the serving run's already, so they are dropped.
    quiet: bool,
    memory_limit: usize,
    /// The bytes of every linear memory of the store together (a component may have several):
    /// what the cap limits.
    memory_used: usize,
    /// Set when the limiter refused to grow memory: the trap that follows is a memory-limit error.
    refused_growth: Option<usize>,
    /// The guest's panic message, sent just before it traps.
    panic: Option<String>,
}

impl wasmtime::ResourceLimiter for StoreState {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_used.saturating_sub(current).saturating_add(desired);
        if total > self.memory_limit {
            self.refused_growth = Some(total);
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    // A component is made of several core instances, memories and tables; far fewer than
    // wasmtime's defaults (10 000 each) are ever needed.
    fn instances(&self) -> usize {
        256
    }

    fn memories(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        256
    }
}

impl StoreState {
    /// A store's state for instances of `plugin` under `limits`.
    pub(super) fn new(plugin: &str, limits: Limits) -> Self {
        Self {
            plugin: Arc::from(plugin),
            version: Arc::from(""),
            stage: None,
            quiet: false,
            memory_limit: limits.memory,
            memory_used: 0,
            refused_growth: None,
            panic: None,
        }
    }

    /// Labels the calls that follow with `version`'s hash, stage and quietness.
    pub(super) fn label(&mut self, version: &PluginVersion) {
        if *self.version != *version.short_hash() {
            self.version = Arc::from(version.short_hash());
        }
        self.stage = version.call_stage.clone();
        self.quiet = version.quiet;
    }

    /// The guest's log line (level: 0 error, 1 warn, 2 info, 3 debug), with the plugin, its
    /// version and the stage.
    pub(super) fn log(&self, level: u32, message: &str) {
        if self.quiet {
            return;
        }
        let (plugin, version) = (&self.plugin, &self.version);
        let stage = self.stage.as_deref().unwrap_or("-");
        match level {
            0 => tracing::error!(plugin = %plugin, version = %version, stage = %stage, "{message}"),
            1 => tracing::warn!(plugin = %plugin, version = %version, stage = %stage, "{message}"),
            2 => tracing::info!(plugin = %plugin, version = %version, stage = %stage, "{message}"),
            _ => tracing::debug!(plugin = %plugin, version = %version, stage = %stage, "{message}"),
        }
    }

    /// A metric the guest recorded (kind: 0 counter, 1 gauge, 2 histogram).
    pub(super) fn metric(&self, kind: u32, name: String, value: f64, count: u64) {
        if self.quiet {
            return;
        }
        let series = (self.plugin.to_string(), self.version.to_string(), self.stage.as_deref().map(String::from), name);
        super::plugin_metrics::record(series, kind, value, count);
    }

    /// The cap of the call under way (a stage's own may differ from the instance's); a call
    /// starts with no refused growth.
    pub(super) fn limit_memory(&mut self, bytes: usize) {
        self.memory_limit = bytes;
        self.refused_growth = None;
    }

    /// The error of a call whose guest returned one: a memory-limit error if the cap refused
    /// it memory during the call (a Python `MemoryError`, a JavaScript out-of-memory: the
    /// guest reports what the cap did), its message kept; else the guest's own.
    pub(super) fn guest_error(&mut self, message: String, limits: Limits) -> CallError {
        match self.refused_growth.take() {
            Some(desired) => CallError::MemoryLimit { desired, limit: limits.memory, guest: Some(message) },
            None => CallError::Guest { message },
        }
    }

    /// Whether the guest sent a panic message the call's error has not taken yet.
    pub(super) fn has_panicked(&self) -> bool {
        self.panic.is_some()
    }

    /// The guest's panic message, sent just before it traps.
    pub(super) fn panicked(&mut self, message: String) {
        self.panic = Some(message);
    }
}

/// The host functions plugins may import (module `sluice`, see `sluice_sdk::abi`).
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(abi::IMPORT_MODULE, "panic", |mut caller: Caller<'_, StoreState>, ptr: u32, len: u32| {
        let message = read_guest_string(&mut caller, ptr, len);
        caller.data_mut().panicked(message);
    })?;
    linker.func_wrap(
        abi::IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, StoreState>, level: u32, ptr: u32, len: u32| {
            if caller.data().quiet {
                return;
            }
            let message = read_guest_string(&mut caller, ptr, len);
            caller.data().log(level, &message);
        },
    )?;
    linker.func_wrap(
        abi::IMPORT_MODULE,
        "metric",
        |mut caller: Caller<'_, StoreState>, kind: u32, name_ptr: u32, name_len: u32, value_ptr: u32| {
            if caller.data().quiet {
                return;
            }
            let name = read_guest_string(&mut caller, name_ptr, name_len.min(256));
            let mut figures = [0u8; 16];
            let read = caller
                .get_export("memory")
                .and_then(|e| e.into_memory())
                .is_some_and(|memory| memory.read(&caller, value_ptr as usize, &mut figures).is_ok());
            if !read {
                return;
            }
            let value = f64::from_le_bytes(figures[..8].try_into().expect("8 bytes"));
            let count = u64::from_le_bytes(figures[8..].try_into().expect("8 bytes"));
            caller.data().metric(kind, name, value, count);
        },
    )?;
    Ok(linker)
}

fn read_guest_string(caller: &mut Caller<'_, StoreState>, ptr: u32, len: u32) -> String {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return String::from("<plugin has no memory export>");
    };
    let data = memory.data(&caller);
    let start = ptr as usize;
    let end = start.saturating_add(len.min(64 * 1024) as usize);
    match data.get(start..end) {
        Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        None => String::from("<message out of bounds>"),
    }
}

/// A live instance of one plugin version.
pub(crate) struct Instance {
    store: Store<StoreState>,
    memory: Memory,
    input: TypedFunc<u32, u32>,
    instance: wasmtime::Instance,
    calls: FxHashMap<String, TypedFunc<u32, u64>>,
}

impl Instance {
    pub(crate) fn new(
        engine: &Engine,
        pre: &InstancePre<StoreState>,
        limits: Limits,
        plugin: &str,
    ) -> Result<Self, CallError> {
        let mut store = Store::new(engine, StoreState::new(plugin, limits));
        store.limiter(|state| state);
        store.set_epoch_deadline(ticks(limits));
        let instance = pre.instantiate(&mut store).map_err(|err| classify(store.data_mut(), err, limits))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| CallError::BadOutput { message: "the plugin exports no `memory`".into() })?;
        let input = typed(&instance, &mut store, abi::EXPORT_INPUT)?;
        Ok(Self { store, memory, input, instance, calls: FxHashMap::default() })
    }

    /// Asks the plugin its ABI version, within `limits`.
    pub(crate) fn abi_version(&mut self, limits: Limits) -> Result<u32, CallError> {
        let version: TypedFunc<(), u32> = typed(&self.instance, &mut self.store, abi::EXPORT_ABI_VERSION)?;
        self.store.set_epoch_deadline(ticks(limits));
        version.call(&mut self.store, ()).map_err(|err| classify(self.store.data_mut(), err, limits))
    }

    /// Asks one function to describe itself (`export` is its `sluice_describe_<fn>`, a
    /// [`FunctionInfo`]; or its `sluice_params_<fn>`, a `TypeDesc`), within `limits`.
    pub(crate) fn describe<T: serde::de::DeserializeOwned>(
        &mut self,
        export: &str,
        limits: Limits,
    ) -> Result<T, CallError> {
        let describe: TypedFunc<(), u64> = typed(&self.instance, &mut self.store, export)?;
        self.store.set_epoch_deadline(ticks(limits));
        let packed = describe.call(&mut self.store, ()).map_err(|err| classify(self.store.data_mut(), err, limits))?;
        let mut bytes = Vec::new();
        self.read_output(packed, limits, &mut bytes)?;
        description(&bytes)
    }

    /// Calls `sluice_call_<function>` over `len` input bytes that `fill` writes straight into
    /// the guest's input buffer, appending the output to `output`.
    pub(crate) fn call(
        &mut self,
        function: &str,
        limits: Limits,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        output: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        let call = match self.calls.get(function) {
            Some(call) => call.clone(),
            None => {
                let name = format!("{}{function}", abi::EXPORT_CALL_PREFIX);
                let call = typed(&self.instance, &mut self.store, &name)?;
                self.calls.insert(function.to_string(), call.clone());
                call
            }
        };
        let size = len;
        let len = u32::try_from(size).map_err(|_| CallError::BadOutput {
            message: format!("a partition of {size} bytes exceeds the 4 GiB a 32-bit guest can address"),
        })?;
        self.store.data_mut().limit_memory(limits.memory);
        self.store.set_epoch_deadline(ticks(limits));
        let ptr =
            self.input.call(&mut self.store, len).map_err(|err| classify(self.store.data_mut(), err, limits))? as usize;
        fill(self.memory.data_mut(&mut self.store).get_mut(ptr..ptr + size).ok_or_else(|| CallError::BadOutput {
            message: "the input buffer lies outside the guest's memory".into(),
        })?);
        self.store.set_epoch_deadline(ticks(limits));
        let packed = call.call(&mut self.store, len).map_err(|err| classify(self.store.data_mut(), err, limits))?;
        self.read_output(packed, limits, output)
    }

    fn read_output(&mut self, packed: u64, limits: Limits, output: &mut Vec<u8>) -> Result<(), CallError> {
        let (ptr, len, is_error) = abi::unpack(packed);
        let data = self.memory.data(&self.store);
        let bytes = data.get(ptr as usize..ptr as usize + len as usize).ok_or_else(|| CallError::BadOutput {
            message: format!("the output ({len} bytes at {ptr:#x}) lies outside the guest's memory"),
        })?;
        if is_error {
            let message = String::from_utf8_lossy(bytes).into_owned();
            return Err(self.store.data_mut().guest_error(message, limits));
        }
        output.extend_from_slice(bytes);
        Ok(())
    }
}

/// A description a plugin returned (a [`FunctionInfo`](sluice_sdk::abi::FunctionInfo) or a
/// parameters' `TypeDesc`), decoded.
pub(crate) fn description<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CallError> {
    postcard::from_bytes(bytes)
        .map_err(|err| CallError::BadOutput { message: format!("the description does not decode: {err}") })
}

fn typed<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<StoreState>,
    name: &str,
) -> Result<TypedFunc<P, R>, CallError> {
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map_err(|err| CallError::BadOutput { message: format!("export `{name}`: {err}") })
}

/// The deadline in epoch ticks. wasmtime adds it to the current epoch unchecked: capped far
/// below `u64::MAX` (the configured timeouts are at most 24h, 8.64 M ticks, anyway).
pub(super) fn ticks(limits: Limits) -> u64 {
    let ticks = (limits.timeout.as_millis() / super::EPOCH_TICK.as_millis()).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX).min(u64::MAX / 2)
}

/// Tells a deadline from a memory-limit failure from any other trap.
pub(super) fn classify(state: &mut StoreState, err: wasmtime::Error, limits: Limits) -> CallError {
    if let Some(desired) = state.refused_growth.take() {
        state.panic = None;
        return CallError::MemoryLimit { desired, limit: limits.memory, guest: None };
    }
    if let Some(wasmtime::Trap::Interrupt) = err.downcast_ref::<wasmtime::Trap>() {
        return CallError::Deadline { timeout: limits.timeout };
    }
    let message = match (state.panic.take(), err.downcast_ref::<wasmtime::Trap>()) {
        (Some(panic), _) => format!("panicked: {panic}"),
        (None, Some(trap)) => trap.to_string(),
        (None, None) => format!("{err:#}"),
    };
    CallError::Trap { message }
}

/// A live instance of either ABI.
enum Live {
    Module(Instance),
    Component(super::component::Instance),
}

impl Live {
    fn new(version: &PluginVersion, limits: Limits) -> Result<Self, CallError> {
        let plugin = &version.plugin;
        match &version.implementation {
            Implementation::Wasm { engine, pre, .. } => Ok(Self::Module(Instance::new(engine, pre, limits, plugin)?)),
            Implementation::Component { engine, pre, capabilities, .. } => {
                Ok(Self::Component(super::component::Instance::new(engine, pre, limits, plugin, *capabilities)?))
            }
            Implementation::Native(_) => {
                Err(CallError::BadOutput { message: "a native version has no instance".into() })
            }
        }
    }

    /// A module has `input` written into its memory; a component lowers a slice as it is.
    fn call(
        &mut self,
        function: &str,
        limits: Limits,
        input: Input<'_, impl FnOnce(&mut [u8])>,
        output: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        match self {
            Self::Module(instance) => instance.call(function, limits, input.len(), |buf| input.write(buf), output),
            Self::Component(instance) => instance.call(function, limits, input, output),
        }
    }

    fn state(&mut self) -> &mut StoreState {
        match self {
            Self::Module(instance) => instance.store.data_mut(),
            Self::Component(instance) => instance.state(),
        }
    }
}

/// A call's input: bytes already in one slice, or `len` bytes a function writes.
pub(crate) enum Input<'a, F> {
    Bytes(&'a [u8]),
    Filled(usize, F),
}

impl<F: FnOnce(&mut [u8])> Input<'_, F> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Bytes(bytes) => bytes.len(),
            Self::Filled(len, _) => *len,
        }
    }

    /// Writes the input into `buf`, which is `len()` bytes long.
    pub(crate) fn write(self, buf: &mut [u8]) {
        match self {
            Self::Bytes(bytes) => buf.copy_from_slice(bytes),
            Self::Filled(_, fill) => fill(buf),
        }
    }
}

thread_local! {
    /// This worker's instances, one per plugin, tagged with the version they run.
    static INSTANCES: RefCell<FxHashMap<String, Vec<(u64, Live)>>> = RefCell::new(FxHashMap::default());
}

/// Runs `function` of `version` over one partition on the current worker thread, reusing this
/// thread's instance of that version (and creating it the first time).
pub fn call(version: &PluginVersion, function: &str, input: &[u8], output: &mut Vec<u8>) -> Result<(), CallError> {
    if version.call_params.contains_key(function) {
        return call_filling(version, function, input.len(), |buf| buf.copy_from_slice(input), output);
    }
    // Without parameters to put first, a component can take `input` as it is.
    call_on_worker(version, function, Input::<fn(&mut [u8])>::Bytes(input), output)
}

/// As [`call`], with the `len` input bytes written by `fill` directly into an ABI 1 guest's
/// input buffer (no intermediate copy on the host; a component's go through a host buffer the
/// canonical ABI copies in). A function with parameters gets the stage's
/// (`version.call_params`) as one frame before them.
pub(crate) fn call_filling(
    version: &PluginVersion,
    function: &str,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
    output: &mut Vec<u8>,
) -> Result<(), CallError> {
    let params = version.call_params.get(function);
    let head = params.map_or(0, |p| abi::FRAME_HEADER + p.len());
    let len = head + len;
    let fill = |buf: &mut [u8]| {
        if let Some(params) = params {
            buf[..abi::FRAME_HEADER].copy_from_slice(&(params.len() as u32).to_le_bytes());
            buf[abi::FRAME_HEADER..head].copy_from_slice(params);
        }
        fill(&mut buf[head..]);
    };
    call_on_worker(version, function, Input::Filled(len, fill), output)
}

/// Runs the call on this worker's instance of `version`.
fn call_on_worker(
    version: &PluginVersion,
    function: &str,
    input: Input<'_, impl FnOnce(&mut [u8])>,
    output: &mut Vec<u8>,
) -> Result<(), CallError> {
    let limits = match &version.implementation {
        Implementation::Native(functions) => {
            let native = functions
                .get(function)
                .ok_or_else(|| CallError::BadOutput { message: format!("no native function `{function}`") })?;
            let written;
            let input = match input {
                Input::Bytes(bytes) => bytes,
                Input::Filled(len, fill) => {
                    let mut buf = vec![0; len];
                    fill(&mut buf);
                    written = buf;
                    &written
                }
            };
            return (native.call)(input, output).map_err(|message| CallError::Guest { message });
        }
        Implementation::Wasm { limits, .. } | Implementation::Component { limits, .. } => *limits,
    };
    INSTANCES.with_borrow_mut(|instances| {
        let kept = instances.entry(version.plugin.clone()).or_default();
        let at = match kept.iter().position(|(id, _)| *id == version.id) {
            Some(at) => at,
            None => {
                let live = Live::new(version, limits)?;
                // Two versions at most: the serving one and a shadow, or the one before a swap.
                if kept.len() == 2 {
                    kept.remove(0);
                }
                kept.push((version.id, live));
                kept.len() - 1
            }
        };
        let live = &mut kept[at].1;
        live.state().label(version);
        let result = live.call(function, limits, input, output);
        if result.is_err() {
            // A trapped instance may hold broken state (a component cannot be entered again):
            // the next call starts fresh.
            kept.remove(at);
        }
        result
    })
}
