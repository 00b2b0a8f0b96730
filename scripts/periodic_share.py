#!/usr/bin/env python3
"""Measures how much of a saliency map's magnitude repeats with a fixed pixel period.

    scripts/periodic_share.py MAP.npy [MAP.npy ...] [--periods 2,4,8,16,32]

For each period P the map's |values| (minus their mean) are folded onto a P x P phase grid (pixel
(y, x) goes to (y mod P, x mod P)) and averaged; the share is the variance of that P x P table of
means over the variance of the whole map. A map without a grid pattern scores about P^2 / (H W);
a pure checkerboard of period P scores 1. A stride-s layer whose transposed convolution leaves
its footprint in the input gradient shows up at P = s (and at every multiple of s, no higher).

Used for the dotted pattern of uniformly pruned MobileNetV2 maps (docs/reproduction.md).
Needs numpy.
"""
import argparse

import numpy as np


def periodic_share(m, period):
    h, w = m.shape
    m = np.abs(m[: h // period * period, : w // period * period].astype(np.float64))
    m = m - m.mean()
    total = (m ** 2).mean()
    if total == 0:
        return 0.0
    phases = m.reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float((phases ** 2).mean() / total)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("maps", nargs="+", help="(H, W) .npy maps, e.g. `spade explain`'s map.npy")
    ap.add_argument("--periods", default="2,4,8,16,32")
    args = ap.parse_args()
    periods = [int(p) for p in args.periods.split(",")]
    for path in args.maps:
        m = np.load(path)
        if m.ndim != 2:
            raise SystemExit(f"periodic_share.py: {path}: expected an (H, W) map, got shape {m.shape}")
        shares = " ".join(f"P{p}={100 * periodic_share(m, p):.2f}%" for p in periods)
        print(f"{path}  {shares}")


if __name__ == "__main__":
    main()
