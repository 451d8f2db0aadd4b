"""What the bench's Python sides share (scripts/bench_torch.py, bench_torch_qwen3.py and
bench_peers.py): the workload file's reader and the Qwen3-Reranker model card's prompt, so that
every side reads the same pairs and builds the same decoder input."""

import json
import sys


def log(*args) -> None:
    """Everything but the one result line goes to stderr."""
    print(*args, file=sys.stderr, flush=True)


def fail(script: str, msg: str, code: int = 2) -> "NoReturn":  # noqa: F821
    log(f"{script}: error: {msg}")
    sys.exit(code)


def load_workload(path, script: str):
    """The workload file {"query": str, "documents": [str, ...]} (at least one document) as
    (query, documents); exits with a message naming `script` when it is unreadable or malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        fail(script, f"cannot read workload {path}: {e}")
    query = data.get("query") if isinstance(data, dict) else None
    docs = data.get("documents") if isinstance(data, dict) else None
    if not isinstance(query, str) or not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
        fail(script, f'workload {path} must be {{"query": str, "documents": [str, ...]}} with at least one document')
    return query, docs


# The Qwen3-Reranker model card's prompt around each pair.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def qwen3_pair_text(instruction, query, doc) -> str:
    """The card's middle part for one pair (`instruction` None: the card's default)."""
    if instruction is None:
        instruction = QWEN3_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
