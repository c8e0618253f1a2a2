"""A job that never exits after ``done``: it keeps reporting ``done`` forever.

Imitates a Spot VM training script with a polling loop (seed 001 polls the metadata server for
preemption) that outlives the training: a ``while True`` loop, here writing ``done`` every 15 ms.
Training and checkpointing are correct (whole ``ckpt-<step>.npz`` objects, resume from the
highest, a final checkpoint, the model written before the first ``done``).

Verdict: the harness must stop it after a short wait once ``done`` is written, count the run as
finished and never relaunch it; ``spotsim verify`` must then PASS it.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01).
"""

import time

import _jobkit as kit


def main() -> None:
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
    while True:  # the bug: nothing ever breaks out
        kit.emit("done", step=step)
        time.sleep(0.015)


if __name__ == "__main__":
    main()
