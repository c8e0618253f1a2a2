"""Calibrate the simulator from a live run: step time, C and R read from its ``summary.json``.

The file comes from disk, so it is checked like user input: a hand-edited or
truncated summary gives one clear error naming the field, never a TypeError.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from spotsim.errors import InvalidOption


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
