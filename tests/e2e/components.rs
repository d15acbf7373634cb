//! ABI 2 plugins (WebAssembly components, `sdk/wit/sluice.wit`): served like ABI 1 modules,
//! hot-swapped to and from them with the ledger exact, and refused at load when they break the
//! contract (another major version, no `functions` export, an import the host does not give).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_component_counts_words_exactly_like_its_module_twin() {
    let lines = corpus(30_000, 8, 5);
    let server = LineServer::lines(&lines);
    let work = Workdir::new();
    work.add_plugin("wordcount-abi2", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}");
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(90));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(work.ledger("out"), count_words(&lines), "log:\n{log}");
}

/// Module (lower case) → component (upper case) → module (lower case) → component (upper
/// case), under load.
#[test]
fn swaps_between_a_module_and_components_keep_the_ledger_exact() {
    let (server, expected) = paced(200, 1_000, Duration::from_millis(50), 17);
    let work = Workdir::new();
    let file = work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("records out", Duration::from_secs(30));
    let swaps = |running: &Running| running.log().matches("plugin swapped").count();
    for (n, next) in [(1, "uppercase-abi2"), (2, "wordcount"), (3, "uppercase-abi2")] {
        std::fs::write(&file, std::fs::read(plugin(next)).unwrap()).unwrap();
        let started = Instant::now();
        while swaps(&running) < n {
            assert!(started.elapsed() < Duration::from_secs(30), "no swap to {next}; log:\n{}", running.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(1)); // a few batches by it
    }
    let (code, log) = running.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();
    // Batches by one version each: lower, upper, lower, upper.
    let cases: Vec<bool> = work
        .batches("out")
        .values()
        .map(|records| {
            let upper = records.iter().filter(|r| r[0].as_str().unwrap().starts_with('W')).count();
            assert!(upper == 0 || upper == records.len(), "a batch mixes versions");
            upper > 0
        })
        .collect();
    let runs: Vec<bool> = cases.iter().copied().fold(Vec::new(), |mut runs, upper| {
        if runs.last() != Some(&upper) {
            runs.push(upper);
        }
        runs
    });
    assert_eq!(runs, [false, true, false, true], "module, component, module, component");
    let mut folded = BTreeMap::new();
    for (word, count) in work.ledger("out") {
        *folded.entry(word.to_lowercase()).or_insert(0) += count;
    }
    assert_eq!(folded, expected, "no word lost or counted twice across three swaps; log:\n{log}");
}

/// `sluice check` on a pipeline whose plugin is the component `wat`: its stderr.
fn check_component(wat: &str) -> String {
    let work = Workdir::new();
    std::fs::write(work.path("odd.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    work.write("pipeline.toml", &wordcount_pipeline("127.0.0.1:9", "odd.wasm", "300ms", "100ms"));
    let out = work.sluice(&["check", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(1), "refused");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn components_that_break_the_contract_are_refused_naming_what_is_wrong() {
    let said = check_component(r#"(component (import "wasi:filesystem/preopens@0.2.0" (instance)))"#);
    assert!(said.contains("bad_abi") && said.contains("import `wasi:filesystem/preopens@0.2.0`"), "{said}");
    assert!(said.contains("(no files or sockets)"), "{said}");
    let said = check_component(r#"(component (import "wasi:clocks/wall-clock@0.2.0" (instance)))"#);
    assert!(said.contains("import `wasi:clocks/wall-clock@0.2.0`"), "{said}");
    let said = check_component(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#);
    assert!(said.contains("import `wasi:sockets/tcp@0.2.0`"), "{said}");

    let said = check_component(r#"(component (instance $i) (export "sluice:plugin/functions@3.0.0" (instance $i)))"#);
    assert!(said.contains("plugin ABI version 3") && said.contains("version 2"), "{said}");

    let said = check_component("(component)");
    assert!(said.contains("export `sluice:plugin/functions`") && said.contains("missing"), "{said}");

    // The right name, not the right shape: no `describe` or `call` in it.
    let said = check_component(r#"(component (instance $i) (export "sluice:plugin/functions@2.0.0" (instance $i)))"#);
    assert!(said.contains("bad_abi") && said.contains("does not have export `describe`"), "{said}");
}

/// A guest built by `scripts/build-<lang>-plugins.sh` (run by `scripts/test.sh`).
fn guest(name: &str) -> std::path::PathBuf {
    let path = plugins().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-python-plugins.sh and scripts/build-js-plugins.sh",
        path.display()
    );
    path
}

/// The Python and JavaScript word counts (`plugins/wordcount-py`, `plugins/wordcount-js`)
/// count exactly as the Rust one, and swap with it (same functions, same types) under load:
/// Rust → guest → Rust, no word lost or counted twice.
#[test]
fn python_and_javascript_word_counts_count_exactly_and_swap_with_the_rust_one() {
    for name in ["wordcount-py", "wordcount-js"] {
        let (server, expected) = paced(120, 500, Duration::from_millis(50), 23);
        let work = Workdir::new();
        // Compiled once here (a Python component takes ~15 s), from the cache at the swap.
        std::fs::copy(guest(name), work.path("guest.wasm")).unwrap();
        work.write("warm.toml", &wordcount_pipeline(&server.address, "guest.wasm", "300ms", "100ms"));
        let check = work.sluice(&["check", "warm.toml"]);
        assert!(check.status.success(), "{name}: {}", String::from_utf8_lossy(&check.stderr));
        let file = work.add_plugin("wordcount", "wordcount");
        work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
        let running = work.spawn(&["pipeline.toml"]);
        running.wait_for("records out", Duration::from_secs(30));
        let swaps = |running: &Running| running.log().matches("plugin swapped").count();
        for (n, next) in [(1, guest(name)), (2, plugin("wordcount"))] {
            std::fs::write(&file, std::fs::read(&next).unwrap()).unwrap();
            let started = Instant::now();
            while swaps(&running) < n {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no swap to {}; log:\n{}",
                    next.display(),
                    running.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_secs(1)); // a few batches by it
        }
        let (code, log) = running.finish(Duration::from_secs(60));
        assert_eq!(code, 0, "{name}: log:\n{log}");
        server.join();
        let versions: Vec<&str> = log.lines().filter(|l| l.contains("plugin swapped")).collect();
        assert_eq!(versions.len(), 2, "{name}: two swaps: {versions:#?}");
        assert_eq!(work.ledger("out"), expected, "{name}: no word lost or counted twice across the swaps; log:\n{log}");
    }
}

/// A pipeline's `[capabilities]`: a component that reads the clock is refused without
/// `clocks`, naming the import and how to allow it; with it, its stamps are the host's time.
/// Its random numbers come from a fixed seed (the same in every run) unless `random` is given.
#[test]
fn capabilities_give_a_component_the_clock_and_real_random_only_where_the_pipeline_says() {
    let work = Workdir::new();
    work.add_plugin("clock-abi2", "clock");
    let pipeline = |capabilities: &str| {
        let stage = |name: &str, function: &str| {
            format!(
                "[[stages]]\nname = \"{name}\"\ninput = \"lines\"\nop = \"map\"\nplugin = \"clock\"\nfunction = \"{function}\"\n\n[[sinks]]\nname = \"{name}_out\"\ninput = \"{name}\"\ntype = \"file\"\npath = \"{name}\"\n\n"
            )
        };
        format!(
            "[pipeline]\nname = \"capabilities\"\n\n[plugins]\nclock = \"clock.wasm\"\n\n{capabilities}\n\n[[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n\n{}{}",
            stage("stamped", "stamp"),
            stage("drawn", "draw")
        )
    };
    let refused = |capabilities: &str| {
        work.write("pipeline.toml", &pipeline(capabilities));
        let check = work.sluice(&["check", "pipeline.toml"]);
        assert!(!check.status.success(), "{capabilities}");
        String::from_utf8_lossy(&check.stderr).to_string()
    };
    let said = refused("");
    assert!(said.contains("plugins.clock") && said.contains("import `wasi:clocks/"), "{said}");
    assert!(said.contains("to allow it: `[capabilities]` `clock = [\"clocks\"]`"), "{said}");
    let said = refused("[capabilities]\nclock = [\"time\"]");
    assert!(
        said.contains("clock = [\"time\"]") && said.contains("unknown variant `time`, expected `clocks` or `random`"),
        "{said}"
    );
    // On an ABI 1 module, or a component that does not import them (a Python one, with WASI
    // stubbed), they do nothing, which `check` says; not for the component that uses them.
    let module = work.add_plugin("clock", "module");
    std::fs::copy(guest("wordcount-py"), work.path("py.wasm")).unwrap();
    let text = pipeline("[capabilities]\nclock = [\"clocks\", \"random\"]\nmodule = [\"clocks\"]\npy = [\"random\"]")
        .replace("[plugins]\n", "[plugins]\nmodule = \"module.wasm\"\npy = \"py.wasm\"\n");
    work.write("pipeline.toml", &text);
    let check = work.sluice(&["check", "pipeline.toml"]);
    let warned = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(check.status.success(), "{warned}");
    assert!(warned.contains("capabilities.module: `module` is an ABI 1 module, which gets no WASI"), "{warned}");
    assert!(warned.contains("capabilities.py: `py` imports no wasi:random/*"), "{warned}");
    assert!(warned.contains("`random` does nothing until a version that imports it serves"), "{warned}");
    assert!(!warned.contains("capabilities.clock"), "{warned}");
    assert!(module.is_file());
    let said = refused("[capabilities]\nclock = [\"clocks\"]\nother = [\"random\"]");
    assert!(said.contains("capabilities.other: no plugin `other` in [plugins]"), "{said}");

    work.write("in.txt", "a\nb\nc\n");
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // The records each sink got in a `sluice test` run with `capabilities`.
    let run = |capabilities: &str| -> (Vec<u64>, Vec<u64>) {
        work.write("pipeline.toml", &pipeline(capabilities));
        let test = work.sluice(&["test", "pipeline.toml", "--input", "lines=in.txt", "--expect", "got", "--bless"]);
        assert!(test.status.success(), "{}", String::from_utf8_lossy(&test.stderr));
        let records = |sink: &str| -> Vec<String> {
            let text = std::fs::read_to_string(work.path(&format!("got/{sink}.jsonl"))).unwrap();
            text.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
        };
        let stamps =
            records("stamped_out").iter().map(|l| serde_json::from_str::<(String, u64)>(l).unwrap().1).collect();
        let draws = records("drawn_out").iter().map(|l| serde_json::from_str::<u64>(l).unwrap()).collect();
        (stamps, draws)
    };
    let before = now_ms();
    let (stamps, seeded) = run("[capabilities]\nclock = [\"clocks\"]");
    let after = now_ms();
    assert_eq!(stamps.len(), 3);
    assert!(stamps.iter().all(|t| (before..=after).contains(t)), "{stamps:?} within {before}..={after}");
    assert_eq!(seeded.len(), 3);
    assert_eq!(
        run("[capabilities]\nclock = [\"clocks\"]").1,
        seeded,
        "without `random`: the fixed seed, run after run"
    );
    let random = run("[capabilities]\nclock = [\"clocks\", \"random\"]").1;
    let again = run("[capabilities]\nclock = [\"clocks\", \"random\"]").1;
    assert!(random != seeded && random != again, "with `random`, the host's entropy: {seeded:?} {random:?} {again:?}");
}
