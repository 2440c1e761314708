#!/usr/bin/env bash
# scripts/experiment-sensor-shift.sh [SEEDS] — the sensor-shift experiment of docs/DOMAIN_SHIFT.md, end to end:
# the source model (DINOv2 from scratch on Fashion-MNIST; skipped when runs/sensor_shift/source has its
# checkpoint, about 40 minutes on 2 cores), its linear probe on the source and on the target domain, then for
# each seed (default "0 1 2") extended pre-training with ExPLoRA, LoRA only and unfreeze only on the target
# images (300 steps each) and the linear probe of each on the target. Prints one line per run and writes
# runs/sensor_shift/results.txt. Uses build/bin/explora (bash scripts/build.sh first).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-0 1 2}"
E="$PWD/build/bin/explora"
C=configs/experiments/sensor_shift
R="$PWD/runs/sensor_shift"
[ -x "$E" ] || { echo "experiment: $E not found; run: bash scripts/build.sh" >&2; exit 2; }
mkdir -p "$R"
out="$R/results.txt"
: > "$out"
probe() { # name config [args...]
  local name=$1 cfg=$2; shift 2
  local line
  line=$("$E" linprobe "$cfg" "$@" 2>&1 | grep "linear probe:" | sed 's/linear probe: //')
  echo "$name: $line" | tee -a "$out"
}
if [ ! -f "$R/source/checkpoint.safetensors" ]; then
  "$E" pretrain "$C/source.ini" > "$R/source.log"
fi
probe "source on the source domain" "$C/source.ini" --set "backbone.weights=$R/source/checkpoint.safetensors" \
  --set "run.out=$R/source/probe"
probe "source on the target domain" "$C/target.ini"
for s in $SEEDS; do
  for v in explora lora_only unfreeze_only; do
    "$E" pretrain "$C/$v.ini" --set "run.seed=$s" --set "run.out=$R/${v}_s$s" > "$R/${v}_s$s.log"
    probe "$v seed $s on the target domain" "$C/$v.ini" --checkpoint "$R/${v}_s$s/checkpoint.safetensors" \
      --set "run.out=$R/${v}_s$s/probe"
  done
done
echo "experiment: results in $out"
