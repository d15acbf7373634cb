//! Windows and state stores, through the engine's graph with the Wasm plugins:
//!
//! 1. `reduce_by_key_and_window` with an inverse at window = 10× and 100× the batch interval
//!    (slide = one batch): median processing time per batch once the window is full, and their
//!    ratio (the inverse keeps it flat).
//! 2. `update_state_by_key` with a running total per key: keys updated per second, with one
//!    worker (per core) and with all cores.
//!
//! 3. A checkpoint of that store (1 worker run): export (copy), encode, write and sync.
//!
//! `cargo bench -p sluice --bench state` (needs `scripts/build-plugins.sh` first).
//! `SLUICE_BENCH_KEYS` (default 1,000,000) sets the state store's size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice::block::Block;
use sluice::config::PipelineFile;
use sluice::graph::{GraphState, run_batch};
use sluice::runtime::{Limits, PluginRuntime};
use sluice::{Pipeline, RunOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH_MS: u64 = 1000;
const LONGEST: u64 = 100;

fn plugin(runtime: &PluginRuntime, name: &str) -> sluice::runtime::PluginVersion {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/plugins/{name}.wasm"));
    runtime.load(name, &path).unwrap_or_else(|err| panic!("{err} (run scripts/build-plugins.sh first)"))
}

fn pipeline(dir: &std::path::Path, stages: &str, versions: Vec<sluice::runtime::PluginVersion>) -> Pipeline {
    let text = format!(
        "[pipeline]\nname = \"bench\"\nbatch_interval = \"1s\"\n[plugins]\nwordcount = \"unused\"\ntop_k = \"unused\"\n\
         [[sources]]\nname = \"lines\"\ntype = \"socket\"\naddress = \"127.0.0.1:9\"\n{stages}\
         [[sinks]]\nname = \"sink\"\ninput = \"out\"\ntype = \"print\"\n"
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    Pipeline::from_versions(PipelineFile::load(&path).unwrap(), versions).unwrap()
}

/// A block of `lines` lines of 10 words drawn from `vocab` words, different per `seed`.
fn block(lines: usize, vocab: u64, seed: u64) -> Block {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::new();
    for _ in 0..lines {
        let words: Vec<String> = (0..10)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("w{}", state % vocab)
            })
            .collect();
        sluice::codec::write_frame(&mut data, words.join(" ").as_str()).unwrap();
    }
    Block { source: 0, seq: seed, records: lines as u64, invalid: 0, data, task: None }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn window_bench(runtime: &PluginRuntime, pool: &rayon::ThreadPool, length: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!(
        "[[stages]]\nname = \"words\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"\n\
         [[stages]]\nname = \"out\"\ninput = \"words\"\nop = \"reduce_by_key_and_window\"\nplugin = \"wordcount\"\n\
         function = \"sum\"\ninverse = \"subtract\"\nwindow = \"{length}s\"\n"
    );
    let p = pipeline(dir.path(), &stages, vec![plugin(runtime, "wordcount"), plugin(runtime, "top_k")]);
    let snapshot = p.registry.snapshot();
    let mut state = GraphState::default();
    let mut times = Vec::new();
    // The same number of batches for every window length: the longest window fills, then 30
    // batches are measured.
    for i in 0..LONGEST + 30 {
        let blocks = (0..4).map(|b| block(2_500, 10_000, i * 4 + b)).collect();
        let started = Instant::now();
        run_batch(&p.graph, &mut state, &snapshot, (i + 1) * BATCH_MS, false, blocks, pool).unwrap();
        if i >= LONGEST {
            times.push(started.elapsed());
        }
    }
    median(times)
}

fn state_bench(runtime: &PluginRuntime, workers: usize, keys: u64) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stages = "[[stages]]\nname = \"words\"\ninput = \"lines\"\nop = \"flat_map\"\nplugin = \"wordcount\"\nfunction = \"split_words\"\n\
                  [[stages]]\nname = \"out\"\ninput = \"words\"\nop = \"update_state_by_key\"\nplugin = \"top_k\"\nfunction = \"running_total\"\n";
    let p = pipeline(dir.path(), stages, vec![plugin(runtime, "wordcount"), plugin(runtime, "top_k")]);
    let snapshot = p.registry.snapshot();
    let mut state = GraphState::default();
    // Fill the store: every key once.
    let mut data = Vec::new();
    let mut filled = 0;
    for k in 0..keys {
        let line = format!("k{k}");
        sluice::codec::write_frame(&mut data, line.as_str()).unwrap();
        filled += 1;
    }
    let fill = Block { source: 0, seq: 0, records: filled, invalid: 0, data, task: None };
    run_batch(&p.graph, &mut state, &snapshot, BATCH_MS, false, vec![fill], &pool).unwrap();
    // Then batches with new values for 10% of the keys: every key in the store is updated.
    let mut rates = Vec::new();
    for i in 0..5 {
        let blocks = vec![block(keys as usize / 100, keys, 1_000 + i)];
        let started = Instant::now();
        run_batch(&p.graph, &mut state, &snapshot, (i + 2) * BATCH_MS, false, blocks, &pool).unwrap();
        rates.push(keys as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if workers == 1 {
        checkpoint_bench(&p.graph, &state, keys);
    }
    rates[rates.len() / 2]
}

/// What a checkpoint of `state` costs: median of 3 of export, encode, write (with fsyncs).
fn checkpoint_bench(graph: &sluice::graph::Graph, state: &GraphState, keys: u64) {
    use sluice::checkpoint::{self, Checkpoint};
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for round in 0..3u64 {
        let started = Instant::now();
        let stages = state.export(graph);
        let exported = started.elapsed();
        let bytes = checkpoint::encode(&Checkpoint {
            pipeline: "bench".into(),
            batch_interval_ms: BATCH_MS,
            batch_time: (round + 1) * BATCH_MS,
            written_at_ms: 0,
            engine_version: String::new(),
            plugins: Vec::new(),
            sources: Vec::new(),
            stages,
        });
        let encoded = started.elapsed() - exported;
        let before = Instant::now();
        checkpoint::write(dir.path(), (round + 1) * BATCH_MS, &bytes).unwrap();
        runs.push((exported, encoded, before.elapsed(), bytes.len()));
    }
    runs.sort_by_key(|r| r.0 + r.1 + r.2);
    let (export, encode, write, size) = runs[1];
    println!(
        "checkpoint of {keys} keys ({:.1} MB): export {:.0} ms, encode {:.0} ms, write+fsync {:.0} ms",
        size as f64 / 1e6,
        export.as_secs_f64() * 1e3,
        encode.as_secs_f64() * 1e3,
        write.as_secs_f64() * 1e3
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = PluginRuntime::new(Limits::default(), None).unwrap();
    let workers = RunOptions::default().workers;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().unwrap();
    let short = window_bench(&runtime, &pool, 10);
    let long = window_bench(&runtime, &pool, LONGEST);
    println!(
        "reduce_by_key_and_window with inverse, 100k words a batch from 10k keys, {workers} workers: \
         window 10 batches {:.1} ms/batch, 100 batches {:.1} ms/batch, ratio {:.2}",
        short.as_secs_f64() * 1e3,
        long.as_secs_f64() * 1e3,
        long.as_secs_f64() / short.as_secs_f64()
    );
    let keys = std::env::var("SLUICE_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let one = state_bench(&runtime, 1, keys);
    let all = state_bench(&runtime, workers, keys);
    println!(
        "update_state_by_key, {keys} keys in the store: {:.2} M keys updated/s with 1 worker, {:.2} M/s with {workers}",
        one / 1e6,
        all / 1e6
    );
}
