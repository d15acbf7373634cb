#!/usr/bin/env bash
# Regenerates engine/src/sources/flume/protocol.rs, the Rust code of Flume's Thrift IDL
# (engine/src/sources/flume/flume.thrift, a copy of apache/flume's
# flume-ng-sdk/src/main/thrift/flume.thrift), with Debian's thrift-compiler. The version of the
# compiler must match the `thrift` crate (0.17).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/engine/src/sources/flume"
command -v thrift >/dev/null || { echo "gen-flume-thrift: needs thrift-compiler (apt-get install thrift-compiler)" >&2; exit 1; }
version=$(thrift --version | awk '{print $3}')
case "$version" in 0.17.*) ;; *) echo "gen-flume-thrift: thrift $version; the thrift crate is 0.17" >&2; exit 1 ;; esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
thrift --gen rs -out "$out" "$dir/flume.thrift"
{
    echo "// Generated from flume.thrift (apache/flume flume-ng-sdk/src/main/thrift/flume.thrift)"
    echo "// by Debian's thrift-compiler $version: \`thrift --gen rs\`, run by scripts/gen-flume-thrift.sh."
    echo "// Do not edit: change the script or the IDL and run it again."
    cat "$out/flume.rs"
} > "$dir/protocol.rs"
echo "gen-flume-thrift: wrote $dir/protocol.rs" >&2
