"""Reference training jobs that follow the harness contract (``docs/contract.md``).

Each workload is a module runnable as ``python -m <module> [--steps N] [--seed S]
[--batch-size B] [--step-sleep SECONDS]``, or through its launcher (``torchrun``
for ``torch-ddp``); :func:`command` builds that command line for the harness.
This registry imports neither torch nor tensorflow, so listing workloads works
without either installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from spotsim.errors import SpotsimError

FRAMEWORKS = ("torch", "tensorflow")
LAUNCHERS = (None, "torchrun")
# torchrun as a module of this Python; --standalone: one node, its own rendezvous (a multi-node
# run replaces it with rendezvous arguments).
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1")


class UnknownWorkload(SpotsimError, ValueError):
    """A workload name that is not in :data:`WORKLOADS`."""


@dataclass(frozen=True)
class Workload:
    """One built-in training job: its name, the module that runs it (its docstring describes it), its framework,
    and the launcher that starts its processes (None: the module runs as one process)."""

    name: str
    module: str
    framework: str
    steps: int  # its --steps default, the work a run of it does unless told otherwise
    launcher: str | None = None

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {FRAMEWORKS}, got {self.framework!r}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload("torch-cnn", "spotsim.workloads.torch_cnn", "torch", steps=15_000),
        Workload("torch-mlp", "spotsim.workloads.torch_mlp", "torch", steps=2_000),
        Workload("tf-cnn", "spotsim.workloads.tf_cnn", "tensorflow", steps=15_000),
        Workload("torch-ddp", "spotsim.workloads.torch_ddp", "torch", steps=2_000, launcher="torchrun"),
    ]
}
DEFAULT_WORKLOAD = "torch-cnn"


def get(name: str) -> Workload:
    """The workload called ``name``.

    Raises:
        UnknownWorkload: no such workload; the message lists the known ones.
    """
    try:
        return WORKLOADS[name]
    except KeyError:
        known = ", ".join(sorted(WORKLOADS))
        raise UnknownWorkload(f"unknown workload {name!r}; known workloads: {known}") from None


def command(name: str, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that runs workload ``name`` with this Python: ``[python, -m, module, *extra_args]``,
    or for a torchrun workload ``[python, -m, torch.distributed.run, --standalone, --nproc-per-node=1, -m,
    module, *extra_args]``."""
    workload = get(name)
    launcher = TORCHRUN if workload.launcher == "torchrun" else ()
    return [sys.executable, *launcher, "-m", workload.module, *extra_args]


__all__ = ["DEFAULT_WORKLOAD", "WORKLOADS", "UnknownWorkload", "Workload", "command", "get"]
