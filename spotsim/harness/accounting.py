"""A run's accounting from its attempts: interruptions, lost work, overheads and the identity that checks them.

Lost work per interruption (preemption or crash) is the last step the
attempt reported minus the step the next attempt resumed from. The identity
``steps_computed == final_step + lost_steps`` fails when a job resumes from a
step it never reported: its events are not trustworthy, and
:func:`anomalies` says where.

Durations are simulated seconds on the phase-aware clock (:mod:`spotsim.clock`),
except ``wall_s`` and the ``*_real_s`` fields, which are real seconds.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

from spotsim.clock import AttemptClock, RunClock, check_interval_bound
from spotsim.events import AttemptRecord, Cause, CheckpointEvent, NodeVMRecord
from spotsim.harness.config import RunConfig

WORK_TOLERANCE = 0.10  # the work a run stood for may differ this much from --work before it is said
INTERRUPTION_CAUSES = (Cause.PREEMPTED, Cause.CRASH, Cause.TIMEOUT, Cause.STORAGE_OUTAGE)


@dataclass(frozen=True)
class NoticeResponse:
    """What a job did with a preemption's notice. Offsets from t0 are simulated; ``*_real_s`` the real ones."""

    notice_seen_after_s: float | None  # None: no metadata answer carried the notice
    notice_seen_after_real_s: float | None
    emergency_checkpoint: bool
    emergency_after_s: float | None
    emergency_after_real_s: float | None
    emergency_before_kill: bool


@dataclass(frozen=True)
class PreemptionResponse:
    """How a preemption ended for the job, and the VM's simulated uptime at its t0."""

    exit: str  # before_signal | inside_grace | killed
    noticed: bool
    hard_stop: bool  # the provider's uptime cap ended the VM
    uptime_s: float | None
    metadata_requests: int
    notice: NoticeResponse | None = None  # None when the preemption came without notice


@dataclass(frozen=True)
class Interruption:
    """One preemption, crash, timeout or storage outage, and the steps it cost."""

    attempt: int
    cause: str
    exit_code: int | None
    signals: list[str]
    last_step: int
    resumed_step: int | None  # None: no later attempt started
    started: bool
    lost_steps: int | None  # None: nothing resumed, so nothing was computed again
    notice_to_exit_s: float | None  # real seconds from the first signal to the exit
    preemption: PreemptionResponse | None = None  # only for a preemption
    node: int | None = None  # a --nodes run: the node whose loss ended the group's attempt

    def to_dict(self) -> dict:
        """One entry of ``summary.json``'s ``interruptions``: a preemption's response fields inline."""
        record = asdict(self)
        del record["preemption"]
        if self.preemption is not None:
            response = asdict(self.preemption)
            del response["notice"]
            record |= response
            if self.preemption.notice is not None:
                record |= asdict(self.preemption.notice)
        return record


@dataclass(frozen=True)
class Accounting:
    """The run's figures: progress, what interruptions cost, the saves, and its clock."""

    completed: bool
    final_step: int
    attempts: int
    preemptions: int
    crashes: int  # crashes and timeouts: exits the harness did not cause
    storage_outages: int
    timeouts: int
    lost_steps: int
    lost_time_s: float
    steps_computed: int
    identity_holds: bool  # steps_computed == final_step + lost_steps
    anomalies: list[str]  # reports that contradict each other
    warnings: list[str]  # what makes the figures less trustworthy without being the job's fault
    checkpoints: int
    checkpoint_blocking_s: float  # blocking runs at 1×: real seconds are simulated ones
    checkpoint_persist_s: float  # simulated training that passes while saves persist in the background
    checkpoint_overhead: float  # blocking as a fraction of the simulated wall time
    restart_overhead_s: float | None  # R: mean over later attempts, launch to the first step past the resume
    step_time_s: float | None
    startup_s: float | None  # the first attempt's launch to its first step
    wall_s: float  # real
    sim_wall_s: float
    time_scale: float
    sim_hours: float
    capacity_wait_s: float  # waiting for capacity (a replayed trace's gaps): not billed

    @property
    def blocking_per_checkpoint_s(self) -> float:
        return self.checkpoint_blocking_s / max(self.checkpoints, 1)


def account(
    attempts: list[AttemptRecord],
    clock: RunClock,
    config: RunConfig,
    interruptions: list[Interruption],
    *,
    wall_s: float,
) -> Accounting:
    """The figures of a run whose attempts, clock and interruptions are given."""
    k = config.time_scale
    lost_steps = sum(x.lost_steps for x in interruptions if x.lost_steps is not None)
    step_real = step_time_s(attempts)
    step_s = step_real * k if step_real else None
    completed = bool(attempts) and attempts[-1].cause == Cause.DONE
    final_step = _final_step(attempts, completed)
    steps_computed = sum(a.last_step - a.first_step for a in attempts if a.started)
    restarts = [r for i, a in enumerate(attempts) if i > 0 and (r := overhead(a, clock, i, step_s)) is not None]
    checkpoints = [c for a in attempts for c in a.checkpoints]
    blocking = sum(float(c.get("blocking_s", 0.0)) for c in checkpoints)
    phases = clock.phases()
    sim_wall_s = sum(p.sim_s for p in phases.values())
    causes = [x.cause for x in interruptions]
    return Accounting(
        completed=completed,
        final_step=final_step,
        attempts=len(attempts),
        preemptions=causes.count(Cause.PREEMPTED),
        crashes=causes.count(Cause.CRASH) + causes.count(Cause.TIMEOUT),
        storage_outages=causes.count(Cause.STORAGE_OUTAGE),
        timeouts=causes.count(Cause.TIMEOUT),
        lost_steps=lost_steps,
        lost_time_s=lost_steps * step_s if step_s else 0.0,
        steps_computed=steps_computed,
        identity_holds=steps_computed == final_step + lost_steps,
        anomalies=anomalies(attempts, interruptions),
        warnings=warnings(config, attempts, checkpoints, step_s=step_s, final_step=final_step, completed=completed),
        checkpoints=len(checkpoints),
        checkpoint_blocking_s=blocking,
        checkpoint_persist_s=sum(float(c.get("persist_s", 0.0)) for c in checkpoints) * k,
        checkpoint_overhead=blocking / sim_wall_s if sim_wall_s > 0 else 0.0,
        restart_overhead_s=sum(restarts) / len(restarts) if restarts else None,
        step_time_s=step_s,
        startup_s=overhead(attempts[0], clock, 0, step_s) if attempts else None,
        wall_s=wall_s,
        sim_wall_s=sim_wall_s,
        time_scale=k,
        sim_hours=sim_wall_s / 3600,
        capacity_wait_s=phases["capacity_wait"].sim_s,
    )


def _final_step(attempts: list[AttemptRecord], completed: bool) -> int:
    """The step of the job's ``done`` event, else the furthest step an attempt that started reported."""
    done = attempts[-1].done_step if completed else None
    return done if done is not None else max((a.last_step for a in attempts if a.started), default=0)


def interruptions_of(attempts: list[AttemptRecord], clock: RunClock) -> list[Interruption]:
    """Every attempt that ended in a preemption, crash, timeout or storage outage, in order."""
    found = []
    for i, attempt in enumerate(attempts):
        attempt_clock = clock.attempts[i] if i < len(clock.attempts) else None
        if x := _interruption(attempt, _next_started(attempts, i), attempt_clock):
            found.append(x)
    return found


def overhead(attempt: AttemptRecord, clock: RunClock, index: int, step_s: float | None) -> float | None:
    """Simulated seconds from launch to the first step past the resume, less that step's own compute:
    spawn, imports, restore, and whatever else delays the first step (R, or the first attempt's start-up)."""
    first = attempt.first_progress_t
    if first is None or index >= len(clock.attempts):
        return None
    started = clock.attempts[index].phases(first)["startup"].sim_s
    return max(started, clock.attempts[index].uptime(first) - (step_s or 0.0))


def step_time_s(attempts: list[AttemptRecord]) -> float | None:
    """Mean real seconds of compute per step (checkpoint blocking excluded), over all attempts."""
    seconds = steps = 0.0
    for a in attempts:
        progress = [(t, s) for t, s in a.steps if s > a.first_step]
        if len(progress) >= 2:
            (t0, s0), (t1, s1) = progress[0], progress[-1]
            blocked = sum(float(c.get("blocking_s", 0.0)) for c in a.checkpoints if t0 < c["t"] <= t1)
            seconds += max(0.0, t1 - t0 - blocked)
            steps += s1 - s0
    return seconds / steps if steps > 0 else None


def anomalies(attempts: list[AttemptRecord], interruptions: list[Interruption]) -> list[str]:
    """Reports that contradict each other: the job's events cannot be trusted where these appear."""
    found = [
        f"attempt {x.attempt} reported step {x.last_step} but the next attempt resumed from {x.resumed_step}"
        for x in interruptions
        if x.lost_steps is not None and x.lost_steps < 0
    ]
    if attempts and attempts[0].started and attempts[0].first_step != 0:
        found.append(
            f"the first attempt resumed from step {attempts[0].first_step}: its state outlived the bucket prefix "
            "(a leftover run, or a checkpoint outside SPOTSIM_CHECKPOINT_URI)"
        )
    for a in attempts:
        found += [f"attempt {a.attempt} wrote a malformed event ({problem})" for problem in a.malformed]
        found += [f"attempt {a.attempt} was stopped by the harness: {reason}" for reason in a.stops]
    return found


def warnings(
    config: RunConfig,
    attempts: list[AttemptRecord],
    checkpoints: list[CheckpointEvent],
    *,
    step_s: float | None,
    final_step: int,
    completed: bool,
) -> list[str]:
    """What makes the figures less trustworthy without being the job's fault."""
    found = []
    saves = [
        float(c.get("blocking_s", 0.0)) + float(c.get("persist_s", 0.0))
        for c in checkpoints
        if c.get("kind", "periodic") == "periodic"
    ]
    if saves and (line := check_interval_bound(config.interval_s, config.time_scale, statistics.median(saves))):
        found.append(line)
    asked = config.work_s if config.scale is not None else None  # --work, when K was chosen for it
    if asked and step_s and completed and (line := _work_differs(final_step * step_s, asked)):
        found.append(line)
    if line := _missed_notices(config, attempts):
        found.append(line)
    if config.time_scale != 1 and attempts and not any(a.started or a.steps for a in attempts):
        found.append(
            "the job reported no start or step events: its compute could not be told from its start-up, "
            "so nothing was compressed by K"
        )
    return found


def _work_differs(stood_for: float, asked: float) -> str | None:
    """The job's steps ran slower or faster than its measurement said, so it stood for other work than asked."""
    if abs(stood_for / asked - 1) <= WORK_TOLERANCE:
        return None
    return (
        f"the job stood for {stood_for / 3600:.3g} h of compute, not the {asked / 3600:g} h asked: its "
        f"steps ran at {stood_for / asked:.0%} of the measured time (a busy machine?); the figures "
        "and the projection are for what it did"
    )


def _missed_notices(config: RunConfig, attempts: list[AttemptRecord]) -> str | None:
    """A job that polls the metadata server every P real seconds cannot see a notice that lasts less than P
    here, though on the VM (where the notice is K times longer) it would."""
    lead_real = config.provider.notice_s / config.time_scale
    missed = [a for a in attempts if a.notice_t is not None and a.notice_seen_t is None and len(a.metadata_times) > 1]
    if not missed or not lead_real:
        return None
    gaps = [b - a for x in missed for a, b in itertools.pairwise(x.metadata_times)]
    poll = statistics.median(gaps)
    if poll <= lead_real:
        return None
    return (
        f"the job polls the metadata server every {poll:.2g} s real, but at K = {config.time_scale:,.4g} the "
        f"{config.provider.notice_s:g} s notice lasts {lead_real:.2g} s real: it missed {len(missed)} notice(s) "
        f"that it would see on the VM; poll on the simulated clock (SPOTSIM_TIME_SCALE) or lower K to "
        f"{config.provider.notice_s / poll:.3g}"
    )


def _next_started(attempts: list[AttemptRecord], i: int) -> AttemptRecord | None:
    """The first attempt after ``i`` that got as far as its ``start`` event."""
    return next((a for a in attempts[i + 1 :] if a.started), None)


def _interruption(
    attempt: AttemptRecord, following: AttemptRecord | None, clock: AttemptClock | None
) -> Interruption | None:
    """One preemption or crash: what it cost and, for a preemption, how the job met it.

    An attempt killed before its ``start`` event restored nothing and computed
    nothing: it loses 0 steps, and the attempt before it is charged against the
    next attempt that did start.
    """
    if attempt.cause not in INTERRUPTION_CAUSES:
        return None
    resumed = following.first_step if following is not None else None
    lost = None if resumed is None else (attempt.last_step - resumed if attempt.started else 0)
    first_signal = attempt.signals[0] if attempt.signals else None
    return Interruption(
        attempt=attempt.attempt,
        cause=attempt.cause,
        exit_code=attempt.exit_code,
        signals=[name for _, name in attempt.signals],
        last_step=attempt.last_step,
        resumed_step=resumed,
        started=attempt.started,
        lost_steps=lost,
        notice_to_exit_s=attempt.exit_t - first_signal[0] if first_signal and attempt.exit_t else None,
        preemption=_how_met(attempt, clock) if attempt.cause == Cause.PREEMPTED else None,
        node=attempt.node,
    )


def _how_met(attempt: AttemptRecord, clock: AttemptClock | None) -> PreemptionResponse:
    """A preemption from t0 (the metadata notice, or the first signal): the VM's simulated uptime then, and how
    it ended; with a notice, what the job did with it."""
    signals: dict[str, float] = {}
    for t, name in attempt.signals:
        signals.setdefault(name, t)
    t0 = attempt.preempted_t
    kill_t = signals.get("SIGKILL")
    ended = "killed" if "SIGKILL" in signals else "inside_grace" if "SIGTERM" in signals else "before_signal"
    return PreemptionResponse(
        exit=ended,
        noticed=not attempt.without_notice,
        hard_stop=attempt.hard_stop,
        uptime_s=clock.uptime(t0) if clock is not None and t0 is not None else None,
        metadata_requests=attempt.metadata_requests,
        notice=None if t0 is None or attempt.without_notice else _notice_response(attempt, clock, t0, kill_t),
    )


def _notice_response(
    attempt: AttemptRecord, clock: AttemptClock | None, t0: float, kill_t: float | None
) -> NoticeResponse:
    """When the job saw the notice in the metadata server's request log, and when its emergency checkpoint
    committed: simulated seconds after t0, and the real ones the job had."""

    def after(t: float) -> float:
        return clock.uptime(t) - clock.uptime(t0) if clock is not None else t - t0

    seen = attempt.notice_seen_t
    emergency = next((c["t"] for c in attempt.checkpoints if c.get("kind") == "emergency" and c["t"] >= t0), None)
    return NoticeResponse(
        notice_seen_after_s=after(seen) if seen else None,
        notice_seen_after_real_s=seen - t0 if seen else None,
        emergency_checkpoint=emergency is not None,
        emergency_after_s=after(emergency) if emergency is not None else None,
        emergency_after_real_s=emergency - t0 if emergency is not None else None,
        emergency_before_kill=emergency is not None and (kill_t is None or emergency <= kill_t),
    )


@dataclass(frozen=True)
class NodeAccounting:
    """One node of a ``--nodes`` run: its VMs, the losses it caused the group, and its own bill."""

    node: int
    vms: int
    preemptions: int  # of its VMs
    crashes: int  # of its VMs (a hang the harness ended counts)
    lost_steps: int  # steps the whole group computed again after this node's losses
    billed_hours: float  # simulated: its VMs' up time and the boot of each replacement


def per_node(
    vms: list[NodeVMRecord], interruptions: list[Interruption], to_sim: Callable[[float], float], boot_s: float
) -> list[NodeAccounting]:
    """Each node's share of a group run: lost work goes to the node whose loss ended the attempt."""
    rows = []
    for node in sorted({vm.node for vm in vms}):
        mine = [vm for vm in vms if vm.node == node]
        up_s = sum(to_sim(vm.exit_t) - to_sim(vm.launch_t) for vm in mine if vm.exit_t is not None)
        rows.append(
            NodeAccounting(
                node=node,
                vms=len(mine),
                preemptions=sum(vm.cause == Cause.PREEMPTED for vm in mine),
                crashes=sum(vm.cause == Cause.CRASH for vm in mine),
                lost_steps=sum(x.lost_steps or 0 for x in interruptions if x.node == node),
                billed_hours=(up_s + boot_s * (len(mine) - 1)) / 3600,
            )
        )
    return rows
