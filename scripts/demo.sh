#!/usr/bin/env bash
# scripts/demo.sh — the main job, from a fresh Debian 12 machine: installs
# what is missing, builds explora (Release) and runs `explora demo`, ExPLoRA
# in miniature on real images (Fashion-MNIST from Debian; the steps live in
# core/cli/cli_demo.c, the configs in configs/demo, docs/DOMAIN_SHIFT.md):
#
#   1. check: the ExPLoRA D-[L]-r64 plan for DINOv2 ViT-B/14 (trainable counts, memory)
#   2. the shipped source model (a small DINOv2 ViT that explora pre-trained on
#      Fashion-MNIST as stored) probed and LoRA-fine-tuned on the target domain:
#      the same images re-captured by a simulated low-light camera
#   3. extended DINOv2 pre-training of that model on the target images with three
#      PEFT policies at the same budget: ExPLoRA (last block + LoRA q,v + norms +
#      cls), LoRA only, unfreeze only; each exported, probed and fine-tuned
#   4. `compare` (runs/demo/compare.md), the ExPLoRA run's curves
#      (runs/demo/explora/*.png), `analyze` of the source and ExPLoRA models
#
# About 8 minutes on 2 cores after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh Release
./build/bin/explora demo configs/demo
