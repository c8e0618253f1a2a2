"""What the checkpoint manager reports as it works, through one listener.

The manager calls a :class:`CheckpointListener` at each point of an attempt's
life, in this order::

    started(attempt, resumed_step)      once, on the first restore or save
    restored(step)                      if it resumed from a checkpoint
    step_completed(step)                as training advances (throttled by the listener)
    checkpoint_started(step, kind)      a save that holds the training loop begins
    checkpoint_finished(stats)          a save committed (before retention runs)
    checkpoint_failed(failure)          a save did not commit
    done(step)                          the job finished all its work
    closed()                            the manager is closing

:class:`RunLogListener`, the default under ``spotsim run``, writes these as the
harness contract's run-log events (``start``, ``step``, ``checkpoint_start``,
``checkpoint``, ``checkpoint_failed``, ``done``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spotsim import events
from spotsim.events import EventLog

if TYPE_CHECKING:
    from spotsim.checkpoint.manager import SaveFailure, SaveStats


class CheckpointListener:
    """Receives a checkpoint manager's telemetry; subclass it and override what you need.

    Every method here does nothing, so this class itself is the listener that reports nothing.
    """

    def started(self, attempt: int, resumed_step: int | None) -> None:
        """The attempt began: ``resumed_step`` is where it resumed from, None for a fresh start."""

    def restored(self, step: int) -> None:
        """The attempt resumed from the checkpoint at ``step``."""

    def step_completed(self, step: int, *, force: bool = False) -> None:
        """Training completed ``step``; ``force``: record it now (a save or the end follows)."""

    def checkpoint_started(self, step: int, kind: str) -> None:
        """A save that holds the training loop until it commits began."""

    def checkpoint_finished(self, stats: SaveStats) -> None:
        """A save committed."""

    def checkpoint_failed(self, failure: SaveFailure) -> None:
        """A save did not commit (skipped, or about to be raised)."""

    def done(self, step: int) -> None:
        """The job finished all its work at ``step``."""

    def closed(self) -> None:
        """The manager is closing: nothing more will be reported."""


class RunLogListener(CheckpointListener):
    """Writes the harness contract's events to a run log (``SPOTSIM_EVENTS``)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def started(self, attempt: int, resumed_step: int | None) -> None:
        self.log.emit(events.START, attempt=attempt, resumed_step=resumed_step)

    def restored(self, step: int) -> None:
        self.log.resumed(step)

    def step_completed(self, step: int, *, force: bool = False) -> None:
        self.log.step(step, force=force)

    def checkpoint_started(self, step: int, kind: str) -> None:
        self.log.emit(events.CHECKPOINT_START, step=step, kind=kind)

    def checkpoint_finished(self, stats: SaveStats) -> None:
        self.log.emit(
            events.CHECKPOINT,
            step=stats.step,
            kind=stats.kind,
            blocking_s=round(stats.blocking_s, 6),
            persist_s=round(stats.persist_s, 6),
            bytes=stats.bytes,
            retries=stats.retries,
        )

    def checkpoint_failed(self, failure: SaveFailure) -> None:
        self.log.emit(
            events.CHECKPOINT_FAILED,
            step=failure.step,
            kind=failure.kind,
            error=failure.error,
            retries=failure.retries,
            skipped=failure.skipped,
        )

    def done(self, step: int) -> None:
        self.log.emit(events.DONE, step=step)

    def closed(self) -> None:
        self.log.flush_step()
