#!/usr/bin/python3
"""bench/bench_data_torch.py — the Pillow + torchvision side of the data benchmark (bench/data.sh).

The same two figures as `explora bench data` (core/cli/cli_bench_data.c), on the same list of files, on
one thread (torch.set_num_threads(1)):

  decode      Image.open(path).convert("RGB") with the pixels loaded (how DINOv2's datasets read images)
  multi-crop  decode + DINOv2's DataAugmentationDINO as its released code builds it from torchvision:
              2 global crops 224 (RandomResizedCrop scale 0.32..1, bicubic) and 8 local crops 98
              (scale 0.05..0.32), horizontal flip 0.5, RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), 0.8),
              RandomGrayscale(0.2), GaussianBlur(9, sigma 0.1..2) applied with probability 0 (global 1),
              0.9 (global 2) and 0.5 (locals) — the released wrapper passes 1 - p to RandomApply —,
              RandomSolarize(128, 0.2) on global 2, then ToTensor + ImageNet Normalize

Each figure is the rate over P passes through the list after W untimed passes. Prints one
"bench-data-result" line of key=value pairs, as the C side does.

usage: bench_data_torch.py --list FILE [--iters P] [--warmup W]
"""
import argparse
import os
import sys
import time

import torch
from PIL import Image
from torchvision import transforms as T

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def blur(keep_p):
    return T.RandomApply([T.GaussianBlur(kernel_size=9, sigma=(0.1, 2.0))], p=keep_p)


def dinov2_multicrop(global_size=224, local_size=98, n_local=8):
    bic = T.InterpolationMode.BICUBIC
    geo_g = T.Compose([T.RandomResizedCrop(global_size, scale=(0.32, 1.0), interpolation=bic), T.RandomHorizontalFlip(0.5)])
    geo_l = T.Compose([T.RandomResizedCrop(local_size, scale=(0.05, 0.32), interpolation=bic), T.RandomHorizontalFlip(0.5)])
    colour = T.Compose([T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)])
    norm = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    g1 = T.Compose([colour, blur(0.0), norm])
    g2 = T.Compose([colour, blur(0.9), T.RandomSolarize(threshold=128, p=0.2), norm])
    loc = T.Compose([colour, blur(0.5), norm])

    def apply(img):
        views = [g1(geo_g(img)), g2(geo_g(img))]
        views += [loc(geo_l(img)) for _ in range(n_local)]
        return views

    return apply


def load(path):
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def timed(paths, passes, fn):
    t0 = time.perf_counter()
    for _ in range(passes):
        for p in paths:
            fn(p)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", required=True)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = os.path.dirname(os.path.abspath(a.list))
    with open(a.list) as f:
        paths = [os.path.join(base, ln.split()[0]) for ln in f if ln.strip() and not ln.startswith("#")]
    aug = dinov2_multicrop()
    timed(paths, a.warmup, load)
    t_dec = timed(paths, a.iters, load)
    timed(paths, a.warmup, lambda p: aug(load(p)))
    t_mc = timed(paths, a.iters, lambda p: aug(load(p)))
    n = len(paths) * a.iters
    print("bench data (Pillow %s, torchvision, torch %s): %d images, %d timed passes (%d warm-up)"
          % (Image.__version__, torch.__version__, len(paths), a.iters, a.warmup))
    print("  decode                       %8.1f images/s  (1 thread)" % (n / t_dec))
    print("  decode + DINOv2 multi-crop   %8.1f images/s  (1 thread; 2 x 224 + 8 x 98 views)" % (n / t_mc))
    print("bench-data-result impl=torch images=%d passes=%d decode_ips=%.3f multicrop_ips=%.3f"
          % (len(paths), a.iters, n / t_dec, n / t_mc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
