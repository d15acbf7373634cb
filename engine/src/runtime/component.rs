//! ABI 2: plugins as WebAssembly components, the world `plugin` of `sdk/wit/sluice.wit`
//! (package `sluice:plugin@2.0.0`). A component carries the same bytes as an ABI 1 module (a
//! partition of frames in, the kind's output out, one call per partition); what differs is how
//! they cross: `functions.call(function, input)` instead of `sluice_input` and a packed result,
//! and `functions.describe()` listing every function with its types as node lists.
//!
//! **What a component gets.** The `host` interface (log, metric, panic) and, from WASI 0.2,
//! only what the standard libraries of Rust, Python and JavaScript guests need to start:
//! `wasi:io` (streams, poll, error) and `wasi:cli` with no arguments, an empty environment, a
//! closed stdin and stdout/stderr captured (stderr ends up in a trap's message). No
//! filesystem, sockets, clocks or random: a component importing any other interface is
//! refused at load, naming the import.
//!
//! **Owns:** the generated bindings, the component linker, the load-time checks of a
//! component's imports and exports, its instances and calls. **Never touches:** ABI 1
//! modules (`instance.rs`, `load.rs`), the registry.

use sluice_sdk::abi::{FunctionInfo, FunctionKind};
use sluice_sdk::abi2::{self, TypeNode as Node};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::instance::{StoreState, classify, ticks};
use super::{CallError, Limits};

mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../sdk/wit",
        imports: { default: trappable },
    });
}

use bindings::sluice::plugin::host::{self, Level, MetricKind};
use bindings::sluice::plugin::types::{self, TypeNode, VariantShape};

pub(crate) use bindings::PluginPre;

/// The major version of the contract this host speaks.
pub(crate) const ABI_VERSION: u32 = abi2::VERSION_MAJOR;
/// The interface a component must export, without its version.
pub(crate) const EXPORT: &str = "sluice:plugin/functions";
/// The most a call's stdout and stderr keep (the rest is dropped).
const CAPTURED: usize = 64 * 1024;
/// The import prefixes a component may have.
const ALLOWED: [&str; 4] = ["sluice:plugin/host@", "sluice:plugin/types@", "wasi:io/", "wasi:cli/"];

/// What a component's store carries: the same labels and limits as an ABI 1 instance's, and
/// the WASI context of its captured streams.
pub(crate) struct ComponentState {
    core: StoreState,
    wasi: WasiCtx,
    table: ResourceTable,
    /// stdout and stderr: a panicking Rust guest prints its message there.
    output: MemoryOutputPipe,
}

impl std::fmt::Debug for ComponentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentState").field("core", &self.core).finish_non_exhaustive()
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime::ResourceLimiter for ComponentState {
    fn memory_growing(&mut self, current: usize, desired: usize, max: Option<usize>) -> wasmtime::Result<bool> {
        wasmtime::ResourceLimiter::memory_growing(&mut self.core, current, desired, max)
    }

    fn table_growing(&mut self, current: usize, desired: usize, max: Option<usize>) -> wasmtime::Result<bool> {
        wasmtime::ResourceLimiter::table_growing(&mut self.core, current, desired, max)
    }
}

impl host::Host for ComponentState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Error => 0,
            Level::Warn => 1,
            Level::Info => 2,
            Level::Debug => 3,
        };
        self.core.log(level, &message);
        Ok(())
    }

    fn metric(&mut self, kind: MetricKind, name: String, value: f64, count: u64) -> wasmtime::Result<()> {
        let kind = match kind {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        };
        let name = name.chars().take(256).collect();
        self.core.metric(kind, name, value, count);
        Ok(())
    }

    fn panic(&mut self, message: String) -> wasmtime::Result<()> {
        self.core.panicked(message);
        Ok(())
    }
}

impl types::Host for ComponentState {}

/// `wasi:io`'s host side lives on the resource table.
struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

/// The imports every component is linked with: `host` and WASI's io and cli.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<ComponentState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::{cli, sync};
    type S = ComponentState;
    let mut l = Linker::<S>::new(engine);
    bindings::Plugin::add_to_linker::<S, HasSelf<S>>(&mut l, |s| s)?;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<S, Io>(&mut l, |s| &mut s.table)?;
    sync::io::poll::add_to_linker::<S, Io>(&mut l, |s| &mut s.table)?;
    sync::io::streams::add_to_linker::<S, Io>(&mut l, |s| &mut s.table)?;
    cli::environment::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::exit::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::stdin::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::stdout::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::stderr::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::terminal_input::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::terminal_output::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::terminal_stdin::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::terminal_stdout::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    cli::terminal_stderr::add_to_linker::<S, WasiCli>(&mut l, S::cli)?;
    Ok(l)
}

/// What is wrong with a component's shape, found without running it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// An import the host does not give.
    Import(String),
    /// No `sluice:plugin/functions` export.
    NoExport(Vec<String>),
    /// It exports another major version of the contract.
    Version(u32),
}

/// Checks a component's imports and its `functions` export.
pub(crate) fn check(engine: &Engine, component: &Component) -> Result<(), Misfit> {
    let ty = component.component_type();
    if let Some((name, _)) = ty.imports(engine).find(|(name, _)| !ALLOWED.iter().any(|p| name.starts_with(p))) {
        return Err(Misfit::Import(name.to_string()));
    }
    let mut found = Vec::new();
    for (name, item) in ty.exports(engine) {
        let Some(version) = name.strip_prefix(EXPORT).and_then(|rest| rest.strip_prefix('@')) else {
            found.push(name.to_string());
            continue;
        };
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        match (major, item.ty) {
            (Some(ABI_VERSION), ComponentItem::ComponentInstance(_)) => return Ok(()),
            (Some(major), _) if major != ABI_VERSION => return Err(Misfit::Version(major)),
            _ => found.push(name.to_string()),
        }
    }
    Err(Misfit::NoExport(found))
}

/// A live instance of one component, with a store of its own (a trapped one is dropped).
pub(crate) struct Instance {
    store: Store<ComponentState>,
    plugin: bindings::Plugin,
    /// The input of the next call, reused.
    input: Vec<u8>,
}

impl Instance {
    pub(crate) fn new(
        engine: &Engine,
        pre: &PluginPre<ComponentState>,
        limits: Limits,
        plugin: &str,
    ) -> Result<Self, CallError> {
        let output = MemoryOutputPipe::new(CAPTURED);
        let wasi = WasiCtx::builder().stdout(output.clone()).stderr(output.clone()).build();
        let state = ComponentState { core: StoreState::new(plugin, limits), wasi, table: ResourceTable::new(), output };
        let mut store = Store::new(engine, state);
        store.limiter(|state| state);
        store.set_epoch_deadline(ticks(limits));
        let plugin = pre.instantiate(&mut store).map_err(|err| failure(&mut store, err, limits))?;
        Ok(Self { store, plugin, input: Vec::new() })
    }

    /// The labels of the calls that follow.
    pub(crate) fn state(&mut self) -> &mut StoreState {
        &mut self.store.data_mut().core
    }

    /// Every function the component describes, within `limits`.
    pub(crate) fn describe(&mut self, limits: Limits) -> Result<Vec<Described>, CallError> {
        self.store.set_epoch_deadline(ticks(limits));
        let functions = self.plugin.sluice_plugin_functions();
        let infos = functions.call_describe(&mut self.store).map_err(|err| failure(&mut self.store, err, limits))?;
        infos.into_iter().map(described).collect()
    }

    /// Runs `function` over `len` input bytes that `fill` writes, appending its output.
    pub(crate) fn call(
        &mut self,
        function: &str,
        limits: Limits,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        output: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        self.input.clear();
        self.input.resize(len, 0);
        fill(&mut self.input);
        self.store.data_mut().core.limit_memory(limits.memory);
        self.store.set_epoch_deadline(ticks(limits));
        let functions = self.plugin.sluice_plugin_functions();
        let result = functions.call_call(&mut self.store, function, &self.input);
        match result.map_err(|err| failure(&mut self.store, err, limits))? {
            Ok(bytes) if output.is_empty() => {
                *output = bytes; // lifted into a Vec of its own already: no second copy
                Ok(())
            }
            Ok(bytes) => {
                output.extend_from_slice(&bytes);
                Ok(())
            }
            Err(message) => Err(CallError::Guest { message }),
        }
    }
}

/// A trap, classified as an ABI 1 trap is; a trap without a panic message carries what the
/// guest last wrote to stderr (a Rust guest's panic, a Python traceback).
fn failure(store: &mut Store<ComponentState>, err: wasmtime::Error, limits: Limits) -> CallError {
    let state = store.data_mut();
    let printed = String::from_utf8_lossy(&state.output.contents()).trim().to_string();
    match classify(&mut state.core, err, limits) {
        CallError::Trap { message } if !printed.is_empty() && !message.starts_with("panicked") => {
            let tail: String = printed.chars().rev().take(4096).collect::<Vec<_>>().into_iter().rev().collect();
            CallError::Trap { message: format!("{message}; the plugin wrote: {tail}") }
        }
        other => other,
    }
}

/// One function as a component describes it: ABI 1's description, its parameters' type and
/// whether it is fallible.
#[derive(Debug)]
pub(crate) struct Described {
    pub(crate) info: FunctionInfo,
    pub(crate) params: Option<sluice_sdk::TypeDesc>,
    pub(crate) fallible: bool,
}

/// A description from the component, its types rebuilt from their nodes.
fn described(info: types::FunctionInfo) -> Result<Described, CallError> {
    let name = info.name.clone();
    let bad = |what: &str, err: String| CallError::BadOutput {
        message: format!("function `{name}`: its {what} type does not describe a type: {err}"),
    };
    let input = unflatten(&info.input).map_err(|err| bad("input", err))?;
    let output = unflatten(&info.output).map_err(|err| bad("output", err))?;
    let params = info.params.as_deref().map(unflatten).transpose().map_err(|err| bad("params", err))?;
    Ok(Described {
        info: FunctionInfo {
            name: info.name,
            kind: kind(info.kind),
            abi_version: sluice_sdk::abi::ABI_VERSION,
            input,
            output,
        },
        params,
        fallible: info.fallible,
    })
}

fn kind(kind: types::FunctionKind) -> FunctionKind {
    use types::FunctionKind as K;
    match kind {
        K::Map => FunctionKind::Map,
        K::FlatMap => FunctionKind::FlatMap,
        K::Filter => FunctionKind::Filter,
        K::Reduce => FunctionKind::Reduce,
        K::MapPartitions => FunctionKind::MapPartitions,
        K::Transform => FunctionKind::Transform,
        K::UpdateState => FunctionKind::UpdateState,
        K::KeyBy => FunctionKind::KeyBy,
        K::Timestamp => FunctionKind::Timestamp,
        K::MapWithState => FunctionKind::MapWithState,
    }
}

/// A type's node list (root first) as a `TypeDesc`.
fn unflatten(nodes: &[TypeNode]) -> Result<sluice_sdk::TypeDesc, String> {
    let nodes: Vec<Node> = nodes.iter().map(node).collect();
    abi2::unflatten(&nodes)
}

/// The bindings' node as the SDK's (the same WIT `type-node`, case for case).
fn node(node: &TypeNode) -> Node {
    let fields = |fields: &[types::Field]| {
        fields.iter().map(|f| abi2::Field { name: f.name.clone(), ty: f.ty }).collect::<Vec<_>>()
    };
    match node {
        TypeNode::Unit => Node::Unit,
        TypeNode::Boolean => Node::Boolean,
        TypeNode::Unsigned(bits) => Node::Unsigned(*bits),
        TypeNode::Signed(bits) => Node::Signed(*bits),
        TypeNode::Float32 => Node::Float32,
        TypeNode::Float64 => Node::Float64,
        TypeNode::Char => Node::Char,
        TypeNode::Text => Node::Text,
        TypeNode::Bytes => Node::Bytes,
        TypeNode::Option(of) => Node::Option(*of),
        TypeNode::Seq(of) => Node::Seq(*of),
        TypeNode::Tuple(items) => Node::Tuple(items.clone()),
        TypeNode::Structure((name, list)) => Node::Structure(name.clone(), fields(list)),
        TypeNode::Map((k, v)) => Node::Map(*k, *v),
        TypeNode::Enumeration((name, variants)) => {
            let variants = variants
                .iter()
                .map(|v| abi2::VariantDesc {
                    name: v.name.clone(),
                    shape: match &v.shape {
                        VariantShape::Unit => abi2::VariantShape::Unit,
                        VariantShape::Newtype(of) => abi2::VariantShape::Newtype(*of),
                        VariantShape::Tuple(items) => abi2::VariantShape::Tuple(items.clone()),
                        VariantShape::Fields(list) => abi2::VariantShape::Fields(fields(list)),
                    },
                })
                .collect();
            Node::Enumeration(name.clone(), variants)
        }
    }
}
