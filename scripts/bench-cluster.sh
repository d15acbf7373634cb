#!/usr/bin/env bash
# The cluster benchmark (scripts/bench-cluster.py): builds what it needs, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tansu=$(scripts/setup-kafka.sh)
scripts/build-plugins.sh --rust
cargo build --release -p sluice --bin sluice
# --store: the checkpoint store's requests (S3 on moto) and the 100-machine estimate instead.
if [ "${1:-}" = "--store" ]; then
    shift
    scripts/setup-s3.sh >/dev/null
    exec python3 scripts/bench-cluster-store.py --tansu "$tansu" "$@"
fi
exec python3 scripts/bench-cluster.py --tansu "$tansu" "$@"
