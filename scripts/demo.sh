#!/usr/bin/env bash
# The main demo: sets up what is missing, builds the engine and the example plugins, then runs
# the network word count (examples/network_wordcount) on the built-in input, served over TCP on
# 127.0.0.1:9999 by scripts/feed.py, the way Spark's example uses `nc -lk 9999`.
# Prints each batch's top counts and a one-line summary per batch; ends when the input does.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
echo "demo: building the engine (first build takes a few minutes)" >&2
cargo build --release -p sluice
scripts/build-plugins.sh --rust
example=examples/network_wordcount
rm -rf "$example/out"
port=9999
# The built-in input (21 lines) 300 times over at 1,000 lines per second: about six one-second
# batches. `scripts/demo.sh --live`: 3,000 times over (about a minute), to watch the dashboard.
repeat=300
[ "${1:-}" = "--live" ] && repeat=3000
echo "demo: the dashboard is at http://127.0.0.1:4040 while it runs" >&2
python3 scripts/feed.py "$example/input.txt" "$port" --repeat "$repeat" --rate 1000 --close &
feeder=$!
trap 'kill $feeder 2>/dev/null || true' EXIT
sleep 0.5
target/release/sluice run "$example/pipeline.toml"
echo "demo: per-batch counts were written to $example/out/batch-<time>.jsonl" >&2
