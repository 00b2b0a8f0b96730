#!/usr/bin/env python3
"""Collects `spade tune` schedules into one --sparsity-dir and fills the methods that were not
tuned with the per-block median of the tuned ones.

    scripts/median_schedule.py OUT_DIR TUNE_DIR [TUNE_DIR ...] --fill lime,occlusion

Used where tuning a method costs more than the budget allows (docs/reproduction.md says where).
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
    ap.add_argument("--fill", default="", help="comma-separated methods given the median schedule")
    args = ap.parse_args()
    schedules = {}
    for folder in args.tuned:
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json") and name != "tune.json":
                with open(os.path.join(folder, name)) as f:
                    schedules[name[:-5]] = json.load(f)
    if not schedules:
        sys.exit("median_schedule.py: no schedules in " + ", ".join(args.tuned))
    blocks = sorted(next(iter(schedules.values())))
    if any(sorted(s) != blocks for s in schedules.values()):
        sys.exit("median_schedule.py: the schedules do not name the same blocks")
    median = {b: statistics.median(s[b] for s in schedules.values()) for b in blocks}
    os.makedirs(args.out, exist_ok=True)
    fill = [m for m in args.fill.split(",") if m]
    for method, schedule in list(schedules.items()) + [(m, median) for m in fill if m not in schedules]:
        path = os.path.join(args.out, method + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(schedule, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)
    print(json.dumps(median, indent=1))


if __name__ == "__main__":
    main()
