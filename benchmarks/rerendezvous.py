"""The elastic re-rendezvous after a node loss: the restart overhead R of a 2-node group against 1 node.

The built-in ``torch-ddp`` workload (DDP on gloo, one process per node) runs under ``spotsim run`` at K = 1
with ``--kill sigkill`` at two kill points (``steps:``: the first falls on node 0, the second on node 1), so
every run has a first start-up and two restarts; the configurations run side by side, in rotating order:

- ``1 node``: torchrun ``--standalone`` under the single-VM supervisor;
- ``2 nodes``: ``--nodes 2``, torchrun's default rendezvous settings (a killed node stays a member until its
  heartbeats lapse: ``keep_alive_interval`` 5 s × ``keep_alive_max_attempt`` 3);
- ``2 nodes, 1 s heartbeat``: the same with the job's ``--rdzv-conf=keep_alive_interval=1,keep_alive_max_attempt=2``.

R (launch of the replacement → the group's first step past the resume) and the first start-up come from
each run's ``summary.json``. Writes ``reports/rerendezvous/rerendezvous{.csv,_summary.csv,_env.json,.png}``.

    python benchmarks/rerendezvous.py [--repeats 3] [--steps 1500] [--kill-steps 500,1000]
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

WORKLOAD = "spotsim.workloads.torch_ddp"
QUICK = "--rdzv-conf=keep_alive_interval=1,keep_alive_max_attempt=2"
CONFIGS = {  # name: (nodes, extra torchrun options)
    "1 node": (1, ()),
    "2 nodes": (2, ()),
    "2 nodes, 1 s heartbeat": (2, (QUICK,)),
}


def run_once(name: str, steps: int, kill_steps: str, out: Path) -> dict:
    nodes, options = CONFIGS[name]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", *options, "--nproc-per-node=1"]
    command = [
        sys.executable, "-m", "spotsim.cli", "run", "--nodes", str(nodes), "--time-scale", "1",
        "--interval-steps", "100", "--kill", "sigkill", "--schedule", f"steps:{kill_steps}",
        "--out", str(out), "--", *torchrun, "-m", WORKLOAD, "--steps", str(steps),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})
    if done.returncode != 0:
        raise SystemExit(f"{name}: spotsim run failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "config": name,
        "nodes": nodes,
        "restarts": summary["attempts"] - 1,
        "startup_s": summary["startup_s"],
        "restart_overhead_s": summary["restart_overhead_s"],
        "lost_steps": summary["lost_steps"],
        "wall_real_s": summary["wall_s"],
    }


def plot(results: pd.DataFrame, facts: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = results.groupby("config", sort=False)
    means, errors = (
        grouped[["startup_s", "restart_overhead_s"]].mean(),
        grouped[["startup_s", "restart_overhead_s"]].std(),
    )
    fig, ax = plt.subplots(figsize=(8, 4))
    means.plot.bar(ax=ax, yerr=errors.fillna(0), rot=0, capsize=3)
    ax.set_ylabel("seconds (real, K = 1)")
    machine = f"{facts['cpu_count']} cores, {facts['date'][:10]}"
    ax.set_title(f"torch-ddp: first start-up and restart overhead R per node loss ({machine})", fontsize=9)
    ax.legend(["first start-up", "R (re-rendezvous + restore)"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--kill-steps", default="500,1000", help="kill points: the k-th falls on node k mod N")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "rerendezvous")
    args = parser.parse_args()
    facts = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "repeats": args.repeats,
        "steps": args.steps,
        "kill_steps": args.kill_steps,
        "command": "python benchmarks/rerendezvous.py " + " ".join(sys.argv[1:]),
    }
    print_facts(facts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spotsim-rerendezvous-") as tmp:
        for repeat in range(args.repeats):
            names = list(CONFIGS)
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotating order
                row = run_once(name, args.steps, args.kill_steps, Path(tmp) / f"{repeat}-{name.replace(' ', '_')}")
                print(row, flush=True)
                rows.append(row | {"repeat": repeat})
    results = pd.DataFrame(rows)
    summary = (
        results.groupby("config", sort=False)
        .agg(
            runs=("repeat", "count"),
            restarts=("restarts", "sum"),
            startup_mean_s=("startup_s", "mean"),
            restart_overhead_mean_s=("restart_overhead_s", "mean"),
            restart_overhead_std_s=("restart_overhead_s", "std"),
        )
        .reset_index()
    )
    single = summary.loc[summary.config == "1 node", "restart_overhead_mean_s"].iloc[0]
    summary["r_over_1_node"] = summary["restart_overhead_mean_s"] / single
    print(summary.to_string(index=False))
    write_reports("rerendezvous", results, summary, facts, args.out, plot, floats=("%.3f", "%.3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
