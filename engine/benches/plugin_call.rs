//! The plugin call alone: word count's `split_words` (flat_map) and `sum` (reduce over groups)
//! over one partition, as a Wasm plugin (an ABI 1 module, an ABI 2 component, and, when built,
//! the Python and JavaScript twins as components) and as its native twin (the same SDK code
//! compiled into this process, with mimalloc). Throughput is in lines (records) per second.
//!
//! `cargo bench -p sluice --bench plugin_call` (needs `scripts/build-plugins.sh` first).

use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::runtime::{Limits, PluginRuntime, PluginVersion, instance};
use sluice_sdk::abi;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LINES: usize = 20_000;

fn corpus() -> Vec<u8> {
    // Ten words a line from a skewed vocabulary of 10,000, as ../shared/bench/gen_lines.py.
    let mut state = 42u64;
    let mut buf = Vec::new();
    for _ in 0..LINES {
        let line: Vec<String> = (0..10)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let r = (state % 10_000) as f64 / 10_000.0;
                format!("w{}", (r.powi(3) * 10_000.0) as u64)
            })
            .collect();
        let line = line.join(" ");
        sluice::codec::write_frame(&mut buf, line.as_str()).unwrap();
    }
    buf
}

/// The ABI 1 module, the ABI 2 component (the same crate built for wasm32-wasip2), the native
/// twin.
fn versions() -> Vec<(&'static str, PluginVersion)> {
    let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    let runtime = PluginRuntime::new(Limits::default(), None).unwrap();
    let load = |file: &str| {
        runtime
            .load("wordcount", &plugins.join(file))
            .unwrap_or_else(|err| panic!("{err} (run scripts/build-plugins.sh first)"))
    };
    let native = PluginRuntime::native("wordcount", &[wordcount::__sluice_split_words, wordcount::__sluice_sum]);
    let mut versions =
        vec![("wasm", load("wordcount.wasm")), ("component", load("wordcount-abi2.wasm")), ("native", native)];
    // The guests in other languages, if built (scripts/build-python-plugins.sh, build-js-plugins.sh).
    for (name, file) in [("python", "wordcount-py.wasm"), ("javascript", "wordcount-js.wasm")] {
        if plugins.join(file).is_file() {
            versions.push((name, load(file)));
        }
    }
    versions
}

fn bench(c: &mut Criterion) {
    let input = corpus();
    let versions = versions();

    let mut group = c.benchmark_group("split_words");
    group.throughput(Throughput::Elements(LINES as u64));
    group.sample_size(10); // a Python or JavaScript call over a partition takes tenths of a second
    for (name, version) in &versions {
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            b.iter(|| {
                out.clear();
                instance::call(version, "split_words", input, &mut out).unwrap();
                out.len()
            })
        });
    }
    group.finish();

    // `sum` over the groups a map-side combine of this partition makes: one group per word.
    let mut words = Vec::new();
    instance::call(&versions[2].1, "split_words", &input, &mut words).unwrap();
    let mut groups: std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
    for frame in abi::Frames::new(&words) {
        let key_len = frame[0] as usize + 1;
        groups.entry(frame[..key_len].to_vec()).or_default().push(frame[key_len..].to_vec());
    }
    let mut reduce_input = Vec::new();
    let mut values = 0u64;
    for group in groups.values() {
        reduce_input.extend_from_slice(&(group.len() as u32).to_le_bytes());
        for value in group {
            abi::push_frame(&mut reduce_input, value);
            values += 1;
        }
    }
    let mut group = c.benchmark_group("sum");
    group.throughput(Throughput::Elements(values));
    group.sample_size(10);
    for (name, version) in &versions {
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(name), &reduce_input, |b, input| {
            b.iter(|| {
                out.clear();
                instance::call(version, "sum", input, &mut out).unwrap();
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
