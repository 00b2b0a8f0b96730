#!/usr/bin/env python3
"""PyTorch peer for spade's FastSPADE: the authors' SparseGPT code path, re-implemented faithfully.

    /usr/bin/python3 bench/spade_pytorch.py [--arch resnet50] [--augs 32] [--layers all|layer4+fc]
        [--sparsity 0.9] [--image PATH] [--threads 2] [--batch B] [--repeat R] [--seed S]
        [--save-trace OUT.safetensors] [--device cpu|cuda]

The authors' code is not available offline, so this file re-creates what it does (see
docs: /work/shared/reference/SPADE.md sections 2.1-2.3):

1. augmentation: N random augmentations of ONE image with torchvision transforms
   (RandomResizedCrop(224, scale=(0.2, 1)), RandomHorizontalFlip, ColorJitter(brightness=0.5,
   hue=0.3), ToTensor, Normalize(ImageNet));
2. forward + Hessians: forward hooks on every prunable layer at once, then ONE dense forward pass
   over the augmented batch (in chunks of --batch images; default: all in one batch, as the
   authors did); each hook feeds its layer's input to the public SparseGPT `add_batch`
   (running-mean Hessian H = 2/n sum X X^T, n counting images; convs unfolded with nn.Unfold);
3. pruning: every layer independently from its own Hessian with SparseGPT `fasterprune`
   (blocksize = kh*kw for convs, 1 for Linear, percdamp 0.01), so all layers see the dense
   model's activations. Only weights change; biases and BatchNorm stay as they are.

Two quirks of the public code are kept: `fasterprune`'s `<=` threshold prunes floor(numel*s)+1
weights per block (so s = 0 still prunes one), and `add_batch` counts a 2-D Linear input (B, F) as
ONE sample, so the fc Hessian is 2 X^T X per forward call instead of a mean over images (same
pruning when all augmentations go in one batch, since fasterprune ignores the scale of H; with
unequal --batch chunks the chunks are weighted equally).

BLAS: torch's CPU matmul (the Hessian products and every update in fasterprune) goes through the
libblas.so.3 that the Debian torch links; the JSON reports which library was loaded ("blas").
Measured on the project machine (2 cores, 32 augmentations, ResNet-50, all 53 layers):
OpenBLAS-pthread (Debian's default libopenblas0) 43 s; OpenBLAS-openmp 26 s (no thread
oversubscription against torch's OpenMP threads); the netlib reference BLAS over 10 minutes.
To time another BLAS without installing it system-wide, put the directory holding its
libblas.so.3 first in LD_LIBRARY_PATH. Timings are very sensitive to other load on the machine.

Prunable layers: every Conv2d with groups == 1 and every Linear, except the ResNet stem `conv1`
(ResNet-50: 53 layers; MobileNetV2: all but the depthwise convs, whose grouped branch crashes in the
authors' code). `--layers layer4+fc` keeps those whose name starts with `layer4.` plus `fc`; any
other value is a comma-separated list of name prefixes.

Weights are torchvision's random initialisation after torch.manual_seed(--seed) (pruning cost does
not depend on the weights' values). The default image is a synthetic 320x240 RGB picture made with
a fixed seed; --image takes any file PIL can read.

Output: ONE JSON line on stdout,
    {"peer": "pytorch-spade-sparsegpt", "arch", "augs", "layers", "layer_count", "augment_s",
     "forward_hessian_s", "prune_s", "total_s", "threads", "torch", ...}
With --repeat R > 1 the whole pipeline runs R times from the same dense weights and each time
field is the median over the R runs (`*_all` lists every run).

--device cuda runs the model, the Hessian hooks and fasterprune on the GPU (as the authors' code
does; the augmentations stay on the CPU, so augment_s is CPU time), with TF32 off as the public
sparsegpt.py sets it, and torch.cuda.synchronize() before each timer reading; each chunk is copied
to the GPU inside the forward + Hessians time. The JSON then also has "device" and "gpu".

--save-trace writes the pruned model's state_dict (the SPADE "trace") as safetensors with the
repository's shared writer (tests/data/safetensors_writer.py), for cross-checks with the engine.
"""
import argparse
import json
import math
import os
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
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from PIL import Image

PEER = "pytorch-spade-sparsegpt"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# SparseGPT (Frantar & Alistarh 2023), public `SparseGPT` class, as SPADE uses it. The code below
# follows the public sparsegpt.py line by line; the only changes are: no transformers.Conv1D
# branch, no quantizer, no CUDA synchronisation/debug prints, and the body of `fasterprune` is a
# module-level function of (W, H) so that the golden-fixture script can call it directly.

def sparsegpt_fasterprune(W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=.01, dtype=torch.float32):
    """SparseGPT `fasterprune` on a (rows, columns) weight W with Hessian H (modified in place,
    as the original does with self.H). Returns the pruned W (dtype `dtype`; float32 like the
    original unless asked otherwise, which only the fixture script's float64 check does)."""
    W = W.clone().to(dtype)
    H = H.to(dtype)
    rows, columns = W.shape
    dev = W.device

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    Losses = torch.zeros(rows, device=dev, dtype=dtype)

    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns, device=dev)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H

    mask = None

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1

        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        if prunen == 0:
            if mask is not None:
                mask1 = mask[:, i1:i2]
            else:
                tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1) == 1

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]

            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)

            q = w.clone()
            q[mask1[:, i]] = 0

            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2

            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        Losses += torch.sum(Losses1, 1) / 2

        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    return W


def unfold_input(layer, inp):
    """A conv layer's input (N, C, H, W) -> (C*kh*kw, N*L) columns, as the public code does."""
    unfold = nn.Unfold(layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    inp = unfold(inp)
    inp = inp.permute([1, 0, 2])
    return inp.flatten(1)


class SparseGPT:
    def __init__(self, layer):
        self.layer = layer
        self.dev = self.layer.weight.device
        W = layer.weight.data.clone()
        if isinstance(self.layer, nn.Conv2d):
            W = W.flatten(1)
        self.rows = W.shape[0]
        self.columns = W.shape[1]
        self.H = torch.zeros((self.columns, self.columns), device=self.dev)
        self.nsamples = 0

    def add_batch(self, inp, out):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if isinstance(self.layer, nn.Linear):
            if len(inp.shape) == 3:
                inp = inp.reshape((-1, inp.shape[-1]))
            inp = inp.t()
        if isinstance(self.layer, nn.Conv2d):
            inp = unfold_input(self.layer, inp)
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def fasterprune(self, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=.01):
        W = self.layer.weight.data.clone()
        if isinstance(self.layer, nn.Conv2d):
            W = W.flatten(1)
        H = self.H
        del self.H
        W = sparsegpt_fasterprune(W, H, sparsity, prunen, prunem, blocksize, percdamp)
        self.layer.weight.data = W.reshape(self.layer.weight.shape).to(self.layer.weight.data.dtype)

    def free(self):
        self.H = None


def spade_blocksize(layer):
    """SPADE's choice: one block per input channel (kh*kw columns) for convs, 1 for Linear."""
    if isinstance(layer, nn.Conv2d):
        return layer.kernel_size[0] * layer.kernel_size[1]
    return 1


# ---------------------------------------------------------------------------------------------
# SPADE's pipeline around it

def prunable_layers(model, arch, spec):
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1 or isinstance(m, nn.Linear):
            if arch.startswith("resnet") and name == "conv1":
                continue  # the ResNet stem stays dense
            layers.append((name, m))
    if spec == "all":
        return layers
    if spec == "layer4+fc":
        prefixes, exact = ["layer4."], ["fc"]
    else:
        prefixes, exact = [p for p in spec.split(",") if p], []
    chosen = [(n, m) for n, m in layers if n in exact or any(n == p or n.startswith(p) for p in prefixes)]
    if not chosen:
        raise SystemExit(f"--layers {spec!r} selects none of: {', '.join(n for n, _ in layers)}")
    return chosen


def synthetic_image(width=320, height=240, seed=0):
    """A fixed RGB picture: smooth colour gradients, a few discs and rectangles, mild noise."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / 23.0)], axis=-1)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(15, 60)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    for _ in range(4):
        x0, y0 = rng.randint(0, width - 40), rng.randint(0, height - 30)
        img[y0:y0 + rng.randint(10, 30), x0:x0 + rng.randint(20, 40)] = rng.uniform(0, 1, 3)
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    return Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGB")


def augmentation():
    return T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.5, hue=0.3),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def loaded_blas():
    """The BLAS library this process actually uses (torch's CPU matmul goes through it): the
    Debian torch links libblas.so.3, which may be the slow netlib reference BLAS or OpenBLAS."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
    except OSError:
        return "unknown"
    real = sorted({os.path.realpath(p) for p in paths if "lapack" not in os.path.basename(p)})
    return ",".join(real) if real else "unknown"


def run_once(model, layers, image, args):
    """One SPADE trace: returns the timings; the model's prunable weights are left pruned."""
    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    aug = augmentation()
    batch = torch.stack([aug(image) for _ in range(args.augs)])
    t1 = time.perf_counter()

    gpts = {name: SparseGPT(layer) for name, layer in layers}

    def add_batch(name):
        def tmp(_, inp, out):
            gpts[name].add_batch(inp[0].data, out.data)
        return tmp

    handles = [layer.register_forward_hook(add_batch(name)) for name, layer in layers]
    chunk = args.batch or args.augs
    with torch.no_grad():
        for i in range(0, args.augs, chunk):
            model(batch[i:i + chunk].to(args.device))
    for h in handles:
        h.remove()
    sync()
    t2 = time.perf_counter()

    for name, layer in layers:
        gpts[name].fasterprune(args.sparsity, blocksize=spade_blocksize(layer), percdamp=.01)
        gpts[name].free()
    sync()
    t3 = time.perf_counter()
    return {"augment_s": t1 - t0, "forward_hessian_s": t2 - t1, "prune_s": t3 - t2, "total_s": t3 - t0}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50", help="a torchvision classification model (default resnet50)")
    p.add_argument("--augs", type=int, default=32, help="number of augmentations (default 32)")
    p.add_argument("--layers", default="all", help="all | layer4+fc | comma-separated name prefixes")
    p.add_argument("--sparsity", type=float, default=0.9, help="per-layer target sparsity (default 0.9)")
    p.add_argument("--image", default=None, help="input image (default: a synthetic 320x240 picture)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch", type=int, default=0, help="forward chunk size (default: all augmentations at once)")
    p.add_argument("--repeat", type=int, default=1, help="run the pipeline this many times, report medians")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the augmentations")
    p.add_argument("--save-trace", default=None, help="write the pruned state_dict (last run) as safetensors")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model and the solver run")
    args = p.parse_args(argv)
    if args.augs < 1 or args.threads < 1 or args.repeat < 1 or args.batch < 0:
        p.error("--augs, --threads, --repeat must be >= 1 and --batch >= 0")
    if not 0.0 <= args.sparsity < 1.0:
        p.error("--sparsity must lie in [0, 1)")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if not hasattr(torchvision.models, args.arch):
        raise SystemExit(f"unknown torchvision model {args.arch!r}")
    model = getattr(torchvision.models, args.arch)(weights=None).eval()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model = model.to(args.device)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = prunable_layers(model, args.arch, args.layers)
    image = Image.open(args.image).convert("RGB") if args.image else synthetic_image()
    dense = {name: layer.weight.data.clone() for name, layer in layers}

    runs = []
    for r in range(args.repeat):
        for name, layer in layers:
            layer.weight.data = dense[name].clone()
        torch.manual_seed(args.seed + 1000 + r)  # the augmentations' randomness
        runs.append(run_once(model, layers, image, args))

    if args.save_trace:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data"))
        from safetensors_writer import write_safetensors
        meta = {"peer": PEER, "arch": args.arch, "augs": str(args.augs), "layers": args.layers,
                "sparsity": str(args.sparsity), "seed": str(args.seed),
                "pruned": json.dumps([n for n, _ in layers])}
        state = model.state_dict()
        if args.device != "cpu":
            state = {k: v.cpu() for k, v in state.items()}
        write_safetensors(args.save_trace, state, meta)

    out = {"peer": PEER, "arch": args.arch, "augs": args.augs, "layers": args.layers, "layer_count": len(layers)}
    for key in ("augment_s", "forward_hessian_s", "prune_s", "total_s"):
        out[key] = round(statistics.median(run[key] for run in runs), 3)
    out.update({"threads": args.threads, "torch": torch.__version__, "blas": loaded_blas(), "sparsity": args.sparsity,
                "batch": args.batch or args.augs, "repeat": args.repeat})
    if args.repeat > 1:
        for key in ("augment_s", "forward_hessian_s", "prune_s", "total_s"):
            out[key + "_all"] = [round(run[key], 3) for run in runs]
    if args.device != "cpu":
        out.update({"device": args.device, "gpu": torch.cuda.get_device_name(0)})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
