"""Reading the run log (``events.jsonl``): the job's events as they arrive, and the whole log, attempt by attempt.

The harness is the only writer of ``events.jsonl``. Each attempt appends its
own events to ``attempts/attempt-N.events.jsonl`` (its ``SPOTSIM_EVENTS``);
the harness reads that file as it grows (:class:`JobEventReader`), checks each
event against the contract, and copies the valid ones into the run log next to
its own (``run``, ``launch``, ``rebalance``, ``notice``, ``signal``,
``metadata_request``, ``storage_fault``, ``storage_outage``, ``save_write``,
``exit``, ``restart_delay``). So a job that dies mid-line, or writes garbage,
can never swallow or corrupt a harness event: job output is untrusted input,
and a bad line becomes a ``malformed`` event that the summary lists as an
anomaly.

The job's events between a ``launch`` and its ``exit`` belong to that attempt.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MAX_QUOTED = 120  # characters of a malformed line kept in its anomaly


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


def _is_step(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_duration(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def contract_problem(event: object) -> str | None:
    """Why a job's event breaks the contract (None when it is valid)."""
    if not isinstance(event, dict):
        return "not a JSON object"
    name, t = event.get("event"), event.get("t")
    if not isinstance(name, str):
        return 'no "event" name'
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)):
        return f'{name} event without a numeric "t"'
    if name in ("step", "checkpoint", "done") and not _is_step(event.get("step")):
        return f'{name} event whose "step" is not a whole number ≥ 0: {event.get("step")!r}'
    if name == "start" and not (event.get("resumed_step") is None or _is_step(event.get("resumed_step"))):
        return f'start event whose "resumed_step" is not a step or null: {event.get("resumed_step")!r}'
    if name == "checkpoint":
        bad = [k for k in ("blocking_s", "persist_s") if k in event and not _is_duration(event[k])]
        if bad:
            return f"checkpoint event with a {bad[0]} that is not a duration ≥ 0: {event[bad[0]]!r}"
    return None


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
                event = json.loads(line)
                problem = contract_problem(event)
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
        if kind == "launch":
            self.done_step, self.attempt = None, None
        elif kind == "start":
            resumed = event.get("resumed_step")
            self.attempt = event.get("attempt")
            if self.last_step is not None:
                self.lost_steps += max(0, self.last_step - (resumed or 0))
            self.resumed_step = resumed
            self.last_step = resumed or 0
        elif kind == "step":
            self.last_step = event["step"]
        elif kind == "checkpoint":
            self.checkpoints += 1
        elif kind == "done":
            self.done_step = event["step"]


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
    kill: dict | None = None  # the notice or first signal event: when, at which step, inside a save or not
    notice_t: float | None = None  # the provider's notice went out (metadata), t0 of a noticed preemption
    notice_seen_t: float | None = None  # the job's first metadata request whose answer carried the notice
    rebalance_t: float | None = None  # AWS's rebalance recommendation went out
    metadata_times: list[float] = field(default_factory=list)  # the job's requests to the metadata server
    failed_saves: list[dict] = field(default_factory=list)  # the job's checkpoint_failed events
    storage_faults: list[str] = field(default_factory=list)  # faults the proxy injected during the attempt
    storage_outages: list[dict] = field(default_factory=list)  # the emulator died and was restarted
    hard_stop: bool = False  # the provider's uptime cap ended this VM
    malformed: list[str] = field(default_factory=list)  # job events that broke the contract
    stops: list[str] = field(default_factory=list)  # why the harness stopped it other than a preemption
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
    def preempted_t(self) -> float | None:
        """t0 of a preemption: the provider's notice, or the first signal when there was none."""
        return self.notice_t or (self.signals[0][0] if self.signals else None)

    @property
    def without_notice(self) -> bool:
        """Preempted by a SIGKILL with no notice before it (``--kill sigkill``)."""
        return self.notice_t is None and bool(self.signals) and self.signals[0][1] == "SIGKILL"

    @property
    def metadata_requests(self) -> int:
        return len(self.metadata_times)

    @property
    def first_progress_t(self) -> float | None:
        """When the first step beyond the resumed one completed: the end of the restart overhead."""
        return next((t for t, s in self.steps if s > self.first_step), None)


def read_events(path: Path) -> list[dict]:
    """Every event of the run log, in order."""
    with open(path, "rb") as f:
        return [e for line in f if line.strip() and (e := parse_line(line)) is not None]


def read_run_log(path: Path) -> list[AttemptRecord]:
    """The attempts the run log describes, in order."""
    return split_attempts(read_events(path))


def split_attempts(events: list[dict]) -> list[AttemptRecord]:
    attempts: list[AttemptRecord] = []
    current: AttemptRecord | None = None
    for e in events:
        kind, t = e["event"], float(e.get("t", 0.0))
        if kind == "launch":
            current = AttemptRecord(int(e.get("attempt", len(attempts))), t, e.get("preempt_at_s"))
            current.hard_stop = bool(e.get("hard_stop"))
            attempts.append(current)
        elif kind == "restart_delay" and attempts:
            attempts[-1].delay_s, attempts[-1].capacity_wait_s = e.get("delay_s", 0.0), e.get("capacity_wait_s", 0.0)
        elif current is None:
            continue  # job events before any launch: not produced by a harness run
        elif kind == "exit":
            current.exit_t, current.exit_code, current.cause = t, e.get("exit_code"), e.get("cause")
        elif kind == "signal":
            current.signals.append((t, e.get("signal", "?")))
            current.kill = current.kill or e
        elif kind == "notice":  # t0 of a noticed preemption: the kill, whether or not a signal follows
            current.notice_t = current.notice_t or t
            current.kill = current.kill or e
        elif kind == "rebalance":
            current.rebalance_t = current.rebalance_t or t
        elif kind == "metadata_request":
            current.metadata_times.append(t)
            if e.get("notice") and current.notice_t is not None and current.notice_seen_t is None:
                current.notice_seen_t = t
        elif kind == "checkpoint_failed":
            current.failed_saves.append(e)
        elif kind == "storage_fault":
            current.storage_faults.append(str(e.get("fault", "?")))
        elif kind == "storage_outage":
            current.storage_outages.append(e)
        elif kind == "malformed":
            current.malformed.append(str(e.get("problem", "?")))
        elif kind == "stop":
            current.stops.append(str(e.get("reason", "?")))
        elif kind == "start" and not current.started:
            current.started, current.resumed_step = True, e.get("resumed_step")
        elif kind == "step" and isinstance(e.get("step"), int):
            current.steps.append((t, e["step"]))
        elif kind == "checkpoint":
            current.checkpoints.append(e)
        elif kind == "done":
            current.done_step = e.get("step")
    return attempts
