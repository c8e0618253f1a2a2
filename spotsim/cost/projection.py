"""Projected cost of a run: billed spot hours against an uninterrupted on-demand run.

Billing follows the domain model: a VM is billed from launch until it is
taken away, and while a replacement boots (the restart delay); the time spent
waiting for capacity (gaps in a replayed trace) is not billed. On-demand is
billed only for the hours the same job would take without preemptions.

:func:`project` is where hours become dollars, for a live run and for the
simulator alike: given billed hours per simulated trajectory (a NumPy array)
it returns the spot costs and savings per trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from spotsim.cost.prices import Machine

if TYPE_CHECKING:
    import numpy as np

Hours = TypeVar("Hours", float, "np.ndarray")  # one run's, or one per simulated trajectory


@dataclass(frozen=True)
class Projection(Generic[Hours]):
    machine: str
    billed_hours: Hours
    uninterrupted_hours: float
    spot_cost_usd: Hours
    on_demand_cost_usd: float
    savings: Hours  # fraction of the on-demand cost saved (negative: spot cost more)


def project(machine: Machine, *, billed_hours: Hours, uninterrupted_hours: float) -> Projection[Hours]:
    """Spot cost of ``billed_hours`` on ``machine`` against on-demand for ``uninterrupted_hours``."""
    spot = billed_hours * machine.spot_usd_per_hour
    on_demand = uninterrupted_hours * machine.on_demand_usd_per_hour
    return Projection(machine.name, billed_hours, uninterrupted_hours, spot, on_demand, savings(spot, on_demand))


def savings(spot_cost_usd: Hours, on_demand_cost_usd: float) -> Hours:
    """The fraction of the on-demand cost that spot saves (negative: spot cost more); 0 when on-demand is free."""
    if on_demand_cost_usd > 0:
        return 1.0 - spot_cost_usd / on_demand_cost_usd
    return spot_cost_usd * 0.0  # zero, in the shape of the spot costs
