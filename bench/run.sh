#!/usr/bin/env bash
# bench/run.sh — run `explora bench` and bench/bench_torch.py on the same models and policies, alternating
# process by process, under two settings, and print the ratios (docs/PERFORMANCE.md).
#
#   installed  the environment as found (whatever OPENBLAS_* / GLIBC_TUNABLES it already has)
#   best       + OPENBLAS_CORETYPE=SkylakeX (only when /proc/cpuinfo lists avx512f)
#              + GLIBC_TUNABLES=glibc.malloc.trim_threshold=68719476736:glibc.malloc.mmap_threshold=33554432
#                (never give freed heap back to the kernel; serve blocks up to 32 MiB, glibc's maximum
#                mmap threshold on 64-bit, from the heap instead of fresh mmap/munmap pairs)
#
# explora runs under the same setting as the PyTorch it is compared with. Each (model, policy, setting)
# runs one explora process and one PyTorch process (order swapped every other pair), each reporting the
# median of ITERS timed steps after WARMUP untimed ones. The settings apply to these child processes only.
#
# Environment: EXPLORA (binary, default build-bench/bin/explora), PYTHON (default /usr/bin/python3),
# MODELS ("vits14 vitb14"), POLICIES ("explora lora full infer"), BATCH (8), ITERS (3), WARMUP (1),
# OUT (results file, default bench/results-<date>.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXPLORA="${EXPLORA:-$ROOT/build-bench/bin/explora}"
PYTHON="${PYTHON:-/usr/bin/python3}"
MODELS="${MODELS:-vits14 vitb14}"
POLICIES="${POLICIES:-explora lora full infer}"
BATCH="${BATCH:-8}" ITERS="${ITERS:-3}" WARMUP="${WARMUP:-1}"
OUT="${OUT:-$ROOT/bench/results-$(date +%Y%m%d-%H%M%S).txt}"

BEST=(GLIBC_TUNABLES=glibc.malloc.trim_threshold=68719476736:glibc.malloc.mmap_threshold=33554432)
if grep -qw avx512f /proc/cpuinfo; then BEST+=(OPENBLAS_CORETYPE=SkylakeX); fi

[ -x "$EXPLORA" ] || { echo "run.sh: $EXPLORA not found; build first (see docs/PERFORMANCE.md)" >&2; exit 2; }
{
  echo "# $(date -u +%FT%TZ) $(uname -n); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-); nproc $(nproc)"
  echo "# installed env: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-<unset>} GLIBC_TUNABLES=${GLIBC_TUNABLES:-<unset>}"
  echo "# best env: ${BEST[*]}"
  echo "# batch $BATCH, iters $ITERS, warmup $WARMUP"
} | tee "$OUT"

run_one() { # setting impl model policy
  local setting=$1 impl=$2 model=$3 policy=$4 envs=()
  [ "$setting" = best ] && envs=("${BEST[@]}")
  local args=(--model "$model" --policy "$policy" --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP")
  if [ "$impl" = explora ]; then
    env "${envs[@]}" "$EXPLORA" bench "${args[@]}"
  else
    env "${envs[@]}" "$PYTHON" "$ROOT/bench/bench_torch.py" "${args[@]}" --threads 2
  fi | grep '^bench-result' | sed "s/^bench-result /bench-result setting=$setting /" | tee -a "$OUT"
}

pair=0
for model in $MODELS; do
  for policy in $POLICIES; do
    for setting in installed best; do
      if [ $((pair % 2)) -eq 0 ]; then order="explora torch"; else order="torch explora"; fi
      for impl in $order; do run_one "$setting" "$impl" "$model" "$policy"; done
      pair=$((pair + 1))
    done
  done
done

echo
awk '
/^bench-result/ {
  delete kv
  for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
  k = kv["setting"] SUBSEP kv["model"] SUBSEP kv["policy"]
  if (!(k in seen)) { seen[k] = 1; order[n++] = k }
  ips[k, kv["impl"]] = kv["img_s"]; rss[k, kv["impl"]] = kv["rss_mib"]
  if (kv["impl"] == "explora") frac[k] = kv["peak_frac"]
}
END {
  printf "| setting | model | policy | explora img/s | torch img/s | ratio | explora RSS MiB | torch RSS MiB | RSS ratio | explora GEMM-peak fraction |\n"
  printf "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
  for (i = 0; i < n; i++) {
    k = order[i]; split(k, f, SUBSEP)
    e = ips[k, "explora"]; t = ips[k, "torch"]; er = rss[k, "explora"]; tr = rss[k, "torch"]
    printf "| %s | %s | %s | %.2f | %.2f | %.2fx | %.0f | %.0f | %.2f | %.0f%% |\n", f[1], f[2], f[3], e, t,
           (t > 0 ? e / t : 0), er, tr, (tr > 0 ? er / tr : 0), 100 * frac[k]
  }
}' "$OUT" | tee -a "$OUT"
echo "results: $OUT"
