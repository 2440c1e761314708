#!/usr/bin/env bash
# scripts/demo-seeds.sh [SEEDS] — the demo's comparison repeated over seeds (default "0 1 2"): runs
# `explora demo` with [run] seed = S for each (every step: extended pre-training, linear probe, fine-tuning),
# keeps each seed's compare.csv in runs/demo-seeds/seed-S.csv, and writes runs/demo-seeds/results.md with the
# per-seed linear-probe and fine-tuning top-1 of each model and their means. About 8 minutes per seed on
# 2 cores. Uses build/bin/explora (bash scripts/build.sh first); runs/demo holds the last seed's run.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${1:-0 1 2}"
E="$PWD/build/bin/explora"
R="$PWD/runs/demo-seeds"
[ -x "$E" ] || { echo "demo-seeds: $E not found; run: bash scripts/build.sh" >&2; exit 2; }
mkdir -p "$R"
for s in $SEEDS; do
  echo "demo-seeds: seed $s (log in $R/seed-$s.log)"
  rm -rf runs/demo
  "$E" demo --set "run.seed=$s" > "$R/seed-$s.log" 2>&1 || { echo "demo-seeds: seed $s failed:" >&2; tail -5 "$R/seed-$s.log" >&2; exit 1; }
  cp runs/demo/compare.csv "$R/seed-$s.csv"
done
# columns of compare.csv: run,stack,trainable_params,pretrain_seconds,peak_rss_mib,final_loss,linprobe_top1,finetune_top1,finetune_seconds
awk -F, -v seeds="$SEEDS" '
  FNR == 1 { next }
  { n = $1; if (!(n in seen)) { order[++k] = n; seen[n] = 1 }
    lp[n] = lp[n] sprintf(" %s", $(NF-2)); ft[n] = ft[n] sprintf(" %s", $(NF-1));
    slp[n] += $(NF-2); sft[n] += $(NF-1); cnt[n]++ }
  END {
    printf "| model | linear probe top-1 per seed (%s) | mean | fine-tuning top-1 per seed | mean |\n", seeds
    printf "|---|---|---:|---|---:|\n"
    for (i = 1; i <= k; i++) { n = order[i]
      printf "| %s |%s | %.2f |%s | %.2f |\n", n, lp[n], slp[n] / cnt[n], ft[n], sft[n] / cnt[n] }
  }' $(for s in $SEEDS; do echo "$R/seed-$s.csv"; done) > "$R/results.md"
cat "$R/results.md"
