#!/usr/bin/env python3
"""Writes tests/data/spade/, the small golden fixtures of spade's FastSPADE (SparseGPT) solver.

Run by hand from the repository root (Debian's torch lives in the system python):
    /usr/bin/python3 tests/data/make_spade_golden.py

Deterministic for a given torch build and BLAS: fixed seeds, one thread. Float32 results differ at
the 1e-7 level between BLAS libraries (netlib vs OpenBLAS: the matmul summation order), never in
which weights are pruned (see mask_margin); the BLAS used is recorded in the metadata. Each file is read back and checked; the
total must stay under 300 KB. Two files:

sparsegpt.golden.safetensors -- the SparseGPT `fasterprune` of the authors' code path, run
    exactly as bench/spade_pytorch.py runs it (the same function is imported from there), in
    float32 on the CPU, on small random layers. For each case <c> (names in the metadata):
        <c>.W         (rows, cols) F32  dense weight (conv weights already flattened, (c, ky, kx) order)
        <c>.H         (cols, cols) F32  the Hessian fed to fasterprune: H = 2/n X X^T of a random
                                        correlated X (cols, n), computed in float64, rounded to F32
        <c>.W_pruned  (rows, cols) F32  fasterprune(W, H, sparsity, blocksize, percdamp=0.01) in F32;
                                        a weight is pruned iff it is exactly 0 here
    The generator also runs fasterprune in float64 on the same F32 inputs, checks that the pruning
    mask is identical, and records the gap as a tolerance guide (`f64_rel_err` below).

hessian.golden.safetensors -- SparseGPT's running-mean Hessian of a layer input,
    H = (2/n) * sum over the n images of U U^T, U = nn.Unfold(kernel, dilation, padding, stride)
    of that image (rows of U in (c, ky, kx) order, columns = output positions), n counting images.
    Grouped convs: one Hessian per group from that group's input channels, stacked. Linear: U is
    the image's feature vector (column). Reference computed in float64, stored as F32.
    (The authors' add_batch counts a whole 2-D linear input (N, F) as one sample, so their fc
    Hessian is N times this one per call; fasterprune does not depend on the scale of H.)
        <c>.X  (N, C, H, W) F32 for convs, (N, F) F32 for linear: the layer input
        <c>.H  (groups, k, k) F32 with k = (C / groups) * kh * kw (linear: groups 1, k = F)

Metadata (safetensors "__metadata__", string -> string):
    "format": "spade-sparsegpt-golden-v1" / "spade-hessian-golden-v1"
    "generator": "tests/data/make_spade_golden.py"
    "torch": the torch version used; "blas": the BLAS/LAPACK libraries loaded
    "cases": a JSON list with one object per case, in storage order (see CASE_KEYS_* below).
"""
import json
import os
import sys

# One thread everywhere, BLAS included (an OpenBLAS built with pthreads ignores torch.set_num_threads).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

try:
    import torch
except ImportError:
    _SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(_SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYSTEM_PY):
        os.execv(_SYSTEM_PY, [_SYSTEM_PY] + sys.argv)
    raise

import numpy as np
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "spade")
SIZE_BUDGET_BYTES = 300 * 1000

sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from safetensors_writer import read_safetensors, write_safetensors  # noqa: E402
from spade_pytorch import SparseGPT, loaded_blas, sparsegpt_fasterprune  # noqa: E402

# Keys of each "cases" entry (all present in every entry of that file).
CASE_KEYS_SPARSEGPT = ["name", "rows", "cols", "blocksize", "sparsity", "percdamp", "n", "dead_columns",
                       "zeros", "mask_margin", "f64_rel_err"]
CASE_KEYS_HESSIAN = ["name", "kind", "n", "in_channels", "height", "width", "kernel", "stride", "padding",
                     "dilation", "groups", "k", "out_positions", "x_shape", "h_shape", "f32_rel_err"]

# name, rows, cols, blocksize, sparsity, dead columns (zero rows of X -> zero row/col of H)
SPARSEGPT_CASES = [
    ("linear_r8_c12_b1_s050", 8, 12, 1, 0.5, []),
    ("conv_r6_c36_b9_s050", 6, 36, 9, 0.5, []),
    ("conv_r6_c36_b9_s090", 6, 36, 9, 0.9, []),
    ("conv_dead_r6_c36_b9_s050", 6, 36, 9, 0.5, [4, 22, 23]),
    ("conv_r6_c36_b9_s000", 6, 36, 9, 0.0, []),  # the `<=` quirk: still one weight per block
    ("linear_r16_c24_b1_s090", 16, 24, 1, 0.9, []),
    ("partial_r5_c20_b8_s060", 5, 20, 8, 0.6, []),  # last block shorter than blocksize
]
SPARSEGPT_N = 256
PERCDAMP = 0.01
MIN_MASK_MARGIN = 1e-3

# name, C, H, W, kernel, stride, padding, dilation, groups (linear: name, features)
HESSIAN_CONVS = [
    ("conv_k3_s2_p1", 4, 9, 9, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    ("conv_k3_d2_p2", 5, 8, 8, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    ("conv_k3_g2_p1", 8, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    ("conv_dw_k3_s2_p1", 6, 9, 9, (3, 3), (2, 2), (1, 1), (1, 1), 6),
    ("conv_k1", 8, 7, 7, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    ("conv_rect_k3x2_s2x1_p1x0_d1x2", 4, 9, 8, (3, 2), (2, 1), (1, 0), (1, 2), 1),
]
HESSIAN_LINEAR = [("linear_f10", 10)]
HESSIAN_N = 3
HESSIAN_LINEAR_N = 5


def write_checked(path, tensors, metadata):
    write_safetensors(path, tensors, metadata)
    back, meta = read_safetensors(path)
    assert list(back) == list(tensors) and meta == metadata, path
    for k, t in tensors.items():
        assert back[k].shape == t.shape and torch.equal(back[k], t), (path, k)
    size = os.path.getsize(path)
    print(f"  wrote {os.path.relpath(path)} ({size / 1024:.1f} KiB, {len(tensors)} tensors)")
    return size


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300))


# ---------------------------------------------------------------------------------------------

def correlated_inputs(gen, cols, n):
    """X (cols, n): correlated columns with unequal scales and nonzero means, like activations."""
    mix = torch.eye(cols, dtype=torch.float64) + 0.4 * torch.randn(cols, cols, generator=gen, dtype=torch.float64)
    scale = torch.exp(0.5 * torch.randn(cols, 1, generator=gen, dtype=torch.float64))
    z = torch.randn(cols, n, generator=gen, dtype=torch.float64)
    return scale * (mix @ z) + 0.2 * torch.randn(cols, 1, generator=gen, dtype=torch.float64)


def mask_margin(W, H, blocksize, sparsity):
    """Smallest relative gap, over all blocks, between the smallest kept and the largest pruned
    score of the block's mask, along a float64 run of fasterprune: a margin well above float32
    rounding means a correct float32 port selects the same weights."""
    W = W.double().clone()
    H = H.double().clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[range(cols), range(cols)] += PERCDAMP * torch.mean(torch.diag(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    margin = float("inf")
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Hinv1 = Hinv[i1:i2, i1:i2]
        tmp = W1 ** 2 / torch.diag(Hinv1).reshape((1, -1)) ** 2
        thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
        mask1 = tmp <= thresh
        if (~mask1).any():
            kept_min = tmp[~mask1].min()
            margin = min(margin, float((kept_min - tmp[mask1].max()) / kept_min))
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w = W1[:, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            err1 = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return margin


def make_sparsegpt_case(seed, rows, cols, blocksize, sparsity, dead):
    gen = torch.Generator().manual_seed(seed)
    X = correlated_inputs(gen, cols, SPARSEGPT_N)
    X[dead] = 0
    H = (2.0 / SPARSEGPT_N * (X @ X.t())).float()
    W = torch.randn(rows, cols, generator=gen, dtype=torch.float64).float()
    W_pruned = sparsegpt_fasterprune(W, H.clone(), sparsity, blocksize=blocksize, percdamp=PERCDAMP)
    W_pruned64 = sparsegpt_fasterprune(W.double(), H.double().clone(), sparsity, blocksize=blocksize,
                                       percdamp=PERCDAMP, dtype=torch.float64)
    return W, H, W_pruned, W_pruned64


def sparsegpt_file():
    tensors, cases = {}, []
    for idx, (name, rows, cols, blocksize, sparsity, dead) in enumerate(SPARSEGPT_CASES):
        for attempt in range(50):  # first seed whose masks are clear of near-ties
            seed = 1000 * (idx + 1) + attempt
            W, H, Wp, Wp64 = make_sparsegpt_case(seed, rows, cols, blocksize, sparsity, dead)
            margin = mask_margin(W, H, blocksize, sparsity)
            if margin >= MIN_MASK_MARGIN and torch.equal(Wp == 0, Wp64 == 0):
                break
        else:
            raise SystemExit(f"{name}: no seed with a clear mask")
        assert torch.isfinite(Wp).all()
        # every pruned weight is exactly zero and every kept one is not; dead columns are pruned
        zeros = int((Wp == 0).sum())
        per_block = [int(rows * min(blocksize, cols - i1) * sparsity) + 1 for i1 in range(0, cols, blocksize)]
        assert zeros == sum(per_block) or dead, (name, zeros, per_block)
        for j in dead:
            assert (Wp[:, j] == 0).all() and H[j].abs().max() == 0
        tensors[f"{name}.W"] = W
        tensors[f"{name}.H"] = H
        tensors[f"{name}.W_pruned"] = Wp
        cases.append({"name": name, "rows": rows, "cols": cols, "blocksize": blocksize, "sparsity": sparsity,
                      "percdamp": PERCDAMP, "n": SPARSEGPT_N, "dead_columns": dead, "zeros": zeros,
                      "mask_margin": round(margin, 6), "f64_rel_err": float(f"{rel_err(Wp, Wp64):.3g}")})
        print(f"  {name}: seed {seed}, zeros {zeros}/{rows * cols}, margin {margin:.3g}, "
              f"f32 vs f64 {rel_err(Wp, Wp64):.2e}")
    assert all(list(c) == CASE_KEYS_SPARSEGPT for c in cases)
    meta = {"format": "spade-sparsegpt-golden-v1", "generator": "tests/data/make_spade_golden.py",
            "torch": torch.__version__, "blas": loaded_blas(), "cases": json.dumps(cases, separators=(",", ":"))}
    return write_checked(os.path.join(OUT_DIR, "sparsegpt.golden.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------------

def hessian_reference(X, kernel, stride, padding, dilation, groups):
    """float64: per group, (2/n) sum_images U U^T with U the unfolded columns of that image."""
    X = X.double()
    n, C = X.shape[:2]
    cg = C // groups
    unfold = nn.Unfold(kernel, dilation=dilation, padding=padding, stride=stride)
    out = []
    for g in range(groups):
        U = unfold(X[:, g * cg:(g + 1) * cg])  # (n, cg*kh*kw, L)
        H = sum(U[i] @ U[i].t() for i in range(n)) * (2.0 / n)
        out.append(H)
    return torch.stack(out), U.shape[2]


def hessian_authors_f32(X, kernel, stride, padding, dilation, groups, chunk):
    """The public SparseGPT add_batch (float32 running mean), one group at a time, `chunk` images per call."""
    n, C = X.shape[:2]
    cg = C // groups
    out = []
    for g in range(groups):
        layer = nn.Conv2d(cg, 1, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        gpt = SparseGPT(layer)
        for i in range(0, n, chunk):
            gpt.add_batch(X[i:i + chunk, g * cg:(g + 1) * cg], None)
        out.append(gpt.H)
    return torch.stack(out)


def hessian_file():
    gen = torch.Generator().manual_seed(4242)
    tensors, cases = {}, []
    for name, C, Hh, Ww, kernel, stride, padding, dilation, groups in HESSIAN_CONVS:
        X = (torch.randn(HESSIAN_N, C, Hh, Ww, generator=gen, dtype=torch.float64) + 0.3).float()
        H64, L = hessian_reference(X, kernel, stride, padding, dilation, groups)
        errs = [rel_err(hessian_authors_f32(X, kernel, stride, padding, dilation, groups, chunk), H64)
                for chunk in (1, 2, HESSIAN_N)]
        assert max(errs) < 1e-5, (name, errs)
        k = (C // groups) * kernel[0] * kernel[1]
        assert H64.shape == (groups, k, k)
        tensors[f"{name}.X"] = X
        tensors[f"{name}.H"] = H64.float()
        cases.append({"name": name, "kind": "conv2d", "n": HESSIAN_N, "in_channels": C, "height": Hh, "width": Ww,
                      "kernel": list(kernel), "stride": list(stride), "padding": list(padding),
                      "dilation": list(dilation), "groups": groups, "k": k, "out_positions": L,
                      "x_shape": list(X.shape), "h_shape": list(H64.shape),
                      "f32_rel_err": float(f"{max(errs):.3g}")})
        print(f"  {name}: H {tuple(H64.shape)}, L {L}, authors' f32 add_batch vs f64 {max(errs):.2e}")
    for name, F in HESSIAN_LINEAR:
        X = (torch.randn(HESSIAN_LINEAR_N, F, generator=gen, dtype=torch.float64) + 0.3).float()
        X64 = X.double()
        H64 = ((2.0 / HESSIAN_LINEAR_N) * (X64.t() @ X64)).unsqueeze(0)
        # The authors' add_batch counts a 2-D (N, F) input as ONE sample (it unsqueezes it to
        # (1, N, F)), so one call over the batch gives N times this reference: the same pruning
        # (fasterprune is invariant to the scale of H), but n does not count images there.
        gpt = SparseGPT(nn.Linear(F, 1, bias=False))
        gpt.add_batch(X, None)
        errs = [rel_err(gpt.H.unsqueeze(0) / HESSIAN_LINEAR_N, H64)]
        assert max(errs) < 1e-5, (name, errs)
        tensors[f"{name}.X"] = X
        tensors[f"{name}.H"] = H64.float()
        cases.append({"name": name, "kind": "linear", "n": HESSIAN_LINEAR_N, "in_channels": F, "height": 1,
                      "width": 1, "kernel": [1, 1], "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1],
                      "groups": 1, "k": F, "out_positions": 1, "x_shape": list(X.shape),
                      "h_shape": list(H64.shape), "f32_rel_err": float(f"{max(errs):.3g}")})
        print(f"  {name}: H {tuple(H64.shape)}, authors' f32 add_batch vs f64 {max(errs):.2e}")
    assert all(list(c) == CASE_KEYS_HESSIAN for c in cases)
    meta = {"format": "spade-hessian-golden-v1", "generator": "tests/data/make_spade_golden.py",
            "torch": torch.__version__, "blas": loaded_blas(), "cases": json.dumps(cases, separators=(",", ":"))}
    return write_checked(os.path.join(OUT_DIR, "hessian.golden.safetensors"), tensors, meta)


def main():
    assert sys.byteorder == "little"
    torch.set_num_threads(1)
    print("sparsegpt.golden.safetensors:")
    total = sparsegpt_file()
    print("hessian.golden.safetensors:")
    total += hessian_file()
    if total > SIZE_BUDGET_BYTES:
        sys.exit(f"make_spade_golden.py: {total} bytes, over the {SIZE_BUDGET_BYTES} byte budget")
    print(f"total {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
