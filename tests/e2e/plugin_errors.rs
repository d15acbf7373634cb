//! A plugin that traps, loops or eats memory fails only the batch it was running, with its error
//! classified; the engine keeps running and the next batches are counted.

use std::time::Duration;

use crate::support::*;

/// Runs word count with the `faulty` plugin over three bursts sent 1.5 s apart, the middle one
/// holding `trigger`; returns the exit code, the log and the ledger, and the reference counts
/// of the first and last bursts.
fn run_with_trigger(trigger: &str, extra_args: &[&str]) -> (i32, String, bool) {
    let before = corpus(3_000, 10, 3);
    let after = corpus(3_000, 10, 4);
    let middle = vec![format!("some words then {trigger} here")];
    let feed = vec![join_lines(&before), join_lines(&middle), join_lines(&after)];
    let server = LineServer::start(Feed::Paced(feed, Duration::from_millis(1_500)));
    let work = Workdir::new();
    work.add_plugin("faulty", "faulty");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "faulty.wasm", "300ms", "100ms"));
    let mut args = vec!["pipeline.toml"];
    args.extend_from_slice(extra_args);
    let (code, log) = work.spawn(&args).finish(Duration::from_secs(60));
    let mut expected = count_words(&before);
    for (word, count) in count_words(&after) {
        *expected.entry(word).or_insert(0) += count;
    }
    (code, log, work.ledger("out") == expected)
}

#[test]
fn a_panic_fails_its_batch_with_class_trap_and_the_engine_goes_on() {
    let (code, log, exact) = run_with_trigger("panic!", &[]);
    assert_eq!(code, 0, "log:\n{log}");
    assert!(log.contains("class=trap"), "log:\n{log}");
    assert!(log.contains("asked to panic by line"), "the guest's panic message is reported; log:\n{log}");
    assert!(log.contains("failed_batches=1"), "log:\n{log}");
    assert!(exact, "the batches before and after were counted exactly; log:\n{log}");
}

#[test]
fn an_endless_loop_hits_the_deadline_and_the_engine_goes_on() {
    let (code, log, exact) = run_with_trigger("loop!", &["--call-timeout", "300ms"]);
    assert_eq!(code, 0, "log:\n{log}");
    assert!(log.contains("class=deadline"), "log:\n{log}");
    assert!(log.contains("the call ran longer than 300ms"), "log:\n{log}");
    assert!(exact, "log:\n{log}");
}

#[test]
fn a_memory_bomb_hits_the_cap_and_the_engine_goes_on() {
    let (code, log, exact) = run_with_trigger("oom!", &["--memory-limit-mib", "128"]);
    assert_eq!(code, 0, "log:\n{log}");
    assert!(log.contains("class=memory_limit"), "log:\n{log}");
    assert!(log.contains("the cap is 134217728 bytes"), "log:\n{log}");
    assert!(exact, "log:\n{log}");
}
