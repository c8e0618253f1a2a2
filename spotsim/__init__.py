"""spotsim: measure what preemption really costs ML training on spot VMs.

Public surface (kept thin on purpose; implementation lives in the subpackages):

- :class:`CheckpointManager`, :class:`PreemptionWatcher` — checkpoints that survive preemption.
- :func:`open_store` — crash-safe object stores for ``file://`` and ``gs://`` URIs.
- :func:`verify`, :func:`run` — ``spotsim verify`` / ``spotsim run`` from Python, returning a
  :class:`VerifyResult` / :class:`RunResult` (:mod:`spotsim.api`; the pytest fixtures are in
  :mod:`spotsim.pytest_plugin`).
- :mod:`spotsim.errors` — every error spotsim raises, each also a matching built-in.
"""

from typing import TYPE_CHECKING

from spotsim.checkpoint import CheckpointManager, PreemptionWatcher
from spotsim.errors import SpotsimError
from spotsim.storage import Store, open_store
from spotsim.version import __version__

if TYPE_CHECKING:
    from spotsim.api import RunResult, VerifyResult, run, verify


__all__ = [
    "CheckpointManager",
    "PreemptionWatcher",
    "RunResult",
    "SpotsimError",
    "Store",
    "VerifyResult",
    "__version__",
    "open_store",
    "run",
    "verify",
]

_API = frozenset({"RunResult", "VerifyResult", "run", "verify"})


def __getattr__(name: str):
    # Every training job imports spotsim; only a caller of the harness API should pay for loading the harness.
    if name in _API:
        from spotsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'spotsim' has no attribute {name!r}")
