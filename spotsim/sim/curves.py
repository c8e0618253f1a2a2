"""The simulator beside a live sweep: calibrated on the sweep's runs, its curves over the checkpoint interval.

:func:`sweep_curves` takes the sweep's rows (one per live run, each with its
``summary.json`` fields), calibrates :class:`~spotsim.sim.calibration.Calibration`
on all of them, and simulates every (preemption rate, kill mode) of the sweep
over a grid of intervals that spans the live intervals and Daly's interval for
the measured C, so a curve shows where the optimum lies even outside the live
grid. The report draws what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from spotsim.cost import Machine
from spotsim.preemption import KillMode, parse_schedule
from spotsim.sim.calibration import Calibration
from spotsim.sim.closed_forms import daly_interval, young_interval
from spotsim.sim.montecarlo import interval_rows, simulate

GRID_POINTS = 40  # simulated intervals per curve
TRIALS = 4000  # trajectories per simulated interval


@dataclass(frozen=True)
class SweepCurves:
    """The simulator calibrated on a sweep: per (rate, kill) a curve, and the closed-form intervals per rate."""

    calibration: Calibration
    rows: list[dict]  # interval_rows()'s rows, each with its preempt_rate and kill
    young_s: dict[float, float]  # Young's interval per preemption rate > 0, for the calibrated C (and the group)
    daly_s: dict[float, float]  # Daly's interval per preemption rate > 0, for the calibrated C (and the group)


def sweep_curves(
    runs: Sequence[Mapping], *, grace_s: float, restart_delay_s: float, trials: int = TRIALS, nodes: int = 1
) -> SweepCurves:
    """Calibrate on ``runs`` (the sweep's rows) and simulate each of their (preempt_rate, kill) pairs, for a
    job of ``nodes`` VMs (billed hours and costs are for all of them).

    Raises:
        InvalidOption: no run measured a step time, or a simulation is out of the simulator's bounds.
    """
    calibration = Calibration.from_summaries(runs)
    first = runs[0]
    machine = Machine(first["machine"], first["on_demand_usd_per_hour"], first["spot_usd_per_hour"], sources=())
    live_intervals = [float(run["interval_s"]) for run in runs]
    rows = []
    for rate, kill in sorted({(run["preempt_rate"], run["kill"]) for run in runs}):
        # Daly's interval for the group: with Poisson preemptions its VMs are lost at N times the rate
        intervals = interval_grid(live_intervals, calibration.checkpoint_s, rate * nodes, calibration.work_s)
        sigkill_fraction = KillMode.parse(kill).sigkill_fraction
        job = calibration.job(
            restart_delay_s=restart_delay_s, grace_s=grace_s, sigkill_fraction=sigkill_fraction, nodes=nodes
        )
        outcome = simulate(job, intervals, parse_schedule("poisson", rate), trials=trials, seed=0)
        rows += [row | {"preempt_rate": rate, "kill": kill} for row in interval_rows(outcome, job, intervals, machine)]
    mean_uptimes = {rate: 3600 / (rate * nodes) for rate in sorted({run["preempt_rate"] for run in runs}) if rate > 0}
    return SweepCurves(
        calibration=calibration,
        rows=rows,
        young_s={rate: young_interval(calibration.checkpoint_s, m) for rate, m in mean_uptimes.items()},
        daly_s={rate: daly_interval(calibration.checkpoint_s, m) for rate, m in mean_uptimes.items()},
    )


def interval_grid(live_s: Sequence[float], checkpoint_s: float, rate: float, work_s: float) -> list[float]:
    """Geometric, from half the smallest to twice the largest of the live intervals and Daly's."""
    ends = [min(live_s), max(live_s)]
    if rate > 0:
        ends.append(daly_interval(checkpoint_s, 3600 / rate))
    lo, hi = min(ends) / 2, min(max(ends) * 2, work_s)
    return list(np.geomspace(lo, max(hi, lo * 1.01), GRID_POINTS))
