"""Simulator speed: 50 intervals × 10,000 trajectories (target ≤ 1 s on the development machine).

The job: 24 h of work, C = 60 s, R = 120 s, preemptions at 0.5/h (about 17 per
trajectory at the best intervals); intervals from 5 min to 2 h. Five timed
repeats after one warm-up; writes ``reports/sim_speed.csv``.

    python benchmarks/sim_speed.py
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from spotsim.preemption import parse_schedule
from spotsim.sim import Job, simulate

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1.0


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    job = Job(work_s=24 * 3600, checkpoint_s=60, restart_s=120)
    intervals = list(np.linspace(300, 7200, 50))
    schedule = parse_schedule("poisson", 0.5)
    simulate(job, intervals, schedule, trials=1000, seed=0)  # warm-up: imports, allocator
    rows = []
    for repeat in range(5):
        start = time.perf_counter()
        outcome = simulate(job, intervals, schedule, trials=10_000, seed=repeat)
        seconds = time.perf_counter() - start
        preemptions = round(float(outcome.preemptions.mean()), 2)
        row = {"repeat": repeat, "intervals": 50, "trials": 10_000, "seconds": round(seconds, 4)}
        rows.append(row | {"preemptions_mean": preemptions, "cpus": os.cpu_count()})
        print(f"repeat {repeat}: {seconds:.3f} s", flush=True)
    out = REPO_ROOT / "reports" / "sim_speed.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    median = float(np.median([r["seconds"] for r in rows]))
    print(
        f"median {median:.3f} s for 50 × 10,000 (target ≤ {TARGET_S} s: {'met' if median <= TARGET_S else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
