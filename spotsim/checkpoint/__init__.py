"""Checkpoints that survive preemption: the library half of spotsim.

``CheckpointManager`` saves and restores states crash-safely (local disk or
GCS), when its ``SaveInterval`` says a save is due, and reports what it does
to a ``CheckpointListener`` (by default the harness's run log);
``PreemptionWatcher`` turns SIGTERM and metadata-server notices into a flag
the training loop checks. Framework adapters (``TrainingState``s) live in
``torch_adapter`` and ``tf_adapter`` and are imported only when used.
With a ``Collective`` (``TorchCollective`` for torch.distributed, which
imports torch only when made) the ranks of a data-parallel job save one
checkpoint together.
"""

from spotsim.checkpoint.distributed import Collective, ShardsNotDurable, TorchCollective
from spotsim.checkpoint.manager import CheckpointManager, Restored, SaveFailure, SaveStats
from spotsim.checkpoint.policy import SaveInterval
from spotsim.checkpoint.telemetry import CheckpointListener, RunLogListener
from spotsim.checkpoint.tree import TrainingState
from spotsim.checkpoint.watcher import PreemptionWatcher

__all__ = [
    "CheckpointListener",
    "CheckpointManager",
    "Collective",
    "PreemptionWatcher",
    "Restored",
    "RunLogListener",
    "SaveFailure",
    "SaveInterval",
    "SaveStats",
    "ShardsNotDurable",
    "TorchCollective",
    "TrainingState",
]
