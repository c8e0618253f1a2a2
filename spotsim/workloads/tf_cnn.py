"""tf-cnn: the torch-cnn network in TensorFlow/Keras, trained with a custom tf.GradientTape loop.

Same data (scikit-learn's 8x8 digits, the same fixed 1,500/297 split), same
layers (two padded 3x3 convolutions each followed by 2x2 max-pooling, then
120-84-10 fully connected), Adam and cross-entropy as ``torch_cnn``.

The default 15,000 steps (as torch-cnn) took 25-27 s on the 2-core development
machine (one TensorFlow thread; ~1.2 ms a step plus ~8 s of imports and tracing).

Resume is bit-exact: ``TFState`` checkpoints the weights, Adam's slots and
the ``tf.data`` iterator (its position and shuffle buffer). The pipeline is
built right after ``tf.random.set_seed(seed)``, so every attempt derives the
same shuffle seeds; op determinism is on and TensorFlow runs on one thread.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Quiets most of TensorFlow's C++ logging; its oneDNN notice, printed before absl starts, still shows.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spotsim.checkpoint.tf_adapter import TFState  # noqa: E402
from spotsim.workloads import common  # noqa: E402

NAME = "tf-cnn"
STEPS, BATCH_SIZE = 15_000, 32


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch-cnn's digits in NHWC layout."""
    x, y, x_held_out, y_held_out = common.digits()
    return x[..., None], y, x_held_out[..., None], y_held_out


def deterministic(seed: int) -> None:
    """One thread, deterministic ops, and every Keras/TF/numpy/python seed set."""
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)


def pipeline(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches, reshuffled each epoch, repeated forever.

    The shuffle seeds derive from the global seed as well as ``seed``; setting
    the global seed here makes them the same in every attempt.
    """
    tf.random.set_seed(seed)
    data = tf.data.Dataset.from_tensor_slices((x, y))
    data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size, drop_remainder=True).repeat()


def net() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(120, activation="relu"),
            keras.layers.Dense(84, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


class TFClassifierJob:
    """The CNN, Adam and the data iterator: a :class:`~spotsim.workloads.common.TrainingJob`."""

    def __init__(self, args: argparse.Namespace) -> None:
        deterministic(args.seed)
        x, y, self.x_held_out, self.y_held_out = digits()
        self.batches = iter(pipeline(x, y, args.batch_size, args.seed))
        self.model = net()
        self.optimizer = keras.optimizers.Adam(1e-3)
        self.checkpoint = TFState(self.model, self.optimizer, data=self.batches)
        self.steps_per_epoch = len(x) // args.batch_size
        self._step = tf.function(self._train_step)

    def _train_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        return loss

    def warm_up(self) -> None:
        """Trace the training step and run it once on a batch of zeros, then put every variable back.

        A ``tf.function``'s first call traces it and optimises its graph: most of
        a second here, several hundred times the step. The run builds Adam's slots
        (as a restore would) and moves the weights, the slots and the step count;
        all get their earlier values back. The data iterator is not touched and
        the step draws no random numbers.
        """
        x_spec, y_spec = self.batches.element_spec
        if not self.optimizer.built:  # so the snapshot below includes the slots
            self.optimizer.build(self.model.trainable_variables)
        variables = [*self.model.variables, *self.optimizer.variables]
        before = [v.numpy() for v in variables]
        self._step(tf.zeros(x_spec.shape, x_spec.dtype), tf.zeros(y_spec.shape, y_spec.dtype))
        for variable, value in zip(variables, before, strict=True):
            variable.assign(value)

    def train_step(self) -> float:
        x, y = next(self.batches)
        return float(self._step(x, y))

    def state_dict(self) -> dict:
        return self.checkpoint.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint.load_state_dict(state)

    def write_outputs(self, out_dir: Path) -> None:
        final = out_dir / "model.weights.h5"
        partial = common.atomic_path(final, suffix=".weights.h5")  # Keras insists on the suffix
        self.model.save_weights(partial)
        os.replace(partial, final)

    def evaluate(self) -> float:
        predicted = np.argmax(self.model(self.x_held_out, training=False), axis=1)
        return float(np.mean(predicted == self.y_held_out))


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__name__, __doc__, steps=STEPS, batch_size=BATCH_SIZE, max_batch_size=common.DIGITS_TRAIN_SIZE)
    return common.main(p.parse_args(argv), TFClassifierJob, name=NAME, framework="tensorflow")


if __name__ == "__main__":
    common.exit_now(main())
