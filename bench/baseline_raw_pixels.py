#!/usr/bin/python3
"""bench/baseline_raw_pixels.py — the raw-pixel reference of the demo (docs/DOMAIN_SHIFT.md).

A linear classifier on the pixels themselves (standardised per pixel, scikit-learn's
multinomial logistic regression, C = 0.1), with the demo's split: the first 10000
Fashion-MNIST training images to fit, the first 5000 test images to score. Once on
the images as stored (the source domain) and once re-captured by the same simulated
low-light camera as the demo's target domain (datasets/idx/idx_sensor.h: blur
sigma 1 px, 12 photo-electrons at white, read noise 2 e-, 8-bit ADC with a black
level of 16 DN). The classifier runs 500 L-BFGS iterations (scikit-learn would warn that
it has not fully converged; the warning is silenced). The camera model is the same; the noise draws are numpy's, not
explora's Philox streams, so the target images differ sample by sample.

Run with Debian's interpreter and packages (python3-sklearn, python3-scipy):
    /usr/bin/python3 bench/baseline_raw_pixels.py
"""
import gzip
import sys
import warnings

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

ROOT = "/usr/share/datasets/fashion-mnist/"


def read_idx(name, offset):
    with gzip.open(ROOT + name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def camera(images, rng, photons=12.0, blur=1.0, read_noise=2.0, black=16.0):
    optics = np.stack([gaussian_filter(x, blur, mode="reflect") for x in images])
    electrons = rng.poisson(optics * photons).astype(np.float64)
    electrons += rng.normal(0.0, read_noise, optics.shape)
    dn = np.clip(np.round(black + electrons * (255.0 - black) / photons), 0, 255)
    return (dn / 255.0).astype(np.float32)


def score(train, ytrain, test, ytest):
    a, b = train.reshape(len(train), -1), test.reshape(len(test), -1)
    mean, std = a.mean(0), a.std(0) + 1e-3
    clf = LogisticRegression(max_iter=500, C=0.1).fit((a - mean) / std, ytrain)
    return 100.0 * clf.score((b - mean) / std, ytest)


def main():
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    xtr = read_idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:10000].astype(np.float32) / 255
    ytr = read_idx("train-labels-idx1-ubyte.gz", 8)[:10000]
    xte = read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:5000].astype(np.float32) / 255
    yte = read_idx("t10k-labels-idx1-ubyte.gz", 8)[:5000]
    rng = np.random.default_rng(0)
    print("raw pixels, source domain (as stored): top-1 %.2f%%" % score(xtr, ytr, xte, yte))
    print("raw pixels, target domain (simulated camera): top-1 %.2f%%"
          % score(camera(xtr, rng), ytr, camera(xte, rng), yte))
    return 0


if __name__ == "__main__":
    sys.exit(main())
