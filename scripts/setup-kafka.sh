#!/usr/bin/env bash
# Installs what the Kafka tests need, idempotently: the test client (PyPI's confluent-kafka) and
# the Kafka-API broker they run against, tansu, built from crates.io once into a cache directory
# (about 15 minutes on 2 cores) and reused afterwards. Prints the path of the tansu binary on
# standard output.
#   SLUICE_CACHE_DIR  where tools are cached (default: ~/.cache/sluice)
#   SLUICE_TANSU      use this tansu binary instead
set -euo pipefail
version=0.6.0
if ! python3 -c "import confluent_kafka" 2>/dev/null; then
    echo "setup-kafka: installing confluent-kafka (the tests' Kafka client)" >&2
    python3 -m pip install --quiet confluent-kafka >&2 || python3 -m pip install --quiet --user confluent-kafka >&2
fi
if [ -n "${SLUICE_TANSU:-}" ]; then
    echo "$SLUICE_TANSU"; exit 0
fi
cache=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
root="$cache/tansu-$version"
bin="$root/bin/tansu"
if [ ! -x "$bin" ]; then
    echo "setup-kafka: building tansu $version into $root (once; about 15 minutes)" >&2
    mkdir -p "$root"
    # A build of its own: never shares (or locks) the project's target directory.
    CARGO_TARGET_DIR="$cache/tansu-build" \
        cargo install tansu --version "$version" --features dynostore --locked --root "$root" >&2
    rm -rf "$cache/tansu-build"
fi
echo "$bin"
