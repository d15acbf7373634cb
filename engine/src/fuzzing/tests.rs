//! Replays every committed fuzz input (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`)
//! through its target, so `cargo test` catches a regression in seconds; and checks that the
//! harness reaches what it claims to.

use std::path::{Path, PathBuf};

use super::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn every_committed_fuzz_input_replays_without_a_panic() {
    let mut failed = Vec::new();
    for (target, run) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ has no seed inputs");
        for path in corpus.iter().chain(&files(&fuzz_dir().join("regressions").join(target))) {
            let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                failed.push(format!("{target}: {}", path.display()));
            }
        }
    }
    assert!(failed.is_empty(), "fuzz inputs that panic (fix the engine, keep the input):\n{}", failed.join("\n"));
}

#[test]
fn every_target_has_a_fuzz_target_file_and_a_bin_entry() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{target}.rs")))
            .unwrap_or_else(|err| panic!("fuzz/fuzz_targets/{target}.rs: {err}"));
        assert!(source.contains(&format!("sluice::fuzzing::{target}(")), "{target}.rs calls another function");
        assert!(manifest.contains(&format!("name = \"{target}\"")), "fuzz/Cargo.toml has no [[bin]] {target}");
    }
}

#[test]
fn the_fixed_pipeline_gives_every_sink_records_before_any_edit() {
    let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plugin::script([]);
    let graph = &fixed().pipeline.graph;
    let mut state = GraphState::default();
    let mut seen = vec![0; graph.streams.len()];
    // The third batch has no lines, so `visits`' keys time out and it emits.
    for (time, last, lines) in [(1000, false, SAMPLE), (2000, false, SAMPLE), (3000, true, &b""[..])] {
        let blocks = if lines.is_empty() { Vec::new() } else { vec![block_of(lines)] };
        let outcome = run_fixed(&mut state, time, last, blocks).expect("the batch runs");
        // Only the fallible functions' records fail, as the functions say (no `bad_output`).
        for handled in &outcome.handled {
            let stage = handled.error.stage.as_str();
            assert!(matches!(handled.error.error, CallError::Guest { .. }), "{handled:?}");
            assert!(["numbers", "shorts", "chars"].contains(&stage), "{handled:?}");
        }
        for (stream, partitions) in outcome.streams.iter().enumerate() {
            seen[stream] += records(partitions.as_deref().unwrap_or_default()).count();
        }
        assert!(
            lines.is_empty() || !outcome.dead_letters.is_empty(),
            "the blank line fails `short` and `parse_number`"
        );
    }
    for sink in &graph.sinks {
        let name = &graph.streams[sink.input].name;
        assert!(seen[sink.input] > 0 || name == "sessions.late", "stream `{name}` had no records");
    }
}

#[test]
fn an_edited_output_reaches_the_host_as_bad_output_and_the_stage_policy() {
    let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The first call (the map side of `counts`, with `pairs` fused into it) returns a
    // truncated frame; the second (`top`) a guest error.
    plugin::script([vec![0, 9, 0, 0, 0, 1], vec![4, b'n', b'o']]);
    let outcome = run_fixed(&mut GraphState::default(), 1000, false, vec![block_of(SAMPLE)]).expect("skipped");
    plugin::script([]);
    let errors: Vec<String> = outcome.handled.iter().map(|h| h.error.to_string()).collect();
    assert!(errors[0].contains("bad_output") && errors[0].contains("truncated frame"), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("guest_error: no")), "{errors:?}");
}

#[test]
fn a_real_checkpoint_of_the_fixed_pipeline_imports_and_runs() {
    let payload = {
        let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        plugin::script([]);
        let mut state = GraphState::default();
        run_fixed(&mut state, 1000, false, vec![block_of(SAMPLE)]).expect("the batch runs");
        let stages = state.export(&fixed().pipeline.graph);
        assert!(stages.len() >= 4, "state of the windows, stores and the event window: {stages:?}");
        let checkpoint = crate::checkpoint::Checkpoint {
            pipeline: "fuzz".into(),
            batch_interval_ms: 1000,
            batch_time: 1000,
            written_at_ms: 0,
            engine_version: "fuzz".into(),
            plugins: Vec::new(),
            sources: Vec::new(),
            stages,
        };
        let file = crate::checkpoint::encode(&checkpoint);
        let decoded = crate::checkpoint::decode(Path::new("c"), &file).expect("decodes");
        assert!(GraphState::import(&fixed().pipeline.graph, decoded.stages).is_ok());
        file[crate::checkpoint::HEADER..].to_vec()
    };
    // The target's second reading: a format byte, then the payload.
    let mut input = vec![0];
    input.extend_from_slice(&payload);
    checkpoint(&input);
}

#[test]
fn the_echo_module_returns_what_each_mode_says_and_nothing_outside_its_memory() {
    let call = |input: &[u8]| {
        let mut output = Vec::new();
        instance::call(echo(), "echo", input, &mut output).map(|()| output)
    };
    assert_eq!(call(b"\x00hello").unwrap(), b"hello");
    assert!(matches!(call(b"\x01no"), Err(CallError::Guest { message }) if message == "no"));
    assert!(matches!(call(b"\x03"), Err(CallError::Trap { .. })));
    let mut far = vec![2];
    far.extend_from_slice(&sluice_sdk::abi::pack(u32::MAX - 2, 16).to_le_bytes());
    let err = call(&far).unwrap_err().to_string();
    assert!(err.contains("bad_output") && err.contains("outside the guest's memory"), "{err}");
    for input in [&b"\x00hello"[..], b"\x01no", b"\x03", &far] {
        guest_call(input);
    }
}

#[test]
fn chunks_split_at_every_separator() {
    let data = [&b"a"[..], SEP, b"", SEP, b"bc"].concat();
    assert_eq!(chunks(&data).collect::<Vec<_>>(), [&b"a"[..], b"", b"bc"]);
    assert_eq!(chunks(b"").collect::<Vec<_>>(), [&b""[..]]);
}

/// The bytes [`nodes`] reads back as `list` (indices and counts below 256).
fn node_bytes(list: &[TypeNode]) -> Vec<u8> {
    fn name(out: &mut Vec<u8>, name: &str) {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    fn fields(out: &mut Vec<u8>, fields: &[Field]) {
        out.push(fields.len() as u8);
        for field in fields {
            name(out, &field.name);
            out.push(field.ty as u8);
        }
    }
    let mut out = Vec::new();
    for node in list {
        match node {
            TypeNode::Unit => out.push(0),
            TypeNode::Boolean => out.push(1),
            TypeNode::Unsigned(bits) => out.extend([2, *bits]),
            TypeNode::Signed(bits) => out.extend([3, *bits]),
            TypeNode::Float32 => out.push(4),
            TypeNode::Float64 => out.push(5),
            TypeNode::Char => out.push(6),
            TypeNode::Text => out.push(7),
            TypeNode::Bytes => out.push(8),
            TypeNode::Option(of) => out.extend([9, *of as u8]),
            TypeNode::Seq(of) => out.extend([10, *of as u8]),
            TypeNode::Tuple(items) => {
                out.extend([11, items.len() as u8]);
                out.extend(items.iter().map(|i| *i as u8));
            }
            TypeNode::Structure(n, list) => {
                out.push(12);
                name(&mut out, n);
                fields(&mut out, list);
            }
            TypeNode::Map(k, v) => out.extend([13, *k as u8, *v as u8]),
            TypeNode::Enumeration(n, variants) => {
                out.push(14);
                name(&mut out, n);
                out.push(variants.len() as u8);
                for variant in variants {
                    name(&mut out, &variant.name);
                    match &variant.shape {
                        VariantShape::Unit => out.push(0),
                        VariantShape::Newtype(of) => out.extend([1, *of as u8]),
                        VariantShape::Tuple(items) => {
                            out.extend([2, items.len() as u8]);
                            out.extend(items.iter().map(|i| *i as u8));
                        }
                        VariantShape::Fields(list) => {
                            out.push(3);
                            fields(&mut out, list);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The seed corpus: small real inputs of each target, `(target, name, bytes)`.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&examples).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs {
        if let Ok(text) = std::fs::read(dir.join("pipeline.toml")) {
            seeds.push(("pipeline", format!("example-{}", dir.file_name().unwrap().to_string_lossy()), text));
        }
    }
    seeds.push(("pipeline", "fixed".into(), FIXED.as_bytes().to_vec()));

    let edits: [&[u8]; 6] =
        [b"\x00", b"\x01\x03\x00", b"\x02\x00\x00\xff\xff", b"\x03\x01\x00\x00\x00", b"\x04no", b"\x05"];
    seeds.push(("guest_output", "lines".into(), SAMPLE.to_vec()));
    for (i, edit) in edits.iter().enumerate() {
        let mut input = SAMPLE.to_vec();
        for _ in 0..=i {
            input.extend_from_slice(SEP);
            input.extend_from_slice(b"\x05");
        }
        input.extend_from_slice(SEP);
        input.extend_from_slice(edit);
        seeds.push(("guest_output", format!("edit-{i}"), input));
    }

    let mut packed = vec![2];
    packed.extend_from_slice(&sluice_sdk::abi::pack(ECHO_INPUT + 9, 4).to_le_bytes());
    packed.extend_from_slice(b"abcd");
    for (name, input) in [("echo", &b"\x00hello"[..]), ("error", b"\x01no"), ("packed", &packed), ("trap", b"\x03")] {
        seeds.push(("guest_call", name.into(), input.to_vec()));
    }

    let record = postcard::to_allocvec(&("to", 2u64)).unwrap();
    for function in plugin::FUNCTIONS {
        let info = (function.describe)();
        let mut input = vec![0];
        input.extend(postcard::to_allocvec(&info).unwrap());
        input.extend_from_slice(SEP);
        input.extend_from_slice(&record);
        seeds.push(("describe", format!("info-{}", info.name), input));
        if let Some(params) = function.params {
            let mut input = vec![1];
            input.extend(postcard::to_allocvec(&params()).unwrap());
            seeds.push(("describe", format!("params-{}", info.name), input));
        }
        let mut input = vec![2];
        input.extend(node_bytes(&abi2::flatten(&info.output)));
        input.extend_from_slice(SEP);
        input.extend_from_slice(&record);
        seeds.push(("describe", format!("nodes-{}", info.name), input));
    }
    let letter = abi2::flatten(&DeadLetter::type_desc());
    seeds.push(("describe", "nodes-dead-letter".into(), [&[2][..], &node_bytes(&letter)].concat()));

    let _running = RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    plugin::script([]);
    let mut state = GraphState::default();
    run_fixed(&mut state, 1000, false, vec![block_of(SAMPLE)]).expect("the batch runs");
    let checkpoint = crate::checkpoint::Checkpoint {
        pipeline: "fuzz".into(),
        batch_interval_ms: 1000,
        batch_time: 1000,
        written_at_ms: 0,
        engine_version: "fuzz".into(),
        plugins: vec![("p".into(), "ab".repeat(32))],
        sources: vec![crate::sources::SourcePosition {
            name: "lines".into(),
            position: crate::sources::Position::Nothing,
        }],
        stages: state.export(&fixed().pipeline.graph),
    };
    let file = crate::checkpoint::encode(&checkpoint);
    seeds.push(("checkpoint", "file".into(), file.clone()));
    seeds.push(("checkpoint", "payload".into(), [&[0][..], &file[crate::checkpoint::HEADER..]].concat()));
    drop(_running);

    let dir = tempfile::tempdir().unwrap();
    let log = crate::batch_log::BatchLog::new(dir.path().to_path_buf());
    log.write_block(1000, 0, &block_of(SAMPLE)).unwrap();
    let written = files(&dir.path().join("batches/1000"));
    seeds.push(("wal", "block".into(), std::fs::read(&written[0]).unwrap()));

    let request = |flags: u8, uri: &str, authorization: &str, body: &[u8]| {
        [&[flags][..], uri.as_bytes(), SEP, authorization.as_bytes(), SEP, body].concat()
    };
    let bearer = format!("Bearer {TOKEN}");
    for (name, input) in [
        ("metrics", request(0, "/metrics", "", b"")),
        ("status", request(8, "/api/status", &bearer, b"")),
        ("deploy", request(1, "/api/plugins/p/deploy", "", b"\0asm\x01\0\0\0")),
        ("deploy-shadow", request(1, "/api/plugins/p/deploy?shadow=true&promote_after=2&max_diff=0.5", "", b"x")),
        ("rollback", request(9, "/api/plugins/p/rollback?to=ab12", &bearer, b"")),
        ("promote", request(1, "/api/plugins/p/promote", "", b"")),
        ("pause", request(1, "/api/sources/lines/pause", "", b"")),
        ("dashboard", request(8, "/api/dashboard?token=fuzz-token&history=false", "", b"")),
        ("page", request(0, "/?token=x", "", b"")),
        ("asset", request(0, "/assets/dashboard.js", "", b"")),
        ("events", request(0, "/api/events", "", b"")),
        ("ready", request(0, "/readyz", "", b"")),
    ] {
        seeds.push(("admin", name.into(), input));
    }
    seeds
}

#[test]
fn the_seeds_reach_past_decoding() {
    let seeds = seeds();
    for (target, _) in TARGETS {
        assert!(seeds.iter().any(|(t, ..)| t == target), "no seed for {target}");
    }
    for (target, name, bytes) in &seeds {
        match *target {
            "pipeline" => {
                let text = std::str::from_utf8(bytes).unwrap();
                let file = PipelineFile::parse(Path::new(PIPELINE_PATH), text).unwrap();
                let versions = file.config.plugins.keys().map(|name| plugin::version(name)).collect();
                // What needs the environment (a database URL) is all that may be missing.
                if let Err(errors) = Pipeline::from_versions(file, versions) {
                    let text = errors.to_string();
                    let environment = text.lines().all(|line| line.contains("environment variable"));
                    assert!(environment, "{name} does not build against the fuzz plugin: {text}");
                }
            }
            "describe" if bytes[0] != 2 => {
                let description = chunks(&bytes[1..]).next().unwrap();
                let decoded = match bytes[0] {
                    0 => instance::description::<FunctionInfo>(description).map(drop),
                    _ => instance::description::<TypeDesc>(description).map(drop),
                };
                assert!(decoded.is_ok(), "{name}: {decoded:?}");
            }
            "describe" => assert!(abi2::unflatten(&nodes(chunks(&bytes[1..]).next().unwrap())).is_ok(), "{name}"),
            "checkpoint" if name == "file" => {
                let decoded = crate::checkpoint::decode(Path::new("c"), bytes).unwrap();
                assert!(GraphState::import(&fixed().pipeline.graph, decoded.stages).is_ok());
            }
            "wal" => assert_eq!(crate::batch_log::decode_block("0-000000000001-0000.block", bytes).unwrap().records, 5),
            _ => {}
        }
        (TARGETS.iter().find(|(t, _)| t == target).unwrap().1)(bytes);
    }
    // `SLUICE_FUZZ_SEEDS=<dir>` writes them as `<dir>/<target>/seed-<name>` (the corpus's start).
    if let Some(dir) = std::env::var_os("SLUICE_FUZZ_SEEDS") {
        for (target, name, bytes) in &seeds {
            let dir = Path::new(&dir).join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
