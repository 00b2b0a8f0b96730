#!/usr/bin/env python3
"""Writes the PyTorch references of tests/test_train.cpp ([train]) under tests/data/train/:

  sgd.golden.safetensors       torch.optim.SGD(momentum=0.9, weight_decay=5e-4), three steps
  step.golden.safetensors      two full training steps of cifar_resnet20 at width 0.25
  finetune.golden.safetensors  two steps (lr 1e-3, 5e-4) fine-tuning: BatchNorm statistics frozen and the
                               distillation loss from a teacher (spade train --freeze-bn --distill)

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_train_golden.py

Deterministic: a rerun gives byte-identical files. Both files are read back and checked, and
together must stay under 100 KB. References are computed in float64 from the float32 values the
test also has, then rounded to float32, so a tolerance measures the engine alone.

The network weights and the pixels of step.golden are not stored: both sides generate them from
the formula below (integer hashing, then one double multiply-add rounded to float32, which IEEE
arithmetic makes identical in Python and C++), so the file holds only the results.

  hash32(key, i): h = FNV-1a 32 of the key's UTF-8 bytes; u = h ^ (i * 0x9E3779B1 mod 2^32);
                  then twice u = ((u ^ (u >> 16)) * 0x45D9F3B) mod 2^32; finally u ^= u >> 16
  unit(key, i)  = hash32(key, i) / 2^31 - 1                      (in [-1, 1), exact in double)
  value         = float32(offset + scale * unit(key, i)), i = flat index in the tensor
  per parameter: conv / linear weight  offset 0, scale sqrt(6 / fan_in)
                 linear bias           offset 0, scale 0.1
                 BatchNorm weight      offset 1, scale 0.25      bias         offset 0, scale 0.1
                 running_mean          offset 0, scale 0.1       running_var  offset 1, scale 0.5
  pixels:        uint8 hash32(pixel_key, i) >> 24, i over (image, y, x, channel) interleaved RGB,
                 pixel_key = "pixels<k>" for the first k = 0, 1, ... whose run keeps every ReLU
                 input at least 1e-5 from zero (a closer one could flip in float32 arithmetic)

step.golden.safetensors (metadata: pixel_key; mean, std, lr as JSON; momentum, weight_decay):
  targets  I64 (4,)        the labels of the four images
  logits0  F32 (4, 10)     train-mode logits of the first step
  loss     F64 (2,)        cross-entropy (mean) of each step
  delta.K  F32             parameter K after two SGD steps minus its initial value (weight, bias)
  after.K  F32             BatchNorm buffer K (running_mean, running_var) after the two steps
The two steps: BatchNorm in train mode (momentum 0.1, unbiased running variance), softmax
cross-entropy, SGD(lr, momentum 0.9, weight_decay 5e-4) with lr 0.1 then 0.05 (cosine over two
steps), the same batch of four images both times.

finetune.golden.safetensors (metadata as step.golden, plus temperature and distill_weight):
  the same model, pixels and steps, but every BatchNorm in eval mode inside model.train() (its
  running statistics used and left alone) and the loss of kernels::distillation_loss: rows whose
  `targets` entry is -1 are clean and learn the softmax at temperature T of a teacher (the same
  architecture, every value from the formula with key "teacher." + its state_dict key, in eval
  mode), scaled by distill_weight * T^2; the others are poisoned and learn their target.
  targets, logits0, loss, delta.K as in step.golden; after.K must equal the initial buffers.

sgd.golden.safetensors (a tiny conv 2->3 k3 + BatchNorm(3) + linear 3->4 graph; metadata: keys):
  lr           F64 (3,)    learning rate of each step
  init.K       F32         initial values of every parameter and buffer K
  grad<s>.K    F32         gradient of step s (s = 0, 1, 2) for each trainable K; fc.bias has
                           none at step 1 (PyTorch skips a parameter whose .grad is None)
  after<s>.K   F32         every trainable K after step s
  buf.K        F32         the momentum buffer of K after the last step
"""
import json
import math
import os
import struct
import sys

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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_loss_golden import distillation_loss  # noqa: E402
from safetensors_writer import tensor_bytes, write_safetensors  # noqa: E402

OUT_DIR = os.path.join(HERE, "train")
SIZE_BUDGET_BYTES = 200 * 1000

# The engine's default Preprocess (formats/image.h), which make_zoo_model keeps for CIFAR models.
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
STEP_LRS = [0.1, 0.05]  # cosine over two steps: 0.5 * 0.1 * (1 + cos(pi * t / 2)), t = 0, 1
BATCH = 4
TARGETS = [3, 7, 0, 9]
WIDTH_BASE = 4  # cifar_resnet20 at --width 0.25: max(4, round(16 * 0.25))
# A ReLU input closer to zero than this in the float64 reference could fall on the other side of
# the kink in the engine's float32 arithmetic and change the gradients; the script refuses it.
KINK_MARGIN = 1e-5

M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# The value formula shared with tests/test_train.cpp


def fnv1a32(key):
    h = 0x811C9DC5
    for b in key.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & M32
    return h


def hash32(key, n):
    """hash32(key, i) for i = 0 .. n-1, as uint64 numpy values below 2^32."""
    i = np.arange(n, dtype=np.uint64)
    u = np.uint64(fnv1a32(key)) ^ ((i * np.uint64(0x9E3779B1)) & np.uint64(M32))
    for _ in range(2):
        u = ((u ^ (u >> np.uint64(16))) * np.uint64(0x45D9F3B)) & np.uint64(M32)
    return u ^ (u >> np.uint64(16))


def formula_tensor(key, shape, offset, scale):
    n = int(np.prod(shape))
    unit = hash32(key, n).astype(np.float64) / 2.0**31 - 1.0
    return torch.from_numpy((offset + scale * unit).astype(np.float32).reshape(shape))


def param_formula(key, shape):
    """(offset, scale) of parameter `key` (a state_dict key) by its kind."""
    name = key.rsplit(".", 1)[1]
    is_bn = ".bn" in "." + key
    if name == "weight" and not is_bn:
        fan_in = int(np.prod(shape[1:]))
        return 0.0, math.sqrt(6.0 / fan_in)
    if is_bn:
        return {"weight": (1.0, 0.25), "bias": (0.0, 0.1), "running_mean": (0.0, 0.1),
                "running_var": (1.0, 0.5)}[name]
    return 0.0, 0.1  # linear / conv bias


def fill_from_formula(model, prefix=""):
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            offset, scale = param_formula(key, tuple(t.shape))
            t.copy_(formula_tensor(prefix + key, tuple(t.shape), offset, scale).to(t.dtype))


def formula_pixels(key, n, h, w):
    return (hash32(key, n * h * w * 3) >> np.uint64(24)).astype(np.uint8).reshape(n, h, w, 3)


def normalise(pixels):
    """The engine's normalisation in float32: (p / 255 - mean) * (1 / std), as (N, 3, H, W)."""
    p = pixels.astype(np.float32)
    mean = np.array(MEAN, dtype=np.float32)
    inv_std = np.float32(1.0) / np.array(STD, dtype=np.float32)
    x = (p / np.float32(255.0) - mean) * inv_std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


# ---------------------------------------------------------------------------------------------
# cifar_resnet20 at a small base width, with the engine's node names (akamaster's CIFAR ResNet,
# option-A shortcuts, as in make_golden.py) and a record of how close every ReLU input came to 0


class KinkRecorder:
    def __init__(self):
        self.closest = math.inf

    def relu(self, x):
        self.closest = min(self.closest, x.detach().abs().min().item())
        return F.relu(x)


class Block(nn.Module):
    def __init__(self, in_planes, planes, stride, kinks):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad_shortcut = stride != 1 or in_planes != planes
        self.planes = planes
        self.kinks = kinks

    def forward(self, x):
        out = self.kinks.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad_shortcut:
            p = self.planes // 4
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p), "constant", 0.0)
        else:
            shortcut = x
        return self.kinks.relu(out + shortcut)


class CifarResNet20(nn.Module):
    def __init__(self, base, kinks, num_classes=10):
        super().__init__()
        self.kinks = kinks
        self.conv1 = nn.Conv2d(3, base, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        in_planes = base
        for i, stride in enumerate([1, 2, 2]):
            planes = base << i
            blocks = []
            for b in range(3):
                blocks.append(Block(in_planes, planes, stride if b == 0 else 1, kinks))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = self.kinks.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.flatten(1))


def is_trainable(key):
    return key.endswith(".weight") or key.endswith(".bias")


FINETUNE_TARGETS = [-1, 7, -1, 9]  # rows 0 and 2 clean, 1 and 3 poisoned
# Fine-tuning rates (cosine over two steps): the formula's running statistics do not normalise
# the activations, the logits are large, and lr 0.1 diverges.
FINETUNE_LRS = [1e-3, 5e-4]
TEMPERATURE = 2.0
DISTILL_WEIGHT = 0.5


def train_two_steps(pixel_key, finetune=False):
    """The reference run: (model before, model after, logits of the first step, losses, closest
    ReLU input to its kink over both forward passes). finetune: frozen BatchNorm statistics and
    the distillation loss."""
    kinks = KinkRecorder()
    model = CifarResNet20(WIDTH_BASE, kinks)
    fill_from_formula(model)
    model = model.double().train()
    teacher = None
    if finetune:
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.eval()
        teacher = CifarResNet20(WIDTH_BASE, KinkRecorder())
        fill_from_formula(teacher, "teacher.")
        teacher = teacher.double().eval()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    x = normalise(formula_pixels(pixel_key, BATCH, 32, 32)).double()
    targets = torch.tensor(FINETUNE_TARGETS if finetune else TARGETS, dtype=torch.int64)
    lrs = FINETUNE_LRS if finetune else STEP_LRS
    opt = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    losses, logits0 = [], None
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        logits = model(x)
        if logits0 is None:
            logits0 = logits.detach().float()
        if finetune:
            with torch.no_grad():
                soft = teacher(x)
            loss = distillation_loss(logits, soft, targets, TEMPERATURE, DISTILL_WEIGHT)
        else:
            loss = F.cross_entropy(logits, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return initial, model.state_dict(), logits0, losses, kinks.closest


def make_step_golden(finetune=False):
    # The first pixel key whose run keeps every ReLU input KINK_MARGIN away from zero.
    for attempt in range(200):
        pixel_key = f"pixels{attempt}"
        initial, after, logits0, losses, closest = train_two_steps(pixel_key, finetune)
        if closest >= KINK_MARGIN:
            break
    else:
        sys.exit("make_train_golden.py: no pixel key keeps the ReLU inputs away from their kinks")
    targets = torch.tensor(FINETUNE_TARGETS if finetune else TARGETS, dtype=torch.int64)
    tensors = [("targets", targets), ("logits0", logits0), ("loss", torch.tensor(losses, dtype=torch.float64))]
    for key in after:
        if key.endswith("num_batches_tracked"):
            continue
        if is_trainable(key):
            tensors.append((f"delta.{key}", (after[key] - initial[key]).float()))
        else:
            if finetune:
                assert torch.equal(after[key], initial[key]), key  # frozen statistics
            tensors.append((f"after.{key}", after[key].float()))
    meta = {"pixel_key": pixel_key, "mean": json.dumps(MEAN), "std": json.dumps(STD), "lr": json.dumps(FINETUNE_LRS if finetune else STEP_LRS),
            "momentum": str(MOMENTUM), "weight_decay": str(WEIGHT_DECAY), "torch_version": torch.__version__,
            "closest_relu_input": f"{closest:.3e}"}
    if finetune:
        meta["temperature"] = repr(TEMPERATURE)
        meta["distill_weight"] = repr(DISTILL_WEIGHT)
    name = "finetune" if finetune else "step"
    print(f"{name}: pixel key {pixel_key}, losses {losses}, closest ReLU input to its kink {closest:.2e}")
    return write_checked(os.path.join(OUT_DIR, f"{name}.golden.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------------
# The SGD optimiser alone on a tiny graph's parameters


def make_sgd_golden():
    gen = torch.Generator().manual_seed(31337)
    shapes = {"conv.weight": (3, 2, 3, 3), "conv.bias": (3,), "bn.weight": (3,), "bn.bias": (3,),
              "bn.running_mean": (3,), "bn.running_var": (3,), "fc.weight": (4, 3), "fc.bias": (4,)}
    init = {k: torch.randn(s, generator=gen).float() for k, s in shapes.items()}
    init["bn.running_var"] = init["bn.running_var"].abs() + 0.5
    trainable = [k for k in shapes if is_trainable(k)]
    params = {k: init[k].double().clone().requires_grad_(True) for k in trainable}
    opt = torch.optim.SGD(list(params.values()), lr=1.0, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    lrs = [0.1, 0.05, 0.02]
    tensors = [("lr", torch.tensor(lrs, dtype=torch.float64))]
    tensors += [(f"init.{k}", v) for k, v in init.items()]
    for s, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, p in params.items():
            if s == 1 and k == "fc.bias":
                p.grad = None
                continue
            g = torch.randn(p.shape, generator=gen).float()
            tensors.append((f"grad{s}.{k}", g))
            p.grad = g.double()
        opt.step()
        tensors += [(f"after{s}.{k}", p.detach().float()) for k, p in params.items()]
    tensors += [(f"buf.{k}", opt.state[p]["momentum_buffer"].float()) for k, p in params.items()]
    meta = {"keys": ",".join(shapes), "momentum": str(MOMENTUM), "weight_decay": str(WEIGHT_DECAY),
            "torch_version": torch.__version__, "reference_precision": "float64"}
    return write_checked(os.path.join(OUT_DIR, "sgd.golden.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------------


def write_checked(path, tensors, metadata):
    """Writes, then reads the file back independently: same names, shapes and bytes in order."""
    write_safetensors(path, tensors, metadata)
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    assert header.pop("__metadata__") == metadata, path
    assert list(header) == [name for name, _ in tensors], path
    data, end = raw[8 + n:], 0
    for name, t in tensors:
        a, b = header[name]["data_offsets"]
        assert a == end and header[name]["shape"] == list(t.shape), (path, name)
        assert data[a:b] == tensor_bytes(t), (path, name)
        end = b
    assert end == len(data), f"{path}: {len(data) - end} stray bytes"
    size = os.path.getsize(path)
    print(f"wrote {os.path.relpath(path)} ({size} bytes, {len(tensors)} tensors)")
    return size


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT_DIR, exist_ok=True)
    total = make_sgd_golden() + make_step_golden() + make_step_golden(finetune=True)
    print(f"total {total} bytes")
    if total > SIZE_BUDGET_BYTES:
        sys.exit(f"make_train_golden.py: {total} bytes, over the {SIZE_BUDGET_BYTES} byte budget")


if __name__ == "__main__":
    main()
