#!/usr/bin/env bash
# libfaketime (Debian's `faketime`), for the test that steps the engine's wall clock; idempotent.
set -euo pipefail
if ls /usr/lib/*-linux-gnu/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "setup-faketime: please install libfaketime (and set SLUICE_LIBFAKETIME to libfaketime.so.1)" >&2
    exit 1
fi
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
echo "setup-faketime: installing faketime from Debian" >&2
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq faketime >/dev/null
