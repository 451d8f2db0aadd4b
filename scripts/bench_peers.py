#!/usr/bin/env python3
"""ONNX Runtime beside our engine: the same cross-encoder checkpoint and workload that
`rerank-node bench` writes (target/bench/minilm-l6-cross-encoder, target/bench/workload.json),
timed with the same protocol (tokenization included, every document in one call, at least
--seconds per mode after a warm-up), printed as one JSON line per mode with Spearman's rho of the
scores against PyTorch fp32's.

Modes:
  ort-fp32   the checkpoint exported to ONNX (torch.onnx.export), all graph optimizations on
             (ORT_ENABLE_ALL: attention/GELU/LayerNorm fusions)
  ort-int8   the same graph quantized by onnxruntime.quantization.quantize_dynamic (per-channel
             int8 weights, dynamic u8 activations: the VNNI path on AVX-512-VNNI CPUs)

Exports are cached beside the checkpoint (peers/); nothing is fetched from a hub. Needs
`pip install onnxruntime onnx onnxscript` beside scripts/requirements-dev.txt.

    python3 scripts/bench_peers.py [--model target/bench/minilm-l6-cross-encoder] \
        [--workload target/bench/workload.json] [--threads 2] [--seconds 10]

Progress towards issue 17 (peers in `rerank-node bench --peers`; OpenVINO not yet).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def export(model_dir: Path, out: Path) -> Path:
    path = out / "model.onnx"
    if path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    enc = tok(["a query"] * 2, ["a document of some words"] * 2, return_tensors="pt", padding=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic["logits"] = {0: "batch"}
    torch.onnx.export(
        model,
        (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]),
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )
    return path


def quantize(fp32: Path) -> Path:
    path = fp32.with_name("model-int8.onnx")
    if not path.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("target/bench/minilm-l6-cross-encoder"))
    ap.add_argument("--workload", type=Path, default=Path("target/bench/workload.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    workload = json.loads(args.workload.read_text())
    query, docs = workload["query"], workload["documents"]
    tok = AutoTokenizer.from_pretrained(str(args.model))

    def encode():
        return tok([query] * len(docs), docs, padding=True, truncation=True, return_tensors="np")

    model = AutoModelForSequenceClassification.from_pretrained(str(args.model)).eval()
    with torch.no_grad():
        e = tok([query] * len(docs), docs, padding=True, truncation=True, return_tensors="pt")
        reference = model(**e).logits[:, 0].numpy()

    fp32 = export(args.model, args.model / "peers")
    sessions = {"ort-fp32": fp32, "ort-int8": quantize(fp32)}
    for mode, path in sessions.items():
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}

        def run():
            enc = encode()
            feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in wanted}
            return session.run(["logits"], feeds)[0][:, 0]

        scores = run()  # warm-up
        start, iterations = time.perf_counter(), 0
        while iterations < 2 or time.perf_counter() - start < args.seconds:
            run()
            iterations += 1
        elapsed = time.perf_counter() - start
        print(json.dumps({
            "engine": f"onnxruntime {ort.__version__}",
            "mode": mode,
            "threads": args.threads,
            "pairs_per_s": round(iterations * len(docs) / elapsed, 2),
            "spearman_vs_torch_fp32": round(spearman(scores, reference), 5),
            "max_abs_diff_vs_torch_fp32": float(np.max(np.abs(scores - reference))),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
