"""A job that repeats an epoch on every resume: it restarts AT the epoch its checkpoint finished.

Imitates a common hand-written checkpoint manager, without torch: save locally first (SPOTSIM_LOCAL_DIR or
TMPDIR), then upload that file whole as ``checkpoint_latest.npz`` (``blob.upload_from_filename``;
on ``file://`` a copy renamed into place), and resume by downloading that blob. Checkpoints are
taken at epoch end only (EPOCH_STEPS steps each), storing the epoch just finished where a correct
job stores ``epoch + 1``; ``for epoch in range(start_epoch, TOTAL_EPOCHS)`` then runs that epoch again
while ``global_step`` keeps counting. Each resume adds one epoch: 240 steps instead of 200.

Verdict: ``spotsim verify`` must FAIL it (final step differs from the reference's).

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_LOCAL_DIR / TMPDIR, STORAGE_EMULATOR_HOST, EPOCH_STEPS (40), TOTAL_EPOCHS (5),
STEP_SLEEP (0.01). The interval variables are ignored: checkpoints are per epoch.
"""

import os
import sys
import tempfile
import time

import _jobkit as kit

LOCAL_DIR = os.environ.get("SPOTSIM_LOCAL_DIR") or tempfile.gettempdir()


def save_checkpoint(store: kit.Store, state: dict, epoch: int, step: int, kind: str) -> None:
    t0 = time.monotonic()
    local_path = os.path.join(LOCAL_DIR, f"checkpoint_epoch{epoch}_step{step}.npz")
    with open(local_path, "wb") as f:  # save locally first
        f.write(kit.pack(state, epoch=epoch, step=step))
    with open(local_path, "rb") as f:  # then upload the file whole
        data = f.read()
    store.put("checkpoint_latest.npz", data)
    os.remove(local_path)  # such managers keep the last two local copies; none are needed here
    elapsed = time.monotonic() - t0
    kit.emit("checkpoint", step=step, kind=kind, blocking_s=elapsed, persist_s=elapsed, bytes=len(data))


def main() -> int:
    store = kit.Store.from_env()
    epoch_steps, total_epochs = kit.env_int("EPOCH_STEPS", 40), kit.env_int("TOTAL_EPOCHS", 5)
    os.makedirs(LOCAL_DIR, exist_ok=True)
    if (data := store.get("checkpoint_latest.npz")) is not None:
        state, scalars = kit.unpack(data)
        start_epoch, global_step = scalars["epoch"], scalars["step"]
    else:
        state, start_epoch, global_step = kit.init_state(), 0, 0
    kit.emit("start", attempt=kit.attempt(), resumed_step=global_step if data is not None else None)
    for epoch in range(start_epoch, total_epochs):
        for _ in range(epoch_steps):
            global_step += 1
            kit.train_step(state, global_step)
            kit.emit("step", step=global_step)
        kind = "final" if epoch == total_epochs - 1 else "periodic"
        save_checkpoint(store, state, epoch, global_step, kind)  # the bug: epoch, not epoch + 1
    kit.write_output(state)
    kit.emit("done", step=global_step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
