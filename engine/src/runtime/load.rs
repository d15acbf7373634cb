//! Loading a plugin file: the load-time sandbox.
//!
//! A file becomes a [`PluginVersion`] only after these steps, in order; the first that fails
//! refuses it with a [`LoadError`] naming the plugin, the export at fault and a [`LoadClass`]:
//!
//! 1. `not_wasm`: it starts with the `\0asm` magic; `too_large`: at most [`MAX_PLUGIN_BYTES`].
//! 2. `invalid`: wasmtime validates and compiles it (or loads the artifact cached for its hash).
//! 3. `too_large`: at most [`MAX_EXPORTS`] exports. `bad_abi`: every import is one the host
//!    provides (`sluice.panic`, `sluice.log`, `sluice.metric`: no WASI), and `memory`,
//!    `sluice_abi_version: () -> i32` and `sluice_input: (i32) -> i32` are exported with their
//!    types; `memory_limit`: its initial memory fits the cap.
//! 4. It is instantiated (its start function runs) and asked its ABI version (`bad_abi` if it
//!    is another); then every `sluice_describe_<fn>: () -> i64` must have a matching
//!    `sluice_call_<fn>: (i32) -> i64` (`bad_abi`), and each function is asked to describe
//!    itself. Step 4 runs within one budget, `validate_timeout` (default
//!    [`DEFAULT_VALIDATE_TIMEOUT`]), under the memory cap: `deadline`, `memory_limit`, `trap`,
//!    `bad_output` (a description that does not decode or names another function).
//!
//! A file whose header is a component's (ABI 2, `component.rs`) takes the same steps with the
//! component's shape instead: its imports are only `sluice:plugin/{host,types}`, `wasi:io`,
//! `wasi:cli` and `wasi:random` (`bad_abi`, naming the import), it exports
//! `sluice:plugin/functions` of major version 2 (another major: an ABI version refusal), and
//! step 4 is one instantiation and one `describe` (at most `component::MAX_FUNCTIONS`
//! functions, unique names, types that unflatten).
//!
//! Steps 1–3 never run guest code; step 4 runs it under the epoch deadline and the resource
//! limiter, like any call. Who waits for a load: `sluice check` and start-up (in order, once),
//! and a plugin's own deploy lane (`runtime/watch.rs`), never the batch path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_sdk::abi::{self, ABI_VERSION, FunctionInfo, FunctionKind};
use wasmtime::{ExternType, ValType};

use super::error::ModulePart;
use super::instance::Instance;
use super::{CallError, Implementation, LoadClass, LoadError, PluginRuntime, PluginVersion, component};

/// The largest plugin file accepted (real plugins are tens to hundreds of KiB).
pub(crate) const MAX_PLUGIN_BYTES: usize = 32 << 20;
/// The most exports a plugin may have (each function has two).
pub(crate) const MAX_EXPORTS: usize = 4096;
/// Default budget for instantiating a plugin and asking it to describe itself.
pub(crate) const DEFAULT_VALIDATE_TIMEOUT: Duration = Duration::from_secs(1);

/// The host functions a plugin may import, with their parameter count (all `i32`, no result).
const IMPORTS: [(&str, usize); 3] = [("panic", 2), ("log", 3), ("metric", 4)];

impl PluginRuntime {
    /// Reads, compiles and validates the plugin at `path`: ABI version, exports, function
    /// descriptions. Instantiates it once to ask; nothing is swapped in.
    pub fn load(&self, name: &str, path: &Path) -> Result<PluginVersion, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        self.load_bytes(name, path, &bytes)
    }

    /// As [`PluginRuntime::load`], from bytes already read (`path` names them in messages).
    pub(crate) fn load_bytes(&self, name: &str, path: &Path, bytes: &[u8]) -> Result<PluginVersion, LoadError> {
        let refuse = refuser(name, path);
        let export = |name: &str| Some(ModulePart::Export(name.to_string()));
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm {
                path: path.to_path_buf(),
                found: bytes.iter().take(4).copied().collect(),
            });
        }
        if bytes.len() > MAX_PLUGIN_BYTES {
            return Err(refuse(
                LoadClass::TooLarge,
                None,
                format!("the module is {} bytes; a plugin may be at most {MAX_PLUGIN_BYTES} bytes", bytes.len()),
            ));
        }
        let hash = content_hash(bytes);
        if is_component(bytes) {
            return self.load_component(name, path, bytes, hash);
        }
        let module = self
            .compile::<wasmtime::Module>(bytes, &hash)
            .map_err(|err| refuse(LoadClass::Invalid, None, format!("it does not compile: {err:#}")))?;
        check_shape(&module).map_err(|(class, at, reason)| refuse(class, at, reason))?;
        if let Some(ExternType::Memory(memory)) = module.get_export("memory") {
            let initial = memory.minimum().saturating_mul(memory.page_size());
            if initial > self.limits.memory as u64 {
                return Err(refuse(
                    LoadClass::MemoryLimit,
                    export("memory"),
                    format!("declares {initial} bytes of initial memory, the cap is {} bytes", self.limits.memory),
                ));
            }
        }
        let pre =
            self.linker.instantiate_pre(&module).map_err(|err| refuse(LoadClass::BadAbi, None, format!("{err:#}")))?;
        let started = Instant::now();
        let budget = self.validate_timeout;
        let remaining = || budget.saturating_sub(started.elapsed());
        let mut limits = self.limits;
        limits.timeout = budget;
        let mut probe = Instance::new(&self.engine, &pre, limits, name)
            .map_err(|err| load_call_error(&refuse, ModulePart::StartFunction, err, budget))?;
        limits.timeout = remaining();
        let version = probe
            .abi_version(limits)
            .map_err(|err| load_call_error(&refuse, ModulePart::Export(abi::EXPORT_ABI_VERSION.into()), err, budget))?;
        if version != ABI_VERSION {
            return Err(LoadError::AbiVersion {
                plugin: name.to_string(),
                path: path.to_path_buf(),
                found: version,
                expected: ABI_VERSION,
            });
        }
        let functions = check_functions(&module).map_err(|(class, at, reason)| refuse(class, at, reason))?;
        let mut infos = Vec::with_capacity(functions.len());
        let mut params = BTreeMap::new();
        let mut fallible = BTreeSet::new();
        for function in functions {
            let describe = format!("{}{function}", abi::EXPORT_DESCRIBE_PREFIX);
            limits.timeout = remaining();
            if limits.timeout.is_zero() {
                let deadline = CallError::Deadline { timeout: budget };
                return Err(load_call_error(&refuse, ModulePart::Export(describe), deadline, budget));
            }
            let info: FunctionInfo = probe
                .describe(&describe, limits)
                .map_err(|err| load_call_error(&refuse, ModulePart::Export(describe.clone()), err, budget))?;
            if info.name != function {
                return Err(refuse(
                    LoadClass::BadOutput,
                    export(&describe),
                    format!("it describes a function named `{}`", info.name),
                ));
            }
            if info.abi_version != ABI_VERSION {
                return Err(LoadError::AbiVersion {
                    plugin: name.to_string(),
                    path: path.to_path_buf(),
                    found: info.abi_version,
                    expected: ABI_VERSION,
                });
            }
            let export_fallible = format!("{}{function}", abi::EXPORT_FALLIBLE_PREFIX);
            if module.get_export(&export_fallible).is_some() {
                fallible_kind(info.kind)
                    .map_err(|reason| refuse(LoadClass::BadAbi, export(&export_fallible), reason))?;
                fallible.insert(function.clone());
            }
            infos.push(info);
            let export_params = format!("{}{function}", abi::EXPORT_PARAMS_PREFIX);
            if module.get_export(&export_params).is_some() {
                limits.timeout = remaining();
                let desc = probe
                    .describe(&export_params, limits)
                    .map_err(|err| load_call_error(&refuse, ModulePart::Export(export_params.clone()), err, budget))?;
                params.insert(function, desc);
            }
        }
        Ok(PluginVersion::new(
            name,
            path,
            hash,
            infos,
            params,
            fallible,
            Implementation::Wasm { engine: self.engine.clone(), pre, limits: self.limits },
        ))
    }
}

impl PluginRuntime {
    /// Steps 2–4 for an ABI 2 component (`component.rs`): it compiles; it imports nothing but
    /// `sluice:plugin`'s `host` and `types`, `wasi:io`, `wasi:cli` and `wasi:random` (`bad_abi`,
    /// naming the import); it exports `sluice:plugin/functions` of major version 2 (`bad_abi`); then,
    /// within `validate_timeout` and under the memory cap, it is instantiated and describes its
    /// functions (unique names, fallible only for map, flat_map and filter).
    fn load_component(&self, name: &str, path: &Path, bytes: &[u8], hash: String) -> Result<PluginVersion, LoadError> {
        let refuse = refuser(name, path);
        let export = || Some(ModulePart::Export(component::EXPORT.to_string()));
        let compiled = self
            .compile::<wasmtime::component::Component>(bytes, &hash)
            .map_err(|err| refuse(LoadClass::Invalid, None, format!("it does not compile: {err:#}")))?;
        let capabilities = self.capabilities.get(name).copied().unwrap_or_default();
        match component::check(&self.engine, &compiled, capabilities) {
            Ok(()) => {}
            Err(component::Misfit::Import(import)) if import.starts_with(component::CLOCKS) => {
                return Err(refuse(
                    LoadClass::BadAbi,
                    Some(ModulePart::Import(import)),
                    format!(
                        "it reads a clock, which the pipeline does not allow it (a plugin's output should follow from its input; to allow it: `[capabilities]` `{name} = [\"clocks\"]`)"
                    ),
                ));
            }
            Err(component::Misfit::Import(import)) => {
                return Err(refuse(
                    LoadClass::BadAbi,
                    Some(ModulePart::Import(import)),
                    "the host provides no such import; a component may import only `sluice:plugin/host`, `wasi:io`, `wasi:cli`, `wasi:random` and, where the pipeline allows it, `wasi:clocks` (no files or sockets)".into(),
                ));
            }
            Err(component::Misfit::NoExport(found)) => {
                let found = if found.is_empty() { "nothing".to_string() } else { found.join(", ") };
                return Err(refuse(
                    LoadClass::BadAbi,
                    export(),
                    format!("missing: a component exports `{}@2.0.0`; it exports {found}", component::EXPORT),
                ));
            }
            Err(component::Misfit::Version(found)) => {
                return Err(LoadError::AbiVersion {
                    plugin: name.to_string(),
                    path: path.to_path_buf(),
                    found,
                    expected: component::ABI_VERSION,
                });
            }
        }
        let pre = self
            .components
            .instantiate_pre(&compiled)
            .and_then(component::PluginPre::new)
            .map_err(|err| refuse(LoadClass::BadAbi, None, format!("{err:#}")))?;
        let started = Instant::now();
        let budget = self.validate_timeout;
        let mut limits = self.limits;
        limits.timeout = budget;
        let mut probe = component::Instance::new(&self.engine, &pre, limits, name, capabilities)
            .map_err(|err| load_call_error(&refuse, ModulePart::StartFunction, err, budget))?;
        limits.timeout = budget.saturating_sub(started.elapsed());
        let part = || ModulePart::Export(component::EXPORT.to_string());
        if limits.timeout.is_zero() {
            let deadline = CallError::Deadline { timeout: budget };
            return Err(load_call_error(&refuse, part(), deadline, budget));
        }
        let described = probe.describe(limits).map_err(|err| load_call_error(&refuse, part(), err, budget))?;
        let (mut infos, mut params, mut fallible) = (Vec::new(), BTreeMap::new(), BTreeSet::new());
        let mut names = BTreeSet::new();
        for function in described {
            let name = function.info.name.clone();
            if !names.insert(name.clone()) {
                return Err(refuse(
                    LoadClass::BadOutput,
                    export(),
                    format!("it describes two functions named `{name}`"),
                ));
            }
            if function.fallible {
                fallible_kind(function.info.kind)
                    .map_err(|reason| refuse(LoadClass::BadAbi, export(), format!("function `{name}`: {reason}")))?;
                fallible.insert(name.clone());
            }
            if let Some(desc) = function.params {
                params.insert(name, desc);
            }
            infos.push(function.info);
        }
        if infos.is_empty() {
            return Err(refuse(LoadClass::BadAbi, export(), "it describes no functions".into()));
        }
        let implementation =
            Implementation::Component { engine: self.engine.clone(), pre, limits: self.limits, capabilities };
        Ok(PluginVersion::new(name, path, hash, infos, params, fallible, implementation))
    }
}

/// A function of `kind` may return per-record errors (`Result`) only if it is a map, flat_map
/// or filter.
fn fallible_kind(kind: FunctionKind) -> Result<(), String> {
    match kind {
        FunctionKind::Map | FunctionKind::FlatMap | FunctionKind::Filter => Ok(()),
        other => Err(format!("a {other} function cannot return per-record errors (only map, flat_map and filter do)")),
    }
}

/// Whether `bytes` (starting with the magic) are a component: its version field is a
/// component's (`0d 00 01 00`), a core module's is `01 00 00 00`.
fn is_component(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00])
}

/// How plugin `name`, read from `path`, is refused: class, the part at fault, why.
fn refuser<'a>(name: &'a str, path: &'a Path) -> impl Fn(LoadClass, Option<ModulePart>, String) -> LoadError + 'a {
    move |class, at, reason| LoadError::Refused {
        plugin: name.to_string(),
        path: path.to_path_buf(),
        class,
        at,
        reason,
    }
}

/// A failed call while loading, as a refusal of `export`.
fn load_call_error(
    refuse: &impl Fn(LoadClass, Option<ModulePart>, String) -> LoadError,
    at: ModulePart,
    err: CallError,
    budget: Duration,
) -> LoadError {
    let class = LoadClass::of_call(&err);
    let reason = match err {
        CallError::Deadline { .. } => {
            format!("ran past the validate_timeout ({}) for loading a plugin", humantime::format_duration(budget))
        }
        CallError::MemoryLimit { desired, limit, .. } => {
            format!("needs {desired} bytes of memory, the cap is {limit} bytes")
        }
        CallError::Trap { message } => format!("trapped: {message}"),
        CallError::Guest { message } | CallError::BadOutput { message } => message,
    };
    refuse(class, Some(at), reason)
}

/// Checks the module's imports and the exports every ABI version has (`memory`,
/// `sluice_abi_version`, `sluice_input`) without running it.
fn check_shape(module: &wasmtime::Module) -> Result<(), Refusal> {
    let bad = |export: &str, reason: String| (LoadClass::BadAbi, Some(ModulePart::Export(export.to_string())), reason);
    let bad_import = |import: String, reason: String| (LoadClass::BadAbi, Some(ModulePart::Import(import)), reason);
    let count = module.exports().len();
    if count > MAX_EXPORTS {
        return Err((
            LoadClass::TooLarge,
            None,
            format!("the module has {count} exports; a plugin may have at most {MAX_EXPORTS}"),
        ));
    }
    for import in module.imports() {
        let what = format!("{}.{}", import.module(), import.name());
        let expected = IMPORTS.iter().find(|(name, _)| import.module() == abi::IMPORT_MODULE && import.name() == *name);
        match (expected, import.ty()) {
            (Some(&(_, params)), ExternType::Func(ty))
                if ty.params().len() == params
                    && ty.params().all(|p| matches!(p, ValType::I32))
                    && ty.results().len() == 0 => {}
            (Some(&(_, params)), _) => {
                return Err(bad_import(
                    what,
                    format!("must be imported as a function of {params} i32 parameters and no result"),
                ));
            }
            (None, _) => {
                return Err(bad_import(
                    what,
                    format!(
                        "the host provides no such import; a plugin may import only `{m}.panic`, `{m}.log` and `{m}.metric` (no WASI: plugins reach no files, network or clocks)",
                        m = abi::IMPORT_MODULE
                    ),
                ));
            }
        }
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        Some(_) => return Err(bad("memory", "must be a memory".into())),
        None => return Err(bad("memory", "missing: a plugin exports its linear memory as `memory`".into())),
    }
    func_export(module, abi::EXPORT_ABI_VERSION, &[], &[ValType::I32])?;
    func_export(module, abi::EXPORT_INPUT, &[ValType::I32], &[ValType::I32])
}

/// The names of the module's functions (from `sluice_describe_<fn>` exports), each with its
/// export pair typed as the ABI says; checked once the ABI version is known to match.
fn check_functions(module: &wasmtime::Module) -> Result<Vec<String>, Refusal> {
    let mut functions = Vec::new();
    for export in module.exports() {
        let Some(function) = export.name().strip_prefix(abi::EXPORT_DESCRIBE_PREFIX) else { continue };
        func_export(module, export.name(), &[], &[ValType::I64])?;
        func_export(module, &format!("{}{function}", abi::EXPORT_CALL_PREFIX), &[ValType::I32], &[ValType::I64])?;
        let params = format!("{}{function}", abi::EXPORT_PARAMS_PREFIX);
        if module.get_export(&params).is_some() {
            func_export(module, &params, &[], &[ValType::I64])?;
        }
        let fallible = format!("{}{function}", abi::EXPORT_FALLIBLE_PREFIX);
        if module.get_export(&fallible).is_some() {
            func_export(module, &fallible, &[], &[ValType::I32])?;
        }
        functions.push(function.to_string());
    }
    if functions.is_empty() {
        return Err((
            LoadClass::BadAbi,
            None,
            format!("it exports no Sluice functions ({}<fn>)", abi::EXPORT_DESCRIBE_PREFIX),
        ));
    }
    Ok(functions)
}

/// A refusal found without running the module: class, the part at fault, why.
type Refusal = (LoadClass, Option<ModulePart>, String);

/// Checks that `name` is an exported function with these parameter and result types.
fn func_export(module: &wasmtime::Module, name: &str, params: &[ValType], results: &[ValType]) -> Result<(), Refusal> {
    let shape = |types: &[ValType]| types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let expected = format!("a function ({}) -> ({})", shape(params), shape(results));
    let found = match module.get_export(name) {
        None => {
            return Err((
                LoadClass::BadAbi,
                Some(ModulePart::Export(name.into())),
                format!("missing: expected {expected}"),
            ));
        }
        Some(ExternType::Func(ty)) => {
            let (p, r): (Vec<ValType>, Vec<ValType>) = (ty.params().collect(), ty.results().collect());
            let same =
                |a: &[ValType], b: &[ValType]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ValType::eq(x, y));
            if same(&p, params) && same(&r, results) {
                return Ok(());
            }
            format!("a function ({}) -> ({})", shape(&p), shape(&r))
        }
        Some(other) => format!("{other:?}").split('(').next().unwrap_or("something else").to_lowercase(),
    };
    Err((LoadClass::BadAbi, Some(ModulePart::Export(name.into())), format!("expected {expected}, found {found}")))
}

/// A plugin's content hash: SHA-256 of its bytes, hex.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
