#!/usr/bin/env bash
# API fuzzing from the spec: runs schemathesis against a live rerank-node's own
# GET /openapi.json (derived from the wire types, shared/src/api/openapi.rs).
#
# Fails on any 5xx, on a node that crashes or panics, and on any response whose status, body
# schema, content type or documented headers the document does not describe. Bounded: a few
# dozen examples per operation and phase, a per-request timeout (--request-timeout), a
# per-response time limit (--max-response-time; schemathesis runs hypothesis without a deadline
# of its own) and a wall-clock limit on the whole run (timeout). No --max-time: schemathesis
# repeats fuzzing until that budget is spent. Requests carry the body's documented media type,
# application/json; the coverage phase's content-type probes carry others.
#
# Usage: scripts/schemathesis.sh [path/to/rerank-node]
#   default binary: $CARGO_TARGET_DIR/release/rerank-node (CARGO_TARGET_DIR defaults to ./target)
# Environment (all optional):
#   SCHEMATHESIS_MAX_EXAMPLES  examples per operation and phase (default 50)
#   SCHEMATHESIS_SEED          hypothesis seed (default fixed, so CI runs are reproducible)
#   SCHEMATHESIS_TIME_LIMIT    wall-clock seconds for the whole run (default 240)
#   MODEL_PATH, LOCAL_CACHE_SIZE  passed to the node (defaults: the bundled model, the node's own)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version="4.32.5"
venv="${HOME}/.cache/rerank-cluster/venv-schemathesis"
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/release/rerank-node}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
seed="${SCHEMATHESIS_SEED:-13}"
time_limit="${SCHEMATHESIS_TIME_LIMIT:-240}"

if [ ! -x "$binary" ]; then
  echo "schemathesis: no node binary at $binary (cargo build --release --workspace, or pass its path)" >&2
  exit 2
fi

# A venv of its own, reused while it holds the pinned version.
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $version" ]; then
  echo "== installing schemathesis $version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

work="$(mktemp -d)"
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
log="$work/node.log"
echo "== starting $binary on $base"
HOST=127.0.0.1 PORT="$port" RUST_LOG="${RUST_LOG:-warn}" \
  MODEL_PATH="${MODEL_PATH:-models/all-MiniLM-L6-v2}" \
  ${LOCAL_CACHE_SIZE:+LOCAL_CACHE_SIZE="$LOCAL_CACHE_SIZE"} \
  "$binary" >"$log" 2>&1 &
node_pid=$!

deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null "$base/health" 2>/dev/null; do
  if ! kill -0 "$node_pid" 2>/dev/null; then
    echo "schemathesis: the node exited during start-up:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "schemathesis: the node did not become healthy within 120 s" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  sleep 0.5
done

echo "== schemathesis run $base/openapi.json (max $max_examples examples per operation, seed $seed, ${time_limit}s limit)"
started=$SECONDS
status=0
# From the scratch directory, so that schemathesis's caches stay out of the checkout (each
# failure is printed with a curl command that reproduces it).
(cd "$work" && timeout --kill-after=10 "$time_limit" "$venv/bin/schemathesis" run "$base/openapi.json" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --request-timeout 20 \
  --max-response-time 20 \
  --generation-database none \
  --no-color) \
  || status=$?
echo "== schemathesis took $((SECONDS - started)) s (exit $status)"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "schemathesis: the run passed its ${time_limit} s limit" >&2
fi

if ! kill -0 "$node_pid" 2>/dev/null; then
  echo "schemathesis: the node died during the run:" >&2
  tail -n 40 "$log" >&2
  status=1
fi
if grep -q "panicked" "$log"; then
  echo "schemathesis: the node panicked:" >&2
  grep -A 5 "panicked" "$log" >&2
  status=1
fi
exit "$status"
