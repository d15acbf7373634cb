#!/usr/bin/env bash
# Every test: sets up what is missing, builds the plugins for wasm, runs unit, doc and
# end-to-end tests of the whole workspace (release build: the end-to-end tests drive the real
# binary and real Wasm plugins).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
# The dashboard's browser tests: Debian's Chromium and playwright-core (npm).
scripts/setup-browser.sh
# The connector tests' services: a Kafka-API broker (tansu, built once into ~/.cache/sluice,
# about 15 minutes the first time), confluent-kafka, and a PostgreSQL server.
scripts/setup-kafka.sh >/dev/null
scripts/setup-postgres.sh >/dev/null
# A local Kinesis API (npm's kinesalite) and boto3, for the Kinesis tests.
scripts/setup-kinesis.sh >/dev/null
# The Flume tests' client: PyPI's thrift, Python code generated from Flume's IDL.
scripts/setup-flume.sh >/dev/null
# The fault tests' clock: libfaketime steps the engine's wall clock (Debian's faketime).
scripts/setup-faketime.sh
# The cluster tests' S3 checkpoint store: PyPI's moto[server] (and boto3).
scripts/setup-s3.sh >/dev/null
# Every plugin: Rust modules and components, and ABI 2 guests in other languages, Python
# (componentize-py, PyPI) and JavaScript (componentize-qjs, npm); then the guest SDKs' own tests
# (the codec against shared vectors, the runners).
scripts/build-plugins.sh
python3 -m unittest discover -q -s sdk/python/tests
node --test sdk/js/test/ >/dev/null
# The plugins' own unit tests (a workspace of its own), natively.
cargo test --quiet --release --manifest-path plugins/Cargo.toml --target-dir plugins/target/native
cargo test --workspace --release "$@"
