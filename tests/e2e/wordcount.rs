//! Word count through the whole engine: exact counts, clean exit, bad lines, print sink, an
//! unreachable source, and the example pipelines.

use std::time::Duration;

use crate::support::*;

#[test]
fn word_counts_are_exact_for_a_generated_corpus() {
    let lines = corpus(200_000, 10, 1);
    let expected = count_words(&lines);
    let server = LineServer::lines(&lines);
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "500ms", "100ms"));
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();
    let ledger = work.ledger("out");
    assert_eq!(ledger.values().sum::<u64>(), 2_000_000, "every word sent is counted once");
    assert_eq!(ledger, expected);
    assert!(log.contains("records=200000"), "the run report counts every line; log:\n{log}");
    assert!(log.contains("scheduling delay"), "each batch has a summary line; log:\n{log}");
}

#[test]
fn lines_that_are_not_utf8_are_counted_and_skipped() {
    let mut bytes = b"alpha beta\n".to_vec();
    bytes.extend_from_slice(b"bad \xff\xfe line\n");
    bytes.extend_from_slice(b"beta gamma\r\nlast line without newline");
    let server = LineServer::start(Feed::All(bytes));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&server.address, "wordcount.wasm", "200ms", "100ms"));
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let ledger = work.ledger("out");
    let expected: Vec<(&str, u64)> =
        vec![("alpha", 1), ("beta", 2), ("gamma", 1), ("last", 1), ("line", 1), ("newline", 1), ("without", 1)];
    assert_eq!(ledger.iter().map(|(w, c)| (w.as_str(), *c)).collect::<Vec<_>>(), expected);
    assert!(log.contains("not UTF-8"), "log:\n{log}");
    assert!(log.contains("invalid_lines=1"), "log:\n{log}");
}

#[test]
fn print_sink_shows_the_first_records_of_each_batch() {
    let lines: Vec<String> = (0..30).map(|i| format!("line{i}")).collect();
    let server = LineServer::lines(&lines);
    let work = Workdir::new();
    work.add_plugin("uppercase", "upper");
    work.write(
        "pipeline.toml",
        &format!(
            r#"[pipeline]
name = "print"
batch_interval = "2s"
block_interval = "1s"
[plugins]
upper = "upper.wasm"
[[sources]]
name = "lines"
type = "socket"
address = "{}"
[[stages]]
name = "shout"
input = "lines"
op = "map"
plugin = "upper"
function = "to_upper"
[[stages]]
name = "n"
input = "lines"
op = "count"
[[sinks]]
name = "show"
input = "shout"
type = "print"
num = 5
[[sinks]]
name = "show_count"
input = "n"
type = "print"
"#,
            server.address
        ),
    );
    let out = work.sluice(&["run", "pipeline.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("-------------------------------------------\nTime: "), "{stdout}");
    assert!(stdout.contains("\"LINE0\"\n\"LINE1\"\n\"LINE2\"\n\"LINE3\"\n\"LINE4\"\n...\n"), "{stdout}");
    assert!(!stdout.contains("LINE5"), "only num = 5 records are printed: {stdout}");
    assert!(stdout.contains("\n30\n"), "count prints one record with the batch's size: {stdout}");
}

#[test]
fn an_unreachable_source_is_retried_and_reported_not_fatal() {
    // A port nobody listens on: bind, note it, close.
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.write("pipeline.toml", &wordcount_pipeline(&address, "wordcount.wasm", "200ms", "100ms"));
    let running = work.spawn(&["pipeline.toml"]);
    running.wait_for("attempt=3", Duration::from_secs(20));
    assert!(running.log().contains("cannot connect"), "{}", running.log());
    assert!(running.child.id() > 0);
    running.signal("TERM");
    let (code, log) = running.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{log}");
    assert!(!log.contains("panicked"), "log:\n{log}");
}

#[test]
fn every_example_pipeline_checks() {
    plugins();
    let examples = repo().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let pipeline = entry.unwrap().path().join("pipeline.toml");
        if !pipeline.is_file() {
            continue;
        }
        let work = Workdir::new();
        // kafka_to_postgres reads its database URL from the environment; a database that does
        // not answer is a warning for `check`.
        let out = std::process::Command::new(SLUICE)
            .args(["check", pipeline.to_str().unwrap()])
            .current_dir(work.dir.path())
            .env("SLUICE_CACHE_DIR", work.path("cache"))
            .env("SLUICE_PG_URL", "postgres://nobody@127.0.0.1:1/none")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not check:\n{}",
            pipeline.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 1, "no example pipelines found under {}", examples.display());
}

#[test]
fn filter_map_and_count_chain_with_fan_out() {
    let lines: Vec<String> =
        (0..5_000).map(|i| if i % 3 == 0 { "   ".to_string() } else { format!("line {i}") }).collect();
    let kept: Vec<String> = lines.iter().filter(|l| !l.trim().is_empty()).map(|l| l.to_uppercase()).collect();
    let server = LineServer::lines(&lines);
    let work = Workdir::new();
    work.add_plugin("uppercase", "upper");
    work.write(
        "pipeline.toml",
        &format!(
            r#"[pipeline]
name = "chain"
batch_interval = "300ms"
block_interval = "100ms"
[plugins]
upper = "upper.wasm"
[[sources]]
name = "lines"
type = "socket"
address = "{}"
[[stages]]
name = "non_empty"
input = "lines"
op = "filter"
plugin = "upper"
function = "non_empty"
[[stages]]
name = "shout"
input = "non_empty"
op = "map"
plugin = "upper"
function = "to_upper"
[[stages]]
name = "n"
input = "non_empty"
op = "count"
[[sinks]]
name = "shouted"
input = "shout"
type = "file"
path = "shouted"
[[sinks]]
name = "counts"
input = "n"
type = "file"
path = "counts"
"#,
            server.address
        ),
    );
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let shouted: Vec<String> =
        work.batches("shouted").into_values().flatten().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(shouted, kept, "filter then map, in order, nothing lost");
    let counted: u64 = work.batches("counts").into_values().flatten().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(counted, kept.len() as u64, "count over the same filtered stream (fan-out)");
}
