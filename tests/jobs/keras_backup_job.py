"""A Keras job that survives preemption with Keras's own ``BackupAndRestore`` callback.

``model.fit`` with ``tf.keras.callbacks.BackupAndRestore(backup_dir, save_freq=N)``: Keras saves the
model, the optimizer and its epoch/batch counters into the local directory that
``SPOTSIM_CHECKPOINT_URI`` (``file://`` only) names every N batches, and on the next launch restores
them and continues mid-epoch. A second callback reports the contract's events: ``start`` with the
step Keras restored, ``step`` per batch, ``checkpoint`` after each backup, ``done`` at the end. Data
order is fixed (``shuffle=False``), seeds are set and ops are deterministic, so a correct resume is
bit-exact. The final weights go to ``$SPOTSIM_OUTPUT_DIR/model.weights.h5``.

What ``spotsim verify`` says of it is the point. With Keras 3.15, a resume from a mid-epoch backup
starts that epoch over from its first batch, so the run ends 10 optimizer steps past the reference
(FAIL: final step differs); and the backup's ``.h5`` files are written in place, so a kill inside a
save leaves a truncated file that the resume cannot open (FAIL: crash).

Env: SPOTSIM_CHECKPOINT_URI (file://), SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS (default 10), EPOCHS (4), STEP_SLEEP (0.01).
"""

import json
import os
import sys
import time
from urllib.parse import unquote, urlparse

import numpy as np
import tensorflow as tf

STEPS_PER_EPOCH, BATCH = 20, 16


def emit(event: str, **fields) -> None:
    with open(os.environ["SPOTSIM_EVENTS"], "a") as f:
        f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


class ContractEvents(tf.keras.callbacks.Callback):
    """The harness contract's events, from Keras's own counters."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every

    def on_train_begin(self, logs=None) -> None:  # after BackupAndRestore restored the counters
        step = int(self.model.optimizer.iterations.numpy())
        emit("start", attempt=int(os.environ.get("SPOTSIM_ATTEMPT", "0")), resumed_step=step or None)

    def on_train_batch_end(self, batch, logs=None) -> None:  # BackupAndRestore, listed first, has saved
        step = int(self.model.optimizer.iterations.numpy())
        time.sleep(float(os.environ.get("STEP_SLEEP", "0.01")))
        emit("step", step=step)
        if step % self.every == 0:
            emit("checkpoint", step=step, kind="periodic", blocking_s=0.0, persist_s=0.0, bytes=0)


def main() -> int:
    tf.keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEPS_PER_EPOCH * BATCH, 16)).astype("float32")
    y = rng.integers(0, 4, STEPS_PER_EPOCH * BATCH)
    model = tf.keras.Sequential(
        [tf.keras.Input((16,)), tf.keras.layers.Dense(32, activation="relu"), tf.keras.layers.Dense(4)]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-2), loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    every = int(os.environ.get("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", "10"))
    backup = unquote(urlparse(os.environ["SPOTSIM_CHECKPOINT_URI"]).path)
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(backup, save_freq=every, delete_checkpoint=False),
        ContractEvents(every),
    ]
    epochs = int(os.environ.get("EPOCHS", "4"))
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    out = os.environ.get("SPOTSIM_OUTPUT_DIR", ".")
    os.makedirs(out, exist_ok=True)
    model.save_weights(os.path.join(out, "tmp.weights.h5"))
    os.replace(os.path.join(out, "tmp.weights.h5"), os.path.join(out, "model.weights.h5"))
    emit("done", step=int(model.optimizer.iterations.numpy()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
