//! The plugin author's kit as an author uses it, outside the repository: `sluice plugin new`,
//! `cargo test`, `sluice plugin build`, `sluice test` with golden files.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        // The crate's own target/ is where its pipeline finds the plugin.
        .env_remove("CARGO_TARGET_DIR")
        .env("SLUICE_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `plugin build`'s output lists the template's five functions with their kinds and types.
fn lists_the_template_functions(built: &str) {
    let listed: Vec<String> = built.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    for function in [
        "normalize map String -> String",
        "split_words flat_map String -> (String, u64)",
        "long_enough filter (String, u64) -> (String, u64)",
        "sum reduce u64 -> u64",
        "running_total update_state u64 -> Total",
    ] {
        assert!(listed.iter().any(|l| l == function), "`{function}` in:\n{built}");
    }
}

#[test]
fn a_plugin_made_by_plugin_new_builds_tests_and_passes_its_golden_files_outside_the_repo() {
    let home = tempfile::tempdir().unwrap();
    assert!(!home.path().starts_with(repo()), "the crate must live outside the repository");
    let new = run(home.path(), SLUICE, &["plugin", "new", "word-stats"]);
    assert!(new.status.success(), "{}", text(&new));
    let dir = home.path().join("word-stats");

    let tests = run(&dir, "cargo", &["test", "--quiet"]);
    assert!(tests.status.success(), "cargo test of the new crate:\n{}", text(&tests));
    assert!(text(&tests).contains("5 passed"), "{}", text(&tests));

    let build = run(&dir, SLUICE, &["plugin", "build"]);
    let built = text(&build);
    assert!(build.status.success(), "{built}");
    assert!(built.contains("target/wasm32-unknown-unknown/release/word_stats.wasm ("), "{built}");
    lists_the_template_functions(&built);

    let test = ["test", "pipeline.toml", "--input", "lines=input.txt"];
    let golden = [&test[..], &["--expect", "expected"]].concat();
    let passed = run(&dir, SLUICE, &golden);
    assert!(passed.status.success(), "the template's golden files:\n{}", text(&passed));
    assert!(text(&passed).contains("test passed: 3 batches, 2 sinks"), "{}", text(&passed));

    let shown = text(&run(&dir, SLUICE, &test));
    assert!(shown.contains("=== batch 2 (time 2000 ms): 2 records in"), "{shown}");
    assert!(shown.contains("--- counts (reduce_by_key): "), "{shown}");
    assert!(shown.contains("[\"sleep\",2]"), "{shown}");

    // A changed function changes the output: the golden files catch it, --bless accepts it.
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("pair.0.chars().count() >= 3", "pair.0.chars().count() >= 4")).unwrap();
    assert!(run(&dir, SLUICE, &["plugin", "build"]).status.success());
    let failed = run(&dir, SLUICE, &golden);
    let diff = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{diff}");
    assert!(diff.contains("FAILED: sink `batch_counts` differs"), "{diff}");
    assert!(diff.contains("batch 1:\n  - [\"not\",1]\n"), "{diff}");
    assert!(diff.contains("  - [\"the\",2]"), "{diff}");
    assert!(!diff.contains("+ "), "a stricter filter only removes records:\n{diff}");
    let blessed = run(&dir, SLUICE, &[&golden[..], &["--bless"]].concat());
    assert!(blessed.status.success(), "{}", text(&blessed));
    assert!(run(&dir, SLUICE, &golden).status.success());
    let counts = std::fs::read_to_string(dir.join("expected/batch_counts.jsonl")).unwrap();
    assert!(counts.starts_with("# batch 1\n") && !counts.contains("[\"not\",1]"), "{counts}");
}

/// The command of a guest tool as the project's setup script installed it (quick once it is
/// installed; `scripts/test.sh` installs both before the tests).
fn guest_tool(script: &str) -> String {
    let out = Command::new(repo().join("scripts").join(script)).output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `sluice plugin new --lang LANG` outside the repo: its own tests pass with `test`, it builds
/// into a component that lists the template's functions, passes the shared golden files, and a
/// changed filter in `source` (`old` -> `new`) is caught by them once rebuilt.
fn a_guest_plugin_builds_tests_and_passes_its_golden_files(
    lang: &str,
    test: &[&str],
    source: &str,
    change: (&str, &str),
) {
    let home = tempfile::tempdir().unwrap();
    let new = run(home.path(), SLUICE, &["plugin", "new", "word-stats", "--lang", lang]);
    assert!(new.status.success(), "{}", text(&new));
    let dir = home.path().join("word-stats");
    let tests = run(&dir, test[0], &test[1..]);
    assert!(tests.status.success(), "{test:?} in the new plugin:\n{}", text(&tests));

    let tools = [
        ("SLUICE_COMPONENTIZE_PY", guest_tool("setup-python-guests.sh")),
        ("SLUICE_COMPONENTIZE_QJS", guest_tool("setup-js-guests.sh")),
    ];
    let sluice = |args: &[&str]| {
        let mut command = Command::new(SLUICE);
        command.args(args).current_dir(&dir).env("SLUICE_CACHE_DIR", home.path().join("cache"));
        command.envs(tools.iter().map(|(k, v)| (k, v))).output().unwrap()
    };
    let build = sluice(&["plugin", "build"]);
    let built = text(&build);
    assert!(build.status.success(), "{built}");
    assert!(built.contains("target/word_stats.wasm ("), "{built}");
    lists_the_template_functions(&built);
    let golden = ["test", "pipeline.toml", "--input", "lines=input.txt", "--expect", "expected"];
    let passed = sluice(&golden);
    assert!(passed.status.success(), "the template's golden files, as the Rust plugin writes them:\n{}", text(&passed));
    assert!(text(&passed).contains("test passed: 3 batches, 2 sinks"), "{}", text(&passed));

    let file = dir.join(source);
    let code = std::fs::read_to_string(&file).unwrap();
    assert!(code.contains(change.0), "{code}");
    std::fs::write(&file, code.replace(change.0, change.1)).unwrap();
    assert!(sluice(&["plugin", "build"]).status.success());
    let failed = sluice(&golden);
    let diff = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{diff}");
    assert!(diff.contains("FAILED: sink `batch_counts` differs"), "{diff}");
    assert!(diff.contains("batch 1:\n  - [\"not\",1]\n"), "{diff}");
}

#[test]
fn a_python_plugin_made_by_plugin_new_builds_tests_and_passes_the_same_golden_files() {
    let change = ("len(pair[0]) >= 3", "len(pair[0]) >= 4");
    a_guest_plugin_builds_tests_and_passes_its_golden_files("python", &["python3", "-m", "unittest"], "app.py", change);
}

#[test]
fn a_javascript_plugin_made_by_plugin_new_builds_tests_and_passes_the_same_golden_files() {
    let change = ("[...word].length >= 3", "[...word].length >= 4");
    a_guest_plugin_builds_tests_and_passes_its_golden_files("js", &["node", "--test"], "app.js", change);
}

#[test]
fn sluice_test_says_which_input_is_wrong_and_where() {
    let work = Workdir::new();
    let plugin = plugin("wordcount");
    work.write("pipeline.toml", &wordcount_pipeline("127.0.0.1:9", &plugin.display().to_string(), "1s", "200ms"));
    work.write("in.txt", "a b\n---\nb\n");
    let missing = work.sluice(&["test", "pipeline.toml", "--input", "nosuch=in.txt"]);
    let missing = String::from_utf8_lossy(&missing.stderr).to_string();
    assert!(
        missing.contains("--input nosuch=...: the pipeline has no source `nosuch` (its sources: lines)"),
        "{missing}"
    );
    let absent = work.sluice(&["test", "pipeline.toml", "--input", "lines=absent.txt"]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&absent.stderr).contains("absent.txt: cannot read"));
    let no_golden = work.sluice(&["test", "pipeline.toml", "--input", "lines=in.txt", "--expect", "golden"]);
    assert_eq!(no_golden.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_golden.stderr).contains("no golden file for sink `files` (--bless writes it)"));
    let every_line = work.sluice(&[
        "test",
        "pipeline.toml",
        "--input",
        "lines=in.txt",
        "--batch-lines",
        "1",
        "--expect",
        "g",
        "--bless",
    ]);
    assert!(every_line.status.success(), "{}", String::from_utf8_lossy(&every_line.stderr));
    let golden = std::fs::read_to_string(work.path("g/files.jsonl")).unwrap();
    assert_eq!(golden, "# batch 1\n[\"a\",1]\n[\"b\",1]\n# batch 2\n[\"---\",1]\n# batch 3\n[\"b\",1]\n");
}

/// Word counts, then two stages of one plugin function with different parameters and a filter
/// with its own.
fn params_pipeline(address: &str, top3: &str, top1: &str) -> String {
    wordcount_pipeline(address, "wordcount.wasm", "300ms", "100ms")
        .replace("[plugins]\n", "[plugins]\ntop_k = \"top_k.wasm\"\n")
        + &format!(
            r#"
[[stages]]
name = "top3"
input = "counts"
op = "transform"
plugin = "top_k"
function = "top"
params = {top3}

[[stages]]
name = "top1"
input = "counts"
op = "transform"
plugin = "top_k"
function = "top"
params = {top1}

[[stages]]
name = "frequent"
input = "counts"
op = "filter"
plugin = "top_k"
function = "at_least"
params = {{ min = 2 }}

[[sinks]]
name = "top3_out"
input = "top3"
type = "file"
path = "top3"

[[sinks]]
name = "top1_out"
input = "top1"
type = "file"
path = "top1"

[[sinks]]
name = "frequent_out"
input = "frequent"
type = "file"
path = "frequent"
"#
        )
}

#[test]
fn stage_params_are_checked_against_the_function_and_each_stage_gets_its_own() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &params_pipeline("127.0.0.1:9", "{ k = 3 }", "{ k = 1, min_count = 2 }"));
    work.write("in.txt", "a a a b b c d\n---\nx y\n---\nq q r r r s s s s\n");
    let out = work.sluice(&["test", "pipeline.toml", "--input", "lines=in.txt", "--expect", "g", "--bless"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |sink: &str| std::fs::read_to_string(work.path(&format!("g/{sink}.jsonl"))).unwrap();
    assert_eq!(
        read("top3_out"),
        "# batch 1\n[\"a\",3]\n[\"b\",2]\n[\"c\",1]\n# batch 2\n[\"x\",1]\n[\"y\",1]\n# batch 3\n[\"q\",2]\n[\"r\",3]\n[\"s\",4]\n"
    );
    assert_eq!(read("top1_out"), "# batch 1\n[\"a\",3]\n# batch 2\n# batch 3\n[\"s\",4]\n");
    assert_eq!(
        read("frequent_out"),
        "# batch 1\n[\"a\",3]\n[\"b\",2]\n# batch 2\n# batch 3\n[\"q\",2]\n[\"r\",3]\n[\"s\",4]\n"
    );

    for (top3, location, message) in [
        ("{ kk = 3 }", "stages `top3`.params", "TopParams has no field `kk` (its fields: k, min_count)"),
        (
            "{ k = \"ten\" }",
            "stages `top3`.params.k",
            "expected an integer from 0 to 4294967295, found a string (function `top` takes parameters TopParams { k: u32, min_count: Option<u64> })",
        ),
        ("{ min_count = 1 }", "stages `top3`.params.k", "missing (u32)"),
    ] {
        work.write("bad.toml", &params_pipeline("127.0.0.1:9", top3, "{ k = 1 }"));
        let check = work.sluice(&["check", "bad.toml"]);
        let err = String::from_utf8_lossy(&check.stderr).to_string();
        assert_eq!(check.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{location}: {message}")), "`{location}: {message}` in:\n{err}");
    }
    let no_params = params_pipeline("127.0.0.1:9", "{ k = 3 }", "{ k = 1 }").replacen(
        "function = \"sum\"\n",
        "function = \"sum\"\nparams = { k = 1 }\n",
        1,
    );
    work.write("bad.toml", &no_params);
    let err = String::from_utf8_lossy(&work.sluice(&["check", "bad.toml"]).stderr).to_string();
    assert!(
        err.contains("stages `counts`.params: no function of this stage takes parameters (`sum` takes none"),
        "{err}"
    );
}

#[test]
fn a_hot_swap_keeps_each_stages_params() {
    // Another version of the same code: one custom section more (another hash).
    swap_keeping_params(|module| [module, &[0, 5, 4, b'n', b'e', b'x', b't']].concat());
}

#[test]
fn a_hot_swap_to_the_same_code_as_a_component_keeps_each_stages_params() {
    // The same crate built as an ABI 2 component: its parameters go through `functions.call`.
    swap_keeping_params(|_| std::fs::read(plugin("top_k-abi2")).unwrap());
}

/// Two stages of `top_k` with their own `params`; the plugin file is replaced by `next` of its
/// bytes while they run: every batch before and after keeps each stage's parameters.
fn swap_keeping_params(next: impl Fn(&[u8]) -> Vec<u8>) {
    let lines = corpus(60 * 300, 8, 11);
    let feed = lines.chunks(300).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, std::time::Duration::from_millis(60)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let plugin = work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &params_pipeline(&server.address, "{ k = 3 }", "{ k = 1 }"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("records out", std::time::Duration::from_secs(30));
    std::fs::write(&plugin, next(&std::fs::read(&plugin).unwrap())).unwrap();
    running.wait_for("plugin swapped", std::time::Duration::from_secs(30));
    let (code, log) = running.finish(std::time::Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();
    let first_new: u64 = log
        .split("first_batch=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the swap names its first batch");
    let (top3, top1) = (work.batches("top3"), work.batches("top1"));
    assert!(top3.keys().any(|t| *t >= first_new), "batches after the swap: {:?}", top3.keys());
    assert!(top3.keys().any(|t| *t < first_new), "batches before the swap");
    for (time, records) in &top3 {
        assert_eq!(records.len(), 3, "top3 batch {time}: {records:?}");
    }
    for (time, records) in &top1 {
        assert_eq!(records.len(), 1, "top1 batch {time}: {records:?}");
    }
}

/// Three fallible functions of `faulty` over the same lines, each stage with its own policy.
fn fallible_pipeline(counts_policy: &str) -> String {
    format!(
        r#"[pipeline]
name = "fallible"

[plugins]
faulty = "faulty.wasm"

[[sources]]
name = "lines"
type = "socket"
address = "127.0.0.1:9"

[[stages]]
name = "counts"
input = "lines"
op = "map"
plugin = "faulty"
function = "parse_count"
{counts_policy}

[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "faulty"
function = "words_without_digits"
on_error = "skip"

[[stages]]
name = "evens"
input = "lines"
op = "filter"
plugin = "faulty"
function = "even"
on_error = "dead_letter"
dead_letter = "dlq"

[[sinks]]
name = "counts_out"
input = "counts"
type = "file"
path = "counts"

[[sinks]]
name = "words_out"
input = "words"
type = "file"
path = "words"

[[sinks]]
name = "evens_out"
input = "evens"
type = "file"
path = "evens"

[[sinks]]
name = "dlq"
type = "file"
path = "dlq"
"#
    )
}

#[test]
fn a_function_returning_err_fails_one_record_under_its_stages_policy() {
    let work = Workdir::new();
    work.add_plugin("faulty", "faulty");
    work.write("pipeline.toml", &fallible_pipeline("on_error = \"dead_letter\"\ndead_letter = \"dlq\""));
    work.write("in.txt", "to 3\nbe x\n---\n42\n7 up\n");
    let out = work.sluice(&["test", "pipeline.toml", "--input", "lines=in.txt", "--expect", "g", "--bless"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |sink: &str| std::fs::read_to_string(work.path(&format!("g/{sink}.jsonl"))).unwrap();
    // Every record that did not fail went through; each failed one only in its own stage.
    assert_eq!(read("counts_out"), "# batch 1\n[\"to\",3]\n# batch 2\n");
    assert_eq!(read("words_out"), "# batch 1\n[\"be\",1]\n[\"x\",1]\n# batch 2\n");
    assert_eq!(read("evens_out"), "# batch 1\n# batch 2\n\"42\"\n");
    let mut letters: Vec<(String, String, String)> = read("dlq")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(letter["class"], "guest_error", "{letter}");
            let field = |name: &str| letter[name].as_str().unwrap().to_string();
            (field("stage"), field("record"), field("error"))
        })
        .collect();
    letters.sort();
    let letter = |stage: &str, record: &str, error: &str| (stage.to_string(), record.to_string(), error.to_string());
    assert_eq!(
        letters,
        [
            letter("counts", "42", "guest_error: expected `word count`, found \"42\""),
            letter("counts", "7 up", "guest_error: count \"up\": invalid digit found in string"),
            letter("counts", "be x", "guest_error: count \"x\": invalid digit found in string"),
            letter("evens", "7 up", "guest_error: invalid digit found in string"),
            letter("evens", "be x", "guest_error: invalid digit found in string"),
            letter("evens", "to 3", "guest_error: invalid digit found in string"),
        ]
    );

    // Under `fail` (the default) the first failed record fails the batch, named.
    work.write("pipeline.toml", &fallible_pipeline(""));
    let failed = work.sluice(&["test", "pipeline.toml", "--input", "lines=in.txt"]);
    let err = String::from_utf8_lossy(&failed.stderr).to_string();
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(err.contains("batch 1 (time 1000 ms) failed: stage `counts` (faulty@"), "{err}");
    assert!(
        err.contains(
            "function `parse_count`): guest_error: record be x failed: count \"x\": invalid digit found in string"
        ),
        "{err}"
    );
}

#[test]
fn enum_and_map_records_go_through_a_pipeline_into_json() {
    let work = Workdir::new();
    work.add_plugin("charcount", "charcount");
    let stage = |name: &str, function: &str| {
        format!(
            "[[stages]]\nname = \"{name}\"\ninput = \"lines\"\nop = \"map\"\nplugin = \"charcount\"\nfunction = \"{function}\"\n\n"
        )
    };
    let sink = |name: &str| {
        format!("[[sinks]]\nname = \"{name}_out\"\ninput = \"{name}\"\ntype = \"file\"\npath = \"{name}\"\n\n")
    };
    let pipeline = format!(
        "[pipeline]\nname = \"shapes\"\n\n[plugins]\ncharcount = \"charcount.wasm\"\n\n[[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n\n{}{}{}{}",
        stage("shapes", "shape"),
        stage("letters", "letters"),
        sink("shapes"),
        sink("letters")
    );
    work.write("pipeline.toml", &pipeline);
    work.write("in.txt", "\nhi\nto be\nnot to be\n");
    let check = work.sluice(&["check", "pipeline.toml"]);
    let checked = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{checked}{}", String::from_utf8_lossy(&check.stderr));
    assert!(checked.contains("stage shapes: Shape") && checked.contains("stage letters: Map<char, u32>"), "{checked}");
    let out = work.sluice(&["test", "pipeline.toml", "--input", "lines=in.txt", "--expect", "g", "--bless"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |sink: &str| std::fs::read_to_string(work.path(&format!("g/{sink}.jsonl"))).unwrap();
    assert_eq!(
        read("shapes_out"),
        "# batch 1\n\"Empty\"\n{\"Many\":{\"count\":3,\"first\":\"not\"}}\n{\"Pair\":[\"to\",\"be\"]}\n{\"Word\":\"hi\"}\n"
    );
    assert_eq!(
        read("letters_out"),
        "# batch 1\n{\"b\":1,\"e\":1,\"n\":1,\"o\":2,\"t\":2}\n{\"b\":1,\"e\":1,\"o\":1,\"t\":1}\n{\"h\":1,\"i\":1}\n{}\n"
    );
}

#[test]
fn plugin_metrics_and_log_lines_carry_plugin_version_and_stage() {
    let lines: Vec<String> =
        (0..300).map(|i| if i % 3 == 0 { format!("bad{i}") } else { format!("w{i} {i}") }).collect();
    let server = LineServer::start(Feed::HoldOpen(join_lines(&lines)));
    let work = Workdir::new();
    work.add_plugin("faulty", "faulty");
    let pipeline = fallible_pipeline("on_error = \"skip\"")
        .replace("address = \"127.0.0.1:9\"", &format!("address = \"{}\"", server.address));
    work.write("pipeline.toml", &pipeline);
    let ui = format!("127.0.0.1:{}", crate::admin::free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", std::time::Duration::from_secs(30));
    let series = |scrape: &prometheus_parse::Scrape, metric: &str, name: &str| {
        scrape.samples.iter().find(|s| s.metric == metric && s.labels.get("name") == Some(name)).map(|s| {
            (s.labels.get("stage").map(String::from), s.labels.get("plugin").map(String::from), s.value.clone())
        })
    };
    let value = |v: &prometheus_parse::Value| match v {
        prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{other:?}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let scrape = loop {
        let scrape = crate::admin::prometheus(&ui);
        let seen = series(&scrape, "sluice_plugin_metric_count", "line_bytes").map(|(_, _, v)| value(&v));
        if seen == Some(300.0) {
            break scrape;
        }
        assert!(std::time::Instant::now() < deadline, "line_bytes_count: {seen:?}; log:\n{}", running.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (stage, plugin, bad) = series(&scrape, "sluice_plugin_metric", "bad_lines").expect("bad_lines");
    assert_eq!((stage.as_deref(), plugin.as_deref(), value(&bad)), (Some("counts"), Some("faulty"), 100.0));
    let bytes: usize = lines.iter().map(String::len).sum();
    let (_, _, sum) = series(&scrape, "sluice_plugin_metric_sum", "line_bytes").expect("line_bytes_sum");
    assert_eq!(value(&sum), bytes as f64);
    let (_, _, last) = series(&scrape, "sluice_plugin_metric", "last_count").expect("last_count");
    assert!(lines.iter().any(|l| l.ends_with(&format!(" {}", value(&last)))), "a count that was parsed: {last:?}");
    let sample = scrape.samples.iter().find(|s| s.labels.get("name") == Some("bad_lines")).unwrap();
    let version = sample.labels.get("version").unwrap().to_string();
    assert_eq!(version.len(), 12, "the short hash: {version}");
    let log = running.log();
    let warning = log.lines().find(|l| l.contains("not a number: \"bad0\"")).unwrap_or_else(|| panic!("log:\n{log}"));
    assert!(
        warning.contains("plugin=faulty")
            && warning.contains(&format!("version={version}"))
            && warning.contains("stage=evens"),
        "{warning}"
    );
    running.signal("TERM");
    let (code, log) = running.finish(std::time::Duration::from_secs(30));
    assert_eq!(code, 0, "{log}");
}

/// `/api/status` of the engine at `ui`.
fn status(ui: &str) -> serde_json::Value {
    serde_json::from_str(&crate::admin::get(ui, "/api/status", None).1).unwrap()
}

#[test]
fn a_shadow_deploy_reports_the_share_that_differs_and_a_promoted_shadow_serves_from_the_batch_it_says() {
    // Of the four words of every line, only `a1` changes under the upper-casing version.
    let lines: Vec<String> = (0..1_200).map(|_| "a1 B2 C3 D4".to_string()).collect();
    let feed = lines.chunks(5).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, std::time::Duration::from_millis(50)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("uppercase", "upper");
    work.add_plugin("wordcount", "lower");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let ui = format!("127.0.0.1:{}", crate::admin::free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui, "--no-hot-swap"]);
    running.wait_for("records out", std::time::Duration::from_secs(30));
    let original = status(&ui)["plugins"][0]["hash"].as_str().unwrap().to_string();
    let deploy = work.sluice(&["deploy", "wordcount", "upper.wasm", "--shadow", "--ui", &ui]);
    assert!(deploy.status.success(), "{}", String::from_utf8_lossy(&deploy.stderr));
    assert!(String::from_utf8_lossy(&deploy.stdout).contains("runs in the serving version's shadow"));
    let answer: serde_json::Value = serde_json::from_slice(&deploy.stdout).unwrap();
    let upper_hash = answer["hash"].as_str().unwrap().to_string();
    wait_until("three batches in the shadow", std::time::Duration::from_secs(30), || {
        status(&ui)["plugins"][0]["shadow"]["batches"].as_u64().unwrap_or(0) >= 3
    });
    let shadow = status(&ui)["plugins"][0]["shadow"].clone();
    let totals = &shadow["totals"];
    assert!(totals["compared"].as_u64().unwrap() >= 4, "{shadow}");
    assert_eq!(
        totals["differing"].as_u64().unwrap() * 4,
        totals["compared"].as_u64().unwrap(),
        "a quarter differs: {shadow}"
    );
    assert_eq!(totals["extra"], totals["differing"], "{shadow}");
    assert_eq!((totals["serving_errors"].as_u64(), totals["shadow_errors"].as_u64()), (Some(0), Some(0)), "{shadow}");
    assert_eq!(shadow["differing_share"].as_f64(), Some(0.25), "{shadow}");
    assert!(shadow["recent"][0]["shadow_us_per_call"].as_f64().unwrap() > 0.0, "{shadow}");
    // Its output was discarded: nothing upper-case was written while it only shadowed.
    assert!(work.batches("out").values().flatten().all(|r| r[0] != "A1"));

    let promote = work.sluice(&["promote", "wordcount", "--ui", &ui]);
    assert!(promote.status.success(), "{}", String::from_utf8_lossy(&promote.stderr));
    running.wait_for("plugin swapped", std::time::Duration::from_secs(30));
    assert_eq!(status(&ui)["plugins"][0]["shadow"], serde_json::Value::Null);

    // A shadow that promotes itself: the original version, 25% different from the one serving.
    let auto =
        ["deploy", "wordcount", "lower.wasm", "--shadow", "--promote-after", "2", "--max-diff", "0.5", "--ui", &ui];
    assert!(work.sluice(&auto).status.success());
    wait_until("the rule promotes it", std::time::Duration::from_secs(30), || {
        running.log().matches("plugin swapped").count() >= 2
    });
    assert!(running.log().contains("automatic=true"), "{}", running.log());
    // And one dropped.
    assert!(work.sluice(&["deploy", "wordcount", "upper.wasm", "--shadow", "--ui", &ui]).status.success());
    assert!(status(&ui)["plugins"][0]["shadow"]["hash"].is_string());
    assert!(work.sluice(&["deploy", "wordcount", "--abort-shadow", "--ui", &ui]).status.success());
    assert_eq!(status(&ui)["plugins"][0]["shadow"], serde_json::Value::Null);
    // Lineage: the batches each version served, in order.
    let served: Vec<String> = status(&ui)["plugins"][0]["served"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(served, [original.clone(), upper_hash.clone(), original.clone()], "{}", status(&ui));

    let (code, log) = running.finish(std::time::Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
    server.join();
    let first_upper = log
        .split("first_batch=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("the promotion's swap names its first batch");
    let mut total = 0;
    for (time, records) in work.batches("out") {
        let upper = records.iter().any(|r| r[0] == "A1");
        let lower = records.iter().any(|r| r[0] == "a1");
        assert!(!(upper && lower), "batch {time} mixes versions");
        if time < first_upper {
            assert!(!upper, "batch {time} is before the promotion: {records:?}");
        }
        total += records.iter().filter(|r| r[0] == "a1" || r[0] == "A1").map(|r| r[1].as_u64().unwrap()).sum::<u64>();
        // Each batch file names the version that computed it.
        let lineage = std::fs::read_to_string(work.path(&format!("out/.lineage/batch-{time}.json"))).unwrap();
        let lineage: serde_json::Value = serde_json::from_str(&lineage).unwrap();
        assert_eq!(lineage["batch"], time);
        let expected = if upper { &upper_hash } else { &original };
        assert_eq!(lineage["versions"]["wordcount"].as_str(), Some(expected.as_str()), "batch {time}: {lineage}");
    }
    assert_eq!(total, 1_200, "every a1 counted once, before, during and after the shadows");
}

/// A shadow deploy of a component beside a serving module compares as two modules do, and the
/// component, promoted, serves.
#[test]
fn a_component_in_a_modules_shadow_reports_the_share_that_differs_and_serves_once_promoted() {
    let lines: Vec<String> = (0..1_200).map(|_| "a1 B2 C3 D4".to_string()).collect();
    let feed = lines.chunks(5).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, std::time::Duration::from_millis(50)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("uppercase-abi2", "upper");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let ui = format!("127.0.0.1:{}", crate::admin::free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui, "--no-hot-swap"]);
    running.wait_for("records out", std::time::Duration::from_secs(30));
    let deploy = work.sluice(&["deploy", "wordcount", "upper.wasm", "--shadow", "--ui", &ui]);
    assert!(deploy.status.success(), "{}", String::from_utf8_lossy(&deploy.stderr));
    wait_until("three batches in the shadow", std::time::Duration::from_secs(30), || {
        status(&ui)["plugins"][0]["shadow"]["batches"].as_u64().unwrap_or(0) >= 3
    });
    let shadow = status(&ui)["plugins"][0]["shadow"].clone();
    assert_eq!(shadow["differing_share"].as_f64(), Some(0.25), "{shadow}");
    assert_eq!(shadow["totals"]["shadow_errors"].as_u64(), Some(0), "{shadow}");
    assert!(work.batches("out").values().flatten().all(|r| r[0] != "A1"), "a shadow's output is discarded");
    let promote = work.sluice(&["promote", "wordcount", "--ui", &ui]);
    assert!(promote.status.success(), "{}", String::from_utf8_lossy(&promote.stderr));
    running.wait_for("plugin swapped", std::time::Duration::from_secs(30));
    wait_until("the component's output", std::time::Duration::from_secs(30), || {
        work.batches("out").values().flatten().any(|r| r[0] == "A1")
    });
    running.signal("TERM");
    let (code, log) = running.finish(std::time::Duration::from_secs(60));
    assert_eq!(code, 0, "{log}");
}
