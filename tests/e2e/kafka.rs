//! Kafka in and out against a real Kafka-API broker (tansu, built by scripts/setup-kafka.sh),
//! with records produced and read by a third-party client (confluent-kafka, tests/kafka/client.py).
//! What tansu cannot do — transactions — is proven against librdkafka's mock cluster in
//! `kafka_transactions.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::admin::free_port;
use crate::support::*;

/// The tansu binary, built once into the cache by the project's script.
fn tansu() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo().join("scripts/setup-kafka.sh")).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "scripts/setup-kafka.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// A tansu broker on a free loopback port, in memory, stopped on drop.
pub struct Broker {
    pub address: String,
    child: Child,
}

impl Broker {
    pub fn start() -> Self {
        Self::on(free_port())
    }

    /// A broker on `port` (a restart keeps the address; tansu in memory starts empty).
    pub fn on(port: u16) -> Self {
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(tansu())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .arg(format!("--listener-url=tcp://{address}"))
            .arg(format!("--advertised-listener-url=tcp://{address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { address, child }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the test client; panics with its stderr if it fails.
pub fn client(args: &[&str]) -> String {
    let out = Command::new("python3").arg(repo().join("tests/kafka/client.py")).args(args).output().unwrap();
    assert!(out.status.success(), "client.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts the test client producing `file` (a line a record), `pause_ms` after every `every`.
pub fn produce_in_background(brokers: &str, topic: &str, file: &std::path::Path, pause_ms: u64, every: u64) -> Child {
    Command::new("python3")
        .arg(repo().join("tests/kafka/client.py"))
        .args(["produce", brokers, topic])
        .arg(file)
        .args([pause_ms.to_string(), every.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A word count from Kafka topic `topic`, its counts to the file sink `out/` and `sink`.
/// With checkpoints, one every 5 batches: a crash leaves batches that reached the sinks but no
/// checkpoint, which the restart replays.
pub fn kafka_wordcount(brokers: &str, topic: &str, checkpoint: bool, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "kafka-test"
batch_interval = "300ms"
block_interval = "100ms"
{checkpoint}

[plugins]
wordcount = "wordcount.wasm"

[[sources]]
name = "lines"
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group_id = "wc"
discovery_interval = "500ms"

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

[[sinks]]
name = "out"
input = "counts"
type = "file"
path = "out"
{extra}"#,
        checkpoint = if checkpoint { "checkpoint_dir = \"ckpt\"\ncheckpoint_every = 5" } else { "" },
    )
}

/// Sums per word of the records a consumer read: key `"word"`, value `n`, both JSON.
pub fn count_values(records: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in records.lines() {
        let (key, value) = line.split_once('\t').unwrap_or_else(|| panic!("not KEY<tab>VALUE: {line}"));
        let word: String = serde_json::from_str(key).unwrap();
        *counts.entry(word).or_insert(0) += value.parse::<u64>().unwrap();
    }
    counts
}

#[test]
fn kafka_to_file_is_exactly_once_and_kafka_to_kafka_at_least_once_across_kill_9s() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "3"]);
    client(&["create", &b, "counts", "2"]);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let sink = format!(
        "\n[[sinks]]\nname = \"to_kafka\"\ninput = \"counts\"\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopic = \"counts\"\n"
    );
    work.write("pipeline.toml", &kafka_wordcount(&b, "lines", true, &sink));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(said.contains("path lines (kafka) → out (file): exactly once"), "{said}");
    assert!(said.contains("path lines (kafka) → to_kafka (kafka): at least once (the brokers"), "{said}");
    // Asked once here; the runs below need not ask at every restart.
    work.write("pipeline.toml", &kafka_wordcount(&b, "lines", true, &(sink + "delivery = \"at_least_once\"\n")));

    let lines = corpus(30_000, 6, 7);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    // About 15 s of input: it arrives while the engine is killed and restarted.
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let mut rng = Lcg::seeded();
    let mut replayed = 0;
    let rounds = kills(12);
    for _ in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        std::thread::sleep(Duration::from_millis(800 + rng.below(1_500)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        replayed += replayed_with_records(&log);
    }
    assert!(replayed > 0, "the kills left no batch to replay: the test proves nothing");
    assert_eq!(acked(producer), lines.len() as u64);
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    wait_until("every word counted in out/", Duration::from_secs(90), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let got = work.ledger("out");
    assert_eq!(got, expected, "Kafka → file after {rounds} kill -9s: exactly once");

    // Kafka → Kafka on tansu (no transactions): every record at least once.
    let values = client(&["consume", &b, "counts", "read_uncommitted", "3"]);
    let seen = count_values(&values);
    let lost: u64 = expected.iter().map(|(w, n)| n.saturating_sub(seen.get(w).copied().unwrap_or(0))).sum();
    let duplicated: u64 = seen.iter().map(|(w, n)| n.saturating_sub(expected.get(w).copied().unwrap_or(0))).sum();
    println!(
        "Kafka → Kafka on tansu after {rounds} kill -9s, {replayed} batches replayed: {lost} lost, {duplicated} duplicated words"
    );
    assert_eq!(lost, 0, "at least once: nothing lost");

    // The group's committed offsets follow the checkpoints: every record is behind them.
    let committed = client(&["offsets", &b, "wc", "lines"]);
    let total: i64 = committed.lines().map(|l| l.split_whitespace().nth(1).unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(total, lines.len() as i64, "committed offsets: {committed}");
}

#[test]
fn an_unreachable_broker_is_reported_and_retried_and_new_topics_of_a_pattern_are_read() {
    let port = free_port();
    let b = format!("127.0.0.1:{port}");
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let pipeline = kafka_wordcount(&b, "late", true, "").replace("topics = [\"late\"]", "topic_pattern = \"late.*\"");
    work.write("pipeline.toml", &pipeline);
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("cannot fetch the topics' metadata", Duration::from_secs(30));
    let broker = Broker::on(port);
    client(&["create", &b, "late", "2"]);
    let lines = corpus(2_000, 5, 3);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    assert_eq!(acked(produce_in_background(&b, "late", &input, 0, 1_000)), 2_000);
    let expected = count_words(&lines);
    wait_until("the words of the late topic", Duration::from_secs(60), || work.ledger("out") == expected);
    // A new topic matching the pattern (tansu 0.6 cannot add partitions to a topic: it answers
    // CreatePartitions "not supported"): its partitions are found and read from their beginning.
    client(&["create", &b, "late-2", "1"]);
    let more = corpus(3_000, 5, 4);
    let input = work.write("more.txt", &(more.join("\n") + "\n"));
    assert_eq!(acked(produce_in_background(&b, "late-2", &input, 0, 1_000)), 3_000);
    let mut expected = expected;
    for (w, n) in count_words(&more) {
        *expected.entry(w).or_insert(0) += n;
    }
    wait_until("the words of the new topic", Duration::from_secs(60), || work.ledger("out") == expected);
    assert!(running.log().contains("reading partitions late-2/0"), "log:\n{}", running.log());
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    broker.stop();
}

/// The last line of the Kafka source's table in [`kafka_wordcount`]: a sub-table goes after it.
const PROPERTIES: &str = "discovery_interval = \"500ms\"";

#[test]
fn kafka_config_mistakes_name_the_file_and_field() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let base = kafka_wordcount("127.0.0.1:1", "t", false, "");
    for (edit, field, expected) in [
        (
            ("topics = [\"t\"]", "topics = [\"t\"]\ntopic_pattern = \"t.*\""),
            "sources `lines`.topic_pattern",
            "not both",
        ),
        (
            (PROPERTIES, "discovery_interval = \"500ms\"\n[sources.properties]\n\"group.id\" = \"x\""),
            "sources `lines`.properties.group.id",
            "set by `group_id`",
        ),
        (
            (PROPERTIES, "discovery_interval = \"500ms\"\n[sources.properties]\n\"fetch.nonsense\" = \"1\""),
            "sources `lines`.properties",
            "fetch.nonsense",
        ),
        (
            ("group_id = \"wc\"", "group_id = \"wc\"\nmax_rate_per_partition = 0"),
            "sources `lines`.max_rate_per_partition",
            "at least 1",
        ),
        (("group_id = \"wc\"", "group_id = \"wc\"\nstarting_offsets = \"middle\""), "sources", "starting_offsets"),
    ] {
        work.write("pipeline.toml", &base.replace(edit.0, edit.1));
        let out = work.sluice(&["check", "pipeline.toml"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{edit:?} accepted");
        assert!(err.contains("pipeline.toml") && err.contains(field) && err.contains(expected), "{edit:?}: {err}");
    }
}

#[test]
fn a_missing_topic_is_reported_on_the_receiver_row_until_it_exists() {
    let broker = Broker::start();
    let b = broker.address.clone();
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &kafka_wordcount(&b, "later", false, ""));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("topic `later` does not exist (yet)", Duration::from_secs(30));
    client(&["create", &b, "later", "1"]);
    let lines = corpus(500, 4, 9);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    assert_eq!(acked(produce_in_background(&b, "later", &input, 0, 1_000)), 500);
    let expected = count_words(&lines);
    wait_until("the words of the topic created later", Duration::from_secs(60), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
}

/// A TCP proxy in front of a broker that can be cut (every connection dropped, new ones
/// refused) and restored: a broker outage without losing the broker's in-memory data.
struct Proxy {
    address: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(port: u16, upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_cut, conns) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                let mut conns = conns.lock().unwrap();
                conns.push(client.try_clone().unwrap());
                conns.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { address: format!("127.0.0.1:{port}"), cut, open }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for conn in self.open.lock().unwrap().drain(..) {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_broker_outage_mid_stream_is_reported_and_every_record_counted_once_after() {
    let (broker_port, proxy_port) = (free_port(), free_port());
    let proxy = Proxy::start(proxy_port, format!("127.0.0.1:{broker_port}"));
    let child = Command::new(tansu())
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .arg(format!("--listener-url=tcp://127.0.0.1:{broker_port}"))
        .arg(format!("--advertised-listener-url=tcp://{}", proxy.address))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _broker = Broker { address: proxy.address.clone(), child };
    let b = proxy.address.clone();
    wait_until("the broker", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_ok()
    });
    client(&["create", &b, "lines", "2"]);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &kafka_wordcount(&b, "lines", true, ""));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("reading partitions", Duration::from_secs(30));
    let lines = corpus(12_000, 5, 21);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    std::thread::sleep(Duration::from_secs(2));
    proxy.set_cut(true);
    running.wait_for("kafka: ", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(4));
    proxy.set_cut(false);
    assert_eq!(acked(producer), lines.len() as u64);
    wait_until("every word counted after the outage", Duration::from_secs(90), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(work.ledger("out"), expected, "exactly once across the outage");
}

#[test]
fn a_second_pipeline_committing_with_the_same_group_id_is_refused_at_start() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "shared", "1"]);
    let lines = corpus(1_000, 4, 5);
    let input_a = Workdir::new();
    let input = input_a.write("input.txt", &(lines.join("\n") + "\n"));
    // Pipeline A reads the first half and checkpoints it.
    let a = Workdir::new();
    a.add_plugin("wordcount", "wordcount");
    a.write("pipeline.toml", &kafka_wordcount(&b, "shared", true, ""));
    assert_eq!(acked(produce_in_background(&b, "shared", &input, 0, 1_000)), 1_000);
    let running = a.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("A's counts", Duration::from_secs(60), || a.ledger("out") == count_words(&lines));
    running.signal("TERM");
    assert_eq!(running.finish(Duration::from_secs(30)).0, 0);
    // Pipeline B, same group id, no checkpoint, reads what came since and commits past A.
    assert_eq!(acked(produce_in_background(&b, "shared", &input, 0, 1_000)), 1_000);
    let other = Workdir::new();
    other.add_plugin("wordcount", "wordcount");
    other.write("pipeline.toml", &kafka_wordcount(&b, "shared", false, "").replace("kafka-test", "another"));
    let running = other.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("B's counts", Duration::from_secs(60), || other.ledger("out") == count_words(&lines));
    std::thread::sleep(Duration::from_secs(1));
    running.signal("TERM");
    assert_eq!(running.finish(Duration::from_secs(30)).0, 0);
    // A again: the group's offsets are past its checkpoint, so another consumer uses the group.
    let (code, log) = a.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(30));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(
        log.contains(
            "consumer group `wc` has offset 2000 committed for shared/0, past this pipeline's checkpoint (1000)"
        ),
        "log:\n{log}"
    );
}

#[test]
fn kafka_records_carry_key_and_timestamp_and_event_windows_use_the_timestamp_without_a_function() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "clicks", "2"]);
    // 100 clicks of 5 users, one a second of event time from a fixed past moment.
    let base: u64 = 1_700_000_000_000;
    client(&["clicks", &b, "clicks", "100", "5", &base.to_string()]);
    let work = Workdir::new();
    work.add_plugin("sessionize", "sessionize");
    work.write(
        "pipeline.toml",
        &format!(
            r#"[pipeline]
name = "clicks"
batch_interval = "300ms"
block_interval = "100ms"

[plugins]
sessionize = "sessionize.wasm"

[[sources]]
name = "clicks"
type = "kafka"
brokers = "{b}"
topics = ["clicks"]
format = "record"

[[stages]]
name = "by_user"
input = "clicks"
op = "key_by"
plugin = "sessionize"
function = "kafka_user"

[[stages]]
name = "per_10s"
input = "by_user"
op = "event_window"
window = "10s"
time_field = "timestamp"
# The partitions arrive in different batches: the watermark waits for the slower one.
allowed_lateness = "100s"

[[sinks]]
name = "out"
input = "per_10s"
type = "file"
path = "out"
"#
        ),
    );
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.contains("stage by_user: (String, KafkaRecord)"), "{said}{}", String::from_utf8_lossy(&check.stderr));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let windows = || -> Vec<(String, u64, u64, u64)> {
        work.batches("out")
            .into_values()
            .flatten()
            .map(|r| {
                let w = &r[1];
                (
                    r[0].as_str().unwrap().to_string(),
                    w[0].as_u64().unwrap(),
                    w[1].as_u64().unwrap(),
                    w[2].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let received = |log: &str| -> u64 {
        log.lines().filter_map(|l| l.split(" ms: ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum()
    };
    wait_until("the 100 clicks", Duration::from_secs(60), || received(&running.log()) == 100);
    assert!(windows().is_empty(), "no window closes within the allowed lateness: {:?}", windows());
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let got = windows();
    assert_eq!(got.len(), 50, "every window closes at the stop: {got:?}");
    for (user, start, end, count) in &got {
        assert!(user.starts_with("user"), "{user}");
        assert_eq!((start % 10_000, end - start, *count), (0, 10_000, 2), "{user} {start}: event time, 2 clicks");
        assert!((base..base + 100_000).contains(start), "window {start} is in event time, not batch time");
    }
}

#[test]
fn each_partitions_offset_and_lag_are_in_metrics_and_the_receiver_row() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lagged", "2"]);
    let lines = corpus(4_000, 4, 2);
    let work = Workdir::new();
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    assert_eq!(acked(produce_in_background(&b, "lagged", &input, 0, 1_000)), 4_000);
    work.add_plugin("wordcount", "wordcount");
    // Read at most 500 records/s per partition: the lag shows, then shrinks.
    let text = kafka_wordcount(&b, "lagged", false, "")
        .replace(PROPERTIES, &format!("{PROPERTIES}\nmax_rate_per_partition = 500"));
    work.write("pipeline.toml", &text);
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    let lag = || -> BTreeMap<String, f64> {
        let (_, text) = crate::admin::get(&ui, "/metrics", None);
        let scrape = crate::admin::parse_prometheus(&text);
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "sluice_source_partition_lag_records")
            .map(|s| {
                let value = match s.value {
                    prometheus_parse::Value::Gauge(v) => v,
                    _ => panic!("a gauge"),
                };
                (format!("{}/{}", s.labels.get("topic").unwrap(), s.labels.get("partition").unwrap()), value)
            })
            .collect()
    };
    wait_until("both partitions' lag in /metrics", Duration::from_secs(30), || {
        let lag = lag();
        lag.len() == 2 && lag.values().sum::<f64>() > 0.0
    });
    let first: f64 = lag().values().sum();
    assert!(first <= 4_000.0, "lag {first}");
    let (_, status) = crate::admin::get(&ui, "/api/status", None);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let partitions = status["sources"][0]["partitions"].as_array().unwrap().clone();
    assert_eq!(partitions.len(), 2, "{status}");
    assert!(partitions.iter().all(|p| p["topic"] == "lagged" && p["high_watermark"].as_i64().is_some()), "{status}");
    wait_until("the lag to shrink", Duration::from_secs(30), || lag().values().sum::<f64>() < first);
    running.signal("TERM");
    assert_eq!(running.finish(Duration::from_secs(30)).0, 0);
}

/// A word count of `topic` (one partition, `records` records `w<i>` produced in batches of 100)
/// with `source` added to its source's settings: every record from `first` on counted once.
fn batched_records_count_once(topic: &str, records: u64, source: &str, first: u64) {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, topic, "1"]);
    let acked = client(&["batches", &b, topic, &records.to_string(), "100"]);
    assert_eq!(acked.trim(), format!("acked {records}"));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let text = kafka_wordcount(&b, topic, false, "").replace(PROPERTIES, &format!("{PROPERTIES}\n{source}"));
    work.write("pipeline.toml", &text);
    let expected: BTreeMap<String, u64> = (first..records).map(|i| (format!("w{i}"), 1)).collect();
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("every record counted", Duration::from_secs(30), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(work.ledger("out"), expected, "from offset {first} on, each record once");
}

/// A source that starts inside a record batch reads the rest of that batch: tansu answers a
/// fetch from the middle of a batch with the batches after it (a Kafka broker would send the
/// batch itself), so the source probes back for it (`sources/kafka/probe.rs`). The same start
/// happens to a cluster member taking over a partition and to every replay of a logged range.
#[test]
fn a_source_starting_inside_a_record_batch_reads_the_rest_of_that_batch() {
    // Three batches of 100 records, w0..w299; the source starts at 150, the middle of the second.
    batched_records_count_once("batched", 300, "starting_offsets = { \"batched\" = { \"0\" = 150 } }", 150);
}

/// A partition paused at its share of a batch resumes inside a record batch (librdkafka reads
/// on from the record after the last one it gave): the probe finds the rest of that batch there
/// too. Batches of 100 records, a share of 150 a batch.
#[test]
fn a_partition_resumed_inside_a_record_batch_after_its_share_reads_the_rest_of_it() {
    // 500 records/s of a 300 ms batch: 150 a batch.
    batched_records_count_once("capped", 600, "max_rate_per_partition = 500", 0);
}
