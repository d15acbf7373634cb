#!/usr/bin/env python3
"""Kafka in → word count → Kafka out (and, with --postgres URL, → PostgreSQL), against a tansu
broker, with the broker's own produce and consume rates measured in the same run as the ceiling.

  scripts/bench-kafka.sh [--lines N] [--runs R] [--postgres URL]

Each run: a fresh in-memory tansu; N lines (8 words each) produced by confluent-kafka (the
produce rate); read back by confluent-kafka (the consume rate: the ceiling); then sluice runs
the word count over the filled topic and its records/s is the lines it took over the time from
its first to its last batch with records. Prints the medians and the ratio to the consume rate.
"""
import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
PARTITIONS = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tansu(tansu):
    port = free_port()
    address = f"127.0.0.1:{port}"
    child = subprocess.Popen(
        [tansu, "broker", "--storage-engine", "memory://tansu/",
         f"--listener-url=tcp://{address}", f"--advertised-listener-url=tcp://{address}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return child, address
        except OSError:
            time.sleep(0.05)
    sys.exit("tansu did not start")


def produce(address, topic, lines):
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "linger.ms": 20,
                         "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
    start = time.time()
    for line in lines:
        while True:
            try:
                producer.produce(topic, line)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(300)
    return len(lines) / (time.time() - start)


def consume(address, topic, count):
    # The same fetch settings sluice's source uses (fetch.queue.backoff.ms 10 ms, not 1 s).
    consumer = Consumer({"bootstrap.servers": address, "group.id": f"ceiling-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.queue.backoff.ms": 10})
    consumer.subscribe([topic])
    seen, start = 0, None
    deadline = time.time() + 300
    while seen < count and time.time() < deadline:
        messages = consumer.consume(10000, 0.5)
        if messages and start is None:
            start = time.time()
        seen += sum(1 for m in messages if not m.error())
    consumer.close()
    return seen / (time.time() - start)


PIPELINE = """[pipeline]
name = "bench"
batch_interval = "500ms"
block_interval = "100ms"

[plugins]
wordcount = "{plugin}"

[[sources]]
name = "lines"
type = "kafka"
brokers = "{brokers}"
topics = ["lines"]
group_id = "{group}"

[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "wordcount"
function = "split_words"

[[stages]]
name = "counts"
input = "words"
op = "reduce_by_key"
plugin = "wordcount"
function = "sum"

[[sinks]]
name = "out"
input = "counts"
{sink}
"""

BATCH = re.compile(r"batch (\d+) ms: (\d+) records in")


def run_sluice(workdir, brokers, sink, count):
    path = os.path.join(workdir, "pipeline.toml")
    with open(path, "w") as f:
        f.write(PIPELINE.format(plugin=os.path.join(ROOT, "target", "plugins", "wordcount.wasm"),
                                brokers=brokers, sink=sink, group=f"bench-{time.time_ns()}"))
    log = open(os.path.join(workdir, "sluice.log"), "w+")
    child = subprocess.Popen([SLUICE, "run", path, "--no-ui"], stderr=log, stdout=subprocess.DEVNULL,
                             env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))
    batches = []
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.5)
        log.seek(0)
        batches = [(int(t), int(n)) for t, n in BATCH.findall(log.read()) if int(n) > 0]
        if sum(n for _, n in batches) >= count:
            break
    child.terminate()
    child.wait(60)
    taken = sum(n for _, n in batches)
    if taken < count:
        sys.exit(f"sluice took {taken} of {count} lines; log in {log.name}")
    # The first batch with records took what arrived in its interval: count from its start.
    span = (batches[-1][0] - batches[0][0]) / 1000 + 0.5
    if os.environ.get("BENCH_VERBOSE"):
        print("  batches:", [n for _, n in batches], flush=True)
    return taken / span


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", help="also run → PostgreSQL (a database URL)")
    parser.add_argument("--tansu", required=True)
    args = parser.parse_args()
    rnd = random.Random(7)
    words = [f"w{i}" for i in range(5000)]
    lines = [" ".join(rnd.choice(words) for _ in range(8)).encode() for _ in range(args.lines)]
    figures = {"produce": [], "consume": [], "to_kafka": [], "to_postgres": []}
    for run in range(args.runs):
        tansu, address = start_tansu(args.tansu)
        try:
            admin = AdminClient({"bootstrap.servers": address})
            for topic in ("lines", "counts"):
                for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
                    f.result(30)
            figures["produce"].append(produce(address, "lines", lines))
            figures["consume"].append(consume(address, "lines", len(lines)))
            with tempfile.TemporaryDirectory() as work:
                sink = f'type = "kafka"\nbrokers = "{address}"\ntopic = "counts"\ndelivery = "at_least_once"\n'
                figures["to_kafka"].append(run_sluice(work, address, sink, len(lines)))
            if args.postgres:
                with tempfile.TemporaryDirectory() as work:
                    table = f"bench_counts_{run}_{os.getpid()}"
                    sink = (f'type = "postgres"\nurl = "{args.postgres}"\ntable = "{table}"\n'
                            'mode = "upsert"\nkey = ["key"]\ncreate_table = true\n')
                    figures["to_postgres"].append(run_sluice(work, address, sink, len(lines)))
        finally:
            tansu.kill()
            tansu.wait()
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in figures.items() if v), flush=True)
    ceiling = statistics.median(figures["consume"])
    print(f"\nmedians over {args.runs} runs of {args.lines:,} lines, {PARTITIONS} partitions (records/s):")
    print(f"  tansu produce (confluent-kafka)   {statistics.median(figures['produce']):>12,.0f}")
    print(f"  tansu consume (confluent-kafka)   {ceiling:>12,.0f}   the ceiling")
    for name in ("to_kafka", "to_postgres"):
        if figures[name]:
            rate = statistics.median(figures[name])
            print(f"  sluice kafka → word count → {name[3:]:<8} {rate:>12,.0f}   {rate / ceiling:.2f} of the ceiling")


if __name__ == "__main__":
    main()
