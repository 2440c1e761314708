#!/usr/bin/env bash
# scripts/build-source-model.sh [OUT] — rebuild the demo's source model from scratch: a small DINOv2 ViT
# pre-trained by explora on Fashion-MNIST as stored (docs/DOMAIN_SHIFT.md), in two runs:
#   1. configs/experiments/sensor_shift/source.ini: 4000 steps from random weights;
#   2. source_continue.ini: 4000 more steps from run 1's EMA teacher and heads, with a fresh warm-up and
#      cosine at half the peak lr.
# Then `explora slim` keeps run 2's teacher and heads (no optimiser state) in OUT (default
# runs/sensor_shift/source-fashion-mnist.safetensors; the demo reads configs/demo/source-fashion-mnist.safetensors),
# and the linear probe of the demo's protocol measures it on its own domain. About 70-80 minutes on 2 cores.
# Uses build/bin/explora (bash scripts/build.sh first). A run that already has its checkpoint is not redone.
set -euo pipefail
cd "$(dirname "$0")/.."
E="$PWD/build/bin/explora"
C=configs/experiments/sensor_shift
R="$PWD/runs/sensor_shift"
OUT="${1:-$R/source-fashion-mnist.safetensors}"
[ -x "$E" ] || { echo "build-source-model: $E not found; run: bash scripts/build.sh" >&2; exit 2; }
mkdir -p "$R"
for run in source source_continue; do
  if [ ! -f "$R/$run/summary.json" ]; then
    echo "build-source-model: $run ($C/$run.ini), log in $R/$run.log"
    "$E" pretrain "$C/$run.ini" > "$R/$run.log"
  fi
done
"$E" slim "$R/source_continue/checkpoint.safetensors" --out "$OUT"
"$E" linprobe "$C/source.ini" --set "backbone.weights=$OUT" --set "run.out=$R/source_probe" | grep "linear probe:"
echo "build-source-model: $OUT; copy it to configs/demo/source-fashion-mnist.safetensors to make it the demo's"
