#!/usr/bin/env bash
# One-command setup, idempotent: Debian packages, .venv with pinned Python deps, the
# Caffe engine (cached outside the work tree), pycaffe + bin/caffe in .venv, and this
# project installed editable. A second run skips every step whose result is there.
# Usage: engine/setup.sh [--with-torch] [--dev] [--no-engine] [--cuda | --cpu] [--deps-only | --no-project]
#   --with-torch  also install the optional PyTorch runtime (requirements-torch.txt)
#   --dev         also install the test and lint tools (requirements-dev.txt)
#   --no-engine   Python packages only (e.g. `make prototxt`: the generator needs no Caffe)
#   --cuda        the CUDA engine build (toolkit from pinned NVIDIA wheels; no GPU needed
#                 to build, and it runs in CPU mode where there is none)
#   --cpu         back to the CPU-only build
#   --deps-only   Debian packages and pinned Python packages, nothing else (the Docker
#                 images' first layer: it needs only the requirements files and this script)
#   --no-project  all but this project's editable install (the images' engine layer: it
#                 needs only engine/ and the requirements files)
# The venv remembers its engine flavour (.venv/v2v-flavour): after `--cuda`, a plain run
# (make test, make demo) keeps the CUDA build. A fresh venv gets the CPU-only build.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
SYS_PY=/usr/bin/python3   # the engine links Debian's libpython; the venv must match it

APT_PKGS=(build-essential python3-dev python3-venv python3-pip
  libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-regex-dev
  libboost-python-dev libgoogle-glog-dev libgflags-dev libprotobuf-dev protobuf-compiler
  libhdf5-dev liblmdb-dev libopenblas-dev)

say() { echo "[setup] $*"; }

WITH_TORCH=0; DEV=0; ENGINE=1; FLAVOUR=""; BUILD_ARGS=(); DEPS_ONLY=0; PROJECT=1
for a in "$@"; do
  case "$a" in
    --with-torch) WITH_TORCH=1 ;;
    --dev) DEV=1 ;;
    --no-engine) ENGINE=0 ;;
    --cuda) FLAVOUR=cuda ;;
    --cpu) FLAVOUR=cpu ;;
    --deps-only) DEPS_ONLY=1; PROJECT=0 ;;
    --no-project) PROJECT=0 ;;
    *) BUILD_ARGS+=("$a") ;;
  esac
done

missing=()
[ "$ENGINE" = 1 ] || APT_PKGS=(python3-venv python3-pip)   # the Python packages alone
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "Debian packages present"
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $SYS_PY"
  "$SYS_PY" -m venv "$VENV"
fi

# pip_stamped NAME FILE ARGS...: pip install ARGS once per content of FILE.
pip_stamped() {
  local stamp="$VENV/.$1.sha256" want
  want="$(sha256sum "$2" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing $2"
    "$VENV/bin/python" -m pip install -q "${@:3}"
    echo "$want" > "$stamp"
  fi
}
pip_stamped requirements requirements.txt -r requirements.txt
[ "$WITH_TORCH" = 1 ] && pip_stamped torch requirements-torch.txt -r requirements-torch.txt
[ "$DEV" = 1 ] && pip_stamped dev requirements-dev.txt -r requirements-dev.txt
[ "$PROJECT" = 1 ] && pip_stamped project pyproject.toml --no-deps -e .
if [ "$DEPS_ONLY" = 1 ]; then
  say "ready (Debian and Python packages only)"
  exit 0
fi
if [ "$ENGINE" = 0 ]; then
  "$VENV/bin/python" -c "import models" || { echo "[setup] our packages do not import" >&2; exit 1; }
  say "ready (Python packages only; the engine was not checked)"
  exit 0
fi

[ -n "$FLAVOUR" ] || FLAVOUR="$(cat "$VENV/v2v-flavour" 2>/dev/null || echo cpu)"
[ "$FLAVOUR" = cuda ] && BUILD_ARGS+=(--cuda)
say "engine flavour: $FLAVOUR"
"$VENV/bin/python" engine/build_caffe.py --venv "$VENV" ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}
# written only when it changes: a user other than the venv's owner (docker run --user)
# can run a set-up tree's make targets
[ "$(cat "$VENV/v2v-flavour" 2>/dev/null)" = "$FLAVOUR" ] || echo "$FLAVOUR" > "$VENV/v2v-flavour"
imports="import caffe"; [ "$PROJECT" = 1 ] && imports="import caffe, models"
"$VENV/bin/python" -c "$imports" || { echo "[setup] pycaffe does not import" >&2; exit 1; }
say "ready: .venv/bin/python imports caffe; .venv/bin/caffe is the Caffe CLI"
