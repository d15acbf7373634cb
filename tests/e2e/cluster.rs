//! One pipeline on several `sluice` processes (`[cluster]`): the members share a Kafka topic's
//! partitions through a consumer group on a real broker (tansu), keep each partition's batch
//! log in a checkpoint store (a shared directory, or S3 on moto's server), and write each
//! partition's output under its own name. Records come from confluent-kafka; what the
//! PostgreSQL sink wrote is read back with psql.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::admin::get;
use crate::kafka::{Broker, client, produce_in_background};
use crate::support::*;

/// Words from `flat_map` to a file sink, as a cluster in group `group` with store `store`.
fn cluster_pipeline(brokers: &str, store: &str, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "cluster-test"
batch_interval = "300ms"
block_interval = "100ms"

[plugins]
wordcount = "wordcount.wasm"

[cluster]
group_id = "cluster-test"
checkpoint_store = "{store}"
session_timeout = "3s"
{extra}

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

[[sinks]]
name = "out"
input = "words"
type = "file"
path = "out"
"#
    )
}

/// Every word in every committed file of `out/` (a `[word, 1]` record a line), counted.
fn word_ledger(work: &Workdir) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(work.path("out")) else { return counts };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue; // a batch being written
        }
        assert!(name.starts_with("batch-") && name.contains("-lines-"), "unexpected file {name}");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            // `split_words` emits `(word, 1)`.
            let pair: (String, u64) = serde_json::from_str(line).unwrap();
            *counts.entry(pair.0).or_insert(0) += pair.1;
        }
    }
    counts
}

/// Words lost and words written more than once, against `expected`.
fn lost_and_duplicated(expected: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> (u64, u64) {
    let lost = expected.iter().map(|(w, n)| n.saturating_sub(got.get(w).copied().unwrap_or(0))).sum();
    let dup = got.iter().map(|(w, n)| n.saturating_sub(expected.get(w).copied().unwrap_or(0))).sum();
    (lost, dup)
}

/// Stops every member gracefully (TERM), each exiting 0; returns their logs, each line marked
/// with the member's place in `members` (`[m0] ...`).
fn stop_all(members: Vec<Running>) -> String {
    for member in &members {
        member.signal("TERM");
    }
    let mut logs = String::new();
    for (i, member) in members.into_iter().enumerate() {
        let (code, log) = member.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "log:\n{log}");
        for line in log.lines() {
            logs.push_str(&format!("[m{i}] {line}\n"));
        }
    }
    logs
}

/// What explains a ledger that is off: the members' warnings and errors, the partitions they
/// gained and lost, the entries they replayed (at most 300 lines).
fn notable(logs: &str) -> String {
    let wanted = ["WARN", "ERROR", "gained partition", "lost partition", "replaying entry"];
    let lines: Vec<&str> = logs.lines().filter(|l| wanted.iter().any(|w| l.contains(w))).collect();
    let skipped = lines.len().saturating_sub(300);
    format!(
        "{} notable log lines{}:\n{}",
        lines.len(),
        if skipped > 0 { ", the last 300" } else { "" },
        lines[skipped..].join("\n")
    )
}

/// Waits up to 90 s for the output to hold every word of the input (the members catch up); the
/// caller compares once the members stopped, with their logs at hand.
fn settle(work: &Workdir, expected: &BTreeMap<String, u64>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while word_ledger(work) != *expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Which of `pids` has a log entry in the store that is not done yet (it logged a batch and
/// has not committed it), watching for up to `patience`.
fn pending_writer(work: &Workdir, pids: &[u32], patience: Duration) -> Option<usize> {
    let partitions = work.path("store/cluster-test/partitions/lines");
    let numbers = |dir: std::path::PathBuf| -> Vec<u64> {
        std::fs::read_dir(dir)
            .map_or(Vec::new(), |d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
    };
    let deadline = std::time::Instant::now() + patience;
    while std::time::Instant::now() < deadline {
        for partition in std::fs::read_dir(&partitions).into_iter().flatten().flatten() {
            let done = numbers(partition.path().join("done")).into_iter().max();
            for seq in numbers(partition.path().join("log")) {
                if done.is_some_and(|d| seq <= d) {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(partition.path().join("log").join(format!("{seq:012}"))) else {
                    continue;
                };
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                let member = entry["member"].as_str().unwrap_or_default();
                if let Some(at) = pids.iter().position(|pid| member.ends_with(&format!("-{pid}"))) {
                    return Some(at);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn store_url(work: &Workdir) -> String {
    format!("file://{}", work.path("store").display())
}

/// Three members, one `kill -9`ed and restarted again and again mid-stream, a fourth joining:
/// the partitions of the dead go to the living with their logs, and the output ledger is exact.
#[test]
fn members_share_partitions_and_a_killed_members_partitions_are_taken_over_exactly_once() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "6"]);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    client(&["create", &b, "words", "3"]);
    let to_kafka = format!(
        "\n[[sinks]]\nname = \"to_kafka\"\ninput = \"words\"\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopic = \"words\"\ndelivery = \"at_least_once\"\n"
    );
    let db = crate::postgres::Db::new("cluster");
    let to_postgres = format!(
        "\n[[sinks]]\nname = \"to_pg\"\ninput = \"words\"\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"words\"\ncreate_table = true\n",
        db.url
    );
    work.write("pipeline.toml", &(cluster_pipeline(&b, &store_url(&work), "") + &to_kafka + &to_postgres));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(said.contains("path lines (kafka) → out (file): exactly once"), "{said}");
    assert!(said.contains("path lines (kafka) → to_pg (postgres): exactly once"), "{said}");
    assert!(said.contains("path lines (kafka) → to_kafka (kafka): at least once"), "{said}");
    let lines = corpus(40_000, 6, 11);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    // About 20 s of input, arriving while members die and join.
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let mut members: Vec<Running> = (0..3).map(|_| work.spawn(&["pipeline.toml", "--no-ui"])).collect();
    for member in &members {
        member.wait_for("gained partition", Duration::from_secs(30));
    }
    let mut rng = Lcg::seeded();
    let mut logs = String::new();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(1_000 + rng.below(1_000)));
        // Mostly a member caught between logging a batch and committing it (the case a next
        // owner must replay), else any member.
        let pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
        let at =
            pending_writer(&work, &pids, Duration::from_secs(3)).unwrap_or(rng.below(members.len() as u64) as usize);
        let victim = members.remove(at);
        victim.signal("KILL");
        let (code, log) = victim.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        logs.push_str(&log);
        members.push(work.spawn(&["pipeline.toml", "--no-ui"]));
    }
    // A fourth member joins and is given partitions; it shows them, labelled, to its probes.
    let ui = format!("127.0.0.1:{}", crate::admin::free_port());
    let fourth = work.spawn(&["pipeline.toml", "--ui", &ui]);
    fourth.wait_for("gained partition", Duration::from_secs(30));
    wait_until("the fourth member ready", Duration::from_secs(30), || get(&ui, "/readyz", None).0 == 200);
    assert_eq!(get(&ui, "/healthz", None), (200, "ok\n".to_string()));
    let status: serde_json::Value = serde_json::from_str(&get(&ui, "/api/status", None).1).unwrap();
    let member = status["cluster"]["member"].as_str().expect("a member name").to_string();
    assert_eq!(status["cluster"]["group_id"], "cluster-test");
    wait_until("partitions on the fourth member's receiver row", Duration::from_secs(30), || {
        let status: serde_json::Value = serde_json::from_str(&get(&ui, "/api/status", None).1).unwrap();
        status["sources"][0]["partitions"].as_array().is_some_and(|p| !p.is_empty())
    });
    // `sluice status --cluster`: a row per member; this one's shows its versions and partitions
    // once its heartbeat (every second here) carries them.
    wait_until("the fourth member's row in `sluice status --cluster`", Duration::from_secs(20), || {
        let table = work.sluice(&["status", "--cluster", "--ui", &ui]);
        let shown = String::from_utf8_lossy(&table.stdout);
        table.status.success()
            && shown.starts_with("cluster cluster-test — ")
            && shown.lines().any(|l| l.starts_with(&member) && l.contains("wordcount@") && l.contains("lines/"))
    });
    let metrics = get(&ui, "/metrics", None).1;
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert!(!samples.is_empty());
    let label = format!("member=\"{member}\"");
    assert!(samples.iter().all(|l| l.contains(&label)), "every sample labelled {label}:\n{metrics}");
    members.push(fourth);
    assert_eq!(acked(producer), lines.len() as u64);
    settle(&work, &expected);
    logs.push_str(&stop_all(members));
    let got = word_ledger(&work);
    let (lost, duplicated) = lost_and_duplicated(&expected, &got);
    let replays = logs.lines().filter(|l| l.contains("replaying entry")).count();
    println!(
        "cluster of 3 (+1), 6 kill -9s: {replays} log entries replayed by a partition's next owner; {lost} lost, {duplicated} duplicated"
    );
    assert!(replays > 0, "no kill left an entry to replay: the test proves nothing");
    assert_eq!((lost, duplicated), (0, 0), "exactly once across members; {}", notable(&logs));
    // Kafka → Kafka in a cluster: at least once (a replayed entry is sent again).
    let seen = crate::kafka::count_values(&client(&["consume", &b, "words", "read_uncommitted", "3"]));
    let (lost, duplicated) = lost_and_duplicated(&expected, &seen);
    println!("the same run into Kafka: {lost} lost, {duplicated} duplicated words");
    assert_eq!(lost, 0, "at least once: nothing lost");
    // Kafka → PostgreSQL in a cluster: exactly once, through progress rows per partition and batch.
    let rows = db.counts("SELECT key, sum(value) FROM words GROUP BY key");
    let (lost, duplicated) = lost_and_duplicated(&expected, &rows);
    let skipped = logs.lines().filter(|l| l.contains("committed before (a replay)")).count();
    println!(
        "the same run into PostgreSQL: {lost} lost, {duplicated} duplicated words; {skipped} replayed tasks found committed"
    );
    assert_eq!((lost, duplicated), (0, 0), "exactly once into PostgreSQL across members");
    let partitions =
        db.sql("SELECT count(DISTINCT source_partition) FROM sluice_partition_progress WHERE sink = 'to_pg'");
    assert_eq!(partitions.trim(), "6", "progress rows for each of the 6 partitions");
}

/// An S3-compatible server (moto, PyPI) on a free loopback port with bucket `sluice-test`,
/// created by boto3; stopped on drop.
struct S3 {
    endpoint: String,
    child: std::process::Child,
}

impl S3 {
    fn start() -> Self {
        let status = std::process::Command::new(repo().join("scripts/setup-s3.sh")).status().unwrap();
        assert!(status.success(), "scripts/setup-s3.sh failed");
        let port = crate::admin::free_port();
        let child = std::process::Command::new("python3")
            .args(["-m", "moto.server", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let create = format!(
            "import boto3, time\nfor _ in range(100):\n    try:\n        boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='sluice-test')\n        break\n    except Exception:\n        time.sleep(0.1)\nelse:\n    raise SystemExit('moto did not answer')\n"
        );
        let status = std::process::Command::new("python3").args(["-c", &create]).status().unwrap();
        assert!(status.success(), "could not create the bucket");
        Self { endpoint, child }
    }

    fn configure(&self, work: &Workdir) {
        work.set_env("AWS_ENDPOINT_URL", &self.endpoint);
        work.set_env("AWS_ACCESS_KEY_ID", "test");
        work.set_env("AWS_SECRET_ACCESS_KEY", "test");
        work.set_env("AWS_REGION", "us-east-1");
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The store on S3 (moto), and a zombie: one member is stopped (SIGSTOP) past the session
/// timeout, its partitions go to the others, then it runs again (SIGCONT). It loses its
/// partitions; whatever it still writes is fenced or replaced: the ledger stays exact.
#[test]
fn a_zombie_member_is_fenced_and_the_s3_store_keeps_the_ledger_exact() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "4"]);
    let s3 = S3::start();
    let work = Workdir::new();
    s3.configure(&work);
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    let op = "op = \"update_state_by_key\"\nplugin = \"top_k\"\nfunction = \"running_total\"";
    let text = keyed_pipeline(&work, &b, "totals", op).replace(&store_url(&work), "s3://sluice-test/run");
    work.write("pipeline.toml", &text);
    let lines = corpus(20_000, 6, 12);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let members: Vec<Running> = (0..3).map(|_| work.spawn(&["pipeline.toml", "--no-ui"])).collect();
    for member in &members {
        member.wait_for("gained partition", Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_secs(2));
    let zombie = &members[0];
    zombie.signal("STOP");
    // Past the 3 s session timeout: the group moves the zombie's partitions to the others.
    std::thread::sleep(Duration::from_secs(8));
    zombie.signal("CONT");
    assert_eq!(acked(producer), lines.len() as u64);
    settle(&work, &expected);
    let progress = settle_totals(&work, &expected);
    zombie.wait_for("lost partition", Duration::from_secs(30));
    let logs = stop_all(members);
    let got = word_ledger(&work);
    let (lost, duplicated) = lost_and_duplicated(&expected, &got);
    let fenced = logs.lines().filter(|l| l.contains("first (batch") || l.contains("moved past entry")).count();
    let abandoned = logs.lines().filter(|l| l.contains("partition revoked: its output")).count();
    let totals = lost_and_duplicated(&expected, &totals_ledger(&work));
    println!(
        "zombie on S3: {fenced} entries fenced, {abandoned} tasks abandoned; {lost} lost, {duplicated} duplicated; keyed totals {} lost, {} counted twice",
        totals.0, totals.1
    );
    assert_eq!((lost, duplicated), (0, 0), "exactly once with a zombie; {}", notable(&logs));
    if totals != (0, 0) {
        explain_totals(&work, &expected, &totals_ledger(&work), &logs);
    }
    assert_eq!(totals, (0, 0), "the keyed totals exact with a zombie, its state kept on S3 ({progress})");
    let down = totals_gone_down(&work);
    assert!(down.is_empty(), "running totals went down ({} times), first: {:?}", down.len(), down.first());
}

/// Every word's figure in a keyed stage's output (`<dir>/`, a `[word, n]` record a line, from
/// tasks of `<pipeline>-<stage>-repartition`), the figures of all files combined by `combine`.
fn keyed_ledger(work: &Workdir, dir: &str, combine: fn(u64, u64) -> u64) -> BTreeMap<String, u64> {
    let mut figures = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(work.path(dir)) else { return figures };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        assert!(name.contains(&format!("-cluster-test-{dir}-repartition-")), "a keyed task's output: {name}");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let (word, n): (String, u64) = serde_json::from_str(line).unwrap();
            let at = figures.entry(word).or_insert(0);
            *at = combine(*at, n);
        }
    }
    figures
}

/// Per repartition partition, the running totals that went down from one batch's output to a
/// later one's (a state lost or restored too old), as `(partition, batch, word, before, after)`.
fn totals_gone_down(work: &Workdir) -> Vec<(String, u64, String, u64, u64)> {
    let mut files: Vec<(String, u64, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(work.path("totals")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("batch-").and_then(|r| r.strip_suffix(".jsonl")) else { continue };
        let Some((batch, task)) = rest.split_once('-') else { continue };
        files.push((task.to_string(), batch.parse().unwrap(), entry.path()));
    }
    files.sort();
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut down = Vec::new();
    for (task, batch, path) in files {
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let (word, total): (String, u64) = serde_json::from_str(line).unwrap();
            let before = last.insert((task.clone(), word.clone()), total);
            if let Some(before) = before.filter(|b| *b > total) {
                down.push((task.clone(), batch, word, before, total));
            }
        }
    }
    down
}

/// Waits for the keyed totals to reach `expected`: up to 3 minutes while they still change (a
/// loaded machine runs the keyed side late), 30 s once they stop. Says which it was.
fn settle_totals(work: &Workdir, expected: &BTreeMap<String, u64>) -> String {
    settle_keyed(work, expected, totals_ledger)
}

/// [`settle_totals`] for the keyed output `ledger` reads.
fn settle_keyed(
    work: &Workdir,
    expected: &BTreeMap<String, u64>,
    ledger: fn(&Workdir) -> BTreeMap<String, u64>,
) -> String {
    let started = std::time::Instant::now();
    let (mut last, mut since) = (ledger(work), std::time::Instant::now());
    while last != *expected && started.elapsed() < Duration::from_secs(180) {
        if since.elapsed() > Duration::from_secs(30) {
            return format!("the totals stopped changing for 30 s, {:.0} s in", started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
        let now = ledger(work);
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
    }
    format!("settled or gave up after {:.0} s", started.elapsed().as_secs_f64())
}

/// What a failed keyed ledger needs to be understood: where the short words' totals came from,
/// whether any total went down, and what the members warned about.
fn explain_totals(work: &Workdir, expected: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>, logs: &str) {
    let have = |w: &String| got.get(w).copied().unwrap_or(0);
    let short: Vec<(&String, u64, u64)> =
        expected.iter().filter(|(w, n)| have(w) < **n).map(|(w, n)| (w, *n, have(w))).collect();
    println!("{} words short, first: {:?}", short.len(), &short[..short.len().min(5)]);
    let mut last_file: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for entry in std::fs::read_dir(work.path("totals")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            let Ok((word, total)) = serde_json::from_str::<(String, u64)>(line) else { continue };
            if short.iter().take(5).any(|(w, _, _)| **w == word) {
                let at = last_file.entry(word).or_insert((name.clone(), 0));
                if total >= at.1 {
                    *at = (name.clone(), total);
                }
            }
        }
    }
    println!("where their largest totals are: {last_file:?}");
    let down = totals_gone_down(work);
    println!("totals that went down: {:?}", &down[..down.len().min(5)]);
    let mut seen = std::collections::BTreeSet::new();
    for line in logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
        let shape: String = line.chars().skip(28).filter(|c| !c.is_ascii_digit()).collect();
        if seen.insert(shape) && seen.len() <= 40 {
            println!("  {line}");
        }
    }
}

/// Each word's final running total (the largest seen, as totals only grow).
fn totals_ledger(work: &Workdir) -> BTreeMap<String, u64> {
    keyed_ledger(work, "totals", u64::max)
}

/// A keyed stage's pipeline: words, then `keyed` (a stage named `stage` with its op and
/// function), written to `<stage>/`.
fn keyed_pipeline(work: &Workdir, b: &str, stage: &str, op_and_function: &str) -> String {
    let keyed = format!(
        "\n[[stages]]\nname = \"{stage}\"\ninput = \"words\"\n{op_and_function}\n\n[[sinks]]\nname = \"{stage}_out\"\ninput = \"{stage}\"\ntype = \"file\"\npath = \"{stage}\"\n"
    );
    cluster_pipeline(b, &store_url(work), "").replace("[plugins]\n", "[plugins]\ntop_k = \"top_k.wasm\"\n") + &keyed
}

/// `reduce_by_key` in a cluster: the map side combines in the source tasks, the shuffle carries
/// one record per word and task, the keyed tasks combine again; one member killed and
/// restarted. Summed over every batch's output, each word's count is its count in the input.
#[test]
fn reduce_by_key_in_a_cluster_combines_before_and_after_the_shuffle_exactly_once() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "4"]);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    let op = "op = \"reduce_by_key\"\nplugin = \"wordcount\"\nfunction = \"sum\"";
    work.write("pipeline.toml", &keyed_pipeline(&work, &b, "counts", op));
    let lines = corpus(20_000, 6, 14);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let mut members: Vec<Running> = (0..2).map(|_| work.spawn(&["pipeline.toml", "--no-ui"])).collect();
    for member in &members {
        member.wait_for("gained partition", Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
    let victim = members.remove(pending_writer(&work, &pids, Duration::from_secs(3)).unwrap_or(0));
    victim.signal("KILL");
    let (code, mut logs) = victim.finish(Duration::from_secs(10));
    assert_eq!(code, -1);
    members.push(work.spawn(&["pipeline.toml", "--no-ui"]));
    assert_eq!(acked(producer), lines.len() as u64);
    let counts = |work: &Workdir| keyed_ledger(work, "counts", |a, b| a + b);
    let progress = settle_keyed(&work, &expected, counts);
    logs.push_str(&stop_all(members));
    let (lost, duplicated) = lost_and_duplicated(&expected, &counts(&work));
    let replays = logs.lines().filter(|l| l.contains("replaying entry")).count();
    println!(
        "reduce_by_key in a cluster of 2, 1 kill -9: {} words, {replays} entries replayed; {lost} lost, {duplicated} counted twice",
        expected.len()
    );
    assert_eq!((lost, duplicated), (0, 0), "every word counted once across the shuffle ({progress})");
    // The same pipeline started over with a new store and group on the same brokers: the
    // repartition topic still holds the first cluster's records, which are not this one's.
    std::fs::rename(work.path("counts"), work.path("counts-first")).unwrap();
    let text = std::fs::read_to_string(work.path("pipeline.toml")).unwrap();
    let text = text
        .replace("/store\"", "/store-again\"")
        .replace("group_id = \"cluster-test\"", "group_id = \"cluster-again\"");
    work.write("pipeline.toml", &text);
    let again = work.spawn(&["pipeline.toml", "--no-ui"]);
    let progress = settle_keyed(&work, &expected, counts);
    let log = stop_all(vec![again]);
    let (lost, duplicated) = lost_and_duplicated(&expected, &counts(&work));
    println!("started over with a new store: {lost} lost, {duplicated} counted twice");
    assert!(log.contains("held records before this cluster's store"), "{log}");
    assert_eq!((lost, duplicated), (0, 0), "a new store's cluster counts only its own records ({progress})");
}

/// A keyed stage in a cluster: `update_state_by_key` running totals behind a shuffle through
/// `<pipeline>-<stage>-repartition`, three members, `kill -9`s mid-stream (each restarted) and
/// a fourth joining: every word's final total is its count in the input — no record lost or
/// counted twice across the shuffle, and the state of a killed member's partitions taken over.
#[test]
fn a_keyed_stage_shuffles_by_key_and_its_state_survives_kill_9_across_members() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "6"]);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    let op = "op = \"update_state_by_key\"\nplugin = \"top_k\"\nfunction = \"running_total\"";
    work.write("pipeline.toml", &keyed_pipeline(&work, &b, "totals", op));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    let lines = corpus(30_000, 6, 13);
    let expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let mut members: Vec<Running> = (0..3).map(|_| work.spawn(&["pipeline.toml", "--no-ui"])).collect();
    for member in &members {
        member.wait_for("gained partition", Duration::from_secs(30));
    }
    let mut rng = Lcg::seeded();
    let mut logs = String::new();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1_500 + rng.below(1_000)));
        let pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
        let at =
            pending_writer(&work, &pids, Duration::from_secs(3)).unwrap_or(rng.below(members.len() as u64) as usize);
        let victim = members.remove(at);
        victim.signal("KILL");
        let (code, log) = victim.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        logs.push_str(&log);
        members.push(work.spawn(&["pipeline.toml", "--no-ui"]));
    }
    let fourth = work.spawn(&["pipeline.toml", "--no-ui"]);
    fourth.wait_for("gained partition", Duration::from_secs(30));
    members.push(fourth);
    assert_eq!(acked(producer), lines.len() as u64);
    let progress = settle_totals(&work, &expected);
    logs.push_str(&stop_all(members));
    let got = totals_ledger(&work);
    let (lost, duplicated) = lost_and_duplicated(&expected, &got);
    let loaded = logs.lines().filter(|l| l.contains("keyed state loaded from the store")).count();
    let dropped = logs.lines().filter(|l| l.contains("sent again (a replay or a fenced member) dropped")).count();
    let skipped = logs.lines().filter(|l| l.contains("the kept state already holds this entry")).count();
    println!(
        "keyed cluster of 3 (+1), 4 kill -9s: {} words; {loaded} partition states loaded by a next owner, {skipped} entries found in them, {dropped} blocks with re-sent records deduplicated; {lost} lost, {duplicated} counted twice",
        expected.len()
    );
    if (lost, duplicated) != (0, 0) {
        explain_totals(&work, &expected, &got, &logs);
    }
    assert!(loaded > 0, "no member took over a partition's state: the test proves nothing");
    let words = lost_and_duplicated(&expected, &word_ledger(&work));
    assert_eq!(words, (0, 0), "the words' own sink (before the shuffle) exact too, written by source tasks only");
    assert_eq!((lost, duplicated), (0, 0), "every word's total exact across the shuffle and the kills ({progress})");
    let down = totals_gone_down(&work);
    assert!(down.is_empty(), "running totals went down ({} times), first: {:?}", down.len(), down.first());
    let store = work.path("store/cluster-test/partitions/cluster-test-totals-repartition");
    let partitions = std::fs::read_dir(&store).map(|d| d.count()).unwrap_or(0);
    assert_eq!(partitions, 6, "the repartition topic has the source's 6 partitions, each with its log");
}

/// Mistakes in `[cluster]` name the file and the field.
#[test]
fn cluster_config_mistakes_name_the_file_and_field() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let text = cluster_pipeline("127.0.0.1:1", "/not/a/url", "")
        .replace("op = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"", "op = \"count_by_value\"");
    work.write("pipeline.toml", &text);
    let out = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("pipeline.toml: cluster.checkpoint_store: not a URL"), "{said}");
    assert!(said.contains("pipeline.toml: stages `words`.op: works on all of a batch's records"), "{said}");
}

/// `bytes` (a Wasm module) with its memory's initial size set to `pages` (64 KiB each): the
/// same functions, but every instance starts that large.
fn with_initial_memory(bytes: &[u8], pages: u32) -> Vec<u8> {
    fn leb(bytes: &[u8], at: &mut usize) -> u32 {
        let (mut value, mut shift) = (0u32, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u32::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return value;
            }
        }
    }
    fn put(out: &mut Vec<u8>, mut value: u32) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            out.push(if value == 0 { byte } else { byte | 0x80 });
            if value == 0 {
                return;
            }
        }
    }
    let mut out = bytes[..8].to_vec();
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let size = leb(bytes, &mut at) as usize;
        let (start, end) = (at, at + size);
        at = end;
        if id != 5 {
            out.push(id);
            put(&mut out, size as u32);
            out.extend_from_slice(&bytes[start..end]);
            continue;
        }
        let mut p = start;
        assert_eq!(leb(bytes, &mut p), 1, "one memory");
        let flags = bytes[p];
        p += 1;
        let _old = leb(bytes, &mut p);
        let mut section = vec![1, flags];
        put(&mut section, pages);
        if flags & 1 == 1 {
            let max = leb(bytes, &mut p);
            put(&mut section, max.max(pages));
        }
        out.push(5);
        put(&mut out, section.len() as u32);
        out.extend_from_slice(&section);
    }
    out
}

/// Each committed file's batch time and whether its words are upper case (every record of a
/// file must agree: one version per task).
fn file_cases(work: &Workdir) -> Vec<(u64, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(work.path("out")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("batch-") else { continue };
        let ms: u64 = rest.split('-').next().unwrap().parse().unwrap();
        let words: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<(String, u64)>(l).unwrap().0)
            .collect();
        let upper = words.iter().filter(|w| w.starts_with('W')).count();
        assert!(upper == 0 || upper == words.len(), "{name} mixes versions: {upper} of {} upper case", words.len());
        found.push((ms, upper > 0));
    }
    found.sort_unstable();
    found
}

/// The `from_batch_ms` of a deploy's or rollback's answer.
fn from_batch(out: &std::process::Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    answer["from_batch_ms"].as_u64().unwrap_or_else(|| panic!("no from_batch_ms: {text}"))
}

/// A deploy to one member while three run: every member validates it; one member refusing
/// (its memory cap is lower than the new version's initial memory) refuses it for all; a good
/// version then serves on every member from one batch on, and a rollback sent to another member
/// returns every member to the first version at one batch. No word lost or doubled throughout.
#[test]
fn a_cluster_wide_deploy_swaps_every_member_at_one_batch_and_one_refusal_refuses_for_all() {
    let broker = Broker::start();
    let b = broker.address.clone();
    client(&["create", &b, "lines", "4"]);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &cluster_pipeline(&b, &store_url(&work), ""));
    let lines = corpus(24_000, 6, 13);
    let mut expected = count_words(&lines);
    let input = work.write("input.txt", &(lines.join("\n") + "\n"));
    let producer = produce_in_background(&b, "lines", &input, 100, 200);
    let uis: Vec<String> = (0..3).map(|_| format!("127.0.0.1:{}", crate::admin::free_port())).collect();
    let members: Vec<Running> = uis
        .iter()
        .enumerate()
        .map(|(i, ui)| {
            let name = format!("member-{i}");
            let mut args = vec!["pipeline.toml", "--ui", ui.as_str(), "--member", name.as_str()];
            if i == 2 {
                args.extend(["--memory-limit-mib", "8"]); // a member with a smaller memory cap
            }
            work.spawn(&args)
        })
        .collect();
    for member in &members {
        member.wait_for("gained partition", Duration::from_secs(30));
    }
    wait_until("three members in the cluster view", Duration::from_secs(30), || {
        let status: serde_json::Value = serde_json::from_str(&get(&uis[0], "/api/status", None).1).unwrap();
        status["cluster"]["members"].as_array().is_some_and(|m| m.len() == 3)
    });
    // 16 MiB of initial memory: fine for two members, past member-2's 8 MiB cap.
    let big = work.path("big.wasm");
    std::fs::write(&big, with_initial_memory(&std::fs::read(plugin("uppercase")).unwrap(), 256)).unwrap();
    let out = work.sluice(&["deploy", "wordcount", big.to_str().unwrap(), "--ui", &uis[0]]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "one member's refusal refuses the deploy: {said}");
    assert!(said.contains("refused by the cluster") && said.contains("member member-2"), "{said}");
    assert!(said.contains("memory"), "{said}");

    let out = work.sluice(&["deploy", "wordcount", plugin("uppercase").to_str().unwrap(), "--ui", &uis[1]]);
    assert!(out.status.success(), "deploy: {}", String::from_utf8_lossy(&out.stderr));
    let upper_from = from_batch(&out);
    // More input while the new version serves (a loaded machine may have sent all the first
    // input by now).
    let more = corpus(3_000, 6, 21);
    for (word, n) in count_words(&more) {
        *expected.entry(word).or_insert(0) += n;
    }
    let more_input = work.write("more.txt", &(more.join("\n") + "\n"));
    let more_producer = produce_in_background(&b, "lines", &more_input, 100, 200);
    std::thread::sleep(Duration::from_secs(4));
    // Every member shows the new version in the cluster view.
    let status: serde_json::Value = serde_json::from_str(&get(&uis[2], "/api/status", None).1).unwrap();
    let serving: Vec<String> = status["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["serving"]["wordcount"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(serving.len(), 3);
    assert!(serving.iter().all(|h| *h == serving[0]), "one version across the cluster: {serving:?}");
    let out = work.sluice(&["rollback", "wordcount", "--ui", &uis[2]]);
    assert!(out.status.success(), "rollback: {}", String::from_utf8_lossy(&out.stderr));
    let lower_from = from_batch(&out);
    assert!(lower_from > upper_from);

    assert_eq!(acked(producer), lines.len() as u64);
    assert_eq!(acked(more_producer), more.len() as u64);
    let lowered = |work: &Workdir| {
        let mut counts = BTreeMap::new();
        for (word, n) in word_ledger(work) {
            *counts.entry(word.to_lowercase()).or_insert(0) += n;
        }
        counts
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while lowered(&work) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = stop_all(members);
    let (lost, duplicated) = lost_and_duplicated(&expected, &lowered(&work));
    assert_eq!((lost, duplicated), (0, 0), "no word lost or doubled across the swaps; {}", notable(&logs));
    let cases = file_cases(&work);
    let wrong: Vec<&(u64, bool)> =
        cases.iter().filter(|(ms, upper)| *upper != (upper_from <= *ms && *ms < lower_from)).collect();
    let upper_files = cases.iter().filter(|(_, upper)| *upper).count();
    println!(
        "cluster deploy: {} files, {upper_files} by the new version (batches {upper_from}..{lower_from}), {} on the wrong side",
        cases.len(),
        wrong.len()
    );
    assert!(upper_files > 0, "the new version served some batches");
    assert!(wrong.is_empty(), "every batch by one version across members: {wrong:?}\n{logs}");
}
