#!/usr/bin/env python3
"""A third-party Kafka client for Sluice's end-to-end tests (confluent-kafka, PyPI).

  client.py create   BROKERS TOPIC PARTITIONS       create a topic (tansu does not auto-create)
  client.py grow     BROKERS TOPIC PARTITIONS       add partitions up to PARTITIONS
  client.py produce  BROKERS TOPIC FILE [PAUSE_MS [EVERY]]
                                                    one record per line of FILE (key: the line
                                                    number), pausing PAUSE_MS after every EVERY
                                                    lines; prints "acked N" once all are acknowledged
  client.py batches  BROKERS TOPIC N PER_BATCH      N records "w<i>" to partition 0, PER_BATCH to a
                                                    produce request (a record batch) each
  client.py clicks   BROKERS TOPIC N USERS BASE_MS  N records: key "user<i % USERS>", value "page<i>",
                                                    timestamp BASE_MS + i * 1000
  client.py consume  BROKERS TOPIC ISOLATION IDLE_S prints every record as "KEY<tab>VALUE", a
                                                    line each, until IDLE_S seconds pass without one
  client.py offsets  BROKERS GROUP TOPIC            prints the group's committed offset of every
                                                    partition: "PARTITION OFFSET", a line each
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic


def create(brokers, topic, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    for _, future in admin.create_topics([NewTopic(topic, int(partitions), 1)]).items():
        future.result(30)


def grow(brokers, topic, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    for _, future in admin.create_partitions([NewPartitions(topic, int(partitions))]).items():
        future.result(30)


def produce(brokers, topic, path, pause_ms="0", every="1000"):
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 5})
    failed = []
    acked = [0]

    def done(err, _msg):
        if err is not None:
            failed.append(err)
        else:
            acked[0] += 1

    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines):
            while True:
                try:
                    producer.produce(topic, key=str(n).encode(), value=line.rstrip("\n").encode(), on_delivery=done)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            if int(pause_ms) > 0 and (n + 1) % int(every) == 0:
                time.sleep(int(pause_ms) / 1000)
    producer.flush(120)
    if failed:
        sys.exit(f"{len(failed)} records not delivered: {failed[0]}")
    print(f"acked {acked[0]}", flush=True)


def batches(brokers, topic, n, per_batch):
    """`n` records `w<i>` to partition 0 of `topic`, `per_batch` to a produce request (so a
    record batch in the log) each."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 10000, "batch.num.messages": 100000})
    for i in range(int(n)):
        producer.produce(topic, value=f"w{i}".encode(), partition=0)
        if (i + 1) % int(per_batch) == 0:
            producer.flush(30)
    producer.flush(30)
    print(f"acked {n}", flush=True)


def clicks(brokers, topic, n, users, base_ms):
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
    for i in range(int(n)):
        producer.produce(topic, key=f"user{i % int(users)}".encode(), value=f"page{i}".encode(),
                         timestamp=int(base_ms) + i * 1000)
    if producer.flush(60) != 0:
        sys.exit("records not delivered")


def consume(brokers, topic, isolation, idle_s):
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"test-reader-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    consumer.subscribe([topic])
    last = time.time()
    out = sys.stdout
    while time.time() - last < float(idle_s):
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            continue
        last = time.time()
        key = message.key().decode() if message.key() is not None else ""
        out.write(key + "\t" + message.value().decode() + "\n")
    out.flush()
    consumer.close()


def offsets(brokers, group, topic):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    for tp in consumer.committed(partitions, timeout=10):
        print(f"{tp.partition} {tp.offset}")
    consumer.close()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    try:
        {"create": create, "batches": batches, "clicks": clicks, "grow": grow, "produce": produce, "consume": consume, "offsets": offsets}[command](*args)
    except KafkaException as err:
        sys.exit(f"kafka: {err}")
