#!/usr/bin/env bash
# scripts/demo.sh — the main job, from a fresh Debian 12 machine: installs
# what is missing, builds explora (Release), and runs the most end-to-end
# path that exists so far: plugin discovery, whole-config validation, the CPU
# backend, and real Fashion-MNIST images decoded by the idx dataset plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh Release
x=./build/bin/explora
echo; echo "=== explora plugins"; $x plugins
echo; echo "=== explora check configs/demo/quickstart.ini"; $x check configs/demo/quickstart.ini
echo; echo "=== explora data configs/demo/quickstart.ini --show 5"; $x data configs/demo/quickstart.ini --show 5
