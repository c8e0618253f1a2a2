"""Bit-exact resume for TensorFlow, in process: a mid-epoch checkpoint restored into
fresh objects must continue exactly as the uninterrupted run did."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.slow  # trains a real model

from spotsim import CheckpointManager  # noqa: E402
from spotsim.checkpoint.tf_adapter import TFState  # noqa: E402
from spotsim.errors import CheckpointError, CorruptCheckpoint  # noqa: E402

STEPS, CHECKPOINT_AT = 40, 17  # 17 is mid-epoch: 10 batches per epoch


@pytest.fixture(autouse=True)
def deterministic_ops():
    tf.config.experimental.enable_op_determinism()


def dataset() -> tf.data.Dataset:
    """The job's data pipeline. Its shuffle seeds derive from the global seed, which every
    attempt of a real job sets to the same value; pin it so only the iterator state varies."""
    tf.random.set_seed(7)
    rs = np.random.RandomState(42)
    x, y = rs.standard_normal((160, 8, 8, 1)).astype(np.float32), rs.randint(0, 10, 160)
    data = tf.data.Dataset.from_tensor_slices((x, y))
    return data.shuffle(160, seed=3, reshuffle_each_iteration=True).batch(16).repeat()


def build(seed: int = 0) -> SimpleNamespace:
    """Fresh training objects; another ``seed`` gives other weights, dropout seeds and noise."""
    data = iter(dataset())
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Dropout(0.3),  # draws from a Keras SeedGenerator every step
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    return SimpleNamespace(
        model=model,
        optimizer=keras.optimizers.Adam(1e-2),
        step=tf.Variable(0, dtype=tf.int64),
        rng=tf.random.Generator.from_seed(seed),
        data=data,
    )


def checkpointed(job: SimpleNamespace, *, iterator: bool = True) -> TFState:
    return TFState(job.model, job.optimizer, job.step, job.rng, job.data if iterator else None)


def train(job: SimpleNamespace, stop: int) -> None:
    while int(job.step) < stop:
        x, y = next(job.data)
        x = x + 0.1 * job.rng.normal(tf.shape(x))  # noise from the registered generator
        with tf.GradientTape() as tape:
            logits = job.model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grads = tape.gradient(loss, job.model.trainable_variables)
        job.optimizer.apply_gradients(zip(grads, job.model.trainable_variables, strict=True))
        job.step.assign_add(1)


def values(job: SimpleNamespace) -> dict[str, np.ndarray]:
    """Every model weight and optimizer variable (moments, iteration count), by path."""
    variables = {f"model/{i}/{v.name}": v for i, v in enumerate(job.model.weights)}
    variables |= {f"optimizer/{i}": v for i, v in enumerate(job.optimizer.variables)}  # names embed model names
    return {name: np.array(v.numpy()) for name, v in variables.items()}


def resume(tmp_path, *, layout: str = "directory", iterator: bool = True) -> SimpleNamespace:
    """Train to CHECKPOINT_AT, save, restore into fresh objects, train on to STEPS."""
    first = build()
    train(first, CHECKPOINT_AT)
    with CheckpointManager(tmp_path.as_uri(), layout=layout, framework="tensorflow") as manager:
        manager.save(CHECKPOINT_AT, checkpointed(first, iterator=iterator).state_dict())
    resumed = build(seed=123)  # fresh objects with different initial weights and random state
    with CheckpointManager(tmp_path.as_uri(), layout=layout) as manager:
        step, state, _ = manager.restore_latest()
    assert step == CHECKPOINT_AT
    checkpointed(resumed, iterator=iterator).load_state_dict(state)
    assert int(resumed.step) == CHECKPOINT_AT
    train(resumed, STEPS)
    return resumed


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    tf.config.experimental.enable_op_determinism()
    job = build()
    train(job, STEPS)
    return values(job)


@pytest.mark.parametrize("layout", ["directory", "archive"])
def test_resume_mid_epoch_is_bit_exact(tmp_path, reference, layout):
    got = values(resume(tmp_path, layout=layout))
    assert got.keys() == reference.keys()
    for name in reference:
        assert np.array_equal(reference[name], got[name]), f"{name} differs after resume"


def test_resume_without_iterator_state_diverges(tmp_path, reference):
    """The check above can fail: leave the iterator out and the resumed run sees other batches."""
    got = values(resume(tmp_path, iterator=False))
    assert not all(np.array_equal(reference[name], got[name]) for name in reference)


@pytest.mark.parametrize(
    "files",
    [
        {"ckpt.index": b"", "../ckpt.data-00000-of-00001": b"x"},
        {"ckpt.index": b"", "ckpt.data": "not bytes"},
        {"other.index": b""},
    ],
)
def test_untrusted_file_names_and_types_are_rejected(files):
    state = {"tf_checkpoint": {"files": files, "prefix": "ckpt"}, "registered": ["model"]}
    with pytest.raises(CorruptCheckpoint):
        checkpointed(build()).load_state_dict(state)


def test_checkpoint_missing_a_registered_part_is_refused():
    job = build()
    state = TFState(job.model).state_dict()
    with pytest.raises(KeyError, match="optimizer"):
        checkpointed(build(seed=1)).load_state_dict(state)


def test_checkpoint_of_another_model_is_refused():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    state = TFState(other).state_dict()
    with pytest.raises((CheckpointError, CorruptCheckpoint)):
        TFState(build().model).load_state_dict(state)
