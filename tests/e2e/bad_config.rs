//! Every kind of bad pipeline file gets one clear message naming the file and the field, and a
//! non-zero exit, from `sluice check` and from `sluice run`; never a panic or a backtrace.

use crate::support::*;

/// Writes `pipeline.toml` (with `{wordcount}` replaced by the built plugin's path) and runs
/// `sluice check` on it; returns stderr after asserting the exit code is 1.
fn check_fails(pipeline: &str) -> String {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("not-wasm.wasm", "just some text\n");
    work.write("pipeline.toml", pipeline);
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "stderr:\n{stderr}");
    assert!(stderr.starts_with("pipeline.toml: "), "messages name the file:\n{stderr}");
    stderr
}

fn good() -> String {
    wordcount_pipeline("127.0.0.1:9", "wordcount.wasm", "1s", "200ms")
}

#[test]
fn malformed_toml_names_the_line() {
    let stderr = check_fails("[pipeline\nname = \"x\"\n");
    assert!(stderr.contains("TOML parse error at line 1"), "{stderr}");
}

#[test]
fn an_unknown_field_is_named_with_the_expected_ones() {
    let stderr = check_fails(&good().replace("batch_interval", "batch_intervall"));
    assert!(stderr.contains("unknown field `batch_intervall`"), "{stderr}");
    assert!(stderr.contains("batch_interval"), "{stderr}");
}

#[test]
fn a_missing_plugin_file_is_named() {
    let stderr = check_fails(&good().replace("wordcount.wasm", "nowhere/wc.wasm"));
    assert!(stderr.contains("plugins.wordcount: plugin file"), "{stderr}");
    assert!(stderr.contains("nowhere/wc.wasm not found"), "{stderr}");
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let stderr = check_fails(&good().replace("\"wordcount.wasm\"", "\"not-wasm.wasm\""));
    assert!(stderr.contains("plugins.wordcount: "), "{stderr}");
    assert!(stderr.contains("is not a WebAssembly module"), "{stderr}");
}

#[test]
fn a_function_that_does_not_exist_lists_what_the_plugin_exports() {
    let stderr = check_fails(&good().replace("\"split_words\"", "\"split_wordz\""));
    assert!(stderr.contains("stages `words`.function: plugin `wordcount`"), "{stderr}");
    assert!(stderr.contains("has no function `split_wordz`"), "{stderr}");
    assert!(stderr.contains("split_words (flat_map), subtract (reduce), sum (reduce)"), "{stderr}");
}

#[test]
fn a_function_of_the_wrong_kind_is_refused() {
    let stderr = check_fails(&good().replace("\"split_words\"", "\"sum\""));
    assert!(
        stderr.contains(
            "stages `words`.function: op `flat_map` needs a flat_map function, but `sum` is a reduce function"
        ),
        "{stderr}"
    );
}

#[test]
fn a_type_mismatch_between_stages_is_refused() {
    // reduce_by_key straight on lines: lines are not keyed.
    let stderr = check_fails(&good().replace("input = \"words\"", "input = \"lines\""));
    assert!(stderr.contains("reduce_by_key needs keyed records (K, V), but `lines` carries String"), "{stderr}");
}

#[test]
fn unknown_inputs_bad_durations_and_intervals_are_all_reported_at_once() {
    let pipeline = good()
        .replace("input = \"words\"", "input = \"wordz\"")
        .replace("block_interval = \"200ms\"", "block_interval = \"300ms\"")
        .replace("op = \"flat_map\"", "op = \"flatmap\"");
    // An unknown op is a parse error, reported alone (the file cannot be read further).
    let stderr = check_fails(&pipeline);
    assert!(stderr.contains("unknown variant `flatmap`, expected one of"), "{stderr}");

    let pipeline = good()
        .replace("input = \"words\"", "input = \"wordz\"")
        .replace("block_interval = \"200ms\"", "block_interval = \"300ms\"")
        .replace("\"split_words\"", "\"split_wordz\"");
    let stderr = check_fails(&pipeline);
    assert!(
        stderr.contains("stages `counts`.input: input `wordz` is not a source or stage (known: lines, words, counts)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipeline.block_interval: must divide batch_interval (1s) evenly, found 300ms"),
        "{stderr}"
    );
    assert!(stderr.contains("has no function `split_wordz`"), "{stderr}");
    assert!(stderr.contains("has 3 problems"), "{stderr}");

    let stderr = check_fails(&good().replace("\"1s\"", "\"1 parsec\""));
    assert!(stderr.contains("invalid duration \"1 parsec\""), "{stderr}");
}

#[test]
fn a_cycle_between_stages_is_refused() {
    let pipeline = good().replace("input = \"lines\"", "input = \"counts\"");
    let stderr = check_fails(&pipeline);
    assert!(stderr.contains("must not form a cycle"), "{stderr}");
}

#[test]
fn run_refuses_a_bad_pipeline_the_same_way() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &good().replace("\"split_words\"", "\"split_wordz\""));
    let out = work.sluice(&["run", "pipeline.toml"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no function `split_wordz`"), "{stderr}");
}

#[test]
fn a_good_pipeline_checks_and_shows_its_types() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &good());
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stage counts: (String, u64)"), "{stdout}");
}

#[test]
fn window_join_and_union_mistakes_are_named() {
    let windowed = good().replace(
        "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
        "op = \"reduce_by_key_and_window\"\nplugin = \"wordcount\"\nfunction = \"sum\"\ninverse = \"split_words\"\nwindow = \"2500ms\"\nslide = \"3s\"",
    );
    let stderr = check_fails(&windowed);
    assert!(
        stderr.contains("stages `counts`.window: must be a multiple of batch_interval (1s), found 2s 500ms"),
        "{stderr}"
    );
    assert!(stderr.contains("stages `counts`.slide: must not be longer than the window"), "{stderr}");

    let inverse_kind = good().replace(
        "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
        "op = \"reduce_by_key_and_window\"\nplugin = \"wordcount\"\nfunction = \"sum\"\ninverse = \"split_words\"\nwindow = \"4s\"",
    );
    let stderr = check_fails(&inverse_kind);
    assert!(stderr.contains("stages `counts`.inverse: op `reduce_by_key_and_window` needs a reduce function, but `split_words` is a flat_map function"), "{stderr}");

    let join = good().replace(
        "input = \"words\"\nop = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
        "inputs = [\"words\"]\nop = \"join\"",
    );
    let stderr = check_fails(&join);
    assert!(
        stderr.contains("stages `counts`.inputs: op `join` reads exactly two streams, left then right, found 1"),
        "{stderr}"
    );

    let union = good().replace(
        "input = \"words\"\nop = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
        "inputs = [\"words\", \"lines\"]\nop = \"union\"",
    );
    let stderr = check_fails(&union);
    assert!(
        stderr.contains("union needs inputs of one type, but `words` carries (String, u64) and `lines` carries String"),
        "{stderr}"
    );
}

#[test]
fn event_window_and_new_field_mistakes_are_named() {
    let base = good();
    let event = |extra: &str| {
        base.replace(
            "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
            &format!("op = \"event_window\"\n{extra}"),
        )
    };
    let stderr = check_fails(&event("timestamp = \"split_words\"\nwindow = \"10s\""));
    assert!(stderr.contains("stages `counts`.plugin: a timestamp or reduce function needs `plugin"), "{stderr}");
    let stderr = check_fails(&event("window = \"10s\"\ngap = \"5s\""));
    assert!(stderr.contains("give `window` (tumbling/sliding) or `gap` (sessions), not both"), "{stderr}");
    let stderr = check_fails(&event("window = \"500us\""));
    assert!(stderr.contains("stages `counts`.window: event time is in ms: must be at least 1ms"), "{stderr}");

    let stderr = check_fails(&base.replace(
        "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
        "op = \"repartition\"\npartitions = 100000000000",
    ));
    assert!(stderr.contains("stages `counts`.partitions: must be at most 4096, found 100000000000"), "{stderr}");

    let two_sinks = format!("{base}[[sinks]]\nname = \"again\"\ninput = \"words\"\ntype = \"file\"\npath = \"out\"\n");
    let stderr = check_fails(&two_sinks);
    assert!(stderr.contains("sinks `again`.path: sink `files` writes to the same directory"), "{stderr}");
}

#[test]
fn late_records_feed_stages_as_well_as_sinks() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let pipeline = good()
        .replace(
            "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
            "op = \"event_window\"\nwindow = \"10s\"",
        )
        .replace("input = \"counts\"\ntype = \"file\"", "input = \"late_count\"\ntype = \"file\"")
        + "[[stages]]\nname = \"late_count\"\ninput = \"counts.late\"\nop = \"count\"\n";
    work.write("pipeline.toml", &pipeline);
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 sink"), "the sink on the late stream's stage is kept: {stdout}");
    assert!(stdout.contains("stage late_count: u64"), "{stdout}");
}
