#!/usr/bin/env python3
"""A third-party Kinesis client for Sluice's end-to-end tests (boto3, PyPI), against kinesalite.

  client.py create   ENDPOINT STREAM SHARDS        create a stream and wait until it is active
  client.py produce  ENDPOINT STREAM FILE [PAUSE_MS [EVERY]]
                                                   one record per line of FILE (partition key: the
                                                   line number), PutRecords of up to 100, records a
                                                   call did not take sent again; pausing PAUSE_MS
                                                   after every EVERY lines; prints "acked N"
  client.py clicks   ENDPOINT STREAM N USERS       N records: partition key "user<i % USERS>", data
                                                   "page<i>"
  client.py split    ENDPOINT STREAM               splits the open shard with the widest hash range
                                                   in two; prints the parent's id
  client.py merge    ENDPOINT STREAM               merges the two adjacent open shards with the
                                                   lowest hash keys; prints the parents' ids
  client.py shards   ENDPOINT STREAM               prints every shard: "ID PARENT|- OPEN|CLOSED"
"""
import sys
import time

import boto3


def kinesis(endpoint):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def wait_active(client, stream):
    for _ in range(200):
        if client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    sys.exit(f"stream {stream} did not become active")


def create(endpoint, stream, shards):
    client = kinesis(endpoint)
    client.create_stream(StreamName=stream, ShardCount=int(shards))
    wait_active(client, stream)


def produce(endpoint, stream, path, pause_ms="0", every="1000"):
    client = kinesis(endpoint)
    with open(path, encoding="utf-8") as lines:
        records = [
            {"Data": line.rstrip("\n").encode(), "PartitionKey": str(n)} for n, line in enumerate(lines)
        ]
    acked = 0
    for start in range(0, len(records), 100):
        pending = records[start : start + 100]
        while pending:
            try:
                out = client.put_records(StreamName=stream, Records=pending)
            except client.exceptions.ResourceInUseException:
                time.sleep(0.05)  # resharding
                continue
            # Records the call did not take (throttled, or a shard closing) are sent again.
            failed = [r for r, res in zip(pending, out["Records"]) if "ErrorCode" in res]
            acked += len(pending) - len(failed)
            pending = failed
            if failed:
                time.sleep(0.05)
        if int(pause_ms) > 0 and (start + 100) % int(every) == 0:
            time.sleep(int(pause_ms) / 1000)
    print(f"acked {acked}")


def clicks(endpoint, stream, n, users):
    client = kinesis(endpoint)
    records = [{"Data": f"page{i}".encode(), "PartitionKey": f"user{i % int(users)}"} for i in range(int(n))]
    for start in range(0, len(records), 100):
        out = client.put_records(StreamName=stream, Records=records[start : start + 100])
        if out["FailedRecordCount"]:
            sys.exit(f"{out['FailedRecordCount']} records not taken")


def open_shards(client, stream):
    shards = client.list_shards(StreamName=stream)["Shards"]
    found = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    return sorted(found, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


def split(endpoint, stream):
    client = kinesis(endpoint)
    widest = max(
        open_shards(client, stream),
        key=lambda s: int(s["HashKeyRange"]["EndingHashKey"]) - int(s["HashKeyRange"]["StartingHashKey"]),
    )
    low, high = int(widest["HashKeyRange"]["StartingHashKey"]), int(widest["HashKeyRange"]["EndingHashKey"])
    client.split_shard(StreamName=stream, ShardToSplit=widest["ShardId"], NewStartingHashKey=str((low + high) // 2 + 1))
    wait_active(client, stream)
    print(widest["ShardId"])


def merge(endpoint, stream):
    client = kinesis(endpoint)
    shards = open_shards(client, stream)
    for a, b in zip(shards, shards[1:]):
        if int(a["HashKeyRange"]["EndingHashKey"]) + 1 == int(b["HashKeyRange"]["StartingHashKey"]):
            client.merge_shards(StreamName=stream, ShardToMerge=a["ShardId"], AdjacentShardToMerge=b["ShardId"])
            wait_active(client, stream)
            print(a["ShardId"], b["ShardId"])
            return
    sys.exit("no two adjacent open shards")


def shards(endpoint, stream):
    for s in kinesis(endpoint).list_shards(StreamName=stream)["Shards"]:
        state = "CLOSED" if "EndingSequenceNumber" in s["SequenceNumberRange"] else "OPEN"
        print(s["ShardId"], s.get("ParentShardId", "-"), state)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"create": create, "produce": produce, "clicks": clicks, "split": split, "merge": merge, "shards": shards}[command](*args)
