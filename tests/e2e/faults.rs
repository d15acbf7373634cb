//! Faults other than crashes, on the exactly-once path (directory source → file sink): the disk
//! under the checkpoint directory and the sink fills up, then turns read-only (a small tmpfs:
//! root or passwordless sudo mounts it); a plugin file deleted while it serves; the sink
//! directory removed under a running engine. What the engine does is what the README's
//! "Reliability" section says: a write that still fails after its retries stops the run
//! cleanly (exit 1, the reason named, no checkpoint past what was written), and a restart once
//! the fault is gone resumes exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// A small tmpfs mounted at a path of a test's work directory, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        privileged(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path.to_str().unwrap()]);
        Self { path }
    }

    /// `ro` or `rw`.
    fn remount(&self, mode: &str) {
        privileged(&["mount", "-o", &format!("remount,{mode}"), self.path.to_str().unwrap()]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = privileged_command(&["umount", "-l", self.path.to_str().unwrap()]).status();
    }
}

/// `args` as root: directly if this is root, else through `sudo -n`.
fn privileged_command(args: &[&str]) -> Command {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mut command = match uid.as_deref() {
        Ok("0") => Command::new(args[0]),
        _ => {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", args[0]]);
            sudo
        }
    };
    command.args(&args[1..]);
    command
}

fn privileged(args: &[&str]) {
    let out = privileged_command(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} (the disk tests mount a small tmpfs: they need root or passwordless sudo): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Directory source `in` → split_words → sum → file sink, checkpoint and sink in `dir`.
fn pipeline(dir: &str) -> String {
    format!(
        r#"[pipeline]
name = "faults"
batch_interval = "200ms"
block_interval = "100ms"
checkpoint_dir = "{dir}/ckpt"

[plugins]
wordcount = "wordcount.wasm"

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

[[sinks]]
name = "out"
input = "counts"
type = "file"
path = "{dir}/out"
"#
    )
}

/// Writes `files` input files into `in`, one every `every` (written aside, moved in), on a
/// thread; returns the word counts they hold and the thread.
fn feed(work: &Workdir, files: usize, every: Duration) -> (BTreeMap<String, u64>, std::thread::JoinHandle<()>) {
    std::fs::create_dir_all(work.path("in")).unwrap();
    let inputs: Vec<Vec<String>> = (0..files).map(|i| corpus(1_000, 8, 500 + i as u64)).collect();
    let mut expected = BTreeMap::new();
    for lines in &inputs {
        for (word, n) in count_words(lines) {
            *expected.entry(word).or_insert(0u64) += n;
        }
    }
    let dir = work.path("in");
    let feeder = std::thread::spawn(move || {
        for (i, lines) in inputs.iter().enumerate() {
            let tmp = dir.join(format!(".part-{i:04}.txt.tmp"));
            std::fs::write(&tmp, join_lines(lines)).unwrap();
            std::fs::rename(&tmp, dir.join(format!("part-{i:04}.txt"))).unwrap();
            std::thread::sleep(every);
        }
    });
    (expected, feeder)
}

/// Fills the file system of `dir` to the last byte; the filler file's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    // What is left is less than a chunk: take it byte by byte.
    while file.write_all(&[0]).is_ok() {}
    path
}

/// Words lost and duplicated in `got` against `expected`.
fn lost_and_duplicated(expected: &BTreeMap<String, u64>, got: &BTreeMap<String, u64>) -> (u64, u64) {
    let lost = expected.iter().map(|(w, n)| n.saturating_sub(got.get(w).copied().unwrap_or(0))).sum();
    let duplicated = got.iter().map(|(w, n)| n.saturating_sub(expected.get(w).copied().unwrap_or(0))).sum();
    (lost, duplicated)
}

#[test]
fn a_full_then_read_only_disk_stops_the_run_cleanly_and_a_restart_after_it_is_mended_resumes_exactly() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let disk = Tmpfs::mount(work.path("disk"), "8m");
    work.write("pipeline.toml", &pipeline("disk"));
    let (expected, feeder) = feed(&work, 60, Duration::from_millis(150));

    // The disk fills up under a running engine: its writes retry, then it stops, naming why.
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("the first batch files", Duration::from_secs(20), || !work.batches("disk/out").is_empty());
    let filler = fill(&disk.path);
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 1, "stops with an error, not a crash; log:\n{log}");
    assert!(log.contains("No space left on device"), "the reason is named; log:\n{log}");
    assert!(log.contains("write failed") && log.contains("retry_in_ms"), "retried first; log:\n{log}");
    // Restarting while it is still full stops the same way: nothing is skipped.
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(30));
    assert_eq!(code, 1, "log:\n{log}");
    std::fs::remove_file(filler).unwrap();

    // Space again: it resumes; then the disk turns read-only.
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let before = work.batches("disk/out").len();
    wait_until("new batches after the restart", Duration::from_secs(20), || {
        work.batches("disk/out").len() > before + 2
    });
    disk.remount("ro");
    let (code, log) = running.finish(Duration::from_secs(30));
    disk.remount("rw");
    assert_eq!(code, 1, "log:\n{log}");
    assert!(log.contains("Read-only file system"), "log:\n{log}");

    // Mended: the last run reads every file to the end, and every word is counted once.
    feeder.join().unwrap();
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("every word counted", Duration::from_secs(60), || work.ledger("disk/out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(lost_and_duplicated(&expected, &work.ledger("disk/out")), (0, 0), "lost and duplicated words");
}

#[test]
fn a_plugin_file_deleted_while_serving_and_a_removed_sink_directory_lose_nothing_that_follows() {
    let work = Workdir::new();
    let plugin = work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &pipeline("."));
    let (expected, feeder) = feed(&work, 30, Duration::from_millis(100));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("the first batch files", Duration::from_secs(20), || !work.batches("out").is_empty());
    // The serving version stays when its file goes; a new file later is a new version.
    std::fs::remove_file(&plugin).unwrap();
    running.wait_for("plugin file removed; the serving version stays", Duration::from_secs(10));
    // The sink's directory moved away (an operator's slip): what follows is written into a new
    // one at once; the run goes on, and the two hold every word once.
    std::fs::rename(work.path("out"), work.path("out-moved")).unwrap();
    feeder.join().unwrap();
    let both = || {
        let mut all = work.ledger("out-moved");
        for (word, n) in work.ledger("out") {
            *all.entry(word).or_insert(0) += n;
        }
        all
    };
    wait_until("every word counted", Duration::from_secs(60), || both() == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(lost_and_duplicated(&expected, &both()), (0, 0));
}

/// libfaketime, which `scripts/setup-faketime.sh` installs (Debian's `faketime`).
fn libfaketime() -> PathBuf {
    let candidates =
        ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"];
    let found =
        std::env::var_os("SLUICE_LIBFAKETIME").map(PathBuf::from).into_iter().chain(candidates.map(PathBuf::from));
    found
        .into_iter()
        .find(|p| p.exists())
        .expect("libfaketime: run scripts/setup-faketime.sh (or set SLUICE_LIBFAKETIME)")
}

/// The batch times of a run's log, in the order its batches ran.
fn batch_times(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| line.split_once("batch ").and_then(|(_, rest)| rest.split_once(" ms")))
        .filter_map(|(time, _)| time.parse().ok())
        .collect()
}

/// A 1 s window of a batch's `[word, count]` records: the sum of the batches in (end - 1 s, end].
fn window_of(batches: &BTreeMap<u64, Vec<serde_json::Value>>, end: u64) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for records in batches.range(end.saturating_sub(1000) + 1..=end).map(|(_, r)| r) {
        for record in records {
            *sums.entry(record[0].as_str().unwrap().to_string()).or_insert(0) += record[1].as_u64().unwrap();
        }
    }
    sums
}

/// The engine's wall clock (libfaketime, read from a file it rereads every second) goes an hour
/// back mid-run, then two hours forward: batches go on every interval through both, their
/// times strictly increasing; each step is logged; every word is counted once; and a 1 s
/// window (with an inverse) holds exactly the batches whose times fall in it, the step forward
/// included.
#[test]
fn the_wall_clock_stepped_back_and_forward_keeps_batch_times_increasing_and_counts_exact() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let windowed = "\n[[stages]]\nname = \"windowed\"\ninput = \"counts\"\nop = \"reduce_by_key_and_window\"\n\
                    plugin = \"wordcount\"\nfunction = \"sum\"\ninverse = \"subtract\"\nwindow = \"1s\"\n\n\
                    [[sinks]]\nname = \"win\"\ninput = \"windowed\"\ntype = \"file\"\npath = \"./win\"\n";
    work.write("pipeline.toml", &(pipeline(".") + windowed));
    let offset = work.write("faketime", "+0\n");
    work.set_env("LD_PRELOAD", libfaketime().to_str().unwrap());
    work.set_env("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap());
    work.set_env("FAKETIME_CACHE_DURATION", "1");
    work.set_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let (expected, feeder) = feed(&work, 40, Duration::from_millis(150));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("the first batch files", Duration::from_secs(20), || !work.batches("out").is_empty());
    work.write("faketime", "-1h\n");
    running.wait_for("the wall clock stepped back", Duration::from_secs(10));
    let at_step = batch_times(&running.log()).len();
    std::thread::sleep(Duration::from_secs(2));
    let after_step = batch_times(&running.log()).len();
    assert!(after_step >= at_step + 5, "batches go on every 200 ms: {at_step} then {after_step} two seconds on");
    work.write("faketime", "+1h\n");
    running.wait_for("the wall clock stepped forward", Duration::from_secs(10));
    feeder.join().unwrap();
    wait_until("every word counted", Duration::from_secs(60), || work.ledger("out") == expected);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let times = batch_times(&log);
    assert!(times.len() > 20, "{times:?}");
    assert!(times.windows(2).all(|w| w[1] > w[0]), "batch times strictly increasing: {times:?}");
    assert_eq!(lost_and_duplicated(&expected, &work.ledger("out")), (0, 0));
    let per_batch = work.batches("out");
    let windows = work.batches("win");
    assert!(windows.len() > 20, "window outputs: {}", windows.len());
    for (&end, records) in &windows {
        // A key whose count went back to 0 may stay in the window's output, as in Spark.
        let got: BTreeMap<String, u64> = records
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(got, window_of(&per_batch, end), "the window ending at {end} ms");
    }
}
