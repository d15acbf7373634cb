#!/usr/bin/env python3
"""What a cluster asks of its checkpoint store, measured, and the estimate for 100 machines.

  scripts/bench-cluster.sh --store [--members 3,10] [--partitions 20] [--seconds 20]

For each member count K: a tansu broker, a topic of P partitions, an S3 store served by moto
(PyPI's moto[server], which logs every request it answers), K members of a `[cluster]` pipeline
(flat_map split_words -> file sink, 500 ms batches, 3 s session timeout) and a producer writing
2,000 lines/s. Once every partition has an owner, moto's request log is counted for S seconds by
method and by what was asked for: a partition's batch log (appends, done markers, deletions of
old entries), heartbeats, deploy polling. Then one member is `kill -9`ed and, for each partition
it owned, the time from the kill to that partition's next output file is taken (session timeout,
rebalance, loading the partition's log, its first batch).

The figures per partition-batch and per member-second are what the 100-machine estimate in
docs/CLUSTER.md is built from; measuring at two member counts checks that they do not depend on
how many members there are (the store work is per partition and per member, nothing is
all-to-all).
"""
import argparse
import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

bench_kafka = import_module("bench-kafka")
bench_cluster = import_module("bench-cluster")

BATCH_S = 0.5
REQUEST = re.compile(r'"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP')


def start_moto():
    port = bench_kafka.free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    child = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    for _ in range(200):
        try:
            s3.create_bucket(Bucket="bench")
            return child, endpoint, log.name
        except Exception:
            time.sleep(0.1)
    sys.exit("moto did not start")


def classify(method, target):
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query)
    if method == "GET" and "list-type" in params:
        method, path = "LIST", params.get("prefix", [""])[0]
    if method == "POST" and "delete" in query.split("&"):
        return "DELETE", "partitions"  # a bulk delete: old entries and done markers
    path = urllib.parse.unquote(path)
    for kind in ("partitions", "members", "deploys", "plugins"):
        if f"/{kind}" in path:
            return method, kind
    return method, "other"


def count(log_path, start, end):
    with open(log_path) as f:
        f.seek(start)
        text = f.read(end - start)
    counts = {}
    for method, target in REQUEST.findall(text):
        key = classify(method, target)
        counts[key] = counts.get(key, 0) + 1
    return counts


def pipeline(work, brokers):
    text = bench_cluster.PIPELINE.format(plugin=os.path.join(bench_cluster.ROOT, "target", "plugins", "wordcount.wasm"),
                                         brokers=brokers, group=f"store-{time.time_ns()}", store="/unused")
    text = text.replace('checkpoint_store = "file:///unused"', 'checkpoint_store = "s3://bench/run"')
    with open(os.path.join(work, "pipeline.toml"), "w") as f:
        f.write(text)


def owned(member):
    """Partitions `member` owns now, from its gained/lost log lines."""
    partitions = set()
    for line in member.text().splitlines():
        if m := re.search(r"gained partition lines/(\d+)", line):
            partitions.add(int(m.group(1)))
        elif m := re.search(r"lost partition lines/(\d+)", line):
            partitions.discard(int(m.group(1)))
    return partitions


def measure(tansu_bin, members, partitions, seconds, lines):
    tansu, address = bench_kafka.start_tansu(tansu_bin)
    moto, endpoint, log_path = start_moto()
    stop = threading.Event()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                      AWS_REGION="us-east-1")

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
    try:
        admin = bench_kafka.AdminClient({"bootstrap.servers": address})
        for f in admin.create_topics([bench_kafka.NewTopic("lines", partitions, 1)]).values():
            f.result(30)
        feeder.start()
        with tempfile.TemporaryDirectory() as work:
            pipeline(work, address)
            running = [bench_cluster.Member(work, f"m{i}") for i in range(members)]
            deadline = time.time() + 120
            while sum(len(owned(m)) for m in running) < partitions and time.time() < deadline:
                time.sleep(0.5)
            time.sleep(3)  # past the first batches and the first cleanup
            start = os.path.getsize(log_path)
            time.sleep(seconds)
            counts = count(log_path, start, os.path.getsize(log_path))
            victim = running.pop(0)
            moved = owned(victim)
            killed = time.time()
            victim.stop(signal.SIGKILL)
            time.sleep(12)
            waits = []
            for p in moved:
                files = [os.path.getmtime(f) for f in glob.glob(os.path.join(work, "out", f"batch-*-lines-{p}.jsonl"))]
                later = [t for t in files if t > killed]
                if later:
                    waits.append(min(later) - killed)
            for m in running:
                m.stop()
            return counts, waits, len(moved)
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join()
        for child in (tansu, moto):
            child.kill()
            child.wait()
        os.unlink(log_path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", default="3,10")
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--tansu", required=True)
    args = parser.parse_args()
    lines = [f"w{i % 997} w{i % 13} w{i % 101} w{i % 7}".encode() for i in range(10_000)]
    rows = []
    for members in [int(m) for m in args.members.split(",")]:
        counts, waits, moved = measure(args.tansu, members, args.partitions, args.seconds, lines)
        # A partition-batch with records writes two objects: its log entry and its done marker.
        entries = counts.get(("PUT", "partitions"), 0) / 2
        per_batch = sum(n for (_, kind), n in counts.items() if kind == "partitions") / max(entries, 1)
        per_member = sum(n for (_, kind), n in counts.items() if kind in ("members", "deploys")) / (members * args.seconds)
        rows.append((members, per_batch, per_member, waits, moved))
        print(f"{members} members, {args.partitions} partitions, {args.seconds} s of 500 ms batches:")
        for (method, kind), n in sorted(counts.items()):
            print(f"  {method:6} {kind:10} {n:6}  {n / args.seconds:7.1f}/s")
        print(f"  {entries:.0f} partition-batches logged ({entries / args.seconds:.1f}/s): {per_batch:.2f} requests each; "
              f"per member-second (heartbeat, deploy poll, 1 s period at this session timeout): {per_member:.2f}")
        if waits:
            print(f"  kill -9 of a member owning {moved} partitions: kill to next output median "
                  f"{statistics.median(waits):.2f} s, max {max(waits):.2f} s (session timeout 3 s)")
        else:
            print(f"  kill -9 of a member owning {moved} partitions: no output seen within 12 s")
    per_batch = statistics.median(r[1] for r in rows)
    # With the default 10 s session timeout a member beats and polls every 3.33 s, not every 1 s.
    per_member = statistics.median(r[2] for r in rows) / 3.33
    machines, partitions = 100, 400
    for batch_s in (1.0, 10.0):
        logs = partitions / batch_s * per_batch
        total = logs + machines * per_member
        print(f"estimate, {machines} machines, {partitions} partitions, {batch_s:.0f} s batches, 10 s session timeout: "
              f"{logs:,.0f} partition-log + {machines * per_member:,.0f} heartbeat/poll = {total:,.0f} requests/s")


if __name__ == "__main__":
    main()
