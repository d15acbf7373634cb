#!/usr/bin/env python3
"""Serve a text file over TCP to the first client that connects, like `nc -lk PORT < FILE`.
usage: feed.py FILE PORT [--rate LINES_PER_S] [--repeat N] [--close]
  --rate   send at most this many lines per second (default: as fast as the client reads)
  --repeat send the file N times (default 1)
  --close  close the connection when done (the Sluice source then finishes); else keep it open
"""
import argparse, socket, sys, time

p = argparse.ArgumentParser()
p.add_argument("file"); p.add_argument("port", type=int)
p.add_argument("--rate", type=float, default=0); p.add_argument("--repeat", type=int, default=1)
p.add_argument("--close", action="store_true")
a = p.parse_args()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", a.port)); srv.listen(1)
print(f"feed: serving {a.file} on 127.0.0.1:{a.port}", file=sys.stderr, flush=True)
conn, _ = srv.accept()
t0 = time.time(); sent = 0
for _ in range(a.repeat):
    with open(a.file, "rb") as f:
        if a.rate <= 0:
            while chunk := f.read(1 << 20):
                conn.sendall(chunk)
        else:
            for line in f:
                conn.sendall(line); sent += 1
                ahead = sent / a.rate - (time.time() - t0)
                if ahead > 0:
                    time.sleep(ahead)
print(f"feed: sent {a.file} x{a.repeat} in {time.time()-t0:.2f}s", file=sys.stderr, flush=True)
if a.close:
    conn.shutdown(socket.SHUT_WR); conn.close()
else:
    time.sleep(10**9)
