//! Windows, state and joins through the binary. The reference is the engine's own per-batch
//! output of plain stages in the same pipeline (fan-out), so the check is exact whatever batch
//! each record fell into.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

type Counts = BTreeMap<String, u64>;

fn counts(records: &[Value]) -> Counts {
    records.iter().map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap())).collect()
}

fn add(into: &mut Counts, from: &Counts) {
    for (word, n) in from {
        *into.entry(word.clone()).or_insert(0) += n;
    }
}

#[test]
fn windows_and_state_equal_the_sums_of_their_batches() {
    let lines = corpus(4_000, 5, 21);
    let feed = lines.chunks(100).map(join_lines).collect();
    let server = LineServer::start(Feed::Paced(feed, Duration::from_millis(70)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    let window = |name: &str, op: &str, extra: &str| {
        format!(
            "[[stages]]\nname = \"{name}\"\ninput = \"words\"\nop = \"{op}\"\n{extra}window = \"1s\"\nslide = \"500ms\"\n\
             [[sinks]]\nname = \"{name}_out\"\ninput = \"{name}\"\ntype = \"file\"\npath = \"{name}\"\n"
        )
    };
    let pipeline = format!(
        r#"[pipeline]
name = "windows"
batch_interval = "250ms"
block_interval = "50ms"
[plugins]
wordcount = "wordcount.wasm"
top_k = "top_k.wasm"
[[sources]]
name = "lines"
type = "socket"
address = "{}"
[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "wordcount"
function = "split_words"
[[stages]]
name = "per_batch"
input = "words"
op = "reduce_by_key"
plugin = "wordcount"
function = "sum"
[[sinks]]
name = "per_batch_out"
input = "per_batch"
type = "file"
path = "per_batch"
[[stages]]
name = "totals"
input = "per_batch"
op = "update_state_by_key"
plugin = "top_k"
function = "running_total"
[[sinks]]
name = "totals_out"
input = "totals"
type = "file"
path = "totals"
{}{}{}"#,
        server.address,
        window(
            "incremental",
            "reduce_by_key_and_window",
            "plugin = \"wordcount\"\nfunction = \"sum\"\ninverse = \"subtract\"\n"
        ),
        window("recomputed", "reduce_by_key_and_window", "plugin = \"wordcount\"\nfunction = \"sum\"\n"),
        window("counted", "count_by_window", ""),
    );
    work.write("pipeline.toml", &pipeline);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();

    let per_batch: BTreeMap<u64, Counts> = work.batches("per_batch").iter().map(|(t, r)| (*t, counts(r))).collect();
    let total: u64 = per_batch.values().flat_map(|c| c.values()).sum();
    assert_eq!(total, 20_000, "every word counted once per batch");
    let expected_window = |end: u64| {
        let mut sum = Counts::new();
        for (_, c) in per_batch.range(end.saturating_sub(999)..=end) {
            add(&mut sum, c);
        }
        sum
    };
    for name in ["incremental", "recomputed"] {
        let windows = work.batches(name);
        assert!(windows.len() >= 3, "{name}: {} windows; log:\n{log}", windows.len());
        for (end, records) in &windows {
            assert_eq!(end % 500, 0, "{name}: windows end on slide boundaries");
            assert_eq!(counts(records), expected_window(*end), "{name}: window ending at {end}");
        }
        let last = *windows.keys().last().unwrap();
        for t in per_batch.keys().filter(|t| **t <= last) {
            assert!(windows.keys().any(|end| *t > end - 1000 && t <= end), "{name}: batch {t} in no window");
        }
    }
    for (end, records) in work.batches("counted") {
        let words: u64 = expected_window(end).values().sum();
        assert_eq!(records, vec![Value::from(words)], "count_by_window ending at {end}");
    }
    let mut running = Counts::new();
    let totals = work.batches("totals");
    assert!(!totals.is_empty());
    for (t, c) in &per_batch {
        add(&mut running, c);
        if let Some(records) = totals.get(t) {
            assert_eq!(counts(records), running, "running totals after batch {t}");
        }
    }
    assert_eq!(counts(totals.values().last().unwrap()), running, "final totals");
}

#[test]
fn joins_cogroup_union_and_group_by_key_match_a_reference_per_batch() {
    let users: Vec<String> = (0..300).map(|i| format!("u{} name{i}", i % 40)).collect();
    let clicks: Vec<String> = (0..600).map(|i| format!("u{} /page{}", (i * 7) % 50, i % 5)).collect();
    let chunks = |lines: &[String]| lines.chunks(30).map(join_lines).collect::<Vec<_>>();
    let left = LineServer::start(Feed::Paced(chunks(&users), Duration::from_millis(60)));
    let right = LineServer::start(Feed::Paced(chunks(&clicks), Duration::from_millis(30)));
    let work = Workdir::new();
    work.add_plugin("uppercase", "keys");
    let sink = |name: &str| {
        format!("[[sinks]]\nname = \"{name}_out\"\ninput = \"{name}\"\ntype = \"file\"\npath = \"{name}\"\n")
    };
    let stage = |name: &str, body: &str| format!("[[stages]]\nname = \"{name}\"\n{body}\n{}", sink(name));
    let mut pipeline = format!(
        "[pipeline]\nname = \"joins\"\nbatch_interval = \"300ms\"\nblock_interval = \"100ms\"\n[plugins]\nkeys = \"keys.wasm\"\n\
         [[sources]]\nname = \"user_lines\"\ntype = \"socket\"\naddress = \"{}\"\n\
         [[sources]]\nname = \"click_lines\"\ntype = \"socket\"\naddress = \"{}\"\n",
        left.address, right.address
    );
    let keyed = "op = \"map\"\nplugin = \"keys\"\nfunction = \"key_by_first_word\"";
    pipeline += &stage("users", &format!("input = \"user_lines\"\n{keyed}"));
    pipeline += &stage("clicks", &format!("input = \"click_lines\"\n{keyed}"));
    for how in ["inner", "left", "right", "full"] {
        pipeline += &stage(
            &format!("join_{how}"),
            &format!("inputs = [\"users\", \"clicks\"]\nop = \"join\"\nhow = \"{how}\""),
        );
    }
    pipeline += &stage("cogrouped", "inputs = [\"users\", \"clicks\"]\nop = \"cogroup\"");
    pipeline += &stage("both", "inputs = [\"users\", \"clicks\"]\nop = \"union\"");
    pipeline += &stage("grouped", "input = \"clicks\"\nop = \"group_by_key\"");
    work.write("pipeline.toml", &pipeline);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    left.join();
    right.join();

    let pairs = |records: &[Value]| -> Vec<(String, String)> {
        records.iter().map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string())).collect()
    };
    let users = work.batches("users");
    let clicks = work.batches("clicks");
    assert_eq!(users.values().map(Vec::len).sum::<usize>(), 300);
    assert_eq!(clicks.values().map(Vec::len).sum::<usize>(), 600);
    let times: std::collections::BTreeSet<u64> = users.keys().chain(clicks.keys()).copied().collect();
    let empty = Vec::new();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let rendered =
        |dir: &str, t: u64| sorted(work.batches(dir).get(&t).unwrap_or(&empty).iter().map(Value::to_string).collect());
    let mut inner_matches = 0;
    for t in times {
        let (l, r) = (pairs(users.get(&t).unwrap_or(&empty)), pairs(clicks.get(&t).unwrap_or(&empty)));
        let keys: std::collections::BTreeSet<&String> = l.iter().chain(&r).map(|(k, _)| k).collect();
        let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for key in keys {
            let lv: Vec<&String> = l.iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect();
            let rv: Vec<&String> = r.iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect();
            let json = |v: Option<&&String>| v.map_or(Value::Null, |s| Value::from(s.as_str()));
            for a in &lv {
                for b in &rv {
                    let both = serde_json::json!([key, [a, b]]).to_string();
                    for how in ["inner", "left", "right", "full"] {
                        expected.entry(how).or_default().push(both.clone());
                    }
                }
            }
            if rv.is_empty() {
                for a in &lv {
                    expected.entry("left").or_default().push(serde_json::json!([key, [a, Value::Null]]).to_string());
                    expected.entry("full").or_default().push(serde_json::json!([key, [a, Value::Null]]).to_string());
                }
            }
            if lv.is_empty() {
                for b in &rv {
                    expected.entry("right").or_default().push(serde_json::json!([key, [Value::Null, b]]).to_string());
                    expected.entry("full").or_default().push(serde_json::json!([key, [json(None), b]]).to_string());
                }
            }
            expected.entry("cogrouped").or_default().push(serde_json::json!([key, [lv, rv]]).to_string());
            if !rv.is_empty() {
                expected.entry("grouped").or_default().push(serde_json::json!([key, rv]).to_string());
            }
        }
        for dir in ["inner", "left", "right", "full"] {
            let got = rendered(&format!("join_{dir}"), t);
            assert_eq!(got, sorted(expected.remove(dir).unwrap_or_default()), "join how = {dir}, batch {t}");
        }
        for dir in ["cogrouped", "grouped"] {
            assert_eq!(rendered(dir, t), sorted(expected.remove(dir).unwrap_or_default()), "{dir}, batch {t}");
        }
        inner_matches += rendered("join_inner", t).len();
        let union: Vec<String> = l.iter().chain(&r).map(|(k, v)| serde_json::json!([k, v]).to_string()).collect();
        assert_eq!(rendered("both", t), sorted(union), "union, batch {t}");
    }
    assert!(inner_matches > 100, "the streams overlap: {inner_matches} inner join records");
}
