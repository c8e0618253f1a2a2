"""A correct job written against plain google-cloud-storage, the way a careful user would.

Imitates the usual torch.save-then-upload GCS boilerplate, done right: every checkpoint is one
object ``ckpt-<step>.npz`` uploaded whole (a GCS object appears atomically; on ``file://`` a temp
file is renamed into place), and a resume lists the objects and loads the highest step. On SIGTERM
it finishes the current step, saves an ``emergency`` checkpoint at the true step and exits 0.

Verdict: ``spotsim verify`` must PASS it (with ``--kill sigkill`` and ``--kill sigterm``).

``AFTER_DONE`` gives it the habits of real jobs once they wrote ``done``, which the harness must
survive without relaunching the finished job:

- ``slow-exit``: it takes ``SLOW_EXIT`` seconds (default 1.5) to exit, as TensorFlow's teardown does;
- ``loop``: it never exits, writing ``done`` every 15 ms, like a metadata-polling loop that
  outlives the training. The harness must stop it after a short wait and count the run as finished.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01), AFTER_DONE, SLOW_EXIT.
"""

import os
import signal
import sys
import time

import _jobkit as kit

preempted = False


def on_sigterm(signum, frame) -> None:
    global preempted
    preempted = True  # acted on between steps, never inside one


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    store, total, policy = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 200), kit.Policy()
    restored = kit.restore_latest(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if preempted:
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "emergency")
            return 0
        if step < total and policy.due(step):
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "periodic")
            policy.saved()
    kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "final")
    kit.write_output(state)
    kit.emit("done", step=step)
    after_done(step)
    return 0


def after_done(step: int) -> None:
    habit = os.environ.get("AFTER_DONE", "")
    if habit == "slow-exit":
        time.sleep(kit.env_float("SLOW_EXIT", 1.5))  # framework teardown
    while habit == "loop":  # the bug: nothing ever breaks out
        kit.emit("done", step=step)
        time.sleep(0.015)


if __name__ == "__main__":
    sys.exit(main())
