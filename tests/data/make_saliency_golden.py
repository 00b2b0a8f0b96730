#!/usr/bin/env python3
"""Writes tests/data/saliency/gradients.golden.safetensors: PyTorch references for spade's
gradient-based saliency methods (tests/test_saliency_golden.cpp), Captum's definitions written
out by hand (Captum itself is not installed here).

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_saliency_golden.py

Models and inputs are the engine's golden fixtures (tests/data/golden, made by make_golden.py):
the reduced-width models loaded from <model>.weights.safetensors and the first image of the
`input` of <model>.golden.safetensors; target class 3. Every reference is computed in float64
from those float32 values and rounded to float32. The same code run in float32 gives PyTorch's own
float32 result; its distance from the float64 reference (max |a - b| / max |b|) is recorded in the
metadata as `noise.<key>`; `kink.<key>` records how far the reference moves when every rectifier
input is perturbed at float32's level (see JITTER_EPS). The two set the C++ tolerances.
Deterministic (fixed seeds, two threads, deterministic algorithms: a rerun gives a byte-identical
file); the file is read back and checked, and must stay under 1 MB. About 2 minutes on 2 cores.

Conventions (Captum's, see tests/data/saliency/README.md for the list of tensors):
- gradient: d logit_target / d x (Saliency = |gradient|, InputXGradient = x * gradient).
- integrated_gradients.<n>: baseline 0, Gauss-Legendre with numpy's leggauss(n):
  alphas 0.5 (1 + nodes), weights 0.5 w; (x - b) * sum_k w_k grad(b + alpha_k (x - b)).
  n = 50 (Captum's default) and 6 (a small count; odd counts put a node at alpha = 0.5, where the
  CIFAR model has a neuron within 1e-7 of its kink).
- guided_backprop / deconvolution: every rectifier's backward replaced by
  [0 < x < hi] * max(g, 0) (guided) or max(g, 0) (deconvolution), hi = inf for ReLU, 6 for
  ReLU6. Every use of a rectifier gets the rule: Captum hooks nn.ReLU modules, which misses the
  CIFAR model's F.relu and nn.ReLU6 (spade's extension; only MobileNetV2 has ReLU6).
- gradcam_layer: Captum's LayerGradCam at the input of the global average pool, no ReLU:
  sum_c mean_hw(d logit / d A_c) A_c, shape (1, 1, h, w). gradcam: that map bilinearly
  upsampled (align_corners=False) to the input size, (1, 1, H, W) (spade repeats it per channel).
- guided_gradcam: Captum's GuidedGradCam: relu(cam) upsampled with mode "nearest", times
  guided_backprop.
- deeplift: Captum's DeepLift (rescale rule, eps 1e-10, baseline 0), run the way Captum runs it:
  the batch [x; baseline] goes through the model together, the objective is the target logit of
  both halves, nonlinearities use multipliers dy/dx (the plain derivative where |dx| < eps), max
  pools Captum's rule; attribution = (x - 0) * gradient of the x half. ReLU6 gets the rescale
  rule too (spade's extension). Max pool: see DEEPLIFT_MAXPOOL_NOTE.
- occlusion.w<w>s<s>: Captum's Occlusion with window (3, w, w), strides (3, s, s), baseline 0:
  ceil((D - w) / s) + 1 window positions per dimension from 0, the last window cut at the border;
  attribution = mean over the windows covering a pixel of (f(x) - f(x occluded)). The window
  spans all channels, so every channel holds the same map: stored as (1, 1, H, W).
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
from make_golden import build_model  # noqa: E402  (the model classes of the engine goldens)
from safetensors_writer import read_safetensors, write_safetensors  # noqa: E402

GOLDEN_DIR = os.path.join(HERE, "golden")
OUT_PATH = os.path.join(HERE, "saliency", "gradients.golden.safetensors")
SIZE_BUDGET_BYTES = 1000 * 1000
TARGET = 3
DEEPLIFT_EPS = 1e-10
OCCLUSIONS = [(15, 8), (5, 3)]  # (window, stride) over H and W; the window always spans C

# Which references each model gets (the size budget does not allow every method everywhere; the
# CIFAR model, at 32x32, gets them all).
METHODS = {
    "cifar_resnet20": ["gradient", "integrated_gradients.50", "integrated_gradients.6", "guided_backprop",
                       "deconvolution", "gradcam", "guided_gradcam", "deeplift", "occlusion"],
    "resnet18_w8": ["gradient", "integrated_gradients.50", "guided_backprop", "deconvolution", "gradcam",
                    "guided_gradcam", "deeplift", "occlusion"],
    "resnet50_w8": ["gradient", "guided_backprop", "gradcam", "deeplift"],
    "mobilenet_v2_w025": ["gradient", "guided_backprop", "gradcam", "deeplift"],
}
# The gradcam layer: the input of the global average pool, i.e. this module's output.
CAM_LAYER = {"cifar_resnet20": "layer3", "resnet18_w8": "layer4", "resnet50_w8": "layer4",
             "mobilenet_v2_w025": "features"}

DEEPLIFT_MAXPOOL_NOTE = (
    "Captum's maxpool rule with m = max(y, y0): (m - y0) * g routed to the argmax of x's window, "
    "(y - m) * g routed to the argmax of the baseline's window (g is the same for both halves, "
    "as Captum's objective is the target logit of x and of the baseline), summed per input "
    "element and divided by x - x0 (the plain max-pool gradient where |x - x0| < eps). Routed "
    "values that land on the same element are ADDED (as the max-pool gradient adds them); Captum "
    "routes with F.max_unpool2d, which keeps only one of them where overlapping windows (kernel 3, "
    "stride 2) share an argmax, losing completeness there. deeplift_captum_unpool_rel_diff.<model> "
    "records how far Captum's literal unpool result is from the stored one.")


# ---------------------------------------------------------------------------------------------
# Models and inputs


def load_model(name):
    model, _, _ = build_model(name)
    weights, _ = read_safetensors(os.path.join(GOLDEN_DIR, f"{name}.weights.safetensors"))
    model.load_state_dict(weights, strict=True)
    return model.eval()


def load_input(name):
    golden, _ = read_safetensors(os.path.join(GOLDEN_DIR, f"{name}.golden.safetensors"))
    return golden["input"][:1].clone()


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / (b.double().abs().max() + 1e-300))


# ---------------------------------------------------------------------------------------------
# Modified backward passes. The models call F.relu (nn.ReLU and the CIFAR blocks), F.hardtanh
# (nn.ReLU6) and F.max_pool2d (nn.MaxPool2d) through the torch.nn.functional module, so swapping
# those three attributes for the duration of one forward pass puts a custom autograd function on
# every use of a rectifier or max pool, including functional and reused ones.

_ORIG = {"relu": F.relu, "hardtanh": F.hardtanh, "max_pool2d": F.max_pool2d}


class Rules:
    """with Rules(rect_fn, pool_fn): model(x)  -- rect_fn(x, hi) replaces ReLU (hi = inf) and ReLU6
    (hi = 6); pool_fn(x, kernel, stride, padding, dilation, ceil_mode) replaces max pooling
    (None: unchanged). `calls` counts the replaced calls, so a model that bypasses
    torch.nn.functional cannot go unnoticed."""

    def __init__(self, rect_fn=None, pool_fn=None):
        self.rect_fn, self.pool_fn, self.calls = rect_fn or plain_rect, pool_fn, 0

    def _relu(self, x, inplace=False):
        self.calls += 1
        return self.rect_fn(jittered(x), math.inf)

    def _hardtanh(self, x, min_val=-1.0, max_val=1.0, inplace=False):
        assert (min_val, max_val) == (0.0, 6.0), "only ReLU6 is expected"
        self.calls += 1
        return self.rect_fn(jittered(x), 6.0)

    def _max_pool2d(self, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                    return_indices=False):
        assert not return_indices
        self.calls += 1
        return self.pool_fn(x, kernel_size, stride, padding, dilation, ceil_mode)

    def __enter__(self):
        F.relu, F.hardtanh = self._relu, self._hardtanh
        if self.pool_fn is not None:
            F.max_pool2d = self._max_pool2d
        return self

    def __exit__(self, *exc):
        F.relu, F.hardtanh, F.max_pool2d = _ORIG["relu"], _ORIG["hardtanh"], _ORIG["max_pool2d"]
        return False


def plain_rect(x, hi):
    return _ORIG["relu"](x) if hi == math.inf else _ORIG["hardtanh"](x, 0.0, hi)


# Kink sensitivity. A ReLU input a float32 rounding error away from 0 can flip a gradient; with
# ~1e5 rectifiers some always lie within 1e-7 of a kink, and whether such a flip matters depends on
# the neuron. To measure it, the references are recomputed with every rectifier input multiplied
# by (1 + JITTER_EPS * N(0, 1)), a stand-in for float32's accumulated rounding error (it keeps
# exact zeros, so max-pool ties stay ties); the spread is recorded as `kink.<key>`.
JITTER_EPS = 3e-7
JITTER_SEEDS = [1, 2, 3, 4]
_jitter = {"gen": None, "rows": None}


def jittered(x):
    """x with the jitter applied to its first _jitter["rows"] rows (all when None)."""
    gen, rows = _jitter["gen"], _jitter["rows"]
    if gen is None:
        return x
    factor = 1.0 + JITTER_EPS * torch.randn(x.shape, dtype=x.dtype, generator=gen)
    if rows is not None:
        factor[rows:] = 1.0
    return x * factor


def _rect_mask(x, hi):
    """Where a rectifier passes its input (PyTorch's derivative: 0 < x < hi)."""
    return (x > 0) & (x < hi)


class GuidedRect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, hi):
        ctx.save_for_backward(x)
        ctx.hi = hi
        return x.clamp(0.0, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp_min(0.0) * _rect_mask(x, ctx.hi), None


class DeconvRect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, hi):
        return x.clamp(0.0, hi)

    @staticmethod
    def backward(ctx, g):
        return g.clamp_min(0.0), None


def _halves_delta(t):
    """Captum's _compute_diffs: for the batch [x; ref], (x - ref) repeated for both halves."""
    a, b = t.chunk(2)
    d = a - b
    return torch.cat([d, d])


class RescaleRect(torch.autograd.Function):
    """DeepLift's rescale rule on the batch [x; ref] (Captum's `nonlinear`)."""

    @staticmethod
    def forward(ctx, x, hi):
        y = x.clamp(0.0, hi)
        ctx.save_for_backward(x, y)
        ctx.hi = hi
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        dx, dy = _halves_delta(x), _halves_delta(y)
        plain = g * _rect_mask(x, ctx.hi)
        return torch.where(dx.abs() < DEEPLIFT_EPS, plain, g * dy / dx), None


def _scatter_add(values, indices, in_shape):
    """values (N, C, oh, ow) added up at the flat per-channel input positions `indices` (what the
    max-pool gradient does)."""
    n, c = in_shape[:2]
    out = torch.zeros(n, c, in_shape[2] * in_shape[3], dtype=values.dtype)
    out.scatter_add_(2, indices.reshape(n, c, -1), values.reshape(n, c, -1))
    return out.reshape(in_shape)


def make_deeplift_maxpool(accumulate):
    """accumulate: add routed values that meet at one input element (stored references); False:
    Captum's literal F.max_unpool2d, which keeps one of them (only for the note in the metadata)."""

    class DeepLiftMaxPool(torch.autograd.Function):
        """Captum's `maxpool` rule (deep_lift.py) on the batch [x; ref]."""

        @staticmethod
        def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
            y, idx = _ORIG["max_pool2d"](x, kernel, stride, padding, dilation, ceil_mode, True)
            ctx.save_for_backward(x, y, idx)
            ctx.geometry = (kernel, stride, padding)
            return y

        @staticmethod
        def backward(ctx, g):
            x, y, idx = ctx.saved_tensors
            y_x, y_ref = y.chunk(2)
            m = torch.max(y_x, y_ref)
            delta_out = torch.cat([m - y_ref, y_x - m])
            if accumulate:
                routed = _scatter_add(g * delta_out, idx, x.shape)
            else:  # PyTorch flags max_unpool2d as nondeterministic for exactly this overwrite
                torch.use_deterministic_algorithms(False)
                try:
                    routed = F.max_unpool2d(g * delta_out, idx, *ctx.geometry, output_size=list(x.shape))
                finally:
                    torch.use_deterministic_algorithms(True)
            a, b = routed.chunk(2)
            routed = torch.cat([a + b, a + b])
            plain = _scatter_add(g, idx, x.shape)
            dx = _halves_delta(x)
            return torch.where(dx.abs() < DEEPLIFT_EPS, plain, routed / dx), None, None, None, None, None

    return lambda x, *args: DeepLiftMaxPool.apply(x, *args)


# ---------------------------------------------------------------------------------------------
# The methods, for one image x (1, C, H, W) in the model's dtype


def logits_of(model, x):
    with torch.no_grad(), Rules():
        return model(x)


def gradients(model, x, rules=None):
    """d logit_target / d x for every row of x, with optional modified backward rules."""
    x = x.detach().clone().requires_grad_(True)
    rules = rules or Rules()
    with rules:
        out = model(x)
    assert rules.calls > 0, "no rectifier was replaced"
    out[:, TARGET].sum().backward()
    return x.grad.detach()


def integrated_gradients(model, x, steps):
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = torch.tensor(0.5 * (1.0 + nodes), dtype=x.dtype).view(-1, 1, 1, 1)
    w = torch.tensor(0.5 * weights, dtype=x.dtype).view(-1, 1, 1, 1)
    base = torch.zeros_like(x)
    total = torch.zeros_like(x)
    for s in range(0, steps, 25):  # 25 scaled images per pass
        scaled = base + alphas[s:s + 25] * (x - base)
        total += (w[s:s + 25] * gradients(model, scaled)).sum(0, keepdim=True)
    return (x - base) * total


def guided_backprop(model, x):
    return gradients(model, x, Rules(lambda t, hi: GuidedRect.apply(t, hi)))


def deconvolution(model, x):
    return gradients(model, x, Rules(lambda t, hi: DeconvRect.apply(t, hi)))


def layer_cam(model, x, layer, relu=False):
    """Captum's LayerGradCam: (1, 1, h, w)."""
    module = model.get_submodule(layer)
    saved = {}

    def hook(_, __, out):
        out.retain_grad()
        saved["a"] = out

    handle = module.register_forward_hook(hook)
    try:
        x = x.detach().clone().requires_grad_(True)
        with Rules():
            out = model(x)
        out[:, TARGET].sum().backward()
    finally:
        handle.remove()
    a = saved["a"]
    weights = a.grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * a.detach()).sum(dim=1, keepdim=True)
    return F.relu(cam) if relu else cam


def deeplift(model, x, accumulate=True):
    base = torch.zeros_like(x)
    both = torch.cat([x, base]).requires_grad_(True)
    rules = Rules(lambda t, hi: RescaleRect.apply(t, hi), make_deeplift_maxpool(accumulate))
    # The baseline's activations are exactly constant per channel up to the first strided conv,
    # so its max-pool windows are exact ties (argmax: the first element, in PyTorch and in spade
    # alike); a jitter there would break ties that float32 keeps, so only x's rows are jittered.
    _jitter["rows"] = x.shape[0]
    try:
        with rules:
            out = model(both)
    finally:
        _jitter["rows"] = None
    assert rules.calls > 0
    out[:, TARGET].sum().backward()  # both halves, like Captum's target expanded to [x; ref]
    return (x - base) * both.grad[:1]


def window_starts(dim, window, stride):
    return [k * stride for k in range(math.ceil((dim - window) / stride) + 1)]


def occlusion(model, x, window, stride):
    _, _, H, W = x.shape
    f0 = logits_of(model, x)[0, TARGET]
    boxes = [(h, w) for h in window_starts(H, window, stride) for w in window_starts(W, window, stride)]
    total = torch.zeros(1, 1, H, W, dtype=x.dtype)
    count = torch.zeros(1, 1, H, W, dtype=x.dtype)
    for s in range(0, len(boxes), 64):
        chunk = boxes[s:s + 64]
        batch = x.repeat(len(chunk), 1, 1, 1)
        for k, (h, w) in enumerate(chunk):
            batch[k, :, h:h + window, w:w + window] = 0.0  # the baseline; slicing cuts at the border
        drops = f0 - logits_of(model, batch)[:, TARGET]
        for k, (h, w) in enumerate(chunk):
            total[..., h:h + window, w:w + window] += drops[k]
            count[..., h:h + window, w:w + window] += 1.0
    assert (count > 0).all()
    return total / count


def references(name, model, x):
    """Every stored reference of one model, computed in model/x's dtype."""
    methods = METHODS[name]
    H, W = x.shape[2:]
    out = {"logits": logits_of(model, x), "baseline_logits": logits_of(model, torch.zeros_like(x))}
    for m in methods:
        if m == "gradient":
            out[m] = gradients(model, x)
        elif m.startswith("integrated_gradients."):
            out[m] = integrated_gradients(model, x, int(m.split(".")[1]))
        elif m == "guided_backprop":
            out[m] = guided_backprop(model, x)
        elif m == "deconvolution":
            out[m] = deconvolution(model, x)
        elif m == "gradcam":
            cam = layer_cam(model, x, CAM_LAYER[name])
            out["gradcam_layer"] = cam
            out["gradcam"] = F.interpolate(cam, size=(H, W), mode="bilinear", align_corners=False)
        elif m == "guided_gradcam":
            cam = F.interpolate(layer_cam(model, x, CAM_LAYER[name], relu=True), size=(H, W), mode="nearest")
            out[m] = cam * guided_backprop(model, x)
        elif m == "deeplift":
            out[m] = deeplift(model, x)
        elif m == "occlusion":
            for w, s in OCCLUSIONS:
                out[f"occlusion.w{w}s{s}"] = occlusion(model, x, w, s)
        else:
            raise ValueError(m)
    return out


# ---------------------------------------------------------------------------------------------
# Checks of the references themselves (so a wrong reference cannot slip into the file)


def captum_style_occlusion(model, x, window, stride):
    """Occlusion the way Captum builds its masks (Occlusion._occlusion_mask): feature k's window
    offset by base conversion over the shift counts, padded with F.pad to the input size
    (negative padding crops a window that overruns); attribution = sum(drop * mask) / sum(mask)."""
    dims = x.shape[1:]
    win = (dims[0], window, window)
    strides = (dims[0], stride, stride)
    counts = [int(np.ceil((d - w) / s)) + 1 for d, w, s in zip(dims, win, strides)]
    f0 = logits_of(model, x)[0, TARGET]
    total = torch.zeros_like(x)
    weight = torch.zeros_like(x)
    for k in range(int(np.prod(counts))):
        offset, rest = [], k
        for c, s in zip(counts, strides):
            offset.append((rest % c) * s)
            rest //= c
        after = [d - (o + w) for d, o, w in zip(dims, offset, win)]
        pads = [v for pair in zip(after, offset) for v in pair][::-1]  # last dim first, (before, after)
        mask = F.pad(torch.ones(win, dtype=x.dtype), pads).unsqueeze(0)
        drop = f0 - logits_of(model, x * (1 - mask))[0, TARGET]
        total += drop * mask
        weight += mask
    return (total / weight)[:, :1]


def check_references(name, ref, model64, x64):
    """Cross-checks of the references by other routes; returns notes for the metadata."""
    f_delta = float(ref["logits"][0, TARGET] - ref["baseline_logits"][0, TARGET])
    notes = {}
    # The Rules plumbing leaves the plain gradient alone.
    x = x64.clone().requires_grad_(True)
    model64(x)[0, TARGET].backward()
    assert rel_err(ref["gradient"], x.grad) < 1e-12, (name, "gradient")
    if "deeplift" in ref:
        # The rescale rule with the summed max-pool routing is complete: attributions add up to
        # f(x) - f(0) up to float64 rounding.
        err = abs(float(ref["deeplift"].sum()) - f_delta) / abs(f_delta)
        assert err < 1e-9, (name, "deeplift completeness", err)
        captum = deeplift(model64, x64, accumulate=False)
        notes[f"deeplift_captum_unpool_rel_diff.{name}"] = f"{rel_err(captum, ref['deeplift']):.1e}"
    if "occlusion.w15s8" in ref:
        err = rel_err(captum_style_occlusion(model64, x64, 15, 8), ref["occlusion.w15s8"])
        assert err < 1e-12, (name, "occlusion vs Captum-style masks", err)
    for key in [k for k in ref if k.startswith("integrated_gradients.")]:
        err = abs(float(ref[key].sum()) - f_delta) / abs(f_delta)
        notes[f"ig_completeness_rel_err.{name}.{key.split('.')[1]}"] = f"{err:.3e}"
    return notes


# Guides for the property tests (no stored maps), on the CIFAR model (cheap at 32x32).
PROPERTY_MODEL = "cifar_resnet20"
IG_COMPLETENESS_STEPS = 400
GRADIENT_SHAP_SAMPLES = 256


def property_guides(name, model64, x):
    """IG's completeness error at IG_COMPLETENESS_STEPS (pure quadrature error: the random-weight
    networks have thousands of kinks along the path, so Gauss-Legendre converges slowly: on this
    model 8.7e-2 at 50 steps, 2.5e-2 at 100, 2.1e-3 at 400), and the expected relative L2 error of
    GradientShap's Monte Carlo estimate of the same integral (alpha ~ U(0, 1), baseline 0, no
    noise) with GRADIENT_SHAP_SAMPLES samples: sqrt(sum_i Var_alpha(x_i g_i(alpha x)) / S) /
    ||IG||, the variance from a 400-point midpoint grid."""
    x64 = x.double()
    f_delta = float(logits_of(model64, x64)[0, TARGET] - logits_of(model64, torch.zeros_like(x64))[0, TARGET])
    ig = integrated_gradients(model64, x64, IG_COMPLETENESS_STEPS)
    grid = (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    h = torch.cat([gradients(model64, grid[s:s + 50].view(-1, 1, 1, 1) * x64) for s in range(0, 400, 50)]) * x64
    expected = float((h.var(0, unbiased=False).sum() / GRADIENT_SHAP_SAMPLES).sqrt() / ig.norm())
    return {
        f"ig_completeness_rel_err.{name}.{IG_COMPLETENESS_STEPS}": f"{abs(float(ig.sum()) - f_delta) / abs(f_delta):.3e}",
        f"gradient_shap_expected_rel_l2.{name}.{GRADIENT_SHAP_SAMPLES}": f"{expected:.3e}",
    }


def deeplift_float32_completeness(model32, x):
    """|sum(a) - (f(x) - f(0))| / sum |a| of PyTorch's float32 DeepLift: the rounding-only gap."""
    a = deeplift(model32, x).double()
    f = logits_of(model32, x)[0, TARGET].double() - logits_of(model32, torch.zeros_like(x))[0, TARGET].double()
    return abs(float(a.sum() - f)) / float(a.abs().sum())


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    tensors, meta = {}, {
        "format": "spade-saliency-golden-v1",
        "generator": "tests/data/make_saliency_golden.py",
        "torch_version": torch.__version__,
        "target": str(TARGET),
        "models": ",".join(METHODS),
        "input": "the first image of `input` in tests/data/golden/<model>.golden.safetensors",
        "reference_precision": "float64 from the stored float32 weights and input, rounded to float32",
        "noise": "noise.<key>: max |torch float32 - reference| / max |reference|",
        "kink": (f"kink.<key>: max over {len(JITTER_SEEDS)} runs of max |jittered - reference| / max |reference|, "
                 f"every rectifier input multiplied by 1 + {JITTER_EPS:g} N(0, 1)"),
        "deeplift_eps": str(DEEPLIFT_EPS),
        "deeplift_maxpool": DEEPLIFT_MAXPOOL_NOTE,
    }
    for name in METHODS:
        model = load_model(name)
        x = load_input(name)
        ref64 = references(name, model.double(), x.double())
        ref32 = references(name, model.float(), x)
        kink = {key: 0.0 for key in ref64}
        for seed in JITTER_SEEDS:
            _jitter["gen"] = torch.Generator().manual_seed(seed)
            try:
                refj = references(name, model.double(), x.double())
            finally:
                _jitter["gen"] = None
            for key in ref64:
                kink[key] = max(kink[key], rel_err(refj[key], ref64[key]))
        meta.update(check_references(name, ref64, model.double(), x.double()))
        meta[f"deeplift_completeness_f32.{name}"] = f"{deeplift_float32_completeness(model.float(), x):.3e}"
        if name == PROPERTY_MODEL:
            meta.update(property_guides(name, model.double(), x))
        for key, value in ref64.items():
            full = f"{name}.{key}"
            tensors[full] = value.float().contiguous()
            meta[f"noise.{full}"] = f"{rel_err(ref32[key], value):.3e}"
            meta[f"kink.{full}"] = f"{kink[key]:.3e}"
            print(f"  {full:42s} noise {meta['noise.' + full]}  kink {meta['kink.' + full]}")
    meta["keys"] = json.dumps(list(tensors))
    write_safetensors(OUT_PATH, tensors, meta)
    back, back_meta = read_safetensors(OUT_PATH)
    assert back_meta == meta and list(back) == list(tensors)
    for k, t in tensors.items():
        assert torch.equal(back[k], t), k
    size = os.path.getsize(OUT_PATH)
    print(f"wrote {os.path.relpath(OUT_PATH)} ({size} bytes, {len(tensors)} tensors)")
    for k, v in meta.items():
        if k.startswith(("deeplift_captum", "deeplift_completeness", "ig_completeness", "gradient_shap")):
            print(f"  {k}: {v}")
    if size > SIZE_BUDGET_BYTES:
        sys.exit(f"make_saliency_golden.py: {size} bytes, over the {SIZE_BUDGET_BYTES} byte budget")


if __name__ == "__main__":
    main()
