"""A small torch job with a deliberate resume bug, chosen by ``BUG``, for ``spotsim verify`` to catch.

- ``none``: correct (the control: verify must pass it).
- ``optimizer``: the optimizer is never registered, so a resume starts Adam afresh.
- ``rng-data``: neither the RNG nor the data position is registered: a resume
  reshuffles the epoch and redraws dropout from wherever the RNG happens to be.
- ``never-load``: it finds its checkpoint, logs that it resumes, and trains
  from step 0 anyway (a restore whose result is never loaded into the objects).
"""

import os
import sys

import torch

from spotsim import CheckpointManager, PreemptionWatcher
from spotsim.checkpoint.torch_adapter import ResumableBatchSampler, TorchState

BUG = os.environ.get("BUG", "none")
STEPS, SAMPLES, BATCH = int(os.environ.get("TOTAL_STEPS", "300")), 256, 16


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Dropout(0.2), torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def batches(sampler, registered: bool):
    """The sampler's batches; without a registered position, a fresh random order each epoch."""
    while True:
        if registered:
            yield from sampler
        else:
            yield from torch.randperm(SAMPLES).split(BATCH)


def main() -> int:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(SAMPLES, 16, generator=g), torch.randint(0, 4, (SAMPLES,), generator=g)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler = ResumableBatchSampler(SAMPLES, BATCH, seed=2)
    job = {
        "none": TorchState(model, optimizer, data=sampler),
        "optimizer": TorchState(model, None, data=sampler),
        "rng-data": TorchState(model, optimizer, rng=False),
        "never-load": TorchState(model, optimizer, data=sampler),
    }[BUG]
    with CheckpointManager.from_env(framework="torch") as manager, PreemptionWatcher() as watcher:
        step = 0
        if BUG == "never-load":
            if manager.steps():
                print(f"found checkpoint at step {manager.steps()[-1]}", flush=True)  # …and never loads it
        elif restored := manager.restore_latest():
            step = restored.step
            job.load_state_dict(restored.state)
        for idx in batches(sampler, registered=BUG != "rng-data"):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if watcher.preempted:
                manager.save(step, job.state_dict(), kind="emergency")
                return 0
            if step == STEPS:
                break
            if manager.should_save(step):
                manager.save(step, job.state_dict())
        manager.save(step, job.state_dict(), kind="final")
        manager.mark_done(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
