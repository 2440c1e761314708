#!/usr/bin/env bash
# tests/out_of_tree/run_test.sh BUILD_DIR SOURCE_DIR [SANITIZE]
#
# Installs explora from BUILD_DIR into a scratch prefix, builds the example
# plugin in a separate CMake project against that install (and a C file
# against the pkg-config file), then loads the plugin from an INI with the
# installed explora CLI — no rebuild of explora involved.
set -euo pipefail
build=$1
src=$2
# An ASan/UBSan build of explora needs the sanitizer runtime first in every
# program that loads it, so build the out-of-tree pieces the same way.
san_flags=""
if [ "${3:-OFF}" = "ON" ]; then san_flags="-fsanitize=address,undefined"; fi
work=$build/tests/out_of_tree_work
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

echo "== install explora into $prefix"
cmake --install "$build" --prefix "$prefix" > "$work/install.log"

echo "== configure + build the example plugin against the installed package"
cmake -S "$src/tests/out_of_tree/example_dataset" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS="$san_flags" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"
plugin=$work/build/plugins/explora-dataset-example-checkers.so
test -f "$plugin" || { echo "plugin was not built: $plugin"; exit 1; }
# only the entry symbol is exported
exported=$(nm -D --defined-only "$plugin" | awk '$2 == "T" {print $3}')
[ "$exported" = "explora_plugin_entry" ] || { echo "unexpected exports: $exported"; exit 1; }

echo "== build the example PEFT strategy and SSL objective, each its own project"
for ex in example_peft example_objective; do
  cmake -S "$src/tests/out_of_tree/$ex" -B "$work/$ex" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS="$san_flags" > "$work/$ex.configure.log"
  cmake --build "$work/$ex" > "$work/$ex.build.log"
done

echo "== pkg-config"
libdir=$(ls -d "$prefix"/lib*/pkgconfig | head -n1)
cflags=$(PKG_CONFIG_PATH=$libdir pkg-config --cflags explora)
libs=$(PKG_CONFIG_PATH=$libdir pkg-config --libs explora)
printf '#include <explora/plugin.h>\nint main(void){ return ex_plugin_kind_name(EX_PLUGIN_DATASET)[0] == %sd%s ? 0 : 1; }\n' "'" "'" > "$work/pc.c"
cc $san_flags $cflags "$work/pc.c" -o "$work/pc" $libs -Wl,-rpath,"$(dirname "$libdir")"
"$work/pc"

echo "== load it from an INI with the installed CLI"
out=$("$prefix/bin/explora" data "$src/tests/out_of_tree/example_dataset/example.ini" \
        --plugin-path "$work/build/plugins" --show 3)
echo "$out"
grep -q "dataset example-checkers" <<<"$out"
grep -q "6 samples, 3 classes" <<<"$out"
# sample 2 has label 2: 3-pixel squares on an 8x8 board, 30 of 64 pixels set
grep -q "#2 checkers-2: 8x8x1, label 2, mean 0.4688" <<<"$out"
keys=$("$prefix/bin/explora" plugins --plugin-path "$work/build/plugins" --keys example-checkers)
grep -q "size" <<<"$keys"
# the installed CLI also finds the installed CPU backend
"$prefix/bin/explora" plugins | grep -q "backend    cpu"
# a bad value in the INI is reported with file, key and value
if "$prefix/bin/explora" data "$src/tests/out_of_tree/example_dataset/example.ini" \
     --plugin-path "$work/build/plugins" --set data.size=1 2> "$work/err.txt"; then
  echo "size=1 should have been rejected"; exit 1
fi
grep -q "size" "$work/err.txt"
echo "== train with the out-of-tree dataset, PEFT strategy and objective (installed explora, vit, cpu)"
log=$("$prefix/bin/explora" pretrain "$src/tests/out_of_tree/pretrain.ini" --set run.out="$work/run" \
        --plugin-path "$work/build/plugins" --plugin-path "$work/example_peft/plugins" \
        --plugin-path "$work/example_objective/plugins")
echo "$log" | grep -E "^step (1|60)/"
grep -q "example-rescale" <<<"$log"
# the contrastive loss over the last 5 steps is below the first 5 steps'
first=$(awk -F'"nt_xent": ' 'NR<=5 {split($2,a,","); s+=a[1]} END {print s/5}' "$work/run/metrics.jsonl")
last=$(awk -F'"nt_xent": ' '{split($2,a,","); v[NR]=a[1]} END {for (i=NR-4;i<=NR;i++) s+=v[i]; print s/5}' "$work/run/metrics.jsonl")
echo "nt_xent: first 5 steps $first, last 5 steps $last"
awk -v f="$first" -v l="$last" 'BEGIN {exit !(l < f)}'
# only the strategy's scales and the norms train
grep -q '"trainable_params": ' "$work/run/summary.json"
echo "out-of-tree plugin test passed"
