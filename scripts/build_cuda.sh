#!/usr/bin/env bash
# Builds rerank-node with candle's CUDA backend (`--features cuda`) on a machine with no CUDA
# toolkit and no GPU, from NVIDIA's pip wheels. The result runs only where an NVIDIA driver is.
#
#   scripts/build_cuda.sh [build|check|clippy|tests|env] [extra cargo args…]
#
#   build   (default) `cargo build --release -p rerank-node --features cuda`; prints the binary
#   check   `cargo check -p rerank-node --features cuda --all-targets`
#   clippy  `cargo clippy -p rerank-node --features cuda --all-targets -- -D warnings`
#   tests   `cargo test --release -p rerank-node --features cuda --no-default-features
#           --test parity --test precision --no-run`; prints the test binaries (see below)
#   env     prints the `export` lines it uses, for `eval "$(scripts/build_cuda.sh env)"`
#
# Settings (environment):
#   CUDA_COMPUTE_CAP   GPU generation to build for, default 90 (Hopper: H100/H200). candle's
#                      kernels are PTX for exactly this target: the binary runs on GPUs of this
#                      compute capability and newer (80: A100, 86: A10/RTX 30xx, 89: L4/L40,
#                      90: H100/H200), and bf16 needs 80 or newer. (candle-kernels' GGUF
#                      matmul kernels, which the node never calls, are machine code for
#                      exactly this capability: 90 builds sm_90a.)
#   RERANK_CUDA_HOME   where the toolkit wheels go, default ~/.cache/rerank-cluster/cuda-13.0.2
#   CARGO_TARGET_DIR   as usual (cargo's default: ./target)
#
# What it sets up, and why:
#   - pip wheels of CUDA 13.0 (`cuda-toolkit[nvcc,crt,nvvm,cudart,cccl,cublas,curand,nvrtc]
#     ==13.0.2`, i.e. nvcc 13.0.88) installed with `--target` into RERANK_CUDA_HOME, leaving
#     the system's Python alone. 13.0, not a newer 13.x: the driver JIT-compiles candle's PTX at
#     start, and a driver only takes the PTX ISA of its own CUDA version or older (nvcc 13.0
#     writes ISA 9.0, which every CUDA 13 driver, 580.x and up, accepts; a 13.2 nvcc's PTX is
#     refused by a 13.0 driver). cudarc 0.19 (candle 0.11's) reads the version from `nvcc
#     --version` and binds the 13.0 API.
#   - unversioned symlinks (libcudart.so, libcublas.so, libcublasLt.so, libcurand.so,
#     libnvrtc.so) next to the wheels' versioned libraries, because candle links them
#     dynamically (cudarc's `dynamic-linking`) and the linker looks for the plain names.
#   - lib/stubs/libcuda.so: a link-time stub of the driver library (soname libcuda.so.1) made
#     from the names in the toolkit's cuda.h, since the driver is not installed here. It is
#     only ever on the linker's search path; at run time the driver's real libcuda.so.1 loads.
#   - PATH (nvcc), CUDA_ROOT = CUDA_HOME = CUDA_PATH = the wheels' root (cudarc's and
#     candle-kernels' build scripts look there), CUDA_COMPUTE_CAP.
#
# Running the result. The binary needs at run time (readelf -d lists them): libcuda.so.1 from
# the NVIDIA driver (never carried; without it the binary does not even start), and from a
# CUDA 13 toolkit or the same pip wheels libcublas.so.13 (which loads libcublasLt.so.13),
# libcurand.so.10 and libcudart.so.13 — on LD_LIBRARY_PATH unless the system's loader finds
# them. The default features also link oneDNN (libdnnl.so.2, libgomp.so.1) where the build
# machine had libdnnl-dev; pass `--no-default-features` to leave it out.
#   LD_LIBRARY_PATH=$RERANK_CUDA_HOME/py/nvidia/cu13/lib DEVICE=cuda target/release/rerank-node
# /health then says `"device": "cuda"` and `"kernels": "candle"` (oneDNN is CPU-only).
#
# Measured on the 2-core build machine (shared with other work), CUDA_COMPUTE_CAP=90, cold
# target dir: `check` 12 min, `build` 28 min (of it ~14 min nvcc for candle-kernels' static
# quantized-matmul kernels, once per profile), `tests` after `build` 4 min. The release binary
# is 76 MB (69 MB stripped: 33 MB of it sm_90a GPU code), a test binary 58 MB stripped.
#
# Running the GPU tests on a machine that has a GPU but no Rust toolchain (e.g. this
# workplace's device machine: CUDA 13.0 driver 580.x, nvcc 13.0, PyTorch with NVIDIA's cu13
# pip wheels, no libdnnl):
#   1. here: `scripts/build_cuda.sh tests` builds the parity and precision test binaries
#      (release, `--no-default-features`: no oneDNN to carry) and prints their paths. Strip
#      and compress them into a git-ignored folder of the checkout (~15 MB each; what travels
#      is capped at 64 MiB), and name that folder in the run's `carry`:
#        echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu
#        for b in <printed paths>; do n=$(basename "$b"); strip -o ".gpu/${n%-*}" "$b"; done
#        gzip -f .gpu/parity .gpu/precision
#      Do not carry cuBLAS (libcublasLt alone is several hundred MB): the GPU machine's own
#      CUDA 13 libraries serve.
#   2. there, from the checkout's node/ directory (the tests find tests/fixtures there when the
#      path they were built at does not exist; all-MiniLM-L6-v2 is git-ignored and too big to
#      carry, so its two tests skip with a loud message and only the fixture models run):
#        gunzip -f ../.gpu/*.gz && chmod +x ../.gpu/parity ../.gpu/precision
#        L=$(python3 -c 'import nvidia.cu13 as m; print(list(m.__path__)[0] + "/lib")')
#        export LD_LIBRARY_PATH="$L:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
#        ldd ../.gpu/parity | grep 'not found'   # should print nothing
#        RERANK_TEST_DEVICE=cuda ../.gpu/parity --test-threads=1
#        RERANK_TEST_DEVICE=cuda ../.gpu/precision --test-threads=1
#      RERANK_TEST_DEVICE=cuda loads every model on CUDA device 0 and fails, rather than
#      falling back to the CPU, where the binary or the machine has no CUDA. A run that is
#      refused at start with "libcuda.so.1: cannot open shared object file" has no driver.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode="${1:-build}"
[ $# -gt 0 ] && shift

toolkit_version=13.0.2
home="${RERANK_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/rerank-cluster/cuda-$toolkit_version}"
root="$home/py/nvidia/cu13"
cap="${CUDA_COMPUTE_CAP:-90}"

log() { echo "build_cuda: $*" >&2; }

if [ ! -x "$root/bin/nvcc" ] || [ ! -e "$root/lib/libcurand.so.10" ]; then
  log "installing CUDA $toolkit_version wheels into $home/py"
  python3 -m pip install --quiet --no-cache-dir --target "$home/py" \
    "cuda-toolkit[nvcc,crt,nvvm,cudart,cccl,cublas,curand,nvrtc]==$toolkit_version"
fi

# Unversioned names for the linker (the wheels ship only libfoo.so.N).
for lib in cudart cublas cublasLt curand nvrtc; do
  versioned=$(cd "$root/lib" && ls "lib$lib.so."* 2>/dev/null | grep -v alt | head -n 1 || true)
  [ -n "$versioned" ] || { log "lib$lib.so.* missing in $root/lib"; exit 1; }
  ln -sfn "$versioned" "$root/lib/lib$lib.so"
done

# The driver library for linking only: every cu* name in the toolkit's cuda.h, as empty symbols.
stub="$root/lib/stubs/libcuda.so"
if [ ! -e "$stub" ] || [ "$root/include/cuda.h" -nt "$stub" ]; then
  mkdir -p "$root/lib/stubs"
  src=$(mktemp --suffix=.c)
  grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$root/include/cuda.h" | sort -u |
    sed 's/.*/void &(void) {}/' >"$src"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$src"
  rm -f "$src"
fi

env_lines=(
  "export PATH=\"$root/bin:\$PATH\""
  "export CUDA_ROOT=\"$root\" CUDA_HOME=\"$root\" CUDA_PATH=\"$root\""
  "export CUDA_COMPUTE_CAP=\"$cap\""
)
if [ "$mode" = env ]; then
  printf '%s\n' "${env_lines[@]}"
  exit 0
fi
for line in "${env_lines[@]}"; do eval "$line"; done
log "nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $cap"

target_dir="${CARGO_TARGET_DIR:-target}"
case "$mode" in
  build)
    nice -n 5 cargo build --release -p rerank-node --features cuda "$@"
    log "binary: $target_dir/release/rerank-node"
    ;;
  check)
    nice -n 5 cargo check -p rerank-node --features cuda --all-targets "$@"
    ;;
  clippy)
    nice -n 5 cargo clippy -p rerank-node --features cuda --all-targets "$@" -- -D warnings
    ;;
  tests)
    out=$(mktemp)
    nice -n 5 cargo test --release -p rerank-node --no-default-features --features cuda \
      --test parity --test precision --no-run "$@" 2>&1 | tee "$out" >&2
    sed -n 's/.*Executable .*(\(.*\)).*/build_cuda: test binary: \1/p' "$out" >&2
    rm -f "$out"
    ;;
  *)
    log "unknown mode '$mode' (build, check, clippy, tests, env)"
    exit 2
    ;;
esac
