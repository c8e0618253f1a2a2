"""spotsim: measure what preemption really costs ML training on spot VMs.

Public surface (kept thin on purpose; implementation lives in the subpackages):

- :class:`CheckpointManager`, :class:`PreemptionWatcher` — checkpoints that survive preemption.
- :func:`open_store` — crash-safe object stores for ``file://`` and ``gs://`` URIs.
- :mod:`spotsim.errors` — every error spotsim raises, each also a matching built-in.
"""

from spotsim.checkpoint import CheckpointManager, PreemptionWatcher
from spotsim.errors import SpotsimError
from spotsim.storage import Store, open_store

__version__ = "0.1.0"

__all__ = ["CheckpointManager", "PreemptionWatcher", "SpotsimError", "Store", "open_store", "__version__"]
