#!/usr/bin/env python3
"""A cluster of 1, 2 and 3 sluice processes on one tansu broker: throughput, and how long a
partition that changes owner waits for its next output.

  scripts/bench-cluster.sh [--lines N] [--partitions P] [--runs R] [--keyed]

Throughput: a topic of P partitions is filled with N lines (8 words each) by confluent-kafka;
then K members (K = 1, 2, 3) of a `[cluster]` pipeline (flat_map split_words → file sink, store
in a temporary directory) read it; records/s is N over the time from the first batch with
records (any member) to the last. On a 2-core machine more members share the same cores: the
point is that the work spreads, not that it scales. With `--keyed` the words are also counted
by `reduce_by_key` behind the shuffle (the repartition topic), and a run ends when the counts
written add up to every word of the input: records/s is then N over the time from the first
batch with records to the last counts file.

Rebalance: with a producer writing 2,000 lines/s, 2 members run, a third joins, then one is
killed (`kill -9`). For every partition a member gains, "gain to first output" is the time from
its "gained partition" log line to the first output file of that partition it writes after it
(file mtime). After a kill, the group moves the dead member's partitions only once its session
timeout (3 s here) has passed; that wait comes before the gain and is not in the figure.
"""
import argparse
import datetime
import glob
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

bench_kafka = import_module("bench-kafka")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "sluice")

PIPELINE = """[pipeline]
name = "bench-cluster"
batch_interval = "500ms"
block_interval = "100ms"

[plugins]
wordcount = "{plugin}"

[cluster]
group_id = "{group}"
checkpoint_store = "file://{store}"
session_timeout = "3s"

[[sources]]
name = "lines"
type = "kafka"
brokers = "{brokers}"
topics = ["lines"]

[[stages]]
name = "words"
input = "lines"
op = "flat_map"
plugin = "wordcount"
function = "split_words"

[[sinks]]
name = "out"
input = "words"
type = "file"
path = "out"
"""

KEYED = """
[[stages]]
name = "counts"
input = "words"
op = "reduce_by_key"
plugin = "wordcount"
function = "sum"

[[sinks]]
name = "counts_out"
input = "counts"
type = "file"
path = "counts"
"""

BATCH = re.compile(r"^(\S+) .*batch (\d+) ms: (\d+) records in", re.M)
GAINED = re.compile(r"^(\S+) .*gained partition lines/(\d+)", re.M)


def stamp(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Member:
    def __init__(self, work, name):
        self.log = open(os.path.join(work, f"{name}.log"), "w+")
        self.child = subprocess.Popen([SLUICE, "run", os.path.join(work, "pipeline.toml"), "--no-ui"],
                                      stderr=self.log, stdout=subprocess.DEVNULL, cwd=work,
                                      env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))

    def text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM):
        self.child.send_signal(sig)
        self.child.wait(60)


def write_pipeline(work, brokers, keyed=False):
    os.makedirs(os.path.join(work, "store"))
    with open(os.path.join(work, "pipeline.toml"), "w") as f:
        f.write(PIPELINE.format(plugin=os.path.join(ROOT, "target", "plugins", "wordcount.wasm"), brokers=brokers,
                                group=f"bench-{time.time_ns()}", store=os.path.join(work, "store"))
                + (KEYED if keyed else ""))


def counted(work):
    """Words counted so far by the keyed stage, and the newest counts file's mtime."""
    total, newest = 0, 0.0
    for path in glob.glob(os.path.join(work, "counts", "batch-*.jsonl")):
        newest = max(newest, os.path.getmtime(path))
        with open(path) as f:
            total += sum(json.loads(line)[1] for line in f if line.strip())
    return total, newest


def throughput(address, members, count, keyed=False):
    with tempfile.TemporaryDirectory() as work:
        write_pipeline(work, address, keyed)
        running = [Member(work, f"m{i}") for i in range(members)]
        deadline = time.time() + 300
        batches, words = [], (0, 0.0)
        while time.time() < deadline:
            time.sleep(0.5)
            batches = [(int(t), int(n)) for m in running for _, t, n in BATCH.findall(m.text()) if int(n) > 0]
            if keyed:
                words = counted(work)
                if words[0] >= count * 8:
                    break
            elif sum(n for _, n in batches) >= count:
                break
        for m in running:
            m.stop()
        taken = sum(n for _, n in batches)
        if keyed:
            if words[0] != count * 8:
                sys.exit(f"{members} member(s) counted {words[0]} of {count * 8} words; logs in {work}")
            first = min(t for t, _ in batches) / 1000
            return count / (words[1] - first)
        if taken < count:
            sys.exit(f"{members} member(s) took {taken} of {count} lines; logs in {work}")
        times = sorted(t for t, _ in batches)
        return taken / ((times[-1] - times[0]) / 1000 + 0.5)


def first_outputs(work, member, since):
    """Per partition gained by `member` after `since`: seconds from the gain to its first output."""
    waits = []
    for at, partition in GAINED.findall(member.text()):
        gained = stamp(at)
        if gained < since:
            continue
        files = [os.path.getmtime(p) for p in glob.glob(os.path.join(work, "out", f"batch-*-lines-{partition}.jsonl"))]
        later = [t for t in files if t > gained]
        if later:
            waits.append(min(later) - gained)
    return waits


def rebalance(address, lines):
    stop = threading.Event()

    def feed():
        producer = bench_kafka.Producer({"bootstrap.servers": address, "linger.ms": 5})
        i = 0
        while not stop.is_set():
            for _ in range(200):
                producer.produce("lines", lines[i % len(lines)])
                i += 1
            producer.poll(0)
            time.sleep(0.1)
        producer.flush(30)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with tempfile.TemporaryDirectory() as work:
            write_pipeline(work, address)
            members = [Member(work, "m0"), Member(work, "m1")]
            time.sleep(8)
            joined_at = time.time()
            members.append(Member(work, "m2"))
            time.sleep(8)
            join = first_outputs(work, members[2], joined_at)
            killed_at = time.time()
            members[0].stop(signal.SIGKILL)
            time.sleep(10)
            kill = first_outputs(work, members[1], killed_at) + first_outputs(work, members[2], killed_at)
            for m in members[1:]:
                m.stop()
            return join, kill
    finally:
        stop.set()
        feeder.join()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=600_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tansu", required=True)
    parser.add_argument("--keyed", action="store_true", help="also count words with reduce_by_key behind the shuffle")
    args = parser.parse_args()
    rnd = random.Random(7)
    words = [f"w{i}" for i in range(5000)]
    lines = [" ".join(rnd.choice(words) for _ in range(8)).encode() for _ in range(args.lines)]
    rates = {1: [], 2: [], 3: []}
    keyed = {1: [], 2: [], 3: []}
    joins, kills = [], []
    for run in range(args.runs):
        tansu, address = bench_kafka.start_tansu(args.tansu)
        try:
            admin = bench_kafka.AdminClient({"bootstrap.servers": address})
            for f in admin.create_topics([bench_kafka.NewTopic("lines", args.partitions, 1)]).values():
                f.result(30)
            bench_kafka.produce(address, "lines", lines)
            for members in rates:
                rates[members].append(throughput(address, members, len(lines)))
                if args.keyed:
                    keyed[members].append(throughput(address, members, len(lines), keyed=True))
            join, kill = rebalance(address, lines)
            joins += join
            kills += kill
        finally:
            tansu.kill()
            tansu.wait()
        print(f"run {run + 1}: " + ", ".join(f"{k} member(s) {v[-1]:,.0f}/s" for k, v in rates.items()), flush=True)
    print(f"\nmedians over {args.runs} runs of {args.lines:,} lines, {args.partitions} partitions:")
    for members, figures in rates.items():
        rate = statistics.median(figures)
        print(f"  {members} member(s): {rate:>10,.0f} records/s   {rate / statistics.median(rates[1]):.2f}× one member")
        if keyed[members]:
            k = statistics.median(keyed[members])
            print(f"    + reduce_by_key behind the shuffle: {k:>10,.0f} lines/s   {k / rate:.2f}× without it")
    for name, waits in (("a member joins", joins), ("a member is killed (from the gain, which comes after the 3 s session timeout)", kills)):
        if waits:
            print(f"  gain to first output, {name}: median {statistics.median(waits):.2f} s, "
                  f"max {max(waits):.2f} s over {len(waits)} partition moves")
        else:
            print(f"  gain to first output, {name}: no partition moved")


if __name__ == "__main__":
    main()
