"""Preemption schedules: how long each VM lives, for the live harness and the simulator alike.

A schedule answers one question per VM: how long does it live before it is
preempted (inf or None: never), and how long is there no capacity after it?
The harness asks attempt after attempt (:meth:`Schedule.lifetime`); the
simulator asks for many trajectories at once (:meth:`Schedule.draw`). For the
kinds both can run, the harness's answer *is* the simulator's draw for one VM,
so the two cannot disagree. Every draw comes from a generator the caller
seeds, so a run is reproducible from ``--seed``.

One registered class per ``--schedule`` kind (:data:`SCHEDULES`); a rate λ is
per hour of uptime.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from spotsim.durations import parse_duration
from spotsim.errors import InvalidOption, InvalidSchedule
from spotsim.preemption.trace import Trace, load_trace

Survival = Callable[[np.ndarray], np.ndarray]

SCHEDULES: dict[str, type[Schedule]] = {}


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Make ``cls`` the schedule named ``cls.kind`` in ``--schedule``; the order registered is the order listed."""
    SCHEDULES[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class Lifetime:
    """One attempt's VM: its uptime before preemption (None: never) and the capacity wait after it."""

    uptime_s: float | None
    capacity_wait_s: float = 0.0
    at_step: int | None = None
    in_save: bool = False  # preempt inside the first save that starts from ``at_step`` on
    hard_stop: bool = False  # the provider's uptime cap, not the schedule, ends this VM


class Schedule(ABC):
    """A parsed ``--schedule`` with its rate. Subclasses are frozen dataclasses: they hold no generator."""

    kind: ClassVar[str]
    usage: ClassVar[str]  # how ``--schedule`` spells it, for error messages
    simulable: ClassVar[bool] = True  # the simulator can draw it (time-based, not placed by step)
    rate_per_hour: float
    in_save: tuple[bool, ...] = ()  # per kill point; only step schedules have any

    def __post_init__(self) -> None:
        _check_rate(self.rate_per_hour)

    @classmethod
    @abstractmethod
    def parse(cls, text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
        """This kind from the whole ``--schedule`` text (``weibull:0.7``).

        Raises:
            InvalidSchedule: a bad argument for this kind.
            InvalidTrace: a trace file that cannot be read or is malformed.
        """

    @abstractmethod
    def describe(self) -> str:
        """The ``--schedule`` text that parses back to this schedule, with ``at λ/h`` where the rate is used."""

    @property
    @abstractmethod
    def mean_uptime_s(self) -> float:
        """A VM's mean uptime in seconds; inf when VMs are never preempted by time."""

    @abstractmethod
    def draw(self, rng: np.random.Generator, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next VM's uptime and capacity wait after it, for ``len(used)`` trajectories at once.

        Args:
            rng: the simulation's generator.
            used: how many VMs each trajectory has had so far (a replayed trace depends on it).

        Returns:
            (uptimes, capacity waits) in seconds; an uptime of inf is never preempted.

        Raises:
            InvalidOption: a schedule the simulator cannot draw (``simulable`` is False).
        """

    @abstractmethod
    def survival(self) -> tuple[Survival, float, float]:
        """P(a VM lives ≥ t), the mean uptime, and the most lifetimes one trajectory can have.

        Raises:
            InvalidOption: a schedule the simulator cannot draw (``simulable`` is False).
        """

    def lifetime(self, attempt: int, rng: np.random.Generator) -> Lifetime:
        """The harness's VM for ``attempt``: the simulator's draw for one trajectory that has had ``attempt`` VMs."""
        uptime, wait = self.draw(rng, np.array([attempt]))
        return Lifetime(None if math.isinf(uptime[0]) else float(uptime[0]), float(wait[0]))


class _Rated(Schedule):
    """A schedule whose uptimes are drawn with mean 1/λ; at λ = 0 VMs live forever."""

    @property
    def mean_uptime_s(self) -> float:
        return math.inf if self.rate_per_hour == 0 else 3600.0 / self.rate_per_hour

    def draw(self, rng: np.random.Generator, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.rate_per_hour == 0:
            return np.full(used.size, np.inf), np.zeros(used.size)
        return self._uptimes(rng, used.size), np.zeros(used.size)

    def _uptimes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError


@register_schedule
@dataclass(frozen=True)
class Poisson(_Rated):
    """Exponential uptimes with mean 1/λ: preemptions that do not care how old the VM is.

    ``poisson`` at 4/h: attempt 0 lives 1,310 s → preempted → attempt 1 lives 402 s → preempted → …
    (mean 900 s). At 0/h attempt 0 is never preempted.
    """

    kind = "poisson"
    usage = "poisson"
    rate_per_hour: float

    @classmethod
    def parse(cls, text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
        if _argument(text):
            raise unknown_schedule(text)
        return cls(rate_per_hour)

    def describe(self) -> str:
        return f"poisson at {self.rate_per_hour:g}/h"

    def _uptimes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean_uptime_s, n)

    def survival(self) -> tuple[Survival, float, float]:
        return _weibull_survival(self.mean_uptime_s, 1.0)


@register_schedule
@dataclass(frozen=True)
class Weibull(_Rated):
    """Weibull uptimes with the same mean 1/λ; SHAPE < 1: young VMs are preempted more often, > 1: old ones.

    ``weibull:0.5`` at 4/h: attempt 0 lives 40 s → preempted → attempt 1 lives 35 s → preempted →
    attempt 2 lives 3,100 s → … (mean 900 s: many short lives, a few long ones).
    """

    kind = "weibull"
    usage = "weibull:SHAPE"
    shape: float
    rate_per_hour: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.shape) and self.shape > 0):
            raise InvalidSchedule(f"weibull shape must be a positive finite number, got {self.shape}")

    @classmethod
    def parse(cls, text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
        return cls(_positive(_argument(text), "weibull shape"), rate_per_hour)

    def describe(self) -> str:
        return f"weibull:{self.shape:g} at {self.rate_per_hour:g}/h"

    def _uptimes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return weibull_scale(self.mean_uptime_s, self.shape) * rng.weibull(self.shape, n)

    def survival(self) -> tuple[Survival, float, float]:
        return _weibull_survival(self.mean_uptime_s, self.shape)


class _HarnessOnly(Schedule):
    """A schedule of attempts the harness replays one by one; the simulator has nothing to draw from it."""

    simulable = False

    def draw(self, rng: np.random.Generator, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise not_simulable(self.kind)

    def survival(self) -> tuple[Survival, float, float]:
        raise not_simulable(self.kind)


@register_schedule
@dataclass(frozen=True)
class Fixed(_HarnessOnly):
    """Attempt i is preempted T(i+1) seconds after its launch; attempts past the list never are.

    ``fixed:90,2m``: attempt 0 preempted at 90 s → attempt 1 preempted at 120 s → attempt 2 runs to the end.
    The rate is not used. The simulator does not draw it: a handful of set kills is a test, not a distribution.
    """

    kind = "fixed"
    usage = "fixed:T1,T2,…"
    times_s: tuple[float, ...]
    rate_per_hour: float = 0.0

    @classmethod
    def parse(cls, text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
        arg = _argument(text)
        return cls(tuple(_positive(t, "fixed preemption time", duration=True) for t in arg.split(",")), rate_per_hour)

    def describe(self) -> str:
        return "fixed:" + ",".join(f"{t:g}" for t in self.times_s)

    @property
    def mean_uptime_s(self) -> float:
        return float(np.mean(self.times_s)) if self.times_s else math.inf

    def lifetime(self, attempt: int, rng: np.random.Generator) -> Lifetime:
        return Lifetime(self.times_s[attempt] if attempt < len(self.times_s) else None)


@register_schedule
@dataclass(frozen=True)
class Steps(_HarnessOnly):
    """Attempt i is preempted as soon as it reports step N(i+1), or its first step after a resume past it.

    ``steps:120,480:save``: attempt 0 preempted at step 120 → attempt 1 resumes (say from step 100) and is
    preempted while writing the first save it starts from step 480 on (:mod:`spotsim.harness.save_watch`) →
    attempt 2 runs to the end. This is how ``spotsim verify`` places kills; the rate is not used, and the
    simulator, which has no steps, does not draw it.
    """

    kind = "steps"
    usage = "steps:N1,N2,…"
    steps: tuple[int, ...]
    in_save: tuple[bool, ...] = ()
    rate_per_hour: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.in_save:
            object.__setattr__(self, "in_save", (False,) * len(self.steps))
        if len(self.in_save) != len(self.steps):
            raise InvalidSchedule(f"{len(self.steps)} kill points but {len(self.in_save)} in-save flags")

    @classmethod
    def parse(cls, text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
        steps, in_save = parse_kill_points(_argument(text))
        return cls(steps, in_save, rate_per_hour)

    def describe(self) -> str:
        return "steps:" + format_kill_points(self.steps, self.in_save)

    @property
    def mean_uptime_s(self) -> float:
        return math.inf  # kills are placed by step, not by time

    def lifetime(self, attempt: int, rng: np.random.Generator) -> Lifetime:
        if attempt >= len(self.steps):
            return Lifetime(None)
        return Lifetime(None, at_step=self.steps[attempt], in_save=self.in_save[attempt])


@register_schedule
@dataclass(frozen=True)
class TraceReplay(Schedule):
    """Replay a recorded spot trace (:mod:`spotsim.preemption.trace`): VM i lives the i-th run of availability.

    ``trace:t.json`` with 30 s ticks ``0 0 1 1 1 0 1 0 0 1 1``: attempt 0 lives 90 s → waits 30 s for
    capacity → attempt 1 lives 30 s → waits 60 s → attempt 2 lives to the end (the trace ends up).
    Every trajectory replays the same trace, so the simulator's spread comes from the job alone.
    The rate is not used. ``trace:NAME`` replays a shipped trace (:func:`~spotsim.preemption.trace.find_trace`).
    """

    kind = "trace"
    usage = "trace:FILE"
    trace: Trace
    rate_per_hour: float = 0.0

    @classmethod
    def parse(cls, text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
        if not _argument(text):
            raise unknown_schedule(text)
        return cls(load_trace(_argument(text), invert=trace_invert), rate_per_hour)

    def describe(self) -> str:
        return f"trace:{self.trace.source}"

    @cached_property
    def _replay(self) -> tuple[np.ndarray, np.ndarray]:
        """(uptimes, waits) per VM in replay order; the last uptime is inf when the trace ends up."""
        runs = self.trace.lifetimes()
        return np.array([np.inf if u is None else u for u, _ in runs]), np.array([w for _, w in runs])

    @property
    def mean_uptime_s(self) -> float:
        finite = np.sort(self._replay[0])
        finite = finite[np.isfinite(finite)]
        return float(finite.mean()) if finite.size else math.inf

    def draw(self, rng: np.random.Generator, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uptimes, waits = self._replay
        beyond = used >= len(uptimes)  # past the trace's end: no more preemptions
        i = np.minimum(used, len(uptimes) - 1)
        return np.where(beyond, np.inf, uptimes[i]), np.where(beyond, 0.0, waits[i])

    def survival(self) -> tuple[Survival, float, float]:
        ups = np.sort(self._replay[0])

        def replayed(t: np.ndarray) -> np.ndarray:
            return 1.0 - np.searchsorted(ups, t) / ups.size

        # After the trace ends the VM lives on: a trajectory has at most len(runs) + 1 lifetimes.
        return replayed, self.mean_uptime_s, ups.size + 1


def parse_schedule(text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
    """Parse ``poisson``, ``weibull:SHAPE``, ``fixed:T1,T2,…``, ``steps:N1,N2,…`` or ``trace:FILE`` (or ``trace:NAME``).

    Raises:
        InvalidSchedule: unknown kind, a bad parameter or a bad rate.
        InvalidTrace: the trace file cannot be read or is malformed, or a trace name is ambiguous.
    """
    _check_rate(rate_per_hour)
    kind = SCHEDULES.get(text.partition(":")[0])
    if kind is None:
        raise unknown_schedule(text)
    return kind.parse(text, rate_per_hour, trace_invert=trace_invert)


def parse_kill_points(text: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """``120,480:save`` → ((120, 480), (False, True)): kill at step 120, then inside the first save from step 480."""
    steps, in_save = [], []
    for item in text.split(","):
        number, _, suffix = item.strip().partition(":")
        if suffix not in ("", "save") or not number.isdigit() or int(number) < 1:
            raise InvalidSchedule(f"kill points are steps ≥ 1, each optionally followed by ':save'; got {item!r}")
        steps.append(int(number))
        in_save.append(suffix == "save")
    return tuple(steps), tuple(in_save)


def format_kill_points(steps: tuple[int, ...], in_save: tuple[bool, ...]) -> str:
    """The inverse of :func:`parse_kill_points`; no flags means no kill inside a save."""
    return ",".join(
        f"{n}:save" if saved else str(n) for n, saved in zip(steps, in_save or (False,) * len(steps), strict=True)
    )


def unknown_schedule(text: str) -> InvalidSchedule:
    usages = [kind.usage for kind in SCHEDULES.values()]
    return InvalidSchedule(f"unknown schedule {text!r}; use {_one_of(usages)}")


def not_simulable(kind: str) -> InvalidOption:
    kinds = [name for name, cls in SCHEDULES.items() if cls.simulable]
    return InvalidOption(f"the simulator draws {_one_of(kinds)} preemptions, not {kind}")


def weibull_scale(mean_s: float, shape: float) -> float:
    """The scale that gives a Weibull of this shape the mean uptime ``mean_s`` (exponential: shape 1)."""
    return math.exp(math.log(mean_s) - math.lgamma(1 + 1 / shape))  # ln Γ: Γ itself overflows for shapes < ~0.006


def _weibull_survival(mean_s: float, shape: float) -> tuple[Survival, float, float]:
    """S(t) = exp(−(t/scale)^shape) with this mean; a single lifetime when VMs are never preempted."""
    if math.isinf(mean_s):
        return np.ones_like, math.inf, 1
    scale = weibull_scale(mean_s, shape)

    def drawn(t: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", over="ignore"):  # a scale that underflowed to 0: S = 0
            return np.exp(-((t / scale) ** shape))

    return drawn, mean_s, math.inf


def _check_rate(rate_per_hour: float) -> None:
    if not (isinstance(rate_per_hour, (int, float)) and math.isfinite(rate_per_hour) and rate_per_hour >= 0):
        raise InvalidSchedule(f"preempt rate must be a finite number ≥ 0 per hour, got {rate_per_hour}")


def _argument(text: str) -> str:
    return text.partition(":")[2]


def _positive(text: str, what: str, *, duration: bool = False) -> float:
    try:
        value = parse_duration(text, what) if duration else float(text)
    except ValueError as e:  # InvalidOption is a ValueError too
        message = str(e) if isinstance(e, InvalidOption) else f"{what} {text!r} is not a number"
        raise InvalidSchedule(message) from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidSchedule(f"{what} must be a positive finite number, got {text!r}")
    return value


def _one_of(names: Iterable[str]) -> str:
    *rest, last = names
    return f"{', '.join(rest)} or {last}" if rest else last
