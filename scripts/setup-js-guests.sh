#!/usr/bin/env bash
# Installs what building JavaScript plugins needs, idempotently: componentize-qjs (npm; QuickJS
# compiled to a WebAssembly component, with a prebuilt native binding per platform), pinned,
# into a cache directory outside the repository. Prints the path of the componentize-qjs
# command on standard output. Needs Node 18 or later and npm.
#   SLUICE_CACHE_DIR         where tools are cached (default: ~/.cache/sluice)
#   SLUICE_COMPONENTIZE_QJS  use this componentize-qjs command instead
set -euo pipefail
version=0.4.5
if [ -n "${SLUICE_COMPONENTIZE_QJS:-}" ]; then
    echo "$SLUICE_COMPONENTIZE_QJS"; exit 0
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup-js-guests: node and npm are needed (Node 18 or later)" >&2; exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "setup-js-guests: Node $(node --version) is too old; componentize-qjs needs 18 or later" >&2; exit 1
fi
cache=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
dir="$cache/js-guests"
bin="$dir/node_modules/.bin/componentize-qjs"
installed() {
    [ -x "$bin" ] && [ "$(node -p "require('$dir/node_modules/componentize-qjs/package.json').version" 2>/dev/null)" = "$version" ] &&
        (cd "$dir" && node -e "require('componentize-qjs')" 2>/dev/null)   # the platform's native binding loads
}
if ! installed; then
    echo "setup-js-guests: installing componentize-qjs $version into $dir (once)" >&2
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"name": "sluice-js-guests", "private": true}' > "$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error --save-exact "componentize-qjs@$version" >&2)
    installed || { echo "setup-js-guests: componentize-qjs $version did not install in $dir" >&2; exit 1; }
fi
echo "$bin"
