"""A job that resumes from its second-newest checkpoint, behind the last one it reported.

Imitates "the newest checkpoint may still be uploading, so take the one before it" logic (and the
Keras run that reported a checkpoint at step 45 and resumed at 40): every checkpoint is a whole
``ckpt-<step>.npz`` object, the last two are kept, and a resume deliberately loads the older of
the two. The result stays bit-exact (an older checkpoint is still a correct one); only the work
since it is lost and redone.

Verdict: ``spotsim verify`` must FAIL it (resumed at a step below the last checkpoint it reported).

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01).
"""

import sys

import _jobkit as kit

KEEP = 2


def restore(store: kit.Store) -> tuple[dict, int] | None:
    steps = kit.checkpoint_steps(store)
    if not steps:
        return None
    chosen = steps[-2] if len(steps) > 1 else steps[-1]  # the bug: "the newest may be incomplete"
    state, scalars = kit.unpack(store.get(f"ckpt-{chosen}.npz"))
    return state, scalars["step"]


def save(store: kit.Store, state: dict, step: int, kind: str) -> None:
    kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, kind)
    for old in kit.checkpoint_steps(store)[:-KEEP]:
        store.delete(f"ckpt-{old}.npz")


def main() -> int:
    store, total, policy = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 200), kit.Policy()
    restored = restore(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if step == total or policy.due(step):
            save(store, state, step, "final" if step == total else "periodic")
            policy.saved()
    kit.write_output(state)
    kit.emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
