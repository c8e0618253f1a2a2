"""The run log as the harness writes it: a job's events read as they arrive, checked, and tailed live.

The harness is the only writer of ``events.jsonl``. Each attempt appends its
own events to ``attempts/attempt-N.events.jsonl`` (its ``SPOTSIM_EVENTS``);
the harness reads that file as it grows (:class:`JobEventReader`), checks each
event against the contract (:func:`spotsim.events.job_event_problem`), and
copies the valid ones into the run log next to its own. So a job that dies
mid-line, or writes garbage, can never swallow or corrupt a harness event: job
output is untrusted input, and a bad line becomes a ``malformed`` event that
the summary lists as an anomaly. The schema, and the fold that reads the whole
log back attempt by attempt, live in :mod:`spotsim.events`.
"""

from __future__ import annotations

import json
from pathlib import Path

from spotsim.events import CHECKPOINT, DONE, LAUNCH, START, STEP, job_event_problem

MAX_QUOTED = 120  # characters of a malformed line kept in its anomaly


def _no_constant(name: str) -> None:
    """NaN and Infinity are not JSON: Python would read them, then fail to write the run log."""
    raise ValueError(f"{name} is not JSON")


class JobEventReader:
    """Follow one attempt's events file as it grows: whole lines only, each checked against the contract."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_new(self, *, final: bool = False) -> tuple[list[dict], list[str]]:
        """(valid events, problems) appended since the last call. ``final``: the job has exited, so an
        unterminated last line is read too (a complete object without its newline is accepted)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if final and self._partial.strip():
            lines.append(self._partial)
            self._partial = b""
        events, problems = [], []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line, parse_constant=_no_constant)
                problem = job_event_problem(event)
            except ValueError:
                problem = "not JSON"
            if problem is None:
                events.append(event)
            else:
                problems.append(f"{problem}: {line[:MAX_QUOTED].decode(errors='replace')!r}")
        return events, problems


class RunLogTail:
    """The figures the live display and the kill decisions need, fed event by event as they arrive."""

    def __init__(self) -> None:
        self.last_step: int | None = None
        self.resumed_step: int | None = None
        self.done_step: int | None = None
        self.checkpoints = 0
        self.lost_steps = 0
        self.attempt: int | None = None  # the attempt whose start event came last

    def apply(self, event: dict) -> None:
        kind = event["event"]
        if kind == LAUNCH:
            self.done_step, self.attempt = None, None
        elif kind == START:
            resumed = event.get("resumed_step")
            self.attempt = event.get("attempt")
            if self.last_step is not None:
                self.lost_steps += max(0, self.last_step - (resumed or 0))
            self.resumed_step = resumed
            self.last_step = resumed or 0
        elif kind == STEP:
            self.last_step = event["step"]
        elif kind == CHECKPOINT:
            self.checkpoints += 1
        elif kind == DONE:
            self.done_step = event["step"]
