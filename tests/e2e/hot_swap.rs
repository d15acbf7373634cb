//! Hot swap through the file system: a new version swaps in at a batch boundary with the ledger
//! exact; broken versions are rejected while the old one keeps serving.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

/// Overwrites `path` in place, the way `cp new.wasm path` does.
fn overwrite(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn swap_under_load_keeps_the_ledger_exact_and_shows_the_new_output() {
    let (server, expected) = paced(80, 2_000, Duration::from_millis(50), 7);
    let work = Workdir::new();
    let plugin = work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("records out", Duration::from_secs(30));
    overwrite(&plugin, &std::fs::read(plugin_path("uppercase")).unwrap());
    running.wait_for("plugin swapped", Duration::from_secs(30));
    let (code, log) = running.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();

    // Every batch was served by one version: all of its words are in one case.
    let batches = work.batches("out");
    let mut lower_batches = 0;
    let mut upper_batches = 0;
    let mut last_lower = 0;
    let mut first_upper = u64::MAX;
    for (time, records) in &batches {
        let upper = records.iter().filter(|r| r[0].as_str().unwrap().starts_with('W')).count();
        assert!(upper == 0 || upper == records.len(), "batch {time} mixes versions");
        if upper == 0 {
            lower_batches += 1;
            last_lower = last_lower.max(*time);
        } else {
            upper_batches += 1;
            first_upper = first_upper.min(*time);
        }
    }
    assert!(lower_batches > 0 && upper_batches > 0, "both versions served: {lower_batches} old, {upper_batches} new");
    assert!(last_lower < first_upper, "the swap happened once, at a batch boundary");
    assert!(log.contains(&format!("first_batch={first_upper}")), "the swap log names the first batch; log:\n{log}");

    // Not one word lost or counted twice across the swap.
    let mut folded = BTreeMap::new();
    for (word, count) in work.ledger("out") {
        *folded.entry(word.to_lowercase()).or_insert(0) += count;
    }
    assert_eq!(folded, expected);
}

fn plugin_path(name: &str) -> std::path::PathBuf {
    plugin(name)
}

const WRONG_ABI: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 99)
  (func (export "sluice_input") (param i32) (result i32) i32.const 1024))
"#;

#[test]
fn broken_versions_are_rejected_and_the_old_one_keeps_serving() {
    let (server, expected) = paced(60, 1_000, Duration::from_millis(60), 11);
    let work = Workdir::new();
    let plugin = work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("records out", Duration::from_secs(30));

    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("garbage bytes", b"this is not wasm at all".to_vec(), "is not a WebAssembly module"),
        ("wrong ABI version", wat::parse_str(WRONG_ABI).unwrap(), "built for plugin ABI version 99"),
        (
            "missing function and changed type",
            std::fs::read(plugin_path("charcount")).unwrap(),
            "function `sum` is missing",
        ),
    ];
    for (i, (case, bytes, message)) in cases.iter().enumerate() {
        overwrite(&plugin, bytes);
        let start = std::time::Instant::now();
        while running.log().matches("rejected new plugin version").count() < i + 1 {
            assert!(start.elapsed() < Duration::from_secs(20), "{case}: not rejected; log:\n{}", running.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(running.log().contains(message), "{case}: expected {message:?}; log:\n{}", running.log());
    }
    assert!(running.log().contains("changed its type from String -> (String, u64) to String -> (char, u64)"));
    let (code, log) = running.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(!log.contains("plugin swapped"), "no broken version may serve; log:\n{log}");
    assert_eq!(work.ledger("out"), expected, "the old version kept counting every word");
}
