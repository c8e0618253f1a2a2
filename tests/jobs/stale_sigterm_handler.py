"""A job whose SIGTERM handler saves an emergency checkpoint at a stale step: always step 0.

Imitates a common ``train.py`` pattern: module-level ``current_epoch = 0`` / ``current_step = 0`` that
the training loop never updates (it counts in a local ``global_step``), and
``signal.signal(SIGTERM, handle_shutdown)`` where the handler saves the live weights with
``current_step`` into the single ``latest.npz`` (``latest.pt`` in the torch original), then ``sys.exit(0)``.
It reports that emergency checkpoint truthfully, at step 0. Periodic checkpoints are correct, so
under SIGKILL alone it resumes bit-exactly; after a SIGTERM it restarts at step 0 from trained
weights and retrains all of them.

Verdict: ``spotsim verify --kill sigterm`` must FAIL it (emergency checkpoint at step 0, below the
step reached); with ``--kill sigkill`` it passes.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01).
"""

import signal
import sys

import _jobkit as kit

# Set up signal handler for graceful shutdown (as in the seed)
store = None
state = None
current_epoch = 0
current_step = 0


def handle_shutdown(signum, frame):
    """Save a checkpoint when the VM is being preempted."""
    print(f"Received signal {signum}, saving emergency checkpoint...", flush=True)
    if store and state:
        kit.save_checkpoint(store, "latest.npz", state, current_step, "emergency", epoch=current_epoch)
    sys.exit(0)


signal.signal(signal.SIGTERM, handle_shutdown)


def train(start_step: int, total: int) -> int:
    """Training loop with periodic checkpointing; returns the last step."""
    policy = kit.Policy()
    global_step = start_step  # the handler's current_step is never updated from this
    while global_step < total:
        global_step += 1
        kit.train_step(state, global_step)
        kit.emit("step", step=global_step)
        if global_step < total and policy.due(global_step):
            kit.save_checkpoint(store, "latest.npz", state, global_step, "periodic", epoch=0)
            policy.saved()
    kit.save_checkpoint(store, "latest.npz", state, global_step, "final", epoch=0)
    return global_step


if __name__ == "__main__":
    store = kit.Store.from_env()
    if (data := store.get("latest.npz")) is not None:
        state, scalars = kit.unpack(data)
        start_step = scalars["step"]
    else:
        state, start_step = kit.init_state(), 0
    kit.emit("start", attempt=kit.attempt(), resumed_step=start_step if data is not None else None)
    step = train(start_step, kit.env_int("TOTAL_STEPS", 200))
    kit.write_output(state)
    kit.emit("done", step=step)
