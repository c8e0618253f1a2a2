"""Preemption schedules: when, in simulated seconds of an attempt's uptime, the VM is taken away.

A schedule answers one question per attempt: how long does this VM live?
(``None``: it is never preempted.) Every schedule draws from the harness's
seeded generator, so a run is reproducible from ``--seed``.

- ``poisson``: exponential uptimes with mean 1/λ (λ per hour of uptime).
- ``weibull:SHAPE``: Weibull uptimes with the same mean 1/λ; SHAPE < 1 means
  young VMs are preempted more often, > 1 that old ones are.
- ``fixed:T1,T2,…``: attempt i is preempted T(i+1) seconds after its launch;
  attempts past the list are never preempted.
- ``trace:FILE``: replay a recorded spot trace (see :mod:`spotsim.harness.trace`):
  attempt i lives as long as the i-th run of availability, and waits for the
  gap of unavailability after it before the next VM exists.
- ``steps:N1,N2,…``: attempt i is preempted as soon as it reports step N(i+1)
  (or its first step after the resume, if it resumed past it). ``N:save``
  instead waits, from step N on, for the first write of a save to the
  checkpoint location and preempts the attempt while that write is in flight
  (:mod:`spotsim.harness.save_watch`). This is how ``spotsim verify`` places kills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spotsim.errors import InvalidSchedule
from spotsim.harness.trace import Trace, load_trace


@dataclass(frozen=True)
class Lifetime:
    """One attempt's VM: its uptime before preemption (None: never) and the capacity wait after it."""

    uptime_s: float | None
    capacity_wait_s: float = 0.0
    at_step: int | None = None
    in_save: bool = False  # preempt inside the first save that starts from ``at_step`` on


@dataclass
class Schedule:
    """A parsed ``--schedule`` with its rate; :meth:`lifetime` draws attempt after attempt."""

    kind: str
    rate_per_hour: float
    shape: float = 1.0
    times_s: tuple[float, ...] = ()
    steps: tuple[int, ...] = ()
    in_save: tuple[bool, ...] = ()  # per entry of ``steps``
    trace: Trace | None = None
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)

    def seed(self, seed: int) -> Schedule:
        if seed < 0:
            raise InvalidSchedule(f"--seed must be ≥ 0, got {seed}")
        self._rng = np.random.default_rng(seed)
        return self

    def describe(self) -> str:
        if self.kind == "fixed":
            return "fixed:" + ",".join(f"{t:g}" for t in self.times_s)
        if self.kind == "steps":
            return "steps:" + format_kill_points(self.steps, self.in_save)
        if self.kind == "trace":
            return f"trace:{self.trace.source}"
        rate = f" at {self.rate_per_hour:g}/h"
        return (f"weibull:{self.shape:g}" if self.kind == "weibull" else "poisson") + rate

    def lifetime(self, attempt: int) -> Lifetime:
        if self.kind == "fixed":
            return Lifetime(self.times_s[attempt] if attempt < len(self.times_s) else None)
        if self.kind == "steps":
            if attempt >= len(self.steps):
                return Lifetime(None)
            return Lifetime(None, at_step=self.steps[attempt], in_save=bool(self.in_save and self.in_save[attempt]))
        if self.kind == "trace":
            runs = self.trace.lifetimes()
            if attempt >= len(runs):
                return Lifetime(None)
            return Lifetime(*runs[attempt])
        if self.rate_per_hour == 0:
            return Lifetime(None)
        mean_s = 3600.0 / self.rate_per_hour
        if self.kind == "poisson":
            return Lifetime(float(self._rng.exponential(mean_s)))
        # so the mean uptime is 1/λ whatever the shape; ln Γ, as Γ itself overflows for shapes below ~0.006
        scale = math.exp(math.log(mean_s) - math.lgamma(1 + 1 / self.shape))
        return Lifetime(float(scale * self._rng.weibull(self.shape)))


def parse_schedule(text: str, rate_per_hour: float, *, trace_invert: bool = False) -> Schedule:
    """Parse ``poisson``, ``weibull:SHAPE``, ``fixed:T1,T2,…`` or ``trace:FILE``.

    Raises:
        InvalidSchedule: unknown kind or a bad parameter.
        InvalidTrace: the trace file cannot be read or is malformed.
    """
    if not (isinstance(rate_per_hour, (int, float)) and math.isfinite(rate_per_hour) and rate_per_hour >= 0):
        raise InvalidSchedule(f"preempt rate must be a finite number ≥ 0 per hour, got {rate_per_hour}")
    kind, _, arg = text.partition(":")
    if kind == "poisson" and not arg:
        return Schedule("poisson", rate_per_hour)
    if kind == "weibull":
        shape = _positive(arg, "weibull shape")
        return Schedule("weibull", rate_per_hour, shape=shape)
    if kind == "fixed":
        times = tuple(_positive(t, "fixed preemption time", allow_duration=True) for t in arg.split(","))
        return Schedule("fixed", rate_per_hour, times_s=times)
    if kind == "steps":
        steps, in_save = parse_kill_points(arg)
        return Schedule("steps", rate_per_hour, steps=steps, in_save=in_save)
    if kind == "trace" and arg:
        return Schedule("trace", rate_per_hour, trace=load_trace(arg, invert=trace_invert))
    raise InvalidSchedule(
        f"unknown schedule {text!r}; use poisson, weibull:SHAPE, fixed:T1,T2,…, steps:N1,N2,… or trace:FILE"
    )


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
    return ",".join(f"{n}:save" if saved else str(n) for n, saved in zip(steps, in_save or (False,) * len(steps)))


def parse_duration(text: str, what: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m`` or ``2h``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip()
    factor = units.get(text[-1:], None)
    number = text[:-1] if factor else text
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise InvalidSchedule(f"{what} {text!r} is not a duration (e.g. 90, 90s, 15m, 2h)") from None
    if not math.isfinite(value):
        raise InvalidSchedule(f"{what} {text!r} is not finite")
    return value


def _positive(text: str, what: str, *, allow_duration: bool = False) -> float:
    if allow_duration:
        value = parse_duration(text, what)
    else:
        try:
            value = float(text)
        except ValueError:
            raise InvalidSchedule(f"{what} {text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidSchedule(f"{what} must be a positive finite number, got {text!r}")
    return value
