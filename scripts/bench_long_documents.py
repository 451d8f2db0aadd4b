#!/usr/bin/env python3
"""Long documents: what scoring by windows changes (a rank) and what it costs (time per window).

Starts a node (the binary given, the bundled all-MiniLM-L6-v2, local cache off) and
  1. ranks five documents for one question, one of them a page-long text whose answering sentence
     lies past the first window, under truncation (max_chunks_per_doc 1) and by windows (8), and
     prints the page's rank, score and best_chunk each way;
  2. times requests of --docs documents of ~4 windows each at max_chunks_per_doc 1, 2, 4, 8
     (a fresh query per request, so nothing is cached) and prints documents/s, windows/s and
     the time per request relative to truncation.
Stdlib only; bounded by --timeout per request.

    scripts/bench_long_documents.py target/release/rerank-node [--docs 16] [--rounds 3]
"""

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUESTION = "When did the Eiffel Tower open to the public?"
FILLER = [
    "The city council met on Tuesday to discuss the new budget for road repairs.",
    "Farmers in the region grow wheat, barley and sunflowers on the rolling plains.",
    "The orchestra performed a programme of late romantic symphonies to a full hall.",
    "Rail traffic was delayed for several hours after a signal failure near the junction.",
    "The museum's collection of ceramics spans four centuries of local craftsmanship.",
    "Heavy rain in the spring raised the river to its highest level in a decade.",
    "The university opened a new library wing devoted to engineering and mathematics.",
    "Local bakeries compete every year for the title of the best baguette in town.",
]
ANSWER = "The Eiffel Tower opened to the public on 15 May 1889, during the World's Fair."
SHORT_DOCS = [
    "Paris has many famous monuments, including the Louvre, Notre-Dame and the Arc de Triomphe.",
    "Gustave Eiffel's company designed bridges and viaducts across Europe in the nineteenth century.",
    "The Statue of Liberty was a gift from France to the United States, dedicated in 1886.",
    "Tourists in Paris often take a boat tour on the Seine to see the city's landmarks.",
]


def page(answer_at: int, sentences: int) -> str:
    text = []
    for i in range(sentences):
        text.append(ANSWER if i == answer_at else FILLER[i % len(FILLER)])
    return " ".join(text)


def distinct_page(seed: int, sentences: int) -> str:
    """A page of its own: every window differs from every other document's, so the timing
    measures computed windows, not deduplicated ones."""
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(FILLER)[:-1]} in year {rng.randrange(1000, 2000)}." for _ in range(sentences))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, body, timeout):
    req = urllib.request.Request(base + "/rerank", json.dumps(body).encode(), {"content-type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), time.monotonic() - started


def wait_healthy(base, proc, limit=120):
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if proc.poll() is not None:
            sys.exit(f"node exited during start-up: {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.3)
    sys.exit("node did not become healthy")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--docs", type=int, default=16, help="documents per timed request (default 16)")
    ap.add_argument("--rounds", type=int, default=3, help="timed requests per setting (default 3)")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()

    port = free_port()
    env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", LOCAL_CACHE_SIZE="0", RUST_LOG="warn")
    proc = subprocess.Popen([args.binary], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        with urllib.request.urlopen(base + "/info") as r:
            info = json.loads(r.read())
        print(f"model: {info['model_id']} ({info['kind']}, {info['kernels']}), "
              f"max input length: {info['max_input_length']} tokens")

        # 1. The page whose answer is past the first window.
        long_page = page(answer_at=22, sentences=40)
        texts = SHORT_DOCS + [long_page]
        at = long_page.index(ANSWER)
        print(f"\n1. '{QUESTION}' over {len(texts)} documents; document {len(texts) - 1} is a page of "
              f"{len(long_page)} characters whose answer starts at character {at}\n")
        print("| scoring | rank of the page | its score | best_chunk |")
        print("|---|---|---|---|")
        for chunks in (1, 8):
            status, ranks, _ = post(base, {"query": QUESTION, "texts": texts, "truncate": True,
                                           "max_chunks_per_doc": chunks}, args.timeout)
            if status != 200:
                sys.exit(f"status {status}: {ranks}")
            rank = next(i for i, r in enumerate(ranks) if r["index"] == len(texts) - 1)
            entry = ranks[rank]
            chunk = entry.get("best_chunk")
            span = f"{chunk} (contains the answer: {chunk['start'] <= at < chunk['end']})" if chunk else "-"
            label = "truncation (max_chunks_per_doc 1)" if chunks == 1 else f"windows (max_chunks_per_doc {chunks})"
            print(f"| {label} | {rank + 1} of {len(texts)} | {entry['score']:.4f} | {span} |")

        # 2. Cost per window.
        docs = [distinct_page(seed=i, sentences=36) for i in range(args.docs)]
        print(f"\n2. {args.docs} distinct documents of ~{len(docs[0])} characters, best of {args.rounds} requests\n")
        print("| max_chunks_per_doc | windows per request | s per request | documents/s | windows/s | time vs truncation |")
        print("|---|---|---|---|---|---|")
        def computed_pairs():
            with urllib.request.urlopen(base + "/metrics") as r:
                lines = r.read().decode().splitlines()
            return next((float(line.split()[-1]) for line in lines
                         if line.startswith("rerank_pairs_computed_total")), 0.0)

        base_time = None
        n = 0
        for chunks in (1, 2, 4, 8):
            best = None
            before = computed_pairs()
            for round_ in range(args.rounds + 1):  # the first is a warm-up
                n += 1
                body = {"query": f"history of the city number {n}", "texts": docs, "truncate": True,
                        "max_chunks_per_doc": chunks}
                status, ranks, took = post(base, body, args.timeout)
                if status != 200:
                    sys.exit(f"status {status}: {ranks}")
                if round_ > 0:
                    best = took if best is None else min(best, took)
            # Windows per request, from the node's own count of computed pairs.
            per_request = (computed_pairs() - before) / (args.rounds + 1)
            base_time = base_time or best
            print(f"| {chunks} | {per_request:.0f} | {best:.3f} | {args.docs / best:.1f} | "
                  f"{per_request / best:.1f} | {best / base_time:.2f}x |")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
