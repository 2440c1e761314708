#!/usr/bin/env bash
# tests/gpu_emu/train_parity.sh — whole training steps of the GPU backend on the GPU emulator against the
# CPU backend: the demo's ExPLoRA DINOv2 run (configs/demo/explora.ini: D-[L] policy, DINO + iBOT + KoLeo,
# multi-crop) for 2 steps at batch 4, the same seed on every run, no warm-up (so step 1's update moves the
# weights). Each step's loss and gradient norm are compared: the norm checks the backward pass, step 2's
# loss the update. This is scripts/gpu_check.sh's end-to-end step, run where there is no GPU: the slots
# that the parity suite checks one by one, composed as a real run composes them.
#
#   cpu          the reference (fp32)
#   cuda         gpu_emu_cuda as configured by default: cuBLAS GEMMs, the cuBLASLt bias epilogue,
#                the GEMM-based attention; every step's loss and gradient norm within 1e-4 (relative)
#                of the cpu's
#   hip          gpu_emu_wave64 (the hip build: own GEMM kernel, 64-lane wavefronts): within 1e-4
#   cuda-bf16    frozen weights and the blocks' activations in bf16, bf16 GEMMs and the bf16 tensor-core
#                attention ([optim] frozen_dtype / activation_dtype, [backend] gemm_math, attention):
#                within 5e-3 of the fp32 cpu (bf16 rounding of weights, activations and every GEMM operand,
#                gradients included: 1.6e-3 measured on the gradient norm)
#   cuda-bf16-recompute   that with [backbone] recompute = true: a checkpoint identical byte for byte
#                to cuda-bf16's (the rebuilt activations are the same bits)
#   cuda-bf16-racecheck   cuda-bf16 on gpu_emu_cuda_racecheck (where it is built): no two blocks of a
#                launch touch a byte one of them writes (race_check.cpp), and the same checkpoint
#   cuda-fp16    frozen weights in bf16, fp16 GEMMs with dynamic loss scaling and the fp16 tensor-core
#                attention: within 5e-3 of the fp32 cpu (7e-4 measured)
#   mae-cuda     the MAE example (configs/examples/mae_fashion_mnist.ini: masking, the decoder, the
#                pixel loss) on gpu_emu_cuda against the same on the cpu (mae-cpu): within 1e-4
#   finetune-cuda   the demo's LoRA fine-tuning (configs/demo/finetune.ini: classify objective) for 2
#                steps at batch 8, then its evaluation on 32 images, against finetune-cpu: within 1e-4,
#                and the same eval.json
#
# usage: train_parity.sh EXPLORA_BIN EMU_PLUGIN_DIR SOURCE_DIR WORK_DIR
# Exits 77 (skipped) when Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed.
set -u
bin=$1 plugins=$2 src=$3 work=$4
fmnist=/usr/share/datasets/fashion-mnist
if [ ! -r "$fmnist/t10k-images-idx3-ubyte.gz" ]; then
  echo "train_parity: Fashion-MNIST not installed (package dataset-fashion-mnist); skipping"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" || exit 1
status=0

# run NAME VERB CONFIG SETTINGS...: 2 steps of `explora VERB CONFIG` (relative to the source tree) into $work/NAME
run() {
  local name=$1 verb=$2 config=$3
  shift 3
  if ! EXPLORA_PLUGIN_PATH="$plugins" "$bin" "$verb" "$src/$config" \
      --set data.images="$fmnist/t10k-images-idx3-ubyte.gz" --set data.labels="$fmnist/t10k-labels-idx1-ubyte.gz" \
      --set optim.steps=2 --set optim.batch=4 --set optim.warmup_steps=0 --set run.log_every=1 \
      --set run.out="$work/$name" "$@" > "$work/$name.log" 2>&1; then
    echo "train_parity: the $name run failed:"
    tail -n 20 "$work/$name.log"
    status=1
    return 1
  fi
  grep -E "^step" "$work/$name.log" | sed "s/^/  $name: /"
}

# losses NAME: the loss and the gradient norm of each step, one value per line
losses() { grep -o '"\(loss\|grad_norm\)": [^,}]*' "$work/$1/metrics.jsonl" | cut -d' ' -f2; }

# compare NAME LIMIT [REF]: every step's loss and gradient norm within LIMIT (relative) of run REF's (cpu)
compare() {
  local name=$1 limit=$2 ref=${3:-cpu}
  [ -f "$work/$name/metrics.jsonl" ] && [ -f "$work/$ref/metrics.jsonl" ] || return
  local n_ref n_got
  n_ref=$(losses "$ref" | wc -l)
  n_got=$(losses "$name" | wc -l)
  if [ "$n_ref" -ne 4 ] || [ "$n_got" -ne 4 ]; then
    echo "train_parity: expected a loss and a gradient norm for each of 2 steps, found $n_ref ($ref) and $n_got ($name) values"
    status=1
    return
  fi
  paste -d' ' <(losses "$ref") <(losses "$name") |
    awk -v name="$name" -v ref="$ref" -v limit="$limit" '{d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1);
      printf "  step %d %-9s  %s %.6g  %s %.6g  relative difference %.2e (limit %g)\n", int((NR + 1) / 2),
             NR % 2 ? "loss" : "|grad|", ref, $1, name, $2, r, limit;
      if (!(r <= limit)) bad = 1} END {exit bad}' ||
    { echo "train_parity: $name's losses or gradient norms differ from $ref's by more than $limit"; status=1; }
}

demo=configs/demo/explora.ini mae=configs/examples/mae_fashion_mnist.ini finetune=configs/demo/finetune.ini

# `explora check` names the device the backend took: the second of two emulated GPUs here
if out=$(EXPLORA_GPU_EMU_DEVICES=2 EXPLORA_PLUGIN_PATH="$plugins" "$bin" check "$src/$demo" \
           --set data.images="$fmnist/t10k-images-idx3-ubyte.gz" --set data.labels="$fmnist/t10k-labels-idx1-ubyte.gz" \
           --set backend.name=gpu_emu_cuda --set backend.device=1 2>&1) &&
   grep -q "^device: pci 0000:02:00.0$" <<<"$out"; then
  echo "  explora check on emulated GPU 1 of 2: $(grep '^device:' <<<"$out")"
else
  echo "train_parity: explora check did not name emulated GPU 1 of 2 (pci 0000:02:00.0):"
  echo "$out"
  status=1
fi
bf16="--set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16 --set backend.gemm_math=bf16 --set backend.attention=fused_bf16"
fp16="--set optim.frozen_dtype=bf16 --set backend.gemm_math=fp16 --set optim.loss_scale=dynamic --set backend.attention=fused_fp16"
ft="--set data.limit=64 --set eval_data.limit=32 --set optim.batch=8"
run cpu pretrain $demo --set backend.name=cpu || exit 1
run cuda pretrain $demo --set backend.name=gpu_emu_cuda
run hip pretrain $demo --set backend.name=gpu_emu_wave64
# shellcheck disable=SC2086 # word splitting of the settings is intended
run cuda-bf16 pretrain $demo --set backend.name=gpu_emu_cuda $bf16
# shellcheck disable=SC2086
run cuda-bf16-recompute pretrain $demo --set backend.name=gpu_emu_cuda $bf16 --set backbone.recompute=true
# shellcheck disable=SC2086
run cuda-fp16 pretrain $demo --set backend.name=gpu_emu_cuda $fp16
if [ -e "$plugins/explora-backend-gpu_emu_cuda_racecheck.so" ]; then
  # shellcheck disable=SC2086
  run cuda-bf16-racecheck pretrain $demo --set backend.name=gpu_emu_cuda_racecheck $bf16
fi
run mae-cpu pretrain $mae --set backend.name=cpu
run mae-cuda pretrain $mae --set backend.name=gpu_emu_cuda
# shellcheck disable=SC2086
run finetune-cpu finetune $finetune --set backend.name=cpu $ft
# shellcheck disable=SC2086
run finetune-cuda finetune $finetune --set backend.name=gpu_emu_cuda $ft

compare cuda 1e-4
compare hip 1e-4
compare cuda-bf16 5e-3
compare cuda-fp16 5e-3
compare mae-cuda 1e-4 mae-cpu
compare finetune-cuda 1e-4 finetune-cpu
# same A B SAID_WHEN_SAME SAID_WHEN_DIFFERENT: files $work/A and $work/B must be equal byte for byte (when both exist)
same() {
  local a=$work/$1 b=$work/$2
  [ -f "$a" ] && [ -f "$b" ] || return
  if cmp -s "$a" "$b"; then
    echo "  $3"
  else
    echo "train_parity: $4"
    status=1
  fi
}
same cuda-bf16/checkpoint.safetensors cuda-bf16-recompute/checkpoint.safetensors \
  "cuda-bf16 with and without recompute: identical checkpoints" "recompute changed the cuda-bf16 run's checkpoint"
same cuda-bf16/checkpoint.safetensors cuda-bf16-racecheck/checkpoint.safetensors \
  "cuda-bf16 under the race check: no race between blocks, and the same checkpoint" \
  "the race-checking build wrote a different checkpoint from cuda-bf16's"
same finetune-cpu/eval.json finetune-cuda/eval.json \
  "finetune evaluation: the same top-1, top-5 and macro-F1 on both ($(cut -c1-60 "$work/finetune-cpu/eval.json" 2>/dev/null)...)" \
  "the finetune evaluations differ: $(cat "$work/finetune-cpu/eval.json" "$work/finetune-cuda/eval.json" 2>/dev/null)"
exit $status
