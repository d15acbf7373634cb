#!/usr/bin/env python3
"""The soak of README "Reliability": a word count over TCP for MINUTES at a fixed rate, a hot swap
every SWAP seconds (alternating `wordcount` and `faulty`, which traps on `panic!`, loops on
`loop!`, and eats memory on `oom!`), trap lines in the feed at random (seeded) moments, and a
dead-letter sink taking the partitions a trap failed. Samples the engine's RSS, open files and
threads every 5 s, and at the end checks the ledger: every word fed is in a batch's counts or in a
dead letter, once; every batch interval has its batch; no batch failed.

usage: soak.py SLUICE_BIN PLUGIN_DIR OUT_DIR [--minutes M] [--rate LINES_PER_S | --rate half]
               [--swap-every S] [--trap-every S] [--seed N]
`--rate half` first measures the most lines/s the pipeline takes unthrottled (20 s) and soaks at
half of it. Writes OUT_DIR/samples.csv, OUT_DIR/soak.svg and OUT_DIR/summary.json; exits 1 when a
check fails. OUT_DIR/run keeps the run's sink output (the counts and the dead letters: gigabytes
after 30 minutes) to look into; delete it afterwards.
"""
import argparse, json, os, random, re, shutil, socket, subprocess, sys, threading, time, urllib.request
from pathlib import Path

VOCAB = [f"w{i}" for i in range(10_000)]
# Mean seconds between trap lines, `panic!`'s set by --trap-every. Each trap dead-letters its
# partition (a fifth of a batch: at 800 k lines/s, 160 k letters, ~40 MB of JSON).
TRAPS = {"panic!": 15.0, "loop!": 40.0, "oom!": 40.0}


def corpus(seed, lines=200_000, words_per_line=10):
    """A Zipf-like corpus (as ../shared/bench/gen_lines.py): its bytes, each line's end offset and
    the words before each line."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(VOCAB))]
    words = rng.choices(VOCAB, weights, k=lines * words_per_line)
    text = "".join(" ".join(words[i * words_per_line:(i + 1) * words_per_line]) + "\n" for i in range(lines))
    data = text.encode()
    ends, at = [], 0
    for _ in range(lines):
        at = data.index(b"\n", at) + 1
        ends.append(at)
    return data, ends, words_per_line


class Feed:
    """Serves the corpus, cyclically, at `rate` lines/s (0: as fast as read), with trap lines;
    counts every word it sent."""

    def __init__(self, seed, rate):
        self.data, self.ends, self.per_line = corpus(seed)
        self.rate, self.rng = rate, random.Random(seed + 1)
        self.words = 0
        self.lines = 0
        self.traps = {t: 0 for t in TRAPS}
        self.stop = threading.Event()
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.srv.accept()
        t0 = time.time()
        next_trap = {t: t0 + self.rng.expovariate(1 / m) for t, m in TRAPS.items()}
        at = 0  # the next line of the corpus
        n = len(self.ends)
        while not self.stop.is_set():
            per_tick = max(1, int(self.rate * 0.002)) if self.rate else 20_000
            take = min(per_tick, n - at)
            start = self.ends[at - 1] if at else 0
            chunk = self.data[start:self.ends[at + take - 1]]
            now = time.time()
            for trap, when in next_trap.items():
                if now >= when:
                    # A trap line has three words, the trigger one of them.
                    chunk += f"{trap} w1 w2\n".encode()
                    self.words += 3
                    self.lines += 1
                    self.traps[trap] += 1
                    next_trap[trap] = now + self.rng.expovariate(1 / TRAPS[trap])
            try:
                conn.sendall(chunk)
            except OSError:
                return  # the engine went away (the calibration's end, or a crash the ledger shows)
            self.words += take * self.per_line
            self.lines += take
            at = (at + take) % n
            if self.rate:
                ahead = self.lines / self.rate - (time.time() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        try:
            conn.shutdown(socket.SHUT_WR)
        finally:
            conn.close()


def pipeline(work, port, plugin_dir, backpressure=False):
    (work / "pipeline.toml").write_text(f"""[pipeline]
name = "soak"
batch_interval = "1s"
block_interval = "200ms"
backpressure = {str(backpressure).lower()}

[plugins]
wc = "{plugin_dir}/wordcount.wasm"

[[sources]]
name = "lines"
type = "socket"
address = "127.0.0.1:{port}"

[[stages]]
name = "pairs"
input = "lines"
op = "flat_map"
plugin = "wc"
function = "split_words"
timeout = "300ms"
memory_limit = "256MiB"
on_error = "dead_letter"
dead_letter = "letters"

[[stages]]
name = "counts"
input = "pairs"
op = "reduce_by_key"
plugin = "wc"
function = "sum"

[[sinks]]
name = "out"
input = "counts"
type = "file"
path = "{work}/out"

[[sinks]]
name = "letters"
type = "file"
path = "{work}/letters"
""")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metrics(ui):
    text = urllib.request.urlopen(f"http://{ui}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(sluice_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def proc(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+)", status, re.M).group(1))
    return field("VmRSS") / 1024, field("Threads"), len(os.listdir(f"/proc/{pid}/fd"))


def start(args, work, port, ui, backpressure=False):
    pipeline(work, port, args.plugin_dir, backpressure)
    log = open(work / "engine.log", "w")
    return subprocess.Popen([args.sluice, "run", str(work / "pipeline.toml"), "--ui", ui],
                            stdout=log, stderr=subprocess.STDOUT)


def calibrate(args, out):
    """The most lines/s the pipeline sustains: the feed unthrottled and backpressure on, so the
    engine reads what it processes; measured over 20 s after 10 s of settling."""
    work = out / "calibrate"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    feed = Feed(args.seed, 0)
    ui = f"127.0.0.1:{free_port()}"
    engine = start(args, work, feed.port, ui, backpressure=True)
    time.sleep(10)
    first = metrics(ui).get("sluice_records_received_total", 0)
    time.sleep(20)
    rate = (metrics(ui).get("sluice_records_received_total", 0) - first) / 20
    feed.stop.set()
    engine.kill()
    engine.wait()
    return rate


def swapper(args, ui, stop, events):
    files = [f"{args.plugin_dir}/faulty.wasm", f"{args.plugin_dir}/wordcount.wasm"]
    i = 0
    while not stop.wait(args.swap_every):
        answer = subprocess.run([args.sluice, "deploy", "wc", files[i % 2], "--ui", ui], capture_output=True, text=True)
        events.append({"t": time.time(), "file": Path(files[i % 2]).name, "ok": answer.returncode == 0,
                       "answer": (answer.stdout + answer.stderr).strip()[:300]})
        i += 1


def ledger(work):
    counted = 0
    batches = []
    for f in sorted((work / "out").glob("batch-*.jsonl")):
        batches.append(int(f.stem.split("-")[1]))
        for line in f.open():
            counted += json.loads(line)[1]
    lettered, letters = 0, 0
    for f in (work / "letters").glob("batch-*.jsonl"):
        for line in f.open():
            letters += 1
            lettered += len(json.loads(line)["record"].split())
    return counted, lettered, letters, sorted(batches)


def plot(samples, path):
    """A small SVG: RSS, threads and open files over the run, each scaled to its own maximum."""
    w, h, pad = 640, 240, 30
    t_end = max(s["t"] for s in samples) or 1
    series = [("rss_mib", "#d62728"), ("threads", "#1f77b4"), ("fds", "#2ca02c"), ("delay_ms", "#9467bd")]
    lines = []
    for key, color in series:
        top = max(s[key] for s in samples) or 1
        pts = " ".join(f"{pad + (w - 2 * pad) * s['t'] / t_end:.1f},{h - pad - (h - 2 * pad) * s[key] / top:.1f}"
                       for s in samples)
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
        lines.append(f'<text x="{pad + 150 * series.index((key, color))}" y="16" fill="{color}" font-size="12">'
                     f'{key} (max {top:.0f})</text>')
    axis = (f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>'
            f'<text x="{pad}" y="{h - 8}" font-size="11">0 s</text>'
            f'<text x="{w - pad - 40}" y="{h - 8}" font-size="11">{t_end:.0f} s</text>')
    path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">{axis}{"".join(lines)}</svg>\n')


def main():
    p = argparse.ArgumentParser()
    p.add_argument("sluice"); p.add_argument("plugin_dir"); p.add_argument("out")
    p.add_argument("--minutes", type=float, default=30); p.add_argument("--rate", default="half")
    p.add_argument("--swap-every", type=float, default=30); p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trap-every", type=float, default=TRAPS["panic!"])
    args = p.parse_args()
    TRAPS["panic!"] = args.trap_every
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.plugin_dir = str(Path(args.plugin_dir).resolve())
    max_rate = None
    if args.rate == "half":
        max_rate = calibrate(args, out)
        rate = max_rate / 2
        print(f"soak: unthrottled the pipeline took {max_rate:.0f} lines/s; soaking at {rate:.0f}", flush=True)
    else:
        rate = float(args.rate)
    work = out / "run"
    # A run before (or an engine of one still draining) must not count in this one's ledger.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    feed = Feed(args.seed, rate)
    ui = f"127.0.0.1:{free_port()}"
    engine = start(args, work, feed.port, ui)
    stop, events, samples = threading.Event(), [], []
    swaps = threading.Thread(target=swapper, args=(args, ui, stop, events), daemon=True)
    swaps.start()
    t0 = time.time()
    with open(out / "samples.csv", "w") as csv:
        csv.write("t_s,rss_mib,threads,fds,batches,failed,received,delay_ms,swaps,auto_rollbacks\n")
        while time.time() - t0 < args.minutes * 60 and engine.poll() is None:
            time.sleep(5)
            try:
                rss, threads, fds = proc(engine.pid)
                m = metrics(ui)
            except (OSError, ValueError, AttributeError) as err:
                print(f"soak: sample failed: {err}", flush=True)
                continue
            s = {"t": time.time() - t0, "rss_mib": rss, "threads": threads, "fds": fds,
                 "batches": m.get("sluice_batches_total", 0), "failed": m.get("sluice_batches_failed_total", 0),
                 "received": m.get("sluice_records_received_total", 0),
                 "delay_ms": 1000 * m.get("sluice_last_batch_scheduling_delay_seconds", 0),
                 "swaps": m.get("sluice_plugin_swaps_total", 0),
                 "auto_rollbacks": m.get("sluice_plugin_auto_rollbacks_total", 0)}
            samples.append(s)
            csv.write(",".join(f"{s[k]:.1f}" for k in ["t", "rss_mib", "threads", "fds", "batches", "failed",
                                                        "received", "delay_ms", "swaps", "auto_rollbacks"]) + "\n")
            csv.flush()
    stop.set()
    last = samples[-1] if samples else None
    feed.stop.set()
    feed.thread.join(30)
    try:
        code = engine.wait(120)
    except subprocess.TimeoutExpired:
        engine.kill()
        code = "did not finish within 120 s of the feed's end"
    counted, lettered, letters, batches = ledger(work)
    gaps = [(a, b) for a, b in zip(batches, batches[1:]) if b - a != 1000]
    # Resource figures after a 5-minute warm-up: the median of its next 5 minutes against the
    # median of the last 5 (single samples swing with the batch under way).
    warm = [s for s in samples if s["t"] >= 300] or samples
    end = warm[-1]["t"] if warm else 0
    early = [s for s in warm if s["t"] < warm[0]["t"] + 300]
    late = [s for s in warm if s["t"] >= end - 300]
    median = lambda xs: sorted(xs)[len(xs) // 2] if xs else 0
    growth = lambda key: (median([s[key] for s in late]) / median([s[key] for s in early]) - 1) if early else 0
    summary = {
        "minutes": args.minutes, "max_rate_lines_per_s": max_rate, "rate_lines_per_s": rate,
        "lines_fed": feed.lines, "words_fed": feed.words, "traps_fed": feed.traps,
        "words_counted": counted, "words_dead_lettered": lettered, "dead_letters": letters,
        "lost": feed.words - counted - lettered, "batches_with_output": len(batches), "batch_gaps": gaps[:10],
        "batches_failed": last and last["failed"], "engine_exit": code,
        "swaps_attempted": len(events), "swaps_accepted": sum(e["ok"] for e in events),
        "swaps_done": last and last["swaps"], "auto_rollbacks": last and last["auto_rollbacks"],
        "refused": [e for e in events if not e["ok"]][:5],
        "rss_mib_median_minutes_5_to_10_and_last_5": [median([s["rss_mib"] for s in early]),
                                                       median([s["rss_mib"] for s in late])],
        "rss_growth_after_warmup": growth("rss_mib"), "max_rss_mib": max((s["rss_mib"] for s in samples), default=0),
        "threads_min_max": [min((s["threads"] for s in warm), default=0), max((s["threads"] for s in warm), default=0)],
        "fds_min_max": [min((s["fds"] for s in warm), default=0), max((s["fds"] for s in warm), default=0)],
        "delay_ms_max": max((s["delay_ms"] for s in samples), default=0),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if samples:
        plot(samples, out / "soak.svg")
    print(json.dumps(summary, indent=2))
    problems = []
    if summary["lost"] != 0:
        problems.append(f"ledger: {summary['lost']} words neither counted nor dead-lettered")
    if gaps:
        problems.append(f"batches missing between {gaps[:3]}")
    if summary["batches_failed"]:
        problems.append(f"{summary['batches_failed']} batches failed")
    if code != 0:
        problems.append(f"engine exit: {code}")
    if abs(summary["rss_growth_after_warmup"]) > 0.05:
        problems.append(f"RSS grew {100 * summary['rss_growth_after_warmup']:.1f}% after warm-up")
    if summary["fds_min_max"][1] - summary["fds_min_max"][0] > 8:
        problems.append(f"open files {summary['fds_min_max']}")
    if summary["threads_min_max"][1] - summary["threads_min_max"][0] > 4:
        problems.append(f"threads {summary['threads_min_max']}")
    if summary["delay_ms_max"] > 5_000:
        problems.append(f"scheduling delay reached {summary['delay_ms_max']:.0f} ms")
    for problem in problems:
        print(f"soak: FAILED: {problem}", flush=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
