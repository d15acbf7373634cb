#!/usr/bin/env bash
# Runs the example end to end on a fresh machine: a Kafka-API broker (tansu) on 127.0.0.1:9092
# unless one answers there, PostgreSQL (the server on 127.0.0.1:5432, else a throw-away one),
# the input produced into `lines` by confluent-kafka, sluice for ~15 s, then the top totals.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
scripts/setup.sh
tansu=$(scripts/setup-kafka.sh)
server=$(scripts/setup-postgres.sh)
scripts/build-plugins.sh
cargo build --release -p sluice --bin sluice
client="python3 $root/tests/kafka/client.py"
if ! (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
    echo "example: starting tansu on 127.0.0.1:9092 (in memory)" >&2
    "$tansu" broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:9092 \
        --advertised-listener-url tcp://127.0.0.1:9092 >/dev/null 2>&1 &
    broker=$!
    trap 'kill $broker 2>/dev/null || true' EXIT
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null && break; sleep 0.1; done
fi
$client create 127.0.0.1:9092 lines 2 2>/dev/null || echo "example: topic lines exists" >&2
psql "$server" -qAtX -c "DROP DATABASE IF EXISTS sluice_example" -c "CREATE DATABASE sluice_example"
export SLUICE_PG_URL="${server%/*}/sluice_example"
cd "$here"
rm -rf ckpt
$client produce 127.0.0.1:9092 lines "$root/examples/network_wordcount/input.txt"
timeout -s TERM 15 "$root/target/release/sluice" run pipeline.toml --no-ui || true
echo "--- top words in word_totals ($SLUICE_PG_URL):"
psql "$SLUICE_PG_URL" -X -c "SELECT key AS word, value AS total FROM word_totals ORDER BY value DESC, key LIMIT 10"
