"""A correct job that reports only ``start`` and ``done``: no ``step`` and no ``checkpoint`` events.

Imitates a hand-instrumented script (docs/contract.md, "Events the job writes") whose author wrote the
first and last events and skipped the rest. Its checkpointing is right (whole ``ckpt-<step>.npz``
objects, resume from the highest), but nothing tells the harness where a kill lands.

Verdict: ``spotsim verify`` must say INCONCLUSIVE: no step events, so kills cannot be placed.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01).
"""

import sys

import _jobkit as kit


def main() -> int:
    store, total, policy = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 200), kit.Policy()
    restored = kit.restore_latest(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)  # no "step" event: the gap under test
        if step == total or policy.due(step):
            store.put(f"ckpt-{step}.npz", kit.pack(state, step=step))  # and no "checkpoint" event
            policy.saved()
    kit.write_output(state)
    kit.emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
