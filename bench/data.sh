#!/usr/bin/env bash
# bench/data.sh — the data-pipeline benchmark: `explora bench data` beside Pillow + torchvision
# (bench/bench_data_torch.py) on the same JPEG files, alternating process by process (docs/PERFORMANCE.md,
# "Data pipeline").
#
# The JPEGs are cut from real photographs (bench/make_data_images.py): the two photos of Debian's
# python3-sklearn. When that package is not installed, its .deb is fetched into the cache with
# `apt-get download` and unpacked with `dpkg-deb -x` (nothing is installed). Both sides run on one thread
# (OMP_NUM_THREADS=1, torch.set_num_threads(1)); explora also runs its loader with WORKERS threads.
#
# Environment: EXPLORA (binary, default build-bench/bin/explora), PYTHON (default /usr/bin/python3),
# CACHE (default ~/.cache/explora/bench-data), COUNT (JPEGs, 64), ITERS (timed passes, 3), WARMUP (1),
# ROUNDS (explora/Pillow pairs, 3), WORKERS (2), OUT (results file, default bench/results-data-<date>.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXPLORA="${EXPLORA:-$ROOT/build-bench/bin/explora}"
PYTHON="${PYTHON:-/usr/bin/python3}"
CACHE="${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/explora/bench-data}"
COUNT="${COUNT:-64}" ITERS="${ITERS:-3}" WARMUP="${WARMUP:-1}" ROUNDS="${ROUNDS:-3}" WORKERS="${WORKERS:-2}"
OUT="${OUT:-$ROOT/bench/results-data-$(date +%Y%m%d-%H%M%S).txt}"

[ -x "$EXPLORA" ] || { echo "data.sh: $EXPLORA not found; build first (see docs/PERFORMANCE.md)" >&2; exit 2; }
"$PYTHON" -c 'import torch, torchvision, PIL' 2>/dev/null ||
  { echo "data.sh: $PYTHON lacks torch/torchvision/PIL: apt-get install python3-torch python3-torchvision python3-pil" >&2; exit 2; }

# the source photographs
photos=/usr/lib/python3/dist-packages/sklearn/datasets/images
if [ ! -r "$photos/china.jpg" ]; then
  photos="$CACHE/sklearn/usr/lib/python3/dist-packages/sklearn/datasets/images"
  if [ ! -r "$photos/china.jpg" ]; then
    mkdir -p "$CACHE/deb"
    (cd "$CACHE/deb" && apt-get download python3-sklearn >/dev/null) ||
      { echo "data.sh: could not fetch python3-sklearn with apt-get download" >&2; exit 2; }
    dpkg-deb -x "$(ls "$CACHE"/deb/python3-sklearn_*.deb | head -n1)" "$CACHE/sklearn"
  fi
fi
images="$CACHE/jpeg-$COUNT"
[ -r "$images/list.txt" ] || "$PYTHON" "$ROOT/bench/make_data_images.py" "$images" "$photos/china.jpg" "$photos/flower.jpg" --count "$COUNT"

{
  echo "# $(date -u +%FT%TZ) $(uname -n); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-); nproc $(nproc)"
  echo "# $COUNT JPEGs in $images; iters $ITERS, warmup $WARMUP, rounds $ROUNDS, workers $WORKERS"
} | tee "$OUT"

for r in $(seq 1 "$ROUNDS"); do
  order=(explora torch)
  [ $((r % 2)) -eq 0 ] && order=(torch explora)
  for impl in "${order[@]}"; do
    if [ "$impl" = explora ]; then
      OMP_NUM_THREADS=1 "$EXPLORA" bench data --list "$images/list.txt" --iters "$ITERS" --warmup "$WARMUP" --workers "$WORKERS"
    else
      OMP_NUM_THREADS=1 "$PYTHON" "$ROOT/bench/bench_data_torch.py" --list "$images/list.txt" --iters "$ITERS" --warmup "$WARMUP"
    fi
  done
done | tee -a "$OUT" | grep --line-buffered -v '^bench-data-result' || true

# medians per implementation and the ratios
"$PYTHON" - "$OUT" <<'EOF' | tee -a "$OUT"
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("bench-data-result"):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    for k in ("decode_ips", "multicrop_ips", "multicrop_workers_ips"):
        if k in kv:
            rows.setdefault((kv["impl"], k), []).append(float(kv[k]))
med = {k: statistics.median(v) for k, v in rows.items()}
print("# medians over rounds (images/s, one thread unless noted)")
for k in ("decode_ips", "multicrop_ips"):
    e, t = med.get(("explora", k)), med.get(("torch", k))
    if e and t:
        print("summary %-14s explora %8.1f  pillow+torchvision %8.1f  ratio %.2fx" % (k, e, t, e / t))
w = med.get(("explora", "multicrop_workers_ips"))
if w:
    print("summary %-14s explora %8.1f with the loader's worker threads" % ("multicrop_mt", w))
EOF
echo "data.sh: results in $OUT"
