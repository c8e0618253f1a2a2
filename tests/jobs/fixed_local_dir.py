"""A job that ignores SPOTSIM_CHECKPOINT_URI and checkpoints to a fixed local directory.

Imitates the torch Distributed Checkpoint tutorial (``CHECKPOINT_DIR = "checkpoint"``, relative to
the working directory) and scripts with a hard-coded ``CHECKPOINT_DIR = "/tmp/checkpoints"``: the directory is
``FIXED_CKPT_DIR`` (default ``./job_checkpoint``), whatever the harness asks. Otherwise correct:
atomic saves (temp file + ``os.replace``), resume from the highest ``ckpt-<step>.npz``.

Verdict: ``spotsim verify`` must FAIL it: a fresh run's first attempt resumes from a step (the
reference run's checkpoints), because the job's state lives outside SPOTSIM_CHECKPOINT_URI.

Env: FIXED_CKPT_DIR, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
TOTAL_STEPS (200), STEP_SLEEP (0.01). SPOTSIM_CHECKPOINT_URI is deliberately not read.
"""

import os
import sys

import _jobkit as kit

CHECKPOINT_DIR = os.environ.get("FIXED_CKPT_DIR", "./job_checkpoint")


def main() -> int:
    store = kit.Store("file://" + os.path.abspath(CHECKPOINT_DIR))  # the bug: not SPOTSIM_CHECKPOINT_URI
    total, policy = kit.env_int("TOTAL_STEPS", 200), kit.Policy()
    restored = kit.restore_latest(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if step == total or policy.due(step):
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "final" if step == total else "periodic")
            policy.saved()
    kit.write_output(state)
    kit.emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
