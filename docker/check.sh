#!/usr/bin/env bash
# make docker-check: build both images and run them, as a user would.
#   bash docker/check.sh [STEP...]    steps, in order: base cpu gpu test demo gpu-test
#                                     (default: all of them)
# base      the Debian 12 base: the Dockerfile's digest-pinned image where a registry is
#           reachable, else one made here with debootstrap + docker import (reused after)
# cpu, gpu  docker build --build-arg FLAVOUR=cpu|gpu (BuildKit), timed
# test      docker run --rm v2v-caffe:cpu make test        (the whole suite in the image)
# demo      docker run --rm -v <tmp>:/opt/v2v/runs v2v-caffe:cpu make demo; the report must
#           land in <tmp> owned by the calling user (a stand-in uid when that is root)
# gpu-test  in the GPU image: `caffe device_query -gpu 0` without a GPU gives one clear line, and
#           the tests in CPU mode pass ($V2V_DOCKER_GPU_TESTS: test (default) or test-fast)
# Logs and a summary (summary.md: times, image sizes, results) go to $V2V_DOCKER_OUT
# (default runs/docker_check/). Environment: DOCKER (the docker CLI, default docker),
# DEBIAN_MIRROR (for debootstrap; default: the mirror this machine's apt uses),
# V2V_CUDA_ARCH (the GPU image's arch list), PIP_CERT (a CA bundle for pip in the build,
# passed as a build secret; default: the one this machine's pip is configured with).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DOCKER="${DOCKER:-docker}"
OUT="${V2V_DOCKER_OUT:-$REPO/runs/docker_check}"
LOCAL_BASE=v2v-base:debian12-minbase
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(base cpu gpu test demo gpu-test)
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"

say() { echo "[docker-check] $*"; }
die() { echo "[docker-check] error: $*" >&2; exit 1; }
row() { echo "| $1 | $2 | $3 |" >> "$SUMMARY"; }

# timed NAME LOG CMD...: run CMD with its output in LOG, add a row to the summary.
timed() {
  local name="$1" log="$2" t0 rc=0
  shift 2
  say "$name (log: $log)"
  t0=$(date +%s)
  "$@" > "$log" 2>&1 || rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" = 0 ]; then row "$name" "ok" "${took} s"; else row "$name" "FAILED (exit $rc)" "${took} s"; fi
  say "$name: exit $rc after ${took} s"
  return "$rc"
}

preflight() {
  command -v "$DOCKER" > /dev/null || die "no docker CLI ('$DOCKER'); on Debian: apt-get install docker.io"
  "$DOCKER" info > /dev/null 2>&1 || die "the docker daemon does not answer ('$DOCKER info'); start it (dockerd) or join the docker group"
  if "$DOCKER" buildx version > /dev/null 2>&1; then
    BUILD=("$DOCKER" buildx build --load)
  else
    local client
    client="$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null || echo 0)"
    [ "${client%%.*}" -lt 23 ] || die "docker $client needs the buildx plugin for BuildKit builds (Debian: docker-buildx; or DOCKER=/usr/bin/docker for Debian 12's docker.io CLI)"
    BUILD=(env DOCKER_BUILDKIT=1 "$DOCKER" build)
  fi
}

official_base() { sed -n 's/^ARG BASE=//p' docker/Dockerfile; }

apt_mirror() {
  local m
  m="$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
  [ -n "$m" ] || m="$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
  echo "${m:-http://deb.debian.org/debian}"
}

make_base() {
  local official root mirror
  official="$(official_base)"
  if "$DOCKER" image inspect "$official" > /dev/null 2>&1 || "$DOCKER" pull -q "$official" > /dev/null 2>&1; then
    BASE="$official"; row "base" "official $official" "-"; return
  fi
  BASE="$LOCAL_BASE"
  if "$DOCKER" image inspect "$BASE" > /dev/null 2>&1; then
    row "base" "reused $BASE ($("$DOCKER" image inspect -f '{{index .Config.Labels "made"}}' "$BASE"))" "-"
    return
  fi
  command -v debootstrap > /dev/null || die "no registry reachable for $official, and no debootstrap to make a base (apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root: run as root, or pull $official where a registry is reachable"
  mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
  root="$(mktemp -d)"
  timed "base (debootstrap bookworm from $mirror)" "$OUT/base.log" \
    debootstrap --variant=minbase bookworm "$root" "$mirror"
  timed "base (docker import)" "$OUT/import.log" bash -c \
    "tar -C '$root' -c . | '$DOCKER' import -c 'LABEL made=\"debootstrap bookworm $(date -u +%F) $mirror\"' - '$BASE'"
  rm -rf "$root"
}

build_image() {
  local flavour="$1" args=()
  local ca="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
  [ -n "$ca" ] && [ -f "$ca" ] && args+=(--secret "id=pip_ca,src=$ca")
  [ -n "${V2V_CUDA_ARCH:-}" ] && args+=(--build-arg "V2V_CUDA_ARCH=$V2V_CUDA_ARCH")
  timed "build v2v-caffe:$flavour" "$OUT/build-$flavour.log" \
    "${BUILD[@]}" --progress=plain -f docker/Dockerfile --build-arg "FLAVOUR=$flavour" \
    --build-arg "BASE=${BASE:-$(base_in_use)}" "${args[@]}" -t "v2v-caffe:$flavour" .
  row "size v2v-caffe:$flavour" "$(( $("$DOCKER" image inspect -f '{{.Size}}' "v2v-caffe:$flavour") / 1000000 )) MB" "-"
}

base_in_use() {
  if "$DOCKER" image inspect "$(official_base)" > /dev/null 2>&1; then official_base; else echo "$LOCAL_BASE"; fi
}

run_tests() {
  timed "v2v-caffe:cpu make test" "$OUT/test-cpu.log" "$DOCKER" run --rm v2v-caffe:cpu make test
}

# The demo writes into a mounted folder; every file there must belong to the caller.
run_demo() {
  local uid="${SUDO_UID:-$(id -u)}" gid="${SUDO_GID:-$(id -g)}" tmp bad
  [ "$uid" != 0 ] || { uid=4242; gid=4242; }   # root calling: a stand-in user
  tmp="$(mktemp -d)"
  chown "$uid:$gid" "$tmp"
  timed "v2v-caffe:cpu make demo (runs/ mounted, owner $uid)" "$OUT/demo.log" \
    "$DOCKER" run --rm -v "$tmp:/opt/v2v/runs" v2v-caffe:cpu make demo
  [ -s "$tmp/demo/README.md" ] || die "the demo left no report in the mounted folder $tmp"
  bad="$(find "$tmp" ! -uid "$uid" | head -5)"
  [ -z "$bad" ] || die "files in the mounted folder not owned by $uid: $bad"
  row "demo report owned by uid $uid" "ok ($(find "$tmp" -type f | wc -l) files)" "-"
  rm -rf "$OUT/demo"
  cp -r "$tmp/demo" "$OUT/demo"
  rm -rf "$tmp"
}

run_gpu_image() {
  local rc=0 out
  out="$("$DOCKER" run --rm v2v-caffe:gpu caffe device_query -gpu 0 2>&1)" || rc=$?
  echo "$out" > "$OUT/device_query.log"
  if [ "$rc" = 0 ] || grep -q "Check failed" <<< "$out"; then
    row "gpu: caffe device_query without a GPU" "FAILED (exit $rc)" "-"
    die "caffe device_query without a GPU: exit $rc, expected one clear line: $out"
  fi
  row "gpu: caffe device_query without a GPU" "exit $rc: $(tail -1 <<< "$out" | tr '|' '/')" "-"
  timed "v2v-caffe:gpu make ${V2V_DOCKER_GPU_TESTS:-test} (CPU mode)" "$OUT/test-gpu-image.log" \
    "$DOCKER" run --rm v2v-caffe:gpu make "${V2V_DOCKER_GPU_TESTS:-test}"
}

preflight
{ echo "# make docker-check, $(date -u '+%F %H:%M') UTC, $(nproc) cores"; echo
  echo "| step | result | time |"; echo "|---|---|---|"; } > "$SUMMARY"
for step in "${STEPS[@]}"; do
  case "$step" in
    base) make_base ;;
    cpu|gpu) build_image "$step" ;;
    test) run_tests ;;
    demo) run_demo ;;
    gpu-test) run_gpu_image ;;
    *) die "unknown step '$step' (steps: base cpu gpu test demo gpu-test)" ;;
  esac
done
say "all steps passed; summary: $SUMMARY"
cat "$SUMMARY"
