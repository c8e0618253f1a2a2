"""A torch job that checkpoints with ``torch.distributed.checkpoint`` (DCP), as its tutorial does.

Model and optimizer go through ``get_state_dict``/``set_state_dict`` and ``dcp.save``/``dcp.load``
(one process, no process group), into the local directory that ``SPOTSIM_CHECKPOINT_URI``
(``file://`` only) names. ``DCP_LAYOUT`` picks how:

- ``in-place`` (the tutorial: one ``checkpoint/`` directory, saved over): DCP writes the shard
  files, then ``.metadata``, in place. A kill inside a save leaves new shards beside the old
  metadata, or a half-written file: the resume loads a mixture, or fails to load.
- ``per-step``: each save goes to its own ``step-N/`` directory and a ``latest`` file naming it is
  replaced atomically afterwards, so a torn save is never the one loaded.

The step counter is saved with the checkpoint; the batch of step n is a function of n, so a
correct resume is bit-exact. The final weights go to ``$SPOTSIM_OUTPUT_DIR/model.pt``.

Verdict: ``spotsim verify --bucket file://… --artifact model.pt`` must PASS ``per-step``, and FAIL
``in-place`` when a kill lands inside a save.

Env: SPOTSIM_CHECKPOINT_URI (file://), SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS (default 20), DCP_LAYOUT (per-step), TOTAL_STEPS (120), STEP_SLEEP (0.005).
"""

import json
import os
import sys
import time
from urllib.parse import unquote, urlparse

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

ROOT = unquote(urlparse(os.environ["SPOTSIM_CHECKPOINT_URI"]).path)
LAYOUT = os.environ.get("DCP_LAYOUT", "per-step")


def emit(event: str, **fields) -> None:
    with open(os.environ["SPOTSIM_EVENTS"], "a") as f:
        f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)


def checkpoint_dir(step: int) -> str:
    return os.path.join(ROOT, "checkpoint" if LAYOUT == "in-place" else f"step-{step}")


def latest() -> str | None:
    if LAYOUT == "in-place":
        path = checkpoint_dir(0)
        return path if os.path.exists(os.path.join(path, ".metadata")) else None
    try:
        with open(os.path.join(ROOT, "latest")) as f:
            return os.path.join(ROOT, f.read().strip())
    except FileNotFoundError:
        return None


def save(model, optimizer, step: int, kind: str) -> None:
    model_state, optim_state = get_state_dict(model, optimizer)
    path = checkpoint_dir(step)
    dcp.save({"model": model_state, "optim": optim_state, "step": torch.tensor(step)}, checkpoint_id=path)
    if LAYOUT == "per-step":
        with open(os.path.join(ROOT, "latest.tmp"), "w") as f:
            f.write(os.path.basename(path))
        os.replace(os.path.join(ROOT, "latest.tmp"), os.path.join(ROOT, "latest"))
    emit("checkpoint", step=step, kind=kind, blocking_s=0.0, persist_s=0.0, bytes=0)


def main() -> int:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    os.makedirs(ROOT, exist_ok=True)
    step, path = 0, latest()
    if path is not None:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state, "step": torch.tensor(0)}
        dcp.load(state, checkpoint_id=path)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        step = int(state["step"])
    emit("start", attempt=int(os.environ.get("SPOTSIM_ATTEMPT", "0")), resumed_step=step or None)
    total = int(os.environ.get("TOTAL_STEPS", "120"))
    every = int(os.environ.get("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", "20"))
    while step < total:
        x, y = batch(step + 1)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        time.sleep(float(os.environ.get("STEP_SLEEP", "0.005")))
        emit("step", step=step)
        if step % every == 0 and step < total:
            save(model, optimizer, step, "periodic")
    save(model, optimizer, step, "final")
    out = os.environ.get("SPOTSIM_OUTPUT_DIR", ".")
    os.makedirs(out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(out, "model.pt.tmp"))
    os.replace(os.path.join(out, "model.pt.tmp"), os.path.join(out, "model.pt"))
    emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
