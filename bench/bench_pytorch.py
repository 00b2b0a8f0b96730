#!/usr/bin/env python3
"""PyTorch (CPU) side of the spade benchmark.

    python3 bench/bench_pytorch.py [--threads 2] [--cases resnet50_fwd_b1,...] [--quick]

Prints one JSON object per line, the same format as spade_bench:
    {"impl": "pytorch", "case": "resnet50_fwd_b1", "ms_per_image": 57.1, "reps": 20}
ms_per_image is the median time of one repetition divided by the batch size.
"""
import argparse
import json
import os
import statistics
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

import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mobilenet_tf_pytorch import tf_mobilenet  # noqa: E402

# mobilenet_v2_tf: torchvision's MobileNetV2 with TensorFlow "SAME" padding (F.pad) and 1001 outputs.
MODELS = {"resnet50": torchvision.models.resnet50, "mobilenet_v2": torchvision.models.mobilenet_v2,
          "mobilenet_v2_tf": lambda weights=None: tf_mobilenet()}
# case name -> (model, mode, batch)
CASES = {
    f"{model}_{mode}_b{batch}": (model, mode, batch)
    for model in MODELS
    for mode, batch in [("fwd", 1), ("fwd", 16), ("fwdgrad", 1)]
}
IMAGE_SIZE = 224
TARGET_CLASS = 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--cases", default=",".join(CASES),
                   help="comma-separated subset of: " + ", ".join(CASES))
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, not a measurement)")
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def make_runner(model, mode, batch):
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    if mode == "fwd":
        def run():
            with torch.no_grad():
                model(x)
    else:
        # Only the input gradient is wanted (as in saliency maps), so the parameters do not
        # require grad and autograd skips the weight gradients.
        def run():
            xi = x.clone().requires_grad_(True)
            model(xi)[0, TARGET_CLASS].backward()
            return xi.grad
    return run


def time_case(run, warmup, min_seconds, min_reps, max_reps):
    for _ in range(warmup):
        run()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_seconds and len(times) < max_reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        warmup, min_seconds, min_reps, max_reps = 1, 0.3, 2, 5
    else:
        warmup, min_seconds, min_reps, max_reps = 2, 2.5, 5, 200
    models = {}
    for case in args.cases:
        name, mode, batch = CASES[case]
        if name not in models:
            m = MODELS[name](weights=None).eval()
            for p in m.parameters():
                p.requires_grad_(False)
            models[name] = m
        median_s, reps = time_case(make_runner(models[name], mode, batch), warmup, min_seconds, min_reps, max_reps)
        print(json.dumps({"impl": "pytorch", "case": case, "ms_per_image": round(median_s * 1000.0 / batch, 3),
                          "reps": reps}), flush=True)


if __name__ == "__main__":
    main()
