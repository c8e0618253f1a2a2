"""The live harness: the runner that kills and relaunches jobs, and run summaries.

``run_live`` is the whole of ``spotsim run``; ``runner.py`` is where a job gets killed.
"""

from spotsim.durations import parse_duration
from spotsim.harness.config import RunConfig
from spotsim.harness.live import RunOutcome, run_live
from spotsim.preemption import KillMode, Schedule, parse_schedule

__all__ = ["KillMode", "RunConfig", "RunOutcome", "Schedule", "parse_duration", "parse_schedule", "run_live"]
