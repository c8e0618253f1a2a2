"""CheckpointManager: crash-safe, optionally asynchronous checkpoints on any store.

Where a checkpoint becomes visible: :meth:`CheckpointManager._persist` uploads
the payload objects under a fresh save id, then creates the step's manifest
with ``create_if_absent``. That one call is the commit; a process killed at
any instant before it leaves nothing a restore would trust, and one killed
after it leaves a complete checkpoint.
"""

from __future__ import annotations

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
from spotsim.errors import CheckpointError, CorruptCheckpoint, ObjectNotFound
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
    ) -> None:
        _check_options(keep, interval_s, interval_steps, layout)
        self.keep, self.interval_s, self.interval_steps = keep, interval_s, interval_steps
        self.async_save, self.layout, self.framework = async_save, layout, framework
        self.store: Store = open_store(uri, **(store_options or {}))
        self.events = EventLog(events) if isinstance(events, (str, os.PathLike)) else (events or EventLog.from_env())
        self.saves: list[SaveStats] = []
        self._persist_thread: threading.Thread | None = None
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
        earlier save is raised here (or from :meth:`wait`), once.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        start = time.perf_counter()
        self._announce_start(None)
        if self.events:
            self.events.step(step, force=True)
        self.wait()  # at most one persist in flight; waiting for it is blocking time
        packed = tree.pack(state, archive=self.layout == "archive", recycle=self._spare_buffers)
        self._spare_buffers = []
        snapshot_s = time.perf_counter() - start
        self._last_save_time, self._last_save_step = time.monotonic(), step
        job = (step, packed, kind, dict(metadata or {}), snapshot_s)
        if self.async_save and kind == "periodic":
            self._persist_thread = threading.Thread(
                target=self._persist_in_background, args=job, name=f"spotsim-persist-{step}", daemon=True
            )
            self._persist_thread.start()
        else:
            self._persist(*job, blocking_started=start)

    def wait(self) -> None:
        """Block until the in-flight persist ends; re-raise its error, once."""
        if self._persist_thread is not None:
            self._persist_thread.join()
            self._persist_thread = None
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
        try:
            self._upload_and_commit(step, packed, kind, metadata, snapshot_s, blocking_started)
        finally:
            self._spare_buffers = packed.buffers()  # persisted or failed: the next snapshot may refill them

    def _upload_and_commit(
        self, step: int, packed: tree.Packed, kind: str, metadata: dict, snapshot_s: float, blocking_started
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
            step, kind, self._blocking(blocking_started, snapshot_s), persisted - start, packed.nbytes, committed
        )
        self._emit_checkpoint(at_commit)  # now: a kill during retention must not hide this commit from the harness
        self._collect_garbage()
        # A synchronous save held the caller through retention too.
        self.saves.append(replace(at_commit, blocking_s=self._blocking(blocking_started, snapshot_s)))

    @staticmethod
    def _blocking(blocking_started: float | None, snapshot_s: float) -> float:
        return time.perf_counter() - blocking_started if blocking_started is not None else snapshot_s

    def _emit_checkpoint(self, stats: SaveStats) -> None:
        if self.events and stats.committed:
            self.events.emit(
                "checkpoint", step=stats.step, kind=stats.kind, blocking_s=round(stats.blocking_s, 6),
                persist_s=round(stats.persist_s, 6), bytes=stats.bytes,
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


def _check_options(keep: int, interval_s: float | None, interval_steps: int | None, layout: str) -> None:
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


def _version() -> str:
    from spotsim import __version__

    return __version__
