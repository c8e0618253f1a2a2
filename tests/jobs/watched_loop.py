"""A minimal job under the harness contract: checkpoint every few steps, and on a
preemption notice save an ``emergency`` checkpoint and exit 0.

Configured only through the contract's environment (``SPOTSIM_CHECKPOINT_URI``,
``SPOTSIM_EVENTS``); ``STEP_SLEEP`` sets the step time and ``TOTAL_STEPS`` the work.
"""

import os
import sys
import time

import numpy as np

from spotsim import CheckpointManager, PreemptionWatcher


def main() -> int:
    step_sleep, total = float(os.environ.get("STEP_SLEEP", "0.01")), int(os.environ.get("TOTAL_STEPS", "100000"))
    with CheckpointManager.from_env(interval_steps=50) as manager, PreemptionWatcher() as watcher:
        restored = manager.restore_latest()
        step, weights = (restored.step, restored.state["w"]) if restored else (0, np.zeros(1024))
        print("ready", flush=True)
        while step < total:
            weights = weights + 1.0  # one "training step"
            step += 1
            time.sleep(step_sleep)
            if watcher.preempted:
                manager.save(step, {"w": weights}, kind="emergency")
                return 0
            if manager.should_save(step):
                manager.save(step, {"w": weights})
        manager.save(step, {"w": weights}, kind="final")
        manager.mark_done(step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
