#!/usr/bin/env python3
"""The real ImageNet MobileNetV2 of ../shared (TensorFlow "SAME" padding, 1001 classes) in PyTorch,
and its benchmark cases: the peer of `spade` on this model.

    python3 bench/mobilenet_tf_pytorch.py --weights W.safetensors --image PHOTO [--threads 2]
        [--cases fwd_b1,fwd_b16,fwdgrad_b1,ig50,fastspade1024] [--quick]

Prints one JSON object per case: {"impl": "pytorch", "case": ..., "s": seconds per call, "reps": n}.
The model is torchvision's mobilenet_v2(num_classes=1001) whose 3x3 convs pad as TensorFlow's
"SAME" does (F.pad before a conv without padding; the rule resolved from each input's size),
with the weights loaded from the safetensors file. The photo is preprocessed like spade's
mobilenet_v2_tf (resize 256, centre crop 224, [-1, 1]) with PIL and torchvision.
- fwd_b1, fwd_b16, fwdgrad_b1: as bench_pytorch.py (ms per image there; here seconds per call).
- ig50: Captum's IntegratedGradients with its defaults (Gauss-Legendre, 50 steps in one batch)
  for the top class, as bench/saliency_pytorch.py.
- fastspade1024: the authors' FastSPADE path (bench/spade_pytorch.py) with 1024 augmentations in
  chunks of 64, sparsity 0.9 on every dense conv and the classifier except the stem (spade's
  default layers; SparseGPT there cannot prune depthwise convs).
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
except ImportError:
    _SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(_SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYSTEM_PY):
        os.execv(_SYSTEM_PY, [_SYSTEM_PY] + sys.argv)
    raise

import numpy as np
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "data"))
sys.path.insert(0, HERE)
from make_golden import tf_same_padding  # noqa: E402  (the rule the op goldens use)
from safetensors_writer import read_safetensors  # noqa: E402

CASES = ["fwd_b1", "fwd_b16", "fwdgrad_b1", "ig50", "fastspade1024"]


class SameConv(nn.Module):
    """A conv padded as TensorFlow's "SAME" (the odd row/column after), via F.pad."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        conv.padding = (0, 0)

    def forward(self, x):
        (kh, kw), (sh, sw), (dh, dw) = self.conv.kernel_size, self.conv.stride, self.conv.dilation
        top, bottom = tf_same_padding(x.shape[2], dh * (kh - 1) + 1, sh)
        left, right = tf_same_padding(x.shape[3], dw * (kw - 1) + 1, sw)
        return self.conv(F.pad(x, (left, right, top, bottom)))


def tf_mobilenet(weights=None):
    """torchvision's MobileNetV2 with 1001 outputs and every 3x3 conv "SAME"-padded."""
    m = torchvision.models.mobilenet_v2(num_classes=1001)
    if weights:
        m.load_state_dict(read_safetensors(weights)[0], strict=True)
    for name, conv in list(m.named_modules()):
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
            parent_name, child = name.rsplit(".", 1)
            setattr(m.get_submodule(parent_name), child, SameConv(conv))
    return m.eval()


def preprocess(image):
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])(image)


def integrated_gradients(model, x, target, steps=50):
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, step_sizes = 0.5 * (1 + nodes), 0.5 * weights
    scaled = torch.cat([float(a) * x for a in alphas]).requires_grad_(True)
    out = model(scaled)[:, target]
    (grads,) = torch.autograd.grad(torch.unbind(out), scaled)
    w = torch.tensor(step_sizes, dtype=grads.dtype).view(steps, 1, 1, 1)
    return (grads * w).sum(0, keepdim=True) * x


def timed(fn, reps, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), reps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--quick", action="store_true", help="fewer repetitions and 64 augmentations (a smoke run)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = tf_mobilenet(a.weights)
    for prm in model.parameters():
        prm.requires_grad_(False)
    image = Image.open(a.image).convert("RGB")
    x = preprocess(image).unsqueeze(0)
    with torch.no_grad():
        target = int(model(x).argmax())
    reps = 2 if a.quick else 10
    for case in [c for c in a.cases.split(",") if c]:
        if case in ("fwd_b1", "fwd_b16"):
            xb = x.repeat(16 if case == "fwd_b16" else 1, 1, 1, 1)

            def fn():
                with torch.no_grad():
                    model(xb)
            s, n = timed(fn, reps)
        elif case == "fwdgrad_b1":
            def fn():
                xi = x.clone().requires_grad_(True)
                model(xi)[0, target].backward()
            s, n = timed(fn, reps)
        elif case == "ig50":
            s, n = timed(lambda: integrated_gradients(model, x, target), 1 if a.quick else 3)
        elif case == "fastspade1024":
            import spade_pytorch as sp
            augs = 64 if a.quick else 1024
            layers = [(name, m) for name, m in model.named_modules()
                      if (isinstance(m, nn.Conv2d) and m.groups == 1 or isinstance(m, nn.Linear)) and name != "features.0.0.conv"]
            dense = {name: m.weight.data.clone() for name, m in layers}
            args = argparse.Namespace(augs=augs, batch=64, sparsity=0.9, device="cpu")
            sp.IMAGENET_MEAN, sp.IMAGENET_STD = [0.5] * 3, [0.5] * 3  # this model's normalisation
            runs = []
            for r in range(1):
                torch.manual_seed(1000 + r)
                runs.append(sp.run_once(model, layers, image, args)["total_s"])
                for name, m in layers:
                    m.weight.data = dense[name].clone()
            s, n = statistics.median(runs), len(runs)
            case = f"fastspade{augs}"
            print(json.dumps({"impl": "pytorch", "case": case, "s": round(s, 4), "reps": n, "layers": len(layers)}),
                  flush=True)
            continue
        else:
            raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")
        print(json.dumps({"impl": "pytorch", "case": case, "s": round(s, 5), "reps": n}), flush=True)


if __name__ == "__main__":
    main()
