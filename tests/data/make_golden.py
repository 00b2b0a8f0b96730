#!/usr/bin/env python3
"""Regenerate the PyTorch golden files the C++ engine tests compare against.

Run by hand from the repository root:  python3 tests/data/make_golden.py
Writes tests/data/golden/*.safetensors (see tests/data/golden/README.md for the contents).
`python3 tests/data/make_golden.py ARCH...` (names from MODEL_ARCHS) writes only those models'
files; each model has its own seed, so they come out the same as in a full run.

The output is deterministic for a given PyTorch build: fixed seeds, two threads, and every
reference value is computed in float64 from the float32 values that are stored, then rounded
to float32. Computing in float64 keeps the references free of PyTorch's own float32
accumulation-order error, so a test tolerance measures the engine alone.
"""
import copy
import json
import os
import sys

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

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
NUM_CLASSES = 10
TARGETS = [1, 7]
SIZE_BUDGET_BYTES = 10 * 1024 * 1024  # all files this script writes; cifar_mobilenet_v2_w050 alone is 3 MiB

# ---------------------------------------------------------------------------------------------
# safetensors (written by hand: the python package is not available here)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_writer import read_safetensors, write_safetensors  # noqa: E402


def write_checked(path, tensors, metadata):
    write_safetensors(path, tensors, metadata)
    back, meta = read_safetensors(path)
    assert list(back) == list(tensors), path
    assert meta == (metadata or {}), path
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape and torch.equal(back[k], t.detach()), (path, k)
    size = os.path.getsize(path)
    print(f"  wrote {os.path.relpath(path)} ({size / 1024:.0f} KiB, {len(tensors)} tensors)")
    return size


# ---------------------------------------------------------------------------------------------
# Models. Module attribute names are the state_dict keys the C++ engine loads, so they must
# match akamaster's CIFAR ResNet and torchvision exactly.


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class CifarBasicBlock(nn.Module):
    """akamaster BasicBlock with the parameter-free "option A" shortcut."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad_shortcut = stride != 1 or in_planes != planes
        self.planes = planes

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad_shortcut:
            p = self.planes // 4
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p), "constant", 0.0)
        else:
            shortcut = x
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage=3, num_classes=10):
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for i, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            blocks = []
            for b in range(blocks_per_stage):
                blocks.append(CifarBasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)
        # akamaster's _weights_init: Kaiming-normal (fan_in) for conv and linear weights.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size(3))
        return self.linear(out.flatten(1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 conv2."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet with the stem/stage width `base` as a parameter (64 there)."""

    def __init__(self, block, layers, base=64, num_classes=1000):
        super().__init__()
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0], 1)
        self.layer2 = self._make_layer(block, base * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base * 8 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_batchnorm(model):
    """Non-trivial eval-mode BN, so a BN implemented as the identity fails the tests."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def calibrate_batchnorm(model, calib_input):
    """Set each BN's running statistics from the batch statistics of its actual input, perturbed:
    running_mean = mean + N(0, 0.1) * std, running_var = var * U(0.5, 1.5).

    Without this, random running statistics scale every eval-mode BN's signal by an arbitrary
    factor: in MobileNetV2 the input-dependent part of the activations shrinks ~8x per stage
    (input gradients ~1e-8) and the ResNets' logits reach +-170. Calibrated statistics keep
    activations O(1), as in a trained network, while BN still does something non-trivial."""

    def set_stats(module, inputs):
        x = inputs[0].detach()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3)
        module.running_mean.copy_(mean + torch.randn_like(mean) * 0.1 * var.sqrt())
        module.running_var.copy_(var * torch.empty_like(var).uniform_(0.5, 1.5))

    handles = [m.register_forward_pre_hook(set_stats) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model.eval()(calib_input)  # pre-hooks run in execution order, so each BN sees calibrated inputs
    finally:
        for h in handles:
            h.remove()
    return model


def verify_resnet_clone(block, layers, reference_ctor, name):
    """Our class at base 64 must be torchvision's network: same keys, shapes, order, outputs."""
    torch.manual_seed(1234)
    ref = randomize_batchnorm(reference_ctor(weights=None, num_classes=NUM_CLASSES)).eval()
    ours = ResNet(block, layers, base=64, num_classes=NUM_CLASSES).eval()
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ref_sd.items()] == [(k, tuple(v.shape)) for k, v in our_sd.items()], \
        f"{name}: state_dict keys/shapes differ from torchvision"
    ours.load_state_dict(ref_sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert torch.equal(a, b), f"{name}: outputs differ from torchvision (max {float((a - b).abs().max())})"
    print(f"  verified: our ResNet(base=64) == torchvision {name} (keys, shapes, outputs)")


def build_model(arch):
    if arch == "cifar_resnet20":
        return CifarResNet(3, NUM_CLASSES), (2, 3, 32, 32), "16"
    if arch == "resnet18_w8":
        return ResNet(BasicBlock, [2, 2, 2, 2], base=8, num_classes=NUM_CLASSES), (2, 3, 64, 64), "8"
    if arch == "resnet50_w8":
        return ResNet(Bottleneck, [3, 4, 6, 3], base=8, num_classes=NUM_CLASSES), (2, 3, 64, 64), "8"
    if arch == "mobilenet_v2_w025":
        m = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25, num_classes=NUM_CLASSES)
        return m, (2, 3, 64, 64), "0.25"
    if arch == "cifar_mobilenet_v2_w050":
        # The CIFAR variant: stem and first block of the second stage at stride 1 (32x32 -> 4x4).
        m = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5, num_classes=NUM_CLASSES)
        m.features[0][0].stride = (1, 1)
        m.features[2].conv[1][0].stride = (1, 1)  # the depthwise 3x3 of features.2
        return m, (2, 3, 32, 32), "0.5"
    raise ValueError(arch)


# Order fixes each model's seed (200 + index): append new models at the end.
MODEL_ARCHS = ["cifar_resnet20", "resnet18_w8", "resnet50_w8", "mobilenet_v2_w025", "cifar_mobilenet_v2_w050"]


# Parameter gradients of the large convolutions would take the golden files over the size budget
# (the weight files alone are ~4.3 MiB), so every model's golden file leaves them out. The rule is
# recorded in the "grad_subset" metadata; tests simply check every grad.* key that is present.
GRAD_CONV_MAX_ELEMENTS = 4096


def grad_subset_doc(conv_max_elements):
    return (f"every parameter except the weights of convolutions with more than "
            f"{conv_max_elements} elements: all BatchNorm weight/bias, the classifier "
            f"weight/bias, and the small convs (stem, first stages, downsample, depthwise)")


# Per-model departures from the defaults above.
# cifar_mobilenet_v2_w050: its 32x32 maps at stride 1 give ~1.7e6 ReLU6 inputs, and float32
# rounding error grows through its 35 ReLU6 layers to ~1e-4 of a layer's rms, so with a plain
# N(0, 1) input dozens of ReLU6 inputs lie within float32 error of a kink, and flipping any one of
# them moves the input gradient or some parameter gradient by 1e-3 to 1e-1 (relative): PyTorch's
# own float32 run is 1e-2 off its float64 reference. Its input is therefore moved, by ~1e-4, until
# every rectifier input is clear of its kinks (kink_margin_input). A smaller conv threshold keeps
# its golden file under 300 KB.
MODEL_OPTIONS = {
    "cifar_mobilenet_v2_w050": {"grad_conv_max_elements": 1536, "kink_margin": True},
}

# kink_margin_input: a rectifier input is too close when it is within KINK_MARGIN times PyTorch's
# own float32 error on that layer (max |float32 - float64| over the layer) of a kink; each such
# one is moved to twice that distance, on its side.
KINK_MARGIN = 4.0
KINK_MAX_ROUNDS = 30


def rectifier_inputs(model, x):
    """{module name: input} of every ReLU/ReLU6 in one forward (the model's must not be inplace)."""
    acts = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: acts.__setitem__(n, inp[0]))
               for n, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return acts


def kink_margin_input(model, x):
    """x moved as little as possible (least-norm steps, in float64, rounded to float32) so that no
    rectifier input of the float64 model is within KINK_MARGIN float32 errors of a kink. The network
    is piecewise linear in x, so a step moves each close input by its exact linear prediction and
    the others by ~1% of that; the few that come close are cleared in later rounds (16 for
    cifar_mobilenet_v2_w050). Returns (x, rounds, max |dx|).

    Runs on one thread: its hundreds of small backward passes gain nothing from two, and on a busy
    two-core machine two threads' synchronisation made each up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _kink_margin_input(model, x)
    finally:
        torch.set_num_threads(threads)


def _kink_margin_input(model, x):
    m32 = copy.deepcopy(model)
    m64 = copy.deepcopy(model).double()
    for m in list(m32.modules()) + list(m64.modules()):
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False
    for p in list(m32.parameters()) + list(m64.parameters()):
        p.requires_grad_(False)  # only d(rectifier input) / dx is needed
    x0 = x
    for rounds in range(KINK_MAX_ROUNDS):
        with torch.no_grad():
            a32 = rectifier_inputs(m32, x)
        x64 = x.double().requires_grad_(True)
        a64 = rectifier_inputs(m64, x64)
        rows, steps = [], []
        for name, a in a64.items():
            ad = a.detach()
            window = KINK_MARGIN * float((a32[name].double() - ad).abs().max())
            kinks = (0.0, 6.0) if isinstance(m64.get_submodule(name), nn.ReLU6) else (0.0,)
            for k in kinks:
                for idx in ((ad - k).abs() < window).nonzero().tolist():
                    v = float(ad[tuple(idx)])
                    (g,) = torch.autograd.grad(a[tuple(idx)], x64, retain_graph=True)
                    rows.append(g.flatten())
                    steps.append(k + (1.0 if v >= k else -1.0) * 2.0 * window - v)
        if not rows:
            return x, rounds, float((x.double() - x0.double()).abs().max())
        J = torch.stack(rows)
        d = torch.tensor(steps, dtype=torch.float64)
        dx = J.T @ torch.linalg.solve(J @ J.T + 1e-12 * torch.eye(len(steps), dtype=torch.float64), d)
        x = (x.double() + dx.reshape(x.shape)).float()
    sys.exit(f"make_golden.py: kink_margin_input: inputs still near a kink after {KINK_MAX_ROUNDS} rounds")


def keep_param_grad(model, key, param, conv_max_elements=GRAD_CONV_MAX_ELEMENTS):
    module = model.get_submodule(key.rsplit(".", 1)[0])
    return not isinstance(module, nn.Conv2d) or param.numel() <= conv_max_elements


def rel_err(a, b):
    return float((a - b).abs().max() / (b.abs().max() + 1e-30))


def make_fixture(arch, seed):
    """The model with its BatchNorm statistics, in eval mode, and the input batch."""
    torch.manual_seed(seed)
    model, in_shape, width = build_model(arch)
    randomize_batchnorm(model)
    calibrate_batchnorm(model, torch.randn(16, *in_shape[1:]))
    model.eval()
    x = torch.randn(*in_shape)
    return model, x, in_shape, width


def forward_backward(m, inp, targets):
    """Logits, and the gradients of sum_n logits[n, targets[n]] for the input and the parameters."""
    inp = inp.clone().requires_grad_(True)
    m.zero_grad(set_to_none=True)
    logits = m(inp)
    logits[torch.arange(inp.shape[0]), targets].sum().backward()
    grads = {k: p.grad for k, p in m.named_parameters() if p.requires_grad}
    return logits.detach(), inp.grad, grads


def make_model_golden(arch, seed):
    opts = MODEL_OPTIONS.get(arch, {})
    conv_max_elements = opts.get("grad_conv_max_elements", GRAD_CONV_MAX_ELEMENTS)
    model, x, in_shape, width = make_fixture(arch, seed)
    extra_meta = {}
    if opts.get("kink_margin"):
        x, rounds, moved = kink_margin_input(model, x)
        extra_meta = {"kink_margin": (f"input moved by at most {moved:.2e} (in {rounds} rounds) from its N(0, 1) "
                                      f"draw so that every ReLU6 input is at least {KINK_MARGIN:g} times "
                                      f"PyTorch's float32 error on that layer away from 0 and 6")}
    targets = torch.tensor(TARGETS)

    model64 = copy.deepcopy(model).double()
    logits, input_grad, param_grads = forward_backward(model64, x.double(), targets)
    logits32, input_grad32, _ = forward_backward(model, x, targets)  # only to report float32 noise

    golden = {
        "input": x,
        "logits": logits.float(),
        "input_grad": input_grad.float(),
        "targets": targets.float(),
    }
    params = dict(model.named_parameters())
    for k, g in param_grads.items():
        if keep_param_grad(model, k, params[k], conv_max_elements):
            golden["grad." + k] = g.float()
    meta = {
        "arch": arch,
        "num_classes": str(NUM_CLASSES),
        "width": width,
        "targets": ",".join(str(t) for t in TARGETS),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "input_shape": ",".join(str(d) for d in in_shape),
        "reference_precision": "float64 from the stored float32 weights and input, rounded to float32",
        "torch_float32_logits_rel_err": f"{rel_err(logits32.double(), logits):.3e}",
        "torch_float32_input_grad_rel_err": f"{rel_err(input_grad32.double(), input_grad):.3e}",
        "grad_subset": grad_subset_doc(conv_max_elements),
        **extra_meta,
    }
    sd = model.state_dict()
    for k, v in sd.items():
        assert v.dtype == torch.float32 or (k.endswith("num_batches_tracked") and v.dtype == torch.int64), k
    print(f"{arch}: logits range [{float(logits.min()):.3f}, {float(logits.max()):.3f}], "
          f"|input_grad|max {float(input_grad.abs().max()):.3e}, torch f32 vs f64 logits rel err "
          f"{meta['torch_float32_logits_rel_err']}, input_grad {meta['torch_float32_input_grad_rel_err']}")
    size = write_checked(os.path.join(OUT_DIR, f"{arch}.weights.safetensors"), dict(sd),
                         {"arch": arch, "format": "pytorch state_dict", "width": width,
                          "num_classes": str(NUM_CLASSES)})
    size += write_checked(os.path.join(OUT_DIR, f"{arch}.golden.safetensors"), golden, meta)
    return size


# ---------------------------------------------------------------------------------------------
# Single-op cases


def away_from(x, kinks, margin=0.01):
    """Move values within `margin` of a kink 2*margin upwards so every one is >= margin away."""
    for c in kinks:
        x = torch.where((x - c).abs() < margin, x + 2 * margin, x)
    return x


def distinct_values(shape, lo=-2.0, hi=2.0):
    """A random permutation of an evenly spaced grid: no two entries closer than the spacing,
    so a max-pool window never holds a near-tie."""
    n = int(np.prod(shape))
    step = (hi - lo) / max(n - 1, 1)
    assert step > 2e-3, "too many elements for tie-free pooling input"
    return (lo + torch.randperm(n).double() * step).float().reshape(shape)


class OpCases:
    def __init__(self):
        self.tensors = {}
        self.cases = []
        self.counts = {}

    def add(self, op, attrs, fn, diff, extra=None):
        """diff: inputs differentiated (x, weight, bias, x2); extra: non-differentiated inputs
        (running stats), which fn may update in place (training batch norm)."""
        i = self.counts.get(op, 0)
        self.counts[op] = i + 1
        key = f"{op}.{i}"
        extra = extra or {}
        d64 = {k: v.double().requires_grad_(True) for k, v in diff.items()}
        e64 = {k: v.double().clone() for k, v in extra.items()}
        out = fn(**d64, **e64)
        gout = torch.randn(out.shape)
        grads = torch.autograd.grad(out, list(d64.values()), gout.double())
        for k, v in list(diff.items()) + list(extra.items()):
            self.tensors[f"{key}.{k}"] = v
        self.tensors[f"{key}.out"] = out.detach().float()
        self.tensors[f"{key}.gout"] = gout
        for k, g in zip(d64, grads):
            self.tensors[f"{key}.g{k}"] = g.float()
        if attrs.get("train"):
            for k, v in e64.items():
                self.tensors[f"{key}.new_{k}"] = v.float()
        self.cases.append({"key": key, "op": op, "attrs": attrs})


def add_conv_cases(cases):
    # (N, Cin, H, W), Cout, kernel, stride, padding, dilation, groups, bias
    configs = [
        ((2, 4, 9, 11), 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
        ((2, 4, 9, 11), 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),
        ((2, 4, 9, 11), 6, (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
        ((2, 4, 9, 11), 5, (5, 3), (1, 1), (2, 1), (1, 1), 1, True),
        ((2, 3, 13, 15), 4, (7, 7), (2, 2), (3, 3), (1, 1), 1, False),
        ((2, 4, 10, 11), 6, (3, 3), (3, 3), (0, 0), (1, 1), 1, True),
        ((2, 4, 9, 11), 6, (3, 3), (1, 1), (2, 2), (2, 2), 1, True),
        ((2, 4, 9, 11), 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, True),
        ((2, 8, 9, 11), 8, (3, 3), (2, 2), (1, 1), (1, 1), 4, False),
        ((2, 4, 9, 11), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4, True),     # depthwise
        ((2, 4, 9, 11), 8, (3, 3), (2, 2), (1, 1), (1, 1), 4, False),    # depthwise, multiplier 2
        ((2, 4, 9, 11), 6, (3, 3), (1, 2), (0, 2), (1, 1), 1, True),     # asymmetric pad/stride
        ((2, 4, 9, 11), 6, (1, 3), (2, 1), (0, 2), (1, 2), 1, False),    # 1x3, dilation along w
        ((2, 8, 9, 11), 16, (1, 1), (2, 2), (0, 0), (1, 1), 1, False),   # ResNet downsample
        ((1, 2, 4, 4), 3, (5, 5), (1, 1), (2, 2), (1, 1), 1, True),      # kernel wider than input
        ((2, 6, 8, 8), 6, (3, 3), (2, 2), (2, 1), (2, 1), 6, True),      # depthwise, dilation 2 on h
    ]
    for shape, cout, k, s, p, d, g, bias in configs:
        cin = shape[1]
        bound = 1.0 / np.sqrt(cin // g * k[0] * k[1])
        diff = {"x": torch.randn(*shape), "weight": torch.empty(cout, cin // g, *k).uniform_(-bound, bound) * 2}
        if bias:
            diff["bias"] = torch.empty(cout).uniform_(-0.5, 0.5)
        attrs = {"in_channels": cin, "out_channels": cout, "kernel": list(k), "stride": list(s),
                 "padding": list(p), "dilation": list(d), "groups": g, "bias": bias}
        cases.add("conv2d", attrs,
                  lambda x, weight, bias=None, s=s, p=p, d=d, g=g: F.conv2d(x, weight, bias, s, p, d, g), diff)


def add_pool_cases(cases):
    # maxpool: (shape, kernel, stride, padding, ceil_mode)
    for shape, k, s, p, ceil in [
        ((2, 3, 9, 11), 3, 2, 1, False),
        ((2, 3, 8, 10), 2, 2, 0, False),
        ((2, 3, 8, 9), 3, 2, 0, True),
        ((1, 2, 5, 5), 2, 3, 1, True),  # the ceil-mode window that would start in the padding is dropped
    ]:
        attrs = {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "dilation": [1, 1], "ceil_mode": ceil}
        cases.add("maxpool2d", attrs,
                  lambda x, k=k, s=s, p=p, ceil=ceil: F.max_pool2d(x, k, s, p, 1, ceil),
                  {"x": distinct_values(shape)})
    # avgpool: (shape, kernel, stride, padding, ceil_mode, count_include_pad)
    for shape, k, s, p, ceil, cip in [
        ((2, 3, 8, 10), 2, 2, 0, False, True),
        ((2, 3, 7, 9), 3, 1, 1, False, True),
        ((2, 3, 7, 9), 3, 1, 1, False, False),
        ((2, 3, 8, 9), 3, 2, 0, True, True),
        ((2, 3, 8, 9), 3, 2, 1, True, True),   # last window runs past the padding: divisor clipped
        ((2, 3, 8, 9), 3, 2, 1, True, False),
        ((1, 2, 5, 5), 2, 3, 1, True, True),
    ]:
        attrs = {"kernel": [k, k], "stride": [s, s], "padding": [p, p], "ceil_mode": ceil,
                 "count_include_pad": cip}
        cases.add("avgpool2d", attrs,
                  lambda x, k=k, s=s, p=p, ceil=ceil, cip=cip: F.avg_pool2d(x, k, s, p, ceil, cip),
                  {"x": torch.randn(*shape)})
    for shape in [(2, 4, 5, 7), (1, 3, 1, 1)]:
        cases.add("adaptive_avgpool2d", {"output_size": [1, 1]},
                  lambda x: F.adaptive_avg_pool2d(x, 1), {"x": torch.randn(*shape)})


def add_pointwise_cases(cases):
    for shape in [(2, 3, 5, 7), (4, 10)]:
        x = away_from(torch.randn(*shape), [0.0])
        cases.add("relu", {}, lambda x: F.relu(x), {"x": x})
    for shape in [(2, 3, 5, 7), (4, 10)]:
        x = away_from(torch.empty(*shape).uniform_(-2.0, 8.0), [0.0, 6.0])
        assert (x < 0).any() and (x > 6).any()
        cases.add("relu6", {}, lambda x: F.relu6(x), {"x": x})
    for shape in [(2, 3, 5, 7), (3, 10)]:
        cases.add("add", {}, lambda x, x2: x + x2, {"x": torch.randn(*shape), "x2": torch.randn(*shape)})
    for n, fin, fout, bias in [(3, 12, 5, True), (2, 7, 4, False), (1, 64, 10, True)]:
        bound = 1.0 / np.sqrt(fin)
        diff = {"x": torch.randn(n, fin), "weight": torch.empty(fout, fin).uniform_(-bound, bound)}
        if bias:
            diff["bias"] = torch.empty(fout).uniform_(-bound, bound)
        cases.add("linear", {"in_channels": fin, "out_channels": fout, "bias": bias},
                  lambda x, weight, bias=None: F.linear(x, weight, bias), diff)


def add_batchnorm_cases(cases):
    for shape, eps, train in [
        ((2, 4, 5, 6), 1e-5, False),
        ((1, 3, 4, 4), 1e-3, False),
        ((2, 4, 5, 6), 1e-5, True),
        ((3, 5, 2, 3), 1e-3, True),
    ]:
        c = shape[1]
        # Per-channel offsets/scales so batch statistics differ clearly from the running ones.
        x = torch.randn(*shape) * torch.empty(1, c, 1, 1).uniform_(0.5, 2.0) + torch.randn(1, c, 1, 1)
        diff = {"x": x, "weight": torch.empty(c).uniform_(0.5, 1.5), "bias": torch.empty(c).normal_(0.0, 0.1)}
        extra = {"running_mean": torch.empty(c).normal_(0.0, 0.1), "running_var": torch.empty(c).uniform_(0.5, 1.5)}
        attrs = {"num_features": c, "eps": eps, "momentum": 0.1, "train": train}
        cases.add("batchnorm2d", attrs,
                  lambda x, weight, bias, running_mean, running_var, train=train, eps=eps:
                  F.batch_norm(x, running_mean, running_var, weight, bias, train, 0.1, eps),
                  diff, extra)


def tf_same_padding(size, window, stride):
    """TensorFlow's "SAME" along one axis: (before, after) for output ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def explicit_padding(attrs, h, w):
    """(top, left, bottom, right) of a case whose padding is [t, l, b, r] or "same"."""
    p = attrs["padding"]
    if p == "same":
        k, s, d = attrs["kernel"], attrs["stride"], attrs.get("dilation", [1, 1])
        top, bottom = tf_same_padding(h, d[0] * (k[0] - 1) + 1, s[0])
        left, right = tf_same_padding(w, d[1] * (k[1] - 1) + 1, s[1])
        return top, left, bottom, right
    return tuple(p)


def padded_forward(op, attrs, x, weight=None, bias=None):
    """A conv or pool with asymmetric or "SAME" padding, as PyTorch spells it: F.pad, then the op
    without padding (max pooling pads with -inf; average pooling without count_include_pad
    divides by the number of real inputs in each window)."""
    top, left, bottom, right = explicit_padding(attrs, x.shape[2], x.shape[3])
    pad = (left, right, top, bottom)
    a = attrs
    if op == "conv2d":
        return F.conv2d(F.pad(x, pad), weight, bias, a["stride"], 0, a["dilation"], a["groups"])
    if op == "maxpool2d":
        return F.max_pool2d(F.pad(x, pad, value=float("-inf")), a["kernel"], a["stride"])
    if op == "avgpool2d":
        mean = F.avg_pool2d(F.pad(x, pad), a["kernel"], a["stride"])
        if a["count_include_pad"]:
            return mean
        ones = F.pad(torch.ones_like(x[:1, :1]), pad)
        return mean / F.avg_pool2d(ones, a["kernel"], a["stride"])
    raise ValueError(op)


def add_padding_cases(cases):
    """Asymmetric [top, left, bottom, right] and TensorFlow "SAME" padding (added last, so the
    earlier cases keep their random draws)."""
    # conv: (N, Cin, H, W), Cout, kernel, stride, padding, dilation, groups, bias
    for shape, cout, k, s, p, d, g, bias in [
        ((2, 3, 8, 8), 4, (3, 3), (2, 2), [0, 0, 1, 1], (1, 1), 1, True),     # MobileNet stem, even input
        ((2, 3, 9, 8), 4, (3, 3), (2, 2), "same", (1, 1), 1, False),          # odd height: 1 before, 1 after
        ((2, 4, 10, 7), 4, (3, 3), (2, 2), "same", (1, 1), 4, True),          # depthwise, even / odd
        ((2, 4, 7, 9), 8, (3, 3), (1, 1), "same", (1, 1), 4, False),          # depthwise x2, stride 1
        ((2, 4, 9, 11), 6, (5, 3), (1, 2), [2, 0, 1, 2], (1, 1), 1, True),    # every side different
        ((2, 4, 9, 10), 5, (3, 3), (1, 1), "same", (2, 1), 1, True),          # dilation in the rule
        ((1, 3, 7, 7), 4, (4, 4), (2, 2), "same", (1, 1), 1, False),          # even kernel: 1 before, 2 after
        ((2, 4, 8, 9), 4, (3, 3), (2, 2), [1, 0, 0, 2], (1, 1), 4, True),     # depthwise, more before than after
    ]:
        cin = shape[1]
        bound = 1.0 / np.sqrt(cin // g * k[0] * k[1])
        diff = {"x": torch.randn(*shape), "weight": torch.empty(cout, cin // g, *k).uniform_(-bound, bound) * 2}
        if bias:
            diff["bias"] = torch.empty(cout).uniform_(-0.5, 0.5)
        attrs = {"in_channels": cin, "out_channels": cout, "kernel": list(k), "stride": list(s),
                 "padding": p, "dilation": list(d), "groups": g, "bias": bias}
        cases.add("conv2d", attrs,
                  lambda x, weight, bias=None, attrs=attrs: padded_forward("conv2d", attrs, x, weight, bias), diff)
    # pools: (shape, kernel, stride, padding)
    for shape, k, s, p in [
        ((2, 3, 8, 10), (3, 3), (2, 2), "same"),
        ((2, 3, 9, 7), (3, 3), (2, 2), "same"),
        ((2, 3, 7, 9), (2, 3), (1, 2), [1, 0, 0, 1]),
        ((1, 2, 6, 6), (3, 3), (1, 1), [0, 1, 1, 0]),
    ]:
        attrs = {"kernel": list(k), "stride": list(s), "padding": p, "dilation": [1, 1], "ceil_mode": False}
        cases.add("maxpool2d", attrs, lambda x, attrs=attrs: padded_forward("maxpool2d", attrs, x),
                  {"x": distinct_values(shape)})
        for cip in (True, False):
            attrs = {"kernel": list(k), "stride": list(s), "padding": p, "ceil_mode": False, "count_include_pad": cip}
            cases.add("avgpool2d", attrs, lambda x, attrs=attrs: padded_forward("avgpool2d", attrs, x),
                      {"x": torch.randn(*shape)})


def forward_from_attrs(op, attrs, t):
    """The forward of one case rebuilt from its recorded attrs alone, so a case whose metadata
    disagrees with the data it was computed with cannot slip into the file."""
    a = attrs
    if isinstance(a.get("padding"), str) or len(a.get("padding", [])) == 4:
        return padded_forward(op, a, t["x"], t.get("weight"), t.get("bias"))
    if op == "conv2d":
        return F.conv2d(t["x"], t["weight"], t.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])
    if op == "linear":
        return F.linear(t["x"], t["weight"], t.get("bias"))
    if op == "maxpool2d":
        return F.max_pool2d(t["x"], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
    if op == "avgpool2d":
        return F.avg_pool2d(t["x"], a["kernel"], a["stride"], a["padding"], a["ceil_mode"], a["count_include_pad"])
    if op == "adaptive_avgpool2d":
        return F.adaptive_avg_pool2d(t["x"], a["output_size"])
    if op == "relu":
        return F.relu(t["x"])
    if op == "relu6":
        return F.relu6(t["x"])
    if op == "add":
        return t["x"] + t["x2"]
    if op == "batchnorm2d":
        return F.batch_norm(t["x"], t["running_mean"].clone(), t["running_var"].clone(), t["weight"], t["bias"],
                            a["train"], a["momentum"], a["eps"])
    raise ValueError(op)


def check_ops_file(path):
    tensors, meta = read_safetensors(path)
    cases = json.loads(meta["cases"])
    assert len({c["key"] for c in cases}) == len(cases), "duplicate case keys"
    for c in cases:
        prefix = c["key"] + "."
        t = {k[len(prefix):]: v.double() for k, v in tensors.items() if k.startswith(prefix)}
        if c["attrs"].get("bias") is False:
            assert "bias" not in t and "gbias" not in t, c["key"]
        out = forward_from_attrs(c["op"], c["attrs"], t)
        assert out.shape == t["out"].shape and rel_err(out, t["out"]) < 1e-6, c["key"]
        for name in ("x", "x2", "weight", "bias"):
            if name in t:
                assert t["g" + name].shape == t[name].shape, (c["key"], name)
    print("  checked: every op case's output recomputes from its recorded attrs")


def make_ops_golden(seed):
    torch.manual_seed(seed)
    cases = OpCases()
    add_conv_cases(cases)
    add_pool_cases(cases)
    add_pointwise_cases(cases)
    add_batchnorm_cases(cases)
    add_padding_cases(cases)
    meta = {
        "cases": json.dumps(cases.cases, separators=(",", ":")),
        "torch_version": torch.__version__,
        "reference_precision": "float64 from the stored float32 inputs, rounded to float32",
        "batchnorm_train_note": ("training mode normalises with the biased batch variance; "
                                 "new_running_var = (1-momentum)*running_var + momentum*unbiased batch "
                                 "variance (divisor N*H*W-1); new_running_mean likewise with the batch mean"),
    }
    print(f"ops: {len(cases.cases)} cases: " + ", ".join(f"{op} x{n}" for op, n in cases.counts.items()))
    path = os.path.join(OUT_DIR, "ops.golden.safetensors")
    size = write_checked(path, cases.tensors, meta)
    check_ops_file(path)
    return size


def golden_files_size():
    """Bytes of every file this script writes, as they are now in OUT_DIR."""
    names = ["ops.golden.safetensors"] + [f"{a}.{kind}.safetensors" for a in MODEL_ARCHS
                                          for kind in ("weights", "golden")]
    paths = [os.path.join(OUT_DIR, n) for n in names]
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p))


def main(argv):
    unknown = [a for a in argv if a not in MODEL_ARCHS]
    if unknown:
        sys.exit(f"make_golden.py: unknown model {unknown[0]!r} (models: {', '.join(MODEL_ARCHS)})")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    if not argv:
        verify_resnet_clone(BasicBlock, [2, 2, 2, 2], torchvision.models.resnet18, "resnet18")
        verify_resnet_clone(Bottleneck, [3, 4, 6, 3], torchvision.models.resnet50, "resnet50")
        make_ops_golden(seed=100)
    for i, arch in enumerate(MODEL_ARCHS):
        if not argv or arch in argv:
            make_model_golden(arch, seed=200 + i)
    total = golden_files_size()
    print(f"total {total / 1024 / 1024:.2f} MiB")
    if total > SIZE_BUDGET_BYTES:
        sys.exit(f"make_golden.py: golden files total {total} bytes, over the {SIZE_BUDGET_BYTES} byte budget")


if __name__ == "__main__":
    main(sys.argv[1:])
