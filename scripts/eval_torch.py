#!/usr/bin/env python3
"""PyTorch's side of `rerank-node eval`: how far PyTorch's own reduced-precision modes move a
cross-encoder's scores from its fp32 scores, on the same data and metrics.

  python3 scripts/eval_torch.py --model target/bench/minilm-l6-cross-encoder \
      [--data node/eval/default.jsonl] [--threads 2]

Prints a Markdown table: per mode (bf16 autocast, int8 quantize_dynamic) against fp32, the max
and mean absolute raw-logit difference and the mean (min) Spearman rho per query, ties taking
their average rank — the columns `rerank-node eval` prints, so the two can be read side by side.
"""

import argparse
import contextlib
import copy
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2.0
        i = j + 1
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return 1.0 if va == 0 or vb == 0 else cov / (va * vb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="node/eval/default.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with open(args.data, encoding="utf-8") as f:
        queries = [json.loads(line) for line in f if line.strip()]
    with contextlib.redirect_stdout(sys.stderr):
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(args.threads)
        model = CrossEncoder(args.model, device="cpu")
        model.eval()
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)

        def score(m, autocast):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            out = []
            with torch.inference_mode(), ctx:
                for q in queries:
                    pairs = [(q["query"], d) for d in q["documents"]]
                    # Raw logits, as `rerank-node eval` compares (no sigmoid).
                    out.append([float(v) for v in m.predict(pairs, activation_fn=torch.nn.Identity(), show_progress_bar=False)])
            return out

        reference = score(model, False)
        rows = {"bf16 (autocast)": score(model, True), "int8 (quantize_dynamic)": score(int8, False)}
    print(f"PyTorch {torch.__version__}, {args.model}, {args.data}: {len(queries)} queries\n")
    print("| mode | max abs diff | mean abs diff | Spearman ρ mean (min) |\n|---|---|---|---|")
    for name, got in rows.items():
        diffs = [abs(a - b) for ra, rb in zip(reference, got) for a, b in zip(ra, rb)]
        rhos = [spearman(a, b) for a, b in zip(reference, got)]
        print(
            f"| {name} | {max(diffs):.2e} | {sum(diffs) / len(diffs):.2e} | "
            f"{sum(rhos) / len(rhos):.4f} ({min(rhos):.4f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
