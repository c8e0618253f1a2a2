"""Bit-exact resume for PyTorch, in process: a mid-epoch checkpoint restored into
fresh objects must continue exactly as the uninterrupted run did."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # trains a real model

from spotsim import CheckpointManager  # noqa: E402
from spotsim.checkpoint.torch_adapter import ResumableBatchSampler, TorchState  # noqa: E402

STEPS, CHECKPOINT_AT = 40, 17  # 17 is mid-epoch: 10 batches per epoch


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.drop = torch.nn.Dropout(0.3)  # draws from the torch RNG every step
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.conv(x))).flatten(1))


def build(seed: int = 0) -> TorchState:
    torch.manual_seed(seed)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    data = ResumableBatchSampler(160, 16, seed=3)
    return TorchState(model, optimizer, scheduler, data=data)


def dataset():
    g = torch.Generator().manual_seed(42)
    return torch.randn(160, 1, 8, 8, generator=g), torch.randint(0, 10, (160,), generator=g)


def train(job: TorchState, start: int, stop: int, on_step=None) -> None:
    x, y = dataset()
    model, optimizer, scheduler, sampler = (job.parts[k] for k in ("model", "optimizer", "scheduler", "data"))
    step = start
    while step < stop:
        for idx in sampler:
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if on_step:
                on_step(step)
            if step == stop:
                return


def params(job: TorchState) -> dict:
    return {k: v.clone() for k, v in job.parts["model"].state_dict().items()}


@pytest.mark.parametrize("layout", ["directory", "archive"])
def test_resume_mid_epoch_is_bit_exact(tmp_path, layout):
    torch.use_deterministic_algorithms(True)
    reference = build()
    train(reference, 0, STEPS)

    first = build()
    with CheckpointManager(tmp_path.as_uri(), layout=layout, framework="torch") as manager:
        train(first, 0, CHECKPOINT_AT, on_step=lambda s: s == CHECKPOINT_AT and manager.save(s, first.state_dict()))

    resumed = build(seed=123)  # fresh objects with different initial weights
    with CheckpointManager(tmp_path.as_uri(), layout=layout) as manager:
        step, state, _ = manager.restore_latest()
    assert step == CHECKPOINT_AT
    resumed.load_state_dict(state)
    train(resumed, step, STEPS)

    expected, got = params(reference), params(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"
    assert resumed.parts["data"].state_dict() == reference.parts["data"].state_dict()


def test_resume_without_rng_state_diverges(tmp_path):
    """The check above can fail: leave the RNG out and dropout draws differ."""
    torch.use_deterministic_algorithms(True)
    reference = build()
    train(reference, 0, STEPS)
    first = build()
    with CheckpointManager(tmp_path.as_uri()) as manager:
        train(first, 0, CHECKPOINT_AT, on_step=lambda s: s == CHECKPOINT_AT and manager.save(s, first.state_dict()))
        _, state, _ = manager.restore_latest()
    torch.manual_seed(999)  # the RNG a fresh process would have
    resumed = build(seed=5)
    resumed.rng = False
    resumed.load_state_dict(state)
    train(resumed, CHECKPOINT_AT, STEPS)
    assert not all(torch.equal(a, b) for a, b in zip(params(reference).values(), params(resumed).values(), strict=True))


def test_tensor_dtypes_round_trip(tmp_path):
    tensors = {
        str(dtype): (torch.arange(12).reshape(3, 4) % 3).to(dtype)
        for dtype in [
            torch.float32,
            torch.float64,
            torch.float16,
            torch.bfloat16,
            torch.int64,
            torch.int8,
            torch.uint8,
            torch.bool,
            torch.complex64,
        ]
    }
    tensors["scalar"] = torch.tensor(3.5)
    tensors["empty"] = torch.empty(0, 5)
    tensors["strided"] = torch.arange(20.0).reshape(4, 5).t()  # not contiguous
    with CheckpointManager(tmp_path.as_uri(), async_save=False) as manager:
        manager.save(1, tensors)
        _, restored, _ = manager.restore_latest()
    for name, tensor in tensors.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor), name
