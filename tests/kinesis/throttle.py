#!/usr/bin/env python3
"""An HTTP proxy in front of kinesalite that answers some GetRecords calls the way a busy Kinesis
does, for Sluice's end-to-end tests: kinesalite never throttles and its iterators expire only
after five minutes.

  throttle.py PORT UPSTREAM THROTTLE_S EVERY_S EXPIRED
      listens on 127.0.0.1:PORT and forwards to UPSTREAM (http://host:port); GetRecords calls in
      the first THROTTLE_S seconds of every EVERY_S are answered
      ProvisionedThroughputExceededException (longer than the AWS SDK's own retries last), and
      every EXPIRED-th other one ExpiredIteratorException (400, as Kinesis answers); prints
      "ready" once listening
"""
import http.client
import http.server
import json
import sys
import threading
import time
import urllib.parse

port, upstream = int(sys.argv[1]), sys.argv[2]
throttle_s, every_s, expired = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
started = time.monotonic()
target = urllib.parse.urlparse(upstream)
calls = [0]
lock = threading.Lock()


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("X-Amz-Target", "").endswith(".GetRecords"):
            if (time.monotonic() - started) % every_s < throttle_s:
                return self.fail("ProvisionedThroughputExceededException", "Rate exceeded for shard.")
            with lock:
                calls[0] += 1
                n = calls[0]
            if n % expired == 0:
                return self.fail("ExpiredIteratorException", "Iterator expired.")
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        connection.request("POST", self.path, body, headers)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        connection.close()

    def fail(self, kind, message):
        data = json.dumps({"__type": kind, "message": message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-ErrorType", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy)
print("ready", flush=True)
server.serve_forever()
