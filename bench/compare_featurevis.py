#!/usr/bin/env python3
"""Feature visualisation side by side: `spade visualize` against the Lucent-equivalent PyTorch peer
(bench/featurevis_pytorch.py), maximising one ResNet-50 logit from the same weights.

    python3 bench/compare_featurevis.py [--spade build/spade] [--steps 512[,64,...]] [--size 224]
        [--class K] [--repeats 1] [--threads 2] [--seed 0] [--work DIR] [--weights W.safetensors]
        [--peer-warmup 2] [--weight-grads] [--out FILE.md]

1. Weights: by default the seeded random ResNet-50 with calibrated BatchNorm that
   bench/saliency_pytorch.py writes (once) into --work (default /tmp/spade-saliency-work, shared with
   bench/compare_saliency.py); the class K defaults to that model's top-1 class on the work
   directory's input (setup.json). --weights takes any torchvision-keyed resnet50 safetensors
   instead (K then defaults to 1).
2. For every step count, --repeats times, taking turns at going first:
   - spade: `spade visualize --model resnet50 --weights W --objective fc:K --steps N --size S
     --vis-seed SEED --threads T --out DIR --quiet`; its time is DIR/meta.json's timings.optimise_s (the
     optimisation alone, without loading the model; timings.total_s is reported too); a fresh process
     each time, no warm-up;
   - PyTorch: `featurevis_pytorch.py --weights W --class K --steps N --size S --seed SEED --threads T`:
     model loaded untimed, --peer-warmup untimed steps on a throwaway image, then one timed
     optimisation of N steps.
   Both get OMP_NUM_THREADS=--threads. Times are medians over the repeats; peak RSS (max over the
   repeats) comes from wait4() on each process (ru_maxrss).

Prints a markdown table (steps | spade s | PyTorch s | PyTorch/spade | s/step ...; PyTorch/spade > 1:
spade is faster) and writes it with the run's conditions to --out. The two sides draw their random
transforms from different generators, so their objective values agree only in magnitude. Only compare
on an idle machine; a warning is printed when the load average is high. Logs: WORK/logs/featurevis-*.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_saliency import RunError, last_json, prepare, run_measured  # noqa: E402
from machine_info import cpu_model, load_average  # noqa: E402

REPO = os.path.dirname(HERE)
PEER = os.path.join(HERE, "featurevis_pytorch.py")

PEER_NOTES = [
    "PyTorch peer: Lucent's render_vis (param.image(fft=True, decorrelate=True), standard_transforms, "
    "ImageNet normalisation, Adam lr 0.05, loss = -logit) re-implemented in plain PyTorch (lucent and kornia "
    "are not installed): the rotation is F.grid_sample on the inverse of OpenCV's rotation matrix, the "
    "jitters exact integer shifts.",
    "The peer's model parameters are frozen (input gradient only); a Lucent user with an unfrozen model also "
    "computes every weight gradient each step (--weight-grads times that).",
]


def meta_number(meta, path, meta_path):
    value = meta
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise RunError(f"spade visualize: no finite {'.'.join(path)} in {meta_path} (got {value!r})")
    return float(value)


class Runner:
    def __init__(self, args):
        self.args = args
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        self.logs = os.path.join(args.work, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def spade_once(self, steps, tag):
        a = self.args
        out_dir = os.path.join(a.work, "featurevis_out", f"steps{steps}-{tag}")
        os.makedirs(out_dir, exist_ok=True)
        meta_path = os.path.join(out_dir, "meta.json")
        if os.path.exists(meta_path):
            os.remove(meta_path)
        cmd = [a.spade, "visualize", "--model", "resnet50", "--weights", a.weights, "--objective", f"fc:{a.target}",
               "--steps", str(steps), "--size", str(a.size), "--vis-seed", str(a.seed), "--threads", str(a.threads),
               "--out", out_dir, "--quiet"]
        _, wall, rss = run_measured(cmd, self.env, a.timeout,
                                    os.path.join(self.logs, f"featurevis-spade-{steps}-{tag}"))
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise RunError(f"spade visualize: cannot read {meta_path} ({e})")
        seconds = meta_number(meta, ("timings", "optimise_s"), meta_path)
        if seconds <= 0:
            raise RunError(f"spade visualize: bad timings.optimise_s {seconds!r} in {meta_path}")
        return {"s": seconds, "total_s": meta_number(meta, ("timings", "total_s"), meta_path), "wall_s": wall,
                "rss_mb": rss, "objective": meta_number(meta, ("objective", "final"), meta_path)}

    def peer_once(self, steps, tag):
        a = self.args
        cmd = [sys.executable, PEER, "--weights", a.weights, "--class", str(a.target), "--steps", str(steps),
               "--size", str(a.size), "--seed", str(a.seed), "--threads", str(a.threads), "--repeats", "1",
               "--warmup", str(a.peer_warmup)] + (["--weight-grads"] if a.weight_grads else [])
        stdout, wall, rss = run_measured(cmd, self.env, a.timeout,
                                         os.path.join(self.logs, f"featurevis-pytorch-{steps}-{tag}"))
        rec = last_json(stdout, "featurevis_pytorch.py")
        if rec.get("steps") != steps or not isinstance(rec.get("seconds"), (int, float)) or rec["seconds"] <= 0:
            raise RunError(f"featurevis_pytorch.py: unexpected result {rec}")
        return {"s": float(rec["seconds"]), "wall_s": wall, "rss_mb": rss, "rss_before_mb": rec.get("rss_before_mb"),
                "objective": rec.get("objective_final"), "objective_image": rec.get("objective_image"),
                "torch": rec.get("torch")}


def summarise(runs):
    """Median time over the repeats, max peak RSS; None when any repeat failed."""
    if not runs or any(r is None for r in runs):
        return None
    out = {"s": statistics.median(r["s"] for r in runs), "all_s": [round(r["s"], 3) for r in runs],
           "rss_mb": max(r["rss_mb"] for r in runs)}
    for key in ("total_s", "wall_s"):
        if key in runs[0]:
            out[key] = statistics.median(r[key] for r in runs)
    for key in ("objective", "objective_image", "rss_before_mb", "torch"):
        if key in runs[-1]:
            out[key] = runs[-1][key]
    return out


def fmt(v, digits=2):
    return "failed" if v is None else f"{v:.{digits}f}"


def make_table(rows):
    lines = ["| steps | spade s | PyTorch s | PyTorch/spade | spade s/step | PyTorch s/step | spade total s | "
             "spade peak RSS MB | PyTorch peak RSS MB (before) | spade objective | "
             "PyTorch objective (last step / final image) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for steps, sp, pt in rows:
        ratio = f"{pt['s'] / sp['s']:.2f}" if sp and pt else "n/a"
        peer_rss = "failed" if not pt else (f"{pt['rss_mb']:.0f} ({pt['rss_before_mb']:.0f})"
                                            if pt.get("rss_before_mb") is not None else f"{pt['rss_mb']:.0f}")
        peer_obj = "failed" if not pt else f"{fmt(pt.get('objective'), 3)} / {fmt(pt.get('objective_image'), 3)}"
        lines.append(f"| {steps} | {fmt(sp and sp['s'], 2)} | {fmt(pt and pt['s'], 2)} | {ratio} | "
                     f"{fmt(sp and sp['s'] / steps, 4)} | {fmt(pt and pt['s'] / steps, 4)} | "
                     f"{fmt(sp and sp['total_s'], 2)} | {fmt(sp and sp['rss_mb'], 0)} | {peer_rss} | "
                     f"{fmt(sp and sp['objective'], 3)} | {peer_obj} |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spade", default=os.path.join(REPO, "build", "spade"), help="the spade binary")
    p.add_argument("--steps", default="512", help="comma-separated step counts (default 512)")
    p.add_argument("--size", type=int, default=224, help="image height and width (default 224)")
    p.add_argument("--class", dest="target", type=int, default=None,
                   help="logit to maximise (default: the shared model's top-1 class; 1 with --weights)")
    p.add_argument("--repeats", type=int, default=1, help="runs per step count and side (median)")
    p.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--seed", type=int, default=0, help="weights seed when --work is created; both sides' --seed")
    p.add_argument("--work", default="/tmp/spade-saliency-work", help="shared weights, outputs and logs")
    p.add_argument("--weights", default=None, help="resnet50 safetensors to use instead of the shared random one")
    p.add_argument("--peer-warmup", type=int, default=2, help="untimed peer steps before its timed run (default 2)")
    p.add_argument("--weight-grads", action="store_true", help="peer computes weight gradients too (unfrozen model)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per process")
    p.add_argument("--out", default=None, help="write the markdown report here")
    a = p.parse_args(argv)
    try:
        a.steps = [int(s) for s in a.steps.split(",") if s.strip()]
    except ValueError:
        p.error("--steps must be comma-separated integers")
    if not a.steps or any(s < 1 for s in a.steps) or a.repeats < 1 or a.threads < 1 or a.size < 8 \
            or a.peer_warmup < 0:
        p.error("--steps, --repeats, --threads must be >= 1, --size >= 8, --peer-warmup >= 0")
    if not (os.path.isfile(a.spade) and os.access(a.spade, os.X_OK)):
        p.error(f"{a.spade}: not an executable file (build it first: cmake --build build --target spade)")
    if a.weights is not None and not os.path.isfile(a.weights):
        p.error(f"--weights {a.weights}: no such file")
    a.work = os.path.abspath(a.work)
    return a


def setup_weights(args):
    """Fills args.weights and args.target; returns a line describing the model."""
    if args.weights:
        args.weights = os.path.abspath(args.weights)
        if args.target is None:
            args.target = 1
        return f"ResNet-50 from {args.weights}"
    shared = argparse.Namespace(work=args.work, seed=args.seed, target=args.target)
    setup = prepare(shared)  # bench/saliency_pytorch.py writes the shared files once
    args.weights, args.target = shared.weights, shared.target
    return f"torchvision ResNet-50, random weights (seed {setup.get('seed')}, BN calibrated)"


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.work, exist_ok=True)
    model_line = setup_weights(args)
    runner = Runner(args)
    load_before = load_average()
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs; timings will be noisy",
              file=sys.stderr)
    started = datetime.datetime.now()
    rows, notes, torch_version = [], [], None
    for i, steps in enumerate(args.steps):
        runs = {"spade": [], "pytorch": []}
        for r in range(args.repeats):
            for side in (["spade", "pytorch"] if (i + r) % 2 == 0 else ["pytorch", "spade"]):
                print(f"[{i + 1}/{len(args.steps)}] {steps} steps, run {r + 1}/{args.repeats}: {side} ...",
                      file=sys.stderr, flush=True)
                try:
                    res = runner.spade_once(steps, f"run{r}") if side == "spade" else runner.peer_once(steps, f"run{r}")
                except RunError as e:
                    res = None
                    notes.append(f"{side} {steps} steps run {r + 1}: {e}")
                    print(f"error: {e}", file=sys.stderr)
                runs[side].append(res)
        sp, pt = summarise(runs["spade"]), summarise(runs["pytorch"])
        if pt:
            torch_version = pt.get("torch")
        print(f"    spade {sp}\n    pytorch {pt}", file=sys.stderr, flush=True)
        rows.append((steps, sp, pt))
    load_after = load_average()

    table = make_table(rows)
    command = "python3 bench/compare_featurevis.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    report = [
        f"# spade visualize vs Lucent-equivalent PyTorch, {started.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- model: {model_line}; objective fc:{args.target} (maximise logit {args.target}), one "
        f"{args.size}x{args.size} image; PyTorch {torch_version or '?'}",
        f"- threads: {args.threads} for both (OMP_NUM_THREADS, torch.set_num_threads, spade --threads)",
        f"- repeats: {args.repeats}; spade s = median of meta.json timings.optimise_s (fresh process, no warm-up); "
        f"PyTorch s = median of the timed optimisation (fresh process, after {args.peer_warmup} untimed warm-up "
        f"steps); PyTorch/spade > 1: spade is faster",
        f"- load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}",
        f"- command: `{command}`",
        "",
        table,
        "",
    ]
    report += [f"- {n}" for n in PEER_NOTES + notes]
    text = "\n".join(report) + "\n"
    print(table)
    for n in notes:
        print(f"- {n}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
        print(f"saved {args.out}", file=sys.stderr)
    return 1 if any(s is None or p is None for _, s, p in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
