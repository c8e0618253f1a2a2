"""The run log: JSON-lines events shared by training jobs and the harness.

One object per line, each with ``"t"`` (unix time) and ``"event"``. Lines are
appended with a single ``write`` on an ``O_APPEND`` descriptor, so the lines of
a job and of the harness interleave whole, never torn.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class EventLog:
    """Append events to a JSON-lines file; ``step`` events are throttled.

    Args:
        path: the file (created if missing).
        step_interval_s: at most one ``step`` event per this many seconds,
            unless forced (the last step before a checkpoint or exit always is).
    """

    def __init__(self, path: str | os.PathLike[str], *, step_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._step_interval_s = step_interval_s
        self._last_step_time = float("-inf")
        self.last_step: int | None = None
        self._last_written_step: int | None = None

    @classmethod
    def from_env(cls) -> EventLog | None:
        """The log named by ``SPOTSIM_EVENTS``, or None when the variable is unset.

        ``SPOTSIM_STEP_EVENT_INTERVAL`` (seconds, default 1) sets the step throttle;
        the harness lowers it so lost work is measured to the step.
        """
        path = os.environ.get("SPOTSIM_EVENTS")
        if not path:
            return None
        try:
            interval = max(0.0, float(os.environ.get("SPOTSIM_STEP_EVENT_INTERVAL", "1.0")))
        except ValueError:
            interval = 1.0
        return cls(path, step_interval_s=interval)

    def emit(self, event: str, **fields: object) -> None:
        self.write({"t": time.time(), "event": event, **fields})

    def write(self, event: dict) -> None:
        """Append one event as it is, in a single ``write`` (the harness copies a job's events this way)."""
        line = json.dumps(event, allow_nan=False) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())

    def step(self, step: int, *, force: bool = False) -> None:
        """Record progress; written at most once per interval unless ``force``."""
        self.last_step = step
        now = time.monotonic()
        if force or now - self._last_step_time >= self._step_interval_s:
            if step != self._last_written_step or force:
                self.emit("step", step=step)
                self._last_written_step = step
            self._last_step_time = now

    def resumed(self, step: int) -> None:
        """Record the step an attempt resumed from, without delaying the next step's event.

        The first step after a resume marks the end of the restart overhead, so it
        must be written when it happens, not a throttle interval later.
        """
        self.emit("step", step=step)
        self.last_step = self._last_written_step = step

    def flush_step(self) -> None:
        """Write the latest step if it has not been written yet (before a checkpoint or exit)."""
        if self.last_step is not None and self.last_step != self._last_written_step:
            self.step(self.last_step, force=True)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
