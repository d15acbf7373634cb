//! SIGTERM and SIGINT: stop receiving, finish the batches already received, flush, exit 0.

use std::time::Duration;

use crate::support::*;

fn drains_on(signal: &str) {
    let lines = corpus(50_000, 10, 5);
    let expected = count_words(&lines);
    // The server keeps the connection open: only the signal can end this run.
    let server = LineServer::start(Feed::HoldOpen(join_lines(&lines)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    // Long batches, so the signal arrives while received records wait for their batch.
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "5s", "100ms"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("connected", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    running.signal(signal);
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(log.contains("stopping"), "log:\n{log}");
    assert_eq!(work.ledger("out"), expected, "every received record was processed before exit");
    server.join();
}

#[test]
fn sigterm_drains_received_records_and_exits_0() {
    drains_on("TERM");
}

#[test]
fn sigint_drains_received_records_and_exits_0() {
    drains_on("INT");
}
