//! The Flume source against a third-party Flume RPC client: PyPI's thrift package with code
//! generated from Flume's own IDL by Debian's thrift-compiler (scripts/setup-flume.sh), driven
//! by tests/flume/client.py.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::admin::{free_port, get};
use crate::support::*;

/// The directory of the generated Python code (set up once per test run).
fn generated() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo().join("scripts/setup-flume.sh")).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "scripts/setup-flume.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

fn client_command(args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command.arg(repo().join("tests/flume/client.py")).args(args).env("PYTHONPATH", generated());
    command
}

/// Runs the client to its end; its standard output.
fn client(args: &[&str]) -> String {
    let out = client_command(args).output().unwrap();
    assert!(out.status.success(), "client.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A pipeline of one Flume source on `address` into a file sink `out/`, plus `extra` source
/// fields.
fn flume_pipeline(address: &str, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "flume-test"
batch_interval = "400ms"
block_interval = "100ms"
checkpoint_dir = "checkpoints"

[[sources]]
name = "events"
type = "flume"
address = "{address}"
{extra}

[[sinks]]
name = "out"
input = "events"
type = "file"
path = "out"
"#
    )
}

/// Every line the file sink wrote, over all batch files.
fn written(work: &Workdir) -> Vec<String> {
    work.batches("out").into_values().flatten().map(|r| r.as_str().unwrap().to_string()).collect()
}

#[test]
fn nothing_answered_ok_is_lost_across_20_kill_9s() {
    let address = format!("127.0.0.1:{}", free_port());
    let work = Workdir::new();
    work.write("pipeline.toml", &flume_pipeline(&address, "wal = true"));
    let check = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        said.contains("path events (flume, wal) → out (file): at least once (OK answered once the events are in the write-ahead log)"),
        "{said}"
    );
    let rounds = kills(20);
    // 2,000 events a kill, so the input spans them however many there are.
    let events = 2_000 * rounds.max(20) as u64;
    let ledger = work.path("ledger.txt");
    // About 100 events per call, as a Flume sink's default batch.
    let mut sender: Child =
        client_command(&["send", &address, "0", &events.to_string(), "100", ledger.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut rng = Lcg::seeded();
    let mut replayed = 0;
    for _ in 0..rounds {
        let running = work.spawn(&["pipeline.toml", "--no-ui"]);
        std::thread::sleep(Duration::from_millis(600 + rng.below(900)));
        running.signal("KILL");
        let (code, log) = running.finish(Duration::from_secs(10));
        assert_eq!(code, -1, "killed by signal 9; log:\n{log}");
        replayed += replayed_with_records(&log);
    }
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    // Up before it is stopped (with many kills the client may be done already, and a SIGTERM
    // before the engine has started is the default one).
    running.wait_for("pipeline running", Duration::from_secs(30));
    let status = sender.wait().unwrap();
    let mut said = String::new();
    sender.stdout.take().unwrap().read_to_string(&mut said).unwrap();
    assert!(status.success(), "the client failed: {said}");
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let acked: BTreeSet<String> = std::fs::read_to_string(&ledger).unwrap().lines().map(str::to_string).collect();
    assert_eq!(acked.len() as u64, events, "the client had every event answered OK: {said}");
    let lines = written(&work);
    let distinct: BTreeSet<String> = lines.iter().cloned().collect();
    let lost: Vec<&String> = acked.difference(&distinct).take(10).collect();
    println!(
        "Flume → file after {rounds} kill -9s ({said}), {replayed} batches replayed: {} acknowledged, {} written, \
         {} distinct, {} lost, {} duplicated",
        acked.len(),
        lines.len(),
        distinct.len(),
        acked.difference(&distinct).count(),
        lines.len() - distinct.len()
    );
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    assert!(distinct.is_subset(&acked.iter().cloned().collect()), "only sent events were written");
}

#[test]
fn a_paused_or_held_source_answers_failed_and_takes_the_resent_events_after() {
    let address = format!("127.0.0.1:{}", free_port());
    let ui = format!("127.0.0.1:{}", free_port());
    let work = Workdir::new();
    work.write("pipeline.toml", &flume_pipeline(&address, "wal = true\nmax_batch = 50"));
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    assert_eq!(client(&["once", &address, "10"]).trim(), "OK");
    let out = work.sluice(&["pause", "events", "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Flume's Status has no "try later": FAILED, as Flume's own source answers a full channel.
    assert_eq!(client(&["once", &address, "10"]).trim(), "FAILED");
    assert_eq!(client(&["once", &address, "51"]).trim(), "ERROR", "more than max_batch");
    let (_, status) = get(&ui, "/api/status", None);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let answers = &status["sources"][0]["answers"];
    assert_eq!(
        (answers["ok"].as_u64(), answers["try_later"].as_u64(), answers["error"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert!(status["sources"][0]["last_error"].as_str().unwrap().contains("more than max_batch (50)"), "{status}");
    let (_, metrics) = get(&ui, "/metrics", None);
    assert!(metrics.contains("sluice_source_answers_total{source=\"events\",answer=\"try_later\"} 1"), "{metrics}");
    assert!(metrics.contains("sluice_source_connections{source=\"events\"}"), "{metrics}");
    let out = work.sluice(&["resume", "events", "--ui", &ui]);
    assert!(out.status.success());
    assert_eq!(client(&["once", &address, "10"]).trim(), "OK");
    wait_until("20 events written", Duration::from_secs(20), || written(&work).len() == 20);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(written(&work).len(), 20, "nothing of the refused calls was taken");
}

#[test]
fn a_max_rate_answers_failed_to_calls_over_it() {
    let address = format!("127.0.0.1:{}", free_port());
    let work = Workdir::new();
    work.write("pipeline.toml", &flume_pipeline(&address, "max_rate = 100"));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    let start = Instant::now();
    let said = client(&["send", &address, "0", "300", "50", work.path("ledger").to_str().unwrap()]);
    let elapsed = start.elapsed();
    let not_ok: u64 = said.split_whitespace().last().unwrap().parse().unwrap();
    assert!(not_ok > 0, "some calls over the rate were answered FAILED: {said}");
    assert!(elapsed >= Duration::from_millis(2_000), "300 events at 100/s take about 2.5 s or more: {elapsed:?}");
    wait_until("300 events written", Duration::from_secs(20), || written(&work).len() == 300);
    running.signal("TERM");
    assert_eq!(running.finish(Duration::from_secs(30)).0, 0);
}

/// Connects, writes `bytes`, and returns whether the server closed the connection (read 0
/// bytes or a reset) within a few seconds.
fn closed_after(address: &str, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn garbage_http_and_oversized_frames_close_their_connection_while_others_get_through() {
    let address = format!("127.0.0.1:{}", free_port());
    let work = Workdir::new();
    work.write("pipeline.toml", &flume_pipeline(&address, "wal = true\nmax_frame = \"64KiB\""));
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    // A well-behaved client keeps sending throughout.
    let ledger = work.path("ledger.txt");
    let sender = client_command(&["send", &address, "0", "2000", "20", ledger.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(closed_after(&address, format!("GET / HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()), "HTTP");
    let mut oversized = (1_000_000u32).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 4096]);
    assert!(closed_after(&address, &oversized), "a frame of 1 MB over max_frame 64 KiB");
    // A frame of the right size whose content is not a call: a compact message header with a
    // list claiming 2^31 - 1 events (refused before anything is reserved for it).
    let mut garbage = vec![0x82, 0x21, 0x01, 0x0b];
    garbage.extend_from_slice(b"appendBatch");
    garbage.extend_from_slice(&[0x19, 0xfc, 0xff, 0xff, 0xff, 0x07]);
    let mut framed = (garbage.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&garbage);
    assert!(closed_after(&address, &framed), "a call with an impossible list size");
    assert!(closed_after(&address, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]), "random bytes");
    let out = sender.wait_with_output().unwrap();
    assert!(out.status.success(), "the good client finished: {}", String::from_utf8_lossy(&out.stdout));
    wait_until("2000 events written", Duration::from_secs(20), || written(&work).len() >= 2000);
    let log = running.log();
    assert!(log.contains("the client speaks HTTP, not Flume's framed Thrift"), "log:\n{log}");
    assert!(log.contains("frame of 1000000 bytes is larger than max_frame (65536 bytes)"), "log:\n{log}");
    // The compact protocol refuses a count this large itself; a smaller impossible one is ours.
    assert!(
        log.contains("message too long") || log.contains("cannot be in a frame of at most 65536 bytes"),
        "log:\n{log}"
    );
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "the engine went on; log:\n{log}");
}

#[test]
fn records_carry_headers_and_event_windows_use_the_timestamp_header() {
    let address = format!("127.0.0.1:{}", free_port());
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
type = "flume"
address = "{address}"
format = "record"
protocol = "compact"

[[stages]]
name = "by_user"
input = "clicks"
op = "key_by"
plugin = "sessionize"
function = "flume_user"

[[stages]]
name = "per_10s"
input = "by_user"
op = "event_window"
window = "10s"
time_field = "timestamp"
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
    assert!(said.contains("stage by_user: (String, FlumeRecord)"), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(said.contains("path clicks (flume) → out (file): best effort"), "{said}");
    let running = work.spawn(&["pipeline.toml", "--no-ui"]);
    running.wait_for("pipeline running", Duration::from_secs(30));
    let base: u64 = 1_700_000_000_000;
    assert_eq!(client(&["clicks", &address, "100", "5", &base.to_string()]).trim(), "sent 100");
    std::thread::sleep(Duration::from_secs(1));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let windows: Vec<(String, u64, u64, u64)> = work
        .batches("out")
        .into_values()
        .flatten()
        .map(|r| {
            let w = &r[1];
            (r[0].as_str().unwrap().to_string(), w[0].as_u64().unwrap(), w[1].as_u64().unwrap(), w[2].as_u64().unwrap())
        })
        .collect();
    assert_eq!(windows.len(), 50, "every window closes at the stop: {windows:?}");
    for (user, start, end, count) in &windows {
        assert!(user.starts_with("user"), "{user}");
        assert_eq!((start % 10_000, end - start, *count), (0, 10_000, 2), "{user} {start}: event time, 2 clicks");
        assert!((base..base + 100_000).contains(start), "window {start} is in event time, not batch time");
    }
}

#[test]
fn flume_config_mistakes_name_the_file_and_field() {
    let work = Workdir::new();
    work.write(
        "pipeline.toml",
        r#"[pipeline]
name = "bad"
batch_interval = "1s"

[[sources]]
name = "a"
type = "flume"
address = "127.0.0.1:41414"
wal = true
max_batch = 0
max_frame = "12B"

[[sources]]
name = "b"
type = "flume"
address = "127.0.0.1:41414"
max_rate = 0

[[sources]]
name = "c"
type = "flume"
address = "nowhere"

[[sinks]]
name = "out"
input = "a"
type = "print"
"#,
    );
    let out = work.sluice(&["check", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for expected in [
        "pipeline.toml: sources `a`.wal: the write-ahead log lives in the checkpoint",
        "pipeline.toml: sources `a`.max_batch: must be at least 1 event",
        "pipeline.toml: sources `a`.max_frame: expected 1KiB to 1GiB, found 12 bytes",
        "pipeline.toml: sources `b`.address: source `a` listens on the same address",
        "pipeline.toml: sources `b`.max_rate: must be at least 1 record/s",
        "pipeline.toml: sources `c`.address: expected \"host:port\" to listen on",
    ] {
        assert!(said.contains(expected), "missing {expected:?} in:\n{said}");
    }
    work.write("bad-protocol.toml", "[pipeline]\nname = \"x\"\nbatch_interval = \"1s\"\n\n[[sources]]\nname = \"a\"\ntype = \"flume\"\naddress = \"127.0.0.1:1\"\nprotocol = \"json\"\n");
    let out = work.sluice(&["check", "bad-protocol.toml"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("bad-protocol.toml") && said.contains("`compact` or `binary`"), "{said}");
}
