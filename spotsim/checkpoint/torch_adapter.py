"""PyTorch adapter: live training objects to a checkpoint state and back.

``TorchState`` gathers everything an uninterrupted run would still have in
memory: model, optimizer, LR scheduler, GradScaler, every RNG (python, numpy,
torch CPU, CUDA when present) and the data position, so a resume in the middle
of an epoch sees the same batches and the same random numbers.
``ResumableBatchSampler`` is that data position for shuffled batches.

Tensors are stored as raw little-endian bytes with their dtype and shape
(see :mod:`spotsim.checkpoint.tree`); nothing is ever unpickled.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from spotsim.checkpoint.tree import TrainingState

_DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in [
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    ]
}


class TorchCodec:
    """Array codec for torch tensors (CPU or GPU; restored on the CPU)."""

    kind = "torch"

    def describe(self, tensor: torch.Tensor) -> tuple[str, tuple[int, ...], int]:
        name = str(tensor.dtype).removeprefix("torch.")
        if name not in _DTYPES:
            raise TypeError(f"torch tensors of dtype {tensor.dtype} cannot be checkpointed")
        if tensor.is_sparse or tensor.layout != torch.strided:
            raise TypeError("sparse torch tensors cannot be checkpointed; convert them to dense")
        return name, tuple(tensor.shape), tensor.numel() * tensor.element_size()

    def copy_into(self, tensor: torch.Tensor, out: memoryview) -> None:
        if not len(out):
            return
        target = torch.frombuffer(out, dtype=torch.uint8)
        # One copy, straight from (GPU or CPU) memory into the shard buffer.
        target.copy_(tensor.detach().contiguous().reshape(-1).view(torch.uint8))

    def load(self, data: memoryview, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
        torch_dtype = _DTYPES[dtype]
        if not len(data):
            return torch.empty(shape, dtype=torch_dtype)
        return torch.frombuffer(data, dtype=torch_dtype).reshape(shape)


CODEC = TorchCodec()


def capture_rng() -> dict[str, Any]:
    """Every random-number generator a training step may draw from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].clone())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.clone() for s in state["cuda"]])


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Shuffled mini-batches whose order depends only on (seed, epoch).

    The position (epoch, batches handed out in it) is part of the checkpoint,
    so a resume continues with exactly the batch an uninterrupted run would
    have taken next. Use it directly (``for idx in sampler``) or as a
    DataLoader ``batch_sampler`` with ``num_workers=0`` (worker prefetching
    would move the position ahead of the training loop).
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, drop_last: bool = True) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError("num_samples and batch_size must be positive")
        self.num_samples, self.batch_size, self.seed, self.drop_last = num_samples, batch_size, seed, drop_last
        self.epoch, self.batch = 0, 0

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the remaining batches of the current epoch, then move to the next epoch."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        while self.batch < len(self):
            start = self.batch * self.batch_size
            self.batch += 1
            yield order[start : start + self.batch_size]
        self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["num_samples"] != self.num_samples or state["seed"] != self.seed:
            raise ValueError(
                f"data position is for {state['num_samples']} samples with seed {state['seed']}, "
                f"not {self.num_samples} with seed {self.seed}"
            )
        self.epoch, self.batch = state["epoch"], state["batch"]


class TorchState(TrainingState):
    """The training objects of one job, as one checkpoint state (a :class:`TrainingState`).

    Pass whatever the job has; ``None`` parts are skipped and reported by
    :attr:`registered`, so a resume check can say what was never saved.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        scaler: Any | None = None,
        data: ResumableBatchSampler | Any | None = None,
        *,
        rng: bool = True,
    ) -> None:
        self.parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "data": data}
        self.rng = rng

    @property
    def registered(self) -> list[str]:
        return [name for name, part in self.parts.items() if part is not None] + (["rng"] if self.rng else [])

    def state_dict(self) -> dict[str, Any]:
        state = {name: part.state_dict() for name, part in self.parts.items() if part is not None}
        if self.rng:
            state["rng"] = capture_rng()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a restored state back into the live objects."""
        missing = [name for name in self.registered if name not in state]
        if missing:
            raise KeyError(f"checkpoint has no {', '.join(missing)} state")
        for name, part in self.parts.items():
            if part is not None:
                part.load_state_dict(state[name])
        if self.rng:
            restore_rng(state["rng"])
