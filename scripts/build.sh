#!/usr/bin/env bash
# scripts/build.sh [Release|Debug] — configure and build into build/ (Release)
# or build-debug/ (Debug: -O0 -g with AddressSanitizer + UBSan). Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
type=${1:-Release}
case "$type" in
  Release) dir=build ;;
  Debug) dir=build-debug ;;
  *) echo "usage: scripts/build.sh [Release|Debug]" >&2; exit 2 ;;
esac
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DEXPLORA_WERROR=ON > "$dir.configure.log" 2>&1 \
  || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j "$jobs"
