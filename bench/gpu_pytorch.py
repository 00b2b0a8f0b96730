#!/usr/bin/env python3
"""PyTorch peers of bench/cuda_bench.cpp on the same GPU, and the side-by-side summary.

    python3 bench/gpu_pytorch.py forward [--repeat 30] [--out pytorch.json]
    python3 bench/gpu_pytorch.py obc [--layers NAME,...|all] [--augs 64] [--parallel 32] [--out pytorch_obc.json]
    python3 bench/gpu_pytorch.py summary --dir OUT

forward: torchvision resnet50 (random weights, seed 0), eval mode, float32, at batch 1 and 64, once
with TF32 off (torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False,
exact float32 like spade's default) and once with TF32 on (PyTorch's default for cuDNN convs);
cudnn.benchmark on (the fastest algorithms cuDNN finds), under torch.inference_mode(). Medians of
CUDA-event times after warm-up. Plus the device's measured ceilings: a float32 8192^3 GEMM
(TF32 off, and on for reference) and a device-to-device copy of 1 GiB (bandwidth counts the bytes
read and written). FLOP/s use the conv and linear multiply-adds x 2 (8.2 GFLOP per image).

obc: the OBC peer, written the way the OBC authors' public code (IST-DASLab/OBC, trueobs.py,
unstructured path) works: per layer the Hessian H = 2/n sum X X^T is accumulated in float64 by
forward hooks over --augs torchvision augmentations of bench/spade_pytorch.py's synthetic image
(made on the CPU, as the authors do); then H goes to float32, dead columns get H_jj = 1 and zero
weights, Hinv = cholesky_inverse (H + I if Cholesky fails), and rows are processed --parallel at
a time with Hinv copied per row as a (rows, d, d) tensor: d greedy steps of argmin w^2/diag(Hinv),
compensation w -= Hinv[j] w_j / Hinv_jj, rank-1 downdate Hinv -= bmm(row, row^T) (as the authors
write it: a bmm and a subtraction), every intermediate w kept in a (d + 1, rows, d) trace that
goes to host memory; finally the ceil(rows * d * 0.9) cheapest steps of the layer are taken
(global loss allocation) and each row's weights are read from its trace. Unstructured only
(block = 1): for 1x1 convs and the fc layer this is exactly what spade's OBC does (its blocks are
kh*kw columns, 1 for them); 3x3 convs spade prunes in blocks of 9, so compare on 1x1 layers. The
float32 Hinv is the authors' choice (spade's solver works in float64). The final selection is
vectorised (the authors loop over rows in Python). All 53 layers of ResNet-50 take far too long
this way, so --layers picks a subset (default: the first 1x1 conv of each stage and the d = 2048
layer4.1.conv1); the JSON has every layer's time and an estimate for all 53 layers from a cost
model fitted to the measured ones (t = a * rows * d^3 + b * ceil(rows / parallel) * d).

summary: reads what bench/run_gpu_bench.sh wrote into --dir and prints spade vs PyTorch with
ratios PyTorch / spade (> 1: spade is faster).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import spade_pytorch as sp  # noqa: E402  (synthetic image, augmentations, layer list, unfold)

DEFAULT_OBC_LAYERS = "layer1.0.conv1,layer2.0.conv1,layer3.0.conv1,layer4.0.conv1,layer4.1.conv1"


def set_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def cuda_ms(fn, repeat, warmup=5):
    """Median and minimum of `repeat` CUDA-event timings of fn() in ms, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times)


def conv_linear_flops(model, device):
    """2 x multiply-adds of every Conv2d and Linear for one 224x224 image."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224, device=device))
    for h in handles:
        h.remove()
    return total[0]


def resnet50(device):
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# forward + device ceilings

def cmd_forward(args):
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = resnet50(dev)
    flop = conv_linear_flops(model, dev)
    out = {"impl": "pytorch", "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
           "cudnn": torch.backends.cudnn.version(), "cudnn_benchmark": True, "gflop_per_image": flop / 1e9,
           "forward": []}
    for tf32 in (False, True):
        set_tf32(tf32)
        for batch in (1, 64):
            x = torch.randn(batch, 3, 224, 224, device=dev)
            with torch.inference_mode():
                med, low = cuda_ms(lambda: model(x), args.repeat, warmup=10)
            out["forward"].append({"tf32": tf32, "batch": batch, "median_ms": med, "min_ms": low, "runs": args.repeat,
                                   "ms_per_image": med / batch, "images_per_s": 1e3 * batch / med,
                                   "tflops": flop * batch / (med * 1e-3) / 1e12})
    del model
    torch.cuda.empty_cache()

    n = 8192
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    c = torch.empty(n, n, device=dev)
    ceiling = {"gemm_n": n}
    for tf32 in (False, True):
        set_tf32(tf32)
        med, _ = cuda_ms(lambda: torch.matmul(a, b, out=c), 10, warmup=3)
        ceiling["gemm_tf32_tflops" if tf32 else "gemm_fp32_tflops"] = 2 * n ** 3 / (med * 1e-3) / 1e12
    set_tf32(False)
    del a, b, c
    src = torch.empty(2 ** 28, device=dev)  # 1 GiB of float32
    dst = torch.empty_like(src)
    med, _ = cuda_ms(lambda: dst.copy_(src), 20, warmup=3)
    ceiling["copy_gib"] = 1
    ceiling["copy_gbs"] = 2 * src.numel() * 4 / (med * 1e-3) / 1e9
    out["ceiling"] = ceiling

    print(f"{out['device']}, torch {out['torch']}, cuDNN {out['cudnn']} (benchmark mode)")
    print(f"{'case':<28} {'median ms':>10} {'images/s':>10} {'TFLOP/s':>8}")
    for f in out["forward"]:
        name = f"forward b{f['batch']} TF32 {'on' if f['tf32'] else 'off'}"
        print(f"{name:<28} {f['median_ms']:10.3f} {f['images_per_s']:10.1f} {f['tflops']:8.2f}")
    print(f"GEMM {n}^3: {ceiling['gemm_fp32_tflops']:.1f} TFLOP/s float32, {ceiling['gemm_tf32_tflops']:.1f} TF32; "
          f"copy {ceiling['copy_gbs']:.0f} GB/s (read + write)")
    write_json(args.out, out)


# ---------------------------------------------------------------------------------------------
# OBC peer

def obc_hessians(model, layers, augs, device, seed=0):
    """float64 H = 2/n sum X X^T per layer (n counts images), as the authors' add_batch does."""
    torch.manual_seed(seed + 1000)
    t0 = time.perf_counter()
    aug = sp.augmentation()
    image = sp.synthetic_image()
    batch = torch.stack([aug(image) for _ in range(augs)])
    t1 = time.perf_counter()
    H, seen = {}, {}
    for name, layer in layers:
        d = layer.weight[0].numel()
        H[name] = torch.zeros(d, d, device=device, dtype=torch.float64)
        seen[name] = 0

    def hook(name, layer):
        def fn(_, inp, out):
            x = inp[0].data
            count = x.shape[0]
            x = sp.unfold_input(layer, x) if isinstance(layer, nn.Conv2d) else x.t()
            H[name] *= seen[name] / (seen[name] + count)
            seen[name] += count
            H[name] += 2 / seen[name] * (x.matmul(x.t())).double()
        return fn

    handles = [layer.register_forward_hook(hook(name, layer)) for name, layer in layers]
    with torch.no_grad():
        for i in range(0, augs, 64):
            model(batch[i:i + 64].to(device))
    for h in handles:
        h.remove()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return H, t1 - t0, time.perf_counter() - t1


def obc_prune(W, H, sparsity, parallel):
    """Unstructured OBC of one layer (see the module docstring). W: (rows, d) float32, H: (d, d)
    float64, both on the device. Returns the pruned W, the sum of the taken steps' losses (= the
    layer's tr(dW H dW^T) as spade reports it; the authors store half of it) and the bytes of trace
    stored."""
    dev = W.device
    rows, d = W.shape
    W = W.clone()
    H = H.float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    try:
        Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    except RuntimeError:  # not positive definite: the authors add the identity once
        Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H + torch.eye(d, device=dev)))
    losses = torch.zeros(rows, d, device=dev)
    traces = []
    for r1 in range(0, rows, parallel):
        r2 = min(r1 + parallel, rows)
        count = r2 - r1
        w = W[r1:r2].clone()
        hinv = Hinv.unsqueeze(0).repeat(count, 1, 1)
        removed = torch.zeros_like(w, dtype=torch.bool)
        idx = torch.arange(count, device=dev)
        trace = torch.zeros(d + 1, count, d, device=dev)
        trace[0] = w
        for step in range(d):
            diag = torch.diagonal(hinv, dim1=1, dim2=2)
            score = w ** 2 / diag
            score[removed] = float("inf")
            j = torch.argmin(score, 1)
            losses[r1:r2, step] = score[idx, j]
            hrow = hinv[idx, j, :]
            dj = diag[idx, j]
            w -= hrow * (w[idx, j] / dj).unsqueeze(1)
            removed[idx, j] = True
            w[removed] = 0
            trace[step + 1] = w
            if step + 1 == d:
                break
            hrow /= torch.sqrt(dj).unsqueeze(1)
            hinv -= torch.bmm(hrow.unsqueeze(2), hrow.unsqueeze(1))
        traces.append(trace.cpu())
    # Global allocation: a row keeps its weights after as many steps as it has among the cheapest.
    take = math.ceil(rows * d * sparsity)
    order = torch.argsort(losses.flatten())[:take]
    per_row = torch.bincount(order // d, minlength=rows).cpu()
    for k, r1 in enumerate(range(0, rows, parallel)):
        r2 = min(r1 + parallel, rows)
        W[r1:r2] = traces[k][per_row[r1:r2], torch.arange(r2 - r1)].to(dev)
    return W, losses.flatten()[order].sum().item(), sum(t.numel() * 4 for t in traces)


def fit_cost(measured):
    """Least squares (relative) for t = a * rows * d^3 + b * rows / parallel * d; a, b >= 0."""
    import numpy as np
    A = np.array([[m["rows"] * m["cols"] ** 3, math.ceil(m["rows"] / m["parallel"]) * m["cols"]] for m in measured], float)
    t = np.array([m["seconds"] for m in measured], float)
    if len(measured) == 1:
        return t[0] / A[0, 0], 0.0
    coef, *_ = np.linalg.lstsq(A / t[:, None], np.ones(len(t)), rcond=None)
    return max(coef[0], 0.0), max(coef[1], 0.0)


def cmd_obc(args):
    dev = torch.device(args.device)
    if dev.type == "cuda":
        set_tf32(False)  # as trueobs.py does at import
    model = resnet50(dev)
    every = sp.prunable_layers(model, "resnet50", "all")
    chosen = every if args.layers == "all" else [(n, m) for n, m in every if n in args.layers.split(",")]
    if not chosen:
        raise SystemExit(f"--layers {args.layers!r} names none of: {', '.join(n for n, _ in every)}")
    H, aug_s, hess_s = obc_hessians(model, chosen, args.augs, dev)
    print(f"OBC peer: {args.augs} augmentations {aug_s:.2f} s (CPU), forward + Hessians {hess_s:.2f} s", flush=True)
    measured = []
    for name, layer in chosen:
        W = layer.weight.data.flatten(1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pruned, loss, trace_bytes = obc_prune(W, H[name], args.sparsity, args.parallel)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        layer.weight.data = pruned.reshape(layer.weight.shape)
        measured.append({"name": name, "rows": W.shape[0], "cols": W.shape[1], "parallel": args.parallel,
                         "seconds": seconds, "loss": loss, "trace_gb": trace_bytes / 1e9,
                         "achieved": (pruned == 0).float().mean().item()})
        print(f"  {name:<22} {W.shape[0]:5d} x {W.shape[1]:5d}  {seconds:8.2f} s  "
              f"(sparsity {measured[-1]['achieved']:.4f})", flush=True)
    a, b = fit_cost(measured)
    all_layers = [{"name": n, "rows": m.weight.shape[0], "cols": m.weight[0].numel()} for n, m in every]
    estimate = sum(a * l["rows"] * l["cols"] ** 3 + b * math.ceil(l["rows"] / args.parallel) * l["cols"]
                   for l in all_layers)
    out = {"impl": "pytorch-obc-authors-way", "torch": torch.__version__,
           "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "augs": args.augs,
           "sparsity": args.sparsity, "parallel": args.parallel, "block": 1, "augment_s": aug_s,
           "forward_hessian_s": hess_s, "layers": measured, "solve_s": sum(m["seconds"] for m in measured),
           "estimate_all_53_layers_s": estimate,
           "estimate_note": "cost model t = a*rows*d^3 + b*ceil(rows/parallel)*d fitted to the measured layers; "
                            "unstructured on every layer (spade prunes 3x3 convs in blocks of 9)"}
    print(f"OBC peer: {len(measured)} layers in {out['solve_s']:.2f} s; all 53 layers unstructured: "
          f"~{estimate:.0f} s (estimate)")
    write_json(args.out, out)


# ---------------------------------------------------------------------------------------------
# summary

def load(path):
    """The JSON object in a file (the last line that is one, for stdout captures); None if absent."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        lines = [l for l in text.splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None


def cmd_summary(args):
    d = args.dir
    spade, pt = load(os.path.join(d, "spade.json")), load(os.path.join(d, "pytorch.json"))
    sub, full = (load(os.path.join(d, f"spade_obc_{which}.json")) or {} for which in ("subset", "all"))
    sub, full = sub.get("obc"), full.get("obc")  # absent when the OBC case did not finish
    peer_fs, peer_obc = load(os.path.join(d, "pytorch_fastspade.out")), load(os.path.join(d, "pytorch_obc.json"))
    rows = []

    def row(case, ours, theirs, unit, ratio=True):
        fmt = (lambda v: "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}")
        ratio = f"{theirs / ours:.2f}" if ratio and ours and theirs else "-"
        rows.append(f"| {case} | {fmt(ours)} | {fmt(theirs)} | {unit} | {ratio} |")

    def get(obj, *keys):
        try:
            for k in keys:
                obj = obj[k]
            return obj
        except (KeyError, IndexError, TypeError):
            return None

    device = get(spade, "device", "describe") or get(pt, "device") or "unknown GPU"
    spade_tf32 = load(os.path.join(d, "spade_tf32.json"))

    def fwd(result, batch, key="cases"):
        c = next((c for c in get(result, "forward", key) or [] if c["batch"] == batch), None)
        return c and c["ms_per_image"]

    def peer_fwd(batch, tf32):
        f = next((f for f in get(pt, "forward") or [] if f["batch"] == batch and f["tf32"] == tf32), None)
        return f and f["ms_per_image"]

    for batch in (1, 64):
        row(f"forward batch {batch}, float32 (TF32 off both)", fwd(spade, batch), peer_fwd(batch, False), "ms/image")
        row(f"forward batch {batch}, TF32 on both", fwd(spade_tf32, batch), peer_fwd(batch, True), "ms/image")
        row(f"forward batch {batch}, spade float32 vs PyTorch TF32 (its default)", fwd(spade, batch),
            peer_fwd(batch, True), "ms/image")
    runs = get(spade, "fastspade", "runs") or []
    if runs or peer_fs:
        warm = runs[-1] if runs else None
        peer_total = get(peer_fs, "total_s_all")
        row("FastSPADE total, first run", runs[0]["wall_s"] if runs else None,
            peer_total[0] if peer_total else get(peer_fs, "total_s"), "s")
        row("FastSPADE total, warm run", warm and warm["wall_s"],
            peer_total[-1] if peer_total else get(peer_fs, "total_s"), "s")

        def last(key):
            v = get(peer_fs, key + "_all")
            return v[-1] if v else get(peer_fs, key)

        row("  augmentation (spade GPU, PyTorch CPU)", warm and warm["augment_s"], last("augment_s"), "s")
        row("  forward + Hessians", warm and warm["forward_s"] + warm["hessian_s"], last("forward_hessian_s"), "s")
        row("  solve (SparseGPT, 53 layers)", warm and warm["solve_s"], last("prune_s"), "s")
    ours_layers = {l["name"]: l for l in (get(sub, "layers") or []) + (get(full, "layers") or [])}
    for m in get(peer_obc, "layers") or []:
        ours = ours_layers.get(m["name"])
        row(f"OBC {m['name']} ({m['rows']}x{m['cols']})", ours and ours["seconds"], m["seconds"], "s")
    if full or peer_obc:
        # Not like for like: spade removes 3x3 conv weights in blocks of 9, the estimate is unstructured.
        row("OBC all 53 layers solve (spade: 3x3 in blocks of 9; PyTorch: unstructured, estimated)",
            get(full, "solve_s"), get(peer_obc, "estimate_all_53_layers_s"), "s", ratio=False)

    print(f"\n{device}; ratio = PyTorch / spade (> 1: spade is faster)\n")
    print("| case | spade | PyTorch | unit | PyTorch/spade |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    ceiling = get(pt, "ceiling")
    if ceiling:
        line = (f"\nceilings: float32 GEMM {ceiling['gemm_fp32_tflops']:.1f} TFLOP/s (TF32 "
                f"{ceiling['gemm_tf32_tflops']:.1f}), device copy {ceiling['copy_gbs']:.0f} GB/s")
        b64 = next((c for c in get(spade, "forward", "cases") or [] if c["batch"] == 64), None)
        if b64:
            line += f"; spade forward b64 {b64['tflops']:.1f} TFLOP/s = {100 * b64['tflops'] / ceiling['gemm_fp32_tflops']:.0f}%"
        if runs:
            line += (f"; spade Hessians {runs[-1]['hessian_tflops']:.1f} TFLOP/s = "
                     f"{100 * runs[-1]['hessian_tflops'] / ceiling['gemm_fp32_tflops']:.0f}% of the float32 GEMM")
        print(line)
    checks = []
    for c in get(spade, "forward", "cases") or []:
        if not c.get("finite", True):
            checks.append(f"forward batch {c['batch']} output NOT finite")
        if "rel_l2_vs_cpu" in c:
            checks.append(f"forward GPU vs CPU relative L2 {c['rel_l2_vs_cpu']:.2e}")
    for label, r in [("fastspade", runs[-1] if runs else None), ("obc subset", sub), ("obc all", full)]:
        if r:
            checks.append(f"{label}: {r['layers_pruned']} layers at sparsity {r['achieved_sparsity']:.4f}, "
                          f"{r['nonfinite_weights']} non-finite weights")
    if checks:
        print("checks: " + "; ".join(checks))


def write_json(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1)
        print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("forward", help="ResNet-50 forward and the device ceilings")
    f.add_argument("--repeat", type=int, default=30)
    f.add_argument("--out", default="pytorch.json")
    o = sub.add_parser("obc", help="the OBC peer")
    o.add_argument("--layers", default=DEFAULT_OBC_LAYERS, help="all | comma-separated layer names")
    o.add_argument("--augs", type=int, default=64)
    o.add_argument("--sparsity", type=float, default=0.9)
    o.add_argument("--parallel", type=int, default=32, help="rows per batch (the authors' default 32)")
    o.add_argument("--device", default="cuda", help="cuda (cpu only to check the code)")
    o.add_argument("--out", default="pytorch_obc.json")
    s = sub.add_parser("summary", help="spade vs PyTorch from run_gpu_bench.sh's output folder")
    s.add_argument("--dir", required=True)
    args = p.parse_args()
    {"forward": cmd_forward, "obc": cmd_obc, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    main()
