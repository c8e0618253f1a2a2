"""The settings of one live run, validated once, before anything starts."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotsim.errors import InvalidOption
from spotsim.harness.schedule import Schedule

KILL_MODES = ("sigterm", "sigkill", "mixed")
LOCAL_DISK_MODES = ("wipe", "keep")


@dataclass(frozen=True)
class KillMode:
    """How a preemption ends an attempt: SIGTERM then SIGKILL after the grace, or SIGKILL at once.

    ``mixed:P`` sends SIGKILL without notice to a fraction P of preemptions.
    """

    sigkill_fraction: float

    @classmethod
    def parse(cls, text: str) -> KillMode:
        kind, _, arg = text.partition(":")
        if kind == "sigterm" and not arg:
            return cls(0.0)
        if kind == "sigkill" and not arg:
            return cls(1.0)
        if kind == "mixed":
            try:
                fraction = float(arg) if arg else 0.5
            except ValueError:
                fraction = math.nan
            if 0.0 <= fraction <= 1.0:
                return cls(fraction)
            raise InvalidOption(f"--kill mixed:P needs 0 ≤ P ≤ 1 (the SIGKILL fraction), got {arg!r}")
        raise InvalidOption(f"unknown --kill {text!r}; use sigterm, sigkill or mixed:P")

    def draw_sigkill(self, rng: np.random.Generator) -> bool:
        return self.sigkill_fraction >= 1.0 or (self.sigkill_fraction > 0.0 and rng.random() < self.sigkill_fraction)

    def __str__(self) -> str:
        return {0.0: "sigterm", 1.0: "sigkill"}.get(self.sigkill_fraction, f"mixed:{self.sigkill_fraction:g}")


@dataclass(frozen=True)
class RunConfig:
    """One ``spotsim run``. Durations are simulated seconds; ``time_scale`` K maps them to real ones."""

    command: tuple[str, ...]
    out: Path
    schedule: Schedule
    interval_s: float | None = None
    interval_steps: int | None = None
    kill: KillMode = KillMode(0.0)
    grace_s: float = 30.0
    restart_delay_s: float = 0.0
    time_scale: float = 1.0
    seed: int = 0
    max_preemptions: int | None = None
    max_crashes: int = 3
    attempt_timeout_s: float | None = None  # an attempt running longer is stopped and counted as a crash
    local_disk: str = "wipe"  # the VM's local disk between attempts: wiped (a new VM) or kept (a stopped one)
    step_event_interval_s: float = 0.05  # real seconds; lost work is measured to within this

    def __post_init__(self) -> None:
        if not self.command:
            raise InvalidOption("no training command: give --workload NAME or -- CMD ARGS…")

        if self.interval_s is None and self.interval_steps is None:
            raise InvalidOption("give a checkpoint interval: --interval SECONDS and/or --interval-steps N")
        _check(
            self.interval_s is None or _positive(self.interval_s),
            f"--interval must be > 0 seconds, got {self.interval_s}",
        )
        _check(
            self.interval_steps is None or self.interval_steps >= 1,
            f"--interval-steps must be ≥ 1, got {self.interval_steps}",
        )
        _check(_positive(self.grace_s) or self.grace_s == 0, f"--grace must be ≥ 0 seconds, got {self.grace_s}")
        _check(
            _positive(self.restart_delay_s) or self.restart_delay_s == 0,
            f"--restart-delay must be ≥ 0, got {self.restart_delay_s}",
        )
        _check(_positive(self.time_scale), f"--time-scale must be > 0, got {self.time_scale}")
        _check(self.max_preemptions is None or self.max_preemptions >= 0, "--max-preemptions must be ≥ 0")
        _check(self.max_crashes >= 1, f"--max-crashes must be ≥ 1, got {self.max_crashes}")
        _check(self.seed >= 0, f"--seed must be ≥ 0, got {self.seed}")
        _check(
            self.attempt_timeout_s is None or _positive(self.attempt_timeout_s),
            f"--attempt-timeout must be > 0, got {self.attempt_timeout_s}",
        )
        _check(self.local_disk in LOCAL_DISK_MODES, f"--local-disk must be wipe or keep, got {self.local_disk!r}")

    @property
    def real_interval_s(self) -> float | None:
        return None if self.interval_s is None else self.interval_s / self.time_scale


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidOption(message)


def check_command(command: tuple[str, ...]) -> None:
    """The command must exist and be executable here, before any attempt is counted."""
    if shutil.which(command[0]) is None:
        raise InvalidOption(f"command not found or not executable: {command[0]}")
