"""TensorFlow adapter: live Keras/TF training objects to a checkpoint state and back.

``TFState`` gathers what an uninterrupted run would still have in memory: the
Keras model, its optimizer, a step counter, a ``tf.random.Generator`` and a
``tf.data`` iterator, so a resume in the middle of an epoch sees the same
batches and the same random numbers.

TensorFlow serialises them itself (``tf.train.Checkpoint``), but only into a
private scratch directory on local disk: the files it writes travel inside
the spotsim state as ``bytes``, so the bucket sees nothing but spotsim's
crash-safe, checksummed objects, never TensorFlow's own non-atomic writes to
``gs://`` paths. Restoring parses the files with TensorFlow's checkpoint
reader (protocol buffers and tensors, never pickle).

Random state that ``tf.train.Checkpoint`` does not track cannot be resumed:
the op-level seeds of ``tf.random.normal(seed=...)`` and friends, and Python
or numpy RNGs. Draw randomness from a registered ``tf.random.Generator``.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf

from spotsim.checkpoint.tree import TrainingState
from spotsim.errors import CheckpointError, CorruptCheckpoint

PREFIX = "ckpt"
# Keras 3 keeps the state of Dropout and other random layers in SeedGenerators,
# which are not TensorFlow trackables; they are saved under this extra name.
_SEEDS = "model_seed_states"
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


class TFState(TrainingState):
    """The TensorFlow training objects of one job, as one checkpoint state (a :class:`TrainingState`).

    Pass whatever the job has; ``None`` parts are skipped and reported by
    :attr:`registered`, so a resume check can say what was never saved.

    Args:
        model: a Keras model (built, so its weights exist before a restore).
        optimizer: a Keras optimizer; built for ``model`` before a restore.
        step: a scalar ``tf.Variable`` counting completed steps.
        rng: a ``tf.random.Generator`` the training step draws from.
        data: an iterator over a ``tf.data.Dataset`` (``iter(dataset)``);
            its position and shuffle buffers are saved, so a resume continues
            with the batch the uninterrupted run would have taken next.
        scratch_dir: where the private temporary directories go (default: the
            system's temporary directory); pick a fast local disk.
        **trackables: further TensorFlow trackables to save, by name.
    """

    def __init__(
        self,
        model: Any | None = None,
        optimizer: Any | None = None,
        step: tf.Variable | None = None,
        rng: tf.random.Generator | None = None,
        data: Any | None = None,
        *,
        scratch_dir: str | os.PathLike[str] | None = None,
        **trackables: Any,
    ) -> None:
        if _SEEDS in trackables:
            raise ValueError(f"{_SEEDS!r} is reserved for the model's Keras seed generators")
        self.parts = {"model": model, "optimizer": optimizer, "step": step, "rng": rng, "data": data, **trackables}
        if not self.registered:
            raise ValueError("TFState needs at least one part to checkpoint")
        self.scratch_dir = scratch_dir

    @property
    def registered(self) -> list[str]:
        return [name for name, part in self.parts.items() if part is not None]

    def state_dict(self) -> dict[str, Any]:
        """Write a TensorFlow checkpoint to scratch space and return its files as a state."""
        with tempfile.TemporaryDirectory(prefix="spotsim-tf-", dir=self.scratch_dir) as scratch:
            self._checkpoint().write(os.path.join(scratch, PREFIX))
            files = {name: _read(os.path.join(scratch, name)) for name in sorted(os.listdir(scratch))}
        return {"tf_checkpoint": {"files": files, "prefix": PREFIX}, "registered": self.registered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a restored state back into the live objects.

        Every registered part must be in the checkpoint, and every value in
        the checkpoint must land in a live object (``assert_consumed``). The
        looser ``expect_partial`` would let a forgotten or renamed part, or an
        optimizer whose slots do not exist yet, silently keep its fresh
        values: a resume that looks fine and is not exact. On an error the
        live objects may be partly overwritten; build fresh ones to retry.

        Raises:
            KeyError: a registered part was not saved in this checkpoint.
            CorruptCheckpoint: the state is malformed or TensorFlow cannot read it.
            CheckpointError: the checkpoint does not match the live objects.
        """
        files, prefix = _checked_files(state)
        saved = state.get("registered")
        if not isinstance(saved, list) or not all(isinstance(name, str) for name in saved):
            raise CorruptCheckpoint("state has no valid list of registered parts")
        missing = [name for name in self.registered if name not in saved]
        if missing:
            raise KeyError(f"checkpoint has no {', '.join(missing)} state")
        self._build_optimizer()
        with tempfile.TemporaryDirectory(prefix="spotsim-tf-", dir=self.scratch_dir) as scratch:
            for name, data in files.items():
                with open(os.path.join(scratch, name), "xb") as f:
                    f.write(data)
            try:
                self._checkpoint().read(os.path.join(scratch, prefix)).assert_consumed()
            except tf.errors.OpError as e:
                raise CorruptCheckpoint(f"TensorFlow cannot read the checkpoint: {e.message}") from e
            except (AssertionError, ValueError) as e:  # ValueError: a saved shape differs from the live one
                raise CheckpointError(f"checkpoint does not match the live training objects: {e}") from e

    def _checkpoint(self) -> tf.train.Checkpoint:
        """A ``tf.train.Checkpoint`` over the registered parts (cheap; made per call)."""
        trackables = {name: part for name, part in self.parts.items() if part is not None}
        if (seeds := _seed_states(self.parts["model"])) is not None:
            trackables[_SEEDS] = seeds
        return tf.train.Checkpoint(**trackables)

    def _build_optimizer(self) -> None:
        """Create a Keras optimizer's variables so the restore can fill them now.

        Keras 3 optimizers make their slots lazily, on the first step; a fresh
        one would otherwise leave the saved slots unmatched.
        """
        model, optimizer = self.parts["model"], self.parts["optimizer"]
        if model is not None and optimizer is not None and not getattr(optimizer, "built", True):
            optimizer.build(model.trainable_variables)


def _seed_states(model: Any) -> tf.Module | None:
    """A trackable holding the model's Keras seed-generator states, if it has any.

    ``model.variables`` is ``model.weights`` plus those states (Keras 3); the
    weights are already saved through the model itself.
    """
    if model is None or not hasattr(model, "variables") or not hasattr(model, "weights"):
        return None
    weights = {id(v) for v in model.weights}
    states = [v for v in model.variables if id(v) not in weights]
    if not states:
        return None
    holder = tf.Module()
    holder.states = states
    return holder


def _checked_files(state: Any) -> tuple[dict[str, bytes], str]:
    """The checkpoint files of a restored state, checked: it comes from a bucket, so it is untrusted.

    Names must be plain file names starting with the prefix (no ``/``, no
    ``..``), so writing them cannot touch anything outside the scratch directory.
    """
    try:
        checkpoint = state["tf_checkpoint"]
        files, prefix = checkpoint["files"], checkpoint["prefix"]
    except (KeyError, TypeError) as e:
        raise CorruptCheckpoint(f"state holds no TensorFlow checkpoint ({e!r} missing)") from e
    if not isinstance(prefix, str) or not _plain_name(prefix):
        raise CorruptCheckpoint(f"TensorFlow checkpoint prefix {str(prefix)[:80]!r} is not a plain file name")
    if not isinstance(files, dict) or f"{prefix}.index" not in files:
        raise CorruptCheckpoint(f"TensorFlow checkpoint has no {prefix}.index file")
    for name, data in files.items():
        if not isinstance(name, str) or not _plain_name(name) or not name.startswith(f"{prefix}."):
            raise CorruptCheckpoint(f"TensorFlow checkpoint file name {str(name)[:80]!r} is not allowed")
        if not isinstance(data, (bytes, bytearray)):
            raise CorruptCheckpoint(f"TensorFlow checkpoint file {name} is a {type(data).__name__}, not bytes")
    return files, prefix


def _plain_name(name: str) -> bool:
    return _FILE_NAME.fullmatch(name) is not None and ".." not in name


def _read(path: str) -> bytes:
    if not os.path.isfile(path):
        raise CheckpointError(f"TensorFlow wrote {os.path.basename(path)!r}, which is not a plain file")
    with open(path, "rb") as f:
        return f.read()


def checkpoint_tensors(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every saved value of a TF checkpoint state, by its checkpoint key, as arrays.

    The object-graph proto and the ``tf.data`` iterator's serialized state are
    left out: they describe structure and buffers, and their bytes can differ
    between two processes that hold the same values.
    """
    files, prefix = _checked_files(state)
    with tempfile.TemporaryDirectory(prefix="spotsim-tf-") as scratch:
        for name, data in files.items():
            with open(os.path.join(scratch, name), "xb") as f:
                f.write(data)
        try:
            reader = tf.train.load_checkpoint(os.path.join(scratch, prefix))
        except tf.errors.OpError as e:
            raise CorruptCheckpoint(f"TensorFlow cannot read the checkpoint: {e.message}") from e
        keys = sorted(reader.get_variable_to_dtype_map())
        return {
            key: np.asarray(reader.get_tensor(key))
            for key in keys
            if key != "_CHECKPOINTABLE_OBJECT_GRAPH" and "/.ATTRIBUTES/" in key and not key.startswith("data/")
        }
