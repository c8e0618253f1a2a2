"""Checkpoints that survive preemption: the library half of spotsim.

``CheckpointManager`` saves and restores states crash-safely (local disk or
GCS); ``PreemptionWatcher`` turns SIGTERM and metadata-server notices into a
flag the training loop checks. Framework adapters live in ``torch_adapter``
and ``tf_adapter`` and are imported only when used.
"""

from spotsim.checkpoint.manager import CheckpointManager, Restored, SaveStats
from spotsim.checkpoint.watcher import PreemptionWatcher

__all__ = ["CheckpointManager", "PreemptionWatcher", "Restored", "SaveStats"]
