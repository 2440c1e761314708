#!/usr/bin/env bash
# scripts/test.sh — the whole test suite, from a fresh Debian 12 machine:
# installs what is missing, builds Release and Debug (ASan + UBSan), and runs
# every test under both. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
for type in Release Debug; do
  echo "=== $type build"
  bash scripts/build.sh "$type"
  dir=build; [ "$type" = Debug ] && dir=build-debug
  echo "=== $type tests"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
done
echo "=== all tests passed (Release and Debug/ASan+UBSan)"
