#!/usr/bin/env python3
"""Saliency methods side by side: `spade explain` against the Captum-equivalent PyTorch peer
(bench/saliency_pytorch.py), ResNet-50 with the same random weights and the same 224x224 input.

    python3 bench/compare_saliency.py [--spade build/spade] [--methods all|a,b] [--repeats 3]
        [--threads 2] [--work DIR] [--target T] [--perturbations-per-eval 1]
        [--ig-memory-steps 50,200] [--spade-arg METHOD=ARGS ...] [--out FILE.md]

1. The peer writes (once) the weights WORK/resnet50.safetensors, the input WORK/input.npy and the
   target class (the model's top-1) into --work; spade reads the same files.
2. For every method, one after the other and taking turns at going first:
   - spade: `spade explain --model resnet50 --weights W --input X.npy --method M --target T
     --out DIR --quiet` run --repeats times; its time is the median of DIR/meta.json's
     timings.attribution_s (the attribution alone, without loading the model); the process's wall
     time (median) and peak RSS (max) are reported too. Each run is a fresh process: spade gets no
     warm-up run.
   - PyTorch: one process per method, `saliency_pytorch.py --methods M`: one warm-up run, then the
     median of --repeats timed runs of the attribution alone (model already loaded); peak RSS of
     the process, next to the RSS before the method's first run (Python + torch + model).
   Both get OMP_NUM_THREADS=--threads (spade also --threads when its CLI has it, the peer
   torch.set_num_threads). Peak RSS comes from wait4() on each process (ru_maxrss).
3. Integrated gradients memory: spade's IG once per step count in --ig-memory-steps (default 50 and
   200): spade batches the steps internally, so its peak RSS should barely grow with the steps (the
   peer, like Captum's default, puts all steps in one batch: its RSS at 50 steps is in the table).

Prints a markdown table (method | spade s | PyTorch s | PyTorch/spade | ...; PyTorch/spade > 1: spade
is faster) and writes it with the run's conditions to --out. Only compare on an idle machine: with
other work on the two cores both sides slow down several-fold; a warning is printed when the load
average is high.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_model, load_average  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEER = os.path.join(HERE, "saliency_pytorch.py")
METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "gradient_shap", "deeplift",
           "guided_backprop", "deconvolution", "gradcam", "guided_gradcam", "occlusion", "lrp", "scorecam", "lime"]
SYSTEM_PY = "/usr/bin/python3"  # where Debian's torch lives (the peer re-executes itself there anyway)

# What the peer computes, for the notes under the table.
PEER_NOTES = [
    "PyTorch peer: Captum's algorithms and defaults re-implemented (Captum is not installed); "
    "integrated_gradients puts all 50 steps in one batch (internal_batch_size=None), smoothgrad and "
    "gradient_shap their 5 samples; occlusion and lime evaluate --perturbations-per-eval images per "
    "forward (Captum's default 1).",
    "lime: the peer uses a fixed 16x16-pixel grid (196 superpixels) as Captum's feature mask and a numpy "
    "Lasso; spade segments the image itself, so its time includes segmentation.",
    "lrp: Captum's default rules (epsilon 1e-9 everywhere) and its two passes, the rule applied as a modified "
    "gradient (Captum's own hook placement also scales the skip path by the activations and diverges on ResNet); "
    "deeplift: Captum's rescale rule with its maxpool rule (F.max_unpool2d drops all but one of overlapping "
    "windows' terms, so the peer, like Captum, is not complete on ResNet); gradcam: Captum's nearest upsampling; "
    "scorecam: pytorch-grad-cam's (batch 16, all 2048 masked inputs built at once).",
    "deeplift, guided_backprop, deconvolution, lrp run on a copy of torchvision's ResNet-50 with one "
    "non-inplace ReLU module per use (Captum's module hooks need that).",
]


class RunError(Exception):
    pass




def run_measured(cmd, env, timeout, log_base):
    """Runs cmd with stdout/stderr in log_base.{out,err}; returns (stdout, wall_s, peak_rss_mb).
    The peak RSS is this process's own (wait4), not the maximum over all children so far."""
    with open(log_base + ".out", "w") as out, open(log_base + ".err", "w") as err:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        except OSError as e:
            raise RunError(f"{cmd[0]}: cannot run ({e.strerror})")
        killed = threading.Event()

        def kill():
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    with open(log_base + ".out") as f:
        stdout = f.read()
    if killed.is_set():
        raise RunError(f"{' '.join(cmd[:2])}: timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        with open(log_base + ".err") as f:
            tail = [line for line in f.read().strip().splitlines() if line.strip()][-1:] or ["(no stderr)"]
        raise RunError(f"{os.path.basename(cmd[0])} exited with {proc.returncode}: {tail[0]} (log {log_base}.err)")
    return stdout, wall, usage.ru_maxrss / 1024.0  # Linux: KiB


def last_json(stdout, what):
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise RunError(f"{what} printed no JSON result line")


def spade_help(spade):
    try:
        proc = subprocess.run([spade, "explain", "--help"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise SystemExit(f"{spade}: cannot run ({e.strerror})")
    if proc.returncode != 0:
        raise SystemExit(f"`{spade} explain --help` failed: {(proc.stderr or proc.stdout).strip()[:200]} "
                         "(build the spade CLI with the explain command first)")
    return proc.stdout + proc.stderr


class Runner:
    def __init__(self, args):
        self.args = args
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        self.help = spade_help(args.spade)
        self.logs = os.path.join(args.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.extra = {}
        for spec in args.spade_arg:
            method, _, rest = spec.partition("=")
            self.extra.setdefault(method, []).extend(shlex.split(rest))

    def spade_cmd(self, method, out_dir, extra=()):
        a = self.args
        cmd = [a.spade, "explain", "--model", "resnet50", "--weights", a.weights, "--input", a.input,
               "--method", method, "--target", str(a.target), "--out", out_dir, "--quiet"]
        if "--threads" in self.help:
            cmd += ["--threads", str(a.threads)]
        return cmd + self.extra.get(method, []) + list(extra)

    def spade_once(self, method, tag, extra=()):
        out_dir = os.path.join(self.args.work, "spade_out", f"{method}-{tag}")
        os.makedirs(out_dir, exist_ok=True)
        meta_path = os.path.join(out_dir, "meta.json")
        if os.path.exists(meta_path):
            os.remove(meta_path)
        _, wall, rss = run_measured(self.spade_cmd(method, out_dir, extra), self.env, self.args.timeout,
                                    os.path.join(self.logs, f"spade-{method}-{tag}"))
        try:
            with open(meta_path) as f:
                seconds = json.load(f)["timings"]["attribution_s"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunError(f"spade {method}: no timings.attribution_s in {meta_path} ({e})")
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise RunError(f"spade {method}: bad attribution_s {seconds!r} in {meta_path}")
        return float(seconds), wall, rss

    def spade(self, method):
        runs = [self.spade_once(method, f"run{r}") for r in range(self.args.repeats)]
        return {"s": statistics.median(r[0] for r in runs), "all_s": [round(r[0], 4) for r in runs],
                "wall_s": statistics.median(r[1] for r in runs), "rss_mb": max(r[2] for r in runs)}

    def peer(self, method):
        a = self.args
        cmd = [sys.executable, PEER, "--work", a.work, "--methods", method, "--repeats", str(a.repeats),
               "--threads", str(a.threads), "--target", str(a.target), "--seed", str(a.seed),
               "--perturbations-per-eval", str(a.perturbations_per_eval)]
        stdout, wall, rss = run_measured(cmd, self.env, a.timeout, os.path.join(self.logs, f"pytorch-{method}"))
        rec = last_json(stdout, f"saliency_pytorch.py --methods {method}")
        if rec.get("method") != method or not isinstance(rec.get("median_s"), (int, float)):
            raise RunError(f"saliency_pytorch.py: unexpected result {rec}")
        return {"s": float(rec["median_s"]), "all_s": rec.get("all_s"), "wall_s": wall, "rss_mb": rss,
                "rss_before_mb": rec.get("rss_before_mb"), "torch": rec.get("torch")}


def fmt(v, digits=2):
    return "failed" if v is None else f"{v:.{digits}f}"


def make_table(rows):
    lines = ["| method | spade s | PyTorch s | PyTorch/spade | PyTorch/spade (fastest runs) | spade wall s | "
             "spade peak RSS MB | PyTorch peak RSS MB (before method) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios = []
    for method, sp, pt in rows:
        ratio = ratio_min = "n/a"
        if sp and pt and sp["s"] > 0:
            ratios.append(pt["s"] / sp["s"])
            ratio = f"{ratios[-1]:.2f}"
            if min(sp["all_s"]) > 0 and pt.get("all_s"):
                # on a shared machine bursts of other work inflate single runs; the fastest runs
                # are the least disturbed
                ratio_min = f"{min(pt['all_s']) / min(sp['all_s']):.2f}"
        peer_rss = "failed" if not pt else f"{pt['rss_mb']:.0f} ({pt['rss_before_mb']:.0f})" \
            if pt.get("rss_before_mb") is not None else f"{pt['rss_mb']:.0f}"
        lines.append(f"| {method} | {fmt(sp and sp['s'], 3)} | {fmt(pt and pt['s'], 3)} | {ratio} | {ratio_min} | "
                     f"{fmt(sp and sp['wall_s'])} | {fmt(sp and sp['rss_mb'], 0)} | {peer_rss} |")
    if len(ratios) > 1:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(f"| geometric mean | | | {geomean:.2f} | | | | |")
    return "\n".join(lines)


def make_ig_table(ig_rows):
    lines = ["| IG steps | spade attribution s | spade wall s | spade peak RSS MB |", "| ---: | ---: | ---: | ---: |"]
    for steps, res in ig_rows:
        lines.append(f"| {steps} | {fmt(res and res[0], 3)} | {fmt(res and res[1])} | {fmt(res and res[2], 0)} |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spade", default=os.path.join(REPO, "build", "spade"), help="the spade binary")
    p.add_argument("--methods", default="all", help="all or comma-separated: " + ", ".join(METHODS))
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method and side (median)")
    p.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--work", default="/tmp/spade-saliency-work", help="shared weights/input and logs")
    p.add_argument("--seed", type=int, default=0, help="weights seed when --work is created; peer noise seed")
    p.add_argument("--target", type=int, default=None, help="target class (default: the model's top-1)")
    p.add_argument("--perturbations-per-eval", type=int, default=1,
                   help="peer occlusion/lime images per forward (Captum's default 1; 16 to batch)")
    p.add_argument("--ig-memory-steps", default="50,200", help="step counts for spade's IG memory runs ('' = none)")
    p.add_argument("--ig-steps-flag", default="--steps", help="spade explain's IG step option (default --steps)")
    p.add_argument("--spade-arg", action="append", default=[], metavar="METHOD=ARGS",
                   help="extra arguments for spade on one method, e.g. 'lrp=--lrp-rule epsilon' (repeatable)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per process")
    p.add_argument("--out", default=None, help="write the markdown report here")
    a = p.parse_args(argv)
    a.methods = METHODS if a.methods == "all" else [m for m in a.methods.split(",") if m]
    unknown = [m for m in a.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    try:
        a.ig_memory_steps = [int(s) for s in a.ig_memory_steps.split(",") if s.strip()]
    except ValueError:
        p.error("--ig-memory-steps must be comma-separated integers")
    if a.repeats < 1 or a.threads < 1 or a.perturbations_per_eval < 1 or any(s < 1 for s in a.ig_memory_steps):
        p.error("--repeats, --threads, --perturbations-per-eval and the IG steps must be >= 1")
    for spec in a.spade_arg:
        if "=" not in spec or spec.partition("=")[0] not in METHODS:
            p.error(f"--spade-arg {spec!r}: expected METHOD=ARGS with a known method")
    if not (os.path.isfile(a.spade) and os.access(a.spade, os.X_OK)):
        p.error(f"{a.spade}: not an executable file (build it first: cmake --build build --target spade)")
    a.work = os.path.abspath(a.work)
    return a


def prepare(args):
    """Has the peer create (or reuse) the shared files, and reads the target."""
    os.makedirs(args.work, exist_ok=True)
    proc = subprocess.run([sys.executable, PEER, "--work", args.work, "--seed", str(args.seed), "--prepare-only"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"saliency_pytorch.py --prepare-only failed: {proc.stderr.strip()[-400:]}")
    paths = last_json(proc.stdout, "saliency_pytorch.py --prepare-only")
    args.weights, args.input = paths["weights"], paths["input"]
    with open(paths["setup"]) as f:
        setup = json.load(f)
    if setup.get("seed") != args.seed:
        print(f"warning: {args.work} holds weights made with seed {setup.get('seed')}, not --seed {args.seed}; "
              "using them (remove the directory to regenerate)", file=sys.stderr)
    if args.target is None:
        args.target = setup["target"]
    return setup


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup = prepare(args)
    runner = Runner(args)
    load_before = load_average()
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs; timings will be noisy",
              file=sys.stderr)
    started = datetime.datetime.now()
    rows, notes, torch_version = [], [], None
    for i, method in enumerate(args.methods):
        result = {}
        for side in (["spade", "pytorch"] if i % 2 == 0 else ["pytorch", "spade"]):
            print(f"[{i + 1}/{len(args.methods)}] {method}: {side} ...", file=sys.stderr, flush=True)
            try:
                result[side] = runner.spade(method) if side == "spade" else runner.peer(method)
            except RunError as e:
                result[side] = None
                notes.append(f"{side} {method}: {e}")
                print(f"error: {e}", file=sys.stderr)
        if result["pytorch"]:
            torch_version = result["pytorch"]["torch"]
        print(f"    spade {result['spade']}\n    pytorch {result['pytorch']}", file=sys.stderr, flush=True)
        rows.append((method, result["spade"], result["pytorch"]))

    ig_rows = []
    if args.ig_memory_steps:
        if args.ig_steps_flag not in runner.help:
            notes.append(f"IG memory runs skipped: `spade explain --help` lists no {args.ig_steps_flag} option")
        for steps in args.ig_memory_steps if args.ig_steps_flag in runner.help else []:
            print(f"integrated_gradients memory: spade, {steps} steps ...", file=sys.stderr, flush=True)
            try:
                ig_rows.append((steps, runner.spade_once("integrated_gradients", f"steps{steps}",
                                                         [args.ig_steps_flag, str(steps)])))
            except RunError as e:
                ig_rows.append((steps, None))
                notes.append(f"spade integrated_gradients {steps} steps: {e}")
    load_after = load_average()

    table = make_table(rows)
    ig_table = make_ig_table(ig_rows) if ig_rows else ""
    command = "python3 bench/compare_saliency.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    report = [
        f"# spade explain vs Captum-equivalent PyTorch, {started.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- model: torchvision ResNet-50, random weights (seed {setup.get('seed')}, BN calibrated), one "
        f"224x224 image, target class {args.target}; PyTorch {torch_version or '?'}",
        f"- threads: {args.threads} for both (OMP_NUM_THREADS, torch.set_num_threads, spade --threads)",
        f"- repeats: {args.repeats}; spade s = median of meta.json timings.attribution_s over {args.repeats} "
        f"processes; PyTorch s = median of {args.repeats} timed runs after one warm-up run, in one process; "
        f"PyTorch/spade > 1: spade is faster",
        f"- peer perturbations_per_eval (occlusion, lime): {args.perturbations_per_eval}",
        f"- load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}",
        f"- command: `{command}`",
        "",
        table,
        "",
    ]
    if ig_table:
        report += ["Integrated gradients, spade's memory against the step count (bounded batches):", "", ig_table, ""]
    report += [f"- {n}" for n in PEER_NOTES + notes]
    text = "\n".join(report) + "\n"
    print(table)
    if ig_table:
        print("\n" + ig_table)
    for n in notes:
        print(f"- {n}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
        print(f"saved {args.out}", file=sys.stderr)
    failed = any(s is None or p is None for _, s, p in rows) or any(r is None for _, r in ig_rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
