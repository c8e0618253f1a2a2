"""A sweep's plots and Markdown report: live points against the simulator calibrated on those runs.

Calibration takes the medians over the sweep's runs of step time, checkpoint
cost C (blocking per checkpoint), restart overhead R and the first attempt's
start-up, all in simulated seconds; the work W is the final step × step time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spotsim.harness import parse_schedule
from spotsim.harness.config import KillMode
from spotsim.sim import Job, daly_interval, simulate, summarise, young_interval

PLOTS = {
    "cost": ("spot_cost_usd", "spot_cost_usd_mean", "projected spot cost (USD)"),
    "lost": ("lost_steps", "lost_steps_mean", "lost steps"),
    "overhead": ("checkpoint_overhead", "checkpoint_overhead_mean", "checkpoint overhead (blocking / wall)"),
}


@dataclass(frozen=True)
class Calibration:
    step_s: float
    checkpoint_s: float
    restart_s: float
    startup_s: float
    work_s: float

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> Calibration:
        per_checkpoint = (
            table["checkpoint_blocking_s"] / table["checkpoints"].where(table["checkpoints"] > 0)
        ).median()
        step = float(table["step_time_s"].median())
        return cls(
            step_s=step, checkpoint_s=max(float(per_checkpoint), 1e-6) if np.isfinite(per_checkpoint) else 1e-6,
            restart_s=float(table["restart_overhead_s"].median()) if table["restart_overhead_s"].notna().any() else 0.0,
            startup_s=float(table["startup_s"].median()) if table["startup_s"].notna().any() else 0.0,
            work_s=float(table["final_step"].median()) * step,
        )  # fmt: skip


def simulated_curves(
    table: pd.DataFrame, calibration: Calibration, *, grace_s: float, restart_delay_s: float, trials: int = 4000
) -> pd.DataFrame:
    """The simulator's rows over a dense interval range, per (rate, kill) of the sweep."""
    lo, hi = table["interval_s"].min() / 2, table["interval_s"].max() * 2
    intervals = list(np.geomspace(lo, hi, 40))
    spot, on_demand = table["spot_usd_per_hour"].iloc[0], table["on_demand_usd_per_hour"].iloc[0]
    frames = []
    for (rate, kill), _ in table.groupby(["preempt_rate", "kill"]):
        job = Job(
            work_s=calibration.work_s, checkpoint_s=calibration.checkpoint_s, restart_s=calibration.restart_s,
            restart_delay_s=restart_delay_s, step_s=calibration.step_s, grace_s=grace_s,
            sigkill_fraction=KillMode.parse(kill).sigkill_fraction, startup_s=calibration.startup_s,
        )  # fmt: skip
        outcome = simulate(job, intervals, parse_schedule("poisson", rate), trials=trials, seed=0)
        rows = pd.DataFrame(summarise(outcome, job, intervals, on_demand, spot))
        frames.append(rows.assign(preempt_rate=rate, kill=kill))
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, curves: pd.DataFrame, calibration: Calibration, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live_column, sim_column, label = PLOTS[metric]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, ((rate, kill), runs) in enumerate(table.groupby(["preempt_rate", "kill"])):
        color = f"C{i % 10}"
        stats = runs.groupby("interval_s")[live_column].agg(["mean", "std"]).reset_index()
        ax.errorbar(stats["interval_s"], stats["mean"], yerr=stats["std"].fillna(0), fmt="o", color=color,
                    capsize=3, label=f"live, λ = {rate:g}/h, {kill}")  # fmt: skip
        sim = curves[(curves["preempt_rate"] == rate) & (curves["kill"] == kill)]
        ax.plot(sim["interval_s"], sim[sim_column], "-", color=color, lw=1, label="simulated (calibrated)")
        if metric == "cost" and rate > 0:
            m = 3600 / rate
            ax.axvline(young_interval(calibration.checkpoint_s, m), color=color, ls=":", lw=1, label="Young")
            ax.axvline(daly_interval(calibration.checkpoint_s, m), color=color, ls="--", lw=1, label="Daly")
    if metric == "cost":
        ax.axhline(table["on_demand_cost_usd"].median(), color="black", lw=1.2, label="on-demand, uninterrupted")
    ax.set_xscale("log")
    ax.set_xlabel("checkpoint interval (simulated seconds)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(table: pd.DataFrame, out: Path, *, grace_s: float, restart_delay_s: float, command: str) -> Path:
    """Plots and ``report.md`` for a finished sweep; returns the report's path."""
    calibration = Calibration.from_table(table)
    curves = simulated_curves(table, calibration, grace_s=grace_s, restart_delay_s=restart_delay_s)
    curves.to_csv(out / "simulated.csv", index=False)
    for metric in PLOTS:
        plot(table, curves, calibration, metric, out / f"{metric}_vs_interval.png")
    means = table.groupby(["preempt_rate", "kill", "interval_s"])[
        ["wall_s", "sim_wall_s", "lost_steps", "checkpoint_overhead", "spot_cost_usd", "savings"]
    ].mean()
    k = table["time_scale"].iloc[0]
    text = f"""# spotsim sweep

`{command}` — {len(table)} live runs, time scale K = {k:g} (durations below are simulated seconds).

Simulator calibrated on these runs: step time {calibration.step_s:.3g} s, checkpoint cost C =
{calibration.checkpoint_s:.3g} s, restart overhead R = {calibration.restart_s:.3g} s, start-up
{calibration.startup_s:.3g} s, work W = {calibration.work_s:.4g} s.

![cost](cost_vs_interval.png)

![lost work](lost_vs_interval.png)

![overhead](overhead_vs_interval.png)

## Means per grid point

{_markdown(means.reset_index())}

One row per run: `sweep.csv` / `sweep.parquet`; the simulated curves: `simulated.csv`.
"""
    path = out / "report.md"
    path.write_text(text)
    return path


def _markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (pandas' own needs the optional tabulate package)."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
