#!/usr/bin/env python3
"""SPADE pruning (FastSPADE) side by side: `spade prune` against the authors' code path in PyTorch
(bench/spade_pytorch.py), ResNet-50 with random weights, uniform sparsity 0.9, 224x224.

    python3 bench/compare_spade.py --spade build/spade [--augs 32,1024] [--layers all|layer4+fc]
        [--peer-batch 64] [--skip-peer-above N] [--save]

For every augmentation count both run on the same synthetic image, one after the other (spade
first), and the table reports the total time and its split (augment, forward + Hessians, solve),
spade's Hessian-pass GFLOP/s against this machine's float32 GEMM peak (build/bench/spade_bench
--cases gemm_peak), and the ratio peer / spade (> 1: spade is faster). The peer puts all
augmentations in one forward batch as the authors did, which does not fit in memory for 1024
images; it then runs in chunks of --peer-batch. Only compare on an idle machine; Debian's torch
uses the system BLAS, so install libopenblas0 for a fair peer (netlib's is ~10x slower).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spade", required=True, help="the spade binary")
    p.add_argument("--bench", default=None, help="spade_bench binary (default: bench/spade_bench beside --spade)")
    p.add_argument("--augs", default="32,1024")
    p.add_argument("--layers", default="all", help="all | layer4+fc (both sides)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer-batch", type=int, default=64, help="peer forward chunk when augs exceed it")
    p.add_argument("--skip-peer-above", type=int, default=100000, help="no peer run above this many augs")
    p.add_argument("--save", action="store_true", help="write the table to bench/results/")
    a = p.parse_args()
    bench = a.bench or os.path.join(os.path.dirname(a.spade), "bench", "spade_bench")
    tmp = tempfile.mkdtemp(prefix="spade-compare-")
    py = "/usr/bin/python3"
    # One image for both: the peer's synthetic default, saved as PNG.
    subprocess.run([py, "-c", f"import sys; sys.path.insert(0, {HERE!r}); import spade_pytorch as s; "
                    f"s.synthetic_image().save({tmp!r} + '/img.png')"], check=True)
    subprocess.run([a.spade, "convert", "--model", "resnet50", "--random-init", "0", "--out", tmp + "/r50.json"],
                   check=True, capture_output=True)
    peak = run_json([bench, "--cases", "gemm_peak", "--threads", str(a.threads)])["gflops"]
    sparsity = tmp + "/layer4fc.json"
    with open(sparsity, "w") as f:
        json.dump({"layer4": 0.9, "fc": 0.9}, f)
    rows = []
    for augs in [int(x) for x in a.augs.split(",")]:
        rep = tmp + f"/report{augs}.json"
        subprocess.run([a.spade, "prune", "--model", tmp + "/r50.json", "--image", tmp + "/img.png", "--augs", str(augs),
                        "--sparsity", "0.9" if a.layers == "all" else sparsity, "--threads", str(a.threads),
                        "--quiet", "--out", tmp + "/trace.safetensors", "--report", rep], check=True, capture_output=True)
        r = json.load(open(rep))
        t = r["timings"]
        ours = {"augment_s": t["augment_s"], "fwd_hess_s": t["forward_s"] + t["hessian_s"], "solve_s": t["solve_s"],
                "hessian_gflops": t["hessian_gflops"]}
        ours["total_s"] = ours["augment_s"] + ours["fwd_hess_s"] + ours["solve_s"]
        peer = None
        if augs <= a.skip_peer_above:
            cmd = [py, os.path.join(HERE, "spade_pytorch.py"), "--augs", str(augs), "--layers", a.layers,
                   "--threads", str(a.threads), "--image", tmp + "/img.png"]
            if augs > a.peer_batch:
                cmd += ["--batch", str(a.peer_batch)]
            peer = run_json(cmd)
        rows.append((augs, ours, peer))
        print(f"augs {augs}: spade {ours}, peer {peer}", file=sys.stderr)

    lines = [f"ResNet-50, random weights, sparsity 0.9, layers {a.layers}, {a.threads} threads; "
             f"float32 GEMM peak {peak:.0f} GFLOP/s; load average {os.getloadavg()[0]:.2f}", "",
             "| augs | spade total s | augment | fwd+Hessians | solve | Hessian GFLOP/s (% of peak) | "
             "PyTorch total s | augment | fwd+Hessians | prune | PyTorch/spade |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for augs, o, pr in rows:
        peer_cols = ("| - | - | - | - | - |" if pr is None else
                     f"| {pr['total_s']:.2f} | {pr['augment_s']:.2f} | {pr['forward_hessian_s']:.2f} | "
                     f"{pr['prune_s']:.2f} | {pr['total_s'] / o['total_s']:.2f} |")
        lines.append(f"| {augs} | {o['total_s']:.2f} | {o['augment_s']:.2f} | {o['fwd_hess_s']:.2f} | "
                     f"{o['solve_s']:.2f} | {o['hessian_gflops']:.0f} ({100 * o['hessian_gflops'] / peak:.0f}%) "
                     + peer_cols)
    text = "\n".join(lines)
    print(text)
    if a.save:
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        name = os.path.join(HERE, "results", f"{datetime.date.today()}-spade-prune-{a.layers}.md")
        with open(name, "w") as f:
            f.write("# spade prune vs the authors' FastSPADE code path (PyTorch)\n\n" + text + "\n")
        print("saved", name)


if __name__ == "__main__":
    main()
