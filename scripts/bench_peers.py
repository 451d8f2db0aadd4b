#!/usr/bin/env python3
"""Peers side of `rerank-node bench --peers`: ONNX Runtime and OpenVINO on the bench's checkpoint.

Scores every (query, document) pair of a workload with each peer runtime on the CPU, the same
protocol as scripts/bench_torch.py (tokenization included in the timed call, every document in
one call, a warm-up not timed, at least --seconds and at least 2 iterations per mode), and prints
ONE line of JSON to stdout:

  {"threads": 2, "pairs": 64, "max_length": 512, "family": "bert", "cpu": "AVX2, no VNNI",
   "reference": "PyTorch 2.15.0 fp32",
   "results": [{"mode": "ort-fp32", "engine": "ONNX Runtime 1.32.0", "graph": "BERT-fused graph",
                "precision": "fp32", "config": "ORT_ENABLE_ALL", "pairs_per_s": 45.1,
                "iterations": 7, "seconds": 10.2, "spearman_vs_torch_fp32": 1.0,
                "max_abs_diff_vs_torch_fp32": 2e-06},
               {"mode": "ov-int8", "engine": "OpenVINO", "precision": "int8",
                "error": "ModuleNotFoundError: No module named 'nncf'"}, ...]}

A mode that cannot run (a package missing, an export failing) carries "error" instead of figures;
the others still run. Everything else (logs, library output) goes to stderr.

Modes:
  ort-fp32  the checkpoint exported to ONNX (torch.onnx.export), then ONNX Runtime's transformer
            fusions (onnxruntime.transformers.optimizer, model_type "bert") for BERT, RoBERTa and
            XLM-R checkpoints; the plain graph where fusion fails or does not know the family.
            Session with ORT_ENABLE_ALL.
  ort-int8  quantize_dynamic of that graph: per-channel int8 weights, u8 activations; with
            reduce_range (7-bit weights) on CPUs without VNNI, where u8 x s8 products saturate
            (ONNX Runtime's documented setting for AVX2).
  ov-fp32   OpenVINO (convert_model of the plain ONNX graph), compiled for the CPU with
            INFERENCE_NUM_THREADS = --threads and INFERENCE_PRECISION_HINT f32 (so that an
            AVX512-BF16/AMX CPU does not silently run bf16). The THROUGHPUT hint by default: the
            call's documents, tokenized as one padded batch, split over its streams' requests
            (on 2 vCPUs 2 streams of 1 thread beat the LATENCY hint's 1 stream of 2 threads in
            interleaved calls: best 45 vs 38 pairs/s fp32, 21.8 vs 20.4 int8); --ov-hint latency
            runs the whole batch as one request over all threads.
  ov-bf16   the ov-fp32 model with INFERENCE_PRECISION_HINT bf16: what OpenVINO runs by default
            on AVX512-BF16 and AMX CPUs (the row gives the precision OpenVINO reports it ran in;
            on other CPUs f32).
  ov-int8   NNCF post-training quantization (ModelType.TRANSFORMER) of the ov-fp32 model,
            calibrated on the workload's own pairs, tokenized as at run time, compiled with the
            CPU's default precision for what stays in floating point (bf16 on AMX CPUs: the
            configuration a user gets, and the fastest), which the row reports.

Scores are the model's last logit (the yes-minus-no logit of the last position for Qwen3, the
model card's prompt); Spearman's rho and the largest absolute difference are against PyTorch
fp32 (transformers) on the same pairs, computed here.

Exports and quantized models are cached in <model>/peers/, under names that carry what made them
(the quantization config, the library's version, the workload for the calibrated one); a file
older than the checkpoint's weights or config is made again. Nothing is fetched from a hub.

Usage:
  python3 scripts/bench_peers.py --model DIR --workload FILE.json [--threads 2] [--seconds 10] \\
      [--modes ort-fp32,ort-int8,ov-fp32,ov-bf16,ov-int8] [--ov-hint latency|throughput]

Needs `pip install -r scripts/requirements-dev.txt` (onnxruntime, onnx, onnxscript, openvino,
nncf beside torch and transformers).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import bench_common  # noqa: E402
from bench_common import QWEN3_PREFIX, QWEN3_SUFFIX, log, qwen3_pair_text  # noqa: E402

MODES = ("ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8")
# Families whose attention, LayerNorm and GELU patterns ONNX Runtime's "bert" fusions match.
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")

def fail(msg: str, code: int = 2) -> "NoReturn":  # noqa: F821
    bench_common.fail("bench_peers", msg, code)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Benchmark a reranker checkpoint on ONNX Runtime and OpenVINO (CPU).",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", required=True, type=Path, help="checkpoint directory")
    ap.add_argument("--workload", required=True, type=Path, help='JSON file {"query": str, "documents": [str, ...]}')
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime (default 2)")
    ap.add_argument("--seconds", type=float, default=10.0, help="minimum measured seconds per mode (default 10)")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma separated subset of {','.join(MODES)}")
    ap.add_argument(
        "--ov-hint",
        choices=("latency", "throughput"),
        default="throughput",
        help="OpenVINO performance hint (default throughput: the call's batch split over its streams)",
    )
    ap.add_argument(
        "--calibration-pairs", type=int, default=300, help="NNCF subset_size cap for ov-int8 (default 300)"
    )
    args = ap.parse_args(argv)
    if args.threads < 1 or args.seconds < 0 or args.calibration_pairs < 1:
        ap.error("--threads and --calibration-pairs must be >= 1, --seconds >= 0")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        ap.error(f"--modes must be a comma separated subset of {','.join(MODES)} (got {args.modes!r})")
    args.modes = list(dict.fromkeys(modes))
    return args


def cpu_has_vnni() -> bool:
    """VNNI (AVX512-VNNI or AVX-VNNI) from /proc/cpuinfo: u8 x s8 dot products without saturation."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


def spearman(a, b) -> float:
    import numpy as np

    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None  # undefined; JSON null rather than NaN, which is not JSON
    return float(np.corrcoef(ra, rb)[0, 1])


def short_error(e: BaseException) -> str:
    """One line for the table: OpenVINO's exceptions open with source locations, not the cause."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Exception from src/", "Check '"))] or lines
    return f"{type(e).__name__}: {' / '.join(lines)}"[:300]


def checked(scores, pairs: int):
    """The scores as a flat array, or an error when a graph's output is not one score per pair."""
    import numpy as np

    scores = np.asarray(scores)
    if scores.size != pairs:
        raise RuntimeError(f"output of shape {scores.shape} for {pairs} pairs, not one score per pair")
    return scores.reshape(-1).astype(np.float64)


class Cache:
    """`<model>/peers/`: a file is reused only while it is newer than the checkpoint's weights."""

    def __init__(self, model: Path):
        self.dir = model / "peers"
        stamps = [(model / f).stat().st_mtime for f in WEIGHT_FILES if (model / f).is_file()]
        self.source_mtime = max(stamps, default=0.0)

    def path(self, name: str) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / name

    def fresh(self, path: Path) -> bool:
        return path.is_file() and path.stat().st_mtime >= self.source_mtime


class Task:
    """The checkpoint as every mode runs it: tokenization, the scoring module to export, its scores."""

    def __init__(self, model_dir: Path, threads: int):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        self.config = AutoConfig.from_pretrained(str(model_dir))
        arch = (getattr(self.config, "architectures", None) or [""])[0]
        self.family = getattr(self.config, "model_type", "") or ""
        self.decoder = arch.startswith("Qwen3")
        torch.set_num_threads(threads)
        if self.decoder:
            from transformers import AutoModelForCausalLM

            self.tok = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=torch.float32, attn_implementation="eager"
            ).eval()
            self.max_length = 8192
            self.prefix = self.tok.encode(QWEN3_PREFIX, add_special_tokens=False)
            self.suffix = self.tok.encode(QWEN3_SUFFIX, add_special_tokens=False)
            yes, no = self.tok.convert_tokens_to_ids("yes"), self.tok.convert_tokens_to_ids("no")
            self.input_names = ["input_ids", "attention_mask"]

            class Score(torch.nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, input_ids, attention_mask):
                    out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
                    last = out.logits[:, -1, :]
                    return last[:, yes] - last[:, no]

        else:
            from transformers import AutoModelForSequenceClassification

            self.tok = AutoTokenizer.from_pretrained(str(model_dir))
            # Eager attention: its MatMul/Softmax pattern is what ONNX Runtime's Attention fusion
            # matches (an SDPA export leaves attention unfused).
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), dtype=torch.float32, attn_implementation="eager"
            ).eval()
            # The model's real limit: its position table (RoBERTa's offset by padding_idx + 1) and
            # the tokenizer config's model_max_length, whichever is smaller.
            positions = getattr(self.config, "max_position_embeddings", None) or 512
            if self.family in ("roberta", "xlm-roberta", "camembert"):
                positions -= (getattr(self.config, "pad_token_id", None) or 1) + 1
            declared = getattr(self.tok, "model_max_length", None) or positions
            self.max_length = int(min(positions, declared))
            names = list(getattr(self.tok, "model_input_names", []) or ["input_ids", "attention_mask"])
            # transformers 5 saves generic fast tokenizers without token_type_ids in
            # model_input_names; BERT-like models take them.
            if "token_type_ids" not in names and getattr(self.config, "type_vocab_size", 0) > 1:
                names.append("token_type_ids")
            self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]
            order = self.input_names

            class Score(torch.nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, *inputs):
                    return self.inner(**dict(zip(order, inputs))).logits[:, -1]

        self.module = Score(model).eval()

    def encode(self, query: str, docs) -> dict:
        """The workload as one padded batch of int64 arrays, named as the exported graph's inputs."""
        import numpy as np

        if self.decoder:
            texts = [qwen3_pair_text(None, query, d) for d in docs]
            enc = self.tok(
                texts,
                padding=False,
                truncation="longest_first",
                return_attention_mask=False,
                max_length=self.max_length - len(self.prefix) - len(self.suffix),
            )
            enc["input_ids"] = [self.prefix + ids + self.suffix for ids in enc["input_ids"]]
            enc = self.tok.pad(enc, padding=True, return_tensors="np")
        else:
            enc = self.tok(
                [query] * len(docs),
                list(docs),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
        batch = len(docs)
        out = {}
        for name in self.input_names:
            if name in enc:
                out[name] = np.asarray(enc[name], dtype=np.int64)
            else:  # token types the tokenizer did not produce: all zero, as transformers does
                out[name] = np.zeros((batch, enc["input_ids"].shape[1]), dtype=np.int64)
        return out

    def reference(self, feeds: dict):
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(feeds[n]) for n in self.input_names]
            return self.module(*args).float().numpy()

    def export(self, cache: Cache) -> Path:
        """The plain ONNX graph (opset 17, dynamic batch and sequence), exported once."""
        import torch

        path = cache.path("model.onnx")
        if cache.fresh(path):
            return path
        sample = self.encode("a query", ["a document of some words", "another one"])
        args = tuple(torch.from_numpy(sample[n]) for n in self.input_names)
        dynamic = {n: {0: "batch", 1: "sequence"} for n in self.input_names}
        dynamic["scores"] = {0: "batch"}
        tmp = path.with_suffix(".tmp.onnx")
        log(f"bench_peers: exporting {self.family} to {path}")
        try:
            torch.onnx.export(
                self.module, args, str(tmp), input_names=self.input_names, output_names=["scores"],
                dynamic_axes=dynamic, opset_version=17, dynamo=False,
            )
        except Exception as e:  # noqa: BLE001 - the TorchScript exporter cannot trace every family
            log(f"bench_peers: TorchScript export failed ({short_error(e)}); trying the dynamo exporter")
            shapes = {n: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")} for n in self.input_names}
            torch.onnx.export(
                self.module, args, str(tmp), input_names=self.input_names, output_names=["scores"],
                dynamic_shapes=tuple(shapes[n] for n in self.input_names), opset_version=18, dynamo=True,
            )
        os.replace(tmp, path)
        data = tmp.with_name(tmp.name + ".data")
        if data.exists():  # external weights of a large model keep the name the graph refers to
            log("bench_peers: the export has external data; it is kept beside the graph")
        return path


def time_mode(run, pairs: int, seconds: float):
    """Warm-up, then at least `seconds` and at least 2 iterations: (scores, pairs/s, iterations, elapsed)."""
    scores = run()
    iterations, start, elapsed = 0, time.perf_counter(), 0.0
    while iterations < 2 or elapsed < seconds:
        run()
        iterations += 1
        elapsed = time.perf_counter() - start
    return scores, iterations * pairs / elapsed, iterations, elapsed


class OrtGraphs:
    """ONNX Runtime's graphs: the fused (or plain) fp32 graph and its dynamic int8 quantization."""

    def __init__(self, task: Task, cache: Cache, plain: Path):
        import onnxruntime as ort

        self.version = ort.__version__
        self.task, self.cache, self.plain = task, cache, plain
        self._fp32 = None

    def fp32(self):
        """(path, graph description)."""
        if self._fp32 is not None:
            return self._fp32
        task = self.task
        if task.decoder:
            self._fp32 = (self.plain, "plain graph (ORT's transformer fusions do not cover decoders)")
            return self._fp32
        if task.family not in BERT_LIKE:
            self._fp32 = (self.plain, f"plain graph (ORT's transformer fusions do not know {task.family})")
            return self._fp32
        path = self.cache.path(f"model-fused-bert-ort{self.version}.onnx")
        stats_path = path.with_suffix(".json")
        if not (self.cache.fresh(path) and stats_path.is_file()):
            try:
                from onnxruntime.transformers.optimizer import optimize_model

                fused = optimize_model(
                    str(self.plain),
                    model_type="bert",
                    num_heads=int(task.config.num_attention_heads),
                    hidden_size=int(task.config.hidden_size),
                )
                stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
                tmp = path.with_suffix(".tmp.onnx")
                fused.save_model_to_file(str(tmp))
                os.replace(tmp, path)  # a run cut short leaves no half-written graph to reuse
                stats_path.write_text(json.dumps(stats))
            except Exception as e:  # noqa: BLE001 - the plain graph still runs
                log(f"bench_peers: ORT fusion failed: {short_error(e)}")
                self._fp32 = (self.plain, f"plain graph (BERT fusion failed: {short_error(e)[:80]})")
                return self._fp32
        stats = json.loads(stats_path.read_text())
        log(f"bench_peers: ORT fusions: {stats}")
        attention = stats.get("Attention", 0) + stats.get("MultiHeadAttention", 0)
        described = "BERT-fused graph" if attention else "BERT-fused graph, attention not fused"
        self._fp32 = (path, described)
        return self._fp32

    def int8(self, vnni: bool):
        """(path, graph description, quantization config)."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source, described = self.fp32()
        import onnx

        config = "dynamic, per-channel s8 weights, u8 activations" + ("" if vnni else ", reduce_range")
        key = "s8w-u8a-perchannel" + ("" if vnni else "-reducerange")
        stem = source.stem if source != self.plain else f"model-ort{self.version}"
        path = self.cache.path(f"{stem}-int8-{key}.onnx")
        if not self.cache.fresh(path):
            log(f"bench_peers: quantize_dynamic -> {path.name}")
            tmp = path.with_suffix(".tmp.onnx")
            quantize_dynamic(
                str(source),
                str(tmp),
                per_channel=True,
                reduce_range=not vnni,
                weight_type=QuantType.QInt8,
                # ONNX's shape inference gives no types to the outputs of the fused graph's
                # com.microsoft operators (BiasGelu, SkipLayerNormalization); they are float.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            os.replace(tmp, path)
        return path, described, config

    def session(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OpenVino:
    """OpenVINO's fp32 model (from the plain ONNX graph) and its NNCF int8 quantization."""

    def __init__(self, plain: Path):
        import openvino as ov

        self.ov = ov
        self.version = ov.get_version().split("-")[0]
        self.plain = plain
        self.core = ov.Core()

    def fp32(self):
        return self.ov.convert_model(str(self.plain))

    def int8(self, task: Task, cache: Cache, query: str, docs, subset: int):
        """(model, how it was quantized): NNCF with ModelType.TRANSFORMER, or NNCF's default
        where the TRANSFORMER graph gives no score per pair (seen on a Qwen3 checkpoint)."""
        import nncf

        digest = hashlib.sha1(json.dumps([query, docs]).encode()).hexdigest()[:10]
        n = min(subset, len(docs))
        # Calibration samples are the timed call's own rows: the workload tokenized as one padded
        # batch, one pair per sample.
        fp32 = self.fp32()
        inputs = {name for port in fp32.inputs for name in port.get_names()}
        batch = {k: v for k, v in task.encode(query, docs).items() if k in inputs}
        samples = [{k: v[i : i + 1] for k, v in batch.items()} for i in range(n)]
        broken = None
        for model_type in ("transformer", "default"):
            path = cache.path(f"ov-int8-nncf{nncf.__version__}-{model_type}-n{n}-w{digest}.xml")
            if cache.fresh(path) and path.with_suffix(".bin").is_file():
                model = self.core.read_model(str(path))
            else:
                log(f"bench_peers: NNCF quantization ({model_type}) on {n} pairs -> {path.name}")
                kind = {"model_type": nncf.ModelType.TRANSFORMER} if model_type == "transformer" else {}
                model = nncf.quantize(fp32, nncf.Dataset(samples), subset_size=n, **kind)
                # compress_to_fp16 would round the float weights left beside the int8 ones.
                self.ov.save_model(model, str(path), compress_to_fp16=False)
            try:
                compiled = self.core.compile_model(model, "CPU")
                checked(self.runner(compiled, "latency")(batch), len(docs))  # any hint would do
            except RuntimeError as e:
                broken = str(e)
                log(f"bench_peers: NNCF {model_type} model unusable: {broken}")
                continue
            how = f"NNCF PTQ ({model_type.upper() if model_type == 'transformer' else 'default model type'}, {n} workload pairs"
            how += f"; TRANSFORMER's: {broken})" if broken else ")"
            return model, how
        raise RuntimeError(f"NNCF's int8 model is unusable: {broken}")

    def compiled(self, model, threads: int, hint: str, precision: str | None):
        """The model compiled for the CPU; `precision` "f32" or "bf16" as the inference precision
        hint, None for the CPU's default."""
        import openvino.properties as props
        import openvino.properties.hint as hints

        mode = hints.PerformanceMode.LATENCY if hint == "latency" else hints.PerformanceMode.THROUGHPUT
        config = {props.inference_num_threads: threads, hints.performance_mode: mode}
        if precision is not None:
            config[hints.inference_precision] = self.ov.Type.f32 if precision == "f32" else self.ov.Type.bf16
        return self.core.compile_model(model, "CPU", config)

    @staticmethod
    def precision_of(compiled) -> str:
        """The floating-point precision OpenVINO says the compiled model runs in."""
        import openvino.properties.hint as hints

        try:
            return str(compiled.get_property(hints.inference_precision)).replace("<Type: '", "").replace("'>", "")
        except Exception as e:  # noqa: BLE001 - only a label
            return f"unknown ({short_error(e)[:40]})"

    def runner(self, compiled, hint: str):
        """One call over all documents: a single request (latency) or the batch split over the
        streams' requests (throughput)."""
        import numpy as np

        # Inputs the graph dropped (DeBERTa's unused token types) are not fed.
        names = {name for port in compiled.inputs for name in port.get_names()}
        if hint == "latency":
            request = compiled.create_infer_request()

            def run(feeds):
                feeds = {k: v for k, v in feeds.items() if k in names}
                return np.asarray(request.infer(feeds)[0]).copy()

            return run
        jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        queue = self.ov.AsyncInferQueue(compiled, jobs)
        parts = {}
        queue.set_callback(lambda request, i: parts.__setitem__(i, np.asarray(request.get_output_tensor(0).data).reshape(-1).copy()))

        def run(feeds):
            feeds = {k: v for k, v in feeds.items() if k in names}
            parts.clear()
            rows = next(iter(feeds.values())).shape[0]
            bounds = np.linspace(0, rows, jobs + 1).astype(int)
            for i in range(jobs):
                lo, hi = bounds[i], bounds[i + 1]
                if hi > lo:
                    queue.start_async({k: v[lo:hi] for k, v in feeds.items()}, i)
            queue.wait_all()
            return np.concatenate([parts[i] for i in sorted(parts)])

        return run


def main(argv=None) -> int:
    args = parse_args(argv)
    query, docs = bench_common.load_workload(args.workload, "bench_peers")
    if not args.model.is_dir():
        fail(f"cannot load model: {args.model} is not a directory")

    # The result line is the only thing on stdout: every library's output (Python or native, e.g.
    # NNCF's progress, ONNX Runtime's warnings) goes to stderr.
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import numpy as np
    import torch

    try:
        task = Task(args.model, args.threads)
    except Exception as e:  # noqa: BLE001 - nothing can run without the checkpoint
        fail(f"cannot load model from {args.model}: {short_error(e)}")
    cache = Cache(args.model)
    vnni = cpu_has_vnni()
    feeds0 = task.encode(query, docs)
    reference = task.reference(feeds0)
    log(
        f"bench_peers: model={args.model} family={task.family} max_length={task.max_length} "
        f"pairs={len(docs)} tokens={int(feeds0['attention_mask'].sum())} threads={args.threads} "
        f"vnni={vnni} modes={','.join(args.modes)} seconds>={args.seconds}"
    )

    plain, plain_error = None, None
    try:
        plain = task.export(cache)
    except Exception as e:  # noqa: BLE001 - every mode needs it; each reports why it did not run
        log(traceback.format_exc())
        plain_error = f"ONNX export failed: {short_error(e)}"

    ort_graphs, ov_runtime = None, None
    results = []
    for mode in args.modes:
        runtime, precision = mode.split("-")
        # The runtime's name first, so that a mode that fails before its version is known still
        # says whose it was.
        row = {"mode": mode, "precision": precision, "engine": "ONNX Runtime" if runtime == "ort" else "OpenVINO"}
        results.append(row)
        try:
            if plain is None:
                raise RuntimeError(plain_error)
            if runtime == "ort":
                if ort_graphs is None:
                    ort_graphs = OrtGraphs(task, cache, plain)
                row["engine"] = f"ONNX Runtime {ort_graphs.version}"
                if precision == "fp32":
                    path, row["graph"] = ort_graphs.fp32()
                    row["config"] = "ORT_ENABLE_ALL"
                else:
                    path, row["graph"], quant = ort_graphs.int8(vnni)
                    row["config"] = f"ORT_ENABLE_ALL, {quant}"
                session = ort_graphs.session(path, args.threads)
                wanted = {i.name for i in session.get_inputs()}

                def run(session=session, wanted=wanted):
                    feeds = task.encode(query, docs)
                    return session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]

            else:
                if ov_runtime is None:
                    ov_runtime = OpenVino(plain)
                row["engine"] = f"OpenVINO {ov_runtime.version}"
                row["graph"] = "from the plain ONNX graph"
                if precision in ("fp32", "bf16"):
                    model = ov_runtime.fp32()
                    compiled = ov_runtime.compiled(model, args.threads, args.ov_hint, "f32" if precision == "fp32" else "bf16")
                    how = f"{precision.replace('fp32', 'f32')} precision hint"
                else:
                    model, how = ov_runtime.int8(task, cache, query, docs, args.calibration_pairs)
                    compiled = ov_runtime.compiled(model, args.threads, args.ov_hint, None)
                    how += ", CPU's default precision"
                row["config"] = f"{how} (runs {ov_runtime.precision_of(compiled)}), {args.ov_hint.upper()} hint"
                infer = ov_runtime.runner(compiled, args.ov_hint)

                def run(infer=infer):
                    return infer(task.encode(query, docs))

            checked(run(), len(docs))  # a broken graph is reported before it is timed
            scores, pps, iterations, elapsed = time_mode(run, len(docs), args.seconds)
            scores = checked(scores, len(docs))
            rho = spearman(scores, reference)
            row.update(
                pairs_per_s=round(pps, 3),
                iterations=iterations,
                seconds=round(elapsed, 3),
                spearman_vs_torch_fp32=None if rho is None else round(rho, 6),
                max_abs_diff_vs_torch_fp32=float(np.max(np.abs(scores - reference))),
            )
            log(
                f"bench_peers: {mode}: {pps:.1f} pairs/s ({iterations} iterations in {elapsed:.2f}s), "
                f"rho {rho}, max |diff| {row['max_abs_diff_vs_torch_fp32']:.2e}"
            )
        except Exception as e:  # noqa: BLE001 - reported in the row; the other modes still run
            if not isinstance(e, RuntimeError) or plain is not None:
                log(traceback.format_exc())
            row["error"] = short_error(e)
            log(f"bench_peers: {mode} not measured: {row['error']}")

    out = {
        "threads": args.threads,
        "pairs": len(docs),
        "max_length": task.max_length,
        "family": task.family,
        "cpu": "VNNI" if vnni else "no VNNI",
        "reference": f"PyTorch {torch.__version__} fp32",
        "results": results,
    }
    with os.fdopen(result_fd, "w") as stdout:
        stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
