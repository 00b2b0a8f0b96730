#!/usr/bin/env python3
"""Writes a built-in default-schedule file (models/defaults/*.json) from a `spade tune --out` folder.

    scripts/default_schedules.py OUT.json TUNE_DIR [TUNE_DIR ...] --architectures mobilenet_v2_tf,mobilenet_v2 \
        --made "how the tuning runs were chosen"

Every method a TUNE_DIR/tune.json lists (its TUNE_DIR/<method>.json) becomes that method's schedule;
"other_methods" (the methods that were not tuned, and traces for no particular method) is their
per-block median. Each tune.json's settings (model, objective, rules, samples, augmentations, grid,
scores) are kept under "tuning", one entry per folder.
The file is compiled into spade (interpret/spade/default_schedules.h); rebuild after writing it.
Needs only the Python standard library.
"""
import argparse
import json
import os
import statistics
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("tuned", nargs="+", help="folders written by `spade tune --out`")
    ap.add_argument("--architectures", required=True, help="comma-separated built-in architecture names")
    ap.add_argument("--made", required=True, help="one paragraph: how and on what the schedules were tuned")
    args = ap.parse_args()
    methods, tuning = {}, []
    for folder in args.tuned:
        report_path = os.path.join(folder, "tune.json")
        if not os.path.exists(report_path):
            sys.exit(f"default_schedules.py: {report_path}: missing (is {folder} a `spade tune --out` folder?)")
        with open(report_path) as f:
            report = json.load(f)
        for name in sorted(report.get("methods", {})):
            if name in methods:
                sys.exit(f"default_schedules.py: {name} is tuned in two folders")
            with open(os.path.join(folder, name + ".json")) as f:
                methods[name] = json.load(f)
        t = {k: report[k] for k in ("model", "objective", "rules", "samples", "augs", "seed", "solver", "grid",
                                    "seconds", "complete") if k in report}
        if "model" in t:
            t["model"] = os.path.basename(t["model"])  # the file name; where it lay is no provenance
        t.setdefault("objective", "trojan" if "rules" in report else "unknown")
        t["scores"] = {m: {"dense": r["dense_auc"], "tuned": r["tuned_auc"]} for m, r in report["methods"].items()}
        tuning.append(t)
    if not methods:
        sys.exit("default_schedules.py: no tuned methods in " + ", ".join(args.tuned))
    blocks = sorted(next(iter(methods.values())))
    if any(sorted(s) != blocks for s in methods.values()):
        sys.exit("default_schedules.py: the schedules do not name the same blocks")
    out = {
        "architectures": [a for a in args.architectures.split(",") if a],
        "made": args.made,
        "tuning": tuning,
        "methods": methods,
        "other_methods": {b: statistics.median(s[b] for s in methods.values()) for b in blocks},
    }
    with open(args.out + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}: {len(methods)} methods for {', '.join(out['architectures'])}")


if __name__ == "__main__":
    main()
