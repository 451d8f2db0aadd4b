#!/usr/bin/env python3
"""PyTorch side of the Qwen3-Reranker benchmark: the model card's computation, timed.

Scores every (query, document) pair of a workload the way the Qwen3-Reranker model card does
(AutoModelForCausalLM; the card's prefix + "<Instruct>: ...\\n<Query>: ...\\n<Document>: ..." +
suffix; left padding; P(yes) from the "yes"/"no" logits at the last position), repeatedly, for at
least --rounds requests (and --seconds) per mode, and prints ONE line of JSON to stdout (pairs/s of
the fastest request, the least disturbed on a busy machine, and of the median one):

  {"torch": "...", "transformers": "...", "threads": 2, "batch_size": 16, "pairs": 16,
   "tokens": 3824, "logits": "last", "results": {"fp32": {"pairs_per_s": 1.2, ...}, ...}}

Everything else goes to stderr.

--logits last (default) asks the model for the last position's logits only (transformers'
logits_to_keep=1), which any server would do; --logits all is the card's code verbatim, which
projects every position onto the whole vocabulary and then keeps the last.

Modes: fp32; bf16 (the fp32 model under torch.autocast("cpu", dtype=torch.bfloat16)); int8
(torch.ao dynamic quantization of every nn.Linear, where this torch still ships it).

Usage:
  python3 scripts/make_bench_checkpoint_qwen3.py --family qwen3 --out /tmp/bench-qwen3
  python3 scripts/bench_torch_qwen3.py --model /tmp/bench-qwen3 --workload /tmp/bench-qwen3/workload.json \\
      [--threads 2] [--batch-size 16] [--rounds 3] [--modes fp32,bf16] [--logits last|all]
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
from bench_common import QWEN3_PREFIX, QWEN3_SUFFIX, log, qwen3_pair_text  # noqa: E402

MODES = ("fp32", "bf16", "int8")

def fail(msg: str, code: int = 2) -> "NoReturn":  # noqa: F821
    bench_common.fail("bench_torch_qwen3", msg, code)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Benchmark a Qwen3 reranker with PyTorch as its model card runs it.")
    ap.add_argument("--model", required=True)
    ap.add_argument("--workload", required=True, help='JSON file {"query": str, "documents": [str, ...]}')
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=0.0, help="minimum measured seconds per mode (default 0)")
    ap.add_argument("--rounds", type=int, default=3, help="timed requests per mode at least (default 3)")
    ap.add_argument("--modes", default="fp32,bf16")
    ap.add_argument("--logits", choices=("last", "all"), default="last")
    ap.add_argument("--max-length", type=int, default=8192, help="the card's max_length (default 8192)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes must be a comma separated subset of {','.join(MODES)}")
    args.modes = list(dict.fromkeys(modes))
    if args.threads < 1 or args.batch_size < 1 or args.rounds < 1 or args.seconds < 0:
        ap.error("--threads, --batch-size and --rounds must be >= 1, --seconds >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        with open(args.workload, encoding="utf-8") as f:
            work = json.load(f)
        query, docs = work["query"], work["documents"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"cannot read workload {args.workload}: {e}")

    with contextlib.redirect_stdout(sys.stderr):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        tok = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        yes_id, no_id = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        prefix_ids = tok.encode(QWEN3_PREFIX, add_special_tokens=False)
        suffix_ids = tok.encode(QWEN3_SUFFIX, add_special_tokens=False)
        pairs = [qwen3_pair_text(None, query, d) for d in docs]

        def process_inputs(batch):
            inputs = tok(batch, padding=False, truncation="longest_first", return_attention_mask=False,
                         max_length=args.max_length - len(prefix_ids) - len(suffix_ids))
            for i, ele in enumerate(inputs["input_ids"]):
                inputs["input_ids"][i] = prefix_ids + ele + suffix_ids
            return tok.pad(inputs, padding=True, return_tensors="pt")

        n_tokens = int(process_inputs(pairs)["attention_mask"].sum())
        keep = {"logits_to_keep": 1} if args.logits == "last" else {}
        models = {"fp32": model, "bf16": model}

        def run_once(mode):
            scores, raw = [], []
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
            with torch.inference_mode(), ctx:
                for s in range(0, len(pairs), args.batch_size):
                    inputs = process_inputs(pairs[s : s + args.batch_size])
                    logits = models[mode](**inputs, **keep).logits[:, -1, :]
                    pair = torch.stack([logits[:, no_id], logits[:, yes_id]], dim=1).float()
                    scores += torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp().tolist()
                    raw += (pair[:, 1] - pair[:, 0]).tolist()
            return scores, raw

        log(
            f"bench_torch_qwen3: model={args.model} pairs={len(pairs)} tokens={n_tokens} "
            f"threads={torch.get_num_threads()} batch_size={args.batch_size} logits={args.logits}"
        )
        results = {}
        for mode in args.modes:
            if mode == "int8":
                try:
                    import copy

                    from torch.ao.quantization import quantize_dynamic

                    models["int8"] = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
                except Exception as e:  # noqa: BLE001 - reported; the other modes still run
                    log(f"bench_torch_qwen3: int8 unavailable: {type(e).__name__}: {e}")
                    continue
            t = time.perf_counter()
            scores, raw = run_once(mode)
            log(f"bench_torch_qwen3: {mode} warm-up {time.perf_counter() - t:.2f}s, first scores {scores[:3]}")
            iterations, start, elapsed, times = 0, time.perf_counter(), 0.0, []
            while iterations < args.rounds or elapsed < args.seconds:
                t0 = time.perf_counter()
                run_once(mode)
                times.append(time.perf_counter() - t0)
                iterations += 1
                elapsed = time.perf_counter() - start
            times.sort()
            # The fastest request is the least disturbed on a busy machine; the median is kept too.
            pps = len(pairs) / times[0]
            results[mode] = {"pairs_per_s": round(pps, 3), "pairs_per_s_median": round(len(pairs) / times[len(times) // 2], 3),
                             "iterations": iterations, "request_s": [round(t, 3) for t in times],
                             "first_scores": [round(s, 6) for s in scores[:4]],
                             "first_yes_minus_no": [round(s, 6) for s in raw[:4]]}
            log(f"bench_torch_qwen3: {mode}: {pps:.2f} pairs/s best of {iterations} requests {[round(t, 1) for t in times]}")

    out = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "pairs": len(pairs),
        "tokens": n_tokens,
        "logits": args.logits,
        "results": results,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
