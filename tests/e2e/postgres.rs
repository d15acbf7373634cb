//! The PostgreSQL sink against a real server (`scripts/setup-postgres.sh`, or
//! `SLUICE_TEST_PG_URL`): exactly once across `kill -9`s in upsert and append mode, the
//! guarantee `sluice check` prints, missing and mismatched tables named, the database going
//! away mid-stream, a bad row, bad config. Each test works in a database of its own, dropped at
//! the end; what the sink wrote is read back with `psql`, not with the sink's code.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::*;

/// The server's URL (its `postgres` database), set up once per test run.
fn server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let out = Command::new(repo().join("scripts/setup-postgres.sh")).output().expect("run setup-postgres.sh");
        assert!(out.status.success(), "setup-postgres.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// `SELECT`s and statements through psql, on `url`; stdout (unaligned, tab-separated).
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-AtqX", "-v", "ON_ERROR_STOP=1", "-F", "\t", "-c", sql])
        .output()
        .expect("psql is installed with the server");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A database of one test's own, dropped when it ends.
pub struct Db {
    name: String,
    pub url: String,
}

impl Db {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sluice_{tag}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        psql(server(), &format!("DROP DATABASE IF EXISTS {name}"));
        psql(server(), &format!("CREATE DATABASE {name}"));
        let (base, _) = server().rsplit_once('/').unwrap();
        Self { url: format!("{base}/{name}"), name }
    }

    pub fn sql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }

    /// `key → value` of a two-column query.
    pub fn counts(&self, sql: &str) -> BTreeMap<String, u64> {
        self.sql(sql)
            .lines()
            .map(|line| {
                let (key, value) = line.split_once('\t').unwrap();
                (key.to_string(), value.parse().unwrap())
            })
            .collect()
    }

    /// The database's `host:port/name`, as the sink's messages name it.
    fn label(&self) -> String {
        let rest = self.url.split_once('@').unwrap().1;
        rest.to_string()
    }

    /// Ends every connection to the database but ours (what a restart does to clients).
    fn terminate_connections(&self) {
        psql(
            server(),
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        );
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([server(), "-qX", "-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// Directory → word count → `[[sinks]]` given; checkpoints on.
fn pipeline(sinks: &str) -> String {
    format!(
        r#"[pipeline]
name = "pg-test"
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
{sinks}"#
    )
}

/// Running totals upserted into `totals`, every batch's counts appended to `batch_counts`.
fn totals_and_counts(url: &str) -> String {
    pipeline(&format!(
        r#"
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
    ))
}

fn workdir(pipeline_text: &str) -> Workdir {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.write("pipeline.toml", pipeline_text);
    std::fs::create_dir(work.path("in")).unwrap();
    work
}

/// Writes `files` files of the corpus into `in/` (aside, then moved in), one every `pause`;
/// returns the reference counts and the writer.
fn feed(work: &Workdir, files: usize, pause: Duration) -> (BTreeMap<String, u64>, std::thread::JoinHandle<()>) {
    let inputs: Vec<Vec<String>> = (0..files).map(|i| corpus(600, 8, 500 + i as u64)).collect();
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
            std::thread::sleep(pause);
        }
    });
    (expected, feeder)
}

const TOTALS: &str = "SELECT key, value FROM totals";
const SUMMED: &str = "SELECT key, sum(value)::bigint FROM batch_counts GROUP BY key";

/// Runs the pipeline until `totals` equals `expected` (or a minute passed), then stops it.
fn finish_until_exact(work: &Workdir, db: &Db, expected: &BTreeMap<String, u64>) -> String {
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.counts(TOTALS) != *expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    log
}

#[test]
fn upserted_totals_and_appended_counts_are_exact_across_twelve_kill_9s() {
    let db = Db::new("crash");
    // A checkpoint every 4 batches: a restart replays up to 4 batches the sinks had committed.
    let text = totals_and_counts(&db.url)
        .replace("checkpoint_dir = \"ckpt\"", "checkpoint_dir = \"ckpt\"\ncheckpoint_every = 4");
    let work = workdir(&text);
    let (expected, feeder) = feed(&work, 40, Duration::from_millis(250));
    let mut rng = Lcg::seeded();
    let (mut replayed, mut skipped) = (0, 0);
    let mut tally = |log: &str| {
        replayed += log.lines().filter(|l| l.contains(" ms (replayed): ")).count();
        skipped += log.lines().filter(|l| l.contains("committed before (a replay)")).count();
    };
    let rounds = kills(12);
    for _ in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        std::thread::sleep(Duration::from_millis(200 + rng.below(1000)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        tally(&log);
    }
    feeder.join().unwrap();
    tally(&finish_until_exact(&work, &db, &expected));
    assert_eq!(db.counts(TOTALS), expected, "upserted running totals after {rounds} kill -9s");
    assert_eq!(db.counts(SUMMED), expected, "appended per-batch counts: no batch twice, none lost");
    assert!(skipped > 0, "some restart replayed a batch the sinks had committed");
    let batches = db.sql("SELECT count(*) FROM sluice_progress WHERE sink = 'pg_counts'");
    println!(
        "{} words in {} batches with counts; {replayed} batches replayed, {skipped} sink commits found done before",
        expected.values().sum::<u64>(),
        batches.trim()
    );
}

#[test]
fn check_prints_exactly_once_for_directory_to_postgres_with_checkpoints() {
    let db = Db::new("check");
    let work = workdir(&totals_and_counts(&db.url));
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("path files (directory) → pg_totals (postgres): exactly once"), "{stdout}");
    assert!(stdout.contains("path files (directory) → pg_counts (postgres): exactly once"), "{stdout}");
    // An unreachable database is a warning: the paths are still printed.
    work.write("pipeline.toml", &totals_and_counts("postgres://nobody@127.0.0.1:9/none"));
    let out = work.sluice(&["check", "pipeline.toml"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: pipeline.toml: sinks `pg_totals`.url: cannot reach PostgreSQL at 127.0.0.1:9/none"),
        "{stderr}"
    );
    assert!(stdout.contains("pg_totals (postgres): exactly once"), "{stdout}");
}

/// Directory → counts upserted into `counts`, which the test makes (or not).
fn counts_into(url: &str, table: &str, create: bool) -> String {
    pipeline(&format!(
        "\n[[sinks]]\nname = \"pg\"\ninput = \"counts\"\ntype = \"postgres\"\nurl = \"{url}\"\n\
         table = \"{table}\"\nmode = \"upsert\"\nkey = [\"key\"]\ncreate_table = {create}\n"
    ))
}

#[test]
fn a_missing_table_or_a_column_of_another_type_is_named_and_create_table_creates_it() {
    let db = Db::new("schema");
    let work = workdir(&counts_into(&db.url, "counts", false));
    let check = |work: &Workdir| {
        let out = work.sluice(&["check", "pipeline.toml"]);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = check(&work);
    let missing = format!("pipeline.toml: sinks `pg`.table: table `counts` in {}: does not exist", db.label());
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(stderr.contains("or set create_table = true"), "{stderr}");
    work.write("in/a.txt", "one two two\n");
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(30));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(
        log.contains("sink `pg` cannot write batch")
            && log.contains("table `counts`")
            && log.contains("does not exist"),
        "log:\n{log}"
    );
    db.sql("CREATE TABLE counts (key text PRIMARY KEY, value text)");
    let stderr = check(&work);
    assert!(
        stderr.contains("table `counts`")
            && stderr.contains("column `value`: expected bigint (for u64")
            && stderr.contains("found text"),
        "{stderr}"
    );
    work.write("pipeline.toml", &counts_into(&db.url, "fresh", true));
    let running = work.spawn(&["pipeline.toml", "--no-ui", "--fresh"]);
    running.wait_for("created the table sink=pg table=fresh", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.sql("SELECT count(*) FROM fresh").trim() != "2" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    let columns = db.sql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_name = 'fresh' ORDER BY ordinal_position",
    );
    assert_eq!(columns, "key\ttext\tNO\nvalue\tbigint\tNO\n");
    assert_eq!(db.counts("SELECT key, value FROM fresh"), BTreeMap::from([("one".into(), 1), ("two".into(), 2)]));
}

#[test]
fn an_integer_written_to_a_timestamptz_column_is_ms_since_the_epoch() {
    let db = Db::new("times");
    db.sql("CREATE TABLE at_times (key text PRIMARY KEY, value timestamptz NOT NULL)");
    let work = workdir(&counts_into(&db.url, "at_times", false));
    work.write("in/a.txt", "a b b\n");
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.sql("SELECT count(*) FROM at_times").trim() != "2" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    let millis = db.counts("SELECT key, (extract(epoch FROM value) * 1000)::bigint FROM at_times");
    assert_eq!(millis, BTreeMap::from([("a".into(), 1), ("b".into(), 2)]));
}

/// A TCP proxy to the server that can be made to drop every connection and refuse new ones.
struct Proxy {
    address: String,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_up, streams) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let server = match TcpStream::connect(&upstream) {
                    Ok(server) if is_up.load(Ordering::SeqCst) => server,
                    _ => continue, // down: the connection is dropped at once
                };
                let mut streams = streams.lock().unwrap();
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    streams.push(from.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { address, up, open }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn postgres_going_away_mid_stream_delays_batches_and_loses_none() {
    let db = Db::new("outage");
    let host_port = db.label().split_once('/').unwrap().0.to_string();
    let proxy = Proxy::start(host_port.clone());
    let through_proxy = db.url.replace(&host_port, &proxy.address);
    let work = workdir(&totals_and_counts(&through_proxy));
    let (expected, feeder) = feed(&work, 30, Duration::from_millis(300));
    // Down at start: the sinks cannot open, and their first writes wait for the database.
    proxy.down();
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("cannot open the sink yet", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    proxy.up();
    running.wait_for("created the table sink=pg_counts", Duration::from_secs(20));
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(600));
        db.terminate_connections(); // what a server restart does to its clients
        std::thread::sleep(Duration::from_millis(600));
        proxy.down(); // unreachable for a while: refused, mid-transaction or not
        std::thread::sleep(Duration::from_millis(1500));
        proxy.up();
    }
    feeder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.counts(TOTALS) != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "the run survived the outages; log:\n{log}");
    assert!(log.contains("cannot reach PostgreSQL") && log.contains("retrying sink=pg_"), "log:\n{log}");
    let retries = log.lines().filter(|l| l.contains("cannot reach PostgreSQL")).count();
    println!("{retries} retries logged across 4 terminations and 4 outages");
    assert_eq!(db.counts(TOTALS), expected, "upserted totals after the outages");
    assert_eq!(db.counts(SUMMED), expected, "appended counts after the outages: each batch once");
}

/// A database that stops taking writes for a while (a lock another session holds on the table)
/// is a slow consumer: with backpressure the socket stops reading while batches wait, memory
/// stays bounded, and once the lock goes the scheduling delay comes back down.
#[test]
fn a_stalled_database_is_met_with_backpressure_and_the_delay_recovers_after_it() {
    let db = Db::new("stall");
    let work = Workdir::new();
    let address = endless_server();
    work.write(
        "pipeline.toml",
        &format!(
            "[pipeline]\nname = \"stall\"\nbatch_interval = \"500ms\"\nblock_interval = \"100ms\"\nbackpressure = true\n\n\
             [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"{address}\"\nmax_rate = 200000\n\n\
             [[stages]]\nname = \"n\"\ninput = \"lines\"\nop = \"count\"\n\n\
             [[sinks]]\nname = \"pg\"\ninput = \"n\"\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"counts\"\ncreate_table = true\n",
            db.url
        ),
    );
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    wait_until("four batches in the table", Duration::from_secs(30), || {
        db.sql("SELECT to_regclass('counts') IS NOT NULL") == "t\n"
            && db.sql("SELECT count(*) >= 4 FROM counts") == "t\n"
    });
    let calm = running.scheduling_delays().len();
    // 8 s in which every write to the table waits for the lock.
    let mut lock = Command::new("psql")
        .args([&db.url, "-Xq", "-c", "BEGIN; LOCK TABLE counts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut max_rss = 0;
    let stalled = Instant::now();
    while lock.try_wait().unwrap().is_none() {
        max_rss = max_rss.max(running.rss_mib());
        std::thread::sleep(Duration::from_millis(200));
    }
    let stall = stalled.elapsed();
    let during = running.scheduling_delays().len();
    // After the stall: 10 s more of the same endless input.
    std::thread::sleep(Duration::from_secs(10));
    max_rss = max_rss.max(running.rss_mib());
    let delays = running.scheduling_delays();
    let log = running.log();
    drop(running);
    println!(
        "stalled database: {stall:?}; batches before/during/after {calm}/{}/{}; delays {delays:?} ms; max RSS {max_rss} MiB",
        during - calm,
        delays.len() - during
    );
    let peak = delays[calm..].iter().max().copied().unwrap_or(0);
    assert!(peak >= 4_000, "the batches waited for the lock (peak scheduling delay {peak} ms); log:\n{log}");
    let tail = &delays[delays.len().saturating_sub(3)..];
    assert!(
        delays.len() >= during + 6 && tail.iter().all(|&d| d < 1_000),
        "after the stall the delay came down below 1 s: {delays:?}; log:\n{log}"
    );
    assert!(max_rss < 400, "resident memory stayed below 400 MiB, was {max_rss} MiB");
    // Every completed batch has its row: the stall delayed writes, it lost none.
    let rows: usize = db.sql("SELECT count(*) FROM counts").trim().parse().unwrap();
    assert!(rows >= delays.len(), "{rows} rows for {} completed batches", delays.len());
}

#[test]
fn a_value_out_of_range_fails_the_batch_naming_the_key_and_the_database_message() {
    let db = Db::new("badrow");
    db.sql("CREATE TABLE counts (key text PRIMARY KEY, value smallint)");
    let work = workdir(&counts_into(&db.url, "counts", false));
    work.write("in/a.txt", &format!("small\n{}\n", "big ".repeat(40_000)));
    let started = Instant::now();
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(60));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(
        log.contains("sink `pg` cannot commit batch")
            && log.contains(
                "table `counts`: row with key (key) = (big): value \"40000\" is out of range for type smallint"
            ),
        "log:\n{log}"
    );
    assert!(log.contains("stopped without checkpointing it"), "log:\n{log}");
    assert!(started.elapsed() < Duration::from_secs(30), "not retried for long: {:?}", started.elapsed());
    assert_eq!(db.sql("SELECT count(*) FROM counts"), "0\n", "the batch is not committed in part");
}

#[test]
fn a_check_constraint_fails_the_batch_naming_the_row_and_the_constraint() {
    let db = Db::new("check_constraint");
    db.sql("CREATE TABLE counts (key text NOT NULL, value bigint NOT NULL CONSTRAINT few CHECK (value < 100))");
    let work = workdir(&pipeline(&format!(
        "\n[[sinks]]\nname = \"pg\"\ninput = \"counts\"\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"counts\"\n",
        db.url
    )));
    work.write("in/a.txt", &format!("{}\n", "many ".repeat(150)));
    let (code, log) = work.spawn(&["pipeline.toml", "--no-ui"]).finish(Duration::from_secs(60));
    assert_eq!(code, 1, "log:\n{log}");
    assert!(
        log.contains("table `counts`: row (key, value) = (many, 150): new row for relation \"counts\" violates check constraint \"few\""),
        "log:\n{log}"
    );
}

#[test]
fn bad_config_names_the_file_the_field_and_what_was_expected() {
    let sink = |name: &str, fields: &str| {
        format!(
            "\n[[sinks]]\nname = \"{name}\"\ninput = \"counts\"\ntype = \"postgres\"\ntable = \"t_{name}\"\n{fields}\n"
        )
    };
    let url = "url = \"postgres://me@127.0.0.1:9/db\"";
    let sinks = [
        sink("both", &format!("{url}\nurl_env = \"PGURL\"")),
        sink("neither", ""),
        sink("no_key", &format!("{url}\nmode = \"upsert\"")),
        sink("not_a_column", &format!("{url}\nmode = \"upsert\"\nkey = [\"word\"]")),
        sink("first", url),
        sink("again", url).replace("t_again", "public.t_first"),
    ]
    .concat();
    let work = workdir(&pipeline(&sinks));
    let out = work.sluice(&["check", "pipeline.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "pipeline.toml: sinks `both`.url: give `url` or `url_env`, not both",
        "pipeline.toml: sinks `neither`.url: missing: `url = \"postgres://user@host:5432/database\"` or `url_env = ",
        "pipeline.toml: sinks `no_key`.key: mode = \"upsert\" needs `key = [\"<column>\", ...]`",
        "pipeline.toml: sinks `again`.table: sink `first` writes to the same table",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    // Field problems come first; the record type is checked once they are fixed.
    let work = workdir(&pipeline(&sink("not_a_column", &format!("{url}\nmode = \"upsert\"\nkey = [\"word\"]"))));
    let stderr = String::from_utf8_lossy(&work.sluice(&["check", "pipeline.toml"]).stderr).to_string();
    assert!(
        stderr.contains("pipeline.toml: sinks `not_a_column`.key: `word` is not a column of the records (type (String, u64): columns key, value)"),
        "{stderr}"
    );
    let work = workdir(&pipeline(&sink("typo", &format!("{url}\ntabel = \"x\""))));
    let stderr = String::from_utf8_lossy(&work.sluice(&["check", "pipeline.toml"]).stderr).to_string();
    assert!(stderr.contains("pipeline.toml: TOML parse error") && stderr.contains("unknown field `tabel`"), "{stderr}");
}
