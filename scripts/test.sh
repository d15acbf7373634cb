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
scripts/build-plugins.sh
cargo test --workspace --release "$@"
