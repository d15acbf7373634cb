//! The transactional Kafka sink, proven against the one transactional broker this machine can
//! run: librdkafka's mock cluster (`rdkafka::mocking`), hosted by this test process on loopback.
//! tansu 0.6 answers `EndTxn` with "not supported" (see `kafka.rs`); no JVM broker can be
//! installed here. Input is produced and output read by confluent-kafka (tests/kafka/client.py).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;

use crate::kafka::{client, count_values, kafka_wordcount, produce_in_background};
use crate::support::*;

#[test]
fn kafka_to_kafka_is_exactly_once_for_a_read_committed_consumer_across_kill_9s() {
    let cluster = MockCluster::new(3).unwrap();
    let b = cluster.bootstrap_servers();
    cluster.create_topic("lines", 2, 1).unwrap();
    cluster.create_topic("counts", 2, 1).unwrap();
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let sink = format!(
        "\n[[sinks]]\nname = \"to_kafka\"\ninput = \"counts\"\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopic = \"counts\"\n"
    );
    work.write("pipeline.toml", &kafka_wordcount(&b, "lines", true, &sink));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(said.contains("path lines (kafka) → to_kafka (kafka): exactly once"), "{said}");

    let lines = corpus(20_000, 6, 11);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let mut rng = Lcg::seeded();
    let (mut replayed, mut skipped) = (0, 0);
    let rounds = kills(10);
    for _ in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        // Killed a while into its run, not during a start slowed by a loaded machine (which
        // leaves nothing logged to replay).
        running.wait_for("pipeline running", Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1_000 + rng.below(1_500)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        replayed += replayed_with_records(&log);
        skipped += log.matches("is already in the topic: not written again").count();
    }
    println!(
        "mock cluster, {rounds} kill -9s: {replayed} batches replayed, {skipped} of them found in the topic and skipped"
    );
    assert!(skipped > 0, "no replayed batch was already in the topic: the test proves nothing");
    assert_eq!(acked(producer), lines.len() as u64);
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(90);
    while work.ledger("out") != expected {
        assert!(Instant::now() < deadline, "not every word counted; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");

    let committed = client(&["consume", &b, "counts", "read_committed", "4"]);
    let seen: BTreeMap<String, u64> = count_values(&committed);
    assert_eq!(seen, expected, "what a read_committed consumer sees after {rounds} kill -9s: every word exactly once");
}
