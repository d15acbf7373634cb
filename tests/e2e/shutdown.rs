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

/// A source held back by `max_rate`, or paused, still stops on SIGTERM: the signal must not be
/// lost while it waits.
#[test]
fn sigterm_stops_a_rate_limited_or_paused_source() {
    for paused in [false, true] {
        let lines = corpus(200_000, 4, 6);
        let server = LineServer::start(Feed::HoldOpen(join_lines(&lines)));
        let work = Workdir::new();
        work.add_plugin("wordcount", "wordcount");
        let pipeline = wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms")
            .replace("type = \"socket\"", "type = \"socket\"\nmax_rate = 500");
        work.write("pipeline.toml", &pipeline);
        let ui = format!("127.0.0.1:{}", crate::admin::free_port());
        let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
        running.wait_for("records out", Duration::from_secs(20));
        if paused {
            let out = work.sluice(&["pause", "lines", "--ui", &ui]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            running.wait_for("source paused", Duration::from_secs(10));
        }
        let started = std::time::Instant::now();
        running.signal("TERM");
        let (code, log) = running.finish(Duration::from_secs(15));
        assert_eq!(code, 0, "log:\n{log}");
        assert!(started.elapsed() < Duration::from_secs(5), "stopped in {:?} (paused: {paused})", started.elapsed());
        // Held to 500 records/s: nowhere near the 200,000 lines the server had ready.
        let received: u64 = work.ledger("out").values().sum::<u64>() / 4;
        assert!(received < 20_000, "{received} lines read under max_rate = 500");
        server.join();
    }
}
