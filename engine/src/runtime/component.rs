//! ABI 2: plugins as WebAssembly components, the world `plugin` of `sdk/wit/sluice.wit`
//! (package `sluice:plugin@2.0.0`). A component carries the same bytes as an ABI 1 module (a
//! partition of frames in, the kind's output out, one call per partition); what differs is how
//! they cross: `functions.call(function, input)` instead of `sluice_input` and a packed result,
//! and `functions.describe()` listing every function with its types as node lists.
//!
//! **What a component gets.** The `host` interface (log, metric, panic) and, from WASI 0.2,
//! only what the standard libraries of Rust, Python and JavaScript guests need: `wasi:io`
//! (streams, poll, error); `wasi:cli` with no arguments, an empty environment, a closed stdin
//! and stdout/stderr captured (the last [`CAPTURED`] bytes of a call end up in its trap's
//! message); `wasi:random` from a fixed seed (Rust's `HashMap` asks for keys), the same bytes
//! for every instance, so a function's output stays a function of its input. No filesystem,
//! sockets or clocks: a component importing any other interface is refused at load, naming
//! the import. The pipeline's `[capabilities]` may allow a plugin more ([`Capabilities`]):
//! `clocks` (`wasi:clocks`, the host's wall and monotonic clocks) and `random` (`wasi:random`
//! from the host's entropy instead of the fixed seed).
//!
//! **Owns:** the generated bindings, the component linker, the load-time checks of a
//! component's imports and exports, its instances and calls. **Never touches:** ABI 1
//! modules (`instance.rs`, `load.rs`), the registry.

use sluice_sdk::abi::{FunctionInfo, FunctionKind};
use sluice_sdk::abi2::{self, TypeNode as Node};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamResult};

use super::instance::{Input, StoreState, classify, ticks};
use super::{CallError, Capabilities, Limits};

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
const ALLOWED: [&str; 5] = ["sluice:plugin/host@", "sluice:plugin/types@", "wasi:io/", "wasi:cli/", "wasi:random/"];
/// The import prefix of the clocks, which a component may have where the pipeline allows it.
pub(crate) const CLOCKS: &str = "wasi:clocks/";
/// The most resources (streams, pollables) a component's instance may hold in the host.
const RESOURCES: usize = 256;
/// The most functions a component may describe.
pub(crate) const MAX_FUNCTIONS: usize = 2048;

/// What a component's store carries: the same labels and limits as an ABI 1 instance's, and
/// the WASI context of its captured streams.
pub(crate) struct ComponentState {
    core: StoreState,
    wasi: WasiCtx,
    table: ResourceTable,
    /// stdout and stderr: what the call under way printed last.
    output: Printed,
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

/// The imports every component is linked with: `host` and WASI's io, cli, random and clocks
/// ([`check`] refuses a component importing clocks unless they are allowed it).
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
    {
        use wasmtime_wasi::p2::bindings::random;
        use wasmtime_wasi::random::WasiRandom;
        random::random::add_to_linker::<S, WasiRandom>(&mut l, |s| s.wasi.random())?;
        random::insecure::add_to_linker::<S, WasiRandom>(&mut l, |s| s.wasi.random())?;
        random::insecure_seed::add_to_linker::<S, WasiRandom>(&mut l, |s| s.wasi.random())?;
    }
    {
        use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
        use wasmtime_wasi::p2::bindings::clocks;
        clocks::wall_clock::add_to_linker::<S, WasiClocks>(&mut l, S::clocks)?;
        clocks::monotonic_clock::add_to_linker::<S, WasiClocks>(&mut l, S::clocks)?;
    }
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

/// Checks a component's imports (against what it may use, `capabilities`) and its `functions`
/// export.
pub(crate) fn check(engine: &Engine, component: &Component, capabilities: Capabilities) -> Result<(), Misfit> {
    let ty = component.component_type();
    let allowed =
        |name: &str| ALLOWED.iter().any(|p| name.starts_with(p)) || (capabilities.clocks && name.starts_with(CLOCKS));
    if let Some((name, _)) = ty.imports(engine).find(|(name, _)| !allowed(name)) {
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
        capabilities: Capabilities,
    ) -> Result<Self, CallError> {
        let output = Printed::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.clone()).stderr(output.clone());
        if !capabilities.random {
            // Random from a fixed seed: every instance (every replay) draws the same bytes.
            wasi.secure_random(wasmtime_wasi::random::Deterministic::new(vec![0x5a; 32]))
                .insecure_random(wasmtime_wasi::random::Deterministic::new(vec![0xa5; 32]))
                .insecure_random_seed(0x5_1u128);
        }
        let wasi = wasi.build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCES);
        let state = ComponentState { core: StoreState::new(plugin, limits), wasi, table, output };
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
        self.store.data().output.clear();
        let functions = self.plugin.sluice_plugin_functions();
        let infos = functions.call_describe(&mut self.store).map_err(|err| failure(&mut self.store, err, limits))?;
        if infos.len() > MAX_FUNCTIONS {
            return Err(CallError::BadOutput {
                message: format!("it describes {} functions; a plugin may have at most {MAX_FUNCTIONS}", infos.len()),
            });
        }
        infos.into_iter().map(described).collect()
    }

    /// Runs `function` over `input` (bytes to be written go into a host buffer first),
    /// appending its output.
    pub(crate) fn call(
        &mut self,
        function: &str,
        limits: Limits,
        input: Input<'_, impl FnOnce(&mut [u8])>,
        output: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        let input = match input {
            // Lowered straight from the caller's bytes: one copy, into the guest.
            Input::Bytes(bytes) => bytes,
            Input::Filled(len, fill) => {
                // Grown, never shrunk or cleared: the bytes are written over (no memset per call).
                if self.input.len() < len {
                    self.input.resize(len, 0);
                }
                fill(&mut self.input[..len]);
                &self.input[..len]
            }
        };
        self.store.data_mut().core.limit_memory(limits.memory);
        self.store.data().output.clear();
        self.store.set_epoch_deadline(ticks(limits));
        let functions = self.plugin.sluice_plugin_functions();
        let result = functions.call_call(&mut self.store, function, input);
        match result.map_err(|err| failure(&mut self.store, err, limits))? {
            // The lifted list is the output when there is nothing to append to: no second copy.
            Ok(bytes) if output.is_empty() => {
                *output = bytes;
                Ok(())
            }
            Ok(bytes) => {
                output.extend_from_slice(&bytes);
                Ok(())
            }
            Err(message) => Err(self.store.data_mut().core.guest_error(message, limits)),
        }
    }
}

/// A trap, classified as an ABI 1 trap is; a trap without a panic message carries what the
/// guest last wrote to stderr (a Rust guest's panic, a Python traceback).
fn failure(store: &mut Store<ComponentState>, err: wasmtime::Error, limits: Limits) -> CallError {
    let state = store.data_mut();
    let printed = state.output.text();
    let panicked = state.core.has_panicked();
    match classify(&mut state.core, err, limits) {
        CallError::Trap { message } if !printed.is_empty() && !panicked => {
            CallError::Trap { message: format!("{message}; the plugin printed: {printed}") }
        }
        other => other,
    }
}

/// A guest's stdout and stderr together: the last [`CAPTURED`] bytes it printed during the call
/// under way (cleared before each call), for a trap's message. Always takes a write: a guest
/// that prints a lot loses its oldest lines, never fails.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<VecDeque<u8>>>);

impl Printed {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().expect("printed lock");
        tail.extend(bytes);
        let over = tail.len().saturating_sub(CAPTURED);
        tail.drain(..over);
    }

    fn clear(&self) {
        self.0.lock().expect("printed lock").clear();
    }

    fn text(&self) -> String {
        let tail = self.0.lock().expect("printed lock");
        let bytes: Vec<u8> = tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }
}

impl OutputStream for Printed {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CAPTURED)
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Printed {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Printed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Printed {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Printed {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
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
