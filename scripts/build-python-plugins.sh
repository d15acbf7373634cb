#!/usr/bin/env bash
# Builds every Python plugin, plugins/<name>-py/ (its module app.py, with `Functions =
# sluice.plugin()`), with the SDK in sdk/python/ into a WebAssembly component (ABI 2, the WIT
# world `plugin` of sdk/wit/) at target/plugins/<name>-py.wasm. Installs componentize-py first
# (scripts/setup-python-guests.sh). A plugin whose .wasm is newer than its own files, the SDK,
# the WIT and the installed componentize-py is left alone. Idempotent; quiet on success.
#   --force   rebuild every plugin
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
force=
[ "${1:-}" = --force ] && force=1
componentize=$("$root/scripts/setup-python-guests.sh")
stamp="$(dirname "$componentize")/../.installed"
out_dir="$root/target/plugins"
mkdir -p "$out_dir"
status=0
for dir in "$root"/plugins/*-py; do
    [ -f "$dir/app.py" ] || continue
    name=$(basename "$dir")
    out="$out_dir/$name.wasm"
    if [ -z "$force" ] && [ -f "$out" ] && [ -z "$(find "$dir" "$root/sdk/python/sluice" "$root/sdk/wit" "$stamp" \
            -newer "$out" -type f -not -path '*/__pycache__/*' -print -quit)" ]; then
        continue
    fi
    # Written next to the output, then renamed: an engine watching target/plugins never reads
    # half a file.
    tmp=$(mktemp "$out_dir/.$name.XXXXXX.tmp")
    log=$(mktemp)
    if (cd "$root" && RUST_BACKTRACE=0 "$componentize" -d sdk/wit -w plugin componentize --stub-wasi \
            -p "$dir" -p sdk/python app -o "$tmp") >"$log" 2>&1; then
        chmod 644 "$tmp"
        mv "$tmp" "$out"
    else
        echo "build-python-plugins: $name failed:" >&2
        cat "$log" >&2
        rm -f "$tmp"
        status=1
    fi
    rm -f "$log"
done
exit $status
