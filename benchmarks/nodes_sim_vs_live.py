"""The simulator's ``nodes`` against live ``--nodes 2`` runs: does the group model predict them?

``--runs`` live runs of the built-in ``torch-ddp`` workload as a 2-node group (each node a torchrun agent,
Poisson preemptions per node, mixed SIGKILL/SIGTERM, a restart delay), each with its own seed. Every run's
``summary.json`` carries its projection: the simulator with ``nodes=2``, calibrated on that run's own step
time, checkpoint cost and restart overhead R (the re-rendezvous included), over the same work, 10,000
trajectories of fresh preemption draws. Where the live run falls among them (its percentile) is recorded
for wall time, lost work and spot cost. If the simulator models the group right, those percentiles are
uniform: mean ≈ 0.5, ≈ 80% inside p10–p90, and a KS test against the uniform distribution does not reject.

Writes ``reports/nodes_sim_vs_live/nodes_sim_vs_live{.csv,_summary.csv,_env.json,.png}``.

    python benchmarks/nodes_sim_vs_live.py [--runs 10] [--rate 6] [--time-scale 100] [--steps 2000]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from _shared import REPO_ROOT, print_facts, write_reports
from scipy import stats

QUICK = "--rdzv-conf=keep_alive_interval=1,keep_alive_max_attempt=2"  # R stays a few seconds
METRICS = ("wall_s", "lost_s", "spot_cost_usd")


def run_once(seed: int, args: argparse.Namespace, out: Path) -> dict:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", QUICK, "--nproc-per-node=1"]
    command = [
        sys.executable, "-m", "spotsim.cli", "run", "--nodes", "2", "--time-scale", str(args.time_scale),
        "--interval", str(args.interval), "--preempt-rate", str(args.rate), "--kill", "mixed:0.5",
        "--restart-delay", str(args.restart_delay), "--seed", str(seed), "--out", str(out),
        "--", *torchrun, "-m", "spotsim.workloads.torch_ddp", "--steps", str(args.steps),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: spotsim run failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["projection"]["metrics"]
    row = {"seed": seed, "preemptions": summary["preemptions"], "restart_overhead_s": summary["restart_overhead_s"]}
    for name in METRICS:
        m = metrics[name]
        row |= {f"{name}_live": m["live"], f"{name}_sim_mean": m["mean"], f"{name}_percentile": m["live_percentile"]}
    return row


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name in METRICS:
        percentiles = results[f"{name}_percentile"]
        rows.append(
            {
                "metric": name,
                "runs": len(percentiles),
                "live_mean": results[f"{name}_live"].mean(),
                "sim_mean_of_means": results[f"{name}_sim_mean"].mean(),
                "percentile_mean": percentiles.mean(),
                "inside_p10_p90": ((percentiles >= 0.1) & (percentiles <= 0.9)).mean(),
                "ks_p_uniform": stats.kstest(percentiles, "uniform").pvalue,
            }
        )
    return pd.DataFrame(rows)


def plot(results: pd.DataFrame, facts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, name in enumerate(METRICS):
        values = sorted(results[f"{name}_percentile"])
        ax.step(values, [(k + 1) / len(values) for k in range(len(values))], where="post", label=name, color=f"C{i}")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", label="uniform (a calibrated simulator)")
    ax.set_xlabel("the live run's percentile among its 10,000 simulated runs (nodes = 2)")
    ax.set_ylabel("share of live runs")
    ax.set_title(f"--nodes 2 live runs against the simulator ({facts['cpu_count']} cores, {facts['date'][:10]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=6.0, help="preemptions per hour of each node's uptime")
    parser.add_argument("--time-scale", type=float, default=100.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=120.0, help="checkpoint interval, simulated seconds")
    parser.add_argument("--restart-delay", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "nodes_sim_vs_live")
    args = parser.parse_args()
    facts = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "command": "python benchmarks/nodes_sim_vs_live.py " + " ".join(sys.argv[1:]),
    } | {k: v for k, v in vars(args).items() if k != "out"}
    print_facts(facts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spotsim-nodes-sim-") as tmp:
        for seed in range(args.runs):
            row = run_once(seed, args, Path(tmp) / f"run-{seed}")
            print(row, flush=True)
            rows.append(row)
    results = pd.DataFrame(rows)
    summary = summarize(results)
    print(summary.to_string(index=False))
    write_reports("nodes_sim_vs_live", results, summary, facts, args.out, plot, floats=("%.4f", "%.4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
