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

/// A plain HTTP/1.1 POST of `body`, returning the status. Written whole before the answer is
/// read (a server refusing it early may stop reading: write errors are ignored).
fn post(address: &str, path: &str, token: Option<&str>, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(address).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

/// A Prometheus text exposition, read by a real parser; every sample is a counter or a gauge.
pub fn parse_prometheus(text: &str) -> prometheus_parse::Scrape {
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    for sample in &scrape.samples {
        assert!(
            matches!(
                sample.value,
                prometheus_parse::Value::Counter(_)
                    | prometheus_parse::Value::Gauge(_)
                    | prometheus_parse::Value::Untyped(_)
            ),
            "{} is not a counter or a gauge",
            sample.metric
        );
    }
    scrape
}

/// `/metrics` of the engine at `address`, parsed.
pub fn prometheus(address: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(address, "/metrics", None);
    assert_eq!(status, 200);
    parse_prometheus(&body)
}

/// The values of every sample of metric `name` (one per label set).
pub fn samples<'a>(scrape: &'a prometheus_parse::Scrape, name: &'a str) -> impl Iterator<Item = f64> + 'a {
    scrape.samples.iter().filter(move |s| s.metric == name).map(move |s| match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name} is not a number"),
    })
}

/// The value of metric `name` (its first sample).
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    samples(scrape, name).next().unwrap_or_else(|| panic!("no {name}"))
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
    assert_eq!(sample(&metrics, "sluice_plugin_swaps_total"), 2.0, "{body}");
    let (_, body) = get(&ui, "/api/status", None);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(sample(&metrics, "sluice_batches_total") >= 1.0);
    assert!(
        sample(&metrics, "sluice_batches_total") <= status["batches"].as_f64().unwrap(),
        "status is read after metrics"
    );

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
    assert!(batches >= sample(&metrics, "sluice_batches_total"), "metrics agree with the batch lines");
    let received: f64 = samples(&metrics, "sluice_records_received_total").sum();
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

/// The token from a file (a mounted secret, off the command line) for the engine and the
/// CLI; a body over `--max-upload-mib` answered 413; a name that is no plugin's (a path
/// into the cache) 404; a token file without a token refused naming it; every control request
/// audited.
#[test]
fn the_token_comes_from_a_file_oversized_uploads_and_unknown_names_are_refused_and_all_is_audited() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let text = wordcount_pipeline(&address, "wordcount.wasm", "300ms", "100ms");
    work.write("pipeline.toml", &text.replacen("[pipeline]\n", "[pipeline]\ncheckpoint_dir = \"ckpt\"\n", 1));
    work.write("empty-token", "\n");
    let out = work.sluice(&["run", "pipeline.toml", "--admin-token-file", "empty-token"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("--admin-token-file empty-token: expected the token on its first line"), "{said}");

    work.write("token", "s3cret\n");
    let local = format!("127.0.0.1:{}", free_port());
    let running =
        work.spawn(&["pipeline.toml", "--ui", &local, "--admin-token-file", "token", "--max-upload-mib", "1"]);
    running.wait_for("admin API at /api", Duration::from_secs(20));
    assert_eq!(get(&local, "/api/status", None).0, 401);
    assert_eq!(get(&local, "/api/status", Some("s3cret")).0, 200);
    assert!(!running.log().contains("s3cret"), "the token is never logged");
    let deploy = "/api/plugins/wordcount/deploy";
    assert_eq!(post(&local, deploy, Some("s3cret"), &vec![0; 2 << 20]), 413, "over the limit");
    assert_eq!(post(&local, deploy, Some("s3cret"), b"not wasm"), 422, "under it: read and validated");
    assert_eq!(post(&local, "/api/plugins/..%2F..%2Fcache/deploy", Some("s3cret"), b"x"), 404);
    assert_eq!(post(&local, "/api/sources/..%2Fetc/pause", Some("s3cret"), b""), 404);
    assert_eq!(post(&local, "/api/sources/lines/pause", Some("wrong"), b""), 401);
    // A token in the query is no token for a control route, and never kept in the trail.
    assert_eq!(post(&local, "/api/sources/lines/resume?token=s3cret&to=x", None, b""), 401);
    let out = work.sluice(&["pause", "lines", "--ui", &local, "--admin-token-file", "token"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = work.sluice(&["status", "--ui", &local, "--admin-token-file", "token"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("wordcount"));
    // Every control request is in the audit trail, in order, with its address and outcome:
    // in the checkpoint directory and in the dashboard's history alike.
    let expected = [
        ("deploy", "wordcount", 413),
        ("deploy", "wordcount", 422),
        ("deploy", "../../cache", 404),
        ("pause", "../etc", 404),
        ("pause", "lines", 401),
        ("resume", "lines", 401),
        ("pause", "lines", 200),
    ];
    let trail = |entries: Vec<serde_json::Value>| -> Vec<(String, String, u64)> {
        for entry in &entries {
            assert!(entry["from"].as_str().is_some_and(|f| f.starts_with("127.0.0.1:")), "{entry}");
            assert_eq!(entry["accepted"], entry["status"] == 200, "{entry}");
        }
        entries
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().into(),
                    e["target"].as_str().unwrap().into(),
                    e["status"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let expected: Vec<(String, String, u64)> =
        expected.iter().map(|(a, t, s)| (a.to_string(), t.to_string(), *s)).collect();
    let file = std::fs::read_to_string(work.path("ckpt/audit.jsonl")).unwrap();
    let lines = file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(trail(lines), expected, "{file}");
    let (code, body) = get(&local, "/api/dashboard", Some("s3cret"));
    assert_eq!(code, 200);
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = history["history"]["audit"].as_array().cloned().unwrap_or_else(|| panic!("no audit in {body}"));
    assert_eq!(trail(shown), expected);
    assert!(file.contains("\"detail\":\"no plugin `../../cache` in this pipeline\""), "{file}");
    assert!(!file.contains("s3cret") && file.contains("\"query\":\"to=x\""), "{file}");
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(!log.contains("s3cret"), "the token is never logged");
    assert_eq!(log.matches("control action refused").count(), 6, "log:\n{log}");
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

/// A CA and a server certificate for 127.0.0.1 signed by it, made by the openssl CLI into
/// `work`: (`ca.pem`, `cert.pem`, `key.pem`).
fn make_certificates(work: &Workdir) {
    work.write("ext.cnf", "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: [Vec<&str>; 3] = [
        [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca"]]
            .concat(),
        [&["req"][..], &ec, &["-keyout", "key.pem", "-out", "server.csr", "-subj", "/CN=sluice"]].concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("openssl").args(&args).current_dir(work.path(".")).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// curl's answer to a GET over HTTPS trusting `ca.pem`: (status, body), or None if curl got none.
fn curl(work: &Workdir, url: &str, token: &str) -> Option<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "5", "--cacert", "ca.pem", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--write-out", "\n%{http_code}", url])
        .current_dir(work.path("."))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n')?;
    (out.status.success()).then(|| (code.parse().unwrap(), body.to_string()))
}

/// `--tls-cert`/`--tls-key`: HTTPS only (curl and `sluice status --ca-cert` get answers, plain
/// HTTP none); bad files refused naming the flag; a client that opens a connection and sends
/// nothing (or half a request head) is dropped, and 256 of them do not lock the API out for
/// longer than that.
#[test]
fn the_admin_api_serves_https_with_a_given_certificate_and_drops_clients_that_send_nothing() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    work.write("pipeline.toml", &wordcount_pipeline(&address, "wordcount.wasm", "300ms", "100ms"));
    make_certificates(&work);
    work.write("not-a-key.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let out = work.sluice(&["run", "pipeline.toml", "--tls-cert", "cert.pem", "--tls-key", "not-a-key.pem"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("--tls-key not-a-key.pem: expected a PEM private key"), "{said}");
    let out = work.sluice(&["run", "pipeline.toml", "--tls-cert", "ca.pem", "--tls-key", "key.pem"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("do not make a server certificate"), "a key of another certificate: {said}");

    let port = free_port();
    let local = format!("127.0.0.1:{port}");
    let running = work.spawn(&[
        "pipeline.toml",
        "--ui",
        &local,
        "--admin-token",
        "s3cret",
        "--tls-cert",
        "cert.pem",
        "--tls-key",
        "key.pem",
    ]);
    running.wait_for(&format!("address=https://{local}"), Duration::from_secs(20));
    let url = format!("https://{local}/api/status");
    let (code, body) = curl(&work, &url, "s3cret").expect("curl over HTTPS");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("wordcount"), "{body}");
    assert_eq!(curl(&work, &url, "wrong").map(|(code, _)| code), Some(401));
    // Plain HTTP to an HTTPS port: no HTTP answer.
    let mut plain = TcpStream::connect(&local).unwrap();
    write!(plain, "GET /api/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n").unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"), "plain HTTP served");
    let https = format!("https://{local}");
    let status = work.sluice(&["status", "--ui", &https, "--ca-cert", "ca.pem", "--admin-token", "s3cret"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("wordcount"));
    let status = work.sluice(&["status", "--ui", &https, "--admin-token", "s3cret"]);
    assert_eq!(status.status.code(), Some(1), "the public roots do not trust a private CA");

    // 256 connections that never start their handshake fill every slot: a 257th is closed at
    // once. They are dropped after the handshake deadline (10 s), and the API answers again.
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..256).map(|_| TcpStream::connect(&local).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(curl(&work, &url, "s3cret"), None, "every connection slot is taken");
    for mut stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(stream.read(&mut byte), Ok(0) | Err(_)), "the server closed it");
    }
    let dropped = started.elapsed();
    assert!(dropped >= Duration::from_secs(9) && dropped < Duration::from_secs(20), "{dropped:?}");
    assert_eq!(curl(&work, &url, "s3cret").map(|(code, _)| code), Some(200), "answers again");
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(log.contains("connections open: closed a new one"), "log:\n{log}");
}

/// A client that sends half a request head and stalls is dropped after the head deadline
/// (10 s), not held for ever.
#[test]
fn a_request_head_that_never_ends_is_dropped_after_ten_seconds() {
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    work.write("pipeline.toml", &wordcount_pipeline(&address, "wordcount.wasm", "300ms", "100ms"));
    let local = format!("127.0.0.1:{}", free_port());
    let running = work.spawn(&["pipeline.toml", "--ui", &local]);
    running.wait_for("admin API at /api", Duration::from_secs(20));
    let started = Instant::now();
    let mut stalled = TcpStream::connect(&local).unwrap();
    write!(stalled, "GET /api/status HTTP/1.1\r\nHost: x\r\n").unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(20), "dropped after {took:?}");
    assert_eq!(get(&local, "/api/status", None).0, 200, "other clients are served meanwhile and after");
    running.signal("TERM");
    let (code, _) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0);
}
