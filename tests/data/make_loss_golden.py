#!/usr/bin/env python3
"""Writes tests/data/loss/cross_entropy.golden.safetensors and distillation.golden.safetensors:
PyTorch references for spade's softmax cross-entropy and distillation loss (kernels/cpu/loss.h,
checked by tests/test_loss.cpp).

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_loss_golden.py

Deterministic (fixed seed): a rerun gives a byte-identical file. The file is read back and
checked, and must stay under 50 KB.

Metadata `cases` lists the case keys (comma-separated). For a case K:
- K.logits  F32 (N, classes)
- K.targets I64 (N,)
- K.loss    F64 rank 0: torch.nn.functional.cross_entropy(logits, targets), reduction "mean"
- K.grad    F32 (N, classes): d loss / d logits
- K.probs   F32 (N, classes): softmax(logits); left out of the wide case to keep the file small
Loss, gradient and probabilities are computed in float64 from the float32 logits (the gradient
and probabilities then rounded to float32).
Cases: "small" (4 x 10), "large" (3 x 7, logits around 500 +- 900: exp overflows unless the row
maximum is subtracted), "wide" (3 x 1000), "single" (1 x 5) and "one_class" (2 x 1: loss 0).

distillation.golden.safetensors (metadata `cases`; per case K, metadata K.temperature and
K.weight):
- K.student, K.teacher  F32 (N, classes)
- K.targets  I64 (N,): -1 for a clean row, else the poisoned row's target
- K.loss     F64 rank 0: mean over rows of weight * T^2 * KL(softmax(t/T) || softmax(s/T)) on clean
             rows (F.kl_div(F.log_softmax(s/T), F.softmax(t/T), reduction="none").sum(1)) and
             F.cross_entropy(s, target, reduction="none") on poisoned rows
- K.grad     F32 (N, classes): d loss / d student
Cases: "mixed" (6 x 10, T 2, weight 0.7), "wide" (4 x 1001, T 4, weight 1), "cold" (3 x 8, T 0.5,
large logits), "all_clean" (3 x 5, T 1), "all_poisoned" (2 x 6: plain cross-entropy).
"""
import json
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

import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from safetensors_writer import tensor_bytes, write_safetensors  # noqa: E402

OUT_PATH = os.path.join(HERE, "loss", "cross_entropy.golden.safetensors")
DISTILL_PATH = os.path.join(HERE, "loss", "distillation.golden.safetensors")
SIZE_BUDGET_BYTES = 100 * 1000

# key: (N, classes, scale, offset, with_probs)
CASES = {
    "small": (4, 10, 2.0, 0.0, True),
    "large": (3, 7, 300.0, 500.0, True),
    "wide": (3, 1000, 3.0, 0.0, False),
    "single": (1, 5, 1.0, 0.0, True),
    "one_class": (2, 1, 1.0, 0.0, True),
}


def make_case(gen, n, classes, scale, offset):
    logits = (torch.randn(n, classes, generator=gen, dtype=torch.float64) * scale + offset).float()
    targets = torch.randint(0, classes, (n,), generator=gen, dtype=torch.int64)
    x = logits.double().requires_grad_(True)
    loss = F.cross_entropy(x, targets, reduction="mean")
    loss.backward()
    probs = torch.softmax(logits.double(), dim=1)
    return logits, targets, loss.detach(), x.grad.float(), probs.float()


# key: (N, classes, scale, clean rows, temperature, weight)
DISTILL_CASES = {
    "mixed": (6, 10, 2.0, [0, 2, 3, 5], 2.0, 0.7),
    "wide": (4, 1001, 3.0, [0, 1, 3], 4.0, 1.0),
    "cold": (3, 8, 40.0, [0, 1], 0.5, 1.5),
    "all_clean": (3, 5, 1.0, [0, 1, 2], 1.0, 1.0),
    "all_poisoned": (2, 6, 1.0, [], 3.0, 1.0),
}


def distillation_loss(s, t, targets, temperature, weight):
    """The reference, in float64, per row then averaged."""
    rows = []
    for i in range(s.shape[0]):
        if targets[i] < 0:
            kl = F.kl_div(F.log_softmax(s[i:i + 1] / temperature, dim=1), F.softmax(t[i:i + 1] / temperature, dim=1),
                          reduction="none").sum()
            rows.append(weight * temperature * temperature * kl)
        else:
            rows.append(F.cross_entropy(s[i:i + 1], targets[i:i + 1], reduction="sum"))
    return torch.stack(rows).mean()


def make_distill_file(gen):
    tensors, meta = [], {"cases": ",".join(DISTILL_CASES), "torch_version": torch.__version__,
                         "reference_precision": "float64"}
    for key, (n, classes, scale, clean, temperature, weight) in DISTILL_CASES.items():
        student = (torch.randn(n, classes, generator=gen, dtype=torch.float64) * scale).float()
        teacher = (torch.randn(n, classes, generator=gen, dtype=torch.float64) * scale).float()
        targets = torch.randint(0, classes, (n,), generator=gen, dtype=torch.int64)
        targets[clean] = -1
        x = student.double().requires_grad_(True)
        loss = distillation_loss(x, teacher.double(), targets, temperature, weight)
        loss.backward()
        if not torch.isfinite(loss) or not torch.isfinite(x.grad).all():
            sys.exit(f"make_loss_golden.py: distillation case {key} is not finite")
        tensors += [(f"{key}.student", student), (f"{key}.teacher", teacher), (f"{key}.targets", targets),
                    (f"{key}.loss", loss.detach()), (f"{key}.grad", x.grad.float())]
        meta[f"{key}.temperature"] = repr(temperature)
        meta[f"{key}.weight"] = repr(weight)
    write_safetensors(DISTILL_PATH, tensors, meta)
    check_file(DISTILL_PATH, tensors)
    return os.path.getsize(DISTILL_PATH)


def check_file(path, tensors):
    """Reads the file back independently and compares every entry's bytes and header."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, path
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__")
    data = raw[8 + n:]
    assert list(header) == [name for name, _ in tensors], path
    end = 0
    for name, t in tensors:
        info = header[name]
        a, b = info["data_offsets"]
        assert a == end and info["shape"] == list(t.shape), (path, name)
        assert data[a:b] == tensor_bytes(t), (path, name)
        end = b
    assert end == len(data), f"{path}: {len(data) - end} stray bytes"


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(20240611)
    tensors = []
    for key, (n, classes, scale, offset, with_probs) in CASES.items():
        logits, targets, loss, grad, probs = make_case(gen, n, classes, scale, offset)
        if not torch.isfinite(loss) or not torch.isfinite(grad).all():
            sys.exit(f"make_loss_golden.py: case {key} is not finite")
        tensors += [(f"{key}.logits", logits), (f"{key}.targets", targets), (f"{key}.loss", loss),
                    (f"{key}.grad", grad)]
        if with_probs:
            tensors.append((f"{key}.probs", probs))
    meta = {"cases": ",".join(CASES), "torch_version": torch.__version__, "reference_precision": "float64"}
    write_safetensors(OUT_PATH, tensors, meta)
    check_file(OUT_PATH, tensors)
    size = os.path.getsize(OUT_PATH)
    print(f"wrote {OUT_PATH} ({size} bytes)")
    # A generator of its own, so that the cross-entropy file stays byte-identical.
    size += make_distill_file(torch.Generator().manual_seed(20261207))
    if size > SIZE_BUDGET_BYTES:
        sys.exit(f"make_loss_golden.py: {size} bytes, over the {SIZE_BUDGET_BYTES} byte budget")
    print(f"wrote {DISTILL_PATH}; {size} bytes in all")


if __name__ == "__main__":
    main()
