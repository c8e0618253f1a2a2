"""The simulated clock: training compute is compressed by K, fixed costs never are.

A live run stands for a longer job on a real VM. Only training compute
shrinks with that: the real VM also spends seconds starting Python, importing
torch and restoring, blocks on each checkpoint, and exits after ``done``, and
those seconds do not grow when the job trains longer. So within an attempt,
from its ``launch`` (unix times from the run log):

==============  ==========================================================  ============
phase           real interval                                               simulated
==============  ==========================================================  ============
``startup``     launch → the job's ``start`` event (spawn, imports, restore)  × 1, or ``--startup``
``compute``     start → ``done`` or the first signal, less ``checkpoint``   × K
``checkpoint``  each checkpoint's ``blocking_s``, ending at its event, and a  × 1
                synchronous save in progress (``checkpoint_start`` → its
                ``checkpoint``)
``notice``      the first signal → exit (emergency save, exit)              × 1
``after_done``  ``done`` → exit                                             × 1
==============  ==========================================================  ============

Between attempts, the restart delay and a trace's capacity wait are simulated
durations already. A job that never reports ``start`` starts computing at its
first ``step`` or ``checkpoint`` event; one that reports none is all start-up.

One fold, :class:`RunClock`, serves both sides: the runner feeds it events as
they arrive and preempts when an attempt's :meth:`AttemptClock.uptime` reaches
its drawn lifetime (the kill decision is this timer); the summary feeds it the
whole run log and reports each phase's real and simulated seconds.

:func:`choose_scale` picks K from ``--work``: K = work ÷ the job's real compute
time, bounded so that the real checkpoint interval stays at least
:data:`MIN_INTERVAL_OVER_SAVE` times one save's blocking + persist time (below
that, saves crowd the real run in a way they would not on the VM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spotsim.errors import InvalidOption
from spotsim.events import (
    CHECKPOINT,
    CHECKPOINT_FAILED,
    CHECKPOINT_START,
    DONE,
    EXIT,
    LAUNCH,
    RESTART_DELAY,
    SIGNAL,
    START,
    STEP,
)

PHASES = ("startup", "compute", "checkpoint", "notice", "after_done", "restart_delay", "capacity_wait")
MIN_INTERVAL_OVER_SAVE = 10.0
_COMPUTE_STARTS = (START, STEP, CHECKPOINT, DONE)


@dataclass(frozen=True)
class Clock:
    """K, and the start-up charged per attempt in place of the measured one (``--startup``), simulated seconds."""

    k: float = 1.0
    startup_s: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k) and self.k > 0):
            raise InvalidOption(f"--time-scale must be > 0, got {self.k}")
        if self.startup_s is not None and not (math.isfinite(self.startup_s) and self.startup_s > 0):
            raise InvalidOption(f"--startup must be a duration > 0, got {self.startup_s}")


@dataclass
class PhaseTime:
    real_s: float = 0.0
    sim_s: float = 0.0

    def __iadd__(self, other: PhaseTime) -> PhaseTime:
        self.real_s += other.real_s
        self.sim_s += other.sim_s
        return self


class AttemptClock:
    """One attempt's phases, from the events of its ``launch`` to its ``exit``."""

    def __init__(self, clock: Clock, launch_t: float) -> None:
        self.clock, self.launch_t = clock, launch_t
        self.start_t: float | None = None
        self.stop_t: float | None = None  # compute ends: `done` or the first signal
        self.stop_phase = "after_done"
        self.exit_t: float | None = None
        self.blocking: list[tuple[float, float]] = []  # (end t, seconds) per checkpoint
        self.open_save: float | None = None  # a synchronous save has held the loop since then

    def apply(self, event: dict) -> None:
        kind, t = event["event"], float(event["t"])
        if kind in _COMPUTE_STARTS and self.start_t is None:
            self.start_t = t
        if kind == CHECKPOINT_START and self.open_save is None:
            self.open_save = t  # a deadline must not fall inside a save only because the clock ran at K
        elif kind in (CHECKPOINT, CHECKPOINT_FAILED):
            self.open_save = None
        if kind == CHECKPOINT:
            self.blocking.append((t, float(event.get("blocking_s") or 0.0)))
        elif kind in (DONE, SIGNAL) and self.stop_t is None:
            self.stop_t, self.stop_phase = t, "after_done" if kind == DONE else "notice"
        elif kind == EXIT:
            self.exit_t = t

    def phases(self, at: float) -> dict[str, PhaseTime]:
        """Real and simulated seconds of each phase from launch up to real time ``at``."""
        end = min(at, self.exit_t) if self.exit_t is not None else at
        start, started = end, False
        if self.start_t is not None and self.start_t <= end:
            start, started = self.start_t, True
        stop = min(self.stop_t, end) if self.stop_t is not None and self.stop_t <= end else end
        stop = max(stop, start)
        blocked = sum(_overlap(t - seconds, t, start, stop) for t, seconds in self.blocking)
        if self.open_save is not None:
            blocked += _overlap(self.open_save, end, start, stop)
        startup_real = max(0.0, start - self.launch_t)
        startup_sim = startup_real
        if self.clock.startup_s is not None:
            startup_sim = self.clock.startup_s if started else min(startup_real, self.clock.startup_s)
        compute_real = max(0.0, stop - start - blocked)
        tail = max(0.0, end - stop)
        return {
            "startup": PhaseTime(startup_real, startup_sim),
            "compute": PhaseTime(compute_real, compute_real * self.clock.k),
            "checkpoint": PhaseTime(blocked, blocked),
            self.stop_phase: PhaseTime(tail, tail),
        }

    def uptime(self, at: float) -> float:
        """Simulated seconds this attempt's VM has been up at real time ``at``."""
        return sum(p.sim_s for p in self.phases(at).values())

    def rate(self, at: float) -> float:
        """Simulated seconds per real second at ``at``: K while computing, else 1."""
        computing = self.start_t is not None and self.start_t <= at and (self.stop_t is None or at < self.stop_t)
        computing = computing and (self.open_save is None or at < self.open_save)
        return self.clock.k if computing else 1.0

    def real_until(self, uptime_s: float, at: float) -> float:
        """Real seconds from ``at`` until the uptime reaches ``uptime_s`` at the present rate (≥ 0)."""
        return max(0.0, (uptime_s - self.uptime(at)) / self.rate(at))


@dataclass
class _Wait:
    after_t: float  # the attempt's exit
    until_t: float | None  # the next launch
    delay_s: float
    capacity_s: float


@dataclass
class RunClock:
    """The whole run's clock: attempts and the waits between them, fed the run log event by event."""

    clock: Clock
    attempts: list[AttemptClock] = field(default_factory=list)
    waits: list[_Wait] = field(default_factory=list)

    def apply(self, event: dict) -> None:
        kind, t = event["event"], float(event["t"])
        if kind == LAUNCH:
            if self.waits and self.waits[-1].until_t is None:
                self.waits[-1].until_t = t
            self.attempts.append(AttemptClock(self.clock, t))
        elif kind == RESTART_DELAY and self.attempts:
            ended = self.attempts[-1].exit_t or t
            self.waits.append(
                _Wait(ended, None, float(event.get("delay_s") or 0), float(event.get("capacity_wait_s") or 0))
            )
        elif self.attempts:
            self.attempts[-1].apply(event)

    @property
    def current(self) -> AttemptClock | None:
        return self.attempts[-1] if self.attempts else None

    def phases(self, at: float = math.inf) -> dict[str, PhaseTime]:
        """Each phase's real and simulated seconds over the run, up to real time ``at``."""
        totals = {name: PhaseTime() for name in PHASES}
        for attempt in self.attempts:
            if attempt.launch_t <= at:
                for name, time in attempt.phases(at).items():
                    totals[name] += time
        for wait in self.waits:
            fraction = _fraction(wait, at)
            real = (min(at, wait.until_t or wait.after_t) - wait.after_t) if fraction > 0 else 0.0
            totals["restart_delay"] += PhaseTime(real * _share(wait.delay_s, wait), wait.delay_s * fraction)
            totals["capacity_wait"] += PhaseTime(real * _share(wait.capacity_s, wait), wait.capacity_s * fraction)
        return totals

    def sim_s(self, at: float = math.inf) -> float:
        """Simulated seconds from the first launch to real time ``at`` (the run's simulated wall time)."""
        return sum(p.sim_s for p in self.phases(at).values())

    def to_sim(self, t: float) -> float:
        """Where real time ``t`` falls on the simulated axis (for the timeline)."""
        return self.sim_s(t)


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


def _fraction(wait: _Wait, at: float) -> float:
    """How much of a wait has passed at ``at``: the simulated wait is spread over its real gap."""
    end = wait.until_t if wait.until_t is not None else wait.after_t
    if at >= end:
        return 1.0
    if at <= wait.after_t:
        return 0.0
    return (at - wait.after_t) / (end - wait.after_t)


def _share(part: float, wait: _Wait) -> float:
    total = wait.delay_s + wait.capacity_s
    return part / total if total > 0 else 0.5


# -- choosing K ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """K chosen from ``--work``, the steps to run for it, and the line saying so."""

    k: float
    steps: int
    note: str


def choose_scale(
    work_s: float,
    *,
    step_real_s: float,
    steps: int,
    save_real_s: float,
    interval_s: float | None,
    can_add_steps: bool,
) -> Scale:
    """K = work ÷ (steps × real step time), bounded by the real interval ≥ 10 × (blocking + persist).

    ``work_s`` and ``interval_s`` are simulated; the step and one save's blocking + persist time are
    what the probe measured. When the bound binds, a built-in workload (``can_add_steps``) runs more
    steps at the largest valid K; any other job cannot stand for that much work.

    Raises:
        InvalidOption: the bound cannot be met; the line names the largest valid K
            and the shortest valid interval.
    """
    if not (math.isfinite(step_real_s) and step_real_s > 0):
        raise InvalidOption(f"cannot choose K: the measured step time is {step_real_s!r} s")
    k = work_s / (steps * step_real_s)
    k_max = math.inf
    if interval_s is not None and save_real_s > 0:
        k_max = interval_s / (MIN_INTERVAL_OVER_SAVE * save_real_s)
    detail = f"{steps:,} steps of {step_real_s * 1000:.3g} ms"
    if k <= k_max:
        unchecked = ""
        if save_real_s <= 0 and interval_s is not None:
            unchecked = "; no save was seen while measuring, so the interval bound is unchecked"
        real = f"≈ {steps * step_real_s:,.0f} s real"
        return Scale(k, steps, f"K = {k:,.0f}: {_hours(work_s)} of work in {detail} ({real}){unchecked}")
    why = f"the real interval stays ≥ {MIN_INTERVAL_OVER_SAVE:g} × one save's measured {save_real_s * 1000:.3g} ms"
    if can_add_steps:
        more = math.ceil(work_s / (k_max * step_real_s))
        k = work_s / (more * step_real_s)
        longer = f"{more:,} steps of {step_real_s * 1000:.3g} ms (≈ {more * step_real_s:,.0f} s real)"
        return Scale(k, more, f"K = {k:,.0f}, bounded so {why}: {_hours(work_s)} of work in {longer}")
    shortest = MIN_INTERVAL_OVER_SAVE * save_real_s * k
    raise InvalidOption(
        f"--work {_hours(work_s)} needs K = {k:,.0f} for {detail}, but at --interval {interval_s:g}s K may be at most "
        f"{k_max:,.0f} ({why}); use --interval ≥ {shortest:,.0f}s, less --work, or a job with more steps"
    )


def check_interval_bound(interval_s: float | None, k: float, save_real_s: float | None) -> str | None:
    """For an explicit ``--time-scale``: the line saying the bound is broken, or None."""
    if interval_s is None or not save_real_s:
        return None
    interval_real_s = interval_s / k
    if interval_real_s >= MIN_INTERVAL_OVER_SAVE * save_real_s:
        return None
    k_max = interval_s / (MIN_INTERVAL_OVER_SAVE * save_real_s)
    return (
        f"the real checkpoint interval {interval_real_s * 1000:.3g} ms is under {MIN_INTERVAL_OVER_SAVE:g} × one "
        f"save's {save_real_s * 1000:.3g} ms: saves crowd the run; use K ≤ {k_max:,.0f} or --interval ≥ "
        f"{MIN_INTERVAL_OVER_SAVE * save_real_s * k:,.0f}s"
    )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"
