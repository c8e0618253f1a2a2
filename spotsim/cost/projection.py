"""Projected cost of a run: billed spot hours against an uninterrupted on-demand run.

Billing follows the domain model: a VM is billed from launch until it is
taken away, and while a replacement boots (the restart delay); the time spent
waiting for capacity (gaps in a replayed trace) is not billed. On-demand is
billed only for the hours the same job would take without preemptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from spotsim.cost.prices import Machine


@dataclass(frozen=True)
class Projection:
    machine: str
    billed_hours: float
    uninterrupted_hours: float
    spot_cost_usd: float
    on_demand_cost_usd: float
    savings: float  # fraction of the on-demand cost saved (negative: spot cost more)


def project(machine: Machine, *, billed_hours: float, uninterrupted_hours: float) -> Projection:
    spot = billed_hours * machine.spot_usd_per_hour
    on_demand = uninterrupted_hours * machine.on_demand_usd_per_hour
    savings = 1.0 - spot / on_demand if on_demand > 0 else 0.0
    return Projection(machine.name, billed_hours, uninterrupted_hours, spot, on_demand, savings)
