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
    assert!(err.contains("stages `counts`.params: function `sum` of plugin `wordcount` takes no parameters"), "{err}");
}

#[test]
fn a_hot_swap_keeps_each_stages_params() {
    let lines = corpus(60 * 300, 8, 11);
    let feed = lines.chunks(300).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, std::time::Duration::from_millis(60)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let plugin = work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &params_pipeline(&server.address, "{ k = 3 }", "{ k = 1 }"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("records out", std::time::Duration::from_secs(30));
    // Another version of the same code: one custom section more (another hash).
    let mut next = std::fs::read(&plugin).unwrap();
    next.extend_from_slice(&[0, 5, 4, b'n', b'e', b'x', b't']);
    std::fs::write(&plugin, next).unwrap();
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
