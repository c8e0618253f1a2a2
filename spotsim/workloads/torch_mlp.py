"""torch-mlp: an MLP on synthetic data whose size sets the checkpoint size (~10 MiB to ~2 GiB).

The data are generated in memory from ``--seed``: 4,096 training and 1,024
held-out vectors of 64 standard-normal features, labelled 0-9 by a random
linear teacher. The model is ``--layers`` hidden layers of ``--hidden`` units
(ReLU) and a 10-way output, trained with Adam.

Checkpoint size. With i = 64 inputs, o = 10 outputs, h hidden units and L
hidden layers the model has

    P = (i + 1)·h + (L − 1)·(h + 1)·h + (h + 1)·o   parameters,

and a checkpoint holds them in float32 plus Adam's two float32 moments:

    bytes ≈ 12·P   (+ a few KiB: Adam's step counts, RNG states, data position).

The default (h = 512, L = 4) is P = 826,378, about 9.5 MiB. ``--checkpoint-mib M``
instead picks the largest h with 12·P ≤ M MiB for the given L: M = 2048 with
L = 4 gives h = 7,710 (2.0 GiB; the process then peaks at ~5.3 GB of memory and
takes ~3 s a step). Step time grows like P (about 6·batch·P flops).

The default 2,000 steps took 21-23 s on the 2-core development machine
(one torch thread; ~9.5 ms a step plus ~2 s of start-up).
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torch import nn

from spotsim.workloads import common
from spotsim.workloads.torch_cnn import TorchClassifierJob, deterministic

NAME = "torch-mlp"
STEPS, BATCH_SIZE = 2000, 64
INPUTS, CLASSES, TRAIN_SIZE, HELD_OUT = 64, 10, 4096, 1024
HIDDEN, LAYERS = 512, 4
MiB = 1 << 20


def parameter_count(hidden: int, layers: int) -> int:
    """P of the module docstring."""
    return (INPUTS + 1) * hidden + (layers - 1) * (hidden + 1) * hidden + (hidden + 1) * CLASSES


def checkpoint_bytes(hidden: int, layers: int) -> int:
    """Approximate checkpoint size: float32 parameters and Adam's two moments."""
    return 12 * parameter_count(hidden, layers)


def hidden_for(mib: float, layers: int) -> int:
    """The largest hidden width whose checkpoint fits in ``mib`` MiB (at least 1)."""
    low, high = 1, 1 << 24
    while low < high:  # checkpoint_bytes grows with the width: bisect
        mid = (low + high + 1) // 2
        low, high = (mid, high) if checkpoint_bytes(mid, layers) <= mib * MiB else (low, mid - 1)
    return low


def mlp(hidden: int, layers: int) -> nn.Sequential:
    widths = [INPUTS] + [hidden] * layers
    blocks = [m for a, b in itertools.pairwise(widths) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*blocks, nn.Linear(hidden, CLASSES))


def synthetic(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, held_out) pairs of (features, labels), drawn from their own generator."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(TRAIN_SIZE + HELD_OUT, INPUTS, generator=generator)
    teacher = torch.randn(INPUTS, CLASSES, generator=generator)
    y = (x @ teacher).argmax(dim=1)
    return (x[:TRAIN_SIZE], y[:TRAIN_SIZE]), (x[TRAIN_SIZE:], y[TRAIN_SIZE:])


def build(args: argparse.Namespace) -> TorchClassifierJob:
    deterministic(args.seed)
    train, held_out = synthetic(args.seed)
    model = mlp(args.hidden, args.layers)
    return TorchClassifierJob(model, train, held_out, batch_size=args.batch_size, seed=args.seed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = common.parser(__name__, __doc__, steps=STEPS, batch_size=BATCH_SIZE, max_batch_size=TRAIN_SIZE)
    p.add_argument("--layers", type=common.int_in(1, 64), default=LAYERS, help=f"hidden layers (default {LAYERS})")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--hidden", type=common.int_in(1, 1 << 20), help=f"units per hidden layer (default {HIDDEN})")
    size.add_argument(
        "--checkpoint-mib", type=common.int_in(1, 1 << 16), help="pick --hidden so a checkpoint is about this many MiB"
    )
    args = p.parse_args(argv)
    if args.checkpoint_mib is not None:
        args.hidden = hidden_for(args.checkpoint_mib, args.layers)
    elif args.hidden is None:
        args.hidden = HIDDEN
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mib = checkpoint_bytes(args.hidden, args.layers) / MiB
    print(f"{NAME}: {args.layers} hidden layers of {args.hidden} units, checkpoints of ~{mib:.1f} MiB", flush=True)
    return common.main(args, build, name=NAME, framework="torch")


if __name__ == "__main__":
    common.exit_now(main())
