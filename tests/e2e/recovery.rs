//! Nothing lost: `kill -9` at random moments, restart from the checkpoint, compare the output
//! ledger with the input. Directory source → file sink: exactly once. Socket with write-ahead
//! log and acknowledgements: nothing lost (duplicates counted and printed). A damaged checkpoint
//! is refused by name.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

fn directory_pipeline() -> String {
    r#"[pipeline]
name = "crash-test"
batch_interval = "200ms"
block_interval = "100ms"
checkpoint_dir = "ckpt"

[plugins]
wordcount = "wordcount.wasm"
top_k = "top_k.wasm"

[[sources]]
name = "files"
type = "directory"
path = "in"

[[stages]]
name = "words"
input = "files"
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
name = "out"
input = "counts"
type = "file"
path = "out"

[[sinks]]
name = "running"
input = "totals"
type = "file"
path = "totals"
"#
    .to_string()
}

/// Time from start to the end of the first batch (replayed or new) in a run's log.
fn first_batch_after(start: Instant, running: &Running, limit: Duration) -> Option<Duration> {
    while start.elapsed() < limit {
        if running.log().contains("batch ")
            && running.log().lines().any(|l| l.contains(" ms: ") && l.contains("records in"))
        {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn directory_to_file_sink_is_exactly_once_across_twenty_kill_9s() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &directory_pipeline());
    std::fs::create_dir(work.path("in")).unwrap();
    let files = 80;
    let mut expected = BTreeMap::new();
    let inputs: Vec<Vec<String>> = (0..files).map(|i| corpus(1_500, 8, 100 + i as u64)).collect();
    for lines in &inputs {
        for (word, n) in count_words(lines) {
            *expected.entry(word).or_insert(0u64) += n;
        }
    }
    // Files arrive while the engine is killed and restarted: written aside, moved in.
    let dir = work.path("in");
    let feeder = std::thread::spawn(move || {
        for (i, lines) in inputs.iter().enumerate() {
            let tmp = dir.join(format!(".part-{i:04}.txt.tmp"));
            std::fs::write(&tmp, join_lines(lines)).unwrap();
            std::fs::rename(&tmp, dir.join(format!("part-{i:04}.txt"))).unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let mut rng = Lcg::seeded();
    let mut recoveries = Vec::new();
    let rounds = kills(20);
    for kill in 0..rounds {
        let start = Instant::now();
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        if kill > 0
            && let Some(took) = first_batch_after(start, &running, Duration::from_secs(20))
        {
            recoveries.push(took);
        }
        std::thread::sleep(Duration::from_millis(rng.below(900)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        assert!(!log.contains("refusing to start"), "log:\n{log}");
    }
    feeder.join().unwrap();
    // The last run finishes what is left, then stops gracefully on SIGTERM.
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while work.ledger("out") != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let got = work.ledger("out");
    let lost: u64 = expected.iter().map(|(w, n)| n.saturating_sub(got.get(w).copied().unwrap_or(0))).sum();
    let duplicated: u64 = got.iter().map(|(w, n)| n.saturating_sub(expected.get(w).copied().unwrap_or(0))).sum();
    assert_eq!((lost, duplicated), (0, 0), "lost and duplicated words after {rounds} kill -9s");
    // The running totals (state) survived every crash exactly too: the last batch holds them.
    let totals = work.batches("totals");
    let last: BTreeMap<String, u64> = totals
        .values()
        .last()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(last, expected, "update_state_by_key totals after {rounds} crashes");
    recoveries.sort();
    println!(
        "recovery after kill -9 (start to first batch done): median {:?}, max {:?} over {} restarts",
        recoveries[recoveries.len() / 2],
        recoveries.last().unwrap(),
        recoveries.len()
    );
}

/// A line server that resends from the last acknowledged line on every new connection.
struct AckingServer {
    address: String,
    acked: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

impl AckingServer {
    fn start(lines: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let acked = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (acked2, done2) = (acked.clone(), done.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let from = acked2.load(Ordering::SeqCst);
                let reader = BufReader::new(conn.try_clone().unwrap());
                let acks = acked2.clone();
                let ack_thread = std::thread::spawn(move || {
                    for line in reader.lines() {
                        let Ok(line) = line else { break };
                        let n: usize = line.trim().parse().expect("an acknowledgement is a count");
                        acks.fetch_max(from + n, Ordering::SeqCst);
                    }
                });
                let mut sent_all = true;
                for chunk in lines[from..].chunks(200) {
                    let mut bytes = chunk.join("\n").into_bytes();
                    bytes.push(b'\n');
                    if conn.write_all(&bytes).is_err() {
                        sent_all = false;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if sent_all {
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                }
                let _ = ack_thread.join();
                if acked2.load(Ordering::SeqCst) == lines.len() {
                    done2.store(true, Ordering::SeqCst);
                }
            }
        });
        Self { address, acked, done }
    }
}

#[test]
fn socket_with_write_ahead_log_loses_nothing_across_kill_9s() {
    let rounds = kills(10);
    // 12,000 lines a kill, so the input spans them however many there are.
    let lines = corpus(12_000 * rounds.max(10), 8, 42);
    let expected = count_words(&lines);
    let server = AckingServer::start(lines.clone());
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let pipeline = wordcount_pipeline(&server.address, "wordcount.wasm", "200ms", "100ms")
        // A checkpoint every 4 batches: a restart replays up to 4 logged batches.
        .replace("[plugins]", "checkpoint_dir = \"ckpt\"\ncheckpoint_every = 4\n\n[plugins]")
        .replace("type = \"socket\"", "type = \"socket\"\nwal = true\nack = true");
    work.write("pipeline.toml", &pipeline);
    let mut rng = Lcg::seeded();
    for _ in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "log:\n{log}");
    }
    // The last run reads to the end (the server closes after the last line is acknowledged).
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(120));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(server.done.load(Ordering::SeqCst), "acked {} of {}", server.acked.load(Ordering::SeqCst), lines.len());
    let got = work.ledger("out");
    let lost: u64 = expected.iter().map(|(w, n)| n.saturating_sub(got.get(w).copied().unwrap_or(0))).sum();
    let duplicated: u64 = got.iter().map(|(w, n)| n.saturating_sub(expected.get(w).copied().unwrap_or(0))).sum();
    let total: u64 = expected.values().sum();
    println!("socket + WAL after {rounds} kill -9s: {total} words, {lost} lost, {duplicated} duplicated");
    assert_eq!(lost, 0, "no acknowledged record is lost ({duplicated} duplicated)");
}

#[test]
fn a_damaged_checkpoint_is_refused_by_name_and_fresh_starts_over() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &directory_pipeline());
    std::fs::create_dir(work.path("in")).unwrap();
    work.write("in/a.txt", "one two two\nthree\n");
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("6 records out", Duration::from_secs(20));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    let checkpoint = std::fs::read_dir(work.path("ckpt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("checkpoint-"))
        .max()
        .expect("a checkpoint was written");
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&checkpoint, &bytes).unwrap();
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(20));
    assert_eq!(code, 1, "log:\n{log}");
    let name = checkpoint.file_name().unwrap().to_str().unwrap();
    assert!(log.contains("is corrupted") && log.contains(name) && log.contains("--fresh"), "log:\n{log}");
    // Refused, not reset: nothing was written after the damaged checkpoint.
    assert_eq!(work.batches("out").len(), 1);
    // A file whose header is cut short is refused the same way.
    std::fs::write(&checkpoint, &bytes[..10]).unwrap();
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(20));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("is corrupted"), "log:\n{log}");
    // --fresh sets the directory aside and starts over: the old file is read again.
    let running = work.spawn(&["pipeline.toml", "--no-ui", "--fresh"]);
    running.wait_for("starting fresh", Duration::from_secs(20));
    running.wait_for("6 records out", Duration::from_secs(20));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    let aside = std::fs::read_dir(work.dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with("ckpt.discarded-"))
        .count();
    assert_eq!(aside, 1, "the damaged checkpoint is kept aside");
}

#[test]
fn a_sink_that_cannot_write_stops_the_pipeline_and_the_restart_replays_its_batch() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", &directory_pipeline());
    std::fs::create_dir(work.path("in")).unwrap();
    // A file where the sink's directory should be: every write fails.
    work.write("out", "in the way");
    work.write("in/a.txt", "one two two\nthree\n");
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(30));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("sink `out` cannot write batch") && log.contains("replays it"), "log:\n{log}");
    // Out of the way: the restart replays the batch and writes its output once.
    std::fs::remove_file(work.path("out")).unwrap();
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("(replayed)", Duration::from_secs(20));
    running.wait_for("6 records out", Duration::from_secs(20));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    let expected = BTreeMap::from([("one".to_string(), 1), ("two".to_string(), 2), ("three".to_string(), 1)]);
    assert_eq!(work.ledger("out"), expected, "log:\n{log}");
}

#[test]
fn sources_reordered_with_logged_batches_but_no_checkpoint_yet_are_refused() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let pipeline = |first: &str, second: &str| {
        format!(
            "[pipeline]\nname = \"two\"\nbatch_interval = \"200ms\"\nblock_interval = \"100ms\"\n\
             checkpoint_dir = \"ckpt\"\ncheckpoint_every = 1000\n\
             [plugins]\nwordcount = \"wordcount.wasm\"\n\
             [[sources]]\nname = \"{first}\"\ntype = \"directory\"\npath = \"{first}\"\n\
             [[sources]]\nname = \"{second}\"\ntype = \"directory\"\npath = \"{second}\"\n\
             [[stages]]\nname = \"all\"\ninputs = [\"a\", \"b\"]\nop = \"union\"\n\
             [[stages]]\nname = \"words\"\ninput = \"all\"\nop = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"\n\
             [[sinks]]\nname = \"out\"\ninput = \"words\"\ntype = \"file\"\npath = \"out\"\n"
        )
    };
    work.write("p.toml", &pipeline("a", "b"));
    std::fs::create_dir(work.path("a")).unwrap();
    std::fs::create_dir(work.path("b")).unwrap();
    work.write("a/only_a.txt", "x y\n");
    work.write("b/only_b.txt", "z\n");
    let running = work.spawn(&["p.toml", "--no-ui"]);
    running.wait_for("3 records out", Duration::from_secs(20));
    running.signal("KILL");
    let _ = running.finish(Duration::from_secs(10));
    work.write("p.toml", &pipeline("b", "a"));
    let (code, log) = work.spawn(&["p.toml", "--no-ui"]).finish(Duration::from_secs(20));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("source `a` was source #1 and is #2 now") && log.contains("sources.txt"), "log:\n{log}");
    // Back in order, the logged batch replays into the same file: nothing counted twice.
    work.write("p.toml", &pipeline("a", "b"));
    let running = work.spawn(&["p.toml", "--no-ui"]);
    running.wait_for("(replayed)", Duration::from_secs(20));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    let words: u64 = work.batches("out").values().map(|records| records.len() as u64).sum();
    assert_eq!(words, 3, "log:\n{log}");
}
