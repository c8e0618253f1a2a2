"""Simulator against live runs: does `spotsim simulate`, calibrated on one live run, predict a live sweep?

A live sweep of torch-cnn (6,000 steps) at one preempt rate over four
intervals, SIGKILL preemptions, K = 30, 12 repeats per interval, one run at a
time (two at a time on two cores slows every step unevenly). The simulator is
calibrated on ONE of those runs (the first repeat at the second interval: its
step time, checkpoint cost, restart overhead and start-up) and run with
20,000 trajectories per interval. For each interval: the relative error of
the simulated mean wall time and mean lost steps against the live means
(target ≤ 10%), with the live standard error beside it.

Writes ``reports/sim_vs_live.csv`` and ``reports/sim_vs_live.png``.

    python benchmarks/sim_vs_live.py [--repeats 12] [--rate 24] [--parallel 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from spotsim.harness import parse_schedule
from spotsim.harness.sweep import SweepConfig, run_sweep
from spotsim.report.sweep_report import Calibration
from spotsim.sim import Job, simulate

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--rate", type=float, default=24.0, help="preemptions per simulated hour")
    parser.add_argument("--intervals", default="15,30,60,120", help="simulated seconds")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--time-scale", type=float, default=30.0)
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (more skews step times on few cores)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args()
    intervals = tuple(float(v) for v in args.intervals.split(","))
    with tempfile.TemporaryDirectory(prefix="spotsim-sim-vs-live-") as work:
        config = SweepConfig(
            job_args=("--workload", "torch-cnn", "--steps", str(args.steps)), out=Path(work), intervals_s=intervals,
            rates=(args.rate,), repeats=args.repeats, time_scale=args.time_scale, parallel=args.parallel, seed=7,
        )  # fmt: skip
        live = run_sweep(
            config, on_done=lambda point, s: print(f"{point.name}: wall {s['sim_wall_s']:.0f} s", flush=True)
        )
    one = live[(live["interval_s"] == intervals[1]) & (live["repeat"] == 0)]
    calibration = Calibration.from_table(one)
    job = Job(
        work_s=calibration.work_s, checkpoint_s=calibration.checkpoint_s, restart_s=calibration.restart_s,
        step_s=calibration.step_s, startup_s=calibration.startup_s,
    )  # fmt: skip
    outcome = simulate(job, list(intervals), parse_schedule("poisson", args.rate), trials=20_000, seed=1)
    rows = []
    for i, tau in enumerate(intervals):
        runs = live[live["interval_s"] == tau]
        wall, lost = runs["sim_wall_s"], runs["lost_steps"]
        sim_wall, sim_lost = outcome.wall_s[i].mean(), outcome.lost_s[i].mean() / job.step_s
        rows.append({
            "interval_s": tau, "live_runs": len(runs),
            "live_wall_s": wall.mean(), "live_wall_stderr": wall.std(ddof=1) / np.sqrt(len(runs)),
            "sim_wall_s": sim_wall,
            "wall_rel_error": abs(sim_wall - wall.mean()) / wall.mean(),
            "live_lost_steps": lost.mean(), "live_lost_stderr": lost.std(ddof=1) / np.sqrt(len(runs)),
            "sim_lost_steps": sim_lost, "lost_rel_error": abs(sim_lost - lost.mean()) / max(lost.mean(), 1e-9),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "sim_vs_live.csv", index=False)
    live.to_csv(args.out / "sim_vs_live_runs.csv", index=False)
    plot(table, args.out / "sim_vs_live.png", calibration, args)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"calibration (from one run): {calibration}")
    for column in ("wall_rel_error", "lost_rel_error"):
        worst = table[column].max()
        print(f"max {column}: {worst:.1%} (target ≤ {TARGET:.0%}: {'met' if worst <= TARGET else 'NOT met'})")
    return 0


def plot(table: pd.DataFrame, path: Path, calibration: Calibration, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [
        ("live_wall_s", "live_wall_stderr", "sim_wall_s", "wall time (sim. s)"),
        ("live_lost_steps", "live_lost_stderr", "sim_lost_steps", "lost steps"),
    ]
    for ax, (live, err, sim, label) in zip(axes, panels):
        ax.errorbar(table["interval_s"], table[live], yerr=table[err], fmt="o", capsize=3, label="live (mean ± s.e.)")
        ax.plot(table["interval_s"], table[sim], "s--", label="simulated, calibrated on one run")
        ax.set_xscale("log")
        ax.set_xlabel("checkpoint interval (simulated s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"torch-cnn, λ = {args.rate:g}/h, SIGKILL, K = {args.time_scale:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
