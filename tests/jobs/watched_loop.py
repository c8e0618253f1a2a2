"""A minimal job under the harness contract: checkpoint every few steps, and on a
preemption notice save an ``emergency`` checkpoint and exit 0.

Configured only through the contract's environment (``SPOTSIM_CHECKPOINT_URI``,
``SPOTSIM_EVENTS``, the interval variables; every 50 steps when none is set);
``STEP_SLEEP`` sets the step time, ``TOTAL_STEPS`` the work, ``START_SLEEP`` adds
that many seconds of start-up before the restore (a slow boot), ``SAVE_DELAY`` makes
the emergency save take that many seconds longer (a large state), and ``CRASH_AT``
makes it fail at that step, as a buggy job would.
"""

import os
import sys
import time

import numpy as np

from spotsim import CheckpointManager, PreemptionWatcher


def main() -> int:
    step_sleep, total = float(os.environ.get("STEP_SLEEP", "0.01")), int(os.environ.get("TOTAL_STEPS", "100000"))
    configured = {"SPOTSIM_CHECKPOINT_INTERVAL", "SPOTSIM_CHECKPOINT_INTERVAL_STEPS"} & os.environ.keys()
    interval = {} if configured else {"interval_steps": 50}
    crash_at = int(os.environ.get("CRASH_AT", "0"))
    time.sleep(float(os.environ.get("START_SLEEP", "0")))
    with CheckpointManager.from_env(**interval) as manager, PreemptionWatcher() as watcher:
        restored = manager.restore_latest()
        step, weights = (restored.step, restored.state["w"]) if restored else (0, np.zeros(1024))
        print("ready", flush=True)
        while step < total:
            weights = weights + 1.0  # one "training step"
            step += 1
            time.sleep(step_sleep)
            if step == crash_at:
                raise RuntimeError(f"simulated bug at step {step}")
            if watcher.preempted:
                time.sleep(float(os.environ.get("SAVE_DELAY", "0")))
                manager.save(step, {"w": weights}, kind="emergency")
                return 0
            if manager.should_save(step):
                manager.save(step, {"w": weights})
        manager.save(step, {"w": weights}, kind="final")
        manager.mark_done(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
