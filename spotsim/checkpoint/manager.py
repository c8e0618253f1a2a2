"""CheckpointManager: crash-safe, optionally asynchronous checkpoints on any store.

Where a checkpoint becomes visible: :meth:`CheckpointManager._upload_and_commit`
uploads the payload objects under a fresh save id, then creates the step's
manifest with ``create_if_absent``. That one call is the commit; a process
killed at any instant before it leaves nothing a restore would trust, and one
killed after it leaves a complete checkpoint.

When to save is :class:`~spotsim.checkpoint.policy.SaveInterval`'s decision;
what happened is reported to one :class:`~spotsim.checkpoint.telemetry.CheckpointListener`.

When the bucket fails, training goes on: see :class:`CheckpointManager` for
which saves are skipped (``checkpoint_failed`` events) and which raise.

With ``collective=`` the ranks of a data-parallel job save together: each
uploads its share of the objects and a marker, and rank 0 commits the one
manifest once every marker is there (:mod:`spotsim.checkpoint.distributed`).
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

from spotsim.checkpoint import distributed, tree
from spotsim.checkpoint.distributed import Collective, ShardMarker
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
from spotsim.checkpoint.policy import SaveInterval
from spotsim.checkpoint.telemetry import CheckpointListener, RunLogListener
from spotsim.errors import CheckpointError, CorruptCheckpoint, ObjectNotFound, SpotsimError
from spotsim.events import EventLog
from spotsim.storage import Store, open_store
from spotsim.storage.crc import crc32c_of, to_b64
from spotsim.version import __version__

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
    committed: bool  # on ranks other than 0 of a distributed save: False, as rank 0 commits
    retries: int = 0  # transient store failures retried during this save


@dataclass(frozen=True)
class SaveFailure:
    """A save that did not commit: ``skipped`` if training went on without it, else it was raised."""

    step: int
    kind: str
    error: str
    retries: int
    skipped: bool


@dataclass(frozen=True)
class _PendingSave:
    """A snapshot taken by :meth:`CheckpointManager.save`, to be persisted and committed."""

    step: int
    kind: str
    save_id: str  # names this save's objects; agreed by every rank of a distributed save
    packed: tree.Packed
    metadata: dict
    snapshot_s: float  # the time the snapshot held the caller
    blocking_started: float | None  # perf_counter when the caller began waiting for the commit; None: it does not
    retries_before: int  # the store's retry count when the persist began

    def blocking_s(self) -> float:
        """How long the caller has been held: until now if it waits for the commit, else the snapshot."""
        return time.perf_counter() - self.blocking_started if self.blocking_started is not None else self.snapshot_s


class CheckpointManager:
    """Save and restore training state crash-safely under one store URI.

    Args:
        uri: ``file:///abs/dir`` or ``gs://bucket/prefix``.
        keep: how many of the newest complete checkpoints to keep (≥ 1).
        interval_s / interval_steps: when :meth:`should_save` says yes (either or both).
        async_save: snapshot in the caller, persist in a background thread.
        layout: ``"directory"`` (header + shards) or ``"archive"`` (one object).
        events: where to append contract events; default ``SPOTSIM_EVENTS`` if set.
        listener: who hears what the manager does (default: a :class:`RunLogListener` on
            ``events``, or nothing when there is no run log).
        framework: recorded in manifests ("torch", "tensorflow", "numpy"…).
        store_options: passed to :func:`spotsim.storage.open_store`.
        save_deadline_s: how long one save may keep retrying a failing bucket, from the start
            of its persist (None: as the store's own policy allows, a minute per request).
        collective: the ranks of a data-parallel job, to save together (see below); None: one process.
        commit_timeout_s: distributed only: how long rank 0 waits, once its own objects are
            uploaded, for the other ranks' markers before the save fails.

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

    Distributed mode (``collective``), for jobs whose state is the same on every rank (DDP):
    every rank calls :meth:`save` at the same step and snapshots the full state; the ranks
    agree on a save id (in :meth:`save`, the caller's thread), each uploads its share of the
    objects and, other than rank 0, a marker; rank 0 polls the store for the markers for up
    to ``commit_timeout_s``, then commits, or fails the save as above (a
    :class:`~spotsim.checkpoint.distributed.ShardsNotDurable` naming the missing ranks).
    Only rank 0 reports to the run log (other ranks' default listener is silent) and runs
    retention. A save in flight is always waited for, never skipped (skipping on one rank
    alone would break the collective). Every rank restores the full state, so a checkpoint
    restores at any world size; the restored metadata holds the ``world_size`` it was
    written at.
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
        listener: CheckpointListener | None = None,
        collective: Collective | None = None,
        commit_timeout_s: float = 30.0,
    ) -> None:
        _check_options(keep, layout, save_deadline_s)
        _check_collective(collective, commit_timeout_s)
        self.interval = SaveInterval(seconds=interval_s, steps=interval_steps)
        self.save_deadline_s = save_deadline_s
        self.keep = keep
        self.async_save = async_save
        self.layout = layout
        self.framework = framework
        self.store: Store = open_store(uri, **(store_options or {}))
        self.collective = collective
        self.commit_timeout_s = commit_timeout_s
        self._commits = collective is None or collective.rank == 0  # and so reports, and runs retention
        if listener is None:
            listener = _default_listener(events) if self._commits else CheckpointListener()
        self.listener = listener
        self.saves: list[SaveStats] = []
        self.failures: list[SaveFailure] = []
        self._persist_thread: threading.Thread | None = None
        self._in_flight: _PendingSave | None = None  # the save the persist thread is working on
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
        for key, variable, kind in _ENV_OPTIONS:
            if key not in kwargs and (text := os.environ.get(variable)):
                kwargs[key] = _positive_from_env(variable, text, kind, key)
        return cls(uri, **kwargs)

    @property
    def interval_s(self) -> float | None:
        return self.interval.seconds

    @property
    def interval_steps(self) -> int | None:
        return self.interval.steps

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- when to save -------------------------------------------------------

    def should_save(self, step: int) -> bool:
        """Record ``step`` as completed and say whether a periodic checkpoint is due (see :attr:`interval`)."""
        self._announce_start(None)
        self.listener.step_completed(step)
        since_save = time.monotonic() - self._last_save_time
        return self.interval.should_save(step, last_saved_step=self._last_save_step, seconds_since_save=since_save)

    # -- save ---------------------------------------------------------------

    def save(
        self,
        step: int,
        state: tree.TrainingState | Any,
        *,
        kind: str = "periodic",
        metadata: dict | None = None,
    ) -> None:
        """Checkpoint ``state`` as of ``step``.

        ``state`` is a state tree (see :mod:`spotsim.checkpoint.tree`) or a
        :class:`~spotsim.checkpoint.tree.TrainingState`, whose ``state_dict()``
        is taken here. With ``async_save`` only the snapshot (a copy into host
        memory) and any wait for the previous persist block the caller; an
        ``emergency`` or ``final`` save persists before returning. A background
        failure of an earlier save is raised here (or from :meth:`wait`), once;
        one of a bucket that stayed unreachable is not (see the class docstring).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        start = time.perf_counter()
        self._announce_start(None)
        synchronous = not (self.async_save and kind == "periodic")
        self.listener.step_completed(step, force=True)
        if synchronous:  # the loop is held until its checkpoint event: the harness's clock runs at 1× meanwhile
            self.listener.checkpoint_started(step, kind)
        if kind == "periodic" and self.collective is None and (stuck := self._retrying_step()) is not None:
            self._last_save_time, self._last_save_step = time.monotonic(), step  # the next one is due an interval on
            self._fail(step, kind, f"the save of step {stuck} is still retrying a failing store", 0, skipped=True)
            return
        self.wait()  # at most one persist in flight; waiting for it is blocking time
        save_id = self._agree_save_id()
        if isinstance(state, tree.TrainingState):
            state = state.state_dict()
        packed = tree.pack(state, archive=self.layout == "archive", recycle=self._spare_buffers)
        self._spare_buffers = []
        snapshot_s = time.perf_counter() - start
        self._last_save_time, self._last_save_step = time.monotonic(), step
        pending = _PendingSave(
            step=step,
            kind=kind,
            save_id=save_id,
            packed=packed,
            metadata=dict(metadata or {}),
            snapshot_s=snapshot_s,
            blocking_started=start if synchronous else None,
            retries_before=self._store_retries(),
        )
        if synchronous:
            self._persist(pending)
            return
        self._persist_thread = threading.Thread(
            target=self._persist_in_background, args=(pending,), name=f"spotsim-persist-{step}", daemon=True
        )
        self._in_flight = pending
        self._persist_thread.start()

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
            self.listener.closed()
            self.store.close()

    def mark_done(self, step: int) -> None:
        """Tell the harness the job finished all its work (the contract's ``done`` event).

        Waits for the in-flight persist first, so ``done`` is the run's last event.
        """
        self.wait()
        self.listener.step_completed(step, force=True)
        self.listener.done(step)

    def _agree_save_id(self) -> str:
        """A fresh save id; in distributed mode rank 0's, broadcast here, never from the persist thread."""
        save_id = uuid.uuid4().hex[:12]
        if self.collective is None:
            return save_id
        return distributed.check_save_id(self.collective.broadcast_save_id(save_id))

    def _announce_start(self, resumed_step: int | None) -> None:
        """The contract's ``start`` event, once per process: on the first restore or save."""
        if self._started:
            return
        self._started = True
        attempt = int(os.environ.get("SPOTSIM_ATTEMPT", "0") or 0)
        self.listener.started(attempt, resumed_step)
        if resumed_step is not None:
            self.listener.restored(resumed_step)

    def _persist_in_background(self, pending: _PendingSave) -> None:
        try:
            self._persist(pending)
        except BaseException as e:  # kept for wait(); a thread cannot raise to the caller
            log.error("background checkpoint save of step %d failed: %s", pending.step, e)
            self._background_error = e

    def _persist(self, pending: _PendingSave) -> None:
        try:
            with self._retry_deadline():
                self._upload_and_commit(pending)
        except Exception as e:
            # Unreachable after the store's retries: a periodic save is skipped, training goes on.
            skipped = pending.kind == "periodic" and isinstance(e, (ConnectionError, TimeoutError))
            retries = self._store_retries() - pending.retries_before
            self._fail(pending.step, pending.kind, str(e), retries, skipped=skipped)
            if not skipped:
                raise
        finally:
            self._spare_buffers = pending.packed.buffers()  # persisted or failed: the next snapshot may refill them

    def _fail(self, step: int, kind: str, error: str, retries: int, *, skipped: bool) -> None:
        """Record a save that did not commit: a warning, a ``checkpoint_failed`` event, a :attr:`failures` entry."""
        error = " ".join(error.split())[:300]
        failure = SaveFailure(step, kind, error, retries, skipped)
        self.failures.append(failure)
        then = "; training goes on without it" if skipped else ""
        log.warning("checkpoint of step %d (%s) failed after %d retries%s: %s", step, kind, retries, then, error)
        self.listener.checkpoint_failed(failure)

    def _store_retries(self) -> int:
        return getattr(self.store, "retries", 0)  # stores that retry (gs://) count; a local disk does not retry

    def _retrying_step(self) -> int | None:
        """The step of the persist in flight if it has met transient failures since it started."""
        if self._in_flight is None or self._persist_thread is None or not self._persist_thread.is_alive():
            return None
        return self._in_flight.step if self._store_retries() > self._in_flight.retries_before else None

    def _retry_deadline(self) -> contextlib.AbstractContextManager:
        """Bound a save's retrying by ``save_deadline_s`` on stores that retry."""
        deadline = getattr(self.store, "deadline", None)
        if self.save_deadline_s is None or deadline is None:
            return contextlib.nullcontext()
        return deadline(self.save_deadline_s)

    def _upload_and_commit(self, pending: _PendingSave) -> None:
        step, kind = pending.step, pending.kind
        start = time.perf_counter()
        if self.store.exists(manifest_key(step)):
            log.info("step %d is already checkpointed; not saving it again", step)
            self.saves.append(SaveStats(step, kind, pending.blocking_s(), 0.0, 0, False))
            return
        manifest = self._upload(pending)
        if not self._commits:  # rank 0 commits once this rank's marker says its shards are durable
            self._publish_marker(pending, manifest)
            self.saves.append(self._share_stats(pending, manifest, time.perf_counter() - start))
            return
        if self.collective is not None:
            manifest = self._gather_shards(pending, manifest)
        committed = self.store.create_if_absent(manifest_key(step), manifest.to_json())  # the commit point
        if not committed:
            log.warning("another save committed step %d first; discarding this one", step)
        at_commit = SaveStats(
            step=step,
            kind=kind,
            blocking_s=pending.blocking_s(),
            persist_s=time.perf_counter() - start,
            bytes=pending.packed.nbytes,
            committed=committed,
            retries=self._store_retries() - pending.retries_before,
        )
        if committed:  # reported now: a kill during retention must not hide this commit from the harness
            self.listener.checkpoint_finished(at_commit)
        try:
            self._collect_garbage()
        except (SpotsimError, OSError) as e:  # the step is committed all the same; the next save's retention catches up
            log.warning("retention after step %d failed, to be retried after the next save: %s", step, e)
        # A synchronous save held the caller through retention too.
        self.saves.append(replace(at_commit, blocking_s=pending.blocking_s()))

    def _upload(self, pending: _PendingSave) -> Manifest:
        """Upload this process's payload objects (its share, in distributed mode) under the save id;
        return the manifest that would commit them."""
        save_id, world = pending.save_id, self.collective
        entries = {}
        for index, (name, data) in enumerate(pending.packed.objects.items()):
            if world is not None and index % world.world_size != world.rank:
                continue  # another rank's share
            self.store.put_bytes(f"{step_prefix(pending.step)}{save_id}/{name}", data)
            entries[f"{save_id}/{name}"] = ObjectEntry(len(data), to_b64(crc32c_of(data)))
        return Manifest(
            step=pending.step,
            kind=pending.kind,
            created=time.time(),
            framework=self.framework,
            layout=self.layout,
            spotsim_version=__version__,
            objects=entries,
            metadata=pending.metadata,
            world_size=world.world_size if world is not None else None,
        )

    def _publish_marker(self, pending: _PendingSave, manifest: Manifest) -> None:
        """Say which objects this rank made durable: the marker rank 0 waits for."""
        assert self.collective is not None
        rank, world = self.collective.rank, self.collective.world_size
        marker = ShardMarker(pending.step, pending.save_id, rank, world, manifest.objects)
        self.store.put_bytes(marker.key, marker.to_json())

    def _gather_shards(self, pending: _PendingSave, own: Manifest) -> Manifest:
        """Rank 0: wait for every other rank's marker; return the manifest listing all their objects.

        Raises:
            ShardsNotDurable: a marker did not come within ``commit_timeout_s``.
            CorruptCheckpoint: a marker lists other objects or sizes than this snapshot has.
        """
        assert self.collective is not None
        step, save_id, world = pending.step, pending.save_id, self.collective.world_size
        markers = distributed.wait_for_markers(self.store, step, save_id, world, timeout_s=self.commit_timeout_s)
        sizes = {f"{save_id}/{name}": len(data) for name, data in pending.packed.objects.items()}
        expected = distributed.shares(sizes, world)  # every rank packed the same state: the same objects
        objects = dict(own.objects)
        for rank, marker in sorted(markers.items()):
            if {name: entry.size for name, entry in marker.objects.items()} != expected[rank]:
                raise CorruptCheckpoint(
                    f"rank {rank}'s shards of step {pending.step} differ from rank 0's snapshot (is the state "
                    "the same on every rank?)"
                )
            objects |= marker.objects
        return replace(own, objects=objects)

    def _share_stats(self, pending: _PendingSave, share: Manifest, persist_s: float) -> SaveStats:
        """What a rank other than 0 did for a distributed save: its share, not committed by it."""
        return SaveStats(
            step=pending.step,
            kind=pending.kind,
            blocking_s=pending.blocking_s(),
            persist_s=persist_s,
            bytes=sum(entry.size for entry in share.objects.values()),
            committed=False,
            retries=self._store_retries() - pending.retries_before,
        )

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
        metadata = manifest.metadata
        if manifest.world_size is not None:  # written by several ranks: say how many
            metadata = {**metadata, "world_size": manifest.world_size}
        return Restored(step, tree.unpack(objects), metadata)

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


# Options ``from_env`` reads: (keyword, variable, type); each must be positive.
_ENV_OPTIONS = (
    ("interval_s", "SPOTSIM_CHECKPOINT_INTERVAL", float),
    ("interval_steps", "SPOTSIM_CHECKPOINT_INTERVAL_STEPS", int),
    ("keep", "SPOTSIM_CHECKPOINT_KEEP", int),
)


def _positive_from_env(variable: str, text: str, kind: type, key: str) -> Any:
    """A positive option from the environment; a bad one is a :class:`CheckpointError`, like the missing URI."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{variable}={text!r} is not a valid {key}")
    return value


def _default_listener(events: EventLog | str | os.PathLike[str] | None) -> CheckpointListener:
    """A run-log listener on ``events`` (a path or an open log), else on ``SPOTSIM_EVENTS``, else silence."""
    run_log = EventLog(events) if isinstance(events, (str, os.PathLike)) else (events or EventLog.from_env())
    return RunLogListener(run_log) if run_log is not None else CheckpointListener()


def _check_collective(collective: Collective | None, commit_timeout_s: float) -> None:
    if collective is not None and not isinstance(collective, Collective):
        raise TypeError(f"collective must have rank, world_size and broadcast_save_id(), got {collective!r}")
    if collective is not None and not 0 <= collective.rank < collective.world_size:
        raise ValueError(f"rank {collective.rank} is not within world size {collective.world_size}")
    if not (isinstance(commit_timeout_s, (int, float)) and math.isfinite(commit_timeout_s) and commit_timeout_s > 0):
        raise ValueError(f"commit_timeout_s must be a positive number of seconds, got {commit_timeout_s!r}")


def _check_options(keep: int, layout: str, save_deadline_s: float | None) -> None:
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number ≥ 1, got {keep!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if save_deadline_s is not None and not (
        isinstance(save_deadline_s, (int, float)) and math.isfinite(save_deadline_s) and save_deadline_s >= 0
    ):
        raise ValueError(f"save_deadline_s must be a number of seconds ≥ 0 or None, got {save_deadline_s!r}")
