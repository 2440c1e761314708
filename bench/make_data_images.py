#!/usr/bin/python3
"""bench/make_data_images.py — the JPEG set of the data benchmark (bench/data.sh).

Cuts N photographs of 224 to 320 pixels a side out of real photos (by default the two 640 x 427 photos
that Debian's python3-sklearn ships, china.jpg and flower.jpg): a random box of 40-100 % of the source's
shorter side, resized with Pillow's bicubic filter, saved as baseline 4:2:0 JPEG at quality 90 (what
most photo datasets hold). Writes DIR/img_NNN.jpg and DIR/list.txt (one name per line, the imagelist
layout). Deterministic for a seed.

usage: make_data_images.py OUT_DIR SOURCE.jpg [SOURCE.jpg ...] [--count N] [--seed S]
"""
import argparse
import os
import random
import sys

from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    srcs = [Image.open(p).convert("RGB") for p in a.sources]
    os.makedirs(a.out, exist_ok=True)
    names = []
    for i in range(a.count):
        im = srcs[i % len(srcs)]
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        bw = min(w, int(side * rng.uniform(1.0, 1.33)))
        left, top = rng.randint(0, w - bw), rng.randint(0, h - side)
        crop = im.crop((left, top, left + bw, top + side))
        tw = rng.randint(224, 320)
        th = max(224, round(tw * side / bw))
        name = "img_%03d.jpg" % i
        crop.resize((tw, th), Image.BICUBIC).save(os.path.join(a.out, name), quality=90, subsampling=2)
        names.append(name)
    tmp = os.path.join(a.out, "list.txt.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(names) + "\n")
    os.replace(tmp, os.path.join(a.out, "list.txt"))
    print("make_data_images: %d JPEGs in %s" % (a.count, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
