"""The same sweep through the local pool and through ``--ray local``, side by side.

A 4-point grid (intervals 5 s and 20 s × SIGKILL and SIGTERM at 400 preemptions per hour, K = 10) of the
light test job (``tests/jobs/watched_loop.py``, 150 steps of 10 ms), run as ``spotsim sweep`` end to end:
once with the local pool (``--parallel`` = the cores) and once as Ray tasks on a Ray runtime the command
starts and stops, repeats interleaved (local, Ray, then Ray, local…) so machine noise hits both alike.
Each repeat also times a bare Ray runtime's start and stop, the fixed cost that ``--ray local`` adds, and
checks that both pools gave the same rows in the columns the seeds decide.

On one machine Ray cannot win: it runs as many runs at a time as the local pool (one per core) and adds its
runtime. What it buys is other machines; this measures what it costs.

Writes ``reports/sweep_ray/``: ``sweep_ray.csv`` (one row per sweep), ``sweep_ray_summary.csv`` (medians per
pool), ``sweep_ray_env.json`` (machine facts) and ``sweep_ray.png``. From the repository root::

    python benchmarks/sweep_ray.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from _shared import REPO_ROOT, print_facts, write_reports  # noqa: E402

JOB = REPO_ROOT / "tests" / "jobs" / "watched_loop.py"
GRID = ["--intervals", "5s,20s", "--rates", "400", "--kills", "sigkill,sigterm", "--repeats", "1", "--time-scale", "10"]
POOLS = {"local": [], "ray": ["--ray", "local"]}
ENV = {"TOTAL_STEPS": "150", "STEP_SLEEP": "0.01", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# The columns the grid and the seeds decide (the rest are measured).
DETERMINISTIC = ["run", "retries", "completed", "final_step", "identity_holds", "crashes", "time_scale"]
START_STOP = (
    "import ray; ray.init(address='local', include_dashboard=False, logging_level='ERROR', log_to_driver=False);"
    " ray.shutdown()"
)


def sweep(pool: str, out: Path) -> tuple[float, pd.DataFrame]:
    """One ``spotsim sweep`` end to end: its wall seconds and its table."""
    cmd = [sys.executable, "-m", "spotsim.cli", "sweep", *GRID, *POOLS[pool], "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--", sys.executable, str(JOB)], env=os.environ | ENV, capture_output=True, text=True, timeout=600
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{pool}: exit {done.returncode}: {done.stderr.strip()[-600:]}")
    return wall, pd.read_csv(out / "sweep.csv")


def runtime_start_stop_s() -> float:
    """A bare local Ray runtime started and stopped, in a fresh Python (its import included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", START_STOP], env=os.environ | ENV, check=True, capture_output=True)
    return time.perf_counter() - started


def run_benchmark(repeats: int, work: Path) -> pd.DataFrame:
    rows = []
    for repeat in range(repeats):
        order = ["local", "ray"] if repeat % 2 == 0 else ["ray", "local"]
        tables = {}
        for pool in order:
            wall, table = sweep(pool, work / f"{pool}-{repeat}")
            tables[pool] = table
            rows.append(
                {
                    "pool": pool,
                    "repeat": repeat,
                    "sweep_wall_s": wall,
                    "runs": len(table),
                    "run_wall_s_mean": table["wall_s"].mean(),
                    "run_wall_s_sum": table["wall_s"].sum(),
                    "retries": int(table["retries"].sum()),
                }
            )
            print(
                f"repeat {repeat} {pool:5}: sweep {wall:6.2f} s, runs {table['wall_s'].mean():5.2f} s each", flush=True
            )
        same = tables["local"][DETERMINISTIC].equals(tables["ray"][DETERMINISTIC])
        start_stop = runtime_start_stop_s()
        for row in rows[-2:]:
            row |= {"same_rows": same, "ray_start_stop_s": start_stop}
        print(f"repeat {repeat}: same rows {same}; a bare Ray runtime's start and stop {start_stop:.2f} s", flush=True)
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Medians per pool; against the local pool, medians of each repeat's pair (the two ran back to back)."""
    summary = results.groupby("pool", sort=False)[["sweep_wall_s", "run_wall_s_mean", "ray_start_stop_s"]].median()
    walls = results.pivot(index="repeat", columns="pool", values="sweep_wall_s")
    extra = {pool: walls[pool] - walls["local"] for pool in walls}
    summary["sweep_vs_local"] = pd.Series({pool: (walls[pool] / walls["local"]).median() for pool in walls})
    summary["extra_s"] = pd.Series({pool: e.median() for pool, e in extra.items()})
    summary["extra_s_min"] = pd.Series({pool: e.min() for pool, e in extra.items()})
    summary["extra_s_max"] = pd.Series({pool: e.max() for pool, e in extra.items()})
    summary["same_rows"] = bool(results["same_rows"].all())
    summary["repeats"] = results["repeat"].nunique()
    return summary.reset_index()


def plot(results: pd.DataFrame, facts: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    pools = list(POOLS)
    for ax, column, label in (
        (left, "sweep_wall_s", "whole sweep (s), end to end"),
        (right, "run_wall_s_mean", "one run's wall time (s), mean of the grid"),
    ):
        medians = results.groupby("pool")[column].median().reindex(pools)
        ax.bar(pools, medians, color=["C0", "C1"], alpha=0.6, label="median")
        for i, pool in enumerate(pools):
            values = results.loc[results["pool"] == pool, column]
            ax.plot([i] * len(values), values, "k.", label="each repeat" if i == 0 else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    local = results.loc[results["pool"] == "local", "sweep_wall_s"].median()
    start_stop = results["ray_start_stop_s"].median()
    left.axhline(local + start_stop, color="C1", ls="--", lw=1, label="local + a bare Ray runtime's start and stop")
    left.legend(fontsize=7)
    fig.suptitle(
        f"spotsim sweep, {int(results['runs'].iloc[0])} runs: local pool vs --ray local "
        f"({facts['cpu_count']} cores, {facts['date'][:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="sweeps per pool, interleaved")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "sweep_ray")
    args = parser.parse_args(argv)
    import ray

    facts = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "grid": " ".join(GRID),
        "repeats": args.repeats,
        "command": " ".join(["python", "benchmarks/sweep_ray.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    print_facts(facts)
    with tempfile.TemporaryDirectory(prefix="spotsim-bench-sweep-ray-") as work:
        results = run_benchmark(args.repeats, Path(work))
    summary = summarize(results)
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    write_reports("sweep_ray", results, summary, facts, args.out, plot, floats=("%.3f", "%.3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
