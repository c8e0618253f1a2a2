"""torch-cnn, the default workload: a small LeNet-style CNN on scikit-learn's handwritten digits.

The network of the classic PyTorch CIFAR-10 tutorial (2 convolutions, one
max-pooling layer applied after each, 3 fully connected layers; Adam,
cross-entropy), adapted to the 8x8 grayscale digits that ship inside
scikit-learn: 3x3 convolutions padded to keep 8x8, pooled to 4x4 and 2x2. 1,500 digits train, 297 are held out.

The default 15,000 steps (batch 32: 46 steps an epoch, ~326 epochs) took 27-30 s
on the 2-core development machine (one torch thread; ~1.7 ms a step plus ~2 s
of start-up), so a preempted run spans many checkpoints at second intervals.

Resume is bit-exact: weights, Adam moments, every RNG and the position in the
shuffled epoch (``ResumableBatchSampler``) are checkpointed, and torch runs
deterministically on one thread, so the result does not depend on where (or
on how many cores) an attempt ran.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spotsim.checkpoint.torch_adapter import ResumableBatchSampler, TorchState
from spotsim.workloads import common

NAME = "torch-cnn"
STEPS, BATCH_SIZE = 15_000, 32


class Net(nn.Module):
    """Two convolutions and three fully connected layers (6, 16 channels; 120, 84, 10 units) for 1x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)  # 8x8 -> 8x8, pooled to 4x4
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 3, padding=1)  # 4x4 -> 4x4, pooled to 2x2
        self.fc1 = nn.Linear(16 * 2 * 2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


def deterministic(seed: int) -> None:
    """Seed every RNG and pin torch to one thread and deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # results must not depend on the machine's core count
    torch.use_deterministic_algorithms(True)


class TorchClassifierJob:
    """A classifier trained with Adam on in-memory tensors: a :class:`~spotsim.workloads.common.TrainingJob`."""

    def __init__(self, model: nn.Module, train: tuple, held_out: tuple, *, batch_size: int, seed: int) -> None:
        self.model = model
        self.x, self.y = train
        self.x_held_out, self.y_held_out = held_out
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.sampler = ResumableBatchSampler(len(self.x), batch_size, seed=seed)
        self.checkpoint = TorchState(model, self.optimizer, data=self.sampler)
        self.steps_per_epoch = len(self.sampler)
        self._batches: Iterator[list[int]] | None = None  # made lazily, so a restored data position is honoured

    def warm_up(self) -> None:
        """One throwaway forward and backward pass, and an optimizer step on scratch copies.

        A process's first step is several times slower than the next (autograd's,
        the allocator's and the optimizer's first use). Nothing the training
        depends on changes: the batch is the first training examples (the sampler
        draws nothing), the gradients go to scratch copies of the parameters, the
        real optimizer never steps, and the CPU RNG and the buffers are put back.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [p.grad for p in params]
        buffers = [b.detach().clone() for b in self.model.buffers()]  # e.g. batch norm's running statistics
        try:
            with torch.random.fork_rng(devices=[]):  # e.g. dropout's draws
                for p in params:
                    p.grad = None
                batch = slice(0, self.sampler.batch_size)
                nn.functional.cross_entropy(self.model(self.x[batch]), self.y[batch]).backward()
                scratch = [p.detach().clone().requires_grad_() for p in params]
                for copy, p in zip(scratch, params, strict=True):
                    copy.grad = p.grad
                type(self.optimizer)(scratch, **self.optimizer.defaults).step()
        finally:
            for p, grad in zip(params, grads, strict=True):
                p.grad = grad
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers, strict=True):
                    b.copy_(saved)

    def train_step(self) -> float:
        idx = self._next_batch()
        loss = nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _next_batch(self) -> list[int]:
        if self._batches is not None:
            idx = next(self._batches, None)
            if idx is not None:
                return idx
        self._batches = iter(self.sampler)  # the rest of this epoch, or the next one
        return self._next_batch()

    def state_dict(self) -> dict:
        return self.checkpoint.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint.load_state_dict(state)
        self._batches = None

    def write_outputs(self, out_dir: Path) -> None:
        final = out_dir / "model.pt"
        partial = common.atomic_path(final)
        torch.save(self.model.state_dict(), partial)
        os.replace(partial, final)

    @torch.no_grad()
    def evaluate(self) -> float:
        predicted = self.model(self.x_held_out).argmax(dim=1)
        return (predicted == self.y_held_out).float().mean().item()


def build(args: argparse.Namespace) -> TorchClassifierJob:
    deterministic(args.seed)
    x, y, x_held_out, y_held_out = (torch.from_numpy(a) for a in common.digits())
    train, held_out = (x.unsqueeze(1), y), (x_held_out.unsqueeze(1), y_held_out)  # NCHW, one channel
    return TorchClassifierJob(Net(), train, held_out, batch_size=args.batch_size, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__name__, __doc__, steps=STEPS, batch_size=BATCH_SIZE, max_batch_size=common.DIGITS_TRAIN_SIZE)
    return common.main(p.parse_args(argv), build, name=NAME, framework="torch")


if __name__ == "__main__":
    common.exit_now(main())
