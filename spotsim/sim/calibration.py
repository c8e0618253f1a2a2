"""Calibrate the simulator from live runs: the phases their ``summary.json`` measured.

:class:`Calibration` takes medians over one or more summaries (a run's own,
for its projection; a sweep's, for its curves) and makes the simulator's
:class:`~spotsim.sim.montecarlo.Job`. All durations are simulated seconds on
the phase-aware clock, so start-up, R and C are the real measured seconds
and only the step time carries K.

:func:`calibration_from_run` reads a summary from disk, so it is checked like
user input: a hand-edited or truncated summary gives one clear error naming
the field, never a TypeError.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spotsim.errors import InvalidOption
from spotsim.sim.montecarlo import Job

MIN_CHECKPOINT_S = 1e-6  # a run that wrote no checkpoint measured no C; the simulator needs C > 0


@dataclass(frozen=True)
class Calibration:
    """What live runs measured, per step, per checkpoint and per restart (simulated seconds)."""

    step_s: float
    checkpoint_s: float  # blocking per checkpoint
    persist_s: float  # training that passes while one checkpoint persists (not yet durable)
    restart_s: float  # launch of a later attempt to its first step past the resume
    startup_s: float  # the first attempt's launch to its first step
    work_s: float  # the compute the runs did: final step × step time

    @classmethod
    def from_summaries(cls, summaries: Iterable[Mapping]) -> Calibration:
        """Medians over the runs of each measured phase (a phase no run measured counts 0).

        Raises:
            InvalidOption: no run measured a step time.
        """
        rows = list(summaries)
        step = _median(r.get("step_time_s") for r in rows)
        if not step:
            raise InvalidOption("cannot calibrate the simulator: no run measured a step time (fewer than 2 steps)")
        saved = [r for r in rows if r.get("checkpoints")]
        return cls(
            step_s=step,
            checkpoint_s=max(_median(r["checkpoint_blocking_s"] / r["checkpoints"] for r in saved), MIN_CHECKPOINT_S),
            persist_s=_median(r.get("checkpoint_persist_s", 0.0) / r["checkpoints"] for r in saved),
            # a run without restarts still measured a start-up, which a restart repeats
            restart_s=_median(r.get("restart_overhead_s") for r in rows) or _median(r.get("startup_s") for r in rows),
            startup_s=_median(r.get("startup_s") for r in rows),
            work_s=_median(r.get("final_step") for r in rows) * step,
        )

    def job(
        self,
        *,
        work_s: float | None = None,
        restart_delay_s: float = 0.0,
        grace_s: float = 0.0,
        sigkill_fraction: float = 1.0,
        max_uptime_s: float | None = None,
        nodes: int = 1,
    ) -> Job:
        """The simulator's job for these costs, over ``work_s`` (default: the work the runs did), on ``nodes``
        VMs (R, measured on a group, then holds its re-rendezvous)."""
        return Job(
            work_s=work_s or self.work_s,
            checkpoint_s=self.checkpoint_s,
            persist_s=self.persist_s,
            restart_s=self.restart_s,
            restart_delay_s=restart_delay_s,
            step_s=self.step_s,
            grace_s=grace_s,
            sigkill_fraction=sigkill_fraction,
            startup_s=self.startup_s,
            max_uptime_s=max_uptime_s,
            nodes=nodes,
        )


def _median(values: Iterable[object]) -> float:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return statistics.median(numbers) if numbers else 0.0


def calibration_from_run(run_dir: Path) -> dict[str, float]:
    """Step time, C and R (simulated seconds) measured by the ``spotsim run`` that wrote ``run_dir``.

    Returns:
        Some of ``step``, ``c`` and ``r``: the fields the run measured (a null or 0 means not measured).

    Raises:
        InvalidOption: the summary is missing, not JSON, not an object, has a field of the
            wrong type or out of range, or measured none of the three.
    """
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise InvalidOption(f"cannot calibrate from {path}: {e}") from None
    if not isinstance(summary, dict):
        raise InvalidOption(f"cannot calibrate from {path}: expected a JSON object, got {type(summary).__name__}")
    step, restart = _seconds(summary, "step_time_s", path), _seconds(summary, "restart_overhead_s", path)
    checkpoints = summary.get("checkpoints")
    if checkpoints is not None and (type(checkpoints) is not int or not 0 <= checkpoints < 2**53):
        raise InvalidOption(
            f"cannot calibrate from {path}: checkpoints must be a count from 0 to 2^53, got {checkpoints!r}"
        )
    measured = {}
    if step:
        measured["step"] = step
    if checkpoints:
        blocking = _seconds(summary, "checkpoint_blocking_s", path)
        if blocking is None:
            raise InvalidOption(f"cannot calibrate from {path}: {checkpoints} checkpoints but no checkpoint_blocking_s")
        measured["c"] = blocking / checkpoints
    if restart:
        measured["r"] = restart
    if not measured:
        raise InvalidOption(f"{path} has no step time, checkpoint or restart measurements to calibrate from")
    return measured


def _seconds(summary: dict, field: str, path: Path) -> float | None:
    """``summary[field]`` as seconds ≥ 0, or None when absent or null."""
    value = summary.get(field)
    if value is None:
        return None
    # bool is an int to Python, but `true` is no duration; JSON also lets NaN and Infinity through.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise InvalidOption(f"cannot calibrate from {path}: {field} must be a number of seconds ≥ 0, got {value!r}")
    return float(value)
