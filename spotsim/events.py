"""The run log's contract: every event a training job or the harness writes, the writer, and the one fold.

A run log is JSON lines, one object per line, each with ``"t"`` and ``"event"``. A training job appends its
own events to ``SPOTSIM_EVENTS`` (:class:`EventLog`); the harness checks each one against the schema
(:func:`job_event_problem`) and copies the valid ones into the run's ``events.jsonl`` next to its own.
:func:`fold_attempts` turns that log into one :class:`AttemptRecord` per attempt, the one reading of the
log that the summary, ``spotsim verify`` and the timeline share. The schema below has one ``TypedDict``
per event kind; :data:`JOB_EVENTS` and :data:`HARNESS_EVENTS` say who writes which.

Lines are appended with a single ``write`` on an ``O_APPEND`` descriptor, so the lines of a job and of the
harness interleave whole, never torn.

Real and simulated seconds: events carry real time. ``t`` is unix time and a duration is real seconds
(:data:`RealSeconds`: ``blocking_s``, ``persist_s``, ``down_s``), except the few fields that log the
simulated run's own settings, typed :data:`SimSeconds` (``launch``'s ``preempt_at_s`` and
``capacity_wait_s``, ``restart_delay``'s ``delay_s`` and ``capacity_wait_s``, ``notice``'s ``notice_s``).
The clock, the summary and the simulator speak simulated seconds. Outside the run log, a duration in real
seconds is named ``*_real_s``, and a simulated one that could be taken for a real one ``*_sim_s``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NewType, NotRequired, TypedDict, Union, cast, get_args, get_origin, get_type_hints

log = logging.getLogger(__name__)

Step = NewType("Step", int)  # a whole number ≥ 0
UnixTime = NewType("UnixTime", float)
RealSeconds = NewType("RealSeconds", float)  # a duration ≥ 0, real
SimSeconds = NewType("SimSeconds", float)  # a duration ≥ 0 on the run's simulated clock

# -- event names: written by the training job ---------------------------------------------------------------

START = "start"
STEP = "step"
CHECKPOINT_START = "checkpoint_start"
CHECKPOINT = "checkpoint"
CHECKPOINT_FAILED = "checkpoint_failed"
DONE = "done"
PREEMPTION_NOTICE = "preemption_notice"
PREEMPTION_APPROVAL = "preemption_approval"
REBALANCE_RECOMMENDATION = "rebalance_recommendation"

# -- event names: written by the harness --------------------------------------------------------------------

RUN = "run"
LAUNCH = "launch"
REBALANCE = "rebalance"
NOTICE = "notice"
SIGNAL = "signal"
METADATA_REQUEST = "metadata_request"
STORAGE_FAULT = "storage_fault"
STORAGE_OUTAGE = "storage_outage"
MALFORMED = "malformed"
STOP = "stop"
EXIT = "exit"
RESTART_DELAY = "restart_delay"
INTERRUPTED = "interrupted"
NODE_LAUNCH = "node_launch"  # --nodes runs: one node's VM started
NODE_EXIT = "node_exit"  # --nodes runs: one node's VM is gone


class Event(TypedDict):
    t: UnixTime
    event: str


# -- the job's events ---------------------------------------------------------------------------------------


class StartEvent(Event):
    """The job is up: it restored ``resumed_step``, or starts afresh (null). Ends the start-up phase."""

    attempt: NotRequired[int]
    resumed_step: NotRequired[Step | None]


class StepEvent(Event):
    """Progress: ``step`` steps are complete (throttled; the last one before a save or exit is always written)."""

    step: Step


class CheckpointStartEvent(Event):
    """A synchronous save began: the clock counts it at 1× until its ``checkpoint`` or ``checkpoint_failed``."""

    step: NotRequired[Step]
    kind: NotRequired[str]


class CheckpointEvent(Event):
    """A save committed: ``step`` is visible to the next attempt. ``kind``: periodic, emergency or final."""

    step: Step
    kind: NotRequired[str]
    blocking_s: NotRequired[RealSeconds]  # the training loop waited this long
    persist_s: NotRequired[RealSeconds]  # from the snapshot to the commit
    bytes: NotRequired[int]
    retries: NotRequired[int]


class CheckpointFailedEvent(Event):
    """A save did not commit; ``skipped``: a periodic save given up while the bucket was unreachable."""

    step: NotRequired[Step]
    kind: NotRequired[str]
    error: NotRequired[str]
    retries: NotRequired[int]
    skipped: NotRequired[bool]


class DoneEvent(Event):
    """The job finished at ``step``: it is never preempted or relaunched after this."""

    step: Step


class PreemptionNoticeEvent(Event):
    """The job's :class:`~spotsim.checkpoint.watcher.PreemptionWatcher` caught a signal or a metadata notice."""

    reason: NotRequired[str]
    cloud: NotRequired[str]
    deadline: NotRequired[UnixTime]


class PreemptionApprovalEvent(Event):
    """The job approved Azure's Preempt event after its emergency checkpoint."""

    cloud: NotRequired[str]
    event_id: NotRequired[str]
    accepted: NotRequired[bool]


class RebalanceRecommendationEvent(Event):
    """The job saw AWS's rebalance recommendation (``notice_time``: the cloud's own time of it)."""

    cloud: NotRequired[str]
    notice_time: NotRequired[UnixTime | None]


# -- the harness's events -----------------------------------------------------------------------------------


class RunEvent(Event):
    """The first line of a run log."""

    run_id: str
    command: list[str]
    time_scale: float
    nodes: NotRequired[int]  # the group's size in a --nodes run


class LaunchEvent(Event):
    """An attempt starts on a fresh VM, with its drawn lifetime (simulated uptime, or a kill point)."""

    attempt: int
    preempt_at_s: SimSeconds | None
    preempt_at_step: Step | None
    kill_point: str | None
    capacity_wait_s: SimSeconds
    hard_stop: bool  # the provider's uptime cap, not a preemption, ends this VM


class RebalanceEvent(Event):
    """AWS's rebalance recommendation went out on the metadata server."""

    attempt: int
    notice_t: UnixTime
    step: Step | None


class NoticeEvent(Event):
    """t0 of a noticed preemption: the provider's notice went out on the metadata server."""

    attempt: int
    provider: str
    cloud: str
    notice_s: SimSeconds
    deadline_t: UnixTime  # when the SIGTERM is due
    step: Step | None
    node: NotRequired[int]  # --nodes runs: the node it concerns


class SignalEvent(Event):
    """The harness signalled the attempt's process group (``write``: the save write a kill inside a save held)."""

    attempt: int
    signal: str
    step: Step | None
    in_save: bool
    write: NotRequired[str]
    approved: NotRequired[bool]
    node: NotRequired[int]  # --nodes runs: the node it concerns


class MetadataRequestEvent(Event):
    """One request the job made to the metadata server; ``notice``: its answer carried the preemption notice."""

    attempt: int
    cloud: str
    method: str
    path: str
    status: int
    notice: bool
    node: NotRequired[int]  # --nodes runs: the node it concerns


class StorageFaultEvent(Event):
    """The fault proxy injected a fault into one of the job's storage requests."""

    attempt: int
    fault: str
    method: str
    path: str


class StorageOutageEvent(Event):
    """The emulator died and the harness restarted it (or failed to: ``restarted`` false, with the ``error``)."""

    attempt: int
    cause: str
    down_since: UnixTime
    restarted: bool
    down_s: NotRequired[RealSeconds]
    error: NotRequired[str]


class MalformedEvent(Event):
    """A line of the job's events that broke the contract, and why."""

    attempt: int
    problem: str
    node: NotRequired[int]  # --nodes runs: the node it concerns


class StopEvent(Event):
    """The harness stopped the attempt for a reason other than a preemption."""

    attempt: int
    reason: str
    step: NotRequired[Step | None]
    node: NotRequired[int]  # --nodes runs: the node it concerns


class Cause(StrEnum):
    """Why an attempt ended: the ``cause`` of its ``exit`` event (a string on the wire)."""

    DONE = "done"
    PREEMPTED = "preempted"
    CRASH = "crash"  # an exit the harness did not cause
    TIMEOUT = "timeout"  # past --attempt-timeout: counted as a crash
    STORAGE_OUTAGE = "storage_outage"  # the harness's own bucket died: not the job's fault
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM ended the run
    STOPPED = "stopped"  # a --nodes run's VM the harness stopped when the run gave up


class ExitEvent(Event):
    r"""The attempt's process exited, for one of the :class:`Cause`\ s."""

    attempt: int
    exit_code: int
    cause: str
    node: NotRequired[int]  # --nodes runs: the node it concerns


class RestartDelayEvent(Event):
    """The wait for the next VM: its boot (``delay_s``) and a replayed trace's capacity wait."""

    attempt: int
    delay_s: SimSeconds
    capacity_wait_s: SimSeconds


class NodeLaunchEvent(Event):
    """A ``--nodes`` run started a VM for one node: its index, the node's VM count, its drawn lifetime."""

    node: int
    vm: int
    attempt: int
    preempt_at_s: SimSeconds | None
    capacity_wait_s: SimSeconds  # the wait for capacity before it (unbilled)
    hard_stop: bool


class NodeExitEvent(Event):
    r"""One node's VM is gone, for one of the :class:`Cause`\ s."""

    node: int
    vm: int
    attempt: int
    exit_code: int
    cause: str


class InterruptedEvent(Event):
    """Ctrl-C ended the run during this attempt."""

    attempt: int


JOB_EVENTS: dict[str, type[Event]] = {
    START: StartEvent,
    STEP: StepEvent,
    CHECKPOINT_START: CheckpointStartEvent,
    CHECKPOINT: CheckpointEvent,
    CHECKPOINT_FAILED: CheckpointFailedEvent,
    DONE: DoneEvent,
    PREEMPTION_NOTICE: PreemptionNoticeEvent,
    PREEMPTION_APPROVAL: PreemptionApprovalEvent,
    REBALANCE_RECOMMENDATION: RebalanceRecommendationEvent,
}
HARNESS_EVENTS: dict[str, type[Event]] = {
    RUN: RunEvent,
    LAUNCH: LaunchEvent,
    REBALANCE: RebalanceEvent,
    NOTICE: NoticeEvent,
    SIGNAL: SignalEvent,
    METADATA_REQUEST: MetadataRequestEvent,
    STORAGE_FAULT: StorageFaultEvent,
    STORAGE_OUTAGE: StorageOutageEvent,
    MALFORMED: MalformedEvent,
    STOP: StopEvent,
    EXIT: ExitEvent,
    RESTART_DELAY: RestartDelayEvent,
    INTERRUPTED: InterruptedEvent,
    NODE_LAUNCH: NodeLaunchEvent,
    NODE_EXIT: NodeExitEvent,
}
SCHEMA: dict[str, type[Event]] = JOB_EVENTS | HARNESS_EVENTS

# -- validation ---------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_VALUES: dict[object, tuple[Callable[[Any], bool], str]] = {  # each field type: its check, and how a problem names it
    Step: (lambda v: _is_whole(v) and v >= 0, "a whole number ≥ 0"),
    RealSeconds: (lambda v: _is_number(v) and v >= 0, "a duration ≥ 0"),
    SimSeconds: (lambda v: _is_number(v) and v >= 0, "a duration ≥ 0"),
    UnixTime: (_is_number, "a unix time"),
    float: (_is_number, "a number"),
    int: (_is_whole, "a whole number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    str: (lambda v: isinstance(v, str), "text"),
    type(None): (lambda v: v is None, "null"),
}


def _fields(schema: type[Event]) -> dict[str, tuple[object, bool]]:
    """Each field of an event kind: (its type, whether it is required)."""
    fields = {}
    for key, hint in get_type_hints(schema, include_extras=True).items():
        optional = get_origin(hint) is NotRequired
        fields[key] = (get_args(hint)[0] if optional else hint, not optional)
    return fields


_FIELDS = {name: _fields(schema) for name, schema in SCHEMA.items()}


def _conforms(value: object, kind: object) -> bool:
    if get_origin(kind) in (Union, types.UnionType):
        return any(_conforms(value, k) for k in get_args(kind))
    if get_origin(kind) is list:
        (item,) = get_args(kind)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    return _VALUES[kind][0](value)


def _describe(kind: object) -> str:
    if get_origin(kind) in (Union, types.UnionType):
        return " or ".join(_describe(k) for k in get_args(kind))
    if get_origin(kind) is list:
        return f"a list of {_describe(get_args(kind)[0])}"
    return _VALUES[kind][1]


# The fields of a job's event that the harness computes with: a wrong one would skew the figures, so the
# line is refused. A job's other fields (an attempt number, a checkpoint's size…) are informative only,
# and a job the harness did not write may spell them its own way.
JOB_FIELDS_READ = frozenset({"step", "resumed_step", "blocking_s", "persist_s"})


def event_problem(event: object, *, fields: frozenset[str] | None = None) -> str | None:
    """Why ``event`` breaks the schema (None when it conforms).

    Every event needs a name and a numeric ``t``; a known kind needs its required fields, and every field
    it declares that is present (only those in ``fields``, when given) must hold its declared type. Other
    fields, and kinds the schema does not know (a job's own events), pass unread.
    """
    if not isinstance(event, dict):
        return "not a JSON object"
    name, t = event.get("event"), event.get("t")
    if not isinstance(name, str):
        return 'no "event" name'
    if not _is_number(t):
        return f'{name} event without a numeric "t"'
    for key, (kind, required) in _FIELDS.get(name, {}).items():
        checked = required or (key in event and (fields is None or key in fields))
        if checked and not _conforms(event.get(key), kind):
            return f'{name} event whose "{key}" is not {_describe(kind)}: {event.get(key)!r}'
    return None


def job_event_problem(event: object) -> str | None:
    """Why an event a training job wrote breaks the contract (None when it is valid): a harness event's
    name, which only the harness may write, or the schema's reasons for the fields it reads."""
    if isinstance(event, dict) and event.get("event") in HARNESS_EVENTS:
        return f"{event['event']} is a harness event: a job may not write it"
    return event_problem(event, fields=JOB_FIELDS_READ)


# -- the writer ---------------------------------------------------------------------------------------------


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
        """The log named by ``SPOTSIM_EVENTS``, or None when the variable is unset or this
        process is a ``torchrun`` worker other than global rank 0 (``RANK`` set and not 0):
        every worker inherits the variable, and only rank 0 speaks for the job.

        ``SPOTSIM_STEP_EVENT_INTERVAL`` (seconds, default 1) sets the step throttle;
        the harness lowers it so lost work is measured to the step.
        """
        path = os.environ.get("SPOTSIM_EVENTS")
        if not path or os.environ.get("RANK", "0") != "0":
            return None
        try:
            interval = max(0.0, float(os.environ.get("SPOTSIM_STEP_EVENT_INTERVAL", "1.0")))
        except ValueError:
            interval = 1.0
        return cls(path, step_interval_s=interval)

    def emit(self, event: str, **fields: object) -> None:
        self.write({"t": time.time(), "event": event, **fields})

    def write(self, event: Mapping[str, object]) -> None:
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
                self.emit(STEP, step=step)
                self._last_written_step = step
            self._last_step_time = now

    def resumed(self, step: int) -> None:
        """Record the step an attempt resumed from, without delaying the next step's event.

        The first step after a resume marks the end of the restart overhead, so it
        must be written when it happens, not a throttle interval later.
        """
        self.emit(STEP, step=step)
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


# -- the reader and the fold --------------------------------------------------------------------------------


@dataclass
class AttemptRecord:
    """Everything the run log says about one attempt. Times are unix seconds and durations real seconds,
    except the ``*_sim_s`` fields, which the harness logged on the simulated clock."""

    attempt: int
    launch_t: float
    preempt_at_sim_s: float | None = None  # the drawn lifetime: the VM's simulated uptime at its preemption
    exit_t: float | None = None
    exit_code: int | None = None
    cause: str | None = None
    resumed_step: int | None = None
    started: bool = False
    steps: list[tuple[float, int]] = field(default_factory=list)
    checkpoints: list[CheckpointEvent] = field(default_factory=list)
    signals: list[tuple[float, str]] = field(default_factory=list)
    kill: dict | None = None  # the notice or first signal event: when, at which step, inside a save or not
    notice_t: float | None = None  # the provider's notice went out (metadata), t0 of a noticed preemption
    notice_seen_t: float | None = None  # the job's first metadata request whose answer carried the notice
    rebalance_t: float | None = None  # AWS's rebalance recommendation went out
    metadata_times: list[float] = field(default_factory=list)  # the job's requests to the metadata server
    failed_saves: list[CheckpointFailedEvent] = field(default_factory=list)  # the job's checkpoint_failed events
    storage_faults: list[str] = field(default_factory=list)  # faults the proxy injected during the attempt
    storage_outages: list[StorageOutageEvent] = field(default_factory=list)  # the emulator died and was restarted
    hard_stop: bool = False  # the provider's uptime cap ended this VM
    malformed: list[str] = field(default_factory=list)  # job events that broke the contract
    stops: list[str] = field(default_factory=list)  # why the harness stopped it other than a preemption
    done_step: int | None = None
    delay_sim_s: float = 0.0  # the restart delay after this attempt
    capacity_wait_sim_s: float = 0.0  # a replayed trace's capacity wait after this attempt
    node: int | None = None  # a --nodes run: the node whose loss ended this attempt of the group

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


def _parse_line(line: bytes | str) -> dict | None:
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


def read_events(path: Path) -> list[dict]:
    """Every event of the run log, in order."""
    with open(path, "rb") as f:
        return [e for line in f if line.strip() and (e := _parse_line(line)) is not None]


def read_run_log(path: Path) -> list[AttemptRecord]:
    """The attempts the run log describes, in order."""
    return fold_attempts(read_events(path))


def fold_attempts(events: Iterable[dict]) -> list[AttemptRecord]:
    """The attempts a run log describes, in order: the job's events between a ``launch`` and its ``exit``
    belong to that attempt; the ``restart_delay`` after it, to it too."""
    attempts: list[AttemptRecord] = []
    current: AttemptRecord | None = None
    for e in events:
        kind, t = e["event"], float(e.get("t", 0.0))
        if kind == LAUNCH:
            current = AttemptRecord(int(e.get("attempt", len(attempts))), t, e.get("preempt_at_s"))
            current.hard_stop = bool(e.get("hard_stop"))
            attempts.append(current)
        elif kind == RESTART_DELAY and attempts:
            attempts[-1].delay_sim_s = e.get("delay_s", 0.0)
            attempts[-1].capacity_wait_sim_s = e.get("capacity_wait_s", 0.0)
        elif current is not None:  # job events before any launch were not produced by a harness run
            _apply(current, kind, t, e)
    return attempts


@dataclass
class NodeVMRecord:
    """One VM of one node in a ``--nodes`` run, from its ``node_launch`` to its ``node_exit``."""

    node: int
    vm: int
    launch_t: float
    preempt_at_sim_s: float | None
    capacity_wait_sim_s: float  # the wait for capacity before it (unbilled)
    exit_t: float | None = None
    exit_code: int | None = None
    cause: str | None = None


def fold_nodes(events: Iterable[dict]) -> list[NodeVMRecord]:
    """The node VMs a ``--nodes`` run log describes, in launch order (none for a single-node run)."""
    vms: dict[tuple[int, int], NodeVMRecord] = {}
    for e in events:
        if e["event"] == NODE_LAUNCH:
            key = (int(e["node"]), int(e["vm"]))
            vms[key] = NodeVMRecord(*key, float(e["t"]), e.get("preempt_at_s"), float(e.get("capacity_wait_s") or 0))
        elif e["event"] == NODE_EXIT and (vm := vms.get((int(e["node"]), int(e["vm"])))) is not None:
            vm.exit_t, vm.exit_code, vm.cause = float(e["t"]), e.get("exit_code"), e.get("cause")
    return list(vms.values())


def _apply(current: AttemptRecord, kind: str, t: float, e: dict) -> None:
    """One event of the attempt under way."""
    if kind == EXIT:
        current.exit_t, current.exit_code, current.cause = t, e.get("exit_code"), e.get("cause")
        current.node = e.get("node")
    elif kind == SIGNAL:
        current.signals.append((t, e.get("signal", "?")))
        current.kill = current.kill or e
    elif kind == NOTICE:  # t0 of a noticed preemption: the kill, whether or not a signal follows
        current.notice_t = current.notice_t or t
        current.kill = current.kill or e
    elif kind == REBALANCE:
        current.rebalance_t = current.rebalance_t or t
    elif kind == METADATA_REQUEST:
        current.metadata_times.append(t)
        if e.get("notice") and current.notice_t is not None and current.notice_seen_t is None:
            current.notice_seen_t = t
    elif kind == CHECKPOINT_FAILED:
        current.failed_saves.append(cast(CheckpointFailedEvent, e))
    elif kind == STORAGE_FAULT:
        current.storage_faults.append(str(e.get("fault", "?")))
    elif kind == STORAGE_OUTAGE:
        current.storage_outages.append(cast(StorageOutageEvent, e))
    elif kind == MALFORMED:
        current.malformed.append(str(e.get("problem", "?")))
    elif kind == STOP:
        current.stops.append(str(e.get("reason", "?")))
    elif kind == START and not current.started:
        current.started, current.resumed_step = True, e.get("resumed_step")
    elif kind == STEP and isinstance(e.get("step"), int):
        current.steps.append((t, e["step"]))
    elif kind == CHECKPOINT:
        current.checkpoints.append(cast(CheckpointEvent, e))
    elif kind == DONE:
        current.done_step = e.get("step")
