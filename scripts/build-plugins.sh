#!/usr/bin/env bash
# Builds every plugin under plugins/ for wasm32-unknown-unknown (ABI 1 modules; release: lto,
# strip) and copies each to target/plugins/<name>.wasm, where the example pipelines look for
# them; then builds the plugins that have an `abi2` feature for wasm32-wasip2 (ABI 2
# components) as target/plugins/<name>-abi2.wasm; then the Python and JavaScript plugins
# (plugins/*-py/, plugins/*-js/) into components, target/plugins/<name>-py.wasm and
# <name>-js.wasm (scripts/build-python-plugins.sh, scripts/build-js-plugins.sh: they install
# componentize-py and componentize-qjs into ~/.cache/sluice the first time).
# Idempotent; installs the wasm targets with rustup if they are missing.
#   --rust   the Rust plugins only (no Python or Node needed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rust_only=
[ "${1:-}" = --rust ] && rust_only=1
for target in wasm32-unknown-unknown wasm32-wasip2; do
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "build-plugins: installing the $target target" >&2
        rustup target add "$target"
    fi
done
# Copies $1 to target/plugins/$2, then renames, so a running engine watching target/plugins
# never reads half a file.
publish() {
    cp "$1" "$root/target/plugins/.$2.tmp"
    mv "$root/target/plugins/.$2.tmp" "$root/target/plugins/$2"
}
mkdir -p "$root/target/plugins"
# An explicit target dir: CARGO_TARGET_DIR, if set for the engine, must not move the plugins.
cargo build --quiet --release --target wasm32-unknown-unknown --manifest-path "$root/plugins/Cargo.toml" \
    --target-dir "$root/plugins/target"
for wasm in "$root/plugins/target/wasm32-unknown-unknown/release/"*.wasm; do
    publish "$wasm" "$(basename "$wasm")"
done
components=(wordcount uppercase faulty top_k clock)
packages=(); features=()
for name in "${components[@]}"; do
    packages+=(-p "$name"); features+=("$name/abi2")
done
cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$root/plugins/Cargo.toml" \
    --target-dir "$root/plugins/target" "${packages[@]}" --features "$(IFS=,; echo "${features[*]}")"
for name in "${components[@]}"; do
    publish "$root/plugins/target/wasm32-wasip2/release/$name.wasm" "$name-abi2.wasm"
done
if [ -z "$rust_only" ]; then
    "$root/scripts/build-python-plugins.sh"
    "$root/scripts/build-js-plugins.sh"
fi
ls "$root/target/plugins/"*.wasm >&2
