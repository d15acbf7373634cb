//! The plugin runtime: compile plugins once, keep one instance per worker thread, call a function
//! once per partition under a deadline and a memory cap, and swap versions between batches.
//!
//! # Lifetimes and costs
//! - A [`PluginVersion`] is one plugin file's content, compiled (~30–70 ms, off the hot path) or
//!   loaded from the precompiled cache keyed by content hash (~0.1 ms). It is immutable; a swap
//!   replaces the `Arc` the [`registry`] hands to the next batch.
//! - Each worker thread instantiates a version the first time it serves it (~10 µs) and keeps the
//!   instance across batches ([`instance`]). A trap drops the instance; the next call gets a new one.
//! - Every call has an epoch deadline (a ticker thread advances the epoch every [`EPOCH_TICK`]) and
//!   every instance a memory cap enforced by a resource limiter. Defaults: [`DEFAULT_TIMEOUT`],
//!   [`DEFAULT_MEMORY_LIMIT`].

pub mod error;
pub mod instance;
pub mod registry;
mod version;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_sdk::abi::{self, ABI_VERSION, FunctionInfo, NativeFunction};

pub use error::{CallError, ErrorClass, LoadError, StartError};
pub use version::{Implementation, PluginVersion};

/// How often the epoch advances; the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default memory cap per plugin instance.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;

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
    limits: Limits,
    cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// A runtime with the given limits; precompiled modules are cached in `cache_dir` if given.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, StartError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = wasmtime::Engine::new(&config).map_err(|err| StartError(format!("{err:#}")))?;
        let linker = instance::linker(&engine).map_err(|err| StartError(format!("{err:#}")))?;
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
        Ok(Self { engine, linker: Arc::new(linker), limits, cache_dir })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reads, compiles and validates the plugin at `path`: ABI version, exports, function
    /// descriptions. Instantiates it once to ask; nothing is swapped in.
    pub fn load(&self, name: &str, path: &Path) -> Result<PluginVersion, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        self.load_bytes(name, path, &bytes)
    }

    /// As [`PluginRuntime::load`], from bytes already read (`path` names them in messages).
    pub fn load_bytes(&self, name: &str, path: &Path, bytes: &[u8]) -> Result<PluginVersion, LoadError> {
        let invalid = |reason: String| LoadError::Invalid { path: path.to_path_buf(), reason };
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm {
                path: path.to_path_buf(),
                found: bytes.iter().take(4).copied().collect(),
            });
        }
        let hash = hex(&Sha256::digest(bytes));
        let module = self.compile(bytes, &hash).map_err(|err| invalid(format!("it does not compile: {err:#}")))?;
        let pre = self.linker.instantiate_pre(&module).map_err(|err| invalid(format!("{err:#}")))?;
        let mut probe =
            instance::Instance::new(&self.engine, &pre, self.limits, name).map_err(|err| invalid(format!("{err}")))?;
        let version = probe.abi_version().map_err(|err| invalid(format!("{err}")))?;
        if version != ABI_VERSION {
            return Err(LoadError::AbiVersion { path: path.to_path_buf(), found: version, expected: ABI_VERSION });
        }
        let mut functions = Vec::new();
        for export in module.exports() {
            if let Some(function) = export.name().strip_prefix(abi::EXPORT_DESCRIBE_PREFIX) {
                let info =
                    probe.describe(export.name()).map_err(|err| invalid(format!("describing `{function}`: {err}")))?;
                if info.name != function {
                    return Err(invalid(format!(
                        "export `{}` describes a function named `{}`",
                        export.name(),
                        info.name
                    )));
                }
                if info.abi_version != ABI_VERSION {
                    return Err(LoadError::AbiVersion {
                        path: path.to_path_buf(),
                        found: info.abi_version,
                        expected: ABI_VERSION,
                    });
                }
                let call = format!("{}{function}", abi::EXPORT_CALL_PREFIX);
                if module.get_export(&call).is_none() {
                    return Err(invalid(format!("function `{function}` has no `{call}` export")));
                }
                functions.push(info);
            }
        }
        if functions.is_empty() {
            return Err(invalid("it exports no Sluice functions (sluice_describe_*)".into()));
        }
        Ok(PluginVersion::new(
            name,
            path,
            hash,
            functions,
            Implementation::Wasm { engine: self.engine.clone(), pre, limits: self.limits },
        ))
    }

    /// A version whose functions run natively in this process: the native twin of a plugin,
    /// used by benchmarks to measure what Wasm costs.
    pub fn native(name: &str, functions: &[NativeFunction]) -> PluginVersion {
        let infos: Vec<FunctionInfo> = functions.iter().map(|f| (f.describe)()).collect();
        let hash = format!("native-{name}");
        let table = infos.iter().map(|info| info.name.clone()).zip(functions.iter().copied()).collect();
        PluginVersion::new(name, Path::new("<native>"), hash, infos, Implementation::Native(table))
    }

    /// Compiles `bytes`, or loads the precompiled module this engine cached for the same hash.
    fn compile(&self, bytes: &[u8], hash: &str) -> wasmtime::Result<wasmtime::Module> {
        let Some(dir) = &self.cache_dir else {
            return wasmtime::Module::new(&self.engine, bytes);
        };
        let cached = dir.join(format!("{hash}-wasmtime{}.cwasm", wasmtime_version()));
        if cached.is_file() {
            // SAFETY: the cache holds only artifacts this engine wrote (below), named by the
            // content hash of their source and the wasmtime version; wasmtime also checks that
            // the artifact matches this engine's configuration and refuses it otherwise.
            match unsafe { wasmtime::Module::deserialize_file(&self.engine, &cached) } {
                Ok(module) => return Ok(module),
                Err(err) => {
                    tracing::debug!(path = %cached.display(), %err, "ignoring cached module")
                }
            }
        }
        let module = wasmtime::Module::new(&self.engine, bytes)?;
        let written = module.serialize().and_then(|artifact| {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{hash}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, artifact)?;
            std::fs::rename(&tmp, &cached)?;
            Ok(())
        });
        if let Err(err) = written {
            tracing::debug!(dir = %dir.display(), %err, "cannot cache compiled module");
        }
        Ok(module)
    }
}

/// The wasmtime version compiled in, part of the cache key.
fn wasmtime_version() -> &'static str {
    "48"
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
