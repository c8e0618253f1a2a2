"""A training job that does not import spotsim: it follows the harness contract by hand.

It keeps its progress in a JSON file under SPOTSIM_CHECKPOINT_URI (file:// only),
appends the contract's events to SPOTSIM_EVENTS, and counts to TOTAL_STEPS.
Checkpoints every CHECKPOINT_EVERY steps (written to a temp file, then renamed).
"""

import json
import os
import sys
import time
from urllib.parse import urlparse


def emit(event: str, **fields) -> None:
    with open(os.environ["SPOTSIM_EVENTS"], "a") as f:  # one whole line per write
        f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


def main() -> int:
    directory = urlparse(os.environ["SPOTSIM_CHECKPOINT_URI"]).path
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "progress.json")
    total, every = int(os.environ.get("TOTAL_STEPS", "200")), int(os.environ.get("CHECKPOINT_EVERY", "25"))
    step = 0
    if os.path.exists(path):
        with open(path) as f:
            step = json.load(f)["step"]
    emit("start", attempt=int(os.environ["SPOTSIM_ATTEMPT"]), resumed_step=step or None)
    if step:
        emit("step", step=step)
    while step < total:
        time.sleep(float(os.environ.get("STEP_SLEEP", "0.01")))
        step += 1
        emit("step", step=step)
        if step % every == 0:
            with open(path + ".tmp", "w") as f:
                json.dump({"step": step}, f)
            os.replace(path + ".tmp", path)
            emit("checkpoint", step=step, kind="periodic", blocking_s=0.0, persist_s=0.0, bytes=16)
    emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
