//! Every example pipeline, run through the binary on its own input (served on a free port
//! instead of the README's 9999), with its output checked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// The example's pipeline in a work dir: plugin paths made absolute, `127.0.0.1:<port>`
/// addresses replaced by `servers` in order of appearance.
fn example(name: &str, servers: &[&LineServer]) -> Workdir {
    plugins();
    let mut text = std::fs::read_to_string(repo().join("examples").join(name).join("pipeline.toml")).unwrap();
    text = text.replace("../../target/plugins/", &format!("{}/", plugins().display()));
    for server in servers {
        let at = text.find("\"127.0.0.1:99").expect("an address to replace");
        text.replace_range(at + 1..at + 15, &server.address);
    }
    let work = Workdir::new();
    work.write("pipeline.toml", &text);
    work
}

fn input(example: &str, file: &str) -> Vec<String> {
    std::fs::read_to_string(repo().join("examples").join(example).join(file))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn network_wordcount_example_counts_its_input() {
    let lines: Vec<String> = repeat(input("network_wordcount", "input.txt"), 20);
    let server = LineServer::lines(&lines);
    let work = example("network_wordcount", &[&server]);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    assert_eq!(work.ledger("out"), count_words(&lines));
}

#[test]
fn trending_words_example_keeps_exact_running_totals() {
    let lines: Vec<String> = repeat(input("network_wordcount", "input.txt"), 30);
    let feed = lines.chunks(90).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, Duration::from_millis(300)));
    let work = example("trending_words", &[&server]);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    let totals = work.batches("out/totals");
    let last = totals.values().last().expect("totals were written");
    let totals: BTreeMap<String, u64> =
        last.iter().map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap())).collect();
    assert_eq!(totals, count_words(&lines), "running totals after the last batch");
}

#[test]
fn sessionize_example_builds_event_time_sessions_and_sets_late_clicks_aside() {
    let clicks = input("sessionize", "clicks.txt");
    // Three bursts, each in its own batch: the watermark moves between them.
    let feed = vec![join_lines(&clicks[..9]), join_lines(&clicks[9..14]), join_lines(&clicks[14..])];
    let server = LineServer::start(Feed::Paced(feed, Duration::from_millis(1_500)));
    let work = example("sessionize", &[&server]);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    let base = 1_764_230_400_000u64;
    let s = |user: &str, start: u64, end: u64, n: u64| json!([user, [base + start * 1000, base + end * 1000, n]]);
    let mut sessions: Vec<Value> = work.batches("out/sessions").into_values().flatten().collect();
    sessions.sort_by_key(Value::to_string);
    let mut expected = vec![
        s("ann", 0, 42, 4),
        s("ann", 70, 115, 2),
        s("ann", 200, 230, 1),
        s("bob", 7, 71, 3),
        s("bob", 130, 160, 1),
        s("cy", 25, 80, 2),
        s("cy", 140, 170, 1),
    ];
    expected.sort_by_key(Value::to_string);
    assert_eq!(sessions, expected, "log:\n{log}");
    let late: Vec<Value> = work.batches("out/late").into_values().flatten().collect();
    assert_eq!(late, vec![json!(["bob", base + 30_000])]);
    assert!(log.contains("late_records=1"), "log:\n{log}");
}

#[test]
fn join_enrichment_example_keeps_every_click() {
    let clicks = input("join_enrichment", "clicks.txt");
    let profiles = input("join_enrichment", "profiles.txt");
    let click_server = LineServer::lines(&clicks);
    let profile_server = LineServer::lines(&profiles);
    let work = example("join_enrichment", &[&click_server, &profile_server]);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(30));
    assert_eq!(code, 0, "log:\n{log}");
    let enriched: Vec<Value> = work.batches("out/enriched").into_values().flatten().collect();
    let mut pages: Vec<String> =
        enriched.iter().map(|r| format!("{} {}", r[0].as_str().unwrap(), r[1][0].as_str().unwrap())).collect();
    pages.sort();
    let mut expected = clicks.clone();
    expected.sort();
    assert_eq!(pages, expected, "a left join keeps each click once");
    for record in &enriched {
        let name = &record[1][1];
        assert!(name.is_null() || name.as_str().unwrap().contains(' '), "{record}");
    }
    assert!(enriched.iter().any(|r| r[0] == "dee" && r[1][1].is_null()), "dee has no profile: {enriched:?}");
}

fn repeat(lines: Vec<String>, times: usize) -> Vec<String> {
    (0..times).flat_map(|_| lines.iter().cloned()).collect()
}
