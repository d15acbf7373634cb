//! `sluice test`: loads the pipeline, runs it on files (`crate::harness`), and prints each
//! stage's output, writes golden files (`--bless`) or compares with them (`--expect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{PluginArgs, Purpose, load, output};
use crate::harness::{self, golden, input::Cut};

pub(super) fn run(
    path: &Path,
    plugins: &PluginArgs,
    inputs: &[(String, PathBuf)],
    cut: Cut,
    expect: Option<&Path>,
    bless: bool,
) -> ExitCode {
    let pipeline = match load(path, plugins, Purpose::Run) {
        Ok(pipeline) => pipeline,
        Err(code) => return code,
    };
    let batches = match harness::run(&pipeline, inputs, cut) {
        Ok(batches) => batches,
        Err(why) => {
            errln!("error: {}: {why}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let Some(dir) = expect else {
        output::out(format_args!("{}", harness::report(&pipeline, &batches)));
        return ExitCode::SUCCESS;
    };
    let outputs = harness::sink_outputs(&pipeline, &batches);
    if bless {
        return write_golden(dir, &outputs);
    }
    let mut differing = 0;
    for (sink, written) in &outputs {
        let file = dir.join(format!("{sink}.jsonl"));
        let expected = match std::fs::read_to_string(&file) {
            Ok(text) => golden::parse(&file, &text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{}: no golden file for sink `{sink}` (--bless writes it)", file.display()))
            }
            Err(err) => Err(format!("{}: cannot read: {err}", file.display())),
        };
        let expected = match expected {
            Ok(expected) => expected,
            Err(why) => {
                errln!("error: {why}");
                differing += 1;
                continue;
            }
        };
        let diff = golden::diff(&expected, written);
        if diff.is_empty() {
            let records: usize = written.iter().map(Vec::len).sum();
            outln!("ok: sink `{sink}`: {} batches, {records} records as {}", written.len(), file.display());
        } else {
            differing += 1;
            errln!(
                "FAILED: sink `{sink}` differs from {} (-: expected, not written; +: written, not expected):",
                file.display()
            );
            for line in diff {
                errln!("{line}");
            }
        }
    }
    if differing == 0 {
        outln!("test passed: {} batches, {} sinks", batches.len(), outputs.len());
        ExitCode::SUCCESS
    } else {
        errln!("test failed: {differing} of {} sinks differ (`--bless` accepts this run's output)", outputs.len());
        ExitCode::FAILURE
    }
}

fn write_golden(dir: &Path, outputs: &[(String, golden::Batches)]) -> ExitCode {
    if let Err(err) = std::fs::create_dir_all(dir) {
        errln!("error: cannot create {}: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    for (sink, written) in outputs {
        let file = dir.join(format!("{sink}.jsonl"));
        if let Err(err) = std::fs::write(&file, golden::format(written)) {
            errln!("error: cannot write {}: {err}", file.display());
            return ExitCode::FAILURE;
        }
        let records: usize = written.iter().map(Vec::len).sum();
        outln!("wrote {}: {} batches, {records} records", file.display(), written.len());
    }
    ExitCode::SUCCESS
}
