#!/usr/bin/env bash
# Installs what building Python plugins (plugins/*-py/, see sdk/python/) needs, idempotently:
# componentize-py (PyPI, pinned), which turns a Python app and the SDK into a WebAssembly
# component, in a virtual environment of its own under the cache directory. Prints the path of
# the componentize-py binary on standard output.
#   SLUICE_CACHE_DIR  where tools are cached (default: ~/.cache/sluice; the venv is python-guests/)
#   PYTHON            the Python that makes the venv (default: python3; 3.10 or later)
#   SLUICE_COMPONENTIZE_PY  use this componentize-py command instead
set -euo pipefail
version=0.25.1
if [ -n "${SLUICE_COMPONENTIZE_PY:-}" ]; then
    echo "$SLUICE_COMPONENTIZE_PY"; exit 0
fi
cache=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
venv="$cache/python-guests"
stamp="$venv/.installed"
if [ "$(cat "$stamp" 2>/dev/null)" != "componentize-py==$version" ] || [ ! -x "$venv/bin/componentize-py" ]; then
    mkdir -p "$cache"
    # One installer at a time; a second one waits, then finds it installed.
    exec 9>"$cache/python-guests.lock"
    if command -v flock >/dev/null; then flock 9; fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "componentize-py==$version" ] || [ ! -x "$venv/bin/componentize-py" ]; then
        echo "setup-python-guests: installing componentize-py $version into $venv (PyPI)" >&2
        # A venv cannot be moved once made (its scripts name its path): make it in place, and
        # write the stamp last, so an interrupted install is redone from scratch.
        rm -rf "$venv"
        if ! "${PYTHON:-python3}" -m venv "$venv" >&2; then
            # Debian ships venv apart from python3.
            rm -rf "$venv"
            if command -v apt-get >/dev/null; then
                echo "setup-python-guests: installing python3-venv (Debian)" >&2
                sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
                $sudo_cmd apt-get install -y -qq python3-venv >&2
            fi
            "${PYTHON:-python3}" -m venv "$venv" >&2
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$version" >&2
        "$venv/bin/componentize-py" --version >/dev/null
        echo "componentize-py==$version" >"$stamp"
    fi
fi
echo "$venv/bin/componentize-py"
