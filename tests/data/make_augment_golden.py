#!/usr/bin/env python3
"""Writes the reference files for tests/test_augment.cpp (interpret/spade/augment.h).

Run by hand from the repository root with Debian's python3 (it needs PIL, numpy, torch and
torchvision 0.14):  /usr/bin/python3 tests/data/make_augment_golden.py

The SPADE augmentation is torchvision's RandomResizedCrop -> RandomHorizontalFlip -> ColorJitter
(brightness, hue) on PIL images. torch's random generator cannot be reproduced in C++, so this
script fixes the drawn parameters instead and applies the same torchvision.transforms.functional
calls the transforms make with them; the C++ test checks apply_augment against every result
bit-exactly (the random draws themselves are tested statistically in C++).

Everything lands in tests/data/augment/ and is described by augment/golden.json:
  * "sources": the input images. src.png is tests/data/image/src.png (47x31, written by
    make_image_golden.py); wheel.png (64x48) is a hue wheel with grey ramps, black, white and noise;
    noise.png (24x24) holds uniformly random colours, so a whole-image crop at its own size (an
    identity resize) puts many unrelated colours through PIL's HSV round trip.
  * "cases": one per parameter set: crop box (top, left, height, width) in the source, output
    size, flip, brightness factor, hue factor and whether hue was applied before brightness
    (ColorJitter's random order), and the resulting 8-bit image saved as PNG (lossless).
"""
import json
import os

import numpy as np
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "augment")


def wheel(w, h, seed):
    """Saturated hues across x (so red wraps around hue 0/255), value falling along y, a grey
    ramp row (saturation 0), black and white pixels, plus mild noise on the lower half."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    hue = x / w
    sat = np.clip(1.2 - y / h, 0, 1)
    val = np.clip(1.1 - 0.6 * y / h, 0, 1)
    k = np.floor(hue * 6)
    f = hue * 6 - k
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    choices = [np.stack(c, -1) for c in ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q))]
    img = np.select([(k % 6 == i)[..., None] for i in range(6)], choices) * 255
    img[h // 2:] += rng.normal(0, 12, size=(h - h // 2, w, 3))
    img[h // 4, :, :] = (255 * x[0] / (w - 1))[:, None]  # grey ramp
    img[3 * h // 4, : w // 2] = 0
    img[3 * h // 4, w // 2:] = 255
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def noise(w, h, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    a[0, :6] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [255, 0, 1], [1, 0, 255], [128, 128, 127]]
    return Image.fromarray(a, "RGB")


def cases():
    """(source, top, left, height, width, size, flip, brightness, hue, hue_first)"""
    return [
        ("src.png", 0, 0, 31, 47, 32, False, 1.0, 0.0, False),       # whole image, hue 0 round trip
        ("src.png", 0, 0, 31, 47, 32, True, 1.3, 0.12, False),
        ("src.png", 5, 7, 20, 20, 32, False, 0.5, -0.3, True),       # brightness 1 - b, hue -h
        ("src.png", 11, 27, 20, 20, 32, True, 1.5, 0.3, False),      # brightness 1 + b, hue +h
        ("src.png", 3, 10, 14, 18, 32, False, 0.731, 0.2999, True),
        ("src.png", 0, 30, 31, 17, 32, True, 1.0, -0.2999, False),   # brightness 1: PIL copy
        ("src.png", 20, 0, 11, 9, 20, False, 0.9, 0.001, True),      # np.uint8(0.255) == 0
        ("src.png", 2, 2, 27, 36, 20, True, 1.17, -0.001, False),    # np.uint8(-0.255) == 0
        ("src.png", 8, 12, 16, 12, 20, False, 0.62, -0.1, True),     # np.uint8(-25.5): wraps to 231
        ("src.png", 30, 46, 1, 1, 32, False, 1.42, 0.05, False),     # a single pixel
        ("src.png", 4, 1, 25, 45, 32, True, 0.5, 0.25, False),
        ("src.png", 10, 20, 12, 16, 32, False, 1.2345, -0.25, True),
        ("wheel.png", 0, 0, 48, 64, 32, False, 1.0, 0.0, True),
        ("wheel.png", 0, 0, 48, 64, 32, True, 0.55, 0.3, True),
        ("wheel.png", 10, 5, 30, 40, 32, False, 1.45, -0.3, False),
        ("wheel.png", 20, 30, 28, 34, 20, True, 1.01, 0.17, True),
        ("wheel.png", 0, 16, 48, 48, 32, False, 0.8, -0.17, False),  # a downscale
        ("wheel.png", 12, 0, 36, 27, 20, True, 1.499, -0.05, True),
        ("wheel.png", 5, 50, 9, 12, 32, False, 0.501, 0.1, False),
        ("wheel.png", 40, 10, 8, 32, 20, False, 1.1, 0.0039, True),  # hue * 255 just below 1
        ("noise.png", 0, 0, 24, 24, 24, False, 1.0, 0.0, False),     # identity resize: pure HSV
        ("noise.png", 0, 0, 24, 24, 24, False, 1.0, 0.3, False),
        ("noise.png", 0, 0, 24, 24, 24, True, 1.0, -0.3, True),
        ("noise.png", 0, 0, 24, 24, 24, False, 1.37, 0.21, True),
        ("noise.png", 0, 0, 24, 24, 24, False, 0.66, -0.41, False),  # beyond 0.3: still valid
        ("noise.png", 3, 4, 17, 19, 24, True, 1.5, 0.5, True),       # upscale, hue 0.5 limit
    ]


def apply(img, top, left, height, width, size, flip, brightness, hue, hue_first):
    """What RandomResizedCrop, RandomHorizontalFlip and ColorJitter do with these parameters."""
    out = F.resized_crop(img, top, left, height, width, [size, size], InterpolationMode.BILINEAR)
    if flip:
        out = F.hflip(out)
    steps = [lambda im: F.adjust_brightness(im, brightness), lambda im: F.adjust_hue(im, hue)]
    for step in (steps[::-1] if hue_first else steps):
        out = step(out)
    return out


def save_png(img, name):
    img.save(os.path.join(OUT, name), format="PNG", optimize=True)
    return name


def main():
    os.makedirs(OUT, exist_ok=True)
    sources = {"src.png": Image.open(os.path.join(HERE, "image", "src.png")).convert("RGB"),
               "wheel.png": wheel(64, 48, 2024), "noise.png": noise(24, 24, 77)}
    save_png(sources["wheel.png"], "wheel.png")
    save_png(sources["noise.png"], "noise.png")
    golden = {"sources": {"src.png": "../image/src.png", "wheel.png": "wheel.png", "noise.png": "noise.png"},
              "cases": []}
    for i, (src, top, left, height, width, size, flip, brightness, hue, hue_first) in enumerate(cases()):
        img = sources[src]
        assert 0 <= top and top + height <= img.height and 0 <= left and left + width <= img.width
        out = apply(img, top, left, height, width, size, flip, brightness, hue, hue_first)
        assert out.mode == "RGB" and out.size == (size, size)
        name = save_png(out, f"aug_{i:02d}.png")
        golden["cases"].append({"src": src, "top": top, "left": left, "height": height, "width": width,
                                "size": size, "flip": flip, "brightness": brightness, "hue": hue,
                                "hue_first": hue_first, "file": name})
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
