#!/usr/bin/python3
"""Generate the tiny image fixtures of tests/test_image.c (tests/data/images/).

    /usr/bin/python3 tests/data/images/make_images.py

PNGs are written by hand with the standard library (zlib + struct), one file
per PNG colour type and bit depth, rows filtered with all five PNG filters
(row y uses filter y % 5), plus one Adam7-interlaced file. The pixel values
follow closed formulas that tests/test_image.c recomputes (keep both in sync):

    gray8(x, y)  = (37x + 91y + 5) mod 256
    gray16(x, y) = (4099x + 13001y + 7) mod 65536
    gray4(x, y)  = (x + 3y) mod 16                      (4-bit; decoders scale by 17)
    rgb8(x, y)   = ((50x + 3y) mod 256, (70y + 11x) mod 256, (20xy + 9) mod 256)
    rgb16(x, y)  = ((5000x + 300y) mod 65536, (9000y + 123x) mod 65536, (2000xy + 99) mod 65536)
    alpha8(x, y) = (40x + 60y) mod 256,  alpha16(x, y) = (3000x + 7000y) mod 65536
    palette      = PALETTE[(x + 2y) mod 5], with a tRNS chunk (must be ignored)

All PNGs are 5 x 4 (width x height) except interlaced_rgb8.png (9 x 7).

JPEGs come from Debian's libjpeg-turbo-progs: cjpeg encodes a 17 x 13 RGB
pattern (4:2:0 and 4:4:4, baseline and progressive) and a gray pattern, and
djpeg decodes each JPEG to the .ppm/.pgm the test compares against exactly
(djpeg and TurboJPEG's tjDecompress2 with flags 0 use the same islow IDCT
and fancy upsampling). cmyk.jpg is written by Python's PIL (python3-pil)
when present, to check that CMYK JPEGs are refused. Existing JPEG files are
kept when the tools are missing. Output is byte-identical on rerun.
"""

import os
import shutil
import struct
import subprocess
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
W, H = 5, 4
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (200, 150, 100)]
JW, JH = 17, 13


def gray8(x, y):
    return (37 * x + 91 * y + 5) % 256


def gray16(x, y):
    return (4099 * x + 13001 * y + 7) % 65536


def gray4(x, y):
    return (x + 3 * y) % 16


def rgb8(x, y):
    return ((50 * x + 3 * y) % 256, (70 * y + 11 * x) % 256, (20 * x * y + 9) % 256)


def rgb16(x, y):
    return ((5000 * x + 300 * y) % 65536, (9000 * y + 123 * x) % 65536, (2000 * x * y + 99) % 65536)


def alpha8(x, y):
    return (40 * x + 60 * y) % 256


def alpha16(x, y):
    return (3000 * x + 7000 * y) % 65536


def chunk(kind, body):
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_row(ftype, row, prev, bpp):
    """Apply PNG filter `ftype` to the raw bytes of one scanline."""
    out = bytearray()
    for i, v in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i] if prev else 0
        c = prev[i - bpp] if (prev and i >= bpp) else 0
        pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][ftype]
        out.append((v - pred) & 0xFF)
    return bytes([ftype]) + bytes(out)


def pack_row(samples, depth):
    """Samples of one row (flattened channels) into bytes at the given bit depth."""
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(samples), per):
        byte = 0
        for j in range(per):
            s = samples[i + j] if i + j < len(samples) else 0
            byte |= s << (8 - depth * (j + 1))
        out.append(byte)
    return bytes(out)


def scanlines(pixel, xs, ys, depth, channels):
    """Filtered scanlines for the pixels at columns xs and rows ys (one pass)."""
    bpp = max(1, channels * depth // 8)
    data, prev = bytearray(), None
    for k, y in enumerate(ys):
        samples = []
        for x in xs:
            samples.extend(pixel(x, y))
        row = pack_row(samples, depth)
        data += filter_row(k % 5, row, prev, bpp)
        prev = row
    return bytes(data)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(name, w, h, depth, ctype, pixel, extra=b"", interlace=False):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            xs, ys = list(range(x0, w, dx)), list(range(y0, h, dy))
            if xs and ys:
                raw += scanlines(pixel, xs, ys, depth, channels)
    else:
        raw = scanlines(pixel, list(range(w)), list(range(h)), depth, channels)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(png)


def write_pngs():
    write_png("gray8.png", W, H, 8, 0, lambda x, y: [gray8(x, y)])
    write_png("gray16.png", W, H, 16, 0, lambda x, y: [gray16(x, y)])
    write_png("gray4.png", W, H, 4, 0, lambda x, y: [gray4(x, y)])
    write_png("graya8.png", W, H, 8, 4, lambda x, y: [gray8(x, y), alpha8(x, y)])
    write_png("rgb8.png", W, H, 8, 2, lambda x, y: list(rgb8(x, y)))
    write_png("rgb16.png", W, H, 16, 2, lambda x, y: list(rgb16(x, y)))
    write_png("rgba8.png", W, H, 8, 6, lambda x, y: list(rgb8(x, y)) + [alpha8(x, y)])
    write_png("rgba16.png", W, H, 16, 6, lambda x, y: list(rgb16(x, y)) + [alpha16(x, y)])
    plte = chunk(b"PLTE", bytes(v for rgb in PALETTE for v in rgb)) + chunk(b"tRNS", bytes([0, 64, 128, 255, 7]))
    write_png("palette8.png", W, H, 8, 3, lambda x, y: [(x + 2 * y) % 5], extra=plte)
    write_png("interlaced_rgb8.png", 9, 7, 8, 2, lambda x, y: list(rgb8(x, y)), interlace=True)


def write_jpeg_sources(tmp):
    ppm = b"P6\n%d %d\n255\n" % (JW, JH)
    ppm += bytes(v for y in range(JH) for x in range(JW) for v in ((15 * x) % 256, (19 * y) % 256, (7 * (x + y)) % 256))
    pgm = b"P5\n%d %d\n255\n" % (JW, JH) + bytes((13 * x + 11 * y) % 256 for y in range(JH) for x in range(JW))
    paths = (os.path.join(tmp, "src.ppm"), os.path.join(tmp, "src.pgm"))
    for path, data in zip(paths, (ppm, pgm)):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def run(cmd, out_path):
    with open(out_path, "wb") as f:
        subprocess.run(cmd, stdout=f, check=True)


def write_jpegs():
    if not (shutil.which("cjpeg") and shutil.which("djpeg")):
        print("cjpeg/djpeg not found (apt-get install libjpeg-turbo-progs); keeping existing JPEGs", file=sys.stderr)
        return
    tmp = os.path.join(HERE, ".tmp-src")
    os.makedirs(tmp, exist_ok=True)
    ppm, pgm = write_jpeg_sources(tmp)
    jobs = [
        ("rgb420.jpg", ["-quality", "90"], ppm, "rgb420.ppm"),
        ("rgb444.jpg", ["-quality", "95", "-sample", "1x1"], ppm, "rgb444.ppm"),
        ("progressive.jpg", ["-quality", "85", "-progressive"], ppm, "progressive.ppm"),
        ("gray.jpg", ["-quality", "90"], pgm, "gray.pgm"),
    ]
    for jpg, opts, src, ref in jobs:
        run(["cjpeg"] + opts + [src], os.path.join(HERE, jpg))
        run(["djpeg", "-pnm", os.path.join(HERE, jpg)], os.path.join(HERE, ref))
    shutil.rmtree(tmp)


def write_cmyk():
    try:
        from PIL import Image
    except ImportError:
        print("PIL not found (apt-get install python3-pil); keeping existing cmyk.jpg", file=sys.stderr)
        return
    im = Image.new("CMYK", (8, 8), (10, 200, 30, 40))
    im.save(os.path.join(HERE, "cmyk.jpg"), quality=90)


def main():
    write_pngs()
    write_jpegs()
    write_cmyk()
    total = 0
    for name in sorted(os.listdir(HERE)):
        if name.endswith((".png", ".jpg", ".ppm", ".pgm")):
            size = os.path.getsize(os.path.join(HERE, name))
            total += size
            print(f"{name:22s} {size:6d} bytes")
    print(f"{'total':22s} {total:6d} bytes")


if __name__ == "__main__":
    main()
