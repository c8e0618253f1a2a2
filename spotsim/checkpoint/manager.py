"""CheckpointManager: crash-safe, optionally asynchronous checkpoints on any store.

Where a checkpoint becomes visible: :meth:`CheckpointManager._persist` uploads
the payload objects under a fresh save id, then creates the step's manifest
with ``create_if_absent``. That one call is the commit; a process killed at
any instant before it leaves nothing a restore would trust, and one killed
after it leaves a complete checkpoint.

When the bucket fails, training goes on: see :class:`CheckpointManager` for
which saves are skipped (``checkpoint_failed`` events) and which raise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from spotsim.checkpoint import tree
from spotsim.checkpoint.manifest import (
    KINDS,
    LAYOUTS,
    MANIFEST_NAME,
    Manifest,
    ObjectEntry,
    manifest_key,
    step_of,
    step_prefix,
)
from spotsim.errors import CheckpointError, CorruptCheckpoint, ObjectNotFound, SpotsimError
from spotsim.events import EventLog
from spotsim.storage import Store, open_store
from spotsim.storage.crc import crc32c_of, to_b64

log = logging.getLogger(__name__)


class Restored(NamedTuple):
    step: int
    state: Any
    metadata: dict


@dataclass(frozen=True)
class SaveStats:
    """What one save cost: ``blocking_s`` held the training loop, ``persist_s`` ran after."""

    step: int
    kind: str
    blocking_s: float
    persist_s: float
    bytes: int
    committed: bool
    retries: int = 0  # transient store failures retried during this save


@dataclass(frozen=True)
class SaveFailure:
    """A save that did not commit: ``skipped`` if training went on without it, else it was raised."""

    step: int
    kind: str
    error: str
    retries: int
    skipped: bool


class CheckpointManager:
    """Save and restore training state crash-safely under one store URI.

    Args:
        uri: ``file:///abs/dir`` or ``gs://bucket/prefix``.
        keep: how many of the newest complete checkpoints to keep (≥ 1).
        interval_s / interval_steps: when :meth:`should_save` says yes (either or both).
        async_save: snapshot in the caller, persist in a background thread.
        layout: ``"directory"`` (header + shards) or ``"archive"`` (one object).
        events: where to append contract events; default ``SPOTSIM_EVENTS`` if set.
        framework: recorded in manifests ("torch", "tensorflow", "numpy"…).
        store_options: passed to :func:`spotsim.storage.open_store`.
        save_deadline_s: how long one save may keep retrying a failing bucket, from the start
            of its persist (None: as the store's own policy allows, a minute per request).

    When the bucket fails: the store retries transient failures (429, 5xx, resets), and the
    ``checkpoint`` event counts them in ``retries``. A *periodic* save the bucket still refuses
    when ``save_deadline_s`` is up is skipped: a warning, a ``checkpoint_failed`` event (step,
    kind, error, retries, skipped) and a :attr:`failures` entry, and training goes on; the next
    periodic save tries again. A periodic save due while the previous one is still retrying is
    skipped the same way rather than waiting for it (a healthy one in flight is waited for, as
    always). Emergency, final and manual saves that fail emit ``checkpoint_failed``, then raise:
    their caller must know (an emergency save has a grace period to fit in, so the deadline
    bounds it too). Errors other than the bucket being unreachable (a refusal, a full disk)
    raise for every kind. A failed save deletes nothing: retention runs only after a commit,
    and a payload without its manifest is never restored.
    """

    def __init__(
        self,
        uri: str,
        *,
        keep: int = 3,
        interval_s: float | None = None,
        interval_steps: int | None = None,
        async_save: bool = True,
        layout: str = "directory",
        events: EventLog | str | os.PathLike[str] | None = None,
        framework: str = "unknown",
        store_options: dict | None = None,
        save_deadline_s: float | None = 30.0,
    ) -> None:
        _check_options(keep, interval_s, interval_steps, layout, save_deadline_s)
        self.save_deadline_s = save_deadline_s
        self.keep, self.interval_s, self.interval_steps = keep, interval_s, interval_steps
        self.async_save, self.layout, self.framework = async_save, layout, framework
        self.store: Store = open_store(uri, **(store_options or {}))
        self.events = EventLog(events) if isinstance(events, (str, os.PathLike)) else (events or EventLog.from_env())
        self.saves: list[SaveStats] = []
        self.failures: list[SaveFailure] = []
        self._persist_thread: threading.Thread | None = None
        self._in_flight: tuple[int, int] | None = None  # (step, store retries when it started)
        self._background_error: BaseException | None = None
        self._last_save_time = time.monotonic()
        self._last_save_step: int | None = None
        self._started = False
        self._spare_buffers: list[memoryview] = []  # the last persisted snapshot's, for the next pack

    @classmethod
    def from_env(cls, **kwargs: Any) -> CheckpointManager:
        """Configure from the harness contract: ``SPOTSIM_CHECKPOINT_URI``, ``…_INTERVAL`` (seconds),
        ``…_INTERVAL_STEPS``, ``…_KEEP`` (``spotsim verify`` keeps every checkpoint to locate a
        divergence) and ``SPOTSIM_EVENTS``; keyword arguments win over the environment."""
        uri = os.environ.get("SPOTSIM_CHECKPOINT_URI")
        if not uri:
            raise CheckpointError("SPOTSIM_CHECKPOINT_URI is not set; pass a URI or run under `spotsim run`")
        for key, variable, kind in (("interval_s", "SPOTSIM_CHECKPOINT_INTERVAL", float),
                                    ("interval_steps", "SPOTSIM_CHECKPOINT_INTERVAL_STEPS", int),
                                    ("keep", "SPOTSIM_CHECKPOINT_KEEP", int)):  # fmt: skip
            if key not in kwargs and (value := os.environ.get(variable)):
                try:
                    kwargs[key] = kind(value)
                except ValueError:
                    raise CheckpointError(f"{variable}={value!r} is not a valid {key}") from None
        return cls(uri, **kwargs)

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- when to save -------------------------------------------------------

    def should_save(self, step: int) -> bool:
        """Record ``step`` as completed and say whether a periodic checkpoint is due."""
        self._announce_start(None)
        if self.events:
            self.events.step(step)
        if step == self._last_save_step:
            return False
        due_by_time = self.interval_s is not None and time.monotonic() - self._last_save_time >= self.interval_s
        due_by_steps = self.interval_steps is not None and step > 0 and step % self.interval_steps == 0
        return due_by_time or due_by_steps

    # -- save ---------------------------------------------------------------

    def save(self, step: int, state: Any, *, kind: str = "periodic", metadata: dict | None = None) -> None:
        """Checkpoint ``state`` as of ``step``.

        With ``async_save`` only the snapshot (a copy into host memory) and any
        wait for the previous persist block the caller; an ``emergency`` or
        ``final`` save persists before returning. A background failure of an
        earlier save is raised here (or from :meth:`wait`), once; one of a bucket
        that stayed unreachable is not (see the class docstring).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        start = time.perf_counter()
        self._announce_start(None)
        synchronous = not (self.async_save and kind == "periodic")
        if self.events:
            self.events.step(step, force=True)
            if synchronous:  # the loop is held until its checkpoint event: the harness's clock runs at 1× meanwhile
                self.events.emit("checkpoint_start", step=step, kind=kind)
        if kind == "periodic" and (stuck := self._retrying_step()) is not None:
            self._last_save_time, self._last_save_step = time.monotonic(), step  # the next one is due an interval on
            self._fail(step, kind, f"the save of step {stuck} is still retrying a failing store", 0, skipped=True)
            return
        self.wait()  # at most one persist in flight; waiting for it is blocking time
        packed = tree.pack(state, archive=self.layout == "archive", recycle=self._spare_buffers)
        self._spare_buffers = []
        snapshot_s = time.perf_counter() - start
        self._last_save_time, self._last_save_step = time.monotonic(), step
        job = (step, packed, kind, dict(metadata or {}), snapshot_s)
        if not synchronous:
            self._persist_thread = threading.Thread(
                target=self._persist_in_background, args=job, name=f"spotsim-persist-{step}", daemon=True
            )
            self._in_flight = (step, self._store_retries())
            self._persist_thread.start()
        else:
            self._persist(*job, blocking_started=start)

    def wait(self) -> None:
        """Block until the in-flight persist ends; re-raise its error, once."""
        if self._persist_thread is not None:
            self._persist_thread.join()
            self._persist_thread = self._in_flight = None
        if self._background_error is not None:
            error, self._background_error = self._background_error, None
            raise CheckpointError(f"a background checkpoint save failed: {error}") from error

    def close(self) -> None:
        """Finish the in-flight persist, write the last step event, release the store."""
        try:
            self.wait()
        finally:
            if self.events:
                self.events.flush_step()
            self.store.close()

    def mark_done(self, step: int) -> None:
        """Tell the harness the job finished all its work (the contract's ``done`` event).

        Waits for the in-flight persist first, so ``done`` is the run's last event.
        """
        self.wait()
        if self.events:
            self.events.step(step, force=True)
            self.events.emit("done", step=step)

    def _announce_start(self, resumed_step: int | None) -> None:
        """The contract's ``start`` event, once per process: on the first restore or save."""
        if self._started:
            return
        self._started = True
        if self.events:
            attempt = int(os.environ.get("SPOTSIM_ATTEMPT", "0") or 0)
            self.events.emit("start", attempt=attempt, resumed_step=resumed_step)
            if resumed_step is not None:
                self.events.resumed(resumed_step)

    def _persist_in_background(self, *job: Any) -> None:
        try:
            self._persist(*job, blocking_started=None)
        except BaseException as e:  # kept for wait(); a thread cannot raise to the caller
            log.error("background checkpoint save of step %d failed: %s", job[0], e)
            self._background_error = e

    def _persist(
        self, step: int, packed: tree.Packed, kind: str, metadata: dict, snapshot_s: float, *, blocking_started
    ) -> None:
        retries_before = self._store_retries()
        try:
            with self._retry_deadline():
                self._upload_and_commit(step, packed, kind, metadata, snapshot_s, blocking_started, retries_before)
        except Exception as e:
            skipped = kind == "periodic" and isinstance(e, (ConnectionError, TimeoutError))  # unreachable, retried
            self._fail(step, kind, str(e), self._store_retries() - retries_before, skipped=skipped)
            if not skipped:
                raise
        finally:
            self._spare_buffers = packed.buffers()  # persisted or failed: the next snapshot may refill them

    def _fail(self, step: int, kind: str, error: str, retries: int, *, skipped: bool) -> None:
        """Record a save that did not commit: a warning, a ``checkpoint_failed`` event, a :attr:`failures` entry."""
        error = " ".join(error.split())[:300]
        self.failures.append(SaveFailure(step, kind, error, retries, skipped))
        then = "; training goes on without it" if skipped else ""
        log.warning("checkpoint of step %d (%s) failed after %d retries%s: %s", step, kind, retries, then, error)
        if self.events:
            self.events.emit("checkpoint_failed", step=step, kind=kind, error=error, retries=retries, skipped=skipped)

    def _store_retries(self) -> int:
        return getattr(self.store, "retries", 0)  # stores that retry (gs://) count; a local disk does not retry

    def _retrying_step(self) -> int | None:
        """The step of the persist in flight if it has met transient failures since it started."""
        if self._in_flight is None or self._persist_thread is None or not self._persist_thread.is_alive():
            return None
        step, retries_at_start = self._in_flight
        return step if self._store_retries() > retries_at_start else None

    def _retry_deadline(self) -> contextlib.AbstractContextManager:
        """Bound a save's retrying by ``save_deadline_s`` on stores that retry."""
        deadline = getattr(self.store, "deadline", None)
        if self.save_deadline_s is None or deadline is None:
            return contextlib.nullcontext()
        return deadline(self.save_deadline_s)

    def _upload_and_commit(
        self,
        step: int,
        packed: tree.Packed,
        kind: str,
        metadata: dict,
        snapshot_s: float,
        blocking_started: float | None,
        retries_before: int,
    ) -> None:
        start = time.perf_counter()
        if self.store.exists(manifest_key(step)):
            log.info("step %d is already checkpointed; not saving it again", step)
            self.saves.append(SaveStats(step, kind, self._blocking(blocking_started, snapshot_s), 0.0, 0, False))
            return
        save_id = uuid.uuid4().hex[:12]
        entries = {}
        for name, data in packed.objects.items():
            self.store.put_bytes(f"{step_prefix(step)}{save_id}/{name}", data)
            entries[f"{save_id}/{name}"] = ObjectEntry(len(data), to_b64(crc32c_of(data)))
        manifest = Manifest(
            step=step, kind=kind, created=time.time(), framework=self.framework, layout=self.layout,
            spotsim_version=_version(), objects=entries, metadata=metadata,
        )  # fmt: skip
        committed = self.store.create_if_absent(manifest_key(step), manifest.to_json())  # the commit point
        if not committed:
            log.warning("another save committed step %d first; discarding this one", step)
        persisted = time.perf_counter()
        at_commit = SaveStats(
            step, kind, self._blocking(blocking_started, snapshot_s), persisted - start, packed.nbytes, committed,
            self._store_retries() - retries_before,
        )  # fmt: skip
        self._emit_checkpoint(at_commit)  # now: a kill during retention must not hide this commit from the harness
        try:
            self._collect_garbage()
        except (SpotsimError, OSError) as e:  # the step is committed all the same; the next save's retention catches up
            log.warning("retention after step %d failed, to be retried after the next save: %s", step, e)
        # A synchronous save held the caller through retention too.
        self.saves.append(replace(at_commit, blocking_s=self._blocking(blocking_started, snapshot_s)))

    @staticmethod
    def _blocking(blocking_started: float | None, snapshot_s: float) -> float:
        return time.perf_counter() - blocking_started if blocking_started is not None else snapshot_s

    def _emit_checkpoint(self, stats: SaveStats) -> None:
        if self.events and stats.committed:
            self.events.emit(
                "checkpoint", step=stats.step, kind=stats.kind, blocking_s=round(stats.blocking_s, 6),
                persist_s=round(stats.persist_s, 6), bytes=stats.bytes, retries=stats.retries,
            )  # fmt: skip

    # -- restore ------------------------------------------------------------

    def steps(self) -> list[int]:
        """Steps that have a committed manifest, oldest first (payloads not yet verified)."""
        return sorted(
            {s for k in self.store.list("step-") if (s := step_of(k)) is not None and k.endswith(MANIFEST_NAME)}
        )

    def restore_latest(self) -> Restored | None:
        """Restore the newest checkpoint that verifies, falling back past broken ones.

        Returns:
            (step, state, metadata), or None when no usable checkpoint exists.
        """
        self.wait()
        for step in reversed(self.steps()):
            try:
                restored = self.restore(step)
            except (CorruptCheckpoint, ObjectNotFound) as e:
                log.warning("checkpoint at step %d is unusable (%s); falling back to the previous one", step, e)
                continue
            self._announce_start(step)
            return restored
        self._announce_start(None)
        return None

    def restore(self, step: int) -> Restored:
        """Restore the checkpoint at ``step``, verifying every object against its manifest."""
        manifest = Manifest.parse(self.store.get_bytes(manifest_key(step)), expected_step=step)
        objects = {}
        for name, entry in manifest.objects.items():
            data = self.store.get_buffer(step_prefix(step) + name)
            if len(data) != entry.size or to_b64(crc32c_of(data)) != entry.crc32c:
                raise CorruptCheckpoint(f"object {name} of step {step} fails its size or crc32c check")
            objects[name.split("/", 1)[1]] = data
        return Restored(step, tree.unpack(objects), manifest.metadata)

    # -- retention ----------------------------------------------------------

    def _collect_garbage(self) -> None:
        """Keep the ``keep`` newest committed checkpoints; drop older ones and orphaned payloads.

        Runs after a commit, so the newest complete checkpoint is never removed
        before a newer one is complete. A manifest is deleted before its payload,
        so a checkpoint disappears atomically.
        """
        keys = self.store.list("step-")
        committed = sorted({s for k in keys if k.endswith(MANIFEST_NAME) and (s := step_of(k)) is not None})
        doomed = set(committed[: -self.keep])
        for step in sorted(doomed):
            self.store.delete(manifest_key(step), missing_ok=True)
        referenced = self._referenced_objects(set(committed) - doomed)
        for key in keys:
            if not key.endswith(MANIFEST_NAME) and key not in referenced:
                self.store.delete(key, missing_ok=True)
        self.store.clean_partial_writes()

    def _referenced_objects(self, steps: set[int]) -> set[str]:
        referenced = set()
        for step in steps:
            try:
                manifest = Manifest.parse(self.store.get_bytes(manifest_key(step)), expected_step=step)
            except (CorruptCheckpoint, ObjectNotFound):
                continue  # its payload is unusable anyway; restore will skip it
            referenced |= {step_prefix(step) + name for name in manifest.objects}
        return referenced


def _check_options(
    keep: int, interval_s: float | None, interval_steps: int | None, layout: str, save_deadline_s: float | None = None
) -> None:
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number ≥ 1, got {keep!r}")
    if interval_s is not None and not (
        isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0
    ):
        raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
    if interval_steps is not None and not (isinstance(interval_steps, int) and interval_steps >= 1):
        raise ValueError(f"interval_steps must be a whole number ≥ 1, got {interval_steps!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if save_deadline_s is not None and not (
        isinstance(save_deadline_s, (int, float)) and math.isfinite(save_deadline_s) and save_deadline_s >= 0
    ):
        raise ValueError(f"save_deadline_s must be a number of seconds ≥ 0 or None, got {save_deadline_s!r}")


def _version() -> str:
    from spotsim import __version__

    return __version__
