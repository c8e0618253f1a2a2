"""What a preemption is, in one place for the live harness and the simulator.

- :mod:`~spotsim.preemption.schedules`: when VMs are preempted (``--schedule``), one registered class per
  kind, each with the harness's draw (:meth:`Schedule.lifetime`) and the simulator's (:meth:`Schedule.draw`).
- :mod:`~spotsim.preemption.kill`: whether a preemption gives notice (``--kill``).
- :mod:`~spotsim.preemption.trace`: recorded spot traces, and the ones that ship in ``traces/``.

Neither the harness nor the simulator is imported here: each imports this package.
"""

from spotsim.preemption.kill import KillMode, Mixed, Sigkill, Sigterm, register_kill_mode
from spotsim.preemption.schedules import (
    SCHEDULES,
    Fixed,
    Lifetime,
    Poisson,
    Schedule,
    Steps,
    TraceReplay,
    Weibull,
    format_kill_points,
    parse_kill_points,
    parse_schedule,
    register_schedule,
)
from spotsim.preemption.trace import TRACES_DIR, Trace, find_trace, load_trace, shipped_traces

__all__ = [
    "SCHEDULES",
    "TRACES_DIR",
    "Fixed",
    "KillMode",
    "Lifetime",
    "Mixed",
    "Poisson",
    "Schedule",
    "Sigkill",
    "Sigterm",
    "Steps",
    "Trace",
    "TraceReplay",
    "Weibull",
    "find_trace",
    "format_kill_points",
    "load_trace",
    "parse_kill_points",
    "parse_schedule",
    "register_kill_mode",
    "register_schedule",
    "shipped_traces",
]
