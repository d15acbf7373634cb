#!/usr/bin/env bash
# Installs what the dashboard's browser tests need, idempotently: Debian's Chromium
# (/usr/bin/chromium; Playwright never downloads a browser) and playwright-core from npm into
# tests/browser/node_modules. Needs Node.js and npm (Debian's nodejs/npm if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-browser: installing ${missing[*]} from Debian" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cd "$root/tests/browser"
if [ ! -d node_modules/playwright-core ]; then
    echo "setup-browser: installing playwright-core" >&2
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; else npm install --no-audit --no-fund --silent; fi
fi
