#!/usr/bin/env python3
"""PyTorch peer for `spade visualize`: Lucent's render_vis (lucent.optvis.render.render_vis with
param.image(size, fft=True, decorrelate=True) and transform.standard_transforms) re-implemented in
plain PyTorch, since neither lucent nor kornia is installed here.

    /usr/bin/python3 bench/featurevis_pytorch.py [--weights W.safetensors] [--class K] [--steps 512]
        [--size 224] [--seed 0] [--threads 2] [--repeats 1] [--warmup 2] [--weight-grads]
        [--save-image OUT.npy]

What it mirrors, step by step (the definitions spade's visualize follows too):
  image      Fourier parameter S (1, 3, H, W//2+1, 2) ~ randn * 0.01, scaled per frequency by
             1 / max(|f|, 1/max(H, W)), torch.fft.irfftn(norm="ortho") / 4, colour-decorrelated with
             Lucent's normalised colour matrix (NHWC matmul with its transpose), sigmoid
  transforms drawn anew every step with numpy's RNG, as Lucent does (np.random.choice):
             pad 12 with 0.5; jitter 8 (integer shift, zeros shifted in); scale from 0.90..1.10
             (bilinear, align_corners=True, to ceil(s*size), zero-padded back up when smaller);
             rotate by -10..10 degrees (0 five more times) about the centre; jitter 4
  model      torchvision ResNet-50 in eval mode, input normalised with the ImageNet mean/std
  objective  logit K of fc (Lucent's "fc:K" channel objective); loss = -logit
  optimiser  torch.optim.Adam([S], lr=0.05), --steps steps of zero_grad, forward, backward, step

Where it deviates from Lucent:
  - no kornia: jitter is an exact integer shift (F.pad + crop) where kornia.translate warps
    bilinearly with an integer offset (the same up to rounding), and the rotation is F.grid_sample
    (bilinear, zeros, align_corners=True) on the inverse of OpenCV's rotation matrix, which is what
    kornia's warp_affine computes;
  - Lucent's random_scale pads with F.pad(x, [py, px] * 2), i.e. left py, right px, top py, bottom px;
    here py pads top and bottom and px left and right (identical for square images);
  - Lucent upsamples images smaller than 224 to 224 before the model; this peer (like spade) feeds
    them at their own size, so only --size >= 224 matches Lucent exactly;
  - the model's parameters are frozen (requires_grad False), so backward computes only the input
    gradient. A Lucent user who does not freeze the model also computes (and accumulates) every
    weight gradient each step; --weight-grads does that too (slower).

Weights: --weights reads a torchvision-keyed resnet50 safetensors file (bench/saliency_pytorch.py's
reader, tensor by tensor into the model); without it, the seeded random ResNet-50 with calibrated
BatchNorm that bench/saliency_pytorch.py writes for the comparisons (seed --seed).

Timing: the model is loaded first and not timed; --warmup steps (default 2) then run on a throwaway
parameter (oneDNN primitive creation and allocator warm-up), after which --repeats optimisations of
--steps steps each run from the same seed; seconds is their median. Output: ONE JSON line,
  {"peer": "pytorch-lucent-equivalent", "seconds", "all_s", "steps", "s_per_step", "objective_first",
   "objective_final", "objective_image", "rss_before_mb", "rss_peak_mb", ...}
objective_first / objective_final are the logit at the first / last step (on that step's transformed
image, before its Adam update), objective_image the logit of the final image without transforms
(computed after the timer). rss_peak_mb is the process's peak resident set (ru_maxrss).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

try:
    import torch
except ImportError:
    # The Debian torch lives in the system interpreter; a pyenv/venv python3 may shadow it.
    _SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(_SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYSTEM_PY):
        os.execv(_SYSTEM_PY, [_SYSTEM_PY] + sys.argv)
    raise

import numpy as np
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from saliency_pytorch import load_model, make_model_and_input  # noqa: E402

PEER = "pytorch-lucent-equivalent"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lucent's colour_correlation_svd_sqrt, normalised by its largest column norm
COLOR_CORRELATION = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_NORMALISED = COLOR_CORRELATION / np.max(np.linalg.norm(COLOR_CORRELATION, axis=0))
PAD, JITTER1, JITTER2 = 12, 8, 4
SCALES = [1 + (i - 5) / 50.0 for i in range(11)]
ANGLES = list(range(-10, 11)) + 5 * [0]
DECAY_POWER, MAGIC = 1.0, 4.0


# ---------------------------------------------------------------------------------------------
# parameterisation

class FourierImage:
    """sigmoid(decorrelate(irfft(scale * S) / 4)): the image as a function of the spectrum S."""

    def __init__(self, size, batch=1, sd=0.01):
        self.h = self.w = size
        fy = np.fft.fftfreq(self.h)[:, None]
        fx = np.fft.fftfreq(self.w)[: self.w // 2 + 1]
        freqs = np.sqrt(fx * fx + fy * fy)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(self.w, self.h)) ** DECAY_POWER
        self.scale = torch.tensor(scale, dtype=torch.float32)[None, None, ..., None]
        self.spectrum = (torch.randn(batch, 3, *freqs.shape, 2) * sd).requires_grad_(True)
        self.colour_t = torch.from_numpy(COLOR_NORMALISED.T.copy())

    def __call__(self):
        raw = torch.fft.irfftn(torch.view_as_complex(self.scale * self.spectrum), s=(self.h, self.w), norm="ortho")
        raw = raw / MAGIC
        dec = torch.matmul(raw.permute(0, 2, 3, 1), self.colour_t).permute(0, 3, 1, 2)
        return torch.sigmoid(dec)


# ---------------------------------------------------------------------------------------------
# transforms (parameters drawn by the caller, one set per step for the whole batch)

def jitter(x, dx, dy):
    """out[y, x] = in[y - dy, x - dx], zeros shifted in; same size."""
    h, w = x.shape[2:]
    return F.pad(x, [dx, 0, dy, 0])[:, :, :h, :w]


def random_scale(x, s):
    h, w = x.shape[2:]
    sh, sw = math.ceil(s * h), math.ceil(s * w)
    py, px = max(0, math.ceil((h - sh) / 2)), max(0, math.ceil((w - sw) / 2))
    up = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=True)
    return F.pad(up, [px, px, py, py])


def rotate(x, degrees):
    """Rotation about the centre as kornia.warp_affine(get_rotation_matrix2d(...)) does: the forward
    matrix M = [[c, s, (1-c) cx - s cy], [-s, c, s cx + (1-c) cy]] maps source to destination, so
    each output pixel samples the input at M^-1 (x, y)."""
    n, _, h, w = x.shape
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    tx, ty = (1 - c) * cx - s * cy, s * cx + (1 - c) * cy
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    # inverse of the rotation part [[c, s], [-s, c]] is its transpose
    src_x = c * (xs - tx) - s * (ys - ty)
    src_y = s * (xs - tx) + c * (ys - ty)
    grid = torch.stack([2 * src_x / (w - 1) - 1, 2 * src_y / (h - 1) - 1], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid.expand(n, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True)


def draw_transform(rng):
    """One step's parameters, in Lucent's order of draws."""
    return {"j1": (int(rng.choice(JITTER1)), int(rng.choice(JITTER1))), "scale": float(rng.choice(SCALES)),
            "angle": int(rng.choice(ANGLES)), "j2": (int(rng.choice(JITTER2)), int(rng.choice(JITTER2)))}


def standard_transforms(x, t):
    x = F.pad(x, [PAD] * 4, value=0.5)
    x = jitter(x, *t["j1"])
    x = random_scale(x, t["scale"])
    x = rotate(x, t["angle"])
    return jitter(x, *t["j2"])


def normalise(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------

def render(model, target, size, steps, seed):
    """Lucent's render_vis loop; returns the image function and the objective at the first and last
    step."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    image = FourierImage(size)
    opt = torch.optim.Adam([image.spectrum], lr=0.05)
    first = last = float("nan")
    for step in range(steps):
        opt.zero_grad()
        logits = model(normalise(standard_transforms(image(), draw_transform(rng))))
        objective = logits[:, target]
        (-objective.sum()).backward()
        opt.step()
        last = float(objective.detach().sum())
        if step == 0:
            first = last
    return image, first, last


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None,
                   help="torchvision resnet50 safetensors (default: seeded random weights, BN calibrated)")
    p.add_argument("--class", dest="target", type=int, default=1, help="logit to maximise (default 1)")
    p.add_argument("--steps", type=int, default=512, help="optimisation steps (default 512)")
    p.add_argument("--size", type=int, default=224, help="image height and width (default 224)")
    p.add_argument("--seed", type=int, default=0, help="initial spectrum and transform draws (and random weights)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="timed optimisations; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps on a throwaway image first (default 2)")
    p.add_argument("--weight-grads", action="store_true",
                   help="leave the model's parameters trainable, as an unfrozen model under Lucent (slower)")
    p.add_argument("--save-image", default=None, help="write the final image, (1, 3, size, size) float32 in [0, 1]")
    a = p.parse_args(argv)
    if a.steps < 1 or a.size < 8 or a.threads < 1 or a.repeats < 1 or a.warmup < 0:
        p.error("--steps, --threads, --repeats must be >= 1, --size >= 8, --warmup >= 0")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    if args.weights:
        if not os.path.isfile(args.weights):
            raise SystemExit(f"{args.weights}: no such file")
        model = load_model({"weights": args.weights})
    else:
        model = make_model_and_input(args.seed)[0]
    if args.weight_grads:
        for prm in model.parameters():
            prm.requires_grad_(True)
    if not 0 <= args.target < model.fc.out_features:
        raise SystemExit(f"--class {args.target} is outside [0, {model.fc.out_features})")

    if args.warmup:
        render(model, args.target, args.size, args.warmup, args.seed + 1)
    model.zero_grad(set_to_none=True)
    rss_before = peak_rss_mb()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        image, first, last = render(model, args.target, args.size, args.steps, args.seed)
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    with torch.no_grad():
        final = image()
        objective_image = float(model(normalise(final))[:, args.target].sum())
    if args.save_image:
        np.save(args.save_image, final.numpy().astype(np.float32))
    seconds = statistics.median(times)
    print(json.dumps({
        "peer": PEER, "seconds": round(seconds, 4), "all_s": [round(s, 4) for s in times], "steps": args.steps,
        "s_per_step": round(seconds / args.steps, 5), "size": args.size, "class": args.target,
        "objective_first": round(first, 5), "objective_final": round(last, 5),
        "objective_image": round(objective_image, 5), "repeats": args.repeats, "warmup_steps": args.warmup,
        "weight_grads": args.weight_grads, "threads": args.threads, "seed": args.seed,
        "rss_before_mb": round(rss_before, 1), "rss_peak_mb": round(peak_rss_mb(), 1),
        "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
