"""A sweep's plots and Markdown report: live points against the simulator calibrated on those runs.

Calibration (:class:`~spotsim.sim.calibration.Calibration`) takes the medians
over the sweep's runs of step time, checkpoint cost C, persist, restart
overhead R and start-up, in simulated seconds on the phase-aware clock; the
work W is the final step × step time. The report says which adjacent live
points the repeats are too few to tell apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spotsim.preemption import KillMode, parse_schedule
from spotsim.sim import daly_interval, simulate, summarise, young_interval
from spotsim.sim.calibration import Calibration

PLOTS = {
    "cost": ("spot_cost_usd", "spot_cost_usd_mean", "projected spot cost (USD)"),
    "lost": ("lost_steps", "lost_steps_mean", "lost steps"),
    "overhead": ("checkpoint_overhead", "checkpoint_overhead_mean", "checkpoint overhead (blocking / wall)"),
}


GRID_POINTS = 40  # simulated intervals per curve
RESOLVE_Z = 2.0  # adjacent live means this many combined standard errors apart count as told apart


def simulated_curves(
    table: pd.DataFrame, calibration: Calibration, *, grace_s: float, restart_delay_s: float, trials: int = 4000
) -> pd.DataFrame:
    """The simulator's rows per (rate, kill) of the sweep, over a grid spanning the live intervals and Daly's
    interval for the measured C (so the curve shows where the optimum lies, even outside the live grid)."""
    spot, on_demand = table["spot_usd_per_hour"].iloc[0], table["on_demand_usd_per_hour"].iloc[0]
    frames = []
    for (rate, kill), _ in table.groupby(["preempt_rate", "kill"]):
        intervals = interval_grid(table["interval_s"], calibration.checkpoint_s, rate, calibration.work_s)
        job = calibration.job(restart_delay_s=restart_delay_s, grace_s=grace_s,
                              sigkill_fraction=KillMode.parse(kill).sigkill_fraction)  # fmt: skip
        outcome = simulate(job, intervals, parse_schedule("poisson", rate), trials=trials, seed=0)
        rows = pd.DataFrame(summarise(outcome, job, intervals, on_demand, spot))
        frames.append(rows.assign(preempt_rate=rate, kill=kill))
    return pd.concat(frames, ignore_index=True)


def interval_grid(live: pd.Series, checkpoint_s: float, rate: float, work_s: float) -> list[float]:
    """Geometric, from half the smallest to twice the largest of the live intervals and Daly's."""
    ends = [float(live.min()), float(live.max())]
    if rate > 0:
        ends.append(daly_interval(checkpoint_s, 3600 / rate))
    lo, hi = min(ends) / 2, min(max(ends) * 2, work_s)
    return list(np.geomspace(lo, max(hi, lo * 1.01), GRID_POINTS))


def unresolved(table: pd.DataFrame, column: str = "spot_cost_usd") -> list[str]:
    """Adjacent intervals whose live means differ by less than their noise: what the repeats cannot tell apart.

    One line each, with the repeats it would take (the standard error falls as 1/√n)."""
    lines = []
    for (rate, kill), runs in table.groupby(["preempt_rate", "kill"]):
        stats = runs.groupby("interval_s")[column].agg(["mean", "std", "count"]).reset_index()
        for (_, a), (_, b) in zip(stats.iterrows(), stats.iloc[1:].iterrows()):
            error = float(np.hypot(*(row["std"] / np.sqrt(row["count"]) if row["count"] > 1 else np.inf
                                     for row in (a, b))))  # fmt: skip
            gap = abs(b["mean"] - a["mean"])
            if not gap > RESOLVE_Z * error:
                needed = (
                    f"about {int(np.ceil(a['count'] * (RESOLVE_Z * error / gap) ** 2)):,} repeats"
                    if gap > 0 and np.isfinite(error) else "more repeats"
                )  # fmt: skip
                lines.append(
                    f"λ = {rate:g}/h, {kill}: the live {column} at {a['interval_s']:g} s and {b['interval_s']:g} s "
                    f"differ by {gap:.4g} ± {error:.2g} (s.e., {int(min(a['count'], b['count']))} repeats): too few "
                    f"to tell them apart; {needed} would"
                )
    return lines


def plot(table: pd.DataFrame, curves: pd.DataFrame, calibration: Calibration, metric: str, path: Path) -> None:
    """One metric against the interval: live means ± s.d., the simulated curve, Young's and Daly's intervals."""
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


def write_report(
    table: pd.DataFrame, out: Path, *, grace_s: float, restart_delay_s: float, command: str
) -> tuple[Path, list[str]]:
    """Plots and ``report.md`` for a finished sweep; returns the report's path and what the repeats cannot resolve."""
    calibration = Calibration.from_summaries(table.to_dict("records"))
    curves = simulated_curves(table, calibration, grace_s=grace_s, restart_delay_s=restart_delay_s)
    curves.to_csv(out / "simulated.csv", index=False)
    for metric in PLOTS:
        plot(table, curves, calibration, metric, out / f"{metric}_vs_interval.png")
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
