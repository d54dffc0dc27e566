#!/usr/bin/env bash
# `make cuda-check`: compile our CUDA layer code (engine/layers/*.cu) with nvcc against the
# engine's headers, to catch CUDA compile errors on a machine without a GPU. cuBLAS and
# cuRAND headers come from NVIDIA's PyPI wheels (pinned below), cached with the engine.
# Not part of `make test` (it needs nvcc).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
command -v nvcc >/dev/null || { echo "cuda-check: nvcc not found on PATH" >&2; exit 1; }
[ -f .venv/v2v-engine ] || bash engine/setup.sh
BUILD="$(cat .venv/v2v-engine)"
CACHE="${V2V_ENGINE_CACHE:-$HOME/.cache/v2v-engine}"
HDR="$CACHE/cuda-headers"
PINS=(nvidia-cublas==13.10.0.20 nvidia-curand==10.4.5.25)
if [ ! -f "$HDR/.ok" ]; then
  echo "[cuda-check] fetching cuBLAS/cuRAND headers: ${PINS[*]}"
  .venv/bin/python -m pip install -q --no-deps --target "$HDR" "${PINS[@]}"
  touch "$HDR/.ok"
fi
NVCC_DIR="$(dirname "$(readlink -f "$(command -v nvcc)")")"
CUDA_INC=""
for d in "${CUDA_HOME:-}" /usr/local/cuda "$NVCC_DIR/.."; do
  [ -n "$d" ] && [ -f "$d/include/cuda_runtime.h" ] && { CUDA_INC="$d/include"; break; }
done
[ -n "$CUDA_INC" ] || CUDA_INC="$(ls -d /usr/local/cuda*/include | head -1)"
INC=(-I"$BUILD/include" -I"$BUILD/.temp_release/src" -I"$CUDA_INC"
     -I/usr/include/hdf5/serial -I/usr/include/x86_64-linux-gnu/openblas-pthread)
while IFS= read -r d; do INC+=(-I"$d"); done < <(find "$HDR" -type d -name include)
ARCH="${V2V_CUDA_CHECK_ARCH:--gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90}"
OUT="$(mktemp -d)"
for cu in engine/layers/*.cu; do
  echo "[cuda-check] nvcc $cu"
  # shellcheck disable=SC2086
  nvcc -c -std=c++17 $ARCH -Xcompiler -fPIC "${INC[@]}" "$cu" -o "$OUT/$(basename "$cu").o"
done
echo "[cuda-check] OK: $(ls "$OUT" | wc -l) CUDA file(s) compiled ($(nvcc --version | tail -1))"
rm -rf "$OUT"
