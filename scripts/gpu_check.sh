#!/usr/bin/env bash
# scripts/gpu_check.sh — the one prepared GPU check (target: < 8 minutes on one H200).
#
#   scripts/gpu_check.sh [BUILD_DIR]        (default build-gpu)
#
# Environment:
#   EXPLORA_PREBUILT=1   use the binaries already in BUILD_DIR (built elsewhere with
#                        -DEXPLORA_CUDA=ON); otherwise configure and build here
#   CUDA_ARCHS           CMAKE_CUDA_ARCHITECTURES for the build (default 90)
#   FASHION_MNIST_DIR    folder with Fashion-MNIST's t10k-images/labels-idx*-ubyte.gz
#                        (default /usr/share/datasets/fashion-mnist; Debian's
#                        dataset-fashion-mnist) for steps 3 and 5
#   GPU_CHECK_OUT        folder for the logs and metrics (default BUILD_DIR/gpu-check)
#   GPU_CHECK_BUDGET_S   seconds from the start after which no end-to-end run or benchmark starts
#                        (default 540; one with under 30 s left is skipped and named at the end;
#                        the build and parity steps keep their own timeouts)
#   GPU_CHECK_FULL=1     also the DINOv2 step configurations already measured at the first H200
#                        runs (ViT-B/14, bf16 GEMMs alone, batch 64, ...)
#
# Steps (each prints "gpu-check:" lines and is bounded by a timeout):
# 1. build with the CUDA backend required (skipped with EXPLORA_PREBUILT=1);
# 2. the CPU-vs-CUDA parity suite (tests/test_backend_parity.c), forward and gradient ops;
#    a skip counts as a failure here; on a failure the forward part runs again under
#    compute-sanitizer's memcheck when that tool is on the PATH; then the suite again with
#    `gemm = own` (every GEMM through the backend's own kernel, the HIP build's GEMM), with
#    `attention = fused`, with `attention = fused_bf16` and `fused_fp16` (tensor cores; under
#    compute-sanitizer too if they fail) and with `attention = cudnn` (cuDNN's fused attention);
#    before that, tests/cuda_dnn/test_cuda_dnn has cuDNN plan every attention graph for ViT shapes;
# 3. end to end: the demo's ExPLoRA DINOv2 run (configs/demo/explora.ini) for 6 steps on
#    the cpu and on the cuda backend from the same seed, loss per step side by side; the
#    cuda run twice (its checkpoints must be byte-identical: run-to-run determinism); and
#    cuda with frozen weights in bf16 and bf16 GEMMs ([optim] frozen_dtype = bf16), that with
#    the blocks' activations in bf16 too ([optim] activation_dtype = bf16), and that with
#    attention = cudnn, twice (deterministic: identical checkpoints);
# 4. the DINOv2 training-step benchmark (configs/bench/dinov2_step.ini: DINO + iBOT +
#    KoLeo, 2 global 224 px + 8 local 98 px crops, D-[L]-r64) for ViT-L/14 at batch 32: bf16 with
#    frozen weights and activations in bf16, that
#    with attention = fused_bf16 and with attention = cudnn (also with the ViT-L recipe's Sinkhorn-Knopp
#    teacher targets), and the 16 GB configuration (recompute,
#    fused attention, and recompute with cuDNN attention, of all blocks and of the first 17);
#    the cuDNN configuration is also profiled (`pretrain --profile-step 4`: every backend call
#    timed, per op class and slowest slots);
#    GPU_CHECK_FULL=1 adds the first H200 runs' tf32 baseline, ViT-B/14, batch 64 and the other
#    earlier configurations: images/s
#    (median over the steps after the first two; bench/dinov2_step_flops.py turns it into
#    model FLOP/s and MFU) and the peak
#    device memory (nvidia-smi's used memory of the whole GPU, sampled every 100 ms).
# 5. the backbone step benchmark (`explora bench`: synthetic loss on the final tokens,
#    ExPLoRA D-[L]-r64) for ViT-B/14 and ViT-L/14 at 224 px, with [backend] gemm_math
#    fp32, tf32 and bf16, then with frozen weights and activations in bf16, then with
#    attention = fused_bf16 and with attention = cudnn;
#    The same step in PyTorch on the same GPU (bench/bench_torch.py --device cuda: fp32, tf32,
#    bf16 autocast, and bf16 with fused scaled_dot_product_attention) when python3 has CUDA torch;
#
# The exit status is non-zero if the build, the parity suite or the end-to-end run fails.
set -uo pipefail

cd "$(dirname "$0")/.."
BUILD=${1:-build-gpu}
ARCHS=${CUDA_ARCHS:-90}
JOBS=${JOBS:-$(nproc)}
FMNIST=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
LOGS=${GPU_CHECK_OUT:-$BUILD/gpu-check}
mkdir -p "$LOGS" && LOGS=$(cd "$LOGS" && pwd)
status=0
t0=$(date +%s)
say() { echo "gpu-check: [$(( $(date +%s) - t0 ))s] $*"; }
# A time budget for the script (GPU_CHECK_BUDGET_S, default 540 s), counted from its start: an end-to-end run
# or benchmark that would start with less than 30 s left is skipped and named, and each one's timeout is cut to
# what is left. The build and the parity suites keep their own timeouts.
BUDGET=${GPU_CHECK_BUDGET_S:-540}
skipped=0
left_s() { echo $(( BUDGET - ($(date +%s) - t0) )); }
within_budget() { # label: false (and says so) when less than 30 s are left
  if [ "$(left_s)" -lt 30 ]; then say "skipped $1: the time budget of ${BUDGET}s is spent"; skipped=$((skipped + 1)); return 1; fi
}
cap() { local l; l=$(left_s); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; } # min(arg, time left)

say "nvidia-smi:"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 || say "nvidia-smi not available"

# --- 1. build -----------------------------------------------------------------------------
if [ "${EXPLORA_PREBUILT:-0}" = 1 ]; then
  say "using the prebuilt binaries in $BUILD"
else
  say "configure + build ($BUILD, CMAKE_CUDA_ARCHITECTURES=$ARCHS, -j$JOBS)"
  if ! cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEXPLORA_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" > "$LOGS/configure.log" 2>&1; then
    tail -30 "$LOGS/configure.log"; say "FAIL: configure"; exit 1
  fi
  if ! cmake --build "$BUILD" -j"$JOBS" > "$LOGS/build.log" 2>&1; then
    grep -E "error|Error" "$LOGS/build.log" | head -40; say "FAIL: build"; exit 1
  fi
  say "build ok"
fi
EXPLORA="$BUILD/bin/explora"
"$EXPLORA" version || { say "FAIL: $EXPLORA does not run"; exit 1; }

# cuDNN for attention = cudnn: the plugin dlopens libcudnn.so.9 (its RPATH names the toolkit's library
# folder). Where neither that nor the loader's path has it, borrow a CUDA PyTorch's copy (nvidia-cudnn).
have_cudnn() { ldconfig -p 2> /dev/null | grep -q 'libcudnn\.so\.9' ||
  find "${CUDA_HOME:-/usr/local/cuda}"/lib* ${LD_LIBRARY_PATH//:/ } -maxdepth 1 -name 'libcudnn.so.9' 2> /dev/null | grep -q .; }
if ! have_cudnn; then
  cudnn_dir=$(${PYTHON:-python3} -c "import nvidia.cudnn, os; print(os.path.join(os.path.dirname(nvidia.cudnn.__file__), 'lib'))" 2> /dev/null)
  if [ -n "$cudnn_dir" ] && [ -f "$cudnn_dir/libcudnn.so.9" ]; then
    export LD_LIBRARY_PATH="$cudnn_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "cuDNN from $cudnn_dir"
  else
    say "no libcudnn.so.9 found: the attention = cudnn checks will fail (install cuDNN 9)"
  fi
fi

# --- 2. parity ------------------------------------------------------------------------------
say "parity suite (cuda vs cpu)"
export EXPLORA_TEST_PLUGIN_DIR="$PWD/$BUILD/bin/plugins" OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}
timeout 300 "$BUILD/bin/test_backend_parity" > "$LOGS/parity.log" 2>&1
rc=$?
grep -vE "^\[ +(RUN|OK) +\]" "$LOGS/parity.log" | tail -60
case $rc in
  0) say "parity: PASS" ;;
  77) say "parity: SKIPPED (no usable GPU?) — counted as a failure here"; status=1 ;;
  *) say "parity: FAIL (rc=$rc)"; status=1
     if command -v compute-sanitizer > /dev/null; then
       say "parity forward under compute-sanitizer memcheck"
       timeout 180 compute-sanitizer --tool memcheck --print-limit 10 "$BUILD/bin/test_backend_parity" fwd \
         > "$LOGS/parity-memcheck.log" 2>&1
       grep -E "Invalid|ERROR SUMMARY|at 0x|by thread|Address|FAILED|\[  FAILED" "$LOGS/parity-memcheck.log" | head -40
     fi ;;
esac

if [ -x "$BUILD/bin/test_cuda_dnn" ]; then
  say "cuDNN attention graphs and plans (test_cuda_dnn)"
  timeout 180 "$BUILD/bin/test_cuda_dnn" > "$LOGS/cuda-dnn.log" 2>&1
  rc=$?
  grep -vE "^\[ +(RUN|OK) +\]" "$LOGS/cuda-dnn.log" | tail -40
  case $rc in 0) say "cuDNN plans: PASS" ;; 77) say "cuDNN plans: SKIPPED (no libcudnn.so.9)" ;;
              *) say "cuDNN plans: FAIL (rc=$rc)"; status=1 ;; esac
else
  say "no test_cuda_dnn in $BUILD (built without cuDNN's headers)"
fi

for variant in "gemm = own" "attention = fused" "attention = fused_bf16" "attention = fused_fp16" "attention = cudnn"; do
  say "parity suite again with [backend] $variant"
  log="$LOGS/parity-$(echo "$variant" | tr -c 'a-z0-9\n' '_').log"
  filter=""; [ "${variant#attention}" != "$variant" ] && filter="*attention*" # the attention tests only
  EXPLORA_PARITY_SETTINGS="$variant" EXPLORA_PARITY_FILTER="$filter" timeout 300 "$BUILD/bin/test_backend_parity" \
    > "$log" 2>&1
  rc=$?
  grep -vE "^\[ +(RUN|OK) +\]" "$log" | tail -30
  if [ $rc -eq 0 ]; then say "parity ($variant): PASS"; else say "parity ($variant): FAIL (rc=$rc)"; status=1
    # the tensor-core attention carves its shared memory by hand: look for out-of-bounds accesses
    if [ "${variant#attention = fused_}" != "$variant" ] && command -v compute-sanitizer > /dev/null; then
      say "parity ($variant) under compute-sanitizer memcheck"
      EXPLORA_PARITY_SETTINGS="$variant" EXPLORA_PARITY_FILTER="$filter" timeout 240 \
        compute-sanitizer --tool memcheck --print-limit 10 \
        "$BUILD/bin/test_backend_parity" > "$log.memcheck" 2>&1
      grep -E "Invalid|ERROR SUMMARY|at 0x|by thread|Address|\[  FAILED" "$log.memcheck" | head -40
    fi
  fi
done

# --- 3. end to end --------------------------------------------------------------------------
# compare_losses RUN LIMIT: the loss of every step of e2e-RUN beside e2e-cpu's; the first step's relative
# difference must stay under LIMIT
compare_losses() {
  local run=$1 limit=$2
  [ -f "$LOGS/e2e-cpu/metrics.jsonl" ] && [ -f "$LOGS/e2e-$run/metrics.jsonl" ] || return 0
  say "loss per step, cpu vs $run:"
  paste -d' ' <(grep -o '"loss": [^,]*' "$LOGS/e2e-cpu/metrics.jsonl" | cut -d' ' -f2) \
              <(grep -o '"loss": [^,]*' "$LOGS/e2e-$run/metrics.jsonl" | cut -d' ' -f2) |
    awk -v run="$run" -v limit="$limit" '{d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1);
          printf "  step %d  cpu %.6f  %s %.6f  rel.diff %.2e\n", NR, $1, run, $2, r; if (NR == 1 && r > limit) bad = 1}
          END {exit bad}' || { say "end to end: $run's first-step loss differs from the cpu's by more than $limit"; status=1; }
}
if [ -f "$FMNIST/t10k-images-idx3-ubyte.gz" ]; then
  # which GPU the backend takes (its PCI bus id, the key of the shared-GPU check before NCCL) and how processes
  # would reduce
  "$EXPLORA" check configs/demo/explora.ini --set backend.name=cuda \
      --set data.images="$FMNIST/t10k-images-idx3-ubyte.gz" --set data.labels="$FMNIST/t10k-labels-idx1-ubyte.gz" 2>&1 |
    grep -E "^backend|^device:|^several processes|error" | sed 's/^/gpu-check: check: /'
  # cpu and cuda; cuda again (run-to-run determinism: the checkpoints must be equal byte for byte);
  # cuda with frozen weights in bf16 on bf16 tensor cores ([optim] frozen_dtype, gemm_math = bf16)
  for run in cpu cuda cuda-again cuda-bf16 cuda-bf16-acts cuda-cudnn cuda-cudnn-again; do
    be=${run%%-*}
    extra=""
    [ "$run" = cuda-bf16 ] && extra="--set optim.frozen_dtype=bf16 --set backend.gemm_math=bf16"
    [ "$run" = cuda-bf16-acts ] && extra="--set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16 --set backend.gemm_math=bf16"
    [ "${run#cuda-cudnn}" != "$run" ] && extra="--set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16 --set backend.gemm_math=bf16 --set backend.attention=cudnn"
    rm -rf "$LOGS/e2e-$run" # before the budget check: a skipped run must not leave an earlier run's files
    within_budget "end to end ($run)" || continue
    say "end to end: configs/demo/explora.ini, 6 steps, $run"
    timeout "$(cap 240)" "$EXPLORA" pretrain configs/demo/explora.ini --set backend.name=$be $extra \
        --set data.images="$FMNIST/t10k-images-idx3-ubyte.gz" --set data.labels="$FMNIST/t10k-labels-idx1-ubyte.gz" \
        --set optim.steps=6 --set optim.warmup_steps=2 --set run.log_every=1 --set run.out="$LOGS/e2e-$run" > "$LOGS/e2e-$run.log" 2>&1
    erc=$?
    grep -E "^step|done:|error|frozen weights|activations:|^device memory|^warning" "$LOGS/e2e-$run.log" | tail -9
    if [ $erc -eq 124 ] && [ "$(left_s)" -lt 5 ]; then say "end to end ($run): cut off by the time budget"
    elif [ $erc -ne 0 ]; then say "end to end ($run): FAIL (exit status $erc)"; status=1; fi
  done
  both() { [ -f "$LOGS/e2e-$1/checkpoint.safetensors" ] && [ -f "$LOGS/e2e-$2/checkpoint.safetensors" ] ||
    { say "run to run: $1 and $2 not compared (one of them did not finish)"; false; }; }
  if ! both cuda cuda-again; then :
  elif cmp -s "$LOGS/e2e-cuda/checkpoint.safetensors" "$LOGS/e2e-cuda-again/checkpoint.safetensors"; then
    say "run to run: two cuda runs wrote identical checkpoints (deterministic)"
  else
    say "run to run: the two cuda runs' checkpoints differ: FAIL"; status=1
  fi
  compare_losses cuda 1e-3
  compare_losses cuda-bf16 1e-2
  compare_losses cuda-bf16-acts 2e-2
  compare_losses cuda-cudnn 2e-2
  if ! both cuda-cudnn cuda-cudnn-again; then :
  elif cmp -s "$LOGS/e2e-cuda-cudnn/checkpoint.safetensors" "$LOGS/e2e-cuda-cudnn-again/checkpoint.safetensors"; then
    say "run to run: two cuDNN-attention runs wrote identical checkpoints (deterministic engines)"
  else
    say "run to run: the two cuDNN-attention runs' checkpoints differ: FAIL"; status=1
  fi
else
  say "end to end and DINOv2 step benchmark skipped: no $FMNIST/t10k-images-idx3-ubyte.gz"
fi

# --- 4/5. benchmarks --------------------------------------------------------------------------
peak_file=$(mktemp)
smi_start() { smi_pid=""; if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$peak_file" 2>/dev/null & smi_pid=$!; fi; }
last_peak="?"
smi_stop() { last_peak="?"; if [ -n "$smi_pid" ]; then kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null
  last_peak=$(sort -n "$peak_file" | tail -1)
  say "  peak device memory $last_peak MiB (nvidia-smi, whole GPU)"; fi; }
# one line per DINOv2 step configuration, printed as a table at the end
summary="$LOGS/step-summary.txt"
printf '%-50s %5s %9s %9s %7s %9s\n' configuration batch images/s TFLOP/s MFU peak_MiB > "$summary"

# the DINOv2 step (the issue's goals) first, then the backbone step and PyTorch's
L14="--set backbone.preset=dinov2_vitl14"
step_bench() { # label batch extra-args...
  local label=$1 batch=$2; shift 2
  local dir="$LOGS/step-$(echo "$label-$batch" | tr -c 'A-Za-z0-9-\n' '_')"
  within_budget "DINOv2 step $label" || return 0
  say "DINOv2 step $label (batch $batch)"
  rm -rf "$dir"
  smi_start
  timeout "$(cap 200)" "$EXPLORA" pretrain configs/bench/dinov2_step.ini --set optim.batch="$batch" \
      --set data.images="$FMNIST/t10k-images-idx3-ubyte.gz" --set run.loader_workers=12 \
      --set run.out="$dir" "$@" > "$dir.log" 2>&1
  local prc=$?
  smi_stop
  grep -E "^step|done:|error" "$dir.log" | tail -3
  [ "$prc" -eq 0 ] || say "DINOv2 step $label: exit status $prc"
  if [ -f "$dir/metrics.jsonl" ]; then
    local med; med=$(grep -o '"images_per_s": [^,]*' "$dir/metrics.jsonl" | cut -d' ' -f2 | tail -n +3 | sort -g |
      awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "?"}')
    say "  DINOv2 step $label batch $batch: median $med images/s"
    # model FLOPs and MFU (bench/dinov2_step_flops.py: H100/H200 dense bf16 peak), from the settings passed
    local preset=vitb14 protos=65536 bneck=256 a
    for a in "$@"; do
      case $a in
        backbone.preset=dinov2_vit?14) preset=${a#backbone.preset=dinov2_} ;;
        objective.prototypes=*) protos=${a#*=} ;;
        objective.bottleneck=*) bneck=${a#*=} ;;
      esac
    done
    local tf="?" mfu="?" line
    if [ "$med" != "?" ] && line=$(/usr/bin/python3 bench/dinov2_step_flops.py --preset "$preset" \
        --prototypes "$protos" --bottleneck "$bneck" --images-per-s "$med" 2> /dev/null | tail -1); then
      tf=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) TFLOP\/s = \([0-9.]*\)% MFU.*/\1/p')
      mfu=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) TFLOP\/s = \([0-9.]*\)% MFU.*/\2%/p')
      say "  $line"
    fi
    printf '%-50s %5s %9s %9s %7s %9s\n' "$label" "$batch" "$med" "${tf:-?}" "${mfu:-?}" "$last_peak" >> "$summary"
  fi
}
# where one step's time goes: `pretrain --profile-step`, every backend call timed (synchronised after each)
step_profile() { # label extra-args...
  local label=$1; shift
  local dir="$LOGS/profile-$(echo "$label" | tr -c 'A-Za-z0-9-\n' '_')"
  within_budget "profile $label" || return 0
  say "DINOv2 step $label: profile of step 4"
  rm -rf "$dir"
  timeout "$(cap 150)" "$EXPLORA" pretrain configs/bench/dinov2_step.ini --set optim.batch=32 --set optim.steps=4 \
      --set data.images="$FMNIST/t10k-images-idx3-ubyte.gz" --set run.loader_workers=12 \
      --set run.out="$dir" --profile-step 4 "$@" > "$dir.log" 2>&1 || say "profile $label: exit status $?"
  awk '/^profile of step/ {p = 1} p && (/^step [0-9]/ || /^done:/) {exit} p' "$dir.log"
}
if [ -f "$FMNIST/t10k-images-idx3-ubyte.gz" ]; then
  L14H="$L14 --set objective.prototypes=131072 --set objective.bottleneck=384"
  BF="--set backend.gemm_math=bf16 --set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16"
  # frozen weights and activations in bf16, then attention on bf16
  # tensor cores (attention = fused_bf16), then the configuration for the 16 GB goal (recompute, fused
  # attention)
  step_bench "ViT-L14-bf16-frozen-acts-bf16" 32 $BF $L14H
  step_bench "ViT-L14-bf16-frozen-acts-bf16-attn-bf16" 32 $BF --set backend.attention=fused_bf16 $L14H
  step_bench "ViT-L14-bf16-frozen-acts-bf16-attn-cudnn" 32 $BF --set backend.attention=cudnn $L14H
  step_profile "ViT-L14-bf16-frozen-acts-bf16-attn-cudnn" $BF --set backend.attention=cudnn $L14H
  # the ViT-L recipe's teacher targets (Sinkhorn-Knopp, on the device since the exp_fwd/row_sum slots)
  step_bench "ViT-L14-bf16-frozen-acts-bf16-attn-cudnn-sk" 32 $BF --set backend.attention=cudnn \
      --set objective.centering=sinkhorn_knopp $L14H
  step_bench "ViT-L14-bf16-recompute-fused-frozen-acts-bf16" 32 $BF --set backbone.recompute=true \
      --set backend.attention=fused $L14H
  step_bench "ViT-L14-bf16-recompute-cudnn-frozen-acts-bf16" 32 $BF --set backbone.recompute=true \
      --set backend.attention=cudnn $L14H
  # recompute only the first 17 of 24 blocks: a plan of 14151 MiB (dry run), under 16 GB with the context
  step_bench "ViT-L14-bf16-recompute17-cudnn-frozen-acts-bf16" 32 $BF --set backbone.recompute=true \
      --set backbone.recompute_blocks=17 --set backend.attention=cudnn $L14H
  if [ "${GPU_CHECK_FULL:-0}" = 1 ]; then # the configurations measured at the first H200 runs
    step_bench "ViT-L14-tf32" 32 --set backend.gemm_math=tf32 $L14H
    step_bench "ViT-B14-bf16" 32 --set backend.gemm_math=bf16
    step_bench "ViT-L14-bf16" 32 --set backend.gemm_math=bf16 $L14H
    step_bench "ViT-L14-bf16-recompute" 32 --set backend.gemm_math=bf16 --set backbone.recompute=true $L14H
    step_bench "ViT-L14-bf16" 64 --set backend.gemm_math=bf16 $L14H
    step_bench "ViT-L14-bf16-frozen-bf16" 32 --set backend.gemm_math=bf16 --set optim.frozen_dtype=bf16 $L14H
  fi
fi
bench() { # label batch extra-args...
  local label=$1 batch=$2; shift 2
  within_budget "bench $label" || return 0
  say "bench $label (batch $batch)"
  smi_start
  timeout "$(cap 150)" "$EXPLORA" bench --policy explora --batch "$batch" --iters "${ITERS:-5}" --warmup 2 \
      --set backend.name=cuda "$@" > "$LOGS/bench.tmp" 2>&1
  local brc=$?
  grep -E "^step|bench-result|error" "$LOGS/bench.tmp" | head -6; cat "$LOGS/bench.tmp" >> "$LOGS/bench.log"
  smi_stop
  [ "$brc" -eq 0 ] || say "bench $label: exit status $brc"
}
bench "backbone ViT-B/14 fp32" 32 --model vitb14
bench "backbone ViT-L/14 tf32" 32 --model vitb14 $L14 --set backend.gemm_math=tf32
bench "backbone ViT-L/14 bf16" 32 --model vitb14 $L14 --set backend.gemm_math=bf16
bench "backbone ViT-L/14 bf16, frozen weights bf16" 32 --model vitb14 $L14 --set backend.gemm_math=bf16 \
    --set optim.frozen_dtype=bf16
bench "backbone ViT-L/14 bf16, frozen weights and activations bf16" 32 --model vitb14 $L14 --set backend.gemm_math=bf16 \
    --set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16
bench "backbone ViT-L/14 bf16, frozen weights and activations bf16, fused_bf16 attention" 32 --model vitb14 $L14 \
    --set backend.gemm_math=bf16 --set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16 \
    --set backend.attention=fused_bf16
bench "backbone ViT-L/14 bf16, frozen weights and activations bf16, cuDNN attention" 32 --model vitb14 $L14 \
    --set backend.gemm_math=bf16 --set optim.frozen_dtype=bf16 --set optim.activation_dtype=bf16 \
    --set backend.attention=cudnn

# the same backbone step in PyTorch on the same GPU (bench/bench_torch.py), when the python3 on the
# PATH has a CUDA PyTorch
PY=${PYTHON:-python3}
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
  torch_bench() { # label args...
    local label=$1; shift
    within_budget "PyTorch backbone $label" || return 0
    say "PyTorch backbone $label (batch 32)"
    timeout "$(cap 150)" "$PY" bench/bench_torch.py --policy explora --batch 32 --iters "${ITERS:-5}" --warmup 2 \
        --device cuda --threads 8 "$@" 2>&1 | grep -E "bench-result|torch |Error|error" | tail -3
  }
  torch_bench "ViT-B/14 fp32" --model vitb14 --precision fp32
  torch_bench "ViT-L/14 tf32" --model vitl14 --precision tf32
  torch_bench "ViT-L/14 bf16 autocast" --model vitl14 --precision bf16
  torch_bench "ViT-L/14 bf16 autocast + sdpa" --model vitl14 --precision bf16 --sdpa
else
  say "no CUDA PyTorch for $PY: the PyTorch comparison is skipped"
fi

rm -f "$peak_file" "$LOGS/bench.tmp"

if [ "$(wc -l < "$summary")" -gt 1 ]; then
  say "DINOv2 step summary (also in $summary):"
  cat "$summary"
fi
[ "$skipped" -gt 0 ] && say "$skipped run(s) skipped for the time budget (GPU_CHECK_BUDGET_S=$BUDGET)"
say "done (status $status)"
exit $status
