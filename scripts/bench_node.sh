#!/usr/bin/env bash
# Pipeline and cluster benchmarks of issue 3/4, measured with rerank-bench against real nodes
# (release builds) on 127.0.0.1. Bounded: every run has a request count; all processes it starts
# are stopped at exit. Prints a markdown table.
#
#   scripts/bench_node.sh            # all scenarios
#   MODEL_PATH=... scripts/bench_node.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
source "$root/scripts/bench_lib.sh"

echo "| scenario | ok | req/s | pairs/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|---|"

# (a) the guide's scenario: 50 concurrent requests, 30% identical, batching off vs on.
for batching in false true; do
  start_node url MICRO_BATCH_ENABLED=$batching MAX_PARALLEL_REQUESTS=64
  out="$("$bench_bin" --url "$url" --concurrency 50 --requests 300 --docs-per-request 4 --duplicate-ratio 0.3 --seed 11 --json --quiet)"
  row "(a) 50 concurrent, 30% identical, batching=$batching" "$out"
  stop_nodes
done

# (b) 16 clients, 1 query x 4 docs, all distinct, batching off vs on.
for batching in false true; do
  start_node url MICRO_BATCH_ENABLED=$batching MAX_PARALLEL_REQUESTS=64
  out="$("$bench_bin" --url "$url" --concurrency 16 --requests 240 --docs-per-request 4 --seed 12 --json --quiet)"
  row "(b) 16 clients x 4 docs, batching=$batching" "$out"
  stop_nodes
done

# (c) a repeated request served by the node's local cache.
echo '{"requests": [{"query": "What is the capital of France?", "documents": ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.", "Lyon is a city in France.", "Bananas are yellow."]}]}' >"$work/one.json"
start_node url
out="$("$bench_bin" --url "$url" --workload "$work/one.json" --concurrency 1 --requests 1000 --warmup 5 --json --quiet)"
row "(c) repeated request, local cache" "$out"
stop_nodes

# Redis scenarios.
redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
sleep 0.5
redis_env=(REDIS_ENABLED=true "REDIS_URL=redis://127.0.0.1:$redis_port/0")

# (d) a repeated request served from Redis (node B has no local cache; node A computed it).
start_node a "${redis_env[@]}"
start_node b "${redis_env[@]}" LOCAL_CACHE_SIZE=0
"$bench_bin" --url "$a" --workload "$work/one.json" --requests 1 --json --quiet >/dev/null
out="$("$bench_bin" --url "$b" --workload "$work/one.json" --concurrency 1 --requests 1000 --warmup 5 --json --quiet)"
row "(d) repeated request, Redis tier (no local cache)" "$out"
echo "|  | node B pairs computed: $(metric "$b" rerank_pairs_computed_total), Redis hits: $(metric "$b" rerank_redis_hits_total) |  |  |  |  |  |"
stop_nodes
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
sleep 0.5

# (e) the guide's multi-server scenario: 3 nodes, one load generator each, 30% identical
#     requests drawn from one shared pool of popular requests.
start_node n1 "${redis_env[@]}" MICRO_BATCH_ENABLED=true
start_node n2 "${redis_env[@]}" MICRO_BATCH_ENABLED=true
start_node n3 "${redis_env[@]}" MICRO_BATCH_ENABLED=true
i=0
bench_pids=()
for url in "$n1" "$n2" "$n3"; do
  i=$((i + 1))
  "$bench_bin" --url "$url" --concurrency 8 --requests 80 --docs-per-request 4 --duplicate-ratio 0.3 --seed $((100 + i)) --pool-seed 7 --json --quiet >"$work/e$i.json" &
  bench_pids+=($!)
done
wait "${bench_pids[@]}"
for i in 1 2 3; do row "(e) 3 nodes + Redis, node $i" "$(cat "$work/e$i.json")"; done
requested=0; computed=0
for url in "$n1" "$n2" "$n3"; do
  requested=$((requested + $(metric "$url" rerank_pairs_requested_total)))
  computed=$((computed + $(metric "$url" rerank_pairs_computed_total)))
done
echo
echo "(e) pairs requested across the cluster: $requested, computed: $computed ($(python3 -c "print(f'{100*$computed/$requested:.1f}')")%)"
