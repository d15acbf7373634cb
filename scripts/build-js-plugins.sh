#!/usr/bin/env bash
# Builds each JavaScript plugin, plugins/<name>-js/ (entry module app.js), into an ABI 2
# component, target/plugins/<name>-js.wasm, with componentize-qjs (QuickJS; installed by
# scripts/setup-js-guests.sh into the cache directory). A plugin is rebuilt only when one of
# its inputs changed (its files, sdk/js, sdk/wit, the tool's version, this script): a hash of
# them is kept next to the output as .<name>.wasm.inputs. The output is written to a temporary
# file and renamed, so a running engine watching target/plugins never reads half a file.
#   scripts/build-js-plugins.sh [DIR...]   the plugins to build (default: plugins/*-js/)
#   SLUICE_JS_OUT                          the output directory (default: target/plugins)
# The component imports only sluice:plugin/host and types (--stub-wasi: every WASI import is a
# trap stub; sdk/js/component.js sends console.* to host.log instead), and uses no
# component-model async (--sync). An app imports the SDK as '../../sdk/js/sluice.js' and may
# import modules of its own directory; it is built from a copy of sdk/js and of its directory
# laid out as in the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tool=$("$root/scripts/setup-js-guests.sh")
out=${SLUICE_JS_OUT:-$root/target/plugins}
flags=(--stub-wasi --sync -n plugin)
mkdir -p "$out"
if [ $# -gt 0 ]; then
    dirs=("$@")
else
    shopt -s nullglob
    dirs=("$root"/plugins/*-js/)
    shopt -u nullglob
fi
if [ ${#dirs[@]} -eq 0 ]; then
    echo "build-js-plugins: no plugins/*-js/ directories" >&2; exit 0
fi
tool_version=$(node -p "require('$(dirname "$(dirname "$(readlink -f "$tool")")")/package.json').version" 2>/dev/null ||
    "$tool" --version 2>/dev/null || echo unknown)
# The files of a plugin that go into its component (no node_modules, no tests).
plugin_files() {
    (cd "$1" && find . -type f -not -path './node_modules/*' -not -path './test/*' -not -name '*.wasm' | LC_ALL=C sort)
}
for dir in "${dirs[@]}"; do
    dir=$(cd "$dir" && pwd)
    name=$(basename "$dir")
    if [ ! -f "$dir/app.js" ]; then
        echo "build-js-plugins: $dir has no app.js, skipped" >&2; continue
    fi
    wasm="$out/$name.wasm"
    stamp="$out/.$name.wasm.inputs"
    inputs=$(
        {
            echo "componentize-qjs $tool_version ${flags[*]}"
            sha256sum "$root/scripts/build-js-plugins.sh"
            (cd "$root" && sha256sum sdk/js/*.js sdk/wit/*.wit)
            (cd "$dir" && plugin_files . | xargs -r -d '\n' sha256sum)
        } | sha256sum | cut -d' ' -f1
    )
    if [ -f "$wasm" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
        echo "build-js-plugins: $name is up to date ($wasm)" >&2; continue
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/sdk/js" "$tmp/plugins/$name"
    cp "$root"/sdk/js/*.js "$tmp/sdk/js/"
    (cd "$dir" && plugin_files . | while IFS= read -r f; do
        mkdir -p "$tmp/plugins/$name/$(dirname "$f")"; cp "$f" "$tmp/plugins/$name/$f"
    done)
    cat > "$tmp/entry.js" <<JS
import './sdk/js/component.js';
import './plugins/$name/app.js';
export { functions } from './sdk/js/sluice.js';
JS
    start=$(date +%s.%N)
    (cd "$tmp" && "$tool" -w "$root/sdk/wit" -j entry.js --module-root . "${flags[@]}" -o "$tmp/out.wasm" >&2)
    end=$(date +%s.%N)
    cp "$tmp/out.wasm" "$out/.$name.wasm.tmp"
    mv "$out/.$name.wasm.tmp" "$wasm"
    echo "$inputs" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
    rm -rf "$tmp"
    trap - EXIT
    printf 'build-js-plugins: built %s (%s bytes, %.1f s)\n' "$wasm" "$(stat -c %s "$wasm")" "$(awk "BEGIN { print $end - $start }")" >&2
done
