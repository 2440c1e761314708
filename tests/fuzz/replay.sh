#!/usr/bin/env bash
# tests/fuzz/replay.sh — run each replay driver over its corpus folder:
#   replay.sh <driver> <corpus dir> [<driver> <corpus dir> ...]
# Fails if any driver fails (crash, sanitizer report, unreadable corpus).
set -euo pipefail
status=0
while [ $# -ge 2 ]; do
  echo "== $(basename "$1") $2"
  if ! "$1" "$2"; then
    echo "FAILED: $1 $2"
    status=1
  fi
  shift 2
done
exit $status
