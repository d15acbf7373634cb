#!/usr/bin/env bash
# The fault schedule of README "Reliability": every crash test with KILLS (default 50) random
# `kill -9`s, one after another (each prints its seed: SLUICE_CRASH_SEED=<seed> repeats a
# schedule), then the disk, plugin-file and sink-directory faults. Sets up what is missing
# first, as scripts/test.sh does. Usage: scripts/faults.sh [KILLS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
kills=${1:-50}
scripts/setup.sh
scripts/setup-kafka.sh >/dev/null
scripts/setup-postgres.sh >/dev/null
scripts/setup-kinesis.sh >/dev/null
scripts/setup-flume.sh >/dev/null
scripts/setup-faketime.sh
scripts/build-plugins.sh --rust
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# One at a time: the schedules' timings are the point, and the machine has few cores.
SLUICE_CRASH_KILLS=$kills cargo test --release --test e2e -- --test-threads 1 --nocapture \
    recovery::directory_to_file_sink_is_exactly_once \
    recovery::socket_with_write_ahead_log_loses_nothing \
    kafka::kafka_to_file_is_exactly_once \
    kafka_postgres::kafka_to_postgres_is_exactly_once \
    kafka_transactions:: \
    postgres::upserted_totals_and_appended_counts_are_exact \
    kinesis::kinesis_to_file_is_exactly_once \
    flume::nothing_answered_ok_is_lost \
    faults:: 2>&1 | tee "$log" || status=$?
echo
echo "faults: $kills kill -9s per path; summaries:"
grep -E "^(crash schedule seed|recovery after kill|socket \+ WAL after|Kafka|mock cluster|Kinesis|Flume|test .* (ok|FAILED)$)" "$log" || true
exit "$status"
