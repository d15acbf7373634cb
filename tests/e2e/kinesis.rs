//! The Kinesis source against a real Kinesis API (kinesalite, installed by
//! scripts/setup-kinesis.sh), with records written by a third-party client (boto3,
//! tests/kinesis/client.py), through crashes, a shard split and a merge, throttling and expired
//! iterators (tests/kinesis/throttle.py in front of kinesalite), and an endpoint that is not
//! there yet.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::admin::free_port;
use crate::support::*;

/// The kinesalite command, installed once into the cache by the project's script.
fn kinesalite() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(repo().join("scripts/setup-kinesis.sh")).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "scripts/setup-kinesis.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// A kinesalite server on a loopback port, in memory, stopped on drop.
struct Kinesalite {
    endpoint: String,
    child: Child,
}

impl Kinesalite {
    fn start() -> Self {
        Self::on(free_port())
    }

    fn on(port: u16) -> Self {
        let child = Command::new(kinesalite())
            .args(["--port", &port.to_string(), "--createStreamMs", "0", "--deleteStreamMs", "0"])
            .args(["--updateStreamMs", "0", "--shardLimit", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kinesalite");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "kinesalite did not listen on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { endpoint: format!("http://127.0.0.1:{port}"), child }
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tests/kinesis/throttle.py in front of kinesalite, stopped on drop.
struct Throttler(Child);

impl Throttler {
    fn start(port: u16, upstream: &str, throttle_s: &str, every_s: &str, expired: &str) -> Self {
        let mut child = Command::new("python3")
            .arg(repo().join("tests/kinesis/throttle.py"))
            .args([&port.to_string(), upstream, throttle_s, every_s, expired])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut ready).unwrap();
        assert_eq!(ready.trim(), "ready");
        Self(child)
    }
}

impl Drop for Throttler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the test client; panics with its stderr if it fails.
fn client(args: &[&str]) -> String {
    let out = Command::new("python3").arg(repo().join("tests/kinesis/client.py")).args(args).output().unwrap();
    assert!(out.status.success(), "client.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Starts the test client writing `file` (a line a record), `pause_ms` after every `every`.
fn produce_in_background(endpoint: &str, stream: &str, file: &std::path::Path, pause_ms: u64, every: u64) -> Child {
    Command::new("python3")
        .arg(repo().join("tests/kinesis/client.py"))
        .args(["produce", endpoint, stream])
        .arg(file)
        .args([pause_ms.to_string(), every.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A work directory whose `sluice` runs have (dummy) AWS credentials, as kinesalite wants.
fn workdir() -> Workdir {
    let work = Workdir::new();
    work.set_env("AWS_ACCESS_KEY_ID", "test");
    work.set_env("AWS_SECRET_ACCESS_KEY", "test");
    work
}

/// A word count from Kinesis stream `lines` at `endpoint`, its counts to the file sink `out/`.
/// With checkpoints, one every 5 batches: a crash leaves batches that reached the sink but no
/// checkpoint, which the restart replays.
fn kinesis_wordcount(endpoint: &str, checkpoint: bool) -> String {
    format!(
        r#"[pipeline]
name = "kinesis-test"
batch_interval = "300ms"
block_interval = "100ms"
{checkpoint}

[plugins]
wordcount = "wordcount.wasm"

[[sources]]
name = "lines"
type = "kinesis"
stream = "lines"
region = "us-east-1"
endpoint = "{endpoint}"
discovery_interval = "500ms"
poll_interval = "100ms"

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
"#,
        checkpoint = if checkpoint { "checkpoint_dir = \"ckpt\"\ncheckpoint_every = 5" } else { "" },
    )
}

#[test]
fn kinesis_to_file_is_exactly_once_across_twenty_kill_9s_a_shard_split_and_a_merge() {
    let kinesis = Kinesalite::start();
    let k = kinesis.endpoint.clone();
    client(&["create", &k, "lines", "2"]);
    let work = workdir();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &kinesis_wordcount(&k, true));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(said.contains("path lines (kinesis) → out (file): exactly once"), "{said}");

    let lines = corpus(40_000, 6, 11);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    // About 20 s of input: it arrives while the engine is killed and restarted, and while the
    // stream is resharded.
    let producer = produce_in_background(&k, "lines", &input, 100, 200);
    let mut rng = Lcg::seeded();
    let (mut replayed, mut logs) = (0, String::new());
    let rounds = kills(20);
    for round in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        std::thread::sleep(Duration::from_millis(800 + rng.below(1_200)));
        match round {
            5 => println!("split {}", client(&["split", &k, "lines"]).trim()),
            11 => println!("merge {}", client(&["merge", &k, "lines"]).trim()),
            _ => {}
        }
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        replayed += replayed_with_records(&log);
        logs.push_str(&log);
    }
    assert!(replayed > 0, "the kills left no batch to replay: the test proves nothing");
    assert_eq!(acked(producer), lines.len() as u64);
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    wait_until("every word counted in out/", Duration::from_secs(90), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    logs.push_str(&log);
    assert_eq!(
        work.ledger("out"),
        expected,
        "Kinesis → file after {rounds} kill -9s, a split and a merge: exactly once"
    );
    println!("Kinesis → file after {rounds} kill -9s: {replayed} batches replayed");
    // The split's parent and the merge's parents were read to their end before their children.
    let shards = client(&["shards", &k, "lines"]);
    let closed: Vec<&str> =
        shards.lines().filter(|l| l.ends_with("CLOSED")).map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(closed.len(), 3, "{shards}");
    for shard in closed {
        assert!(
            logs.contains(&format!("shard read to its end (closed by a reshard) source=lines shard={shard}")),
            "{shard} not read to its end:\n{logs}"
        );
    }
}

#[test]
fn an_endpoint_not_there_yet_and_a_missing_stream_are_reported_and_retried() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let work = workdir();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &kinesis_wordcount(&endpoint, false));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("cannot list the shards of stream `lines`", Duration::from_secs(30));
    let kinesis = Kinesalite::on(port);
    running.wait_for("ResourceNotFoundException", Duration::from_secs(30));
    client(&["create", &kinesis.endpoint, "lines", "1"]);
    let lines = corpus(2_000, 5, 3);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    assert_eq!(acked(produce_in_background(&kinesis.endpoint, "lines", &input, 0, 1_000)), 2_000);
    let expected = count_words(&lines);
    wait_until("the words of the stream created later", Duration::from_secs(60), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
}

#[test]
fn throttling_and_expired_iterators_are_retried_counted_and_lose_nothing() {
    let kinesis = Kinesalite::start();
    client(&["create", &kinesis.endpoint, "lines", "2"]);
    let port = free_port();
    // Throttles every GetRecords call 2 s of every 5, expires every 7th iterator.
    let _proxy = Throttler::start(port, &kinesis.endpoint, "2", "5", "7");
    let work = workdir();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &kinesis_wordcount(&format!("http://127.0.0.1:{port}"), false));
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    let lines = corpus(10_000, 5, 5);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    assert_eq!(acked(produce_in_background(&kinesis.endpoint, "lines", &input, 50, 500)), 10_000);
    let expected = count_words(&lines);
    wait_until("every word counted", Duration::from_secs(90), || work.ledger("out") == expected);
    running.wait_for("throttled: ProvisionedThroughputExceededException", Duration::from_secs(30));
    running.wait_for("shard iterator expired", Duration::from_secs(30));
    // The receiver row (and so /metrics) takes the shards' figures at the next batch boundary:
    // a throttle logged a moment ago may not be counted there yet.
    let scrape = || ureq::get(&format!("http://{ui}/metrics")).call().unwrap().into_string().unwrap();
    let retried = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("sluice_source_shard_retries_total{source=\"lines\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    wait_until("retries counted in /metrics", Duration::from_secs(10), || retried(&scrape()) > 0.0);
    let metrics = scrape();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let behind = format!("sluice_source_shard_millis_behind{{source=\"lines\",shard=\"{shard}\"}}");
        assert!(metrics.contains(&behind), "{behind} missing:\n{metrics}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&ureq::get(&format!("http://{ui}/api/status")).call().unwrap().into_string().unwrap())
            .unwrap();
    let shards = status["sources"][0]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "{status}");
    assert!(shards.iter().all(|s| s["state"] == "reading"), "{status}");
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
}

#[test]
fn kinesis_config_mistakes_name_the_file_and_field() {
    let work = workdir();
    work.add_plugin("wordcount", "wordcount");
    let base = kinesis_wordcount("http://127.0.0.1:1", false);
    for (edit, field, expected) in [
        (("stream = \"lines\"", "stream = \"no spaces\""), "sources `lines`.stream", "expected a stream name"),
        (("endpoint = \"http://127.0.0.1:1\"", "endpoint = \"127.0.0.1:1\""), "sources `lines`.endpoint", "http://"),
        (("region = \"us-east-1\"", "region = \"Mars\""), "sources `lines`.region", "an AWS region"),
        (
            ("poll_interval = \"100ms\"", "poll_interval = \"100ms\"\nrecords_per_call = 20000"),
            "sources `lines`.records_per_call",
            "1 to 10000",
        ),
        (
            ("poll_interval = \"100ms\"", "poll_interval = \"100ms\"\ninitial_position = \"oldest\""),
            "sources",
            "\"trim_horizon\", \"latest\" or { at_timestamp",
        ),
        (("poll_interval = \"100ms\"", "poll_interval = \"100ms\"\nshard = \"x\""), "sources", "unknown field `shard`"),
    ] {
        work.write("pipeline.toml", &base.replace(edit.0, edit.1));
        let out = work.sluice(&["check", "pipeline.toml"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{edit:?} accepted");
        assert!(err.contains("pipeline.toml") && err.contains(field) && err.contains(expected), "{edit:?}: {err}");
    }
}

#[test]
fn kinesis_records_carry_the_partition_key_and_event_windows_use_the_arrival_time() {
    let kinesis = Kinesalite::start();
    let k = kinesis.endpoint.clone();
    client(&["create", &k, "clicks", "2"]);
    let work = workdir();
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
type = "kinesis"
stream = "clicks"
endpoint = "{k}"
format = "record"
initial_position = {{ at_timestamp = 0 }}

[[stages]]
name = "by_user"
input = "clicks"
op = "key_by"
plugin = "sessionize"
function = "kinesis_user"

[[stages]]
name = "per_minute"
input = "by_user"
op = "event_window"
window = "60s"
time_field = "arrival_timestamp"
allowed_lateness = "100s"

[[sinks]]
name = "out"
input = "per_minute"
type = "file"
path = "out"
"#
        ),
    );
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("stage by_user: (String, KinesisRecord)"),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let before = now_ms();
    client(&["clicks", &k, "clicks", "300", "5"]);
    let after = now_ms();
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let received = |log: &str| -> u64 {
        log.lines().filter_map(|l| l.split(" ms: ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum()
    };
    wait_until("the 300 clicks", Duration::from_secs(60), || received(&running.log()) == 300);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let windows: Vec<serde_json::Value> = work.batches("out").into_values().flatten().collect();
    let mut total = 0;
    for record in &windows {
        let (user, window) = (record[0].as_str().unwrap(), &record[1]);
        let (start, count) = (window[0].as_u64().unwrap(), window[2].as_u64().unwrap());
        assert!(["user0", "user1", "user2", "user3", "user4"].contains(&user), "{record}");
        assert!(start + 60_000 > before && start <= after, "window {start} is not at the arrival time: {record}");
        total += count;
    }
    assert_eq!(total, 300, "{windows:?}");
}
