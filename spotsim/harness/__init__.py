"""The live harness: preemption schedules, the runner that kills and relaunches jobs, and run summaries.

``run_live`` is the whole of ``spotsim run``; ``runner.py`` is where a job gets killed.
"""

from spotsim.harness.config import KillMode, RunConfig
from spotsim.harness.live import RunOutcome, run_live
from spotsim.harness.schedule import Schedule, parse_duration, parse_schedule

__all__ = ["KillMode", "RunConfig", "RunOutcome", "Schedule", "parse_duration", "parse_schedule", "run_live"]
