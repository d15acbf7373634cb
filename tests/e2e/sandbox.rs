//! Hostile plugins are contained and their stage's `on_error` policy applied, while the other
//! stages keep serving; a swapped-in version that keeps failing is rolled back automatically; a
//! plugin slower than its input is met with backpressure that bounds memory and delay.

use std::time::{Duration, Instant};

use crate::support::*;

/// The `faulty` plugin a zoo runs: the same misbehaviours in each build.
struct Faulty {
    /// Its file under target/plugins.
    plugin: &'static str,
    /// With ABI 1's framing-breaking `garbage` stage (only the module has it).
    garbage: bool,
    /// The class of its `panic!`: a Rust trap, or a Python or JavaScript exception (the
    /// guest's error, with its traceback).
    raised: &'static str,
    /// The `memory_limit`s of the `oom!` and `huge!` stages: above what the build needs to
    /// start (an interpreter's heap), below what the trigger asks for.
    memory: [&'static str; 2],
}

const RUST_MEMORY: [&str; 2] = ["64MiB", "32MiB"];
const MODULE: Faulty = Faulty { plugin: "faulty", garbage: true, raised: "trap", memory: RUST_MEMORY };
const COMPONENT: Faulty = Faulty { plugin: "faulty-abi2", garbage: false, raised: "trap", memory: RUST_MEMORY };
const GUEST_MEMORY: [&str; 2] = ["160MiB", "128MiB"];
const PYTHON: Faulty = Faulty { plugin: "faulty-py", garbage: false, raised: "guest_error", memory: GUEST_MEMORY };
const JAVASCRIPT: Faulty = Faulty { plugin: "faulty-js", garbage: false, raised: "guest_error", memory: GUEST_MEMORY };

/// The zoo: a healthy word count beside a stage per misbehaviour of the `faulty` plugin.
fn zoo_pipeline(servers: &[(&str, &LineServer)], faulty: &Faulty) -> String {
    let mut text = String::from(
        "[pipeline]\nname = \"zoo\"\nbatch_interval = \"300ms\"\nblock_interval = \"100ms\"\n\n\
         [plugins]\nwordcount = \"wordcount.wasm\"\nfaulty = \"faulty.wasm\"\n\n",
    );
    for (name, server) in servers {
        text += &format!("[[sources]]\nname = \"{name}\"\ntype = \"socket\"\naddress = \"{}\"\n\n", server.address);
    }
    let stage = |name: &str, input: &str, op: &str, plugin: &str, function: &str, extra: &str| {
        format!(
            "[[stages]]\nname = \"{name}\"\ninput = \"{input}\"\nop = \"{op}\"\nplugin = \"{plugin}\"\nfunction = \"{function}\"\n{extra}\n"
        )
    };
    let [bomb_cap, huge_cap] = faulty.memory;
    text += &stage("words", "healthy", "flat_map", "wordcount", "split_words", "");
    text += &stage("counts", "words", "reduce_by_key", "wordcount", "sum", "");
    text += &stage("trapped", "panics", "flat_map", "faulty", "split_words", "on_error = \"skip\"");
    text += &stage(
        "looped",
        "loops",
        "flat_map",
        "faulty",
        "split_words",
        "timeout = \"300ms\"\non_error = \"dead_letter\"\ndead_letter = \"dlq\"",
    );
    text += &stage(
        "bombed",
        "bombs",
        "flat_map",
        "faulty",
        "split_words",
        &format!("memory_limit = \"{bomb_cap}\"\ndead_letter = \"dlq\""),
    );
    text += &stage(
        "huge",
        "huges",
        "flat_map",
        "faulty",
        "huge",
        &format!("memory_limit = \"{huge_cap}\"\non_error = \"skip\""),
    );
    if faulty.garbage {
        text += &stage(
            "garbled",
            "garbages",
            "map",
            "faulty",
            "garbage",
            "on_error = \"dead_letter\"\ndead_letter = \"dlq\"",
        );
    }
    text += "[[sinks]]\nname = \"out\"\ninput = \"counts\"\ntype = \"file\"\npath = \"out\"\n\n";
    let stages = ["trapped", "looped", "bombed", "huge", "garbled"];
    for stage in &stages[..if faulty.garbage { 5 } else { 4 }] {
        text +=
            &format!("[[sinks]]\nname = \"{stage}_out\"\ninput = \"{stage}\"\ntype = \"file\"\npath = \"{stage}\"\n\n");
    }
    text += "[[sinks]]\nname = \"dlq\"\ntype = \"file\"\npath = \"dlq\"\n";
    text
}

#[test]
fn a_zoo_of_hostile_plugins_is_contained_by_policy_while_the_healthy_stages_serve() {
    zoo(&MODULE);
}

#[test]
fn a_zoo_of_hostile_components_is_contained_as_modules_are() {
    let log = zoo(&COMPONENT);
    // The guest's own panic message, through the host's `panic` import (not scraped from its
    // stderr).
    assert!(log.contains("panicked: panicked at") && log.contains("asked to panic by line"), "log:\n{log}");
    assert!(!log.contains("the plugin printed"), "log:\n{log}");
}

/// Python and JavaScript guests in the zoo: an exception is that call's error, with the
/// guest's message and stack; a loop meets the deadline; an interpreter refused memory by the
/// cap (a `MemoryError`, an out-of-memory exception) is a memory limit, not its own error.
#[test]
fn a_zoo_of_hostile_python_and_javascript_components_is_contained_as_rust_ones_are() {
    for (faulty, stack) in [(&PYTHON, "Traceback (most recent call last)"), (&JAVASCRIPT, "at ")] {
        let log = zoo(faulty);
        let line = log.lines().find(|l| l.contains("stage `trapped`")).unwrap_or_else(|| panic!("log:\n{log}"));
        assert!(line.contains("asked to panic by line"), "{}: {line}", faulty.plugin);
        let rest = &log[log.find("asked to panic by line").expect("found above")..];
        assert!(rest.contains(stack), "{}: the guest's stack: log:\n{log}", faulty.plugin);
    }
}

/// Runs the zoo with `faulty`; returns the log.
fn zoo(faulty: &Faulty) -> String {
    let healthy = corpus(20_000, 8, 9);
    let hostile = |trigger: &str| LineServer::lines(&[format!("fine words {trigger} here")]);
    let mut servers = vec![
        ("healthy", LineServer::lines(&healthy)),
        ("panics", hostile("panic!")),
        ("loops", hostile("loop!")),
        ("bombs", hostile("oom!")),
        ("huges", hostile("huge!")),
    ];
    if faulty.garbage {
        servers.push(("garbages", hostile("anything")));
    }
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin(faulty.plugin, "faulty");
    let named: Vec<(&str, &LineServer)> = servers.iter().map(|(n, s)| (*n, s)).collect();
    work.write("pipeline.toml", &zoo_pipeline(&named, faulty));
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(90));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(work.ledger("out"), count_words(&healthy), "the healthy stages served every record; log:\n{log}");
    assert!(log.contains("failed_batches=0"), "every failure was absorbed by its policy; log:\n{log}");
    // skip: logged with the class, nothing written.
    for (stage, class) in [("trapped", faulty.raised), ("huge", "memory_limit")] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("skipped the records after: stage `{stage}`")))
            .unwrap_or_else(|| panic!("no skip logged for {stage}; log:\n{log}"));
        assert!(line.contains(&format!("): {class}:")), "{}: {line}", faulty.plugin);
        assert!(work.batches(stage).is_empty(), "{stage} wrote nothing");
    }
    // dead_letter: the record and the classified error reach the dead-letter sink.
    let letters: Vec<serde_json::Value> = work.batches("dlq").into_values().flatten().collect();
    let by_stage = |stage: &str| letters.iter().find(|l| l["stage"] == stage).cloned();
    let lettered = [
        ("looped", "deadline", "fine words loop! here"),
        ("bombed", "memory_limit", "fine words oom! here"),
        ("garbled", "bad_output", "fine words anything here"),
    ];
    let lettered = &lettered[..if faulty.garbage { 3 } else { 2 }];
    for &(stage, class, record) in lettered {
        let letter = by_stage(stage).unwrap_or_else(|| panic!("no dead letter from {stage}: {letters:?}; log:\n{log}"));
        assert_eq!(letter["class"], class, "{}: {letter}", faulty.plugin);
        assert_eq!(letter["record"], record, "{letter}");
        assert_eq!(letter["plugin"], "faulty", "{letter}");
        assert!(letter["batch"].as_u64().unwrap() > 0, "{letter}");
    }
    assert_eq!(letters.len(), lettered.len(), "{letters:?}");
    log
}

#[test]
fn a_plugin_built_for_another_abi_is_refused_by_check_and_by_hot_swap() {
    let work = Workdir::new();
    work.add_plugin("old_abi", "old");
    work.write(
        "pipeline.toml",
        "[pipeline]\nname = \"p\"\n[plugins]\nold = \"old.wasm\"\n[[sources]]\nname = \"s\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n\
         [[stages]]\nname = \"m\"\ninput = \"s\"\nop = \"map\"\nplugin = \"old\"\nfunction = \"f\"\n\
         [[sinks]]\nname = \"o\"\ninput = \"m\"\ntype = \"print\"\n",
    );
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("plugins.old") && stderr.contains("plugin ABI version 99"), "{stderr}");
}

#[test]
fn a_swapped_in_version_that_keeps_failing_is_rolled_back_automatically() {
    rolled_back_automatically("faulty");
}

#[test]
fn a_swapped_in_component_that_keeps_failing_is_rolled_back_automatically() {
    rolled_back_automatically("faulty-abi2");
}

/// The healthy module serves, `faulty` (a module or a component) is swapped in and fails every
/// batch, and is rolled back after `rollback_after` of them.
fn rolled_back_automatically(faulty: &str) {
    // Every chunk holds a line the faulty plugin panics on; the healthy one just counts it.
    let chunks: Vec<Vec<u8>> =
        (0..14).map(|i| join_lines(&[format!("chunk{i} words panic! here"), "more words".to_string()])).collect();
    let server = LineServer::start(Feed::Paced(chunks, Duration::from_millis(400)));
    let work = Workdir::new();
    let file = work.add_plugin("wordcount", "wc");
    let pipeline = wordcount_pipeline(&server.address, "wc.wasm", "400ms", "100ms")
        .replace("[plugins]", "rollback_after = 2\n\n[plugins]");
    work.write("pipeline.toml", &pipeline);
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("records out", Duration::from_secs(20));
    std::fs::copy(plugin(faulty), work.path(".wc.tmp")).unwrap();
    std::fs::rename(work.path(".wc.tmp"), &file).unwrap();
    running.wait_for("plugin rolled back automatically", Duration::from_secs(30));
    // The file still holds the failing version; a version for another ABI is refused.
    std::fs::copy(plugin("old_abi"), work.path(".wc.tmp")).unwrap();
    std::fs::rename(work.path(".wc.tmp"), &file).unwrap();
    running.wait_for("plugin ABI version 99", Duration::from_secs(20));
    let (code, log) = running.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    let rollback = log.lines().find(|l| l.contains("plugin rolled back automatically")).unwrap();
    assert!(rollback.contains("failed_batches=2"), "{rollback}");
    assert!(log.contains("auto_rollbacks=1"), "log:\n{log}");
    // After the rollback the healthy version counts again: the last chunk is in the output.
    let ledger = work.ledger("out");
    assert_eq!(ledger.get("chunk13"), Some(&1), "log:\n{log}");
    let failed = log.lines().filter(|l| l.contains("batch failed") && l.contains("): trap:")).count();
    assert_eq!(failed, 2, "exactly the threshold of batches failed; log:\n{log}");
}

/// Runs the slow pipeline for `seconds`; returns each batch's scheduling delay (ms) and the
/// largest resident memory seen (MiB).
fn run_slow(backpressure: bool, max_rate: Option<u64>, seconds: u64) -> (Vec<u64>, u64, String) {
    let address = endless_server();
    let work = Workdir::new();
    work.add_plugin("faulty", "faulty");
    let pressure = if backpressure { "backpressure = true\n" } else { "" };
    let rate = max_rate.map(|r| format!("max_rate = {r}\n")).unwrap_or_default();
    work.write(
        "pipeline.toml",
        &format!(
            "[pipeline]\nname = \"slow\"\nbatch_interval = \"500ms\"\nblock_interval = \"100ms\"\n{pressure}\n\
             [plugins]\nfaulty = \"faulty.wasm\"\n\n\
             [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"{address}\"\n{rate}\n\
             [[stages]]\nname = \"slowly\"\ninput = \"lines\"\nop = \"map\"\nplugin = \"faulty\"\nfunction = \"slow\"\n\n\
             [[stages]]\nname = \"n\"\ninput = \"slowly\"\nop = \"count\"\n\n\
             [[sinks]]\nname = \"out\"\ninput = \"n\"\ntype = \"print\"\n"
        ),
    );
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let start = Instant::now();
    let mut max_rss = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        max_rss = max_rss.max(running.rss_mib());
        std::thread::sleep(Duration::from_millis(200));
    }
    (running.scheduling_delays(), max_rss, running.log())
}

#[test]
fn backpressure_bounds_memory_and_stops_the_scheduling_delay_growing() {
    let (delays, rss, log) = run_slow(true, Some(100_000), 24);
    println!("backpressure: scheduling delays {delays:?} ms, max RSS {rss} MiB");
    assert!(delays.len() >= 8, "log:\n{log}");
    let tail = &delays[delays.len() - 4..];
    assert!(tail.iter().all(|&d| d < 4_000), "the delay came down and stays low: {delays:?}");
    assert!(rss < 400, "resident memory stays below 400 MiB, was {rss} MiB");
    // Without backpressure the same input piles up in memory and the first batch alone takes
    // longer than the whole run.
    let (unbounded, unbounded_rss, _) = run_slow(false, None, 6);
    println!("no backpressure: scheduling delays {unbounded:?} ms, max RSS {unbounded_rss} MiB");
    assert!(unbounded_rss > 2 * rss, "without backpressure memory grows: {unbounded_rss} MiB vs {rss} MiB");
    // Backpressure without a starting rate: the first batch is slow, yet reading stops while
    // batches wait and at 64 MiB per batch, so memory stays bounded all the same.
    let (_, first_rss, log) = run_slow(true, None, 10);
    println!("backpressure without max_rate: max RSS {first_rss} MiB");
    assert!(first_rss < 700, "memory stays bounded, was {first_rss} MiB; log:\n{log}");
}
