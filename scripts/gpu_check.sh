#!/usr/bin/env bash
# scripts/gpu_check.sh — the one prepared GPU check (target: < 8 minutes on one H200).
#
#   scripts/gpu_check.sh [BUILD_DIR]        (default build-gpu)
#
# 1. configures and builds explora with the CUDA backend required (EXPLORA_CUDA=ON,
#    sm_90 only to keep the build short; override with CUDA_ARCHS=...);
# 2. runs the CPU-vs-CUDA parity suite (tests/test_backend_parity.c); a skip counts as a
#    failure here, since this script is meant to run where a GPU exists;
# 3. runs the training-step benchmark (`explora bench`, synthetic data, ExPLoRA D-[L]-r64
#    policy) on the cuda backend for DINOv2 ViT-B/14 and ViT-L/14, fp32 and TF32, and
#    prints images/s and the peak device memory (used memory of the whole GPU, sampled with
#    nvidia-smi every 100 ms; bench itself reports host RSS only).
#
# Every step prints a "gpu-check:" line; the exit status is non-zero if the build or the
# parity suite fails. Benchmark failures are reported but do not hide the parity result.
set -uo pipefail

cd "$(dirname "$0")/.."
BUILD=${1:-build-gpu}
ARCHS=${CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
BATCH_B=${BATCH_B:-32}
BATCH_L=${BATCH_L:-16}
ITERS=${ITERS:-5}
status=0
t0=$(date +%s)
say() { echo "gpu-check: [$(( $(date +%s) - t0 ))s] $*"; }

say "nvidia-smi:"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || say "nvidia-smi not available"

# --- 1. build -------------------------------------------------------------------------
say "configure + build ($BUILD, CMAKE_CUDA_ARCHITECTURES=$ARCHS, -j$JOBS)"
if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEXPLORA_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" > "$BUILD.configure.log" 2>&1; then
  tail -30 "$BUILD.configure.log"; say "FAIL: configure"; exit 1
fi
if ! cmake --build "$BUILD" -j"$JOBS" > "$BUILD.build.log" 2>&1; then
  grep -E "error|Error" "$BUILD.build.log" | head -40; say "FAIL: build"; exit 1
fi
say "build ok"

# --- 2. parity --------------------------------------------------------------------------
say "parity suite (cuda vs cpu)"
export EXPLORA_TEST_PLUGIN_DIR="$PWD/$BUILD/bin/plugins" OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}
"$BUILD/bin/test_backend_parity" 2>&1 | tail -60
rc=${PIPESTATUS[0]}
case $rc in
  0) say "parity: PASS" ;;
  77) say "parity: SKIPPED (no usable GPU?) — counted as a failure here"; status=1 ;;
  *) say "parity: FAIL (rc=$rc)"; status=1 ;;
esac

# --- 3. benchmark -------------------------------------------------------------------------
EXPLORA="$BUILD/bin/explora"
peak_file=$(mktemp)
bench() { # label batch extra-args...
  local label=$1 batch=$2; shift 2
  local smi_pid=""
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$peak_file" 2>/dev/null &
    smi_pid=$!
  fi
  say "bench $label (batch $batch)"
  timeout 150 "$EXPLORA" bench --policy explora --batch "$batch" --iters "$ITERS" --warmup 2 \
      --set backend.name=cuda "$@" 2>&1 | grep -E "images/s|bench-result|error|rror" | head -8
  local brc=${PIPESTATUS[0]}
  if [ -n "$smi_pid" ]; then
    kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null
    local peak; peak=$(sort -n "$peak_file" | tail -1)
    say "bench $label: peak device memory ${peak:-?} MiB (nvidia-smi, whole GPU)"
  fi
  [ "$brc" -eq 0 ] || say "bench $label: exit status $brc"
}
if "$EXPLORA" 2>&1 | grep -q "bench"; then
  bench "ViT-B/14 fp32" "$BATCH_B" --model vitb14
  bench "ViT-B/14 tf32" "$BATCH_B" --model vitb14 --set backend.tf32=true
  # bench knows vits14|vitb14; ViT-L/14 is the vitb14 model with the preset overridden
  bench "ViT-L/14 fp32" "$BATCH_L" --model vitb14 --set backbone.preset=dinov2_vitl14
  bench "ViT-L/14 tf32" "$BATCH_L" --model vitb14 --set backbone.preset=dinov2_vitl14 --set backend.tf32=true
else
  say "explora bench is not available: benchmark skipped"
fi
rm -f "$peak_file"

say "done (status $status)"
exit $status
