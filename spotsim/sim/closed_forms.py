"""Closed forms for the checkpoint interval: Young (1974), Daly (2006), and the exact renewal model.

Notation (seconds): C checkpoint cost (blocking), M mean time between
preemptions (1/λ), R restart overhead, τ interval of work between checkpoints,
W work to do.

- Young: τ = √(2CM).
- Daly's higher-order estimate: τ = √(2CM)·[1 + ⅓√(C/2M) + (C/2M)/9] − C for C < 2M, else τ = M.
- The expected wall time of the renewal model with exponential preemptions,
  restarts only after a failure and failures possible during restarts too
  (Daly 2006, eq. 11): T(τ) = M·e^{R/M}·(e^{(τ+C)/M} − 1)·W/τ. The waste
  fraction at τ is 1 − W/T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotsim.errors import InvalidOption


@dataclass(frozen=True)
class Optimum:
    young_s: float
    daly_s: float
    exact_s: float  # the τ minimising T(τ), found numerically
    young_waste: float
    daly_waste: float
    exact_waste: float


def young_interval(c: float, m: float) -> float:
    _check(c, m)
    return math.sqrt(2 * c * m)


def daly_interval(c: float, m: float) -> float:
    _check(c, m)
    if c >= 2 * m:
        return m
    x = c / (2 * m)
    return math.sqrt(2 * c * m) * (1 + math.sqrt(x) / 3 + x / 9) - c


def expected_wall_s(tau: float, c: float, m: float, r: float = 0.0, work_s: float = 1.0) -> float:
    """T(τ) of the renewal model for ``work_s`` seconds of work (exact for exponential preemptions)."""
    _check(c, m)
    if tau <= 0:
        raise InvalidOption(f"the interval must be > 0, got {tau}")
    return m * math.exp(r / m) * math.expm1((tau + c) / m) * work_s / tau


def waste_fraction(tau: float, c: float, m: float, r: float = 0.0) -> float:
    """The share of wall time that is not useful work: 1 − W/T(τ)."""
    return 1.0 - 1.0 / expected_wall_s(tau, c, m, r)


def optimum(c: float, m: float, r: float = 0.0) -> Optimum:
    young, daly = young_interval(c, m), daly_interval(c, m)
    exact = _minimise(lambda t: expected_wall_s(t, c, m, r), lo=1e-6 * m, hi=10 * m + 10 * c)
    wastes = [waste_fraction(t, c, m, r) for t in (young, daly, exact)]
    return Optimum(young, daly, exact, *wastes)


def _minimise(f, lo: float, hi: float) -> float:
    """Golden-section search in log space (T(τ) is unimodal in τ)."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(math.exp(x1)), f(math.exp(x2))
    for _ in range(200):
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = f(math.exp(x1))
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = f(math.exp(x2))
    return math.exp((a + b) / 2)


def _check(c: float, m: float) -> None:
    if not (math.isfinite(c) and c > 0):
        raise InvalidOption(f"the checkpoint cost must be > 0 seconds, got {c}")
    if not (math.isfinite(m) and m > 0):
        raise InvalidOption(f"the mean time between preemptions must be > 0 seconds, got {m}")
