"""Closed forms for the checkpoint interval: Young (1974), Daly (2006), and the exact renewal model.

Notation (seconds): C checkpoint cost (blocking), M mean time between
preemptions (1/λ), R restart overhead, τ interval of work between checkpoints,
W work to do.

- Young: τ = √(2CM).
- Daly's higher-order estimate: τ = √(2CM)·[1 + ⅓√(C/2M) + (C/2M)/9] − C for C < 2M, else τ = M.
- The expected wall time of the renewal model with exponential preemptions,
  restarts only after a failure and failures possible during restarts too
  (Daly 2006, eq. 11): T(τ) = M·e^{R/M}·(e^{(τ+C)/M} − 1)·W/τ. The waste
  fraction at τ is 1 − W/T. T is computed through ln T, because e^{(τ+C)/M}
  overflows a float as soon as C or R is a few hundred times M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotsim.errors import InvalidOption

# At the best interval, an expected wall time this many times the work means the
# job never finishes in practice (waste > 99.9999 %): no interval is worth printing.
HOPELESS_WALL_OVER_WORK = 1e6


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


def log_expected_wall(tau: float, c: float, m: float, r: float = 0.0, work_s: float = 1.0) -> float:
    """ln T(τ): finite where T itself overflows a float."""
    _check(c, m)
    if not tau > 0:
        raise InvalidOption(f"the interval must be > 0, got {tau}")
    x = (tau + c) / m
    log_expm1 = x + math.log1p(-math.exp(-x)) if x > 1 else math.log(math.expm1(x))  # ln(e^x − 1)
    return math.log(m) + r / m + log_expm1 + math.log(work_s / tau)


def expected_wall_s(tau: float, c: float, m: float, r: float = 0.0, work_s: float = 1.0) -> float:
    """T(τ) of the renewal model for ``work_s`` seconds of work (exact for exponential preemptions), or inf."""
    log_t = log_expected_wall(tau, c, m, r, work_s)
    return math.exp(log_t) if log_t < 709 else math.inf


def waste_fraction(tau: float, c: float, m: float, r: float = 0.0) -> float:
    """The share of wall time that is not useful work: 1 − W/T(τ)."""
    return -math.expm1(-log_expected_wall(tau, c, m, r))


def optimum(c: float, m: float, r: float = 0.0) -> Optimum:
    """Young's, Daly's and the exact interval, with the waste of each.

    Raises:
        InvalidOption: even the best interval leaves the job practically never
            finishing (C or R far beyond M): a table of ~100 % wastes would hide that.
    """
    young, daly = young_interval(c, m), daly_interval(c, m)
    # The optimum lies below both √(2CM) and M (for C ≪ M it is just under √(2CM)).
    exact = _minimise(lambda t: log_expected_wall(t, c, m, r), lo=1e-3 * min(young, m), hi=10 * m + 10 * c)
    log10_ratio = log_expected_wall(exact, c, m, r) / math.log(10)
    if not log10_ratio < math.log10(HOPELESS_WALL_OVER_WORK):
        times = f"about 10^{log10_ratio:.0f}" if log10_ratio < 1e4 else "more than 10^10000"
        raise InvalidOption(
            f"no checkpoint interval lets this job finish: with C = {c:g} s and R = {r:g} s against a mean time "
            f"between preemptions M = {m:g} s, even the best interval ({exact:.3g} s) expects a wall time {times} "
            "times the work; C and R must be well below M"
        )
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
