//! The whole word count path, socket in → file out, through the engine in this process: once
//! with the Wasm plugin and once with its native twin (the same SDK code compiled in, with
//! mimalloc), alternating, several rounds; prints records/s and the Wasm/native ratio (medians).
//!
//! `cargo bench -p sluice --bench wordcount_e2e` (needs `scripts/build-plugins.sh` first).
//! Environment: `SLUICE_BENCH_LINES` (default 3,000,000 lines of 10 words),
//! `SLUICE_BENCH_ROUNDS` (default 3), `SLUICE_BENCH_WORKERS` (default: one per core),
//! `SLUICE_BENCH_WAL=1` (also run the Wasm pipeline with checkpoints and the socket's
//! write-ahead log, and print its ratio to the run without).
//!
//! Two rates are reported: end to end (lines / wall time from start until the last batch file
//! is written, which includes waiting for batch boundaries) and processing (lines / the sum of
//! batch processing times, the figure Spark's UI shows).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::PipelineFile;
use sluice::runtime::{Limits, PluginRuntime, PluginVersion};
use sluice::{Pipeline, RunOptions};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Ten words a line from a Zipf-like vocabulary of 10,000 (as ../shared/bench/gen_lines.py).
fn corpus(lines: usize) -> Vec<u8> {
    let vocab = 10_000usize;
    let cumulative: Vec<f64> = (0..vocab)
        .scan(0.0, |acc, i| {
            *acc += 1.0 / (i + 1) as f64;
            Some(*acc)
        })
        .collect();
    let total = cumulative[vocab - 1];
    let mut state = 42u64;
    let mut out = Vec::with_capacity(lines * 60);
    for _ in 0..lines {
        for w in 0..10 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = (state >> 11) as f64 / (1u64 << 53) as f64 * total;
            let word = cumulative.partition_point(|&c| c < r);
            if w > 0 {
                out.push(b' ');
            }
            write!(out, "w{word}").unwrap();
        }
        out.push(b'\n');
    }
    out
}

struct Measured {
    end_to_end: f64,
    processing: f64,
}

fn run_once(version: PluginVersion, corpus: Arc<Vec<u8>>, lines: usize, workers: usize, wal: bool) -> Measured {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let feeder = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&corpus).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    let (checkpoint, wal) = if wal { ("checkpoint_dir = \"ckpt\"\n", "wal = true\n") } else { ("", "") };
    std::fs::write(
        &pipeline,
        format!(
            r#"[pipeline]
name = "bench"
batch_interval = "500ms"
block_interval = "100ms"
{checkpoint}[plugins]
wordcount = "unused.wasm"
[[sources]]
name = "lines"
type = "socket"
address = "{address}"
{wal}[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "wordcount"
function = "split_words"
[[stages]]
name = "counts"
input = "words"
op = "reduce_by_key"
plugin = "wordcount"
function = "sum"
[[sinks]]
name = "files"
input = "counts"
type = "file"
path = "out"
"#
        ),
    )
    .unwrap();
    let file = PipelineFile::load(&pipeline).unwrap();
    let pipeline = Pipeline::from_versions(file, vec![version]).unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let options = RunOptions { workers, watch_plugins: false, ..RunOptions::default() };
    let started = Instant::now();
    let report = pipeline.run(&options, stop_rx).unwrap();
    let wall = started.elapsed();
    feeder.join().unwrap();
    assert_eq!(report.records, lines as u64);
    assert_eq!(report.failed_batches, 0);
    assert_eq!(counted_words(&dir.path().join("out")), 10 * lines as u64, "the ledger must be exact");
    Measured {
        end_to_end: lines as f64 / wall.as_secs_f64(),
        processing: lines as f64 / report.processing.as_secs_f64(),
    }
}

fn counted_words(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Batch files only: not `.lineage/` or a batch being written.
        if path.extension().is_none_or(|e| e != "jsonl")
            || path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let (_, count) = line.trim_end_matches(']').rsplit_once(',').unwrap();
            total += count.parse::<u64>().unwrap();
        }
    }
    total
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lines = env("SLUICE_BENCH_LINES", 3_000_000);
    let rounds = env("SLUICE_BENCH_ROUNDS", 3);
    let workers = env("SLUICE_BENCH_WORKERS", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let corpus = Arc::new(corpus(lines));
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let (wasm_path, component_path) = (plugins.join("wordcount.wasm"), plugins.join("wordcount-abi2.wasm"));
    let runtime = PluginRuntime::new(Limits::default(), None).unwrap();
    let load = |path: &PathBuf| {
        runtime.load("wordcount", path).unwrap_or_else(|err| panic!("{err} (run scripts/build-plugins.sh first)"))
    };
    println!("word count, socket in -> file out: {lines} lines x 10 words, {workers} workers, {rounds} rounds");
    let (mut wasm, mut component, mut native, mut logged) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let w = run_once(load(&wasm_path), corpus.clone(), lines, workers, false);
        if env("SLUICE_BENCH_WAL", 0) == 1 {
            let l = run_once(load(&wasm_path), corpus.clone(), lines, workers, true);
            println!(
                "round {round}: wasm with WAL {:.0} lines/s end to end ({:.0} processing)",
                l.end_to_end, l.processing
            );
            logged.push(l);
        }
        let c = run_once(load(&component_path), corpus.clone(), lines, workers, false);
        let version = PluginRuntime::native("wordcount", &[wordcount::__sluice_split_words, wordcount::__sluice_sum]);
        let n = run_once(version, corpus.clone(), lines, workers, false);
        println!(
            "round {round}: wasm (ABI 1) {:.0} lines/s end to end ({:.0} processing); component (ABI 2) {:.0} ({:.0}); native {:.0} ({:.0})",
            w.end_to_end, w.processing, c.end_to_end, c.processing, n.end_to_end, n.processing
        );
        wasm.push(w);
        component.push(c);
        native.push(n);
        std::thread::sleep(Duration::from_millis(200));
    }
    let med = |v: &[Measured], f: fn(&Measured) -> f64| median(v.iter().map(f).collect());
    let (we, wp) = (med(&wasm, |m| m.end_to_end), med(&wasm, |m| m.processing));
    let (ce, cp) = (med(&component, |m| m.end_to_end), med(&component, |m| m.processing));
    let (ne, np) = (med(&native, |m| m.end_to_end), med(&native, |m| m.processing));
    println!("median end to end: wasm {we:.0} lines/s, native {ne:.0} lines/s, wasm/native {:.2}", we / ne);
    println!("median processing: wasm {wp:.0} lines/s, native {np:.0} lines/s, wasm/native {:.2}", wp / np);
    println!(
        "median component (ABI 2): end to end {ce:.0} lines/s ({:.2} of ABI 1), processing {cp:.0} lines/s ({:.2} of ABI 1)",
        ce / we,
        cp / wp
    );
    if !logged.is_empty() {
        let le = med(&logged, |m| m.end_to_end);
        println!("median end to end with WAL: {le:.0} lines/s, with/without {:.2}", le / we);
    }
}
