"""A correct job that lingers after ``done``: it sleeps SLOW_EXIT seconds before exiting 0.

Imitates TensorFlow/Keras teardown (thread pools, the profiler, ``atexit`` hooks) that keeps a
finished process alive for a second or two. Checkpointing is correct (whole ``ckpt-<step>.npz``
objects, resume from the highest, a final checkpoint). A harness that kills it during the sleep
must still count the run as finished and never relaunch it.

Verdict: ``spotsim verify`` must PASS it; ``spotsim run`` must report it completed without an
extra attempt after ``done``.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01), SLOW_EXIT (1.5 s).
"""

import sys
import time

import _jobkit as kit


def main() -> int:
    store, total, policy = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 200), kit.Policy()
    restored = kit.restore_latest(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if step < total and policy.due(step):
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "periodic")
            policy.saved()
    kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "final")
    kit.write_output(state)
    kit.emit("done", step=step)
    time.sleep(kit.env_float("SLOW_EXIT", 1.5))  # framework teardown
    return 0


if __name__ == "__main__":
    sys.exit(main())
