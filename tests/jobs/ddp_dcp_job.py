"""A data-parallel torch job as its tutorials write it: DDP on gloo, checkpoints with ``torch.distributed.checkpoint``.

Run under ``torchrun`` (any number of nodes and processes). Every rank joins ``dcp.save`` into
``step-N/`` under the directory ``SPOTSIM_CHECKPOINT_URI`` (``file://`` only) names; DCP's coordinator
writes ``.metadata`` last, so a directory without it is a torn save and is skipped on resume. Global
rank 0 writes the contract's events itself (it does not import spotsim). The batch of step n is a pure
function of n, split across ranks, so a resume at the same world size is bit-exact. The final weights go
to ``$SPOTSIM_OUTPUT_DIR/model.pt``.

Env: SPOTSIM_CHECKPOINT_URI (file://), SPOTSIM_EVENTS, SPOTSIM_OUTPUT_DIR, SPOTSIM_CHECKPOINT_INTERVAL_STEPS
(default 20), TOTAL_STEPS (200), STEP_SLEEP (0.01), PG_TIMEOUT (60: seconds a collective, or the group's
set-up, waits for a peer), CRASH_ONCE_AT (rank 1 raises at this step, once per checkpoint directory).
"""

import datetime
import json
import os
import re
import time
from urllib.parse import unquote, urlparse

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel

ROOT = unquote(urlparse(os.environ["SPOTSIM_CHECKPOINT_URI"]).path)
EVERY = int(os.environ.get("SPOTSIM_CHECKPOINT_INTERVAL_STEPS") or 20)
TOTAL = int(os.environ.get("TOTAL_STEPS") or 200)
SLEEP = float(os.environ.get("STEP_SLEEP") or 0.01)
PG_TIMEOUT = float(os.environ.get("PG_TIMEOUT") or 60)
CRASH_ONCE_AT = int(os.environ.get("CRASH_ONCE_AT") or 0)
BATCH = 32


def emit(event: str, **fields) -> None:
    if dist.get_rank() == 0 and (path := os.environ.get("SPOTSIM_EVENTS")):
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(BATCH, 16, generator=g), torch.randint(0, 4, (BATCH,), generator=g)
    rank, world = dist.get_rank(), dist.get_world_size()
    return x[rank::world], y[rank::world]


def latest() -> int | None:
    """The newest step whose save is complete (DCP wrote its .metadata)."""
    steps = [int(m.group(1)) for name in os.listdir(ROOT) if (m := re.fullmatch(r"step-(\d+)", name))]
    done = [s for s in steps if os.path.exists(os.path.join(ROOT, f"step-{s}", ".metadata"))]
    return max(done, default=None)


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=PG_TIMEOUT))
    torch.manual_seed(0)
    model = DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    os.makedirs(ROOT, exist_ok=True)
    step = latest() or 0
    if step:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=os.path.join(ROOT, f"step-{step}"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    emit("start", resumed_step=step or None)
    while step < TOTAL:
        x, y = batch(step)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        step += 1
        time.sleep(SLEEP)
        crashed_once = os.path.join(ROOT, "crashed-once")
        if step == CRASH_ONCE_AT and dist.get_rank() == 1 and not os.path.exists(crashed_once):
            open(crashed_once, "w").close()
            raise RuntimeError(f"a bug at step {step}")
        emit("step", step=step)
        if step % EVERY == 0 and step < TOTAL:
            started = time.perf_counter()
            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=os.path.join(ROOT, f"step-{step}"))
            emit("checkpoint", step=step, blocking_s=time.perf_counter() - started)
    if dist.get_rank() == 0 and (out := os.environ.get("SPOTSIM_OUTPUT_DIR")):
        os.makedirs(out, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(out, "model.pt"))
    emit("done", step=step)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
