"""Cost against checkpoint interval on each recorded spot trace, with the simulator.

For every recorded trace shipped in ``spotsim/preemption/traces/`` (or under ``--traces DIR``):
24 h of work with C = 60 s, R = 120 s, a 2-minute restart delay and SIGKILL
preemptions replayed from the trace (capacity gaps waited, not billed), over
intervals from 5 min to 4 h. Writes ``reports/trace_replay.csv`` (one row per
trace and interval) and ``reports/trace_replay.png`` (spot cost per trace
against the interval, with the on-demand cost of the same job).

    python benchmarks/trace_replay.py [--traces DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from spotsim.cost import load_prices
from spotsim.preemption import TRACES_DIR, parse_schedule
from spotsim.sim import Job, interval_rows, simulate

REPO_ROOT = Path(__file__).resolve().parent.parent
INTERVALS_MIN = [5, 10, 15, 30, 45, 60, 90, 120, 180, 240]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=TRACES_DIR, help="folder of trace files [the shipped ones]")
    parser.add_argument("--machine", default="aws-p3.2xlarge")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args()
    files = sorted(args.traces.rglob("*.json"))
    if not files:
        parser.error(f"no trace files under {args.traces}")
    machine = load_prices().machine(args.machine)
    job = Job(work_s=24 * 3600, checkpoint_s=60, restart_s=120, restart_delay_s=120)
    intervals = [m * 60.0 for m in INTERVALS_MIN]
    rows = []
    for path in files:
        # A replay is deterministic: one trajectory per interval says it all.
        outcome = simulate(job, intervals, parse_schedule(f"trace:{path}", 0), trials=1)
        name = str(path.relative_to(args.traces))
        for row in interval_rows(outcome, job, intervals, machine):
            rows.append({"trace": name, **row})
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "trace_replay.csv", index=False)
    plot(table, args.out / "trace_replay.png", machine.name)
    best = table.loc[
        table.groupby("trace")["spot_cost_usd_mean"].idxmin(), ["trace", "interval_s", "spot_cost_usd_mean"]
    ]
    print(best.to_string(index=False))
    return 0


def plot(table: pd.DataFrame, path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    for trace, rows in table.groupby("trace"):
        ax.plot(rows["interval_s"] / 60, rows["spot_cost_usd_mean"], marker=".", lw=1, label=trace.split("/")[-1])
    intervals_min = table["interval_s"].unique() / 60
    on_demand = table.groupby("interval_s")["on_demand_cost_usd"].first()
    ax.plot(intervals_min, on_demand, "k--", lw=1.5, label="on-demand, uninterrupted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("checkpoint interval (min)")
    ax.set_ylabel(f"cost of 24 h of work on {machine} (USD)")
    ax.set_title("spot cost vs checkpoint interval, replaying recorded traces (C = 60 s, R = 120 s, D = 2 min)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
