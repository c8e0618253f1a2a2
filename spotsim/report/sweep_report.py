"""A sweep's plots and Markdown report: live points against the simulator calibrated on those runs.

The caller calibrates and simulates (:func:`spotsim.sim.curves.sweep_curves`:
the medians over the sweep's runs of step time, checkpoint cost C, persist,
restart overhead R and start-up, in simulated seconds on the phase-aware
clock; the work W is the final step × step time); this module only draws and
writes. The report says which adjacent live points the repeats are too few to
tell apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

PLOTS = {
    "cost": ("spot_cost_usd", "spot_cost_usd_mean", "projected spot cost (USD)"),
    "lost": ("lost_steps", "lost_steps_mean", "lost steps"),
    "overhead": ("checkpoint_overhead", "checkpoint_overhead_mean", "checkpoint overhead (blocking / wall)"),
}


RESOLVE_Z = 2.0  # adjacent live means this many combined standard errors apart count as told apart


class Calibrated(Protocol):
    """The phases the simulator was calibrated with, in simulated seconds."""

    @property
    def step_s(self) -> float: ...
    @property
    def checkpoint_s(self) -> float: ...
    @property
    def persist_s(self) -> float: ...
    @property
    def restart_s(self) -> float: ...
    @property
    def startup_s(self) -> float: ...
    @property
    def work_s(self) -> float: ...


class Simulated(Protocol):
    """The simulator's side of the report (what :func:`spotsim.sim.curves.sweep_curves` returns)."""

    @property
    def calibration(self) -> Calibrated: ...
    @property
    def rows(self) -> list[dict]: ...  # one per simulated interval, with its preempt_rate and kill
    @property
    def young_s(self) -> Mapping[float, float]: ...  # Young's interval per preemption rate > 0
    @property
    def daly_s(self) -> Mapping[float, float]: ...  # Daly's interval per preemption rate > 0


def unresolved(table: pd.DataFrame, column: str = "spot_cost_usd") -> list[str]:
    """Adjacent intervals whose live means differ by less than their noise: what the repeats cannot tell apart.

    One line each, with the repeats it would take (the standard error falls as 1/√n)."""
    lines = []
    for (rate, kill), runs in table.groupby(["preempt_rate", "kill"]):
        stats = runs.groupby("interval_s")[column].agg(["mean", "std", "count"]).reset_index()
        for (_, a), (_, b) in zip(stats.iterrows(), stats.iloc[1:].iterrows(), strict=False):
            error = float(np.hypot(_standard_error(a), _standard_error(b)))
            gap = abs(b["mean"] - a["mean"])
            if not gap > RESOLVE_Z * error:
                needed = (
                    f"about {int(np.ceil(a['count'] * (RESOLVE_Z * error / gap) ** 2)):,} repeats"
                    if gap > 0 and np.isfinite(error)
                    else "more repeats"
                )
                lines.append(
                    f"λ = {rate:g}/h, {kill}: the live {column} at {a['interval_s']:g} s and {b['interval_s']:g} s "
                    f"differ by {gap:.4g} ± {error:.2g} (s.e., {int(min(a['count'], b['count']))} repeats): too few "
                    f"to tell them apart; {needed} would"
                )
    return lines


def _standard_error(point: pd.Series) -> float:
    """Of one grid point's live mean; infinite from a single repeat, which shows no spread."""
    return point["std"] / np.sqrt(point["count"]) if point["count"] > 1 else np.inf


def plot(table: pd.DataFrame, simulated: Simulated, metric: str, path: Path) -> None:
    """One metric against the interval: live means ± s.d., the simulated curve, Young's and Daly's intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live_column, sim_column, label = PLOTS[metric]
    curves = pd.DataFrame(simulated.rows)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, ((rate, kill), runs) in enumerate(table.groupby(["preempt_rate", "kill"])):
        color = f"C{i % 10}"
        stats = runs.groupby("interval_s")[live_column].agg(["mean", "std"]).reset_index()
        ax.errorbar(
            stats["interval_s"],
            stats["mean"],
            yerr=stats["std"].fillna(0),
            fmt="o",
            color=color,
            capsize=3,
            label=f"live, λ = {rate:g}/h, {kill}",
        )
        sim = curves[(curves["preempt_rate"] == rate) & (curves["kill"] == kill)]
        ax.plot(sim["interval_s"], sim[sim_column], "-", color=color, lw=1, label="simulated (calibrated)")
        if metric == "cost" and rate in simulated.daly_s:
            ax.axvline(simulated.young_s[rate], color=color, ls=":", lw=1, label="Young")
            ax.axvline(simulated.daly_s[rate], color=color, ls="--", lw=1, label="Daly")
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


def write_report(table: pd.DataFrame, simulated: Simulated, out: Path, *, command: str) -> tuple[Path, list[str]]:
    """Plots and ``report.md`` for a finished sweep (``table``: one row per live run) beside the simulator
    calibrated on it; returns the report's path and what the repeats cannot resolve."""
    pd.DataFrame(simulated.rows).to_csv(out / "simulated.csv", index=False)
    for metric in PLOTS:
        plot(table, simulated, metric, out / f"{metric}_vs_interval.png")
    calibration = simulated.calibration
    means = table.groupby(["preempt_rate", "kill", "interval_s"])[
        ["wall_s", "sim_wall_s", "lost_steps", "checkpoint_overhead", "spot_cost_usd", "savings"]
    ].mean()
    k = table["time_scale"].iloc[0]
    too_few = unresolved(table)
    resolution = (
        "\n".join(f"- {line}" for line in too_few) or "- every pair of adjacent live points differs by more than 2 s.e."
    )
    text = f"""# spotsim sweep

`{command}` — {len(table)} live runs, compute at K = {k:,.4g} (durations below are simulated seconds; start-up,
checkpoint blocking and exits count at their real duration).

Simulator calibrated on these runs: step time {calibration.step_s:.3g} s, checkpoint cost C =
{calibration.checkpoint_s:.3g} s, persist {calibration.persist_s:.3g} s, restart overhead R =
{calibration.restart_s:.3g} s, start-up {calibration.startup_s:.3g} s, work W = {calibration.work_s:.4g} s.
The simulated curves span the live intervals and Daly's interval for this C.

## Can the live repeats resolve the curve?

{resolution}

![cost](cost_vs_interval.png)

![lost work](lost_vs_interval.png)

![overhead](overhead_vs_interval.png)

## Means per grid point

{_markdown(means.reset_index())}

One row per run: `sweep.csv` / `sweep.parquet`; the simulated curves: `simulated.csv`.
"""
    path = out / "report.md"
    path.write_text(text)
    return path, too_few


def _markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (pandas' own needs the optional tabulate package)."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
