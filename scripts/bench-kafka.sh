#!/usr/bin/env bash
# The Kafka benchmark (scripts/bench-kafka.py): builds what it needs, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tansu=$(scripts/setup-kafka.sh)
scripts/build-plugins.sh --rust
cargo build --release -p sluice --bin sluice
exec python3 scripts/bench-kafka.py --tansu "$tansu" "$@"
