#!/usr/bin/env python3
"""Compare spade's CPU benchmark with PyTorch's, case by case.

    python3 bench/compare.py --spade build/bench/spade_bench [--threads 2] [--quick]
                             [--cases a,b] [--save]

For every case it runs the spade binary and bench/bench_pytorch.py back to back (taking turns at
going first), so both see the same machine state, then prints a markdown table:
case | spade ms/img | pytorch ms/img | spade/pytorch (<= 1.0: spade is faster).
With --save the table also goes to bench/results/<date>-cpu.md.

Both programs print JSON lines {"impl", "case", "ms_per_image", "reps"} and accept
--threads N, --cases a,b and --quick.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_model, load_average  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_PYTORCH = os.path.join(HERE, "bench_pytorch.py")
RESULTS_DIR = os.path.join(HERE, "results")
DEFAULT_CASES = ["resnet50_fwd_b1", "resnet50_fwd_b16", "resnet50_fwdgrad_b1",
                 "mobilenet_v2_fwd_b1", "mobilenet_v2_fwd_b16", "mobilenet_v2_fwdgrad_b1",
                 "mobilenet_v2_tf_fwd_b1", "mobilenet_v2_tf_fwd_b16", "mobilenet_v2_tf_fwdgrad_b1"]


class BenchError(Exception):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spade", required=True, help="path to the spade_bench binary")
    p.add_argument("--threads", type=int, default=2, help="threads for both implementations (default 2)")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated cases (default: all)")
    p.add_argument("--quick", action="store_true", help="pass --quick to both (fewer repetitions)")
    p.add_argument("--save", action="store_true", help="also write the table to bench/results/<date>-cpu.md")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per benchmark process")
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    if not args.cases:
        p.error("--cases is empty")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    if not (os.path.isfile(args.spade) and os.access(args.spade, os.X_OK)):
        p.error(f"{args.spade}: not an executable file (build it first: cmake --build build --target spade_bench)")
    return args


def run_bench(impl, cmd, case, timeout):
    """Runs one benchmark process for one case and returns its ms_per_image and reps."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{impl} timed out after {timeout:.0f} s on {case}")
    except OSError as e:
        raise BenchError(f"{cmd[0]}: cannot run ({e.strerror})")
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        raise BenchError(f"{impl} exited with {proc.returncode} on {case}: {tail[0]}")
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or rec.get("case") != case:
            continue
        ms = rec.get("ms_per_image")
        if rec.get("impl") != impl or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
            raise BenchError(f"{impl}: bad result line for {case}: {line}")
        return float(ms), rec.get("reps")
    raise BenchError(f"{impl} printed no result line for {case}")




def fmt_ms(ms):
    return "failed" if ms is None else f"{ms:.2f}"


def make_table(rows):
    lines = ["| case | spade ms/img | pytorch ms/img | spade/pytorch |", "| --- | ---: | ---: | ---: |"]
    ratios = []
    for case, spade_ms, torch_ms in rows:
        ratio = "n/a"
        if spade_ms is not None and torch_ms is not None:
            ratios.append(spade_ms / torch_ms)
            ratio = f"{ratios[-1]:.2f}"
        lines.append(f"| {case} | {fmt_ms(spade_ms)} | {fmt_ms(torch_ms)} | {ratio} |")
    if len(ratios) > 1:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(f"| geometric mean | | | {geomean:.2f} |")
    return "\n".join(lines)


def results_path(today):
    path = os.path.join(RESULTS_DIR, f"{today}-cpu.md")
    n = 2
    while os.path.exists(path):  # never overwrite an earlier run of the same day
        path = os.path.join(RESULTS_DIR, f"{today}-cpu-{n}.md")
        n += 1
    return path


def save(table, args, notes, load_before, load_after):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    now = datetime.datetime.now()
    path = results_path(now.strftime("%Y-%m-%d"))
    quick = " --quick" if args.quick else ""
    text = "\n".join([
        f"# CPU benchmark, {now.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- threads: {args.threads} for both implementations{'; --quick (few repetitions, indicative only)' if args.quick else ''}",
        f"- load average (1 min) before / after: {load_before:.2f} / {load_after:.2f}",
        f"- command: `python3 bench/compare.py --spade {args.spade} --threads {args.threads}{quick}`",
        "- ms/img: median time of one repetition divided by the batch size; ratio <= 1.0 means spade is faster",
        "",
        table,
        "",
    ] + [f"- {n}" for n in notes])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + ("\n" if notes else ""))
    os.replace(tmp, path)
    return path


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    common = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    load_before = load_average()
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs; timings will be noisy",
              file=sys.stderr)
    rows, notes = [], []
    for i, case in enumerate(args.cases):
        cmds = {
            "spade": [args.spade, "--cases", case] + common,
            "pytorch": [sys.executable, BENCH_PYTORCH, "--cases", case] + common,
        }
        order = ["spade", "pytorch"] if i % 2 == 0 else ["pytorch", "spade"]
        result = {}
        for impl in order:
            print(f"[{i + 1}/{len(args.cases)}] {case}: {impl} ...", file=sys.stderr, flush=True)
            try:
                result[impl], _ = run_bench(impl, cmds[impl], case, args.timeout)
            except BenchError as e:
                result[impl] = None
                notes.append(str(e))
                print(f"error: {e}", file=sys.stderr)
        rows.append((case, result["spade"], result["pytorch"]))
    load_after = load_average()
    table = make_table(rows)
    print(table)
    for n in notes:
        print(f"- {n}")
    if args.save:
        print(f"saved {os.path.relpath(save(table, args, notes, load_before, load_after))}", file=sys.stderr)
    return 1 if any(s is None or t is None for _, s, t in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
