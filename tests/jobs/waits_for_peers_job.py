"""A DDP job whose hand-rolled checkpoint waits for its peers without a deadline: the save that hangs.

Every ``SAVE_EVERY`` steps each rank writes ``step-N/rank-R.pt`` under the ``file://`` directory
``SPOTSIM_CHECKPOINT_URI`` names, then polls until every rank's file is there (a barrier through the
filesystem). A rank killed before its file is written leaves a partial directory, and its peers poll for
the missing file forever, outside any collective, so no timeout of torch's ends it (the hang reported
against NeMo-style savers). The rank on node 0 (``SPOTSIM_NODE``) sleeps ``SLOW_SAVE`` seconds before
writing its file, so a kill of node 0 placed at a save step lands inside its save. Global rank 0 writes
the contract's events.

Env: SPOTSIM_CHECKPOINT_URI (file://), SPOTSIM_EVENTS, TOTAL_STEPS (200), SAVE_EVERY (20), SLOW_SAVE (1.0).
"""

import datetime
import json
import os
import time
from urllib.parse import unquote, urlparse

import torch
import torch.distributed as dist

ROOT = unquote(urlparse(os.environ["SPOTSIM_CHECKPOINT_URI"]).path)
TOTAL = int(os.environ.get("TOTAL_STEPS") or 200)
SAVE_EVERY = int(os.environ.get("SAVE_EVERY") or 20)
SLOW_SAVE = float(os.environ.get("SLOW_SAVE") or 1.0)


def emit(event: str, **fields) -> None:
    if dist.get_rank() == 0 and (path := os.environ.get("SPOTSIM_EVENTS")):
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


def save(step: int, weights: torch.Tensor) -> None:
    directory = os.path.join(ROOT, f"step-{step}")
    os.makedirs(directory, exist_ok=True)
    if os.environ.get("SPOTSIM_NODE") == "0":
        time.sleep(SLOW_SAVE)
    torch.save(weights, os.path.join(directory, f"rank-{dist.get_rank()}.pt"))
    while not all(os.path.exists(os.path.join(directory, f"rank-{r}.pt")) for r in range(dist.get_world_size())):
        time.sleep(0.05)  # no deadline: a dead peer's file never comes
    emit("checkpoint", step=step)


def main() -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    weights = torch.zeros(8)
    emit("start", resumed_step=None)
    for step in range(1, TOTAL + 1):
        dist.all_reduce(weights)
        weights += 1.0
        time.sleep(0.01)
        emit("step", step=step)
        if step % SAVE_EVERY == 0:
            save(step, weights)
    emit("done", step=TOTAL)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
