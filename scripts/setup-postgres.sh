#!/usr/bin/env bash
# A PostgreSQL server for the PostgreSQL sink's tests, idempotently. Prints its URL on standard
# output (postgres://<user>@127.0.0.1:<port>/postgres); the tests create a database of their own
# in it and drop it at the end.
#   SLUICE_TEST_PG_URL  use this server (printed as is)
#   SLUICE_CACHE_DIR    where a throw-away cluster lives (default: ~/.cache/sluice; cluster in pg/)
# 1. A server already answering on 127.0.0.1:5432 (trust auth for root or postgres) is used.
# 2. Else Debian's postgresql is installed if missing (apt-get; sudo when not root), and a
#    throw-away cluster (initdb, trust auth, loopback only, a free port) is started with pg_ctl,
#    or found running from an earlier call.
set -euo pipefail
if [ -n "${SLUICE_TEST_PG_URL:-}" ]; then
    echo "$SLUICE_TEST_PG_URL"; exit 0
fi
answers() { # host port user
    command -v psql >/dev/null && psql -h "$1" -p "$2" -U "$3" -d postgres -Atqc 'select 1' >/dev/null 2>&1
}
for user in "$(id -un)" postgres; do
    if answers 127.0.0.1 5432 "$user"; then
        echo "postgres://$user@127.0.0.1:5432/postgres"; exit 0
    fi
done
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ]; then
    echo "setup-postgres: installing Debian's postgresql" >&2
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >&2
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
cache=${SLUICE_CACHE_DIR:-$HOME/.cache/sluice}
data="$cache/pg"
mkdir -p "$cache"
# initdb and postgres refuse to run as root: the cluster belongs to the postgres user then.
as=()
owner=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
    owner=postgres
    as=(runuser -u postgres --)
    chmod o+x "$cache" "$(dirname "$cache")" 2>/dev/null || true
fi
if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres "$data"
    "${as[@]}" "$bindir/initdb" -D "$data" -U "$owner" --auth=trust -E UTF8 >&2
fi
port_file="$data/sluice-port"
if [ -s "$port_file" ] && answers 127.0.0.1 "$(cat "$port_file")" "$owner"; then
    echo "postgres://$owner@127.0.0.1:$(cat "$port_file")/postgres"; exit 0
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as[@]}" sh -c "echo $port > '$port_file'"
"${as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k '$data'" start >&2
echo "postgres://$owner@127.0.0.1:$port/postgres"
