#!/usr/bin/env bash
# Installs what the Flume tests need, idempotently: Debian's thrift-compiler (apt, if missing),
# PyPI's thrift package (the tests' Thrift runtime), and Python code generated from Flume's own
# IDL (engine/src/sources/flume/flume.thrift) into a cache directory named by the IDL's hash.
# Prints that directory (put it on PYTHONPATH; the module is `flume`) on standard output.
#   SLUICE_CACHE_DIR  where generated code is cached (default: ~/.cache/sluice)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
idl="$root/engine/src/sources/flume/flume.thrift"
if ! command -v thrift >/dev/null; then
    echo "setup-flume: installing thrift-compiler (apt)" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y thrift-compiler >&2; else sudo apt-get install -y thrift-compiler >&2; fi
fi
if ! python3 -c "import thrift" 2>/dev/null; then
    echo "setup-flume: installing thrift (the tests' Thrift runtime, PyPI)" >&2
    python3 -m pip install --quiet thrift >&2 || python3 -m pip install --quiet --user thrift >&2
fi
cache=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
out="$cache/flume-py-$(sha256sum "$idl" | cut -c1-16)"
if [ ! -f "$out/flume/ThriftSourceProtocol.py" ]; then
    tmp=$(mktemp -d "$cache/flume-py.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache/flume-py.XXXXXX"; })
    thrift --gen py -out "$tmp" "$idl"
    rm -rf "$out"
    mv "$tmp" "$out"
fi
echo "$out"
