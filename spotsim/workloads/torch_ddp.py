"""torch-ddp: data-parallel training under torchrun: DistributedDataParallel (gloo, CPU) on scikit-learn's digits.

Run it as ``python -m torch.distributed.run --standalone --nproc-per-node=N -m
spotsim.workloads.torch_ddp`` (plain ``python -m`` runs one process, a world of
1). Every worker reads the contract's environment; only global rank 0 writes
events (:meth:`spotsim.events.EventLog.from_env`) and the model.

An MLP (64 pixels, two hidden layers of 128, 10 classes) trained with Adam on
the 1,500 training digits. Each step takes the next global batch of
``--batch-size`` samples; rank r of W trains on ``batch[r::W]``, with its
cross-entropy summed and scaled by W / batch size, so DDP's gradient average is
the global batch's mean gradient at any W.

The data position is ``GlobalBatches``, not torch's ``DistributedSampler``: that
sampler hands rank r every W-th sample of the whole epoch, so which samples a
step trains on depends on W, and it can only start an epoch from its
beginning. ``GlobalBatches`` keeps (epoch, samples consumed in it), epoch e
visiting ``torch.randperm(N)`` drawn from a generator seeded ``seed + e``; it is
part of the checkpoint, so a resume mid-epoch takes exactly the next batch.

Checkpoints are collective (``CheckpointManager(collective=TorchCollective())``):
each step, after its optimizer update, the ranks all-reduce (MAX) two flags: a
preemption noticed on this rank (``PreemptionWatcher``: SIGTERM or the metadata
notice), and a periodic save due (rank 0's ``should_save`` alone decides). On a
notice every rank saves an ``emergency`` checkpoint at that step; a rank that was
itself noticed then waits to be killed (exit 128 + the signal, 143 for SIGTERM;
never 0, which would end torchrun's rendezvous for good), while the others train
on until their next collective fails with the lost peer, and the restarted group
resumes from that checkpoint. Each worker dies with its torchrun agent
(``PR_SET_PDEATHSIG``): torchrun puts workers in sessions of their own, out of
reach of a SIGKILL to the agent's process group.

Resume at the same world size is bit-exact (one torch thread, deterministic
kernels, gloo's sum of two ranks' gradients is exact in either order). A
checkpoint restores exactly at any world size, but the run it continues is not
bit-identical to one at the original world size: the gradient all-reduce over
another number of ranks adds the per-rank sums in another order.

The default 2,000 steps (batch 64: 23 steps an epoch) took 14-15 s at 2
processes on the 2-core development machine, shared (~4.5 ms a step, plus
~5 s of torchrun and start-up).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from spotsim.checkpoint import CheckpointManager, PreemptionWatcher
from spotsim.checkpoint.distributed import TorchCollective
from spotsim.checkpoint.torch_adapter import TorchState
from spotsim.errors import CheckpointError, InvalidOption, SpotsimError
from spotsim.workloads import common
from spotsim.workloads.torch_cnn import deterministic

log = logging.getLogger(__name__)

NAME = "torch-ddp"
STEPS, BATCH_SIZE, HIDDEN, CLASSES = 2000, 64, 128, 10
# A peer that is gone but not disconnected ends a collective within this; longer than rank 0 may spend in
# save() before the next collective (a persist up to its 30 s deadline, then 30 s for the other ranks' shards).
COLLECTIVE_TIMEOUT = timedelta(seconds=90)
PR_SET_PDEATHSIG = 1
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GlobalBatches:
    """Which samples each step trains on, the same at any world size (see the module docstring)."""

    def __init__(self, num_samples: int, batch_size: int, *, seed: int) -> None:
        if not 1 <= batch_size <= num_samples:
            raise ValueError(f"a batch of {batch_size} does not fit {num_samples} samples")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.epoch, self.consumed = 0, 0
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size  # a last, partial batch is dropped

    def next_batch(self) -> torch.Tensor:
        """The indices of the next global batch."""
        if self.consumed + self.batch_size > self.num_samples:
            self.epoch, self.consumed = self.epoch + 1, 0
        start, self.consumed = self.consumed, self.consumed + self.batch_size
        return self._permutation()[start : self.consumed]

    def _permutation(self) -> torch.Tensor:
        if self._order is None or self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            self._order = (self.epoch, torch.randperm(self.num_samples, generator=generator))
        return self._order[1]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples or state["seed"] != self.seed:
            raise ValueError(
                f"data position is for {state['num_samples']} samples with seed {state['seed']}, "
                f"not {self.num_samples} with seed {self.seed}"
            )
        epoch, consumed = state["epoch"], state["consumed"]
        if not (
            isinstance(epoch, int) and isinstance(consumed, int) and epoch >= 0 and 0 <= consumed <= self.num_samples
        ):
            raise ValueError(f"data position (epoch {epoch!r}, {consumed!r} samples in) is out of range")
        self.epoch, self.consumed = epoch, consumed


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES)
    )


class DDPJob:
    """One rank's share of the training: a :class:`~spotsim.workloads.common.TrainingJob`."""

    def __init__(self, train: tuple, held_out: tuple, *, batch_size: int, seed: int) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.x, self.y = train
        self.x_held_out, self.y_held_out = held_out
        self.model = mlp()
        self.ddp = DistributedDataParallel(self.model)  # all-reduces the gradients in backward()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.data = GlobalBatches(len(self.x), batch_size, seed=seed)
        self.checkpoint = TorchState(self.model, self.optimizer, data=self.data)
        self.steps_per_epoch = self.data.steps_per_epoch

    def warm_up(self) -> None:
        """A throwaway step on a scratch copy of the model: pays autograd's and Adam's first use.

        The copy is a plain module, not the DDP one, so no collective runs and DDP's
        state is untouched; the CPU RNG (the copy's initialisation) is put back.
        """
        with torch.random.fork_rng(devices=[]):
            scratch = mlp()
            scratch.load_state_dict(self.model.state_dict())
            batch = slice(0, self.data.batch_size)
            nn.functional.cross_entropy(scratch(self.x[batch]), self.y[batch]).backward()
            torch.optim.Adam(scratch.parameters(), lr=1e-3).step()

    def train_step(self) -> float:
        """One optimizer step on this rank's slice of the next global batch; return its mean loss."""
        idx = self.data.next_batch()[self.rank :: self.world_size]
        total = nn.functional.cross_entropy(self.ddp(self.x[idx]), self.y[idx], reduction="sum")
        self.optimizer.zero_grad()
        # DDP averages over ranks: scaled so, the average is the global batch's mean gradient.
        (total * (self.world_size / self.data.batch_size)).backward()
        self.optimizer.step()
        return total.item() / max(1, len(idx))

    def state_dict(self) -> dict:
        return self.checkpoint.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint.load_state_dict(state)

    def write_outputs(self, out_dir: Path) -> None:
        final = out_dir / "model.npz"
        partial = common.atomic_path(final, ".npz")  # np.savez appends .npz to other names
        np.savez(partial, **{name: t.detach().numpy() for name, t in self.model.state_dict().items()})
        os.replace(partial, final)

    @torch.no_grad()
    def evaluate(self) -> float:
        predicted = self.model(self.x_held_out).argmax(dim=1)
        return (predicted == self.y_held_out).float().mean().item()


def build(args: argparse.Namespace) -> DDPJob:
    deterministic(args.seed)
    x, y, x_held_out, y_held_out = (torch.from_numpy(a) for a in common.digits())
    train, held_out = (x.flatten(1), y), (x_held_out.flatten(1), y_held_out)
    return DDPJob(train, held_out, batch_size=args.batch_size, seed=args.seed)


# -- the collective loop ---------------------------------------------------------


class Terminations:
    """The termination signal this worker got (the first), each also a notice to the watcher.

    It handles the signals instead of the watcher (made with ``signals=()``), from before
    the watcher starts: after a metadata notice, the SIGTERM that follows may land at any
    moment, during the emergency save included, and must still be known when it ends.
    """

    def __init__(self, watcher: PreemptionWatcher) -> None:
        self.watcher = watcher
        self.signum: int | None = None

    def install(self) -> Terminations:
        for sig in TERMINATION_SIGNALS:
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signum = self.signum or signum
        self.watcher.notify(signal.Signals(signum).name)

    def wait_to_be_killed(self) -> NoReturn:
        """Exit 128 + the termination signal once one has come; until then (a metadata notice) wait for it.

        Never exit 0: torchrun takes a worker group that exits 0 for a finished job and
        closes the rendezvous for good. SIGKILL, or the agent's death, may end the wait too.
        """
        while self.signum is None:
            time.sleep(0.05)  # the handler runs in this thread between sleeps
        common.exit_now(128 + self.signum)
        raise AssertionError("unreachable")  # exit_now never returns


def agree(*flags: bool) -> list[bool]:
    """Each flag OR-ed over every rank (an all-reduce of MAX)."""
    tensor = torch.tensor([int(flag) for flag in flags], dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(value) for value in tensor.tolist()]


def check_same_step(step: int) -> None:
    """Every rank must have resumed from the same checkpoint."""
    tensor = torch.tensor([step, -step], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    if tensor.tolist() != [step, -step]:
        raise CheckpointError(f"the ranks resumed from different steps ({-tensor[1]} to {tensor[0]})")


def train(job: DDPJob, manager: CheckpointManager, terminations: Terminations, args: argparse.Namespace) -> int:
    """Warm up, restore, train to ``args.steps`` together with the other ranks, finish; return the exit status."""
    watcher = terminations.watcher
    job.warm_up()
    start = step = common.resume(job, manager, args.steps)
    check_same_step(step)
    loss = math.nan
    while step < args.steps:
        loss = job.train_step()
        step += 1
        if args.step_sleep:
            time.sleep(args.step_sleep)
        due = job.rank == 0 and step < args.steps and manager.should_save(step)  # the last step saves "final"
        noticed, due = agree(watcher.preempted, due)
        if noticed:  # on any rank: everyone saves, together
            manager.save(step, job.state_dict(), kind="emergency", metadata=_metadata(job, loss))
            if watcher.preempted:
                log.warning("preemption notice (%s): emergency checkpoint at step %d saved", watcher.reason, step)
                watcher.approve()  # Azure: evict now rather than at NotBefore (elsewhere a no-op)
                terminations.wait_to_be_killed()
            log.warning("another rank was noticed of a preemption: emergency checkpoint at step %d saved", step)
        elif due:
            manager.save(step, job.state_dict(), metadata=_metadata(job, loss))
    if step > start:
        manager.save(step, job.state_dict(), kind="final", metadata=_metadata(job, loss))
    if job.rank == 0:
        common.finish(job, manager, step, loss)
    dist.barrier()  # no rank exits 0 before rank 0 has written the model and `done`
    return 0


def _metadata(job: DDPJob, loss: float) -> dict[str, Any]:
    return {"epoch": job.data.epoch, "loss": loss}  # the loss of rank 0's slice, on rank 0


# -- the process -------------------------------------------------------------------


def die_with_agent() -> None:
    """Have the kernel SIGKILL this worker when its parent, the torchrun agent, dies.

    torchrun starts each worker in a session of its own, so a SIGKILL of the agent's
    process group (a VM going away, under the harness) would otherwise leave the
    workers training on, orphaned.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def init_process_group() -> None:
    """Join the torchrun job, or form a world of 1 when started without torchrun."""
    if "RANK" in os.environ:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=COLLECTIVE_TIMEOUT)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(
        "spotsim.workloads.torch_ddp",
        __doc__,
        steps=STEPS,
        batch_size=BATCH_SIZE,
        max_batch_size=common.DIGITS_TRAIN_SIZE,
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    die_with_agent()
    common._configure_logging(f"{NAME} rank={os.environ.get('RANK', '0')}")
    try:
        watcher = PreemptionWatcher(signals=(), approve=True)
        terminations = Terminations(watcher).install()
        init_process_group()
        return run(args, terminations)
    except SpotsimError as e:
        print(f"{NAME} rank {os.environ.get('RANK', '0')}: error: {common._one_line(e)}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run(args: argparse.Namespace, terminations: Terminations) -> int:
    """Train as one rank of the initialised process group; return the exit status."""
    if args.batch_size < dist.get_world_size():
        raise InvalidOption(f"--batch-size {args.batch_size} leaves some of {dist.get_world_size()} ranks no sample")
    collective = TorchCollective.from_env()
    with (
        terminations.watcher,
        CheckpointManager.from_env(framework="torch", collective=collective) as manager,
    ):
        return train(build(args), manager, terminations, args)


if __name__ == "__main__":
    common.exit_now(main())
