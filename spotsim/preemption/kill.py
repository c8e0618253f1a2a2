"""Kill modes: whether a preemption gives the job notice (SIGTERM, then SIGKILL after the grace) or none.

One registered class per ``--kill`` name; :meth:`KillMode.parse` picks it. The
harness draws one preemption at a time (:meth:`KillMode.draw_sigkill`), the
simulator a whole array (:meth:`KillMode.noticed`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spotsim.errors import InvalidOption

_KILL_MODES: dict[str, type[KillMode]] = {}


def register_kill_mode(cls: type[KillMode]) -> type[KillMode]:
    """Make ``cls`` the kill mode named ``cls.name`` on the command line."""
    _KILL_MODES[cls.name] = cls
    return cls


class KillMode(ABC):
    """How a preemption ends an attempt; ``sigkill_fraction`` is the share that comes without notice."""

    name: ClassVar[str]
    sigkill_fraction: float

    @staticmethod
    def parse(text: str) -> KillMode:
        """``sigterm``, ``sigkill`` or ``mixed:P`` (``mixed`` alone: P = 0.5).

        Raises:
            InvalidOption: an unknown mode, or P outside [0, 1].
        """
        kind, _, arg = text.partition(":")
        mode = _KILL_MODES.get(kind)
        if mode is None:
            raise _unknown(text)
        return mode.from_arg(text, arg)

    @staticmethod
    def from_fraction(sigkill_fraction: float) -> KillMode:
        """The mode whose preemptions come without notice this often: 0 is sigterm, 1 sigkill."""
        if sigkill_fraction == 0:
            return Sigterm()
        return Sigkill() if sigkill_fraction == 1 else Mixed(sigkill_fraction)

    @classmethod
    def from_arg(cls, text: str, arg: str) -> KillMode:
        """This mode from the part of ``text`` after its name; the plain modes take none."""
        if arg:
            raise _unknown(text)
        return cls()

    @abstractmethod
    def draw_sigkill(self, rng: np.random.Generator) -> bool:
        """Whether the harness's next preemption is a SIGKILL without notice."""

    def noticed(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """For ``n`` preemptions at once, True where one gives a SIGTERM notice.

        Draws ``n`` numbers whatever the mode, even when the answer is certain, so
        that simulations differing only in kill mode see the same uptimes from one seed.
        """
        return rng.random(n) >= self.sigkill_fraction

    def __str__(self) -> str:
        return self.name


@register_kill_mode
@dataclass(frozen=True)
class Sigterm(KillMode):
    """Every preemption gives notice: SIGTERM → grace period → SIGKILL (GCP and AWS spot VMs)."""

    name = "sigterm"
    sigkill_fraction = 0.0

    def draw_sigkill(self, rng: np.random.Generator) -> bool:
        return False


@register_kill_mode
@dataclass(frozen=True)
class Sigkill(KillMode):
    """No preemption gives notice: SIGKILL at once (a host failure, a lost notice)."""

    name = "sigkill"
    sigkill_fraction = 1.0

    def draw_sigkill(self, rng: np.random.Generator) -> bool:
        return True


@register_kill_mode
@dataclass(frozen=True)
class Mixed(KillMode):
    """A share P of preemptions come without notice: ``mixed:0.25`` → SIGTERM, SIGTERM, SIGKILL, SIGTERM, …

    ``mixed:0`` and ``mixed:1`` parse as sigterm and sigkill, so equal modes compare equal.
    """

    name = "mixed"
    sigkill_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.sigkill_fraction < 1.0:
            raise InvalidOption(f"a mixed kill's SIGKILL fraction is between 0 and 1, got {self.sigkill_fraction}")

    @classmethod
    def from_arg(cls, text: str, arg: str) -> KillMode:
        try:
            fraction = float(arg) if arg else 0.5
        except ValueError:
            fraction = math.nan
        if not 0.0 <= fraction <= 1.0:
            raise InvalidOption(f"--kill mixed:P needs 0 ≤ P ≤ 1 (the SIGKILL fraction), got {arg!r}")
        return KillMode.from_fraction(fraction)

    def draw_sigkill(self, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.sigkill_fraction)

    def __str__(self) -> str:
        return f"mixed:{self.sigkill_fraction:g}"


def _unknown(text: str) -> InvalidOption:
    return InvalidOption(f"unknown --kill {text!r}; use sigterm, sigkill or mixed:P")
