#!/usr/bin/env bash
# `make gpu-check`: everything a GPU machine should confirm, in one run, with the logs kept.
#   1. the CUDA engine build (make setup-cuda; cached after the first time);
#   2. the GPU tests alone (make test-gpu: fails where no GPU is usable);
#   3. the benchmarks with their GPU table (make bench).
# Everything goes to $GPU_CHECK_OUT (default runs/gpu_check/): setup.log, test_gpu.log,
# bench.log, bench.md/bench.json and summary.md (each step's exit status and time).
# The exit status is the first failing step's.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
OUT="${GPU_CHECK_OUT:-runs/gpu_check}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
printf '# GPU check %s\n\n| step | exit | seconds |\n|---|---|---|\n' "$(date -u +%FT%TZ)" > "$SUMMARY"
first_fail=0

step() {  # step NAME LOG COMMAND...
  local name="$1" log="$2" t0 rc
  shift 2
  echo "[gpu-check] $name (log: $OUT/$log)"
  t0=$(date +%s)
  "$@" > "$OUT/$log" 2>&1
  rc=$?
  echo "| $name | $rc | $(( $(date +%s) - t0 )) |" >> "$SUMMARY"
  [ "$rc" -eq 0 ] || { echo "[gpu-check] $name failed ($rc): tail of $OUT/$log"; tail -20 "$OUT/$log"; }
  [ "$first_fail" -ne 0 ] || first_fail=$rc
  return "$rc"
}

step "make setup-cuda" setup.log make setup-cuda || exit "$first_fail"
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
step "make test-gpu" test_gpu.log make test-gpu
step "make bench" bench.log .venv/bin/python -m tools.bench --out "$OUT"
cat "$SUMMARY"
exit "$first_fail"
