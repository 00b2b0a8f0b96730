#!/usr/bin/env python3
"""Writes tests/data/safetensors/mixed.safetensors, the cross-check for spade's dtype conversion.

Each tensor <name> is stored in its own dtype, next to "expected.<name>": the same values
converted to float32 by torch, so the C++ test checks tensor(name) == tensor("expected." + name)
against torch's conversion rather than against our own code. The safetensors python package is
not available here, so the file layout (8-byte little-endian header length, JSON header padded
with spaces to a multiple of 8, contiguous data) is written by hand.

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_safetensors_golden.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_writer import write_safetensors  # noqa: E402


def main():
    assert sys.byteorder == "little", "safetensors data is little-endian"
    torch.manual_seed(20240601)
    inf, nan = float("inf"), float("nan")
    specials = torch.tensor([0.0, -0.0, 1.0, -2.0, 65504.0, 2.0 ** -24, 2.0 ** -14, 3.0e-6, inf, -inf, nan])
    sources = [
        ("f32", torch.randn(2, 3)),
        ("f16", torch.randn(3, 4).to(torch.float16)),
        ("f16_special", specials.to(torch.float16)),
        ("bf16", torch.randn(4, 2).to(torch.bfloat16)),
        ("bf16_special", torch.tensor([1.0, -0.0, 3.0e38, 1.0e-40, inf, nan]).to(torch.bfloat16)),
        ("f64", torch.randn(5, dtype=torch.float64)),
        ("f64_special", torch.tensor([1.0 / 3.0, 1.0e300, -1.0e300, 1.0e-50, 5.0e-324, 0.1], dtype=torch.float64)),
        ("i64", torch.tensor([[0, 1, -7], [123456789012, -(2 ** 40) - 3, 2 ** 24 + 1]], dtype=torch.int64)),
        ("i32", torch.randint(-1000, 1000, (3,), dtype=torch.int32)),
        ("u8", torch.tensor([0, 1, 128, 255], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("bn.num_batches_tracked", torch.tensor(12345, dtype=torch.int64)),
        ("empty", torch.zeros(0, 3)),
    ]
    tensors = list(sources)
    tensors += [("expected." + name, t.to(torch.float32)) for name, t in sources]
    here = os.path.dirname(os.path.abspath(__file__))
    write_safetensors(os.path.join(here, "safetensors", "mixed.safetensors"), tensors,
                      {"format": "pt", "made_by": "make_safetensors_golden.py"})


if __name__ == "__main__":
    main()
