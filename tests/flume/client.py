#!/usr/bin/env python3
"""A third-party Flume RPC client for Sluice's end-to-end tests: PyPI's thrift package with code
generated from Flume's own IDL by Debian's thrift-compiler (scripts/setup-flume.sh; its output
directory on PYTHONPATH). Speaks what Flume's ThriftRpcClient speaks: the framed transport with
the compact protocol (or the binary one).

  client.py send ADDRESS FIRST COUNT BATCH LEDGER [PROTOCOL]
      events with bodies "e<id>" for ids FIRST..FIRST+COUNT-1, BATCH per appendBatch; a batch not
      answered OK (another status, a refused or lost connection, a timeout) is sent again until
      it is; the ids of every batch answered OK are appended to LEDGER, a line each, flushed.
      Prints "acked N calls C not_ok F" at the end.
  client.py once ADDRESS COUNT [PROTOCOL]
      one appendBatch of COUNT events ("once<i>"); prints the answer's name (OK, FAILED, ...).
  client.py clicks ADDRESS N USERS BASE_MS
      N events, headers user=user<i % USERS> and timestamp=BASE_MS + i * 1000, body "page<i>",
      one append each, each sent again until OK.
"""
import os
import sys
import time

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.transport import TSocket, TTransport

from flume import ThriftSourceProtocol
from flume.ttypes import Status, ThriftFlumeEvent


def connect(address, protocol="compact", timeout_s=20.0):
    host, port = address.rsplit(":", 1)
    sock = TSocket.TSocket(host, int(port))
    sock.setTimeout(timeout_s * 1000)
    transport = TTransport.TFramedTransport(sock)
    transport.open()
    if protocol == "binary":
        proto = TBinaryProtocol.TBinaryProtocol(transport)
    else:
        proto = TCompactProtocol.TCompactProtocol(transport)
    return transport, ThriftSourceProtocol.Client(proto)


class Retrying:
    """A client that reconnects after any failure."""

    def __init__(self, address, protocol):
        self.address, self.protocol = address, protocol
        self.transport = self.client = None
        self.calls = self.not_ok = 0

    def call(self, f):
        """Calls f(client) until it answers OK."""
        while True:
            self.calls += 1
            try:
                if self.client is None:
                    self.transport, self.client = connect(self.address, self.protocol)
                if f(self.client) == Status.OK:
                    return
            except Exception:  # refused, reset, timed out: reconnect
                self.close()
            self.not_ok += 1
            time.sleep(0.05)

    def close(self):
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception:
                pass
        self.transport = self.client = None


def send(address, first, count, batch, ledger, protocol="compact"):
    first, count, batch = int(first), int(count), int(batch)
    sender = Retrying(address, protocol)
    acked = 0
    with open(ledger, "a") as out:
        for start in range(first, first + count, batch):
            ids = range(start, min(start + batch, first + count))
            events = [ThriftFlumeEvent(headers={"id": str(i)}, body=b"e%d" % i) for i in ids]
            sender.call(lambda c: c.appendBatch(events))
            out.write("".join("e%d\n" % i for i in ids))
            out.flush()
            os.fsync(out.fileno())
            acked += len(events)
    sender.close()
    print("acked %d calls %d not_ok %d" % (acked, sender.calls, sender.not_ok))


def once(address, count, protocol="compact"):
    transport, client = connect(address, protocol)
    events = [ThriftFlumeEvent(headers={}, body=b"once%d" % i) for i in range(int(count))]
    status = client.appendBatch(events)
    transport.close()
    print(Status._VALUES_TO_NAMES.get(status, str(status)))


def clicks(address, n, users, base_ms):
    sender = Retrying(address, "compact")
    for i in range(int(n)):
        headers = {"user": "user%d" % (i % int(users)), "timestamp": str(int(base_ms) + i * 1000)}
        event = ThriftFlumeEvent(headers=headers, body=b"page%d" % i)
        sender.call(lambda c: c.append(event))
    sender.close()
    print("sent %s" % n)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"send": send, "once": once, "clicks": clicks}[command](*args)
