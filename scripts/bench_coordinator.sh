#!/usr/bin/env bash
# Coordinator benchmarks of issue 5, with rerank-bench against release builds on 127.0.0.1:
#  (f) the coordinator's added latency on cache hits, vs the owning node hit directly;
#  (g) local-cache hit rate with ROUTING=consistent_hash vs round_robin, 3 nodes, a workload of
#      repeated queries.
# Bounded (request counts); every process it starts is stopped at exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
source "$root/scripts/bench_lib.sh"

echo "| scenario | ok | req/s | pairs/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|---|"

# (f) added latency on cache hits.
start_node n1; start_node n2; start_node n3
start_coordinator coord "COORDINATOR_NODES=$n1,$n2,$n3"
echo '{"requests": [{"query": "What is the capital of France?", "documents": ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.", "Lyon is a city in France.", "Bananas are yellow."]}]}' >"$work/one.json"
owner="$(curl -fsS -D - -o /dev/null "$coord/rerank" -H 'content-type: application/json' \
  -d '{"query": "What is the capital of France?", "texts": ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.", "Lyon is a city in France.", "Bananas are yellow."]}' \
  | awk -F': ' 'tolower($1)=="x-served-by" {gsub("\r",""); print $2}')"
direct="$("$bench_bin" --url "http://$owner" --workload "$work/one.json" --concurrency 1 --requests 2000 --warmup 20 --json --quiet)"
routed="$("$bench_bin" --url "$coord" --workload "$work/one.json" --concurrency 1 --requests 2000 --warmup 20 --json --quiet)"
row "(f) cache hit, node $owner directly" "$direct"
row "(f) cache hit, through the coordinator" "$routed"
python3 - "$direct" "$routed" <<'PY'
import json, sys
d, r = (json.loads(a)["latency_ms"] for a in sys.argv[1:])
print(f"\n(f) added by the coordinator: p50 {r['p50'] - d['p50']:+.3f} ms, p99 {r['p99'] - d['p99']:+.3f} ms\n")
PY
stop_nodes

# (g) cache affinity: the same repeated-query workload under each routing mode, fresh nodes each.
for routing in consistent_hash round_robin; do
  start_node n1; start_node n2; start_node n3
  start_coordinator coord "COORDINATOR_NODES=$n1,$n2,$n3" "ROUTING=$routing"
  out="$("$bench_bin" --url "$coord" --concurrency 8 --requests 600 --docs-per-request 4 --duplicate-ratio 0.9 --duplicate-pool 100 --seed 21 --json --quiet)"
  row "(g) repeated queries, ROUTING=$routing" "$out"
  hits=0; requested=0
  for url in "$n1" "$n2" "$n3"; do
    hits=$((hits + $(metric "$url" rerank_cache_hits_total)))
    requested=$((requested + $(metric "$url" rerank_pairs_requested_total)))
  done
  echo "|  | local-cache hit rate: $hits / $requested = $(python3 -c "print(f'{100*$hits/$requested:.1f}%')") |  |  |  |  |  |"
  stop_nodes
done
