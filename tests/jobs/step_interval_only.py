"""A correct job that checkpoints only every N steps and ignores the time interval.

Imitates the README's ``spotsim verify -- python train.py --epochs 3`` example: 48 steps against a
step interval of 100 (a Keras ``ModelCheckpoint(save_freq=100)`` or an HF Trainer ``save_steps``),
so the run ends before its first checkpoint. It reads SPOTSIM_CHECKPOINT_INTERVAL_STEPS only
(default 100) and never SPOTSIM_CHECKPOINT_INTERVAL; saving and resuming are otherwise correct,
and there is no final checkpoint (the trained model goes to SPOTSIM_OUTPUT_DIR only).

Verdict: ``spotsim verify`` must say INCONCLUSIVE: no checkpoint was committed before any kill, so
no resume was tested (every attempt starts from scratch, which is right here).

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS (100), STORAGE_EMULATOR_HOST, TOTAL_STEPS (48), STEP_SLEEP (0.01).
"""

import sys

import _jobkit as kit


def main() -> int:
    store, total = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 48)
    every = kit.env_int("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", 100)  # the time interval is never consulted
    restored = kit.restore_latest(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if step % every == 0:
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "periodic")
    kit.write_output(state)
    kit.emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
