//! Every kind of bad pipeline file gets one clear message naming the file and the field, and a
//! non-zero exit, from `sluice check` and from `sluice run`; never a panic or a backtrace.

use std::time::Duration;

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

#[test]
fn a_socket_address_that_cannot_be_connected_to_is_refused_with_what_was_expected() {
    let stderr = check_fails(&good().replace("127.0.0.1:9\"", "not an address\""));
    assert!(
        stderr.contains(
            "pipeline.toml: sources `lines`.address: expected \"host:port\" (an IP address or hostname, then a port from 1 to 65535"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("found \"not an address\": no `:port`"), "{stderr}");
    let stderr = check_fails(&good().replace("127.0.0.1:9\"", "127.0.0.1:99999\""));
    assert!(stderr.contains("sources `lines`.address: expected \"host:port\""), "{stderr}");
    assert!(stderr.contains("found \"127.0.0.1:99999\": port 99999 is out of range"), "{stderr}");
    let stderr = check_fails(&good().replace("127.0.0.1:9\"", "::1:9\""));
    assert!(stderr.contains("an IPv6 address goes in brackets: \"[::1]:9\""), "{stderr}");

    // Hostnames are fine as they are: check does not ask DNS.
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    for address in ["localhost:9999", "kafka.internal:9092", "[::1]:9"] {
        work.write("pipeline.toml", &good().replace("127.0.0.1:9\"", &format!("{address}\"")));
        let out = work.sluice(&["check", "pipeline.toml"]);
        assert!(out.status.success(), "{address}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // And run refuses a bad one up front instead of retrying forever.
    work.write("pipeline.toml", &good().replace("127.0.0.1:9\"", "127.0.0.1:99999\""));
    let out = work.sluice(&["run", "pipeline.toml", "--no-ui"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sources `lines`.address: expected \"host:port\""), "{stderr}");
}

#[test]
fn a_sink_or_checkpoint_directory_that_cannot_be_written_is_named() {
    let stderr = check_fails(&good().replace("path = \"out\"", "path = \"/proc/forbidden\""));
    assert!(
        stderr.contains("pipeline.toml: sinks `files`.path: cannot create the directory /proc/forbidden: "),
        "{stderr}"
    );
    assert!(stderr.contains("expected a directory sink `files` can create and write its batch files in"), "{stderr}");

    let checkpointed = good().replace(
        "name = \"wordcount-test\"\n",
        "name = \"wordcount-test\"\ncheckpoint_dir = \"/proc/forbidden/ckpt\"\n",
    );
    let stderr = check_fails(&checkpointed);
    assert!(
        stderr.contains("pipeline.toml: pipeline.checkpoint_dir: cannot create the directory /proc/forbidden/ckpt: /proc/forbidden: "),
        "{stderr}"
    );
    assert!(stderr.contains("expected a directory the checkpoints can be written to"), "{stderr}");

    // A file where the directory should be.
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("out", "in the way");
    work.write("pipeline.toml", &good());
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pipeline.toml: sinks `files`.path: out is not a directory; expected a directory sink `files`"),
        "{stderr}"
    );

    // A directory that can be made passes, and the check leaves nothing behind.
    std::fs::remove_file(work.path("out")).unwrap();
    work.write(
        "pipeline.toml",
        &good()
            .replace("path = \"out\"", "path = \"out/deeper\"")
            .replace("name = \"wordcount-test\"\n", "name = \"wordcount-test\"\ncheckpoint_dir = \"ckpt\"\n"),
    );
    let out = work.sluice(&["check", "pipeline.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!work.path("out").exists() && !work.path("ckpt").exists(), "check creates nothing");
}

#[test]
fn durations_out_of_bounds_are_refused_with_the_bounds() {
    let stderr = check_fails(&good().replace("batch_interval = \"1s\"", "batch_interval = \"100000h\""));
    assert!(stderr.contains("pipeline.toml: pipeline.batch_interval: must be at most 24h, found 11years"), "{stderr}");
    let stderr = check_fails(&good().replace("block_interval = \"200ms\"", "block_interval = \"25h\""));
    assert!(stderr.contains("pipeline.block_interval: must be at most 24h, found 1day 1h"), "{stderr}");

    let stages =
        good().replace("function = \"split_words\"\n", "function = \"split_words\"\ntimeout = \"48h\"\n").replace(
            "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
            "op = \"event_window\"\ngap = \"1000days\"\nallowed_lateness = \"400days\"",
        );
    let stderr = check_fails(&stages);
    assert!(stderr.contains("stages `words`.timeout: must be at most 24h, found 2days"), "{stderr}");
    assert!(stderr.contains("stages `counts`.gap: must be at most 365d, found 2years"), "{stderr}");
    assert!(stderr.contains("stages `counts`.allowed_lateness: must be at most 365d, found 1year"), "{stderr}");

    let windowed = good().replace(
        "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"",
        "op = \"reduce_by_key_and_window\"\nplugin = \"wordcount\"\nfunction = \"sum\"\nwindow = \"400days\"",
    );
    let stderr = check_fails(&windowed);
    assert!(stderr.contains("stages `counts`.window: must be at most 365d, found 1year"), "{stderr}");

    // The bounds themselves pass.
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &good().replace("batch_interval = \"1s\"", "batch_interval = \"24h\""));
    let out = work.sluice(&["check", "pipeline.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // So does the flag's.
    let out = work.sluice(&["check", "pipeline.toml", "--call-timeout", "100000h"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--call-timeout") && stderr.contains("must be at most 24h"), "{stderr}");
}

/// A 2 MB pipeline file whose third line is one long array with a bad value in its middle.
fn two_megabytes_malformed() -> String {
    let half = "1, ".repeat(350_000);
    format!("[pipeline]\nname = \"big\"\nbatch_interval = [{half}?, {half}]\n")
}

#[test]
fn a_long_toml_error_is_cut_around_its_column() {
    let stderr = check_fails(&two_megabytes_malformed());
    assert!(stderr.len() < 2_000, "{} bytes:\n{stderr}", stderr.len());
    assert!(stderr.starts_with("pipeline.toml: TOML parse error at line 3, column 1050019\n"), "{stderr}");
    let excerpt = stderr.lines().find(|l| l.starts_with("3 | ")).expect("the line is shown");
    assert!(
        excerpt.starts_with("3 | …") && excerpt.ends_with("1…") && excerpt.contains(" 1, 1, ?, 1, 1, "),
        "{stderr}"
    );
    assert!(stderr.contains("has 1 problem"), "{stderr}");
}

#[test]
fn check_treats_a_closed_output_as_the_end_of_it() {
    let work = Workdir::new();
    work.write("pipeline.toml", &two_megabytes_malformed());
    // `sluice check big.toml 2>&1 | head -c 100`: the reader is gone before the error is written.
    let (code, _, _) = work.sluice_into_closed_pipes(&["check", "pipeline.toml"], 0, 0, Duration::from_secs(30));
    assert_eq!(code, Some(1), "the exit status of a bad file, not a panic's 101");
    let (code, _, stderr) = work.sluice_into_closed_pipes(&["check", "pipeline.toml"], 0, 100, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("pipeline.toml: TOML parse error at line 3"), "{stderr}");
    // A good pipeline's listing into a closed pipe: still success.
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &good());
    let (code, _, stderr) =
        work.sluice_into_closed_pipes(&["check", "pipeline.toml"], 0, 10_000, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn status_treats_a_closed_output_as_the_end_of_it() {
    let work = Workdir::new();
    // Nothing serving there: the error goes to a closed stderr; the status stays 1.
    let nowhere = format!("127.0.0.1:{}", crate::admin::free_port());
    let (code, _, _) = work.sluice_into_closed_pipes(&["status", "--ui", &nowhere], 0, 0, Duration::from_secs(30));
    assert_eq!(code, Some(1));

    work.add_plugin("wordcount", "wordcount");
    let server = LineServer::start(Feed::HoldOpen(join_lines(&corpus(100, 5, 3))));
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "200ms", "100ms"));
    let ui = format!("127.0.0.1:{}", crate::admin::free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", Duration::from_secs(30));
    let (code, _, stderr) = work.sluice_into_closed_pipes(&["status", "--ui", &ui], 0, 10_000, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, stdout, _) = work.sluice_into_closed_pipes(&["status", "--ui", &ui], 100, 0, Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("{\n  \""), "{stdout}");
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();
}

#[test]
fn run_treats_a_closed_output_as_the_end_of_it_and_finishes_every_batch() {
    let lines = corpus(3_000, 8, 17);
    let expected = count_words(&lines);

    // `--quiet`, both streams closed from the start: the log goes nowhere, the run goes on.
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let server = LineServer::lines(&lines);
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "200ms", "100ms"));
    let (code, _, _) =
        work.sluice_into_closed_pipes(&["run", "pipeline.toml", "--no-ui", "--quiet"], 0, 0, Duration::from_secs(60));
    assert_eq!(code, Some(0));
    assert_eq!(work.ledger("out"), expected);
    server.join();

    // Per-batch output: a print sink on stdout, the batch lines on stderr. Each stream in turn
    // goes into `| head -c 100` while later batches keep printing into it.
    let paced = || {
        let feed = lines.chunks(300).map(join_lines).collect();
        LineServer::start(Feed::Paced(feed, Duration::from_millis(150)))
    };
    let printing = |server: &LineServer| {
        wordcount_pipeline(&server.address, "wordcount.wasm", "200ms", "100ms")
            + "\n[[sinks]]\nname = \"shown\"\ninput = \"words\"\ntype = \"print\"\n"
    };
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let server = paced();
    work.write("pipeline.toml", &printing(&server));
    let (code, stdout, stderr) =
        work.sluice_into_closed_pipes(&["run", "pipeline.toml", "--no-ui"], 100, 1 << 20, Duration::from_secs(60));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stdout.starts_with("-----"), "{stdout}");
    // The end of the output, not a failing sink retried at every batch.
    assert!(stderr.contains("standard output is closed: nothing more is printed"), "{stderr}");
    assert!(!stderr.contains("write failed") && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.matches("records out").count() >= 3, "batches went on:\n{stderr}");
    assert_eq!(work.ledger("out"), expected, "every batch ran and was written");
    server.join();

    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let server = paced();
    work.write("pipeline.toml", &printing(&server));
    let (code, stdout, stderr) =
        work.sluice_into_closed_pipes(&["run", "pipeline.toml", "--no-ui"], 1 << 20, 100, Duration::from_secs(60));
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stdout.matches("Time: ").count() >= 3, "the print sink went on:\n{stdout}");
    assert_eq!(work.ledger("out"), expected, "every batch ran and was written");
    server.join();
}
