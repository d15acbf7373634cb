//! Kafka → word count → PostgreSQL, exactly once under 30 `kill -9`s while confluent-kafka
//! produces: the running totals upserted and every batch's counts appended equal the reference
//! counts of everything the producer had acknowledged (its own log is the ledger).

use std::time::{Duration, Instant};

use crate::kafka::{Broker, client, produce_in_background};
use crate::postgres::Db;
use crate::support::*;

fn pipeline(brokers: &str, url: &str) -> String {
    format!(
        r#"[pipeline]
name = "kafka-pg"
batch_interval = "300ms"
block_interval = "100ms"
checkpoint_dir = "ckpt"
checkpoint_every = 4

[plugins]
wordcount = "wordcount.wasm"
top_k = "top_k.wasm"

[[sources]]
name = "lines"
type = "kafka"
brokers = "{brokers}"
topics = ["lines"]

[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "wordcount"
function = "split_words"

[[stages]]
name = "counts"
input = "words"
op = "reduce_by_key"
plugin = "wordcount"
function = "sum"

[[stages]]
name = "totals"
input = "counts"
op = "update_state_by_key"
plugin = "top_k"
function = "running_total"

[[sinks]]
name = "pg_totals"
input = "totals"
type = "postgres"
url = "{url}"
table = "totals"
mode = "upsert"
key = ["key"]
create_table = true

[[sinks]]
name = "pg_counts"
input = "counts"
type = "postgres"
url = "{url}"
table = "batch_counts"
create_table = true
"#
    )
}

#[test]
fn kafka_to_postgres_is_exactly_once_across_thirty_kill_9s() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "3"]);
    let db = Db::new("kafka");
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &pipeline(&b, &db.url));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("path lines (kafka) → pg_totals (postgres): exactly once"), "{said}");

    let lines = corpus(24_000, 6, 17);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    // About 24 s of input, while the engine is killed 30 times.
    let producer = produce_in_background(&b, "lines", &input, 100, 100);
    let mut rng = Lcg::seeded();
    let mut replayed = 0;
    let rounds = kills(30);
    for _ in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        // Killed a while after it runs (a start slowed by a loaded machine is not the window).
        running.wait_for("pipeline running", Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(400 + rng.below(900)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        replayed += replayed_with_records(&log);
    }
    assert_eq!(acked(producer), lines.len() as u64, "the producer's ledger");
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    let totals = "SELECT key, value FROM totals";
    let deadline = Instant::now() + Duration::from_secs(90);
    while db.counts(totals) != expected {
        assert!(Instant::now() < deadline, "totals never matched; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(db.counts(totals), expected, "upserted running totals after {rounds} kill -9s");
    let summed = db.counts("SELECT key, sum(value)::bigint FROM batch_counts GROUP BY key");
    assert_eq!(summed, expected, "appended per-batch counts: no batch twice, none lost");
    println!("Kafka → PostgreSQL, {rounds} kill -9s: {replayed} batches replayed, totals and appended counts exact");
    assert!(replayed > 0, "the kills left no batch to replay: the test proves nothing");
}
