#!/usr/bin/env python3
"""Writes the PyTorch references of the feature-visualisation tests under tests/data/featurevis/:

  fourier.golden.safetensors     the Fourier image parameterisation, forward and gradient
  transforms.golden.safetensors  pad, jitter, scale, rotate (each alone and chained), forward and gradient
  adam.golden.safetensors        torch.optim.Adam(lr=0.05) for four steps

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_featurevis_golden.py

Deterministic: a rerun gives byte-identical files. Every file is read back and checked, and together
they must stay under 150 KB. The inputs are float32 draws of torch.Generator().manual_seed(seed).randn
and are stored; the references are computed in float64 from those float32 values and rounded to
float32, so a tolerance measures the engine alone. Every "g..." tensor is a random upstream gradient
and the matching "d..."/"gx" tensor is d(sum(output * g))/d(input) from torch autograd. Besides
writing, the script checks the definitions against independent numpy formulas (the direct DFT
below, explicit bilinear sampling, a hand-written Adam) and the conventions with single bright pixels.

fourier.golden.safetensors (metadata: sizes, batch, decay_power, magic, color_correlation as JSON):
For each size key K in "6x8", "7x5" (H x W; Wf = W // 2 + 1, N = 2):
  K.S        F32 (N, 3, H, Wf, 2)  the spectrum parameter, last dim (real, imag); randn * 1.2, far
                                   above the 0.01 of an initialisation, so the sigmoid bends (|dec| < 3)
  K.scale    F32 (H, Wf)           1 / max(sqrt(fy^2 + fx^2), 1 / max(H, W)) ** decay_power with
                                   fy = numpy.fft.fftfreq(H), fx = numpy.fft.fftfreq(W)[:Wf]
  K.raw      F32 (N, 3, H, W)      torch.fft.irfftn(view_as_complex(scale[..., None] * S), s=(H, W),
                                   norm="ortho") / magic, magic = 4
  K.image    F32 (N, 3, H, W)      sigmoid(dec), dec[n, c] = sum_j Cn[c, j] * raw[n, j]
  K.g_image  F32 (N, 3, H, W)      upstream gradient of the image
  K.dS       F32 (N, 3, H, Wf, 2)  d(sum(image * g_image)) / dS
  Cn         F32 (3, 3)            colour correlation C divided by the largest column L2 norm of C
irfftn here equals the direct DFT (checked below): with T = scale * S as complex numbers,
  raw[y, x] = sum_{ky < H, kx < Wf} c_kx * Re(T[ky, kx] * exp(2 pi i (ky y / H + kx x / W))) / (4 sqrt(H W))
with c_kx = 1 for kx = 0 and for kx = W / 2 when W is even, else 2. Hence the imaginary part of
T[ky, kx] with ky in {0, H/2 if H is even} and kx in {0, W/2 if W is even} never reaches the image:
its dS is 0 (up to rounding of sin(pi k) in the reference).

transforms.golden.safetensors (metadata: every parameter as JSON; the input is x (2, 3, 9, 10)):
  x                   F32 (2, 3, 9, 10)
  <case>.y            F32   the transform of x
  <case>.gy           F32   upstream gradient, shape of <case>.y
  <case>.gx           F32 (2, 3, 9, 10)  d(sum(y * gy)) / dx
Cases (each transform alone on x):
  pad          F.pad(x, [3, 3, 3, 3], value=0.5)                                     y (2, 3, 15, 16)
  translate0   dx=2, dy=1: y[.., r, c] = x[.., r - dy, c - dx], 0 where outside      y (2, 3, 9, 10)
  translate1   dx=0, dy=3                                                           y (2, 3, 9, 10)
  scale0       s=0.9: h' = ceil(s H) = 9, w' = ceil(s W) = 9, F.interpolate(bilinear,
               align_corners=True) to (h', w'), then zero pad py = max(0, ceil((H - h') / 2)) = 0
               rows top and bottom, px = 1 column left and right                    y (2, 3, 9, 11)
  scale1       s=1.1: h' = 10, w' = 11, no padding                                  y (2, 3, 10, 11)
  rotate0      a=7 degrees   about (cx, cy) = ((W - 1) / 2, (H - 1) / 2), see below  y (2, 3, 9, 10)
  rotate1      a=-10 degrees                                                        y (2, 3, 9, 10)
  composite    pad 3 (value 0.5) -> translate dx=1, dy=2 -> scale 0.92 -> rotate -4 -> translate
               dx=3, dy=0 -> (y - mean[c]) / std[c], mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
               shapes 9x10 -> 15x16 -> 15x16 -> 16x17 (h' 14, w' 15, py = px = 1) -> 16x17 -> 16x17
                                                                                    y (2, 3, 16, 17)
  composite.stage<k>  F32  the composite's value after its k-th transform, k = 1 .. 5 (before normalising)
The scales are s = 1 + (i - 5) / 50 in double (i = 0, 10 and 1 for 0.9, 1.1, 0.92).
Rotation (OpenCV / kornia convention): M = [[cos, sin, (1 - cos) cx - sin cy], [-sin, cos, sin cx +
(1 - cos) cy]] (a in radians) maps a source pixel (x, y) to its destination; y at a destination
pixel is the bilinear sample of x at M^-1 (destination), corners outside the image contributing 0
(F.grid_sample(bilinear, zeros, align_corners=True) on the grid 2 * source / (size - 1) - 1).
A positive angle turns the picture counter-clockwise on screen: the source pixel (cx + 3, cy) lands
on (cx + 3 cos a, cy - 3 sin a), i.e. above the centre for a = 90 degrees.

adam.golden.safetensors (metadata: lr, betas, eps, weight_decay, steps):
  p0          F32 (16,)   initial parameter
  g<t>        F32 (16,)   the gradient of step t = 0 .. 3; elements 0 .. 2 are scaled by 1e-7 (where eps
                          matters) and g0[3] = 0
  p<t+1>      F32 (16,)   the parameter after step t
  exp_avg     F32 (16,)   Adam's first moment after the last step
  exp_avg_sq  F32 (16,)   Adam's second moment after the last step
torch.optim.Adam(lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0), for step t = 1, 2, ...:
m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
"""
import json
import math
import os
import sys

try:
    import torch
except ImportError:
    _SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(_SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYSTEM_PY):
        os.execv(_SYSTEM_PY, [_SYSTEM_PY] + sys.argv)
    raise

import numpy as np
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from safetensors_writer import read_safetensors, tensor_bytes, write_safetensors  # noqa: E402

OUT_DIR = os.path.join(HERE, "featurevis")
SIZE_BUDGET_BYTES = 150 * 1000

COLOR_CORRELATION = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
DECAY_POWER = 1.0
MAGIC = 4.0
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def randn(gen, shape, scale=1.0):
    """A stored float32 input; its float64 copy is what the references are computed from."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).float()


# ---------------------------------------------------------------------------------------------
# The Fourier image parameterisation


def fourier_scale(h, w):
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1][None, :]
    freqs = np.sqrt(fy * fy + fx * fx)
    return torch.from_numpy(1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** DECAY_POWER)


def normalised_color_correlation():
    c = np.array(COLOR_CORRELATION, dtype=np.float64)
    return torch.from_numpy(c / np.max(np.linalg.norm(c, axis=0)))


def fourier_raw(spectrum, scale, h, w):
    return torch.fft.irfftn(torch.view_as_complex(scale[..., None] * spectrum), s=(h, w), norm="ortho") / MAGIC


def decorrelate(raw, cn):
    return torch.einsum("cj,njyx->ncyx", cn, raw)


def hermitian_weights(w):
    """c_kx: how often column kx of the half spectrum counts in the full one (its mirror included)."""
    weight = np.full(w // 2 + 1, 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[w // 2] = 1.0
    return weight


def direct_dft_raw(spectrum, scale, h, w):
    """The docstring's direct DFT in numpy: an implementation independent of torch.fft."""
    t = (scale.numpy()[..., None] * spectrum.numpy())
    t = t[..., 0] + 1j * t[..., 1]
    wf = w // 2 + 1
    weight = hermitian_weights(w)
    ky, kx = np.arange(h), np.arange(wf)
    y, x = np.arange(h), np.arange(w)
    phase = 2 * np.pi * (np.einsum("a,y->ay", ky, y)[:, None, :, None] / h
                         + np.einsum("b,x->bx", kx, x)[None, :, None, :] / w)  # (ky, kx, y, x)
    basis = weight[None, :, None, None] * np.exp(1j * phase)
    return np.real(np.einsum("ncab,abyx->ncyx", t, basis)) / (MAGIC * math.sqrt(h * w))


def make_fourier_golden():
    gen = torch.Generator().manual_seed(20240901)
    cn = normalised_color_correlation()
    tensors = []
    sizes = [(6, 8), (7, 5)]
    batch = 2
    for h, w in sizes:
        key = f"{h}x{w}"
        wf = w // 2 + 1
        s32 = randn(gen, (batch, 3, h, wf, 2), 1.2)
        g32 = randn(gen, (batch, 3, h, w))
        scale = fourier_scale(h, w)
        spectrum = s32.double().requires_grad_(True)
        raw = fourier_raw(spectrum, scale, h, w)
        dec = decorrelate(raw, cn)
        image = torch.sigmoid(dec)
        (image * g32.double()).sum().backward()
        d_spectrum = spectrum.grad

        # Independent checks: the direct DFT, and the gradient as its transpose.
        np.testing.assert_allclose(raw.detach().numpy(), direct_dft_raw(s32.double(), scale, h, w), rtol=0, atol=1e-12)
        g_raw = torch.einsum("cj,ncyx->njyx", cn, g32.double() * image.detach() * (1 - image.detach()))
        check_direct_dft_gradient(d_spectrum, g_raw, scale, h, w)
        silent = [(ky, kx) for ky in {0, h // 2 * (h % 2 == 0)} for kx in {0, w // 2 * (w % 2 == 0)}]
        assert zero_imaginary_entries(d_spectrum) == sorted(silent), zero_imaginary_entries(d_spectrum)
        print(f"fourier {key}: dec in [{dec.min().item():.2f}, {dec.max().item():.2f}], "
              f"zero imaginary gradients at {sorted(silent)}")

        tensors += [(f"{key}.S", s32), (f"{key}.scale", scale.float()), (f"{key}.raw", raw.detach().float()),
                    (f"{key}.image", image.detach().float()), (f"{key}.g_image", g32),
                    (f"{key}.dS", d_spectrum.float())]
    tensors.append(("Cn", cn.float()))
    meta = {"sizes": json.dumps([list(s) for s in sizes]), "batch": str(batch), "decay_power": str(DECAY_POWER),
            "magic": str(MAGIC), "color_correlation": json.dumps(COLOR_CORRELATION),
            "torch_version": torch.__version__, "reference_precision": "float64"}
    return write_checked(os.path.join(OUT_DIR, "fourier.golden.safetensors"), tensors, meta)


def check_direct_dft_gradient(d_spectrum, g_raw, scale, h, w):
    """dS = scale * c_kx / (4 sqrt(HW)) * sum_yx g_raw * (cos, -sin)(phase), from the direct DFT."""
    wf = w // 2 + 1
    weight = hermitian_weights(w)
    phase = 2 * np.pi * (np.arange(h)[:, None, None, None] * np.arange(h)[None, None, :, None] / h
                         + np.arange(wf)[None, :, None, None] * np.arange(w)[None, None, None, :] / w)
    g = g_raw.numpy()
    re = np.einsum("ncyx,abyx->ncab", g, np.cos(phase))
    im = -np.einsum("ncyx,abyx->ncab", g, np.sin(phase))
    factor = scale.numpy() * weight[None, :] / (MAGIC * math.sqrt(h * w))
    expected = np.stack([re * factor, im * factor], axis=-1)
    np.testing.assert_allclose(d_spectrum.numpy(), expected, rtol=0, atol=1e-12)


def zero_imaginary_entries(d_spectrum):
    im = d_spectrum[..., 1].abs().amax(dim=(0, 1))
    return [(int(a), int(b)) for a, b in (im < 1e-12).nonzero().tolist()]


# ---------------------------------------------------------------------------------------------
# The transforms, in float64


def pad(x, p, value):
    return F.pad(x, [p, p, p, p], value=value)


def translate(x, dx, dy):
    """y[.., r, c] = x[.., r - dy, c - dx], zero where the source is outside; same size."""
    h, w = x.shape[-2:]
    padded = F.pad(x, [max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)])
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


def scaled_size(s, h, w):
    return math.ceil(s * h), math.ceil(s * w)


def scale_image(x, s):
    h, w = x.shape[-2:]
    h2, w2 = scaled_size(s, h, w)
    y = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=True)
    py, px = max(0, math.ceil((h - h2) / 2)), max(0, math.ceil((w - w2) / 2))
    return F.pad(y, [px, px, py, py])


def rotation_matrix(angle_degrees, h, w):
    """Maps a source pixel (x, y) to its destination (OpenCV getRotationMatrix2D, scale 1)."""
    a = math.radians(angle_degrees)
    c, s = math.cos(a), math.sin(a)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    return [[c, s, (1 - c) * cx - s * cy], [-s, c, s * cx + (1 - c) * cy]]


def source_coordinates(m, h, w):
    """M^-1 applied to every destination pixel: (source x, source y), each (h, w)."""
    inv = torch.linalg.inv(torch.tensor(m + [[0.0, 0.0, 1.0]], dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2], inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]


def warp_affine(x, m):
    n, _, h, w = x.shape
    sx, sy = source_coordinates(m, h, w)
    grid = torch.stack([2 * sx / (w - 1) - 1, 2 * sy / (h - 1) - 1], dim=-1)
    grid = grid[None].expand(n, h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def rotate(x, angle_degrees):
    return warp_affine(x, rotation_matrix(angle_degrees, x.shape[-2], x.shape[-1]))


def normalise(x):
    mean = torch.tensor(MEAN, dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(STD, dtype=torch.float64)[None, :, None, None]
    return (x - mean) / std


def bilinear_zeros(img, sy, sx):
    """Independent bilinear sampler (numpy): img (..., H, W) at real (sy, sx) arrays, each of the four
    neighbours outside the image contributing 0."""
    h, w = img.shape[-2:]
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = sy - y0, sx - x0
    out = np.zeros(img.shape[:-2] + sy.shape)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = img[..., np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            out += np.where(inside, wy * wx, 0.0) * vals
    return out


def check_transform_conventions(x):
    """Conventions checked on single bright pixels and against the independent sampler."""
    # Translation: a pixel at (r, c) moves to (r + dy, c + dx); the same as warp_affine with the
    # source-to-destination matrix [[1, 0, dx], [0, 1, dy]].
    dot = torch.zeros(1, 1, 9, 10, dtype=torch.float64)
    dot[0, 0, 4, 5] = 1.0
    moved = translate(dot, 2, 1)
    assert moved[0, 0, 5, 7] == 1.0 and moved.sum() == 1.0
    for dx, dy in ((2, 1), (0, 3), (-3, 2), (4, -5)):
        torch.testing.assert_close(translate(x, dx, dy), warp_affine(x, [[1.0, 0.0, dx], [0.0, 1.0, dy]]),
                                   rtol=0, atol=1e-12)
    # Rotation by 0 is the identity; by +90 degrees (cx + 3, cy) goes to (cx, cy - 3), up the image.
    torch.testing.assert_close(rotate(x, 0), x, rtol=0, atol=1e-12)
    for h, w in ((9, 9), (9, 11)):
        cy, cx = (h - 1) // 2, (w - 1) // 2
        dot = torch.zeros(1, 1, h, w, dtype=torch.float64)
        dot[0, 0, cy, cx + 3] = 1.0
        turned = rotate(dot, 90)
        expected = torch.zeros_like(dot)
        expected[0, 0, cy - 3, cx] = 1.0
        torch.testing.assert_close(turned, expected, rtol=0, atol=1e-12)
    # Rotation against the numpy sampler at M^-1 (destination).
    for angle in (7, -10, -4, 33):
        h, w = x.shape[-2:]
        sx, sy = source_coordinates(rotation_matrix(angle, h, w), h, w)
        np.testing.assert_allclose(rotate(x, angle).numpy(), bilinear_zeros(x.numpy(), sy.numpy(), sx.numpy()),
                                   rtol=0, atol=1e-12)
    # Scale: bilinear with align_corners=True samples the source at dst * (in - 1) / (out - 1).
    for s in (0.9, 1.1, 0.92, 1.04):
        h, w = x.shape[-2:]
        h2, w2 = scaled_size(s, h, w)
        sy = np.arange(h2)[:, None] * (h - 1) / (h2 - 1) + np.zeros((1, w2))
        sx = np.arange(w2)[None, :] * (w - 1) / (w2 - 1) + np.zeros((h2, 1))
        resized = F.interpolate(x, size=(h2, w2), mode="bilinear", align_corners=True)
        np.testing.assert_allclose(resized.numpy(), bilinear_zeros(x.numpy(), sy, sx), rtol=0, atol=1e-12)


def forward_and_gradient(fn, x32, gy32=None, gen=None):
    """(y, gy, gx) in float64: y = fn(x), gx = d(sum(y * gy)) / dx, with gy drawn when not given."""
    x = x32.double().requires_grad_(True)
    y = fn(x)
    if gy32 is None:
        gy32 = randn(gen, tuple(y.shape))
    (y * gy32.double()).sum().backward()
    # All of them are affine in x: <y(x) - y(0), gy> = <x, gx> (the adjoint identity).
    with torch.no_grad():
        lhs = ((y - fn(torch.zeros_like(x))) * gy32.double()).sum()
        rhs = (x * x.grad).sum()
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(rhs)), (lhs.item(), rhs.item())
    return y.detach(), gy32, x.grad


def make_transforms_golden():
    gen = torch.Generator().manual_seed(4242)
    x32 = randn(gen, (2, 3, 9, 10))
    check_transform_conventions(x32.double())
    s = {i: 1 + (i - 5) / 50 for i in (0, 1, 10)}
    assert s[0] == 0.9 and s[10] == 1.1 and s[1] == 0.92
    cases = [
        ("pad", lambda x: pad(x, 3, 0.5)),
        ("translate0", lambda x: translate(x, 2, 1)),
        ("translate1", lambda x: translate(x, 0, 3)),
        ("scale0", lambda x: scale_image(x, s[0])),
        ("scale1", lambda x: scale_image(x, s[10])),
        ("rotate0", lambda x: rotate(x, 7)),
        ("rotate1", lambda x: rotate(x, -10)),
    ]
    stages = [lambda x: pad(x, 3, 0.5), lambda x: translate(x, 1, 2), lambda x: scale_image(x, s[1]),
              lambda x: rotate(x, -4), lambda x: translate(x, 3, 0)]

    def composite(x):
        for stage in stages:
            x = stage(x)
        return normalise(x)

    cases.append(("composite", composite))
    tensors = [("x", x32)]
    expected_shapes = {"pad": (15, 16), "scale0": (9, 11), "scale1": (10, 11), "composite": (16, 17)}
    for name, fn in cases:
        y, gy, gx = forward_and_gradient(fn, x32, gen=gen)
        assert tuple(y.shape[-2:]) == expected_shapes.get(name, (9, 10)), (name, y.shape)
        tensors += [(f"{name}.y", y.float()), (f"{name}.gy", gy), (f"{name}.gx", gx.float())]
    value = x32.double()
    for k, stage in enumerate(stages, 1):
        value = stage(value)
        tensors.append((f"composite.stage{k}", value.float()))
    meta = {
        "pad": json.dumps({"p": 3, "value": 0.5}),
        "translate0": json.dumps({"dx": 2, "dy": 1}),
        "translate1": json.dumps({"dx": 0, "dy": 3}),
        "scale0": json.dumps({"i": 0, "s": s[0], "h": 9, "w": 9, "py": 0, "px": 1}),
        "scale1": json.dumps({"i": 10, "s": s[10], "h": 10, "w": 11, "py": 0, "px": 0}),
        "rotate0": json.dumps({"degrees": 7}),
        "rotate1": json.dumps({"degrees": -10}),
        "composite": json.dumps([{"pad": 3, "value": 0.5}, {"translate": {"dx": 1, "dy": 2}},
                                 {"scale": {"i": 1, "s": s[1], "h": 14, "w": 15, "py": 1, "px": 1}},
                                 {"rotate": {"degrees": -4}}, {"translate": {"dx": 3, "dy": 0}},
                                 {"normalise": {"mean": MEAN, "std": STD}}]),
        "torch_version": torch.__version__, "reference_precision": "float64",
    }
    for k in ("scale0", "scale1"):
        p = json.loads(meta[k])
        assert scaled_size(p["s"], 9, 10) == (p["h"], p["w"]), k
    assert scaled_size(s[1], 15, 16) == (14, 15)
    return write_checked(os.path.join(OUT_DIR, "transforms.golden.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------------
# Adam


def make_adam_golden():
    gen = torch.Generator().manual_seed(777)
    lr, betas, eps = 0.05, (0.9, 0.999), 1e-8
    p0 = randn(gen, (16,))
    grads = []
    for t in range(4):
        g = randn(gen, (16,))
        g[:3] *= 1e-7
        if t == 0:
            g[3] = 0.0
        grads.append(g.float())
    p = p0.double().clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, weight_decay=0)
    tensors = [("p0", p0)]
    # The hand-written update the docstring states, checked against torch at every step.
    q, m, v = p0.double().clone(), torch.zeros(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    for t, g32 in enumerate(grads):
        p.grad = g32.double()
        opt.step()
        g = g32.double()
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        step = t + 1
        q = q - lr / (1 - betas[0] ** step) * m / (v.sqrt() / math.sqrt(1 - betas[1] ** step) + eps)
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-14)
        tensors += [(f"g{t}", g32), (f"p{t + 1}", p.detach().float())]
    state = opt.state[p]
    torch.testing.assert_close(state["exp_avg"], m, rtol=0, atol=1e-15)
    torch.testing.assert_close(state["exp_avg_sq"], v, rtol=0, atol=1e-15)
    tensors += [("exp_avg", state["exp_avg"].float()), ("exp_avg_sq", state["exp_avg_sq"].float())]
    meta = {"lr": str(lr), "betas": json.dumps(list(betas)), "eps": str(eps), "weight_decay": "0",
            "steps": str(len(grads)), "torch_version": torch.__version__, "reference_precision": "float64"}
    return write_checked(os.path.join(OUT_DIR, "adam.golden.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------------


def write_checked(path, tensors, metadata):
    """Writes, then reads the file back with the independent reader: same names, order, shapes, values."""
    write_safetensors(path, tensors, metadata)
    back, meta = read_safetensors(path)
    assert meta == metadata, path
    assert list(back) == [name for name, _ in tensors], path
    for name, t in tensors:
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), (path, name)
        assert back[name].numpy().tobytes() == tensor_bytes(t), (path, name)
    size = os.path.getsize(path)
    print(f"wrote {os.path.relpath(path)} ({size} bytes, {len(tensors)} tensors)")
    return size


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    total = make_fourier_golden() + make_transforms_golden() + make_adam_golden()
    print(f"total {total} bytes")
    if total > SIZE_BUDGET_BYTES:
        sys.exit(f"make_featurevis_golden.py: {total} bytes, over the {SIZE_BUDGET_BYTES} byte budget")


if __name__ == "__main__":
    main()
