"""What a run's job would cost on spot VMs: the simulator calibrated from the run, beside what the run measured.

One live run is one draw of the preemption schedule. The projection simulates
:data:`TRIALS` trajectories of the same job (its measured step time,
checkpoint blocking C and persist, start-up, restart overhead R; the run's
restart delay, grace, kill mode and schedule) over its work W, and gives the
mean and p10/p50/p90 of each outcome, where the live run falls among them,
and the best interval for these costs: Daly's closed form and the
simulator's cheapest interval on a grid around it, with the cost at each
beside the cost at the asked interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from spotsim.cost import Machine, project
from spotsim.sim.closed_forms import daly_interval
from spotsim.sim.montecarlo import Job, group_survival, simulate

TRIALS = 10_000
QUANTILES = (10, 50, 90)
GRID_POINTS = 21  # intervals on the optimum's grid, geometric over [Daly ÷ 8, Daly × 8]


def project_run(
    job: Job,
    schedule,
    interval_s: float,
    *,
    spot_usd_per_hour: float,
    on_demand_usd_per_hour: float,
    live: dict[str, float],
    trials: int = TRIALS,
    seed: int = 0,
) -> dict:
    """The projection for ``summary.json``: ``live`` holds the run's own ``wall_s``, ``lost_s``,
    ``billed_hours``, ``spot_cost_usd`` and ``savings`` (simulated units)."""
    machine = Machine("projected", on_demand_usd_per_hour, spot_usd_per_hour, sources=())
    asked = _outcomes(job, schedule, [interval_s], trials, seed, machine)[0]
    metrics = {name: _distribution(values, live.get(name)) for name, values in asked.items() if name != "on_demand"}
    return {
        "trials": trials,
        "interval_s": interval_s,
        "work_s": job.work_s,
        "calibration": asdict(job),
        "on_demand_cost_usd": float(asked["on_demand"][0]),
        "metrics": metrics,
        "best": _best(job, schedule, interval_s, metrics["spot_cost_usd"], trials, seed, machine),
    }


def _outcomes(job: Job, schedule, intervals: list[float], trials: int, seed: int, machine: Machine) -> list[dict]:
    """Per interval: arrays of wall, lost, billed hours, spot cost and savings over the trials."""
    outcome = simulate(job, intervals, schedule, trials=trials, seed=seed)
    rows = []
    for i, tau in enumerate(intervals):
        uninterrupted_s = job.startup_s + job.work_s + math.ceil(job.work_s / tau) * job.checkpoint_s
        uninterrupted_h = job.nodes * uninterrupted_s / 3600  # as many on-demand VMs as the job has nodes
        cost = project(machine, billed_hours=outcome.billed_s[i] / 3600, uninterrupted_hours=uninterrupted_h)
        rows.append(
            {
                "wall_s": outcome.wall_s[i],
                "lost_s": outcome.lost_s[i],
                "preemptions": outcome.preemptions[i],
                "billed_hours": cost.billed_hours,
                "spot_cost_usd": cost.spot_cost_usd,
                "savings": cost.savings,
                "on_demand": np.array([cost.on_demand_cost_usd]),
            }
        )
    return rows


def _distribution(values: np.ndarray, live: float | None) -> dict:
    found = {"mean": float(values.mean()), **{f"p{q}": float(np.percentile(values, q)) for q in QUANTILES}}
    if live is not None and math.isfinite(live):
        # the share of trajectories below the live value (ties count half): 0.5 is the median
        below, tied = float((values < live).mean()), float((values == live).mean())
        found |= {"live": float(live), "live_percentile": below + tied / 2}
    return found


def _best(job: Job, schedule, interval_s: float, asked_cost: dict, trials: int, seed: int, machine: Machine) -> dict:
    """Daly's interval for the measured C and the schedule's mean uptime, and the simulator's cheapest."""
    best = {"asked_s": interval_s, "asked_cost_usd": asked_cost["mean"], "asked_cost_p90_usd": asked_cost["p90"]}
    mean_uptime = group_survival(job, schedule)[1]  # a group's: between losses of any of its VMs
    if not math.isfinite(mean_uptime):
        return best | {"note": "no preemptions: the interval only costs checkpoints, so the longest is cheapest"}
    daly = daly_interval(job.checkpoint_s, mean_uptime)
    grid = sorted({*np.geomspace(daly / 8, daly * 8, GRID_POINTS).tolist(), daly, interval_s})
    grid = [tau for tau in grid if tau <= job.work_s] or [job.work_s]
    costs = [row["spot_cost_usd"] for row in _outcomes(job, schedule, grid, trials, seed, machine)]
    means = [float(c.mean()) for c in costs]
    cheapest = int(np.argmin(means))
    at_daly = means[grid.index(daly)] if daly in grid else None
    return best | {
        "daly_s": daly,
        "daly_cost_usd": at_daly,
        "optimum_s": grid[cheapest],
        "optimum_cost_usd": means[cheapest],
        "optimum_cost_p90_usd": float(np.percentile(costs[cheapest], 90)),
        "grid": [{"interval_s": tau, "spot_cost_usd": cost} for tau, cost in zip(grid, means, strict=True)],
    }
