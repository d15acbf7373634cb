#!/usr/bin/env bash
# Builds every plugin under plugins/ for wasm32-unknown-unknown (release: lto, strip) and copies
# each to target/plugins/<name>.wasm, where the example pipelines look for them.
# Idempotent; installs the wasm target with rustup if it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=wasm32-unknown-unknown
if ! rustup target list --installed | grep -qx "$target"; then
    echo "build-plugins: installing the $target target" >&2
    rustup target add "$target"
fi
# An explicit target dir: CARGO_TARGET_DIR, if set for the engine, must not move the plugins.
cargo build --quiet --release --target "$target" --manifest-path "$root/plugins/Cargo.toml" \
    --target-dir "$root/plugins/target"
mkdir -p "$root/target/plugins"
for wasm in "$root/plugins/target/$target/release/"*.wasm; do
    name=$(basename "$wasm")
    # Copy then rename, so a running engine watching target/plugins never reads half a file.
    cp "$wasm" "$root/target/plugins/.$name.tmp"
    mv "$root/target/plugins/.$name.tmp" "$root/target/plugins/$name"
done
ls "$root/target/plugins/"*.wasm >&2
