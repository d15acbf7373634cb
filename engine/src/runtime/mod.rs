//! The plugin runtime: compile plugins once, keep one instance per worker thread, call a function
//! once per partition under a deadline and a memory cap, and swap versions between batches.
//!
//! # Lifetimes and costs
//! - A [`PluginVersion`] is one plugin file's content, compiled (~30–70 ms, off the hot path) or
//!   loaded from the precompiled cache keyed by content hash (~0.1 ms). It is immutable; a swap
//!   replaces the `Arc` the [`registry`] hands to the next batch.
//! - Each worker thread instantiates a version the first time it serves it (~10 µs) and keeps the
//!   instance across batches ([`instance`]). A trap drops the instance; the next call gets a new one.
//! - Every call has an epoch deadline (a ticker thread advances the epoch every `EPOCH_TICK`) and
//!   every instance a memory cap enforced by a resource limiter. Defaults: `DEFAULT_TIMEOUT`,
//!   `DEFAULT_MEMORY_LIMIT`.

mod cache;
mod component;
pub(crate) mod deploy;
pub(crate) mod error;
pub(crate) mod event;
pub mod instance;
mod load;
pub(crate) mod plugin_metrics;
pub mod registry;
pub(crate) mod shadow;
mod version;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_sdk::abi::{FunctionInfo, NativeFunction};

pub(crate) use cache::default_key_file;
pub use cache::{CacheKeyError, CompileCache};
pub use error::{CallError, LoadClass, LoadError, ModulePart, StartError};
pub(crate) use load::{DEFAULT_VALIDATE_TIMEOUT, MAX_PLUGIN_BYTES, content_hash};
pub(crate) use version::Implementation;
pub use version::PluginVersion;

/// How often the epoch advances; the granularity of call deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Default per-call deadline.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default memory cap per plugin instance.
pub(crate) const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

/// Limits applied to every call and instance.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Per-call deadline.
    pub timeout: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, memory: DEFAULT_MEMORY_LIMIT }
    }
}

/// The wasmtime engine shared by every plugin, with its epoch ticker and compile cache.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: wasmtime::Engine,
    linker: Arc<wasmtime::Linker<instance::StoreState>>,
    /// The imports of ABI 2 components.
    components: Arc<wasmtime::component::Linker<component::ComponentState>>,
    limits: Limits,
    /// Budget for instantiating a plugin being loaded and asking it to describe itself.
    validate_timeout: Duration,
    cache: Option<CompileCache>,
    /// What each plugin's components may use beyond the default sandbox (the pipeline's
    /// `[capabilities]`), by plugin name.
    capabilities: Arc<BTreeMap<String, Capabilities>>,
}

/// What a component may use beyond the default sandbox (`component.rs` says what that is),
/// as the pipeline allows a plugin. ABI 1 modules get no WASI at all: to them it means nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `wasi:clocks` (wall clock and monotonic clock) as the host's; without it a component
    /// that imports a clock is refused at load.
    pub clocks: bool,
    /// `wasi:random` from the host's entropy; without it, the same fixed seed for every
    /// instance (output stays a function of input, and a replay repeats it).
    pub random: bool,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("limits", &self.limits)
            .field("validate_timeout", &self.validate_timeout)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// A runtime with the given limits; compiled plugins are kept in `cache` if given.
    pub fn new(limits: Limits, cache: Option<CompileCache>) -> Result<Self, StartError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // No component-model async: plugins are called synchronously, and a call costs less.
        config.concurrency_support(false);
        let engine = wasmtime::Engine::new(&config).map_err(|err| StartError(format!("{err:#}")))?;
        let linker = instance::linker(&engine).map_err(|err| StartError(format!("{err:#}")))?;
        let components = component::linker(&engine).map_err(|err| StartError(format!("{err:#}")))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|err| StartError(err.to_string()))?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            components: Arc::new(components),
            limits,
            validate_timeout: DEFAULT_VALIDATE_TIMEOUT,
            cache,
            capabilities: Arc::default(),
        })
    }

    /// The same runtime, giving each named plugin's components `capabilities` (all others the
    /// default sandbox).
    pub(crate) fn with_capabilities(mut self, capabilities: BTreeMap<String, Capabilities>) -> Self {
        self.capabilities = Arc::new(capabilities);
        self
    }

    /// The same runtime, loading plugins within `timeout` (instantiation, ABI version and every
    /// describe call together; see `runtime/load.rs`).
    pub(crate) fn with_validate_timeout(mut self, timeout: Duration) -> Self {
        self.validate_timeout = timeout;
        self
    }

    /// A version whose functions run natively in this process: the native twin of a plugin,
    /// used by benchmarks to measure what Wasm costs.
    pub fn native(name: &str, functions: &[NativeFunction]) -> PluginVersion {
        let infos: Vec<FunctionInfo> = functions.iter().map(|f| (f.describe)()).collect();
        let hash = format!("native-{name}");
        let table = infos.iter().map(|info| info.name.clone()).zip(functions.iter().copied()).collect();
        let params =
            infos.iter().zip(functions).filter_map(|(info, f)| Some((info.name.clone(), (f.params?)()))).collect();
        let fallible =
            infos.iter().zip(functions).filter(|(_, f)| f.fallible).map(|(info, _)| info.name.clone()).collect();
        PluginVersion::new(name, Path::new("<native>"), hash, infos, params, fallible, Implementation::Native(table))
    }

    /// Compiles `bytes` (a module or a component), or loads the artifact this engine cached for
    /// the same hash, if its MAC is right (`cache.rs`).
    fn compile<T: Compiled>(&self, bytes: &[u8], hash: &str) -> wasmtime::Result<T> {
        let Some(cache) = &self.cache else {
            return T::compile(&self.engine, bytes);
        };
        let dir = &cache.dir;
        let name = format!("{hash}-{}.cwasm", engine_fingerprint(&self.engine));
        let cached = dir.join(&name);
        if let Some(file) = read_bounded(&cached, MAX_CACHED_BYTES) {
            match cache.open_sealed(&name, &file) {
                // SAFETY: the MAC proves this runtime's key sealed it under this name (`cache.rs`),
                // and only this function seals, an artifact wasmtime serialized; named by the
                // content hash of its source and the engine's fingerprint, and wasmtime also
                // checks that it matches this engine's configuration (and kind) and refuses it
                // otherwise.
                Some(artifact) => match unsafe { T::deserialize(&self.engine, artifact) } {
                    Ok(compiled) => return Ok(compiled),
                    Err(err) => tracing::debug!(path = %cached.display(), %err, "ignoring cached artifact"),
                },
                None => tracing::warn!(
                    path = %cached.display(),
                    "a cached compiled plugin fails its MAC check (changed since this engine wrote it): not loaded; compiled again"
                ),
            }
        }
        let compiled = T::compile(&self.engine, bytes)?;
        let written = compiled.serialize().and_then(|artifact| {
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::Builder::new().prefix(".compiling.").tempfile_in(dir)?;
            tmp.write_all(&cache.seal(&name, &artifact))?;
            tmp.persist(&cached)?;
            Ok(())
        });
        if let Err(err) = written {
            tracing::debug!(dir = %dir.display(), %err, "cannot cache compiled plugin");
        }
        Ok(compiled)
    }
}

/// Largest cached artifact read: compiled code is a few times its source's size, and a planted
/// file must not make the engine read without bound.
const MAX_CACHED_BYTES: u64 = 16 * MAX_PLUGIN_BYTES as u64;

/// The content of `path` if it can be read and is no longer than `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > limit {
        tracing::warn!(path = %path.display(), "a cached compiled plugin is over {limit} bytes: not loaded; compiled again");
        return None;
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// What the compile cache holds: a core module (ABI 1) or a component (ABI 2).
trait Compiled: Sized {
    fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    /// # Safety
    /// `artifact` is one `serialize` wrote for an engine of this configuration.
    unsafe fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
}

/// `Compiled` for a type with wasmtime's `new`, `deserialize` and `serialize` (a module and
/// a component have the same three).
macro_rules! compiled {
    ($($ty:ty),*) => {$(
        impl Compiled for $ty {
            fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
                Self::new(engine, bytes)
            }

            unsafe fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
                // SAFETY: as the caller promises.
                unsafe { Self::deserialize(engine, artifact) }
            }

            fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
                self.serialize()
            }
        }
    )*};
}

compiled!(wasmtime::Module, wasmtime::component::Component);

/// What a precompiled artifact must match to be loaded by `engine` (wasmtime's own version and
/// compile settings, as wasmtime hashes them), as hex: part of the cache key.
fn engine_fingerprint(engine: &wasmtime::Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("wasmtime-{:016x}", hasher.finish())
}
