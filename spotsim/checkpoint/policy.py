"""When a periodic checkpoint is due: a policy apart from the manager that saves.

:class:`SaveInterval` decides from numbers it is given (the step just
completed, the last step saved, the seconds since that save) and reads no
clock and touches no store, so it can be tested, and reasoned about, alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SaveInterval:
    """Save every ``seconds`` of training, every ``steps`` steps, or whichever comes first.

    Args:
        seconds: wall-clock seconds between periodic saves (None: not by time).
        steps: steps between periodic saves, counted from step 0 (None: not by steps).

    With neither set no periodic save is ever due; the job still saves on a
    preemption notice and at the end.
    """

    seconds: float | None = None
    steps: int | None = None

    def __post_init__(self) -> None:
        seconds, steps = self.seconds, self.steps
        if seconds is not None and not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {seconds!r}")
        if steps is not None and not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"interval_steps must be a whole number ≥ 1, got {steps!r}")

    def should_save(self, step: int, *, last_saved_step: int | None, seconds_since_save: float) -> bool:
        """Whether a periodic checkpoint is due now that ``step`` is complete.

        Args:
            step: the step just completed.
            last_saved_step: the step of the last save (None before the first one).
            seconds_since_save: time since the last save, or since the manager
                was created when nothing was saved yet.

        A step already saved is never due again (a loop that asks twice about
        the same step saves it once).
        """
        if step == last_saved_step:
            return False
        due_by_time = self.seconds is not None and seconds_since_save >= self.seconds
        due_by_steps = self.steps is not None and step > 0 and step % self.steps == 0
        return due_by_time or due_by_steps
