"""Saving one checkpoint from several ranks: the collective, the shard markers, the commit wait.

For data-parallel jobs (DDP) every rank holds the same state. A distributed save
(:class:`~spotsim.checkpoint.manager.CheckpointManager` with ``collective=``) runs on
every rank at the same step:

1. the ranks agree on one save id (:meth:`Collective.broadcast_save_id`, rank 0's id);
2. every rank snapshots the full state, then uploads its share of the objects, those
   whose index ``i`` has ``i % world_size == rank``;
3. every rank other than 0 then writes its :class:`ShardMarker`,
   ``step-<S>/<save id>/rank-<r>.json``: the names, sizes and crc32c of what it wrote;
4. rank 0 waits for those markers by polling the store (:func:`wait_for_markers`; never
   a collective, so a dead rank cannot hang it), bounded by a timeout, and commits the
   manifest listing every rank's objects.

Markers of another save id, left by an interrupted save, are never read: each save has
a fresh id, and retention deletes them after the next commit. torch is imported only by
:class:`TorchCollective`, when one is made.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from spotsim.checkpoint.manifest import ObjectEntry, object_entry, object_name, step_prefix
from spotsim.errors import CheckpointError, CorruptCheckpoint, ObjectNotFound
from spotsim.storage import Store

MARKER_FORMAT = "spotsim-shards/1"
SAVE_ID_LENGTH = 12
SAVE_ID = re.compile(rf"^[0-9a-f]{{{SAVE_ID_LENGTH}}}$")
_POLL_FIRST_S, _POLL_MAX_S = 0.01, 0.25  # a marker often lands within milliseconds; a slow rank is polled less


@runtime_checkable
class Collective(Protocol):
    """The ranks of one data-parallel job, as far as a checkpoint needs them.

    ``broadcast_save_id`` is a collective: every rank calls it at the same save, in
    the thread that calls :meth:`~spotsim.checkpoint.manager.CheckpointManager.save`.
    """

    rank: int
    world_size: int

    def broadcast_save_id(self, save_id: str) -> str:
        """Return rank 0's ``save_id`` on every rank."""


class ShardsNotDurable(CheckpointError, TimeoutError):
    """Rank 0 gave up waiting for other ranks' shards: the save did not commit.

    A ``TimeoutError``, so a periodic save that meets it is skipped and training goes
    on, like one whose bucket stayed unreachable.
    """


def check_save_id(save_id: str) -> str:
    """``save_id`` if it is 12 lowercase hex characters (it becomes part of object names)."""
    if not isinstance(save_id, str) or not SAVE_ID.match(save_id):
        raise CheckpointError(f"save id {str(save_id)[:40]!r} is not 12 lowercase hex characters")
    return save_id


def marker_key(step: int, save_id: str, rank: int) -> str:
    return f"{step_prefix(step)}{save_id}/rank-{rank}.json"


def shares(sizes: Mapping[str, int], world_size: int) -> list[dict[str, int]]:
    """Each rank's objects, ``{name: size}`` by rank: object ``i`` goes to rank ``i % world_size``."""
    split: list[dict[str, int]] = [{} for _ in range(world_size)]
    for index, (name, size) in enumerate(sizes.items()):
        split[index % world_size][name] = size
    return split


@dataclass(frozen=True)
class ShardMarker:
    """What one rank made durable for one save: written after its objects, read by rank 0."""

    step: int
    save_id: str
    rank: int
    world_size: int
    objects: dict[str, ObjectEntry]  # "<save id>/<name>" -> size and crc32c, as in the manifest

    @property
    def key(self) -> str:
        return marker_key(self.step, self.save_id, self.rank)

    def to_json(self) -> bytes:
        objects = {name: {"size": e.size, "crc32c": e.crc32c} for name, e in self.objects.items()}
        doc = {"format": MARKER_FORMAT, **self._identity(), "objects": objects}
        return json.dumps(doc, sort_keys=True).encode()

    def _identity(self) -> dict[str, Any]:
        return {"step": self.step, "save_id": self.save_id, "rank": self.rank, "world_size": self.world_size}

    @classmethod
    def parse(cls, raw: bytes, *, step: int, save_id: str, rank: int, world_size: int) -> ShardMarker:
        """Validate a marker read from the store: it must be the one of this save and rank.

        Raises:
            CorruptCheckpoint: not JSON, another format, another step, save id, rank or
                world size, or an object name outside this save.
        """
        expected = cls(step, save_id, rank, world_size, {})
        where = f"rank {rank}'s marker of step {step}"
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptCheckpoint(f"{where} is not valid JSON: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != MARKER_FORMAT:
            raise CorruptCheckpoint(f"{where} is not a {MARKER_FORMAT} marker")
        if {k: doc.get(k) for k in expected._identity()} != expected._identity():
            raise CorruptCheckpoint(f"{where} names another save: {raw[:200]!r}")
        try:
            objects = {object_name(k): object_entry(v) for k, v in dict(doc["objects"]).items()}
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptCheckpoint(f"{where} is malformed: {e}") from e
        if any(not name.startswith(f"{save_id}/") for name in objects):
            raise CorruptCheckpoint(f"{where} lists objects of another save")
        return cls(step, save_id, rank, world_size, objects)


def wait_for_markers(
    store: Store, step: int, save_id: str, world_size: int, *, timeout_s: float
) -> dict[int, ShardMarker]:
    """Poll ``store`` until ranks 1 to ``world_size - 1`` have each written their marker of this save.

    Returns:
        The markers, by rank.

    Raises:
        ShardsNotDurable: some markers were still missing after ``timeout_s``.
        CorruptCheckpoint: a marker does not parse or names another save.
    """
    waiting = set(range(1, world_size))
    found: dict[int, ShardMarker] = {}
    deadline, pause = time.monotonic() + timeout_s, _POLL_FIRST_S
    while True:
        for rank in sorted(waiting):
            try:
                raw = store.get_bytes(marker_key(step, save_id, rank))
            except ObjectNotFound:
                continue
            found[rank] = ShardMarker.parse(raw, step=step, save_id=save_id, rank=rank, world_size=world_size)
            waiting.discard(rank)
        left = deadline - time.monotonic()
        if not waiting:
            return found
        if left <= 0:
            raise ShardsNotDurable(_not_durable(sorted(waiting), step, timeout_s))
        time.sleep(min(pause, left))
        pause = min(2 * pause, _POLL_MAX_S)


def _not_durable(ranks: list[int], step: int, timeout_s: float) -> str:
    who = f"ranks {', '.join(map(str, ranks[:-1]))} and {ranks[-1]}" if len(ranks) > 1 else f"rank {ranks[0]}"
    return f"{who}'s shards of step {step} were not durable within {timeout_s:g} s"


class TorchCollective:
    """A ``torch.distributed`` process group (the default one unless ``group`` is given) as a :class:`Collective`.

    The save id travels as 12 ASCII bytes in a uint8 tensor, never as a pickled object.

    Raises:
        CheckpointError: ``torch.distributed`` is not initialised (call ``init_process_group`` first).
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise CheckpointError("torch.distributed is not initialised; call init_process_group() first")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._source = dist.get_global_rank(group, 0) if group is not None else 0

    @classmethod
    def from_env(cls) -> TorchCollective:
        """The default process group, as ``torchrun`` workers initialise it from their environment."""
        return cls()

    def broadcast_save_id(self, save_id: str) -> str:
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(self.group) == "nccl" else None
        payload = check_save_id(save_id).encode("ascii") if self.rank == 0 else bytes(SAVE_ID_LENGTH)
        tensor = torch.tensor(list(payload), dtype=torch.uint8, device=device)
        dist.broadcast(tensor, src=self._source, group=self.group)
        return check_save_id(bytes(tensor.tolist()).decode("ascii", errors="replace"))
