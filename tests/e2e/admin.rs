//! The admin API of a running engine: metrics in Prometheus format, status, deploy and
//! rollback through the `sluice` CLI, and the token rule off loopback.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET, returning (status, body).
pub fn get(address: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Samples of a Prometheus text exposition: `name{labels}` → value. Checks every line parses.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(matches!(words.first(), Some(&"HELP") | Some(&"TYPE")), "bad comment line: {line}");
            if words[0] == "TYPE" {
                assert!(matches!(words[2], "counter" | "gauge"), "bad type: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name: {line}");
        samples.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}")));
    }
    samples
}

#[test]
fn deploy_and_rollback_through_the_cli_keep_the_ledger_exact_and_metrics_agree() {
    let lines = corpus(60_000, 10, 31);
    let expected = count_words(&lines);
    let feed = lines.chunks(1_000).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, Duration::from_millis(60)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", Duration::from_secs(30));

    let upper = plugin("uppercase");
    let out = work.sluice(&["deploy", "wordcount", upper.to_str().unwrap(), "--ui", &ui]);
    assert!(out.status.success(), "deploy: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed"), "{}", String::from_utf8_lossy(&out.stdout));
    running.wait_for("plugin swapped", Duration::from_secs(30));

    let broken = work.write("broken.wasm", "not wasm");
    let out = work.sluice(&["deploy", "wordcount", broken.to_str().unwrap(), "--ui", &ui]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a WebAssembly module"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = work.sluice(&["rollback", "wordcount", "--ui", &ui]);
    assert!(out.status.success(), "rollback: {}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    while running.log().matches("plugin swapped").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "rollback never served; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = work.sluice(&["status", "--ui", &ui]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pipeline"], "wordcount-test");
    // Rolled back to the first version; no earlier one is left to roll back to.
    let original = work.sluice(&["check", "pipeline.toml"]);
    let original = String::from_utf8_lossy(&original.stdout).to_string();
    let hash = status["plugins"][0]["hash"].as_str().unwrap();
    assert!(original.contains(&format!("sha256 {hash}")), "serving {hash}; check says:\n{original}");
    assert_eq!(status["plugins"][0]["previous"].as_array().unwrap().len(), 0, "{status}");
    let out = work.sluice(&["rollback", "wordcount", "--ui", &ui]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no earlier version"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, body) = get(&ui, "/metrics", None);
    assert_eq!(code, 200);
    let metrics = parse_prometheus(&body);
    assert_eq!(metrics["sluice_plugin_swaps_total"], 2.0, "{body}");
    let (_, body) = get(&ui, "/api/status", None);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(metrics["sluice_batches_total"] >= 1.0);
    assert!(metrics["sluice_batches_total"] <= status["batches"].as_f64().unwrap(), "status is read after metrics");

    let (code, log) = running.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();
    // Old, new, then old version again: every word counted once, in one case or the other.
    let mut folded = BTreeMap::new();
    for (word, count) in work.ledger("out") {
        *folded.entry(word.to_lowercase()).or_insert(0) += count;
    }
    assert_eq!(folded, expected);
    let batches = log.matches(" records in ").count() as f64;
    assert!(batches >= metrics["sluice_batches_total"], "metrics agree with the batch lines");
    let received: f64 =
        metrics.iter().filter(|(k, _)| k.starts_with("sluice_records_received_total")).map(|(_, v)| v).sum();
    assert!(received <= 60_000.0 && received > 0.0, "{received}");
}

#[test]
fn off_loopback_the_admin_api_needs_a_token_and_refuses_requests_without_it() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    work.write("pipeline.toml", &wordcount_pipeline(&address, "wordcount.wasm", "300ms", "100ms"));
    let port = free_port();
    let ui = format!("0.0.0.0:{port}");

    let out = work.sluice(&["run", "pipeline.toml", "--ui", &ui]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin-token"), "{}", String::from_utf8_lossy(&out.stderr));

    let running = work.spawn(&["pipeline.toml", "--ui", &ui, "--admin-token", "s3cret"]);
    running.wait_for("admin API at /api", Duration::from_secs(20));
    let local = format!("127.0.0.1:{port}");
    assert_eq!(get(&local, "/metrics", None).0, 401);
    assert_eq!(get(&local, "/api/status", Some("wrong")).0, 401);
    assert_eq!(get(&local, "/api/status", Some("s3cret")).0, 200);
    // The dashboard, its data and its event stream too; a browser passes the token in the URL.
    for path in ["/", "/api/dashboard", "/api/events"] {
        assert_eq!(get(&local, path, None).0, 401, "{path} without a token");
        assert_eq!(get(&local, &format!("{path}?token=wrong"), None).0, 401, "{path} with a wrong token");
    }
    assert_eq!(get(&local, "/?token=s3cret", None).0, 200);
    assert_eq!(get(&local, "/api/dashboard?token=s3cret", None).0, 200);
    let out = work.sluice(&["pause", "lines", "--ui", &local]);
    assert_eq!(out.status.code(), Some(1), "no token, no pause");
    let out = work.sluice(&["rollback", "wordcount", "--ui", &local]);
    assert_eq!(out.status.code(), Some(1), "no token, no rollback");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
}

#[test]
fn rollback_to_picks_any_earlier_version_by_hash_and_keeps_the_current_one() {
    let server = LineServer::start(Feed::HoldOpen(join_lines(&corpus(1_000, 5, 8))));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "300ms", "100ms"));
    let ui = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &ui]);
    running.wait_for("records out", Duration::from_secs(30));
    let status = |work: &Workdir| -> serde_json::Value {
        serde_json::from_slice(&work.sluice(&["status", "--ui", &ui]).stdout).unwrap()
    };
    let original = status(&work)["plugins"][0]["hash"].as_str().unwrap().to_string();
    let out = work.sluice(&["deploy", "wordcount", plugin("uppercase").to_str().unwrap(), "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let upper = status(&work)["plugins"][0]["hash"].as_str().unwrap().to_string();
    assert_ne!(upper, original);

    let out = work.sluice(&["rollback", "wordcount", "--to", &original[..6], "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let now = status(&work);
    assert_eq!(now["plugins"][0]["hash"], original.as_str());
    let previous: Vec<&str> =
        now["plugins"][0]["previous"].as_array().unwrap().iter().map(|v| v["hash"].as_str().unwrap()).collect();
    assert_eq!(previous, [upper.as_str()], "the version rolled back from stays available");
    // And forward again, to the version that was current.
    let out = work.sluice(&["rollback", "wordcount", "--to", &upper, "--ui", &ui]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status(&work)["plugins"][0]["hash"], upper.as_str());
    let out = work.sluice(&["rollback", "wordcount", "--to", "ffffffff", "--ui", &ui]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starting with `ffffffff`") && stderr.contains(&original), "{stderr}");
    running.wait_for("plugin swapped", Duration::from_secs(10));
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
}
