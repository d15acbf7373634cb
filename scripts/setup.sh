#!/usr/bin/env bash
# Installs what building and testing Sluice needs on a fresh machine, idempotently:
# the wasm32-unknown-unknown and wasm32-wasip2 targets (plugins), rustfmt and clippy (CI), python3 (the demo feeder).
set -euo pipefail
if ! command -v rustup >/dev/null; then
    echo "setup: rustup is required (https://rustup.rs)" >&2
    exit 1
fi
# ABI 1 plugins (core modules) and ABI 2 plugins (components).
for need_target in wasm32-unknown-unknown wasm32-wasip2; do
    if ! rustup target list --installed | grep -qx "$need_target"; then
        echo "setup: installing the $need_target target" >&2
        rustup target add "$need_target"
    fi
done
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^$component"; then
        echo "setup: installing $component" >&2
        rustup component add "$component"
    fi
done
if ! command -v python3 >/dev/null; then
    echo "setup: installing python3 (for scripts/feed.py)" >&2
    if command -v apt-get >/dev/null; then
        sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3
    else
        echo "setup: please install python3" >&2; exit 1
    fi
fi
