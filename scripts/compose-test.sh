#!/usr/bin/env bash
# The shipped docker-compose.yml run for real, offline: Redis, three nodes and the coordinator
# (Jaeger left out: its image cannot be made without a registry), all on one image built here
# (deploy/compose-test/build-image.sh: a debootstrap'd Debian base, the host's binaries, the
# bundled model, Debian's redis-server) through deploy/compose-test/docker-compose.test.yml.
#
# It waits for the coordinator to list 3 healthy nodes (GET /admin/nodes with the admin token),
# puts steady load on the coordinator's published port (rerank-bench from this host, POST
# /rerank and POST /v1/rerank at once, bounded by --duration), `docker kill`s node2 under that
# load, `docker start`s it again, and asserts:
#   - not one request failed (the coordinator fails over; the load covers kill and restart);
#   - the killed node rejoins: listed healthy again, and it serves requests (its counter in
#     /admin/nodes grows and a request answered with `x-served-by: node2:8000`).
# Then `compose down -v` (also on failure or timeout: trap). Prints a summary: requests, failures,
# the killed node, time to rejoin.
#
#   scripts/compose-test.sh
#   BIN_DIR=$CARGO_TARGET_DIR/release scripts/compose-test.sh   # binaries already built
#   REBUILD_BASE=1 scripts/compose-test.sh                       # debootstrap the base again
# Environment: COMPOSE_TEST_TIMEOUT (whole run, default 900 s), LOAD_SECONDS (30),
# LOAD_CONCURRENCY (2 per API), NODE_THREADS (1: three nodes share this host's cores), plus
# build-image.sh's (BIN_DIR, CARGO_TARGET_DIR, CARGO_PROFILE, MODEL_DIR, DEBIAN_MIRROR).
# Needs Docker Engine with Compose (v2 `docker compose` or v1 `docker-compose`), curl and
# python3; fails, saying why, without them.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

limit="${COMPOSE_TEST_TIMEOUT:-900}"
if [ -z "${_COMPOSE_TEST_INNER:-}" ]; then
  # The whole run is bounded: past the limit, timeout sends TERM (the trap below tears the
  # cluster down), then KILL a minute later.
  rc=0
  _COMPOSE_TEST_INNER=1 timeout --kill-after=60 "$limit" "$0" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "compose test: FAILED: over its overall limit of $limit s (COMPOSE_TEST_TIMEOUT)" >&2
  fi
  exit "$rc"
fi

started=$SECONDS
fail() { echo "compose test: FAILED: $*" >&2; exit 1; }
elapsed() { echo $((SECONDS - started)); }
say() { echo "== [$(elapsed) s] $*"; }

command -v docker >/dev/null 2>&1 ||
  fail "docker is not installed: this test needs Docker Engine with Compose"
docker_err="$(docker info 2>&1 >/dev/null)" ||
  fail "docker is unavailable (docker info: ${docker_err:-failed}): this test needs a running Docker Engine"
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cmd=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing"
done

project=rerank-compose-test
compose=("${compose_cmd[@]}" -p "$project" -f docker-compose.yml -f deploy/compose-test/docker-compose.test.yml)
export TEST_IMAGE="${TEST_IMAGE:-rerank-cluster-test:latest}"
load_s="${LOAD_SECONDS:-30}"
load_concurrency="${LOAD_CONCURRENCY:-2}"
victim=node2
victim_id=node2:8000
expected_ids="node1:8000 node2:8000 node3:8000"

# Fresh secrets for each run, as docker-compose.yml requires (hex: safe inside URLs).
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
ADMIN_TOKEN="$(random_hex 24)"
REDIS_PASSWORD="$(random_hex 24)"
CLUSTER_SECRET="$(random_hex 32)"
export ADMIN_TOKEN REDIS_PASSWORD CLUSTER_SECRET
export NODE_THREADS="${NODE_THREADS:-1}"
COORDINATOR_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export COORDINATOR_PORT
coord="http://127.0.0.1:$COORDINATOR_PORT"

work="$(mktemp -d)"
load_pids=()
up=0
teardown_cluster() {
  say "compose down -v"
  "${compose[@]}" down -v --remove-orphans >"$work/down.log" 2>&1 ||
    { cat "$work/down.log" >&2; echo "compose test: compose down failed" >&2; }
  up=0
}
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "$up" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "---- last log lines of each service" >&2
      "${compose[@]}" logs --no-color --tail=20 >&2 2>&1 || true
    fi
    teardown_cluster
  fi
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 143' INT TERM

# Binaries: the ones build-image.sh puts in the image (rerank-bench runs here, on the host).
profile="${CARGO_PROFILE:-release}"
profile_dir="$profile"
[ "$profile" = dev ] && profile_dir=debug
bin_dir="${BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/$profile_dir}"
say "building the image (deploy/compose-test/build-image.sh)"
image_started=$SECONDS
deploy/compose-test/build-image.sh || fail "building the image failed (see above)"
image_s=$((SECONDS - image_started))
bench="$bin_dir/rerank-bench"
[ -x "$bench" ] || fail "$bench is missing"

# GET /admin/nodes as "id state requests" lines.
nodes() {
  curl -fsS --max-time 5 -H "authorization: Bearer $ADMIN_TOKEN" "$coord/admin/nodes" 2>/dev/null |
    python3 -c 'import json, sys
for n in json.load(sys.stdin)["nodes"]:
    print(n["id"], n["state"], n["requests"])' 2>/dev/null || true
}
healthy_ids() { nodes | awk '$2 == "healthy" {print $1}' | sort | tr '\n' ' ' | sed 's/ $//'; }
node_state() { nodes | awk -v id="$1" '$1 == id {print $2}'; }
node_requests() { nodes | awk -v id="$1" '$1 == id {print $3}'; }
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.5 s; fails the test past SECONDS.
wait_for() {
  local limit="$1" what="$2" t0=$SECONDS
  shift 2
  until "$@"; do
    [ $((SECONDS - t0)) -lt "$limit" ] ||
      fail "$what: not within $limit s (the coordinator's nodes now: $(nodes | tr '\n' ';'))"
    sleep 0.5
  done
}

say "compose up (redis node1 node2 node3 coordinator; coordinator on $coord)"
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
up=1
up_started=$SECONDS
"${compose[@]}" up -d --no-build redis node1 node2 node3 coordinator >"$work/up.log" 2>&1 ||
  { cat "$work/up.log" >&2; fail "compose up failed"; }
all_healthy() { [ "$(healthy_ids)" = "$expected_ids" ]; }
wait_for 180 "the coordinator listing 3 healthy nodes ($expected_ids)" all_healthy
ready_s=$((SECONDS - up_started))
say "3 healthy nodes after $ready_s s: $(healthy_ids)"

# The node in its container runs on oneDNN when the binary links it (ldd in build-image.sh
# showed the library resolves; this shows it loads and runs).
info="$("${compose[@]}" exec -T node1 curl -fsS --max-time 5 http://127.0.0.1:8000/info)" ||
  fail "GET /info inside node1 failed"
kernels="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["kernels"])' "$info")"
say "node1's kernels: $kernels"
if ldd "$bin_dir/rerank-node" | grep -q libdnnl && [ "${kernels#onednn}" = "$kernels" ]; then
  fail "rerank-node links libdnnl but runs '$kernels' in its container"
fi

# One call of each API by hand, with its answer checked.
tei="$(curl -fsS --max-time 30 "$coord/rerank" -H 'content-type: application/json' \
  -d '{"query": "What is the capital of France?", "texts": ["Berlin is the capital of Germany.", "Paris is the capital of France."]}')" ||
  fail "POST /rerank through the coordinator failed"
python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert r[0]["index"] == 1, r' "$tei" ||
  fail "POST /rerank ranked Berlin above Paris: $tei"
cohere="$(curl -fsS --max-time 30 "$coord/v1/rerank" -H 'content-type: application/json' \
  -d '{"query": "What is the capital of France?", "documents": ["Berlin is the capital of Germany.", "Paris is the capital of France."], "top_n": 1}')" ||
  fail "POST /v1/rerank through the coordinator failed"
python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["results"][0]["index"] == 1, r' "$cohere" ||
  fail "POST /v1/rerank ranked Berlin above Paris: $cohere"

say "steady load for $load_s s: rerank-bench, $load_concurrency in flight on /rerank and on /v1/rerank"
for api in tei cohere; do
  seed=1; [ "$api" = cohere ] && seed=2
  "$bench" --url "$coord" --api "$api" --concurrency "$load_concurrency" --duration "$load_s" \
    --timeout 60 --seed "$seed" --docs-per-request 4 --doc-words 30 --json --quiet \
    >"$work/load-$api.json" 2>"$work/load-$api.err" &
  load_pids+=($!)
done
load_started=$SECONDS
sleep 8

cid="$("${compose[@]}" ps -q "$victim")"
[ -n "$cid" ] || fail "no container for $victim"
say "docker kill $victim ($victim_id) under load"
docker kill "$cid" >/dev/null
killed_at=$SECONDS
not_healthy() { [ "$(node_state "$victim_id")" != healthy ]; }
wait_for 15 "the coordinator noticing that $victim is gone" not_healthy
say "coordinator lists $victim_id as '$(node_state "$victim_id")' $((SECONDS - killed_at)) s after the kill"
sleep 5 # the load goes on with two nodes

say "docker start $victim"
docker start "$cid" >/dev/null
restarted_at=$SECONDS
healthy_again() { [ "$(node_state "$victim_id")" = healthy ]; }
wait_for 120 "$victim_id listed healthy again after docker start" healthy_again
rejoin_s=$((SECONDS - restarted_at))
say "$victim_id healthy again $rejoin_s s after docker start (down $((SECONDS - killed_at)) s in all)"
requests_at_rejoin="$(node_requests "$victim_id")"
requests_at_rejoin="${requests_at_rejoin:-0}"

# Under the rest of the load, the ring sends its share back to it.
serving() { local n; n="$(node_requests "$victim_id")"; [ "${n:-0}" -gt "$requests_at_rejoin" ]; }
served_under_load=no
if [ $((SECONDS - load_started)) -lt "$load_s" ]; then
  t0=$SECONDS
  until serving; do
    [ $((SECONDS - load_started)) -lt "$load_s" ] || break
    sleep 0.5
  done
  serving && served_under_load="yes ($((SECONDS - t0)) s after rejoining)"
fi

say "waiting for the load to end"
for i in "${!load_pids[@]}"; do
  wait "${load_pids[$i]}" || true
done
load_pids=()
summary="$(python3 - "$work/load-tei.json" "$work/load-cohere.json" <<'PY'
import json, sys
total = ok = 0
errors = {}
parts = []
for path in sys.argv[1:]:
    try:
        r = json.load(open(path))
    except Exception as e:
        print(f"unreadable {path}: {e}")
        sys.exit(1)
    total += r["requests"]
    ok += r["ok"]
    for k, v in r["errors"].items():
        errors[k] = errors.get(k, 0) + v
    parts.append(f'{r["settings"]["api"]}: {r["requests"]} ({r["requests_per_s"]:.1f}/s, p99 {r["latency_ms"]["p99"]} ms)')
print(total, ok, total - ok, json.dumps(errors, separators=(",", ":")), "; ".join(parts))
PY
)" || fail "load generator output: $summary ($(cat "$work"/load-*.err 2>/dev/null | tail -3))"
read -r sent ok failed errors detail <<<"$summary"

# After the load, the rejoined node answers requests routed to it (distinct queries spread over
# the ring; x-served-by names the node that answered).
served_by_victim=no
for i in $(seq 1 60); do
  by="$(curl -fsS --max-time 30 -o /dev/null -D - "$coord/v1/rerank" -H 'content-type: application/json' \
    -d "{\"query\": \"rejoin check $i\", \"documents\": [\"a document\", \"another one\"]}" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-served-by" {print $2}')" ||
    fail "request $i after the load failed"
  if [ "$by" = "$victim_id" ]; then served_by_victim="yes (request $i of at most 60)"; break; fi
done

echo
echo "compose test summary"
echo "  image build:       $image_s s (base + image: debootstrap included when it ran above)"
echo "  node kernels:      $kernels"
echo "  cluster ready:     $ready_s s from compose up to 3 healthy nodes"
echo "  requests sent:     $sent under load ($detail), plus 2 + up to 60 checks by hand"
echo "  failed requests:   $failed ${errors}"
echo "  killed node:       $victim ($victim_id), docker kill after 8 s of load"
echo "  rejoined:          healthy $rejoin_s s after docker start; served load after rejoining: $served_under_load; x-served-by it afterwards: $served_by_victim"
echo "  total:             $(elapsed) s"
[ "$sent" -gt 0 ] || fail "the load generators sent no request"
[ "$failed" = 0 ] || fail "$failed of $sent requests failed under the node kill: $errors"
[ "$served_by_victim" != no ] || [ "$served_under_load" != no ] ||
  fail "$victim_id is listed healthy but served no request after rejoining"
teardown_cluster
echo "compose test: PASSED"
