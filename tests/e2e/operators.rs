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

#[test]
fn the_other_operators_match_per_batch_references() {
    // Phase 1: users u0..u6 click; a pause longer than the state timeout; phase 2: only u0.
    let phase1: Vec<String> = (0..700).map(|i| format!("u{} {} page{}", i % 7, 1_000 + i, i % 3)).collect();
    let phase2: Vec<String> = (0..50).map(|i| format!("u0 {} page0", 5_000 + i)).collect();
    let mut feed: Vec<Vec<u8>> = phase1.chunks(100).map(join_lines).collect();
    feed.push(Vec::new());
    feed.extend(phase2.chunks(25).map(join_lines));
    // 400 ms between chunks; the empty chunk doubles the pause after phase 1. u1..u6 send nothing
    // after phase 1, so they are idle for the pause plus phase 2 (over 1.6 s) before the end.
    let server = LineServer::start(Feed::Paced(feed, Duration::from_millis(400)));
    let work = Workdir::new();
    work.add_plugin("wordcount", "wordcount");
    work.add_plugin("top_k", "top_k");
    work.add_plugin("sessionize", "clicks");
    let sink = |name: &str| {
        format!("[[sinks]]\nname = \"{name}_out\"\ninput = \"{name}\"\ntype = \"file\"\npath = \"{name}\"\n")
    };
    let stage = |name: &str, body: &str| format!("[[stages]]\nname = \"{name}\"\n{body}\n{}", sink(name));
    let mut pipeline = format!(
        "[pipeline]\nname = \"ops\"\nbatch_interval = \"250ms\"\nblock_interval = \"50ms\"\n[plugins]\n\
         wordcount = \"wordcount.wasm\"\ntop_k = \"top_k.wasm\"\nclicks = \"clicks.wasm\"\n\
         [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"{}\"\n{}",
        server.address,
        sink("lines")
    );
    pipeline +=
        &stage("lens", "input = \"lines\"\nop = \"map_partitions\"\nplugin = \"top_k\"\nfunction = \"lengths\"");
    pipeline += &stage("total", "input = \"lens\"\nop = \"reduce\"\nplugin = \"wordcount\"\nfunction = \"sum\"");
    pipeline += "[[stages]]\nname = \"words\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"\n";
    pipeline += &stage("by_value", "input = \"words\"\nop = \"count_by_value\"");
    pipeline += &stage("spread", "input = \"lines\"\nop = \"repartition\"\npartitions = 3");
    pipeline += &stage("keyed", "input = \"lines\"\nop = \"key_by\"\nplugin = \"clicks\"\nfunction = \"user_of\"");
    let windowed = "window = \"1s\"\nslide = \"500ms\"";
    pipeline += &stage("recent", &format!("input = \"lines\"\nop = \"window\"\n{windowed}"));
    pipeline += &stage(
        "recent_total",
        &format!("input = \"lens\"\nop = \"reduce_by_window\"\nplugin = \"wordcount\"\nfunction = \"sum\"\n{windowed}"),
    );
    pipeline +=
        &stage("recent_by_value", &format!("input = \"words\"\nop = \"count_by_value_and_window\"\n{windowed}"));
    pipeline += "[[stages]]\nname = \"clicks\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"clicks\"\nfunction = \"parse\"\n";
    pipeline += &stage(
        "idle",
        "input = \"clicks\"\nop = \"map_with_state\"\nplugin = \"clicks\"\nfunction = \"visits\"\nstate_timeout = \"1s\"",
    );
    work.write("pipeline.toml", &pipeline);
    let (code, log) = work.spawn(&["pipeline.toml"]).finish(Duration::from_secs(60));
    assert_eq!(code, 0, "log:\n{log}");
    server.join();

    let lines = work.batches("lines");
    assert_eq!(lines.values().map(Vec::len).sum::<usize>(), 750);
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let in_window =
        |end: u64| -> Vec<&Value> { lines.range(end.saturating_sub(999)..=end).flat_map(|(_, v)| v).collect() };
    for (t, batch) in &lines {
        let lens: Vec<u64> = batch.iter().map(|l| l.as_str().unwrap().len() as u64).collect();
        let got_lens: Vec<u64> = work.batches("lens")[t].iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(got_lens, lens, "map_partitions, batch {t}");
        assert_eq!(work.batches("total")[t], vec![Value::from(lens.iter().sum::<u64>())], "reduce, batch {t}");
        let words = count_words(&batch.iter().map(text).collect::<Vec<_>>());
        let by_value: Counts = work.batches("by_value")[t]
            .iter()
            .map(|r| (r[0][0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
            .collect();
        assert_eq!(by_value, words, "count_by_value, batch {t}");
        let spread: Vec<String> = work.batches("spread")[t].iter().map(text).collect();
        assert_eq!(sorted(spread), sorted(batch.iter().map(text).collect()), "repartition, batch {t}");
        let keyed: Vec<(String, String)> =
            work.batches("keyed")[t].iter().map(|r| (text(&r[0]), text(&r[1]))).collect();
        let expected: Vec<(String, String)> =
            batch.iter().map(|l| (text(l).split(' ').next().unwrap().to_string(), text(l))).collect();
        assert_eq!(keyed, expected, "key_by, batch {t}");
    }
    for (end, records) in work.batches("recent") {
        let expected: Vec<String> = in_window(end).into_iter().map(text).collect();
        assert_eq!(sorted(records.iter().map(text).collect()), sorted(expected), "window ending {end}");
    }
    for (end, records) in work.batches("recent_total") {
        let expected: u64 = in_window(end).iter().map(|l| l.as_str().unwrap().len() as u64).sum();
        assert_eq!(records, vec![Value::from(expected)], "reduce_by_window ending {end}");
    }
    for (end, records) in work.batches("recent_by_value") {
        let expected = count_words(&in_window(end).into_iter().map(text).collect::<Vec<_>>());
        let got: Counts =
            records.iter().map(|r| (r[0][0].as_str().unwrap().to_string(), r[1].as_u64().unwrap())).collect();
        assert_eq!(got, expected, "count_by_value_and_window ending {end}");
    }
    // map_with_state: u1..u6 went idle during the pause and were emitted once with their 100
    // clicks; u0 kept clicking and never timed out.
    let idle: Vec<(String, u64)> =
        work.batches("idle").into_values().flatten().map(|r| (text(&r[0]), r[1].as_u64().unwrap())).collect();
    let expected: Vec<(String, u64)> = (1..7).map(|u| (format!("u{u}"), 100)).collect();
    assert_eq!(
        sorted(idle.iter().map(|(u, n)| format!("{u} {n}")).collect()),
        sorted(expected.iter().map(|(u, n)| format!("{u} {n}")).collect())
    );
}
