#!/usr/bin/env python3
"""Writes tests/data/saliency/lrp.golden.safetensors: LRP relevance maps computed by an independent
float64 PyTorch implementation, for tests/test_lrp.cpp to compare spade's LRP rules against.

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_lrp_golden.py

The models are the golden ones of make_golden.py (the classes are imported from there, the weights
read from tests/data/golden/<model>.weights.safetensors) and the input is the first image of
`input` in tests/data/golden/<model>.golden.safetensors. LRP is written out module by module in the
classic explicit way (Montavon et al.'s tutorial): each layer's relprop recomputes its z from the
stored layer input, divides, and takes the product of its input with the gradient of sum(z * s).

Rules (the same definitions as interpret/saliency/lrp.cpp, implemented independently):
  start        R = logit at the target class, 0 elsewhere
  conv/linear  a BatchNorm right after a conv is folded in: W' = W * gamma / sqrt(var + eps),
               b' = (b - mean) * gamma / sqrt(var + eps) + beta
    alpha1beta0  z = W'+ x+ + W'- x-, s = R / z (0 where z == 0), R_in = x+ (W'+^T s) + x- (W'-^T s);
                 biases ignored.  First conv (fed by the image): z^B with l, h = min, max of the
                 image: z = W' x - W'+ l - W'- h, R_in = x (W'^T s) - l (W'+^T s) - h (W'-^T s)
    epsilon      z = W' x + b', s = R / (z + eps sign z) (sign 0 = +1), R_in = x (W'^T s), first
                 conv included
  ReLU, ReLU6, Dropout, flatten: R unchanged;  max pool: R to the argmax (the pool's gradient)
  global average pool: the layer rule with positive weights (alpha1beta0: z = pool(x+); epsilon:
               z = pool(x) + eps sign)
  residual add a + b: R_a = a s, R_b = b s, s = R / (a + b) (epsilon: + eps sign; else 0 where 0)
  option-A shortcut: R back through the subsampling (the shortcut's gradient)

Contents: one (1, 3, H, W) F32 tensor per case, named "<model>.<rule>.t<target>", and metadata:
  "epsilon"               the epsilon rule's stabiliser used for every epsilon case
  "<key>.logit"           the target logit (float64 reference)
  "<key>.relevance_sum"   the sum of the reference map
  "<key>.f32_rel_err"     max |a - b| / max |b| of this same script run in float32 against the float64
                          reference: a guide for the C++ test's tolerance
  "generator", "torch"
The total stays under 300 KB. Deterministic: no randomness, float64, two threads.
"""
import os
import sys

try:
    import torch
except ImportError:
    _SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(_SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYSTEM_PY):
        os.execv(_SYSTEM_PY, [_SYSTEM_PY] + sys.argv)
    raise

import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_golden import build_model  # noqa: E402  (model classes and widths of the golden models)
from safetensors_writer import read_safetensors, write_safetensors  # noqa: E402

OUT_PATH = os.path.join(HERE, "saliency", "lrp.golden.safetensors")
SIZE_BUDGET_BYTES = 300 * 1000
EPSILON = 0.01  # large enough that a missing or misplaced stabiliser changes the map visibly
# (model, rule, target): both rules and both golden targets for the small CIFAR model, one
# target per rule for the 64x64 models (size budget)
CASES = [
    ("cifar_resnet20", "alpha1beta0", 1), ("cifar_resnet20", "alpha1beta0", 7),
    ("cifar_resnet20", "epsilon", 1), ("cifar_resnet20", "epsilon", 7),
    ("resnet18_w8", "alpha1beta0", 1), ("resnet18_w8", "epsilon", 7),
    ("mobilenet_v2_w025", "alpha1beta0", 7), ("mobilenet_v2_w025", "epsilon", 1),
]


# ---------------------------------------------------------------------------------------------
# Relprop of single layers


def safe_divide(r, z, eps):
    if eps > 0:
        return r / (z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z)))
    return torch.where(z != 0, r / torch.where(z != 0, z, torch.ones_like(z)), torch.zeros_like(z))


def grad_of(z, inputs, s):
    """Gradients of sum(z * s) with respect to inputs (s held constant)."""
    return torch.autograd.grad((z * s.detach()).sum(), inputs)


class Affine:
    """A conv or linear layer with its BatchNorm folded in: f(x, W) without bias, plus b'."""

    def __init__(self, layer, bn=None):
        self.layer = layer
        w = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        if bn is not None:
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
            b = (b - bn.running_mean) * scale + bn.bias.detach()
        self.w, self.b = w, b

    def f(self, x, w):
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w)
        c = self.layer
        return F.conv2d(x, w, None, c.stride, c.padding, c.dilation, c.groups)

    def forward(self, x):
        b = self.b if isinstance(self.layer, nn.Linear) else self.b.reshape(1, -1, 1, 1)
        return self.f(x, self.w) + b

    def relprop(self, x, r, rule, first=False):
        w, wp, wn = self.w, self.w.clamp(min=0), self.w.clamp(max=0)
        if rule == "epsilon":
            x = x.detach().requires_grad_(True)
            z = self.forward(x)
            (g,) = grad_of(z, [x], safe_divide(r, z, EPSILON))
            return x * g
        if first:
            dims = tuple(range(1, x.dim()))
            lo = (x.amin(dim=dims, keepdim=True) * torch.ones_like(x)).requires_grad_(True)
            hi = (x.amax(dim=dims, keepdim=True) * torch.ones_like(x)).requires_grad_(True)
            x = x.detach().requires_grad_(True)
            z = self.f(x, w) - self.f(lo, wp) - self.f(hi, wn)
            gx, gl, gh = grad_of(z, [x, lo, hi], safe_divide(r, z, 0.0))
            return x * gx + lo * gl + hi * gh  # gl = -(W+^T s), gh = -(W-^T s)
        xp = x.clamp(min=0).requires_grad_(True)
        xn = x.clamp(max=0).requires_grad_(True)
        z = self.f(xp, wp) + self.f(xn, wn)
        gp, gn = grad_of(z, [xp, xn], safe_divide(r, z, 0.0))
        return xp * gp + xn * gn


def relprop_global_avgpool(x, r, rule):
    """r is (N, C) for the pooled and flattened features."""
    if rule == "alpha1beta0":
        x = x.clamp(min=0)
    x = x.detach().requires_grad_(True)
    z = x.mean(dim=(2, 3))
    (g,) = grad_of(z, [x], safe_divide(r, z, EPSILON if rule == "epsilon" else 0.0))
    return x * g


def relprop_add(a, b, r, rule):
    s = safe_divide(r, a + b, EPSILON if rule == "epsilon" else 0.0)
    return a * s, b * s


def relprop_through(fn, x, r):
    """Winner-takes-all max pool and the option-A shortcut: R routed by the op's gradient."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), [x], r)
    return g


# ---------------------------------------------------------------------------------------------
# Whole networks: an explicit forward that keeps each layer's input, then relprop in reverse.


def head_relprop(model_fc, feats, target, rule):
    """feats: the last feature map (N, C, h, w). Returns (logits, R at feats)."""
    pooled = feats.mean(dim=(2, 3))
    fc = Affine(model_fc)
    logits = fc.forward(pooled)
    r = torch.zeros_like(logits)
    r[:, target] = logits[:, target]
    r = fc.relprop(pooled, r, rule)
    return logits, relprop_global_avgpool(feats, r, rule)


def lrp_resnet(m, x, target, rule):
    stem = Affine(m.conv1, m.bn1)
    a = F.relu(stem.forward(x))
    h = m.maxpool(a)
    saved = []
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        for blk in layer:
            c1, c2 = Affine(blk.conv1, blk.bn1), Affine(blk.conv2, blk.bn2)
            ds = Affine(blk.downsample[0], blk.downsample[1]) if blk.downsample is not None else None
            u = F.relu(c1.forward(h))
            y = c2.forward(u)
            sc = ds.forward(h) if ds else h
            saved.append((h, c1, u, c2, y, ds, sc))
            h = F.relu(y + sc)
    logits, r = head_relprop(m.fc, h, target, rule)
    for h, c1, u, c2, y, ds, sc in reversed(saved):
        ry, rsc = relprop_add(y, sc, r, rule)
        r = c1.relprop(h, c2.relprop(u, ry, rule), rule)
        r = r + (ds.relprop(h, rsc, rule) if ds else rsc)
    r = relprop_through(m.maxpool, a, r)
    return logits, stem.relprop(x, r, rule, first=True)


def lrp_cifar_resnet(m, x, target, rule):
    stem = Affine(m.conv1, m.bn1)
    h = F.relu(stem.forward(x))
    saved = []
    for layer in (m.layer1, m.layer2, m.layer3):
        for blk in layer:
            c1, c2 = Affine(blk.conv1, blk.bn1), Affine(blk.conv2, blk.bn2)
            u = F.relu(c1.forward(h))
            y = c2.forward(u)
            shortcut = None
            if blk.pad_shortcut:
                p = blk.planes // 4

                def shortcut(t, p=p):
                    return F.pad(t[:, :, ::2, ::2], (0, 0, 0, 0, p, p), "constant", 0.0)
            sc = shortcut(h) if shortcut else h
            saved.append((h, c1, u, c2, y, shortcut, sc))
            h = F.relu(y + sc)
    logits, r = head_relprop(m.linear, h, target, rule)
    for h, c1, u, c2, y, shortcut, sc in reversed(saved):
        ry, rsc = relprop_add(y, sc, r, rule)
        r = c1.relprop(h, c2.relprop(u, ry, rule), rule)
        r = r + (relprop_through(shortcut, h, rsc) if shortcut else rsc)
    return logits, stem.relprop(x, r, rule, first=True)


def conv_units(seq):
    """(Affine, followed-by-ReLU6) for each conv of a torchvision Conv2dNormActivation or an
    InvertedResidual's conv Sequential, in order."""
    units, mods = [], list(seq)
    i = 0
    while i < len(mods):
        mod = mods[i]
        if isinstance(mod, nn.Conv2d):
            act = i + 2 < len(mods) and isinstance(mods[i + 2], nn.ReLU6)
            units.append((Affine(mod, mods[i + 1]), act))
            i += 3 if act else 2
        else:  # Conv2dNormActivation: conv, bn, relu6
            units.extend(conv_units(mod))
            i += 1
    return units


def lrp_mobilenet_v2(m, x, target, rule):
    blocks = []  # (units, residual)
    for i, feat in enumerate(m.features):
        residual = bool(getattr(feat, "use_res_connect", False))
        blocks.append((conv_units(feat.conv if hasattr(feat, "conv") else feat), residual))
    h = x
    saved = []
    for units, residual in blocks:
        block_in, inputs = h, []
        for aff, act in units:
            inputs.append(h)
            h = aff.forward(h)
            if act:
                h = F.relu6(h)
        y = h
        if residual:
            h = y + block_in
        saved.append((units, residual, block_in, inputs, y))
    logits, r = head_relprop(m.classifier[1], h, target, rule)  # classifier[0]: dropout, eval
    for bi, (units, residual, block_in, inputs, y) in reversed(list(enumerate(saved))):
        r_skip = None
        if residual:
            r, r_skip = relprop_add(y, block_in, r, rule)
        for (aff, _), inp in reversed(list(zip(units, inputs))):
            r = aff.relprop(inp, r, rule, first=(bi == 0 and inp is inputs[0]))
        if r_skip is not None:
            r = r + r_skip
    return logits, r


WALKERS = {"cifar_resnet20": lrp_cifar_resnet, "resnet18_w8": lrp_resnet, "mobilenet_v2_w025": lrp_mobilenet_v2}


def load(arch, dtype):
    model, _, _ = build_model(arch)
    weights, _ = read_safetensors(os.path.join(HERE, "golden", f"{arch}.weights.safetensors"))
    model.load_state_dict(weights, strict=True)
    model = model.to(dtype).eval()
    golden, _ = read_safetensors(os.path.join(HERE, "golden", f"{arch}.golden.safetensors"))
    x = golden["input"][:1].to(dtype)
    with torch.no_grad():
        reference_logits = model(x)
    return model, x, reference_logits


def rel_err(a, b):
    return float((a - b).abs().max() / (b.abs().max() + 1e-300))


def main():
    torch.set_num_threads(2)
    tensors, meta = {}, {"generator": "tests/data/make_lrp_golden.py", "torch": torch.__version__,
                         "epsilon": repr(EPSILON)}
    models = {}
    for arch, rule, target in CASES:
        key = f"{arch}.{rule}.t{target}"
        results = {}
        for dtype in (torch.float64, torch.float32):
            if (arch, dtype) not in models:
                models[(arch, dtype)] = load(arch, dtype)
            model, x, reference_logits = models[(arch, dtype)]
            logits, r = WALKERS[arch](model, x, target, rule)
            # the explicit forward must be the model's forward
            assert rel_err(logits.detach(), reference_logits) < (1e-12 if dtype == torch.float64 else 1e-5), key
            results[dtype] = (logits.detach(), r.detach())
        logits, r = results[torch.float64]
        tensors[key] = r.float()
        meta[f"{key}.logit"] = f"{float(logits[0, target]):.9g}"
        meta[f"{key}.relevance_sum"] = f"{float(r.sum()):.9g}"
        meta[f"{key}.f32_rel_err"] = f"{rel_err(results[torch.float32][1].double(), r):.3e}"
        print(f"{key}: logit {meta[key + '.logit']}, relevance sum {meta[key + '.relevance_sum']}, "
              f"torch float32 rel err {meta[key + '.f32_rel_err']}")
    write_safetensors(OUT_PATH, tensors, meta)
    back, back_meta = read_safetensors(OUT_PATH)
    assert list(back) == list(tensors) and back_meta == meta
    for k, t in tensors.items():
        assert torch.equal(back[k], t), k
    size = os.path.getsize(OUT_PATH)
    print(f"wrote {os.path.relpath(OUT_PATH)} ({size / 1024:.0f} KiB, {len(tensors)} tensors)")
    if size > SIZE_BUDGET_BYTES:
        sys.exit(f"make_lrp_golden.py: {size} bytes, over the {SIZE_BUDGET_BYTES} byte budget")


if __name__ == "__main__":
    main()
