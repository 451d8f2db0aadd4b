#!/usr/bin/env python3
"""Small-request latency while a big request runs: the figure the fair scheduler is for.

Starts a node (the binary given, default model, local cache off), sends one big request of
--big documents (~200 words each), and one second into it sends --small requests of 4
documents one after another from a second client. Prints the small requests' p50/p99, the big
request's time and status, and a 429/5xx count. Stdlib only; bounded by --timeout.

    scripts/bench_fairness.py target/release/rerank-node
    scripts/bench_fairness.py /path/to/old/rerank-node --big 400 --small 20
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUERY = "What is the history of Paris and France?"
WORDS = "the long history of paris and france from the romans to the republic "


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docs(tag, n):
    return [f"{tag} {i}: " + WORDS * 16 for i in range(n)]


def post(base, texts, timeout):
    body = json.dumps({"query": QUERY, "texts": texts, "truncate": True}).encode()
    req = urllib.request.Request(
        base + "/rerank", body, {"content-type": "application/json"}
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except Exception:  # timeout, reset
        status = 0
    return status, time.monotonic() - started


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binary")
    p.add_argument("--model", default=os.path.join(ROOT, "models/all-MiniLM-L6-v2"))
    p.add_argument("--big", type=int, default=400)
    p.add_argument("--small", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the node")
    args = p.parse_args()

    port = free_port()
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", MODEL_PATH=args.model,
               LOCAL_CACHE_SIZE="0", RUST_LOG="warn")
    env.update(kv.split("=", 1) for kv in args.env)
    node = subprocess.Popen([args.binary], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=1).read()
                break
            except Exception:
                if time.monotonic() > deadline or node.poll() is not None:
                    sys.exit("node did not start")
                time.sleep(0.2)
        post(base, docs("warm", 8), args.timeout)  # warm-up

        big = {}
        thread = threading.Thread(
            target=lambda: big.update(zip(("status", "seconds"),
                                          post(base, docs("big", args.big), args.timeout))))
        thread.start()
        time.sleep(1.0)
        small = [post(base, docs(f"small{i}", 4), args.timeout) for i in range(args.small)]
        thread.join(args.timeout)
        latencies = [s for _, s in small]
        statuses = [st for st, _ in small]
        print(f"| binary | big request ({args.big} docs) | small p50 | small p99 | small max "
              f"| small non-200 |")
        print("|---|---|---|---|---|---|")
        print(f"| {args.binary} | {big.get('seconds', float('nan')):.1f} s "
              f"(HTTP {big.get('status')}) | {percentile(latencies, 0.5) * 1000:.0f} ms "
              f"| {percentile(latencies, 0.99) * 1000:.0f} ms | {max(latencies) * 1000:.0f} ms "
              f"| {sum(1 for st in statuses if st != 200)} |")
    finally:
        node.terminate()
        node.wait(10)


if __name__ == "__main__":
    main()
