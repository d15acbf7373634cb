#!/usr/bin/env bash
# Installs what the Kinesis tests need, idempotently: the test client (PyPI's boto3) and a local
# Kinesis API, kinesalite (npm), into a cache directory. Prints the path of the kinesalite
# command on standard output.
#   SLUICE_CACHE_DIR   where tools are cached (default: ~/.cache/sluice)
#   SLUICE_KINESALITE  use this kinesalite command instead
set -euo pipefail
version=3.3.3
if ! python3 -c "import boto3" 2>/dev/null; then
    echo "setup-kinesis: installing boto3 (the tests' Kinesis client)" >&2
    python3 -m pip install --quiet boto3 >&2 || python3 -m pip install --quiet --user boto3 >&2
fi
if [ -n "${SLUICE_KINESALITE:-}" ]; then
    echo "$SLUICE_KINESALITE"; exit 0
fi
if ! command -v npm >/dev/null; then
    echo "setup-kinesis: installing node and npm (for kinesalite)" >&2
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2 && $sudo_cmd apt-get install -y -qq nodejs npm >&2
fi
cache=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
root="$cache/kinesalite-$version"
bin="$root/node_modules/.bin/kinesalite"
if [ ! -x "$bin" ]; then
    echo "setup-kinesis: installing kinesalite $version into $root" >&2
    mkdir -p "$root"
    # In memory (no --path), kinesalite never loads leveldown: its install script is not needed.
    npm install --prefix "$root" --no-audit --no-fund --ignore-scripts "kinesalite@$version" >&2
fi
echo "$bin"
