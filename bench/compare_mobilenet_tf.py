#!/usr/bin/env python3
"""The real ImageNet MobileNetV2 (../shared, TensorFlow "SAME" padding) on a real photo: spade and
PyTorch side by side in one run, for integrated gradients (50 steps) and FastSPADE with 1024
augmentations (sparsity 0.9 on every prunable layer; spade also with depthwise convs).

    python3 bench/compare_mobilenet_tf.py --spade build/spade [--threads 2] [--repeats 3] [--quick] [--save]

The forward / forward+gradient cases of this model are in bench/compare.py
(mobilenet_v2_tf_*). spade runs as a user runs it, one process per repetition:
- ig50: `spade explain --method integrated_gradients` (Captum's defaults: 50 Gauss-Legendre
  steps), time = meta.json's timings.attribution_s (median of --repeats processes);
- fastspade1024: `spade prune --augs 1024 --report R`, time = augment + forward + Hessians +
  solve from the report (the peer's total covers the same steps);
- fastspade1024_dw: the same with --include-depthwise (spade only: the authors' SparseGPT code
  cannot prune grouped convolutions).
The peer is bench/mobilenet_tf_pytorch.py (warm, in one process). Ratio PyTorch/spade > 1: spade
is faster. Run on an idle machine.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")
WEIGHTS = os.path.join(SHARED, "models", "imagenet_mobilenet_v2_tf.safetensors")
SAMPLES = os.path.join(SHARED, "data", "imagenet-samples", "samples.tar")
PHOTO = "samples/n01440764/n01440764_tench.jpg"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spade", required=True, help="the spade binary")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="64 augmentations, one repetition (a smoke run)")
    p.add_argument("--save", action="store_true", help="write the table to bench/results/")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="spade-mnv2tf-")
    with tarfile.open(SAMPLES) as tar:
        tar.extract(PHOTO, tmp)
    photo = os.path.join(tmp, PHOTO)
    augs = 64 if a.quick else 1024
    repeats = 1 if a.quick else a.repeats
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    base = [a.spade, "--model", "mobilenet_v2_tf", "--weights", WEIGHTS, "--image", photo, "--threads", str(a.threads),
            "--quiet"]

    def spade(cmd, *args):
        return subprocess.run([a.spade, cmd] + base[1:] + list(args), check=True, capture_output=True, text=True,
                              env=env)

    ours = {}
    ig = []
    for r in range(repeats):
        spade("explain", "--method", "integrated_gradients", "--out", f"{tmp}/ig{r}")
        ig.append(json.load(open(f"{tmp}/ig{r}/meta.json"))["timings"]["attribution_s"])
    ours["ig50"] = statistics.median(ig)
    for name, extra in [(f"fastspade{augs}", []), (f"fastspade{augs}_dw", ["--include-depthwise"])]:
        totals = []
        for r in range(1 if augs > 64 else repeats):
            rep = f"{tmp}/{name}{r}.json"
            spade("prune", "--augs", str(augs), "--out", f"{tmp}/trace.safetensors", "--report", rep, *extra)
            t = json.load(open(rep))["timings"]
            totals.append(t["augment_s"] + t["forward_s"] + t["hessian_s"] + t["solve_s"])
        ours[name] = statistics.median(totals)
        print(f"spade {name}: {ours[name]:.2f} s", file=sys.stderr)

    peer_cmd = ["/usr/bin/python3", os.path.join(HERE, "mobilenet_tf_pytorch.py"), "--weights", WEIGHTS, "--image",
                photo, "--threads", str(a.threads), "--cases", "ig50,fastspade1024"] + (["--quick"] if a.quick else [])
    out = subprocess.run(peer_cmd, check=True, capture_output=True, text=True, env=env).stdout
    peer = {j["case"]: j["s"] for j in map(json.loads, [l for l in out.splitlines() if l.startswith("{")])}

    lines = [f"MobileNetV2 (TF weights, SAME padding), 224x224, photo {os.path.basename(PHOTO)}, {a.threads} threads, "
             f"load average {os.getloadavg()[0]:.2f}", "",
             "| case | spade s | PyTorch s | PyTorch/spade |", "| --- | ---: | ---: | ---: |"]
    for case, s in ours.items():
        theirs = peer.get(case)
        lines.append(f"| {case} | {s:.3f} | " + ("-" if theirs is None else f"{theirs:.3f}") + " | " +
                     ("-" if theirs is None else f"{theirs / s:.2f}") + " |")
    text = "\n".join(lines)
    print(text)
    if a.save:
        name = os.path.join(HERE, "results", f"{datetime.date.today()}-mobilenet-v2-tf.md")
        with open(name, "w") as f:
            f.write("# Real MobileNetV2 (TF): spade vs PyTorch\n\n" + text + "\n")
        print("saved", name)


if __name__ == "__main__":
    main()
