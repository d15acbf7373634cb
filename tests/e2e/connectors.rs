//! The connector seam as a user meets it: `sluice check` states each source → sink path's
//! end-to-end guarantee, and a sink that cannot write stops the run in every mode (never a
//! batch dropped with a log line).

use std::time::Duration;

use crate::support::*;

fn pipeline(checkpoint: bool, wal: bool) -> String {
    format!(
        r#"[pipeline]
name = "paths"
batch_interval = "200ms"
block_interval = "100ms"
{checkpoint}

[plugins]
wordcount = "wordcount.wasm"
faulty = "faulty.wasm"

[[sources]]
name = "files"
type = "directory"
path = "in"

[[sources]]
name = "lines"
type = "socket"
address = "127.0.0.1:9"
wal = {wal}

[[stages]]
name = "words"
input = "files"
op = "flat_map"
plugin = "wordcount"
function = "split_words"

[[stages]]
name = "risky"
input = "lines"
op = "flat_map"
plugin = "faulty"
function = "split_words"
on_error = "dead_letter"
dead_letter = "dlq"

[[sinks]]
name = "out"
input = "words"
type = "file"
path = "out"

[[sinks]]
name = "console"
input = "risky"
type = "print"

[[sinks]]
name = "dlq"
type = "file"
path = "dlq"
"#,
        checkpoint = if checkpoint { "checkpoint_dir = \"ckpt\"" } else { "" },
    )
}

fn check(text: &str) -> String {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("faulty", "faulty");
    work.write("pipeline.toml", text);
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn check_prints_the_guarantee_of_every_source_to_sink_path() {
    let stdout = check(&pipeline(true, true));
    for line in [
        "path files (directory) → out (file): exactly once",
        "path lines (socket, wal) → console (print): at least once",
        "path lines (socket, wal) → dlq (file): at least once",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("path files (directory) → console"), "files never reach the console:\n{stdout}");
    let stdout = check(&pipeline(true, false));
    assert!(stdout.contains("path lines (socket) → console (print): best effort"), "{stdout}");
    let stdout = check(&pipeline(false, false));
    assert!(stdout.contains("path files (directory) → out (file): best effort (no checkpoint_dir)"), "{stdout}");
}

#[test]
fn without_checkpoints_a_sink_that_cannot_write_stops_the_run_too() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write(
        "pipeline.toml",
        "[pipeline]\nname = \"p\"\nbatch_interval = \"200ms\"\nblock_interval = \"100ms\"\n\
         [plugins]\nwordcount = \"wordcount.wasm\"\n\
         [[sources]]\nname = \"files\"\ntype = \"directory\"\npath = \"in\"\n\
         [[stages]]\nname = \"words\"\ninput = \"files\"\nop = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"\n\
         [[sinks]]\nname = \"out\"\ninput = \"words\"\ntype = \"file\"\npath = \"out\"\n",
    );
    std::fs::create_dir(work.path("in")).unwrap();
    work.write("out", "a file in the way of the sink's directory");
    work.write("in/a.txt", "one two\n");
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(30));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("sink `out` cannot write batch"), "log:\n{log}");
    assert!(log.contains("without checkpoint_dir this batch's output is lost"), "log:\n{log}");
}

#[test]
fn a_directory_read_and_written_or_shared_with_the_checkpoint_is_refused_by_name() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write(
        "pipeline.toml",
        "[pipeline]\nname = \"p\"\ncheckpoint_dir = \"state\"\n[plugins]\nwordcount = \"wordcount.wasm\"\n\
         [[sources]]\nname = \"files\"\ntype = \"directory\"\npath = \"in\"\n\
         [[stages]]\nname = \"words\"\ninput = \"files\"\nop = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"\n\
         [[sinks]]\nname = \"loop\"\ninput = \"words\"\ntype = \"file\"\npath = \"./in\"\n\
         [[sinks]]\nname = \"clash\"\ninput = \"words\"\ntype = \"file\"\npath = \"state\"\n",
    );
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sinks `loop`.path: source `files` reads the same directory; a pipeline must not read"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sinks `clash`.path: the checkpoint (pipeline.checkpoint_dir) lives in the same directory"),
        "{stderr}"
    );
}
