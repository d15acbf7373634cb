//! The fuzz targets' entry points (`fuzz/`, cargo-fuzz and libFuzzer): one function per target,
//! each taking libFuzzer's bytes and handing them to the engine's own code, the code that reads
//! that kind of input in a run. Compiled for tests (which replay `fuzz/corpus/` and
//! `fuzz/regressions/` through these functions) and under `--cfg fuzzing` (as cargo-fuzz
//! builds), never into the engine a user runs. Public only so that the fuzz crate can call it;
//! the rooms it calls stay `pub(crate)`.
//!
//! | target | its input | what reads it |
//! |---|---|---|
//! | `pipeline` | a pipeline file | `PipelineFile::parse`, `validate`, `Graph::build` against this module's plugin (`sluice check` without plugin files) |
//! | `guest_output` | lines, then one edit per plugin call | a fixed pipeline of every kind of stage, two batches: every check the host makes of a plugin's output (`graph/ops.rs`, `state.rs`, `event.rs`, `run.rs`: the `bad_output` paths), `on_error`, and rendering each stream as JSON (`codec/json.rs`) |
//! | `guest_call` | one call's input | a real ABI 1 module (`instance.rs`): `read_output` of what it returns, in or out of its memory, error flag, trap |
//! | `describe` | a mode byte, a description, a record | a `FunctionInfo` or parameters' `TypeDesc` in postcard (`instance::description`), or an ABI 2 node list (`abi2::unflatten`); then `Graph::build` with it, and the record skipped, rendered and encoded with each type |
//! | `checkpoint` | a checkpoint file, or a format byte and a payload | `checkpoint::decode` (the payload framed with a valid checksum); the state imported into the fixed pipeline, which runs a batch on it |
//! | `wal` | a write-ahead-log block file | `batch_log::decode_block`; the block replayed through the fixed pipeline |
//! | `admin` | a method byte, a URI, an `Authorization` value, a body | the admin router (`admin/mod.rs`), with a token and without: paths, query strings (deploy, rollback, `?token=`), deploy bodies through the plugin's deploy lane |
//!
//! Chunks of an input are separated by [`SEP`]. Nothing here catches a panic: an input that
//! makes one is a bug of the engine, fixed there, and kept in `fuzz/regressions/<target>/`.

mod plugin;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use sluice_sdk::TypeDesc;
use sluice_sdk::abi::{ABI_VERSION, FunctionInfo, FunctionKind};
use sluice_sdk::abi2::{self, Field, TypeNode, VariantDesc, VariantShape};

use crate::block::{Block, records};
use crate::codec::{encode_json, render, skip_value};
use crate::config::PipelineFile;
use crate::graph::{BatchOutcome, DeadLetter, GraphState, run_batch};
use crate::pipeline::Pipeline;
use crate::runtime::{CallError, Implementation, Limits, PluginRuntime, PluginVersion, instance};

/// What separates the chunks of an input (bytes that are never in UTF-8 text).
pub const SEP: &[u8] = b"\xfa\xfb";

/// A fuzz target: it takes libFuzzer's input.
pub type Target = fn(&[u8]);

/// Every target, by name, as `fuzz/fuzz_targets/` and `scripts/fuzz.sh` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("pipeline", pipeline),
    ("guest_output", guest_output),
    ("guest_call", guest_call),
    ("describe", describe),
    ("checkpoint", checkpoint),
    ("wal", wal),
    ("admin", admin),
];

/// The chunks of `data` between [`SEP`]s.
fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let chunk = rest?;
        match memchr::memmem::find(chunk, SEP) {
            Some(at) => {
                rest = Some(&chunk[at + SEP.len()..]);
                Some(&chunk[..at])
            }
            None => {
                rest = None;
                Some(chunk)
            }
        }
    })
}

/// Where the targets' pipeline files say they are: nothing is there, so plugins are not found
/// (and are this module's plugin instead) and nothing is read.
const PIPELINE_PATH: &str = "/nonexistent/sluice-fuzz/pipeline.toml";

/// A pipeline file: parsed, validated and built as `sluice check` does, with every plugin it
/// names served by this module's plugin (which has the example plugins' functions).
pub fn pipeline(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let file = match PipelineFile::parse(Path::new(PIPELINE_PATH), text) {
        Ok(file) => file,
        Err(errors) => {
            let _ = errors.to_string();
            return;
        }
    };
    let versions = file.config.plugins.keys().map(|name| plugin::version(name)).collect();
    match Pipeline::from_versions(file, versions) {
        Ok(pipeline) => {
            let _ = crate::admin::StageRow::of(&pipeline.graph, &pipeline.file.config);
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
}

/// The pipeline `guest_output`, `checkpoint` and `wal` run: a stage of every kind that calls a
/// plugin, and host-only ops after them, each reading the plugin's (edited) output.
const FIXED: &str = r#"
[pipeline]
name = "fuzz"
batch_interval = "1s"
block_interval = "1s"

[plugins]
p = "p.wasm"

[[sources]]
name = "lines"
type = "socket"
address = "127.0.0.1:9"

[[stages]]
name = "pairs"
input = "lines"
op = "flat_map"
plugin = "p"
function = "split_words"
on_error = "skip"

[[stages]]
name = "counts"
input = "pairs"
op = "reduce_by_key"
plugin = "p"
function = "sum"
on_error = "skip"

[[stages]]
name = "top"
input = "counts"
op = "transform"
plugin = "p"
function = "top"
params = { k = 3 }
on_error = "skip"

[[stages]]
name = "ranked"
input = "counts"
op = "transform"
plugin = "p"
function = "top10"
on_error = "retry"
retries = 1

[[stages]]
name = "upper"
input = "lines"
op = "map"
plugin = "p"
function = "to_upper"
on_error = "skip"

[[stages]]
name = "kept"
input = "lines"
op = "filter"
plugin = "p"
function = "non_empty"
on_error = "skip"

[[stages]]
name = "numbers"
input = "lines"
op = "map"
plugin = "p"
function = "parse_number"
on_error = "dead_letter"
dead_letter = "letters"

[[stages]]
name = "shorts"
input = "lines"
op = "filter"
plugin = "p"
function = "short"
on_error = "dead_letter"
dead_letter = "letters"

[[stages]]
name = "chars"
input = "lines"
op = "flat_map"
plugin = "p"
function = "letters"
on_error = "skip"

[[stages]]
name = "lengths"
input = "lines"
op = "map_partitions"
plugin = "p"
function = "lengths"
on_error = "skip"

[[stages]]
name = "total"
input = "lengths"
op = "reduce"
plugin = "p"
function = "sum"
on_error = "skip"

[[stages]]
name = "sorted"
input = "lines"
op = "transform"
plugin = "p"
function = "sorted"
on_error = "skip"

[[stages]]
name = "keyed"
input = "lines"
op = "key_by"
plugin = "p"
function = "first_word"
on_error = "skip"

[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "p"
function = "split_words"
on_error = "skip"

[[stages]]
name = "running"
input = "words"
op = "update_state_by_key"
plugin = "p"
function = "running_total"
on_error = "skip"

[[stages]]
name = "visits"
input = "words"
op = "map_with_state"
plugin = "p"
function = "visits"
state_timeout = "1s"
on_error = "skip"

[[stages]]
name = "windowed"
input = "words"
op = "reduce_by_key_and_window"
plugin = "p"
function = "sum"
inverse = "subtract"
window = "2s"
on_error = "skip"

[[stages]]
name = "clicks"
input = "lines"
op = "flat_map"
plugin = "p"
function = "parse"
on_error = "skip"

[[stages]]
name = "sessions"
input = "clicks"
op = "event_window"
plugin = "p"
function = "sum"
timestamp = "click_time"
gap = "1s"
on_error = "skip"

[[stages]]
name = "first"
input = "lines"
op = "map"
plugin = "p"
function = "key_by_first_word"
on_error = "skip"

[[stages]]
name = "joined"
inputs = ["first", "keyed"]
op = "join"
how = "full"

[[stages]]
name = "grouped"
input = "words"
op = "group_by_key"

[[stages]]
name = "cogrouped"
inputs = ["words", "counts"]
op = "cogroup"

[[stages]]
name = "distinct"
input = "upper"
op = "count_by_value"

[[stages]]
name = "by_window"
input = "lengths"
op = "reduce_by_window"
plugin = "p"
function = "sum"
window = "2s"
on_error = "skip"

[[sinks]]
name = "letters"
type = "print"

[[sinks]]
name = "out_top"
input = "top"
type = "print"

[[sinks]]
name = "out_ranked"
input = "ranked"
type = "print"

[[sinks]]
name = "out_kept"
input = "kept"
type = "print"

[[sinks]]
name = "out_numbers"
input = "numbers"
type = "print"

[[sinks]]
name = "out_shorts"
input = "shorts"
type = "print"

[[sinks]]
name = "out_chars"
input = "chars"
type = "print"

[[sinks]]
name = "out_total"
input = "total"
type = "print"

[[sinks]]
name = "out_sorted"
input = "sorted"
type = "print"

[[sinks]]
name = "out_running"
input = "running"
type = "print"

[[sinks]]
name = "out_visits"
input = "visits"
type = "print"

[[sinks]]
name = "out_windowed"
input = "windowed"
type = "print"

[[sinks]]
name = "out_sessions"
input = "sessions"
type = "print"

[[sinks]]
name = "out_late"
input = "sessions.late"
type = "print"

[[sinks]]
name = "out_joined"
input = "joined"
type = "print"

[[sinks]]
name = "out_grouped"
input = "grouped"
type = "print"

[[sinks]]
name = "out_cogrouped"
input = "cogrouped"
type = "print"

[[sinks]]
name = "out_distinct"
input = "distinct"
type = "print"

[[sinks]]
name = "out_by_window"
input = "by_window"
type = "print"
"#;

/// The fixed pipeline and its one worker (one worker: calls come in a fixed order).
struct Fixed {
    pipeline: Pipeline,
    pool: rayon::ThreadPool,
}

fn fixed() -> &'static Fixed {
    static FIXED_PIPELINE: OnceLock<Fixed> = OnceLock::new();
    FIXED_PIPELINE.get_or_init(|| {
        let file = PipelineFile::parse(Path::new(PIPELINE_PATH), FIXED).expect("the fixed pipeline parses");
        let pipeline = Pipeline::from_versions(file, vec![plugin::version("p")])
            .unwrap_or_else(|errors| panic!("the fixed pipeline builds: {errors}"));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("one worker thread");
        Fixed { pipeline, pool }
    })
}

/// Lines every stage of the fixed pipeline has records for.
const SAMPLE: &[u8] = b"to be or not to be\nuser 1500\n42\n\nbe 2500";

/// Held while the fixed pipeline runs: the plugin's edits are one script at a time.
static RUNNING: Mutex<()> = Mutex::new(());

/// A block of source 0 with `lines` (split at `\n`; a line that is not UTF-8 is dropped, as a
/// receiver drops it).
fn block_of(lines: &[u8]) -> Block {
    let mut data = Vec::new();
    let mut records = 0;
    for line in lines.split(|&b| b == b'\n').filter_map(|line| std::str::from_utf8(line).ok()) {
        crate::codec::write_frame(&mut data, line).expect("a string encodes");
        records += 1;
    }
    Block { source: 0, seq: 0, records, invalid: 0, data, task: None }
}

/// Runs batch `time` of the fixed pipeline over `blocks` on `state`, rendering every stream and
/// dead letter as a sink would.
fn run_fixed(state: &mut GraphState, time: u64, last: bool, blocks: Vec<Block>) -> Option<BatchOutcome> {
    let Fixed { pipeline, pool } = fixed();
    let graph = &pipeline.graph;
    let snapshot = pipeline.registry.snapshot();
    let outcome = match run_batch(graph, state, &snapshot, time, last, blocks, pool) {
        Ok(outcome) => outcome,
        Err(error) => {
            let _ = error.to_string();
            return None;
        }
    };
    let mut line = String::new();
    for (partitions, stream) in outcome.streams.iter().zip(&graph.streams) {
        for record in records(partitions.as_deref().unwrap_or_default()) {
            line.clear();
            render(&stream.ty, record, &mut line);
        }
    }
    let letter = DeadLetter::type_desc();
    for (_, partition) in &outcome.dead_letters {
        for record in records(std::slice::from_ref(partition)) {
            line.clear();
            render(&letter, record, &mut line);
        }
    }
    for handled in &outcome.handled {
        let _ = handled.error.to_string();
    }
    Some(outcome)
}

/// Lines, then one edit per plugin call (see `plugin.rs`): two batches of the fixed pipeline
/// over the same lines, the second the last (every event window closes).
pub fn guest_output(data: &[u8]) {
    let mut parts = chunks(data);
    let lines = parts.next().unwrap_or_default();
    let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plugin::script(parts.map(<[u8]>::to_vec));
    let mut state = GraphState::default();
    drop(run_fixed(&mut state, 1000, false, vec![block_of(lines)]));
    drop(run_fixed(&mut state, 2000, true, vec![block_of(lines)]));
    plugin::script([]);
}

/// Where the echo module's input buffer starts.
const ECHO_INPUT: u32 = 1024;

/// An ABI 1 module with one function, `echo`, whose input's first byte says what it returns:
/// (mode 0) the rest of its input, (1) the same as an error message, (2) the packed pointer
/// and length in the next 8 bytes, wherever they point, (3) nothing: it traps. Its description
/// is in a data segment at address 0.
fn echo_wat(description: &[u8]) -> String {
    let data: String = description.iter().map(|b| format!("\\{b:02x}")).collect();
    let described = sluice_sdk::abi::pack(0, description.len() as u32);
    let rest = u64::from(ECHO_INPUT + 1) << 32;
    format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{data}")
  (func (export "sluice_abi_version") (result i32) (i32.const {ABI_VERSION}))
  (func (export "sluice_input") (param $len i32) (result i32)
    (local $pages i32)
    (local.set $pages (i32.shr_u (i32.add (local.get $len) (i32.const {grow})) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $pages) (memory.size))))))
    (i32.const {ECHO_INPUT}))
  (func (export "sluice_describe_echo") (result i64) (i64.const {described}))
  (func (export "sluice_call_echo") (param $len i32) (result i64)
    (local $mode i32)
    (if (i32.eqz (local.get $len)) (then (return (i64.const {rest}))))
    (local.set $mode (i32.and (i32.load8_u (i32.const {ECHO_INPUT})) (i32.const 3)))
    (if (i32.eq (local.get $mode) (i32.const 3)) (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const 2))
      (then (return (i64.load (i32.const {rest_ptr})))))
    (i64.or
      (i64.const {rest})
      (i64.extend_i32_u
        (i32.or (i32.sub (local.get $len) (i32.const 1)) (i32.shl (local.get $mode) (i32.const 31)))))))
"#,
        grow = ECHO_INPUT + 0xffff,
        rest_ptr = ECHO_INPUT + 1,
    )
}

/// The runtime of the targets that load Wasm (small limits: a fuzz run has many calls).
fn runtime() -> &'static PluginRuntime {
    static RUNTIME: OnceLock<PluginRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let limits = Limits { timeout: std::time::Duration::from_secs(2), memory: 64 << 20 };
        PluginRuntime::new(limits, None).expect("a plugin runtime")
    })
}

/// One call of the echo module (see [`echo_wat`]) with `data` as its input: what the host makes
/// of the buffer the guest points it at.
pub fn guest_call(data: &[u8]) {
    let mut output = Vec::new();
    let result = instance::call(echo(), "echo", data, &mut output);
    // What a guest returns is copied as it is, flagged as an error as it says; an input that
    // fits the guest's memory always fits (the module grows it).
    let rest = data.get(1..).unwrap_or_default();
    match (data.first().map(|mode| mode & 3), result) {
        (None, result) => assert!(matches!(result, Ok(())), "an empty call: {result:?}"),
        (Some(0), result) if data.len() < 1 << 20 => {
            assert!(matches!(result, Ok(())), "an echo: {result:?}");
            assert_eq!(output, rest, "the echo is what the guest wrote");
        }
        (Some(1), Err(CallError::Guest { message })) => assert_eq!(message, String::from_utf8_lossy(rest)),
        (Some(1), result) if data.len() < 1 << 20 => panic!("an error message came back as {result:?}"),
        (Some(3), result) => assert!(matches!(result, Err(CallError::Trap { .. })), "a trap: {result:?}"),
        _ => {}
    }
}

/// The echo module, loaded as any plugin is.
fn echo() -> &'static PluginVersion {
    static ECHO: OnceLock<PluginVersion> = OnceLock::new();
    ECHO.get_or_init(|| {
        let info = FunctionInfo {
            name: "echo".into(),
            kind: FunctionKind::FlatMap,
            abi_version: ABI_VERSION,
            input: TypeDesc::Bytes,
            output: TypeDesc::Bytes,
        };
        let description = postcard::to_allocvec(&info).expect("a description encodes");
        let wasm = wat::parse_str(echo_wat(&description)).expect("the echo module assembles");
        runtime().load_bytes("echo", Path::new("echo.wasm"), &wasm).expect("the echo module loads")
    })
}

/// A mode byte, a description, [`SEP`], a record: mode 0 a `FunctionInfo` and mode 1 a
/// parameters' `TypeDesc`, both as an ABI 1 plugin returns them (postcard); mode 2 an ABI 2
/// node list (see [`nodes`]). What decodes is built into a pipeline (`Graph::build` checks it
/// against the stages) and the record is skipped, rendered and encoded with each of its types.
pub fn describe(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut parts = chunks(rest);
    let description = parts.next().unwrap_or_default();
    let record = parts.next().unwrap_or_default();
    match mode % 3 {
        0 => {
            let Ok(info) = instance::description::<FunctionInfo>(description) else { return };
            exercise(&info.input, record);
            exercise(&info.output, record);
            build_with(info, None);
        }
        1 => {
            let Ok(params) = instance::description::<TypeDesc>(description) else { return };
            exercise(&params, record);
            let info = plugin_info("to_upper", FunctionKind::Map, TypeDesc::String, TypeDesc::String);
            build_with(info, Some(params));
        }
        _ => {
            let Ok(ty) = abi2::unflatten(&nodes(description)) else { return };
            exercise(&ty, record);
        }
    }
}

fn plugin_info(name: &str, kind: FunctionKind, input: TypeDesc, output: TypeDesc) -> FunctionInfo {
    FunctionInfo { name: name.into(), kind, abi_version: ABI_VERSION, input, output }
}

/// What the host does with one value of `ty`, `record`: finds its end (as it finds a key),
/// renders it (as a sink does) and encodes the rendered JSON back (as `sluice test` encodes
/// input). A record that renders is one whose end is found at its end; what renders is JSON.
fn exercise(ty: &TypeDesc, record: &[u8]) {
    let _ = ty.to_string();
    let end = skip_value(ty, record);
    let mut json = String::new();
    render(ty, record, &mut json);
    let hex: String = record.iter().map(|b| format!("{b:02x}")).collect();
    if json == format!("{{\"undecodable\":\"{hex}\"}}") {
        return;
    }
    assert_eq!(end, Some(record.len()), "{ty} rendered as {json} but its end is not found at the record's end");
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(value) => {
            let _ = encode_json(ty, &value, &mut Vec::new());
        }
        Err(err) if err.to_string().contains("recursion limit") => {}
        Err(err) => panic!("{ty} rendered as {json}, which is not JSON: {err}"),
    }
}

/// A pipeline whose plugin `p` has the one function `info` (taking `params`, if given), called
/// by a stage of its kind: `Graph::build` checks the description against the stage.
fn build_with(info: FunctionInfo, params: Option<TypeDesc>) {
    let op = match info.kind {
        FunctionKind::Map => "op = \"map\"\ninput = \"lines\"",
        FunctionKind::FlatMap => "op = \"flat_map\"\ninput = \"lines\"",
        FunctionKind::Filter => "op = \"filter\"\ninput = \"lines\"",
        FunctionKind::MapPartitions => "op = \"map_partitions\"\ninput = \"lines\"",
        FunctionKind::Transform => "op = \"transform\"\ninput = \"pairs\"",
        FunctionKind::Reduce => "op = \"reduce_by_key\"\ninput = \"pairs\"",
        FunctionKind::UpdateState => "op = \"update_state_by_key\"\ninput = \"pairs\"",
        FunctionKind::KeyBy => "op = \"key_by\"\ninput = \"lines\"",
        FunctionKind::Timestamp => "op = \"event_window\"\ninput = \"pairs\"\nwindow = \"1s\"",
        FunctionKind::MapWithState => "op = \"map_with_state\"\ninput = \"pairs\"",
    };
    let call = match info.kind {
        FunctionKind::Timestamp => format!("timestamp = {:?}", info.name),
        _ => format!("function = {:?}", info.name),
    };
    let with_params = if params.is_some() { "params = { k = 3, name = \"x\", list = [1, 2] }" } else { "" };
    let text = format!(
        "[pipeline]\nname = \"d\"\n[plugins]\np = \"p.wasm\"\nq = \"q.wasm\"\n\
         [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n\
         [[stages]]\nname = \"pairs\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"q\"\nfunction = \"split_words\"\n\
         [[stages]]\nname = \"described\"\n{op}\nplugin = \"p\"\n{call}\n{with_params}\n\
         [[sinks]]\nname = \"out\"\ninput = \"described\"\ntype = \"print\"\n"
    );
    let Ok(file) = PipelineFile::parse(Path::new(PIPELINE_PATH), &text) else { return };
    let name = info.name.clone();
    let params: BTreeMap<String, TypeDesc> = params.map(|p| (name, p)).into_iter().collect();
    let implementation = Implementation::Native(Default::default());
    let described = PluginVersion::new(
        "p",
        Path::new("p.wasm"),
        "fuzz".into(),
        vec![info],
        params,
        Default::default(),
        implementation,
    );
    if let Err(errors) = Pipeline::from_versions(file, vec![described, plugin::version("q")]) {
        let _ = errors.to_string();
    }
}

/// An ABI 2 type's node list from bytes: a tag byte per node (its case, modulo 15), then its
/// fields: a child index a byte, a list a count byte and its items, a name a length byte and
/// its bytes.
fn nodes(bytes: &[u8]) -> Vec<TypeNode> {
    let mut input = bytes.iter().copied();
    let mut byte = move || input.next();
    let mut nodes = Vec::new();
    while let Some(tag) = byte() {
        let mut next = || byte().unwrap_or(0);
        let node = match tag % 15 {
            0 => TypeNode::Unit,
            1 => TypeNode::Boolean,
            2 => TypeNode::Unsigned(next()),
            3 => TypeNode::Signed(next()),
            4 => TypeNode::Float32,
            5 => TypeNode::Float64,
            6 => TypeNode::Char,
            7 => TypeNode::Text,
            8 => TypeNode::Bytes,
            9 => TypeNode::Option(u32::from(next())),
            10 => TypeNode::Seq(u32::from(next())),
            11 => TypeNode::Tuple((0..next()).map(|_| u32::from(next())).collect()),
            12 => TypeNode::Structure(name(&mut next), fields(&mut next)),
            13 => TypeNode::Map(u32::from(next()), u32::from(next())),
            _ => {
                let enum_name = name(&mut next);
                let variants = (0..next())
                    .map(|_| {
                        let name = name(&mut next);
                        let shape = match next() % 4 {
                            0 => VariantShape::Unit,
                            1 => VariantShape::Newtype(u32::from(next())),
                            2 => VariantShape::Tuple((0..next()).map(|_| u32::from(next())).collect()),
                            _ => VariantShape::Fields(fields(&mut next)),
                        };
                        VariantDesc { name, shape }
                    })
                    .collect();
                TypeNode::Enumeration(enum_name, variants)
            }
        };
        nodes.push(node);
    }
    nodes
}

fn name(next: &mut impl FnMut() -> u8) -> String {
    let bytes: Vec<u8> = (0..next()).map(|_| next()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn fields(next: &mut impl FnMut() -> u8) -> Vec<Field> {
    (0..next()).map(|_| Field { name: name(next), ty: u32::from(next()) }).collect()
}

/// A checkpoint file as read on resume, and — since libFuzzer cannot forge its checksum — a
/// format byte (even: the current format, odd: format 1) and a payload framed as a file. A
/// checkpoint that decodes has its state imported into the fixed pipeline, which then runs a
/// batch on it.
pub fn checkpoint(data: &[u8]) {
    let path = Path::new("checkpoint-1000.bin");
    let mut decoded = vec![crate::checkpoint::decode(path, data)];
    if let Some((&format, payload)) = data.split_first() {
        let format = if format % 2 == 0 { crate::checkpoint::FORMAT } else { 1 };
        decoded.push(crate::checkpoint::decode(path, &crate::checkpoint::framed(format, payload)));
    }
    for checkpoint in decoded {
        let checkpoint = match checkpoint {
            Ok(checkpoint) => checkpoint,
            Err(err) => {
                let _ = err.to_string();
                continue;
            }
        };
        let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        plugin::script([]);
        match GraphState::import(&fixed().pipeline.graph, checkpoint.stages) {
            Ok(mut state) => drop(run_fixed(&mut state, 3000, false, vec![block_of(SAMPLE)])),
            Err(problems) => drop(problems),
        }
    }
}

/// A write-ahead-log block file, as read on resume; a block that decodes is replayed through
/// the fixed pipeline.
pub fn wal(data: &[u8]) {
    let Ok(block) = crate::batch_log::decode_block("0-000000000001-0000.block", data) else { return };
    let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plugin::script([]);
    drop(run_fixed(&mut GraphState::default(), 1000, true, vec![block]));
}

/// The admin server's routes, with a token and without, on a runtime of their own.
struct AdminServer {
    runtime: tokio::runtime::Runtime,
    open: axum::Router,
    guarded: axum::Router,
}

/// The token of the guarded router.
const TOKEN: &str = "fuzz-token";

fn admin_server() -> &'static AdminServer {
    static SERVER: OnceLock<AdminServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let router = |token: Option<&str>| {
            let registry = Arc::new(crate::runtime::registry::PluginRegistry::new(vec![(
                plugin::version("p"),
                vec!["split_words".to_string()],
            )]));
            let deployer =
                crate::runtime::deploy::Deployer::start(runtime().clone(), registry.clone()).expect("a deploy lane");
            let receivers = vec![Arc::new(crate::receiver::Receiver::new(0, "lines"))];
            let metrics = Arc::new(crate::metrics::Metrics::default());
            metrics.watch_receivers(&receivers);
            let pipeline = &fixed().pipeline;
            crate::admin::router(Arc::new(crate::admin::Admin {
                pipeline: "fuzz".into(),
                metrics,
                registry,
                deployer: Some(Arc::new(deployer)),
                receivers,
                token: token.map(String::from),
                tls: None,
                max_upload: crate::runtime::MAX_PLUGIN_BYTES,
                audit_file: None,
                batch_interval_ms: 1000,
                stages: crate::admin::StageRow::of(&pipeline.graph, &pipeline.file.config),
                cluster: None,
                agent: None,
            }))
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        AdminServer { runtime, open: router(None), guarded: router(Some(TOKEN)) }
    })
}

/// A method byte (its value modulo 5: GET, POST, PUT, DELETE, HEAD; bit 3: to the router with a
/// token), the URI (path and query), [`SEP`], the `Authorization` header's value, [`SEP`], the
/// body: one request to the admin router, its answer read to the end (an event stream's only
/// to its head).
pub fn admin(data: &[u8]) {
    use axum::http::{Method, Request, header};
    let mut parts = chunks(data);
    let Some((&flags, uri)) = parts.next().unwrap_or_default().split_first() else { return };
    let authorization = parts.next();
    let body = parts.next().unwrap_or_default();
    let method = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD][usize::from(flags % 5)].clone();
    let Ok(uri) = axum::http::Uri::try_from(uri) else { return };
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization.filter(|v| !v.is_empty()) {
        let Ok(value) = axum::http::HeaderValue::from_bytes(value) else { return };
        request = request.header(header::AUTHORIZATION, value);
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else { return };
    let server = admin_server();
    let mut router = if flags & 8 == 0 { server.open.clone() } else { server.guarded.clone() };
    server.runtime.block_on(async move {
        use tower_service::Service;
        let ready = std::future::poll_fn(|cx| Service::<Request<axum::body::Body>>::poll_ready(&mut router, cx)).await;
        let Ok(()) = ready;
        let Ok(response) = router.call(request).await;
        let streaming = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if !streaming {
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        }
    });
}
