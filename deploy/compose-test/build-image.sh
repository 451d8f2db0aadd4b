#!/usr/bin/env bash
# Builds the compose test's one image, rerank-cluster-test:latest, with no registry:
#   1. a Debian bookworm base made with debootstrap (minbase, from the mirror apt already uses)
#      and `docker import`ed as rerank-cluster-base:<key>; skipped when that tag exists (the key
#      hashes suite, variant and package list, so a changed list makes a new base);
#   2. the project's binaries built on this host (bookworm, like the base: libdnnl2 2.6 from
#      the same archive) and the bundled model, copied in by deploy/compose-test/Dockerfile.
# The base holds the runtime libraries the binaries link (libdnnl2, libgomp1; checked with ldd
# inside the image), redis-server from Debian, and curl for the image's HEALTHCHECK.
#
#   deploy/compose-test/build-image.sh              # base only when missing, then the image
#   REBUILD_BASE=1 deploy/compose-test/build-image.sh   # debootstrap again (cold run)
# Environment: DEBIAN_MIRROR (default: the first Debian mirror in /etc/apt/sources.list*),
# CARGO_TARGET_DIR, CARGO_PROFILE (release), BIN_DIR (binaries already built: no cargo build),
# MODEL_DIR (models/all-MiniLM-L6-v2, fetched when missing), TEST_IMAGE
# (rerank-cluster-test:latest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

suite=bookworm
variant=minbase
# ocl-icd-libopencl1 is libdnnl2's OpenCL dependency, named so that debootstrap's resolver does
# not have to choose among alternatives.
packages=(libdnnl2 libgomp1 ocl-icd-libopencl1 redis-server curl)
key="$(printf '%s %s %s\n' "$suite" "$variant" "${packages[*]}" | sha256sum | cut -c1-12)"
base_image="rerank-cluster-base:$suite-$key"
test_image="${TEST_IMAGE:-rerank-cluster-test:latest}"
profile="${CARGO_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$root/target}"
model_dir="${MODEL_DIR:-$root/models/all-MiniLM-L6-v2}"

die() { echo "build-image: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || die "docker is unavailable (docker info failed): the compose test needs Docker Engine"

# The Debian mirror apt uses here (deb822 `URIs:` or one-line `deb URL suite` sources).
debian_mirror() {
  local url
  url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ {print $2} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' |
    grep -E '/debian/?$' | head -n1)"
  echo "${url:-http://deb.debian.org/debian}"
}

build_base() {
  command -v debootstrap >/dev/null 2>&1 || {
    echo "== installing debootstrap" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  }
  local mirror rootfs started
  mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
  rootfs="$(mktemp -d /var/tmp/rerank-base.XXXXXX)"
  # debootstrap mounts /proc and /sys inside the tree while it configures packages: unmount
  # whatever is left before removing it, and never cross into another file system.
  cleanup_rootfs() {
    for m in proc sys dev/pts dev; do
      mountpoint -q "$rootfs/$m" 2>/dev/null && umount -l "$rootfs/$m" || true
    done
    rm -rf --one-file-system "$rootfs"
  }
  trap cleanup_rootfs EXIT
  started=$SECONDS
  echo "== debootstrap $suite ($variant, +${packages[*]}) from $mirror" >&2
  debootstrap --variant="$variant" --include="$(IFS=,; echo "${packages[*]}")" \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"
  }
  rm -f "$rootfs.log"
  # Nothing at run time needs apt's caches, man pages or docs.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  local previous
  previous="$(docker image inspect -f '{{.Id}}' "$base_image" 2>/dev/null || true)"
  tar -C "$rootfs" --numeric-owner -c . |
    docker import --change 'CMD ["/bin/bash"]' \
      --message "debootstrap $suite $variant ${packages[*]}" - "$base_image" >/dev/null
  cleanup_rootfs
  trap - EXIT
  # The base it replaces (REBUILD_BASE) would linger untagged: remove it unless still in use.
  [ -z "$previous" ] || docker image rm "$previous" >/dev/null 2>&1 || true
  echo "== base image $base_image imported ($((SECONDS - started)) s)" >&2
}

if [ -n "${REBUILD_BASE:-}" ] || ! docker image inspect "$base_image" >/dev/null 2>&1; then
  build_base
else
  echo "== base image $base_image cached" >&2
fi

if [ -n "${BIN_DIR:-}" ]; then
  out_dir="$BIN_DIR"
  echo "== binaries from $out_dir (BIN_DIR; not rebuilt)" >&2
else
  echo "== cargo build --profile $profile (rerank-node, rerank-coordinator, rerank-bench)" >&2
  CARGO_TARGET_DIR="$target" cargo build --profile "$profile" \
    --bin rerank-node --bin rerank-coordinator --bin rerank-bench >&2 || die "cargo build failed"
  out_dir="$target/$profile"
  [ "$profile" = dev ] && out_dir="$target/debug"
fi
for b in rerank-node rerank-coordinator rerank-bench; do
  [ -x "$out_dir/$b" ] || die "$out_dir/$b is missing"
done
[ -f "$model_dir/model.safetensors" ] || scripts/fetch_default_model.sh "$model_dir"

# A small build context of exactly what the image holds (the repository has target/, models/…).
context="$(mktemp -d /var/tmp/rerank-context.XXXXXX)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin" "$context/models"
cp "$out_dir/rerank-node" "$out_dir/rerank-coordinator" "$out_dir/rerank-bench" "$context/bin/"
cp -r "$model_dir" "$context/models/all-MiniLM-L6-v2"
cp -r configs "$context/configs"
cp deploy/compose-test/Dockerfile "$context/Dockerfile"
previous="$(docker image inspect -f '{{.Id}}' "$test_image" 2>/dev/null || true)"
docker build --build-arg "BASE_IMAGE=$base_image" -t "$test_image" "$context" >"$context.log" 2>&1 || {
  tail -n 30 "$context.log" >&2; rm -f "$context.log"; die "docker build failed"
}
rm -f "$context.log"
# Each new build leaves the last one untagged: remove it unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$test_image")" ]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "== image $test_image built from $base_image" >&2

# The binaries must find every library in the image, not only on this host.
ldd_out="$(docker run --rm --entrypoint /bin/sh "$test_image" -c \
  'ldd /usr/local/bin/rerank-node /usr/local/bin/rerank-coordinator /usr/local/bin/rerank-bench')"
if grep -q 'not found' <<<"$ldd_out"; then
  die "libraries missing in $test_image: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t' ' ')"
fi
echo "== ldd inside $test_image: every library found;$(grep -E 'libdnnl|libgomp' <<<"$ldd_out" |
  awk '{printf " %s => %s", $1, $3}')" >&2
