#!/usr/bin/env python3
"""PyTorch peer for spade's saliency methods: what Captum (and pytorch-grad-cam for ScoreCAM) compute
with their defaults, re-implemented in plain PyTorch because neither library is installed here.

    /usr/bin/python3 bench/saliency_pytorch.py --work DIR [--methods all|a,b,...] [--target T]
        [--repeats 3] [--warmup 1] [--threads 2] [--seed 0] [--perturbations-per-eval 1]
        [--ig-steps 50] [--ig-internal-batch 0] [--save-maps] [--prepare-only] [--check]

Model and input (shared with spade through --work DIR; created once, then reused):
  DIR/resnet50.safetensors  torchvision ResNet-50, random init after torch.manual_seed(--seed), with
                            BatchNorm calibrated (one train-mode pass over 8 images: the input and 7
                            N(0,1) images, cumulative running statistics) so eval-mode activations
                            stay O(1) instead of growing block after block; torchvision state_dict keys
  DIR/input.npy             (1, 3, 224, 224) float32: bench/spade_pytorch.py's synthetic picture,
                            Resize(256), CenterCrop(224), ToTensor, Normalize(ImageNet)
  DIR/lime_mask.npy         (224, 224) int64 superpixel ids of the LIME peer: a fixed grid of 16x16
                            blocks (196 features), so that no segmentation cost enters the peer
  DIR/setup.json            {"target": top-1 class of the model on the input, "seed", ...}

Methods (spade's CLI names) and the computation each one mirrors, for one image, target T:
  saliency              Captum Saliency: |d logit_T / dx| (abs=True), one forward + backward
  input_x_gradient      Captum InputXGradient: x * grad
  integrated_gradients  Captum IntegratedGradients: baseline 0, --ig-steps Gauss-Legendre points;
                        with internal_batch_size=None (the default, --ig-internal-batch 0) ALL steps go
                        through the network as ONE batch of 50 images
  smoothgrad            Captum NoiseTunnel(Saliency), smoothgrad, 5 samples, absolute stdev 1.0; the 5
                        noisy copies are one batch (nt_samples_batch_size=None)
  gradient_shap         Captum GradientShap: 5 samples, baselines {0}, stdevs 0, alpha ~ U(0,1), one batch
  deeplift              Captum DeepLift (rescale, eps 1e-10, baseline 0): input and baseline go through
                        the network as a batch of 2; hooks on every ReLU (rescale) and on the MaxPool2d
                        (Captum's maxpool rule); see "hooked model" below. Captum's maxpool rule goes
                        through F.max_unpool2d, which keeps only one of the overlapping stem-pool
                        windows sharing an argmax, so (like Captum) the map does not sum to
                        f(x) - f(0) on ResNet: about -3.0 against -5.3 on the default setup
  guided_backprop       Captum GuidedBackprop: ReLU backward hook returns relu(grad_input)
  deconvolution         Captum Deconvolution: ReLU backward hook returns relu(grad_output)
  gradcam               Captum LayerGradCam on layer4 (relu_attributions=False), the backward stops at
                        layer4's output; upsampled to 224x224 with LayerAttribution.interpolate's
                        default (nearest)
  guided_gradcam        Captum GuidedGradCam on layer4: GradCAM with ReLU, nearest upsampling, times
                        GuidedBackprop (two passes)
  occlusion             Captum Occlusion: window (3, 15, 15), strides (3, 8, 8), baseline 0, under
                        no_grad; one forward of the unoccluded input then ceil((224-15)/8)+1 = 28 x 28 =
                        784 windows, --perturbations-per-eval at a time (Captum's default 1)
  lrp                   Captum LRP's default rules: epsilon (1e-9) on Conv2d, Linear, BatchNorm2d, MaxPool2d,
                        AdaptiveAvgPool2d, ReLUs pass relevance unchanged, and Captum's two passes (a
                        plain forward for the output, then a hooked forward + backward). The rule is
                        applied as a modified gradient (one hook per rule layer output, see m_lrp), NOT
                        with Captum's tensor-hook placement: Captum multiplies a tensor's whole gradient
                        by the tensor once, which on ResNet also multiplies the skip path's relevance by
                        the activations, 16 times over (that gave sums around 1e34 here)
  scorecam              pytorch-grad-cam ScoreCAM on layer4[-1], batch 16: bilinear-upsample the 2048
                        activation maps, min-max each, build all 2048 masked inputs at once (1.2 GB),
                        128 forwards of 16, softmax of the target logits as weights, ReLU, min-max.
                        pytorch-grad-cam's activation hook stays registered during those forwards and
                        keeps every batch's layer4 output (about 0.8 GB); that is kept too, since the
                        peer's memory is part of what is measured
  lime                  Captum Lime: 50 samples (perturbations_per_eval 1 by default), Bernoulli(0.5)
                        over the grid superpixels, baseline 0, exponential kernel (width 1) on the cosine
                        distance in input space, Lasso(alpha 0.01) with sample weights and intercept.
                        sklearn is not installed: the Lasso is a short numpy coordinate descent with
                        sklearn's objective; its time is part of the total and is also reported
                        ("fit_s"). spade's own LIME segments the image (quickshift/slic) instead of using
                        this grid, so its time includes segmentation the peer does not do

Hooked model: Captum's DeepLift, GuidedBackprop, Deconvolution and LRP hook ReLU *modules*, which breaks
on torchvision's Bottleneck (one inplace `self.relu` used three times). Those methods run on a copy of
the model in which every ReLU is non-inplace and every use has its own module (each Bottleneck gets
relu1/relu2/relu3 and a forward that uses them, with a non-inplace residual add); the plain-gradient
methods (and gradcam) run on the stock torchvision model, as a Captum user would; guided_gradcam runs
on the copy. Parameters never require grad
(autograd.grad only asks for the input or layer gradient anyway).

Timing: --warmup untimed runs, then --repeats timed runs; median_s is their median. Output: one JSON
line per method on stdout:
  {"peer": "pytorch-captum-equivalent", "method", "median_s", "all_s", "repeats", "threads", "target",
   "rss_before_mb", "rss_peak_mb", ...}
rss_peak_mb is the process's peak resident set so far (ru_maxrss), so it is per method only when one
method runs per process (bench/compare_saliency.py does that); rss_before_mb is the peak before the
method's first run (Python + torch + the model).
--save-maps writes DIR/pytorch_<method>.npy (the attribution, float32, (1, 3, 224, 224); gradcam and
scorecam (1, 1, 224, 224) as their libraries return them).
--check prints sanity checks of the peer itself and exits (non-zero on a failure): IG completeness on a
small net, DeepLift completeness with an accumulating unpool on a small net and on ResNet-50, the hooked
copy against the stock model, GuidedBackprop/Deconvolution hooks against custom-backward ReLUs,
LRP-epsilon conservation and against the textbook rule, GradCAM against a direct computation,
whole-image occlusion = f(x) - f(0), and the Lasso on a noiseless sparse problem.
"""
import argparse
import copy
import json
import os
import resource
import statistics
import struct
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
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "data"))

PEER = "pytorch-captum-equivalent"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE, INPUT_FILE, MASK_FILE, SETUP_FILE = "resnet50.safetensors", "input.npy", "lime_mask.npy", "setup.json"
LIME_BLOCK = 16


# ---------------------------------------------------------------------------------------------
# model, input, shared files

def make_model_and_input(seed):
    from spade_pytorch import synthetic_image
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    for p in model.parameters():
        p.requires_grad_(False)
    x = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(
        synthetic_image()).unsqueeze(0)
    # BN calibration: with the default running statistics (mean 0, var 1) eval-mode BN is the
    # identity and activations grow by several times per block; one train-mode pass with
    # cumulative averaging (momentum None) sets each BN to its batch's statistics.
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.cat([x, torch.randn(7, 3, 224, 224)]))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval(), x


def prepare_work_dir(work, seed):
    """Creates the shared files once; later calls (and spade) reuse them."""
    paths = {k: os.path.join(work, f) for k, f in
             [("weights", WEIGHTS_FILE), ("input", INPUT_FILE), ("mask", MASK_FILE), ("setup", SETUP_FILE)]}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    from safetensors_writer import write_safetensors
    os.makedirs(work, exist_ok=True)
    model, x = make_model_and_input(seed)
    with torch.no_grad():
        logits = model(x)[0]
    write_safetensors(paths["weights"], model.state_dict(), {"peer": PEER, "arch": "resnet50", "seed": str(seed),
                                                              "bn": "calibrated on 8 images"})
    np.save(paths["input"], x.numpy().astype(np.float32))
    rows = torch.arange(224) // LIME_BLOCK
    mask = rows[:, None] * (224 // LIME_BLOCK) + rows[None, :]
    np.save(paths["mask"], mask.numpy().astype(np.int64))
    setup = {"target": int(logits.argmax()), "seed": seed, "logit_target": float(logits.max()),
             "logit_std": float(logits.std()), "torch": torch.__version__}
    with open(paths["setup"] + ".tmp", "w") as f:
        json.dump(setup, f)
    os.replace(paths["setup"] + ".tmp", paths["setup"])
    return paths


def load_model(paths):
    """The shared weights, read tensor by tensor straight into the model's parameters: the whole-file
    reader of tests/data would add ~300 MB to the peer's peak RSS, which is part of what is measured."""
    model = torchvision.models.resnet50(weights=None)
    state = model.state_dict()  # references to the parameters and buffers themselves
    with open(paths["weights"], "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        if set(header) != set(state):
            raise SystemExit(f"{paths['weights']}: keys differ from torchvision resnet50's "
                             f"({sorted(set(header) ^ set(state))[:5]}...)")
        for name, info in header.items():
            dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
            begin, end = info["data_offsets"]
            f.seek(8 + n + begin)
            arr = np.fromfile(f, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize)
            state[name].copy_(torch.from_numpy(arr).view(info["shape"]))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _bottleneck_forward_split(self, x):
    # torchvision's Bottleneck.forward with one ReLU module per use and a non-inplace add, so that
    # module hooks see each activation exactly once.
    identity = x
    out = self.relu1(self.bn1(self.conv1(x)))
    out = self.relu2(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu3(out + identity)


def hooked_copy(model):
    """A copy whose every ReLU use is its own non-inplace module (see the module docstring)."""
    m = copy.deepcopy(model)
    m.relu = nn.ReLU(inplace=False)
    for block in m.modules():
        if isinstance(block, torchvision.models.resnet.Bottleneck):
            del block.relu
            block.relu1, block.relu2, block.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
            block.forward = _bottleneck_forward_split.__get__(block)
    return m.eval()


class Hooks:
    """Registers hooks and removes them all on exit."""

    def __init__(self):
        self.handles = []

    def add(self, handle):
        self.handles.append(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


# ---------------------------------------------------------------------------------------------
# gradient methods

def input_gradient(model, x, target):
    """Captum's compute_gradients: d sum_i logit_T(x_i) / dx."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)[:, target]
        (grad,) = torch.autograd.grad(torch.unbind(out), x)
    return grad


def m_saliency(ctx, x, t):
    return input_gradient(ctx.model, x, t).abs()


def m_input_x_gradient(ctx, x, t):
    return input_gradient(ctx.model, x, t) * x


def m_integrated_gradients(ctx, x, t):
    steps = ctx.args.ig_steps
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, step_sizes = 0.5 * (1 + nodes), 0.5 * weights
    baseline = torch.zeros_like(x)
    scaled = torch.cat([baseline + float(a) * (x - baseline) for a in alphas])  # (steps * N, C, H, W)
    chunk = ctx.args.ig_internal_batch or scaled.shape[0]
    grads = torch.cat([input_gradient(ctx.model, scaled[i:i + chunk], t) for i in range(0, scaled.shape[0], chunk)])
    w = torch.tensor(step_sizes, dtype=grads.dtype).view(steps, 1, 1, 1, 1)
    total = (grads.view(steps, *x.shape) * w).sum(0)
    return total * (x - baseline)


def m_smoothgrad(ctx, x, t, samples=5, stdev=1.0):
    noisy = x.repeat_interleave(samples, dim=0)
    noisy = noisy + torch.normal(0.0, stdev, size=noisy.shape)
    grads = input_gradient(ctx.model, noisy, t).abs()
    return grads.view(x.shape[0], samples, *x.shape[1:]).mean(1)


def m_gradient_shap(ctx, x, t, samples=5, stdev=0.0):
    baselines = torch.zeros(1, *x.shape[1:])
    noisy = x.repeat_interleave(samples, dim=0)
    noisy = noisy + torch.normal(0.0, stdev, size=noisy.shape) if stdev > 0 else noisy
    chosen = baselines[np.random.choice(baselines.shape[0], size=noisy.shape[0])]
    alpha = torch.tensor(np.random.uniform(0.0, 1.0, noisy.shape[0]), dtype=x.dtype).view(-1, 1, 1, 1)
    grads = input_gradient(ctx.model, chosen + alpha * (noisy - chosen), t)
    return (grads * (noisy - chosen)).view(x.shape[0], samples, *x.shape[1:]).mean(1)


def accumulating_max_unpool2d(values, indices, kernel_size, stride, padding, output_size):
    """max_unpool2d that adds where windows share their argmax. Captum's maxpool rule uses
    F.max_unpool2d, which keeps only one of them, so with overlapping windows (ResNet's 3x3 stride-2
    stem pool) Captum's DeepLift is not complete; the self-check swaps this in to test the hooks."""
    n, c = values.shape[:2]
    out = torch.zeros(n, c, output_size[-2] * output_size[-1], dtype=values.dtype)
    out.scatter_add_(2, indices.reshape(n, c, -1), values.reshape(n, c, -1))
    return out.view(n, c, output_size[-2], output_size[-1])


DEEPLIFT_UNPOOL = F.max_unpool2d  # Captum's choice; see accumulating_max_unpool2d


def m_deeplift(ctx, x, t, eps=1e-10):
    model = ctx.hooked
    baseline = torch.zeros_like(x)

    def save_input(module, inputs):
        module.dl_input = inputs[0].detach().clone()

    def save_output(module, inputs, output):
        module.dl_output = output.detach().clone()

    def rescale(module, grad_input, grad_output):
        inp, ref = module.dl_input.chunk(2)
        out, out_ref = module.dl_output.chunk(2)
        delta_in = torch.cat(2 * [inp - ref])
        if isinstance(module, nn.MaxPool2d):
            # Captum's maxpool rule: route grad * delta_out through the pooling indices of the
            # actual input, where delta_out uses the cross maximum of the two halves.
            xmax = torch.max(out, out_ref)
            delta_out = torch.cat([xmax - out_ref, out - xmax])
            _, idx = F.max_pool2d(module.dl_input, module.kernel_size, module.stride, module.padding,
                                  module.dilation, module.ceil_mode, True)
            un, un_ref = DEEPLIFT_UNPOOL(grad_output[0] * delta_out, idx, module.kernel_size, module.stride,
                                        module.padding, list(module.dl_input.shape)).chunk(2)
            numerator = torch.cat(2 * [un + un_ref])
        else:
            numerator = grad_output[0] * torch.cat(2 * [out - out_ref])
        del module.dl_input, module.dl_output
        return (torch.where(delta_in.abs() < eps, grad_input[0], numerator / delta_in),)

    with Hooks() as hooks:
        for m in model.modules():
            if isinstance(m, (nn.ReLU, nn.MaxPool2d)):
                hooks.add(m.register_forward_pre_hook(save_input))
                hooks.add(m.register_forward_hook(save_output))
                hooks.add(m.register_full_backward_hook(rescale))
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(torch.cat([xg, baseline]))[:, t]  # target repeated over both halves
            (grad,) = torch.autograd.grad(torch.unbind(out), xg)
    return (x - baseline) * grad


def modified_relu_gradient(model, x, t, use_grad_output):
    """Captum's ModifiedReluGradientAttribution (GuidedBackprop / Deconvolution)."""
    def hook(module, grad_input, grad_output):
        return (F.relu(grad_output[0] if use_grad_output else grad_input[0]),)

    with Hooks() as hooks:
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                hooks.add(m.register_full_backward_hook(hook))
        return input_gradient(model, x, t)


def m_guided_backprop(ctx, x, t):
    return modified_relu_gradient(ctx.hooked, x, t, use_grad_output=False)


def m_deconvolution(ctx, x, t):
    return modified_relu_gradient(ctx.hooked, x, t, use_grad_output=True)


def layer_gradcam(model, x, t, relu):
    """Captum LayerGradCam on model.layer4 at layer resolution (N, 1, 7, 7)."""
    saved = {}

    def grab(module, inputs, output):
        # Captum's layer hook: the layer output becomes where the gradient starts, so the
        # backward stops there (nothing before it requires grad).
        output = output.clone().requires_grad_(True) if not output.requires_grad else output
        saved["act"] = output
        return output

    with Hooks() as hooks, torch.enable_grad():
        hooks.add(model.layer4.register_forward_hook(grab))
        out = model(x)[:, t]
        (grad,) = torch.autograd.grad(torch.unbind(out), saved["act"])
    act = saved["act"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * act).sum(dim=1, keepdim=True)
    return F.relu(cam) if relu else cam


def m_gradcam(ctx, x, t):
    return F.interpolate(layer_gradcam(ctx.model, x, t, relu=False), size=x.shape[2:], mode="nearest")


def m_guided_gradcam(ctx, x, t):
    cam = layer_gradcam(ctx.hooked, x, t, relu=True)
    guided = modified_relu_gradient(ctx.hooked, x, t, use_grad_output=False)
    return guided * F.interpolate(cam, size=x.shape[2:], mode="nearest")


def m_lrp(ctx, x, t, eps=1e-9):
    """LRP-epsilon as a modified gradient. With R = a * g (activation times a modified gradient) at
    every layer output, the epsilon rule R_in = x * W^T (R_out / (z + eps sign z)) is the ordinary
    backward of g * z / (z + eps sign z): one tensor hook per rule layer output. ReLUs and residual
    additions then need no rule (the plain gradient passes R through a ReLU unchanged and splits it
    over an addition in proportion to each branch's contribution)."""
    model = ctx.hooked
    rule_layers = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
    with torch.no_grad():
        output = model(x)[:, t]  # Captum computes the output in a separate plain forward first

    def stabilise(module, inputs, out):
        z = out.detach()
        sign = torch.sign(z)
        sign[sign == 0] = 1
        factor = z / (z + sign * eps)
        out.register_hook(lambda g, f=factor: g * f)

    with Hooks() as hooks:
        for m in model.modules():
            if isinstance(m, rule_layers):
                hooks.add(m.register_forward_hook(stabilise))
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xg)[:, t]
            # Captum's normalisation: the backward starts from 1 / output, the result is scaled
            # back by the first pass's output.
            (grad,) = torch.autograd.grad(out, xg, grad_outputs=1.0 / out.detach())
    return x * grad * output.view(-1, *([1] * (x.dim() - 1)))


def m_occlusion(ctx, x, t, window=(3, 15, 15), strides=(3, 8, 8)):
    per_eval = ctx.args.perturbations_per_eval
    c, h, w = x.shape[1:]
    counts = [int(np.ceil((n - k) / s)) + 1 for n, k, s in zip((c, h, w), window, strides)]
    total, weights = torch.zeros_like(x[0]), torch.zeros_like(x[0])
    with torch.no_grad():
        initial = ctx.model(x)[0, t]
        n_features = counts[0] * counts[1] * counts[2]
        for first in range(0, n_features, per_eval):
            masks = []
            for f in range(first, min(first + per_eval, n_features)):
                # Captum's feature order: the first dimension varies fastest; windows past the
                # edge are cut off (F.pad with a negative pad in Captum).
                ci, hi, wi = f % counts[0], (f // counts[0]) % counts[1], f // (counts[0] * counts[1])
                m = torch.zeros_like(x[0])
                m[ci * strides[0]:ci * strides[0] + window[0], hi * strides[1]:hi * strides[1] + window[1],
                  wi * strides[2]:wi * strides[2] + window[2]] = 1
                masks.append(m)
            masks = torch.stack(masks)
            ablated = x * (1 - masks) + 0.0 * masks
            diff = initial - ctx.model(ablated)[:, t]
            total += (diff.view(-1, 1, 1, 1) * masks).sum(0)
            weights += masks.sum(0)
    return (total / weights).unsqueeze(0)


def lasso_fit(X, y, w, alpha=0.01, max_iter=1000, tol=1e-4):
    """sklearn's Lasso(alpha).fit(X, y, sample_weight=w) objective, by cyclic coordinate descent:
    min (1 / 2n) sum_i w_i (y_i - x_i b - c)^2 + alpha |b|_1 with weights rescaled to sum to n
    and the intercept c from the weighted means. Returns (b, c)."""
    n, p = X.shape
    w = w * (n / w.sum())
    x_mean, y_mean = (w @ X) / n, (w @ y) / n
    sw = np.sqrt(w)[:, None]
    Xc, yc = (X - x_mean) * sw, (y - y_mean) * sw[:, 0]
    norms = (Xc ** 2).sum(0)
    b, r = np.zeros(p), yc.copy()
    for _ in range(max_iter):
        largest_step = 0.0
        for j in range(p):
            if norms[j] == 0:
                continue
            rho = Xc[:, j] @ r + norms[j] * b[j]
            new = np.sign(rho) * max(abs(rho) - n * alpha, 0.0) / norms[j]
            if new != b[j]:
                r -= Xc[:, j] * (new - b[j])
                largest_step = max(largest_step, abs(new - b[j]))
                b[j] = new
        if largest_step <= tol * max(np.abs(b).max(), 1e-12):
            break
    return b, y_mean - x_mean @ b


def m_lime(ctx, x, t, samples=50):
    per_eval = ctx.args.perturbations_per_eval
    mask = ctx.lime_mask  # (H, W) feature ids
    n_features = int(mask.max()) + 1
    flat_x = x.flatten().float()
    interp, sims, outputs, pending = [], [], [], []
    with torch.no_grad():
        for _ in range(samples):
            sample = torch.bernoulli(torch.full((1, n_features), 0.5)).long()  # Captum's default_perturb_func
            keep = sample[0][mask].to(x.dtype)  # (H, W), broadcast over channels; baseline 0
            perturbed = x * keep
            cos = F.cosine_similarity(flat_x, perturbed.flatten().float(), dim=0)
            sims.append(torch.exp(-((1 - cos) ** 2) / (2 * 1.0 ** 2)))
            interp.append(sample)
            pending.append(perturbed)
            if len(pending) == per_eval:
                outputs.append(ctx.model(torch.cat(pending))[:, t])
                pending = []
        if pending:
            outputs.append(ctx.model(torch.cat(pending))[:, t])
    t_fit = time.perf_counter()
    coef, _ = lasso_fit(torch.cat(interp).double().numpy(), torch.cat(outputs).double().numpy(),
                        torch.stack(sims).double().numpy())
    ctx.extra["fit_s"] = time.perf_counter() - t_fit
    attr = torch.from_numpy(coef).float()[mask]
    return attr.expand(x.shape[1], -1, -1).unsqueeze(0).clone()


def m_scorecam(ctx, x, t, batch=16):
    model = ctx.model
    kept = []

    def save_activation(module, inputs, output):
        kept.append(output.cpu().detach())  # pytorch-grad-cam's ActivationsAndGradients hook

    with Hooks() as hooks:
        hooks.add(model.layer4[-1].register_forward_hook(save_activation))
        with torch.no_grad():
            model(x)  # BaseCAM.forward's pass (uses_gradients=False: no backward)
            act = kept[-1]
            up = F.interpolate(act, size=x.shape[2:], mode="bilinear", align_corners=True)  # UpsamplingBilinear2d
            flat = up.view(up.shape[0], up.shape[1], -1)
            maxs, mins = flat.max(-1)[0][:, :, None, None], flat.min(-1)[0][:, :, None, None]
            up = (up - mins) / (maxs - mins + 1e-8)
            inputs = x[:, None] * up[:, :, None]  # (N, 2048, C, H, W), all at once
            scores = []
            for tensor in inputs:
                for i in range(0, tensor.shape[0], batch):
                    scores.extend(float(o[t]) for o in model(tensor[i:i + batch]))
            weights = torch.softmax(torch.tensor(scores).view(act.shape[0], act.shape[1]), dim=-1)
    cam = F.relu((weights[:, :, None, None] * act).sum(1, keepdim=True))

    def scale(img):  # pytorch-grad-cam's scale_cam_image: min-max (eps 1e-7)
        img = img - img.amin(dim=(2, 3), keepdim=True)
        return img / (1e-7 + img.amax(dim=(2, 3), keepdim=True))

    cam = scale(F.interpolate(scale(cam), size=x.shape[2:], mode="bilinear", align_corners=False))  # cv2.resize
    return scale(F.relu(cam))  # aggregate_multi_layers over the single layer


METHODS = {
    "saliency": m_saliency, "input_x_gradient": m_input_x_gradient,
    "integrated_gradients": m_integrated_gradients, "smoothgrad": m_smoothgrad,
    "gradient_shap": m_gradient_shap, "deeplift": m_deeplift, "guided_backprop": m_guided_backprop,
    "deconvolution": m_deconvolution, "gradcam": m_gradcam, "guided_gradcam": m_guided_gradcam,
    "occlusion": m_occlusion, "lrp": m_lrp, "scorecam": m_scorecam, "lime": m_lime,
}


class Context:
    def __init__(self, model, args, lime_mask, hooked=None):
        self.model = model
        self._hooked = hooked
        self.args = args
        self.lime_mask = lime_mask
        self.extra = {}

    @property
    def hooked(self):
        # made on first use, so that methods on the stock model do not pay for a second copy in RSS
        if self._hooked is None:
            self._hooked = hooked_copy(self.model)
        return self._hooked


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ---------------------------------------------------------------------------------------------
# self-checks of the peer (not of spade)

class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(fctx, inp, rule):
        fctx.save_for_backward(inp)
        fctx.rule = rule
        return inp.clamp(min=0)

    @staticmethod
    def backward(fctx, grad):
        (inp,) = fctx.saved_tensors
        return fctx.rule(grad, inp), None


class _RuleReLUModule(nn.Module):
    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def forward(self, inp):
        return _RuleReLU.apply(inp, self.rule)


def relus_replaced(model, rule):
    """A copy of a hooked-style model (one ReLU module per use) whose ReLUs backpropagate rule(grad, input)."""
    m = copy.deepcopy(model)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, _RuleReLUModule(rule))
    return m


def run_checks(ctx, x, t):
    model = ctx.model
    with torch.no_grad():
        f_x, f_0 = model(x)[0, t].item(), model(torch.zeros_like(x))[0, t].item()
    print(f"target {t}: f(x) = {f_x:.5f}, f(0) = {f_0:.5f}, f(x) - f(0) = {f_x - f_0:.5f}")
    failures = 0

    def report(name, ok, detail):
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    # Completeness. IG on this random ResNet converges very slowly in the step count (the target
    # logit is piecewise linear in alpha with very many kinks: 50 steps and 200 steps miss
    # f(x) - f(0) by ~20%), so IG is checked on a small conv net where 50 steps suffice; DeepLift's
    # rescale rule is exact, checked on ResNet-50 itself with the accumulating unpool (Captum's
    # own maxpool rule loses the shared-argmax terms, so it is printed, not checked).
    global DEEPLIFT_UNPOOL
    torch.manual_seed(1)
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    xs = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        small_delta = (small(xs) - small(torch.zeros_like(xs)))[0, 2].item()
    small_ctx = Context(small, ctx.args, None, hooked=small)
    ig = m_integrated_gradients(small_ctx, xs, 2).sum().item()
    report("integrated_gradients completeness (small net)", abs(ig - small_delta) <= 0.03 * abs(small_delta),
           f"sum {ig:.6f} vs {small_delta:.6f}")
    saved_unpool = DEEPLIFT_UNPOOL
    try:
        DEEPLIFT_UNPOOL = accumulating_max_unpool2d
        dl = m_deeplift(small_ctx, xs, 2).sum().item()
        report("deeplift completeness (small net, accumulating unpool)",
               abs(dl - small_delta) <= 1e-4 * abs(small_delta) + 1e-6, f"sum {dl:.6f} vs {small_delta:.6f}")
        dl = m_deeplift(ctx, x, t).sum().item()
        report("deeplift completeness (ResNet-50, accumulating unpool)",
               abs(dl - (f_x - f_0)) <= 1e-3 * abs(f_x - f_0) + 1e-4, f"sum {dl:.5f}")
    finally:
        DEEPLIFT_UNPOOL = saved_unpool
    dl = m_deeplift(ctx, x, t).sum().item()
    print(f"info deeplift sum with Captum's maxpool rule: {dl:.5f} (not complete, see above)")
    # The hooked copy must compute the same function as the stock model.
    with torch.no_grad():
        diff = (ctx.hooked(x) - model(x)).abs().max().item()
    report("hooked copy == stock model", diff < 1e-4, f"max |logit diff| {diff:.2e}")
    # GuidedBackprop / Deconvolution hooks against an independent implementation: the same network
    # with every ReLU replaced by an autograd Function whose backward is the modified rule.
    for name, rule, method in [("guided_backprop", lambda g, inp: F.relu(g) * (inp > 0), m_guided_backprop),
                               ("deconvolution", lambda g, inp: F.relu(g), m_deconvolution)]:
        reference = input_gradient(relus_replaced(ctx.hooked, rule), x, t)
        got = method(ctx, x, t)
        report(f"{name} == custom-backward ReLUs", torch.allclose(got, reference, rtol=1e-4, atol=1e-7),
               f"max diff {(got - reference).abs().max().item():.2e} (max |ref| {reference.abs().max().item():.2e})")
    # LRP-epsilon on a bias-free chain conserves relevance: sum of the map = the target logit.
    torch.manual_seed(2)
    chain = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 4, bias=False)).eval()
    xc = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        logit = chain(xc)[0, 1].item()
    rel = m_lrp(Context(chain, ctx.args, None, hooked=chain), xc, 1).sum().item()
    report("lrp epsilon conservation (bias-free chain)", abs(rel - logit) <= 1e-4 * abs(logit) + 1e-6,
           f"sum {rel:.6f} vs logit {logit:.6f}")
    # LRP-epsilon against the textbook layer-by-layer rule on a small MLP with biases and a large
    # epsilon (so that the stabiliser matters).
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    xm, big_eps, tm = torch.randn(1, 6), 0.3, 0
    W1, b1, W2, b2 = mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias
    with torch.no_grad():
        z1 = xm[0] @ W1.T + b1
        a1 = z1.clamp(min=0)
        z2 = a1 @ W2.T + b2
        stab = lambda z: z + big_eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
        r_a1 = a1 * (W2[tm] * (z2[tm] / stab(z2[tm])))  # relevance of the target logit, to a1
        textbook = xm[0] * (W1.T @ (r_a1 / stab(z1)))  # ReLU passes it on, then the first layer
    got = m_lrp(Context(mlp, ctx.args, None, hooked=mlp), xm, tm, eps=big_eps)[0]
    report("lrp epsilon == textbook rule (MLP, eps 0.3)", torch.allclose(got, textbook, rtol=1e-4, atol=1e-6),
           f"max diff {(got - textbook).abs().max().item():.2e}")
    # GradCAM against a direct computation through the network's pieces.
    with torch.enable_grad():
        f = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))))
        a = model.layer4(f).detach().requires_grad_(True)
        logit = model.fc(torch.flatten(model.avgpool(a), 1))[0, t]
        (g,) = torch.autograd.grad(logit, a)
    direct = (g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1, keepdim=True)
    cam = layer_gradcam(model, x, t, relu=False)
    report("gradcam == direct computation", torch.allclose(cam, direct, rtol=1e-4, atol=1e-6),
           f"max diff {(cam - direct).abs().max().item():.2e}")
    # Occlusion with a window covering everything is f(x) - f(0) everywhere.
    total = (x * 0 + 1)
    occ = m_occlusion(ctx, x, t, window=tuple(x.shape[1:]), strides=tuple(x.shape[1:]))
    report("occlusion full window == f(x) - f(0)", torch.allclose(occ, total * (f_x - f_0), rtol=1e-4, atol=1e-4),
           f"value {occ.flatten()[0].item():.5f}")
    # Lasso: a noiseless sparse linear model is recovered.
    rng = np.random.RandomState(0)
    X = rng.randint(0, 2, (80, 10)).astype(float)
    y = 3.0 * X[:, 2] - 2.0 * X[:, 7] + 0.5
    b, c = lasso_fit(X, y, rng.uniform(0.5, 1.5, 80), alpha=1e-4)
    report("lasso recovers a sparse model", abs(b[2] - 3) < 1e-2 and abs(b[7] + 2) < 1e-2 and abs(c - 0.5) < 1e-2
           and np.abs(np.delete(b, [2, 7])).max() < 1e-2, f"b2 {b[2]:.4f} b7 {b[7]:.4f} c {c:.4f}")
    return failures


# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="directory holding (or receiving) the weights, input, mask, setup")
    p.add_argument("--methods", default="all", help="all or comma-separated: " + ", ".join(METHODS))
    p.add_argument("--target", type=int, default=None, help="target class (default: setup.json's top-1 class)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--seed", type=int, default=0, help="weights seed (when creating --work) and methods' noise seed")
    p.add_argument("--perturbations-per-eval", type=int, default=1,
                   help="occlusion and lime: perturbed images per forward (Captum's default 1)")
    p.add_argument("--ig-steps", type=int, default=50, help="integrated_gradients steps (default 50)")
    p.add_argument("--ig-internal-batch", type=int, default=0,
                   help="integrated_gradients internal_batch_size (default 0: all steps in one batch, Captum's default)")
    p.add_argument("--save-maps", action="store_true", help="write WORK/pytorch_<method>.npy")
    p.add_argument("--prepare-only", action="store_true", help="create the --work files and exit")
    p.add_argument("--check", action="store_true", help="run the peer's self-checks and exit")
    a = p.parse_args(argv)
    a.methods = list(METHODS) if a.methods == "all" else [m for m in a.methods.split(",") if m]
    unknown = [m for m in a.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if a.repeats < 1 or a.warmup < 0 or a.threads < 1 or a.perturbations_per_eval < 1 or a.ig_steps < 1 \
            or a.ig_internal_batch < 0:
        p.error("--repeats, --threads, --perturbations-per-eval, --ig-steps must be >= 1; --warmup, "
                "--ig-internal-batch >= 0")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    paths = prepare_work_dir(args.work, args.seed)
    if args.prepare_only:
        print(json.dumps({"peer": PEER, **paths}), flush=True)
        return 0
    with open(paths["setup"]) as f:
        setup = json.load(f)
    target = setup["target"] if args.target is None else args.target
    model = load_model(paths)
    x = torch.from_numpy(np.load(paths["input"]))
    if not 0 <= target < model.fc.out_features:
        raise SystemExit(f"--target {target} is outside [0, {model.fc.out_features})")
    ctx = Context(model, args, torch.from_numpy(np.load(paths["mask"])))
    if args.check:
        return 1 if run_checks(ctx, x, target) else 0

    for name in args.methods:
        fn = METHODS[name]
        rss_before = peak_rss_mb()
        times, extras = [], []
        for r in range(args.warmup + args.repeats):
            torch.manual_seed(args.seed + r)
            np.random.seed(args.seed + r)
            ctx.extra = {}
            t0 = time.perf_counter()
            attr = fn(ctx, x, target)
            elapsed = time.perf_counter() - t0
            if r >= args.warmup:
                times.append(elapsed)
                extras.append(ctx.extra)
        # CAMs keep Captum's / pytorch-grad-cam's single channel
        if attr.shape[0] != x.shape[0] or attr.shape[2:] != x.shape[2:] or attr.shape[1] not in (1, x.shape[1]):
            raise SystemExit(f"{name}: attribution shape {tuple(attr.shape)} != input {tuple(x.shape)}")
        if args.save_maps:
            np.save(os.path.join(args.work, f"pytorch_{name}.npy"), attr.detach().numpy().astype(np.float32))
        out = {"peer": PEER, "method": name, "median_s": round(statistics.median(times), 4),
               "all_s": [round(s, 4) for s in times], "repeats": args.repeats, "warmup": args.warmup,
               "threads": args.threads, "target": target, "rss_before_mb": round(rss_before, 1),
               "rss_peak_mb": round(peak_rss_mb(), 1), "torch": torch.__version__}
        for key in sorted({k for e in extras for k in e}):
            out[key] = round(statistics.median(e[key] for e in extras), 4)
        if name == "integrated_gradients":
            out.update({"ig_steps": args.ig_steps, "ig_internal_batch": args.ig_internal_batch or args.ig_steps})
        if name in ("occlusion", "lime"):
            out["perturbations_per_eval"] = args.perturbations_per_eval
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
