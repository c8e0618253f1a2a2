"""Reading the run log (``events.jsonl``): live, as it grows, and whole, attempt by attempt.

The log interleaves the harness's own events (``run``, ``launch``, ``signal``,
``exit``, ``restart_delay``) with the job's (``start``, ``step``, ``checkpoint``,
``done``). The job's events between a ``launch`` and its ``exit`` belong to that
attempt: the harness writes ``launch`` before starting the process and ``exit``
after reaping it, and every line is appended whole.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def parse_line(line: bytes | str) -> dict | None:
    """One event, or None for a line that is not a JSON object with an ``event`` (logged, skipped)."""
    try:
        event = json.loads(line)
    except ValueError:
        log.warning("skipping a run-log line that is not JSON: %.80r", line)
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        log.warning("skipping a run-log line without an event name: %.80r", line)
        return None
    return event


class RunLogTail:
    """Follow the run log as it grows, keeping the figures the live display needs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.last_step: int | None = None
        self.resumed_step: int | None = None
        self.done_step: int | None = None
        self.checkpoints = 0
        self.lost_steps = 0
        self.attempt: int | None = None  # the attempt whose start event came last

    def read_new(self) -> bool:
        """Consume lines appended since the last call; return whether there were any."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            if line.strip() and (event := parse_line(line)) is not None:
                self._apply(event)
        return True

    def _apply(self, event: dict) -> None:
        kind = event["event"]
        if kind == "launch":
            self.done_step, self.attempt = None, None
        elif kind == "start":
            resumed = event.get("resumed_step")
            self.attempt = event.get("attempt")
            if event.get("attempt", 0) > 0 and self.last_step is not None:
                self.lost_steps += self.last_step - (resumed or 0)
            self.resumed_step = resumed
            self.last_step = resumed or 0
        elif kind == "step" and isinstance(event.get("step"), int):
            self.last_step = event["step"]
        elif kind == "checkpoint":
            self.checkpoints += 1
        elif kind == "done":
            self.done_step = event.get("step")


@dataclass
class AttemptRecord:
    """Everything the run log says about one attempt (times are unix seconds, real)."""

    attempt: int
    launch_t: float
    preempt_at_s: float | None = None
    exit_t: float | None = None
    exit_code: int | None = None
    cause: str | None = None
    resumed_step: int | None = None
    started: bool = False
    steps: list[tuple[float, int]] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    signals: list[tuple[float, str]] = field(default_factory=list)
    done_step: int | None = None
    delay_s: float = 0.0
    capacity_wait_s: float = 0.0

    @property
    def first_step(self) -> int:
        """The step this attempt started from (0 for a fresh start)."""
        return self.resumed_step or 0

    @property
    def last_step(self) -> int:
        """The highest step this attempt reported (step, checkpoint and done events all report one)."""
        reported = [s for _, s in self.steps] + [c["step"] for c in self.checkpoints if isinstance(c.get("step"), int)]
        return max([self.first_step, *reported, *([self.done_step] if isinstance(self.done_step, int) else [])])

    @property
    def first_progress_t(self) -> float | None:
        """When the first step beyond the resumed one completed: the end of the restart overhead."""
        return next((t for t, s in self.steps if s > self.first_step), None)


def read_run_log(path: Path) -> list[AttemptRecord]:
    """The attempts the run log describes, in order."""
    with open(path, "rb") as f:
        events = [e for line in f if line.strip() and (e := parse_line(line)) is not None]
    return split_attempts(events)


def split_attempts(events: list[dict]) -> list[AttemptRecord]:
    attempts: list[AttemptRecord] = []
    current: AttemptRecord | None = None
    for e in events:
        kind, t = e["event"], float(e.get("t", 0.0))
        if kind == "launch":
            current = AttemptRecord(int(e.get("attempt", len(attempts))), t, e.get("preempt_at_s"))
            attempts.append(current)
        elif kind == "restart_delay" and attempts:
            attempts[-1].delay_s, attempts[-1].capacity_wait_s = e.get("delay_s", 0.0), e.get("capacity_wait_s", 0.0)
        elif current is None:
            continue  # job events before any launch: not produced by a harness run
        elif kind == "exit":
            current.exit_t, current.exit_code, current.cause = t, e.get("exit_code"), e.get("cause")
        elif kind == "signal":
            current.signals.append((t, e.get("signal", "?")))
        elif kind == "start":
            current.started, current.resumed_step = True, e.get("resumed_step")
        elif kind == "step" and isinstance(e.get("step"), int):
            current.steps.append((t, e["step"]))
        elif kind == "checkpoint":
            current.checkpoints.append(e)
        elif kind == "done":
            current.done_step = e.get("step")
    return attempts
