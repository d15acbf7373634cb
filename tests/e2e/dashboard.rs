//! The dashboard in a real headless Chromium (Debian's, driven by playwright-core; see
//! tests/browser/dashboard.mjs): served by the binary, live charts, live results of a
//! `dashboard` sink, a CLI deploy in the swap history, pause and resume from the page. And
//! `/metrics`, read by a Prometheus text parser, agreeing with the page's batch table.

use std::process::Command;
use std::time::Duration;

use crate::admin::{free_port, get, prometheus, sample};
use crate::support::*;

#[test]
fn the_dashboard_in_headless_chromium_shows_live_charts_results_swaps_and_controls() {
    let browser = repo().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and playwright-core: run scripts/setup-browser.sh (scripts/test.sh does)"
    );
    // Every batch has more apples than bananas than cherries than dates.
    let line = "apple apple apple apple banana banana banana cherry cherry date".to_string();
    let chunks = (0..600).map(|_| join_lines(&vec![line.clone(); 25])).collect();
    let server = LineServer::start(Feed::Paced(chunks, Duration::from_millis(100)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let pipeline = wordcount_pipeline(&server.address, "wordcount.wasm", "500ms", "100ms")
        + "\n[[sinks]]\nname = \"top words\"\ninput = \"counts\"\ntype = \"dashboard\"\nchart = \"bar\"\nlimit = 3\n";
    work.write("pipeline.toml", &pipeline);
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", Duration::from_secs(30));
    let shots = repo().join("target/screenshots/dashboard");
    let out = Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .arg(format!("http://{ui}/"))
        .arg(SLUICE)
        .arg("wordcount")
        .arg(plugin("uppercase"))
        .arg(r#"["apple","banana","cherry"]"#)
        .arg(r#"["APPLE","BANANA","CHERRY"]"#)
        .arg(&shots)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser check failed:\n{stdout}\n{}\nengine log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        running.log()
    );
    let findings: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    println!("browser findings: {findings}; screenshots in {}", shots.display());
    assert_eq!(findings["title"], "Sluice");
    let points = findings["points"].as_array().unwrap();
    assert!(points[1].as_u64() > points[0].as_u64(), "{findings}");
    assert_eq!(findings["connection"], "live", "{findings}");
    assert_eq!(findings["top"], serde_json::json!(["apple", "banana", "cherry"]));
    assert_eq!(findings["bars"], 3, "{findings}");
    assert_eq!(findings["topAfterDeploy"], serde_json::json!(["APPLE", "BANANA", "CHERRY"]));
    for shot in ["1-live.png", "2-deployed.png", "3-paused.png", "4-resumed.png"] {
        assert!(std::fs::metadata(shots.join(shot)).unwrap().len() > 10_000, "{shot} was saved");
    }
    // The log names the pause and the resume.
    assert!(running.log().contains("source paused") && running.log().contains("source resumed"));

    // /metrics agrees with the batch table the page draws from.
    let before = prometheus(&ui);
    let (_, body) = get(&ui, "/api/dashboard", None);
    let after = prometheus(&ui);
    let dashboard: serde_json::Value = serde_json::from_str(&body).unwrap();
    let completed = dashboard["history"]["completed"].as_array().unwrap();
    let batches = completed.len() as f64;
    let records: f64 = completed.iter().map(|b| b["records"].as_f64().unwrap()).sum();
    let range = |name: &str| (sample(&before, name), sample(&after, name));
    let (b0, b1) = range("sluice_batches_total");
    assert!(b0 <= batches && batches <= b1, "batches: metrics {b0}..{b1}, table {batches}");
    let (r0, r1) = range("sluice_records_processed_total");
    assert!(r0 <= records && records <= r1, "records: metrics {r0}..{r1}, table {records}");
    assert!(records > 0.0);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
}

/// Reads server-sent events from `/api/events` on a thread, each `data:` line parsed as JSON.
fn follow_events(ui: &str) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let url = format!("http://{ui}/api/events");
    std::thread::spawn(move || {
        let response = ureq::get(&url).call().expect("the event stream opens");
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        for line in std::io::BufRead::lines(std::io::BufReader::new(response.into_reader())) {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ")
                && tx.send(serde_json::from_str(data).expect("each event is JSON")).is_err()
            {
                break;
            }
        }
    });
    rx
}

fn next_event(
    events: &std::sync::mpsc::Receiver<serde_json::Value>,
    what: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let event = events.recv_timeout(left).expect("the expected event within 20 s");
        if what(&event) {
            return event;
        }
    }
}

#[test]
fn the_event_stream_reports_batches_plugins_and_receivers_as_json_for_tools() {
    let lines = corpus(20_000, 8, 77);
    let chunks = lines.chunks(200).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(chunks, Duration::from_millis(100)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui, "--quiet"]);
    running.wait_for("dashboard at /", Duration::from_secs(30));
    let events = follow_events(&ui);
    let queued = next_event(&events, |e| e["type"] == "batch_queued");
    let completed = next_event(&events, |e| e["type"] == "batch_completed" && e["records"].as_u64() > Some(0));
    assert!(completed["time_ms"].as_u64() >= queued["time_ms"].as_u64(), "{completed}");
    assert!(completed["sources"]["lines"].as_u64() > Some(0), "{completed}");
    let stages: Vec<&str> =
        completed["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(stages, ["counts"], "words runs fused into counts: {completed}");
    assert!(completed["versions"][0].as_str().unwrap().starts_with("wordcount@"), "{completed}");

    let out = work.sluice(&["deploy", "wordcount", plugin("uppercase").to_str().unwrap(), "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deployed = next_event(&events, |e| e["type"] == "plugin" && e["action"] == "deployed");
    let swapped = next_event(&events, |e| e["type"] == "plugin" && e["action"] == "swapped");
    assert_eq!(deployed["to"], swapped["to"]);
    let out = work.sluice(&["deploy", "wordcount", plugin("old_abi").to_str().unwrap(), "--ui", &ui]);
    assert!(!out.status.success());
    let rejected = next_event(&events, |e| e["type"] == "plugin" && e["action"] == "rejected");
    assert!(rejected["detail"].as_str().unwrap().contains("ABI version 99"), "{rejected}");

    let out = work.sluice(&["pause", "lines", "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    next_event(&events, |e| e["type"] == "receiver" && e["action"] == "paused" && e["source"] == "lines");
    // While paused, batches carry no records from the source: once the batches cut before the
    // pause (and a chunk the reader had in flight) are through — a loaded machine may queue a few
    // — every batch is empty.
    let mut before_idle = 0;
    while next_event(&events, |e| e["type"] == "batch_completed")["records"] != 0 {
        before_idle += 1;
        assert!(before_idle < 20, "20 batches with records after the pause");
    }
    for _ in 0..3 {
        let idle = next_event(&events, |e| e["type"] == "batch_completed");
        assert_eq!(idle["records"], 0, "paused, yet a batch had records: {idle}");
    }
    let out = work.sluice(&["resume", "lines", "--ui", &ui]);
    assert!(out.status.success());
    next_event(&events, |e| e["type"] == "receiver" && e["action"] == "resumed");
    next_event(&events, |e| e["type"] == "batch_completed" && e["records"].as_u64() > Some(0));
    let (code, log) = running.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(!log.contains("records out ["), "--quiet hides the per-batch lines; log:\n{log}");
}
