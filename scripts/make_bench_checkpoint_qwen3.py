#!/usr/bin/env python3
"""Build a random checkpoint of a real model's shape for benchmarks (no hub needed).

Benchmarks need the real model's shape (layers, widths, vocabulary) far more than its weights: the
time a forward pass takes does not depend on what the weights say. This script writes a seeded
random checkpoint of that shape, a tokenizer with the family's special tokens, and a workload file,
so that the engine and PyTorch can be timed side by side on the same files.

Families (add one by adding a builder to FAMILIES):
  qwen3   Qwen3-Reranker-0.6B's shape: Qwen3ForCausalLM, 28 layers, hidden 1024, 16 query heads over
          8 key/value heads of dim 128, intermediate 3072, vocabulary 151669, tied embeddings,
          bf16 weights (as the real checkpoint stores them); a byte-level BPE tokenizer with the
          Qwen pre-tokenizer and the chat special tokens, trained on the workload's words so that
          English text costs about one token per word, as with the real vocabulary.

Writes DIR/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json} and
DIR/workload.json ({"query": str, "documents": [str, ...]}: 1 query x --docs documents of
--min-tokens..--max-tokens tokens each).

Usage:
  python3 scripts/make_bench_checkpoint_qwen3.py --family qwen3 --out DIR [--docs 16] [--seed 0]
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

SYLLABLES = ["ka", "ro", "mi", "ten", "sa", "lo", "ver", "an", "ti", "po", "dus", "el", "ma", "ri", "on", "cu",
             "bel", "ar", "ne", "sto", "li", "gra", "um", "pe", "fi", "tor", "zen", "qua", "di", "mon"]


def vocabulary(rng: random.Random, n: int):
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3)))))
    return sorted(words)


def sentence(rng: random.Random, words) -> str:
    body = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
    return body[0].upper() + body[1:] + rng.choice([".", ".", ".", ",", "?", "!"])


def document(rng: random.Random, words, tokenizer, min_tokens: int, max_tokens: int) -> str:
    target = rng.randint(min_tokens, max_tokens)
    text = ""
    while True:
        nxt = (text + " " + sentence(rng, words)).strip()
        if len(tokenizer.encode(nxt, add_special_tokens=False).ids) > target:
            return text or nxt
        text = nxt


# --------------------------------------------------------------------------------------------
# qwen3
# --------------------------------------------------------------------------------------------

QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
QWEN3_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def qwen3_tokenizer(corpus):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False, add_prefix_space=False, use_regex=False)
    trainer = BpeTrainer(
        vocab_size=16000,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in QWEN3_SPECIALS])
    for must in ("yes", "no"):
        if tok.token_to_id(must) is None:
            raise SystemExit(f"make_bench_checkpoint: {must!r} is not a token of the trained vocabulary")
    tok.no_truncation()
    tok.no_padding()
    return tok


def build_qwen3(out: Path, seed: int, n_docs: int, min_tokens: int, max_tokens: int) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    rng = random.Random(seed)
    words = vocabulary(rng, 4000)
    corpus = [sentence(rng, words) for _ in range(40000)]
    corpus += [QWEN3_PREFIX, QWEN3_SUFFIX, QWEN3_INSTRUCTION, "yes", "no"] * 50
    t = time.perf_counter()
    tok = qwen3_tokenizer(corpus)
    log(f"make_bench_checkpoint: tokenizer of {tok.get_vocab_size()} tokens in {time.perf_counter() - t:.1f}s")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "model_max_length": 131072,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "bos_token": None,
                "unk_token": None,
                "add_prefix_space": False,
                "clean_up_tokenization_spaces": False,
                "split_special_tokens": False,
            },
            indent=2,
        )
        + "\n"
    )

    cfg = Qwen3Config(
        vocab_size=151669,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attention_bias=False,
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|im_end|>"),
    )
    cfg.architectures = ["Qwen3ForCausalLM"]
    t = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, p in model.named_parameters():
        if name == "lm_head.weight":
            continue  # tied to model.embed_tokens.weight, not stored (as in the real checkpoint)
        if name.endswith("norm.weight"):
            v = 1.0 + 0.05 * torch.randn(p.shape, generator=g)
        else:
            v = 0.02 * torch.randn(p.shape, generator=g)
        tensors[name] = v.to(torch.bfloat16).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg.dtype = torch.bfloat16
    cfg.save_pretrained(str(out))
    n_params = sum(v.numel() for v in tensors.values())
    log(f"make_bench_checkpoint: {n_params / 1e6:.1f}M parameters (bf16) in {time.perf_counter() - t:.1f}s")

    query = "What is " + " ".join(rng.choice(words) for _ in range(6)) + "?"
    docs = [document(rng, words, tok, min_tokens, max_tokens) for _ in range(n_docs)]
    lens = [len(tok.encode(d, add_special_tokens=False).ids) for d in docs]
    shared = len(tok.encode(QWEN3_PREFIX + f"<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: {query}\n").ids)
    own = [len(tok.encode(f"<Document>: {d}" + QWEN3_SUFFIX).ids) for d in docs]
    log(
        f"make_bench_checkpoint: workload 1 x {n_docs} documents of {min(lens)}..{max(lens)} tokens "
        f"(mean {sum(lens) / len(lens):.0f}); shared prefix {shared} tokens, per-document {sum(own) / len(own):.0f}"
    )
    return {"query": query, "documents": docs}


FAMILIES = {"qwen3": build_qwen3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--docs", type=int, default=16, help="documents in the workload (default 16)")
    ap.add_argument("--min-tokens", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.docs < 1 or not 1 <= args.min_tokens <= args.max_tokens:
        ap.error("need --docs >= 1 and 1 <= --min-tokens <= --max-tokens")
    args.out.mkdir(parents=True, exist_ok=True)
    workload = FAMILIES[args.family](args.out, args.seed, args.docs, args.min_tokens, args.max_tokens)
    (args.out / "workload.json").write_text(json.dumps(workload, indent=1, ensure_ascii=False) + "\n")
    log(f"make_bench_checkpoint: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
