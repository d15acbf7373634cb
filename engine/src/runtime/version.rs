//! One loaded version of a plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use rustc_hash::FxHashMap;
use sluice_sdk::TypeDesc;
use sluice_sdk::abi::{FunctionInfo, NativeFunction};

use super::Limits;
use super::instance::StoreState;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How a version's functions run.
pub(crate) enum Implementation {
    /// A compiled Wasm module, ready to instantiate.
    Wasm {
        /// The engine it was compiled for.
        engine: wasmtime::Engine,
        /// The module with its imports resolved.
        pre: wasmtime::InstancePre<StoreState>,
        /// Limits for its instances and calls.
        limits: Limits,
    },
    /// A compiled component (ABI 2, `component.rs`), ready to instantiate.
    Component {
        /// The engine it was compiled for.
        engine: wasmtime::Engine,
        /// The component with its imports resolved.
        pre: super::component::PluginPre<super::component::ComponentState>,
        /// Limits for its instances and calls.
        limits: Limits,
        /// What its instances may use beyond the default sandbox.
        capabilities: super::Capabilities,
    },
    /// The same SDK code compiled into the host (benchmarks' native twin).
    Native(FxHashMap<String, NativeFunction>),
}

impl std::fmt::Debug for Implementation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wasm { limits, .. } => f.debug_struct("Wasm").field("limits", limits).finish_non_exhaustive(),
            Self::Component { limits, .. } => {
                f.debug_struct("Component").field("limits", limits).finish_non_exhaustive()
            }
            Self::Native(functions) => f.debug_tuple("Native").field(&functions.keys().collect::<Vec<_>>()).finish(),
        }
    }
}

/// One immutable, validated version of a plugin. Batches hold an `Arc` of the version that
/// serves them; a swap only changes which version the next batch gets.
pub struct PluginVersion {
    /// Unique per process; worker instances are keyed by it.
    pub id: u64,
    /// The plugin's name in the pipeline file.
    pub plugin: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file's content, hex.
    pub hash: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Its functions, by name.
    pub functions: Arc<BTreeMap<String, FunctionInfo>>,
    /// The type of the parameters of each function that takes them (`sluice_params_<fn>`).
    pub params: Arc<BTreeMap<String, TypeDesc>>,
    /// The functions that return `Result` (`sluice_fallible_<fn>`): their output ends with
    /// their records' errors.
    pub fallible: Arc<BTreeSet<String>>,
    /// The parameters the calls of one stage carry, per function (set on the stage's copy of
    /// the version, `graph/run.rs`; empty otherwise).
    pub(crate) call_params: Arc<BTreeMap<String, Arc<[u8]>>>,
    /// The stage whose calls this copy serves (set with `call_params`): plugin metrics' and
    /// log lines' `stage`.
    pub(crate) call_stage: Option<Arc<str>>,
    /// A serving version's copy in a shadow run: its plugin metrics and log lines are dropped
    /// (the serving run's count).
    pub(crate) quiet: bool,
    pub(crate) implementation: Implementation,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("id", &self.id)
            .field("plugin", &self.plugin)
            .field("hash", &self.short_hash())
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PluginVersion {
    pub(crate) fn new(
        plugin: &str,
        path: &Path,
        hash: String,
        functions: Vec<FunctionInfo>,
        params: BTreeMap<String, TypeDesc>,
        fallible: BTreeSet<String>,
        implementation: Implementation,
    ) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            plugin: plugin.to_string(),
            path: path.to_path_buf(),
            hash,
            loaded_at: SystemTime::now(),
            functions: Arc::new(functions.into_iter().map(|f| (f.name.clone(), f)).collect()),
            params: Arc::new(params),
            fallible: Arc::new(fallible),
            call_params: Arc::default(),
            call_stage: None,
            quiet: false,
            implementation,
        }
    }

    /// Whether it is an ABI 1 module (no WASI, so no capabilities either).
    pub(crate) fn is_module(&self) -> bool {
        matches!(self.implementation, Implementation::Wasm { .. })
    }

    /// Whether it imports an interface whose name starts with `prefix` (`wasi:clocks/`); a
    /// module or a native version imports none.
    pub(crate) fn imports(&self, prefix: &str) -> bool {
        match &self.implementation {
            Implementation::Component { engine, pre, .. } => pre
                .instance_pre()
                .component()
                .component_type()
                .imports(engine)
                .any(|(name, _)| name.starts_with(prefix)),
            Implementation::Wasm { .. } | Implementation::Native(_) => false,
        }
    }

    /// The first 12 hex digits of the content hash, as shown in logs.
    pub(crate) fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }

    /// The same version (same id, so the same worker instances) with other call limits: a
    /// stage's own `timeout` and `memory_limit`. Native versions have no limits to change.
    pub(crate) fn with_limits(&self, timeout: Option<std::time::Duration>, memory: Option<usize>) -> Self {
        let implementation = match &self.implementation {
            Implementation::Wasm { engine, pre, limits } => Implementation::Wasm {
                engine: engine.clone(),
                pre: pre.clone(),
                limits: Limits { timeout: timeout.unwrap_or(limits.timeout), memory: memory.unwrap_or(limits.memory) },
            },
            Implementation::Component { engine, pre, limits, capabilities } => Implementation::Component {
                engine: engine.clone(),
                pre: pre.clone(),
                limits: Limits { timeout: timeout.unwrap_or(limits.timeout), memory: memory.unwrap_or(limits.memory) },
                capabilities: *capabilities,
            },
            Implementation::Native(functions) => Implementation::Native(functions.clone()),
        };
        Self {
            id: self.id,
            plugin: self.plugin.clone(),
            path: self.path.clone(),
            hash: self.hash.clone(),
            loaded_at: self.loaded_at,
            functions: self.functions.clone(),
            params: self.params.clone(),
            fallible: self.fallible.clone(),
            call_params: self.call_params.clone(),
            call_stage: self.call_stage.clone(),
            quiet: self.quiet,
            implementation,
        }
    }

    /// `name (kind)` of every function, for messages.
    pub(crate) fn function_list(&self) -> String {
        let list: Vec<String> = self.functions.values().map(|f| format!("{} ({})", f.name, f.kind)).collect();
        list.join(", ")
    }
}
