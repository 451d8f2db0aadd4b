#!/usr/bin/env bash
# A 3-node cluster with a coordinator on this machine, without Docker: a private redis-server,
# three nodes sharing it, a coordinator in front. Prints the URLs; Ctrl-C stops everything.
# As in docker-compose.yml, Redis requires a password and the nodes sign their registrations
# with a cluster secret: both are made up afresh for each run (REDIS_PASSWORD / CLUSTER_SECRET
# from the environment when set).
#
#   scripts/cluster-local.sh                # coordinator on :8080, nodes on 8001-8003
#   BASE_PORT=9000 scripts/cluster-local.sh # coordinator :9000, nodes 9001-9003, redis 9379
#   CLUSTER_SECONDS=60 scripts/cluster-local.sh   # stop by itself after a minute
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
base="${BASE_PORT:-8080}"
if [ "$base" = 8080 ]; then node_base=8000; else node_base="$base"; fi
redis_port="${REDIS_PORT:-$((node_base + 379))}"
profile="${CARGO_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$root/target}"
run_dir="$(mktemp -d)"
pids=()
# The three nodes share this machine's cores: each model gets a third of them (at least one),
# since OpenMP pools that oversubscribe the cores stall in their barriers.
node_threads="${OMP_NUM_THREADS:-$(( ($(nproc) + 2) / 3 ))}"

stop_all() {
  trap - INT TERM EXIT
  echo; echo "stopping the cluster"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run_dir"
}
trap stop_all INT TERM EXIT

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build --profile "$profile" --bin rerank-node --bin rerank-coordinator >&2
[ -n "${MODEL_PATH:-}${MODEL_ID:-}" ] || scripts/fetch_default_model.sh

wait_for() { # url name
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" != 000 ] && return 0
    sleep 0.2
  done
  echo "$2 did not start; logs in $run_dir" >&2; exit 1
}

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
redis_password="${REDIS_PASSWORD:-$(random_hex 24)}"
cluster_secret="${CLUSTER_SECRET:-$(random_hex 32)}"
# The password reaches redis-server on its standard input (`-` reads a config from it), not on
# its command line, where any local user could read it.
echo "requirepass $redis_password" |
  redis-server - --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$run_dir/redis.log" 2>&1 &
pids+=($!)
redis_url="redis://:$redis_password@127.0.0.1:$redis_port/0"
export CLUSTER_SECRET="$cluster_secret"
nodes=()
for i in 1 2 3; do
  port=$((node_base + i))
  PORT=$port NODE_ID="node$i" NODE_URL="http://127.0.0.1:$port" REDIS_ENABLED=true REDIS_URL="$redis_url" \
    MICRO_BATCH_ENABLED=true OMP_NUM_THREADS="$node_threads" "$target/$profile/rerank-node" >"$run_dir/node$i.log" 2>&1 &
  pids+=($!)
  nodes+=("http://127.0.0.1:$port")
done
for n in "${nodes[@]}"; do wait_for "$n" "node $n"; done
COORDINATOR_NODES="$(IFS=,; echo "${nodes[*]}")" PORT="$base" REDIS_ENABLED=true REDIS_URL="$redis_url" \
  "$target/$profile/rerank-coordinator" >"$run_dir/coordinator.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$base" coordinator

cat <<INFO
cluster up (logs in $run_dir)
  coordinator  http://127.0.0.1:$base      <- clients use this
  nodes        ${nodes[*]}
  redis        redis://127.0.0.1:$redis_port/0 (password: REDISCLI_AUTH=$redis_password redis-cli -p $redis_port)
try:
  curl -s http://127.0.0.1:$base/rerank -H 'content-type: application/json' \\
    -d '{"query": "What is the capital of France?", "texts": ["Berlin is in Germany.", "Paris is the capital of France."]}'
INFO
if [ -n "${CLUSTER_SECONDS:-}" ]; then
  sleep "$CLUSTER_SECONDS"
else
  echo "Ctrl-C stops everything."
  wait
fi
