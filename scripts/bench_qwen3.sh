#!/usr/bin/env bash
# Qwen3-Reranker-0.6B shape, 1 query x 16 documents of ~100-200 tokens: PyTorch running the model
# card's code (fp32, bf16 autocast) and our engine (f32, bf16, int8; prefix reuse on and off) on
# the same random checkpoint, in one run. Prints a markdown table; raw JSON lines go to $OUT/.
#
#   scripts/bench_qwen3.sh [CHECKPOINT_DIR]     (default /tmp/bench-qwen3, built when missing)
#   ROUNDS=3 KERNELS=onednn THREADS=2 scripts/bench_qwen3.sh
# Each side reports the fastest of ROUNDS timed requests per mode (and the median), after one
# warm-up request; ours alternates requests with and without prefix reuse.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${1:-/tmp/bench-qwen3}"
rounds="${ROUNDS:-3}"
kernels="${KERNELS:-onednn}"
threads="${THREADS:-2}"
out="${OUT:-$(mktemp -d)}"
target="${CARGO_TARGET_DIR:-$root/target}"

if [ ! -f "$model/model.safetensors" ]; then
  python3 scripts/make_bench_checkpoint_qwen3.py --family qwen3 --out "$model"
fi
cargo build --release -q -p rerank-engine --example bench_qwen3

python3 scripts/bench_torch_qwen3.py --model "$model" --workload "$model/workload.json" \
  --threads "$threads" --rounds "$rounds" --modes fp32,bf16 >"$out/torch.json"
"$target/release/examples/bench_qwen3" "$model" --rounds "$rounds" --kernels "$kernels" \
  --modes none,bf16,int8 >"$out/ours.jsonl"

python3 - "$out/torch.json" "$out/ours.jsonl" <<'EOF'
import json, sys
torch = json.load(open(sys.argv[1]))
ours = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
base = torch["results"].get("fp32", {}).get("pairs_per_s")
print(f"| engine | precision | prefix reuse | pairs/s (best) | pairs/s (median) | best vs PyTorch fp32 | first yes-no scores |")
print("|---|---|---|---|---|---|---|")
for mode, r in torch["results"].items():
    print(f"| PyTorch {torch['torch']} (logits={torch['logits']}) | {mode} | - | {r['pairs_per_s']:.3f} | {r['pairs_per_s_median']:.3f} | "
          f"{r['pairs_per_s'] / base:.2f}x | {r.get('first_yes_minus_no', [])[:3]} |")
for r in ours:
    print(f"| ours ({r['kernels']}) | {r['precision']} | {'on' if r['prefix_reuse'] else 'off'} | "
          f"{r['pairs_per_s']:.3f} | {r['pairs_per_s_median']:.3f} | {r['pairs_per_s'] / base:.2f}x | {[round(s, 4) for s in r['first_scores'][:3]]} |")
EOF
echo "raw results: $out" >&2
