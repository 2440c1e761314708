#!/usr/bin/env bash
# scripts/demo.sh — the main job, from a fresh Debian 12 machine: installs
# what is missing, builds explora (Release) and runs `explora demo`, the
# ExPLoRA pipeline in miniature on real images (Fashion-MNIST from Debian;
# the steps live in core/cli/cli_demo.c):
#
#   1. check: the ExPLoRA D-[L]-r64 plan for DINOv2 ViT-B/14 (trainable counts, memory)
#   2. a small ViT pre-trained from scratch with MAE (the source model), exported
#   3. extended MAE pre-training of that source with three PEFT policies at the
#      same budget: ExPLoRA (last block + LoRA q,v + norms + cls), LoRA only,
#      unfreeze only
#   4. the DINOv2 linear-probe protocol on each (and on the source), then `compare`;
#      `plot` draws the ExPLoRA run's curves (runs/demo/explora/*.png)
#   5. `analyze` of the source and ExPLoRA models (per-block spectra, probes, attention maps)
#
# Source and target are the same domain here: this runs the whole pipeline
# end to end; the domain-shift demo with a shipped source model is still to come.
# Runs in about two minutes on 2 cores; results in runs/demo/compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh Release
./build/bin/explora demo configs/demo
