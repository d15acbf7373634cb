#!/usr/bin/env bash
# The cluster benchmark (scripts/bench-cluster.py): builds what it needs, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tansu=$(scripts/setup-kafka.sh)
scripts/build-plugins.sh
cargo build --release -p sluice --bin sluice
exec python3 scripts/bench-cluster.py --tansu "$tansu" "$@"
