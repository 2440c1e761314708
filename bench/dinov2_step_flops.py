#!/usr/bin/python3
"""bench/dinov2_step_flops.py — model FLOPs of one ExPLoRA DINOv2 training step, per image.

Turns the images/s that scripts/gpu_check.sh measures for the DINOv2 step benchmark
(configs/bench/dinov2_step.ini) into model FLOP/s and MFU. Counting convention as
`explora bench` (core/cli/cli_bench.c): 2*m*n*k per matrix product, attention as
4 t^2 d forward and 8 t^2 d backward, nothing for elementwise work, recomputation
(backbone.recompute) not counted.

The step, per image:
  student   2 global crops (t = 1 + (224/14)^2) and 8 local crops (t = 1 + (98/14)^2):
            forward, backward to the input of every block (LoRA sits in every block but
            the last), weight gradients of the unfrozen last block and of the LoRA factors;
            the patch embedding is frozen and first, so it has no backward
  teacher   the 2 global crops, forward only (it carries its own LoRA factors, unmerged)
  heads     DINO head (Linear D->h, h->h, h->b, weight-normalised b->K) on the cls token of
            every student crop (10) and of the teacher's globals (2); iBOT on the masked
            patches of the globals (the shared head, DINOv2's default): half of the global
            crops masked, mask ratio uniform in [0.1, 0.5], so 0.15 * 256 patches per crop on
            average; student rows forward + backward (3x forward), teacher rows forward

The backbone part is checked against the FLOPs `explora bench` counts for the same model
(ViT-L/14, D-[L]-r64, 224 px: 165.1 GFLOP forward + 180.9 backward per image).

  /usr/bin/python3 bench/dinov2_step_flops.py --preset vitl14 --prototypes 131072 \\
      --bottleneck 384 --images-per-s 53.5
"""
import argparse

PRESETS = {"vits14": (384, 12), "vitb14": (768, 12), "vitl14": (1024, 24)}  # dim, depth


def backbone(d, depth, t, patches, rank, channels=3, patch=14):
    """(forward, backward) FLOPs of one crop of t tokens, D-[L]-r<rank>."""
    block = 24 * t * d * d  # qkv 3d^2, proj d^2, mlp 8d^2; 2 FLOPs per MAC
    lora = 8 * t * d * rank  # q and v: (t x d)(d x r) and (t x r)(r x d), twice
    embed = 2 * patches * channels * patch * patch * d
    fwd = embed + depth * (block + 4 * t * t * d) + (depth - 1) * lora
    bwd = depth * (block + 8 * t * t * d) + block + 2 * (depth - 1) * lora
    return fwd, bwd


def head_row(d, hidden, bottleneck, k):
    return 2 * (d * hidden + hidden * hidden + hidden * bottleneck + bottleneck * k)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vitl14", choices=sorted(PRESETS))
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--channels", type=int, default=1, help="1 in configs/bench/dinov2_step.ini")
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=98)
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--bottleneck", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--images-per-s", type=float, default=0.0)
    ap.add_argument("--peak-tflops", type=float, default=989.4,
                    help="dense bf16 peak for MFU (H100/H200 SXM datasheet: 989.4)")
    a = ap.parse_args()
    d, depth = PRESETS[a.preset]

    # the self-check against explora bench's count (3 channels, 224 px, no heads)
    f, b = backbone(1024, 24, 257, 256, 64, channels=3)
    assert abs(f / 1e9 - 165.1) < 0.1 and abs(b / 1e9 - 180.9) < 0.1, (f / 1e9, b / 1e9)

    ng, nl = (a.global_size // 14) ** 2, (a.local_size // 14) ** 2
    gf, gb = backbone(d, depth, ng + 1, ng, a.rank, a.channels)
    lf, lb = backbone(d, depth, nl + 1, nl, a.rank, a.channels)
    student = 2 * (gf + gb) + a.local_crops * (lf + lb)
    teacher = 2 * gf
    row = head_row(d, a.hidden, a.bottleneck, a.prototypes)
    masked = 2 * 0.5 * 0.3 * ng
    heads = 3 * row * (2 + a.local_crops + masked) + row * (2 + masked)
    total = student + teacher + heads
    print("%s D-[L]-r%d, 2 x %d px + %d x %d px, K = %d: GFLOP per image: student %.1f, teacher %.1f, "
          "heads %.1f, total %.1f" % (a.preset, a.rank, a.global_size, a.local_crops, a.local_size, a.prototypes,
                                      student / 1e9, teacher / 1e9, heads / 1e9, total / 1e9))
    if a.images_per_s > 0:
        tf = total * a.images_per_s / 1e12
        print("at %.2f images/s: %.1f TFLOP/s = %.1f%% MFU of %.1f TFLOP/s" %
              (a.images_per_s, tf, 100.0 * tf / a.peak_tflops, a.peak_tflops))


if __name__ == "__main__":
    main()
