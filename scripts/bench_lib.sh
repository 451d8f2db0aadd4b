# Shared helpers of the benchmark scripts (sourced, not run): builds the release binaries,
# starts bounded processes on free 127.0.0.1 ports and stops them all at exit.
cargo build --release --bin rerank-node --bin rerank-bench --bin rerank-coordinator >&2
node_bin="$target/release/rerank-node"
coordinator_bin="$target/release/rerank-coordinator"
bench_bin="$target/release/rerank-bench"
model="${MODEL_PATH:-$root/models/all-MiniLM-L6-v2}"
[ -f "$model/config.json" ] || scripts/fetch_default_model.sh
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server BIN VAR ENV... : starts BIN with the given environment on a free port, waits for
# /health, sets VAR to its URL.
start_server() {
  local bin="$1" var="$2"; shift 2
  local port; port="$(free_port)"
  env MODEL_PATH="$model" PORT="$port" RUST_LOG=warn "$@" "$bin" >"$work/server-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { printf -v "$var" 'http://127.0.0.1:%s' "$port"; return; }
    sleep 0.1
  done
  echo "server on $port did not start" >&2; cat "$work/server-$port.log" >&2; exit 1
}
start_node() { start_server "$node_bin" "$@"; }
start_coordinator() { start_server "$coordinator_bin" "$@"; }
stop_nodes() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

metric() { curl -fsS "$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }

# row LABEL JSON
row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
lat = r["latency_ms"]
errs = ", ".join(f"{k}:{v}" for k, v in r["errors"].items()) or "0"
fmt = lambda v: "-" if v is None else f"{v:.2f}"
print(f"| {label} | {r['ok']}/{r['requests']} | {r['requests_per_s']:.1f} | {r['pairs_per_s']:.1f} | {fmt(lat['p50'])} | {fmt(lat['p99'])} | {errs} |")
PY
}

