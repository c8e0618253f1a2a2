"""Comparing what two runs produced, tensor by tensor, without trusting either file.

A *tensor map* is ``{name: numpy array}``. It is read from a checkpoint state
(spotsim's format, TensorFlow checkpoints inside it decoded by the TF adapter)
or from an artifact file: ``.pt``/``.pth`` (``torch.load(weights_only=True)``),
``.safetensors``, ``.npz`` (``allow_pickle=False``), Keras ``.weights.h5``/``.h5``
and ``.keras``; any other file is compared as bytes. Equality is exact: same
names, dtypes, shapes and bytes (so NaNs compare equal to themselves).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spotsim.errors import CorruptCheckpoint, MissingDependency


@dataclass(frozen=True)
class Difference:
    """How two tensor maps differ; ``first`` is the first differing name in sorted order."""

    first: str
    max_abs_diff: float | None  # None when shapes, dtypes or presence differ
    differing: int
    total: int
    parts: tuple[str, ...]  # top-level names (model, optimizer, rng, data…) with a difference

    def describe(self) -> str:
        size = "" if self.max_abs_diff is None else f", max |difference| {self.max_abs_diff:.3g}"
        return f"{self.differing} of {self.total} tensors differ; first: {self.first}{size}"


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> Difference | None:
    """None when equal bit for bit, else where and how much they differ."""
    names = sorted(set(reference) | set(candidate))
    differing = [n for n in names if not _same(reference.get(n), candidate.get(n))]
    if not differing:
        return None
    first = differing[0]
    a, b = reference.get(first), candidate.get(first)
    max_diff = None
    if a is not None and b is not None and a.shape == b.shape and a.dtype == b.dtype and a.dtype.kind in "biufc":
        max_diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    parts = tuple(sorted({n.split("/", 1)[0] for n in differing}))
    return Difference(first, max_diff, len(differing), len(names), parts)


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return False
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# -- reading tensor maps --------------------------------------------------------


def state_tensors(state: Any) -> dict[str, np.ndarray]:
    """Flatten a restored checkpoint state into named arrays (scalars become 0-d arrays)."""
    if isinstance(state, dict) and "tf_checkpoint" in state:
        from spotsim.checkpoint.tf_adapter import checkpoint_tensors

        return checkpoint_tensors(state)
    out: dict[str, np.ndarray] = {}
    _flatten(state, "", out)
    return out


def result_tensors(state: Any) -> dict[str, np.ndarray]:
    """The tensors that make up a training result: the state without its RNG states.

    Two processes that never seed, say, numpy hold different numpy RNG states
    while training identically; an RNG that matters shows up in the weights.
    """
    return {name: array for name, array in state_tensors(state).items() if not name.startswith("rng/")}


def _flatten(value: Any, path: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}/{key}" if path else str(key), out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{path}/{i}", out)
    elif isinstance(value, (bytes, bytearray)):
        out[path] = np.frombuffer(bytes(value), dtype=np.uint8)
    elif type(value).__module__.startswith("torch"):
        out[path] = value.detach().cpu().numpy()
    else:
        out[path] = np.asarray(value)


def artifact_tensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of an artifact file, by its suffix; raw bytes for unknown kinds."""
    name = path.name
    if name.endswith((".pt", ".pth")):
        import torch

        return state_tensors(torch.load(path, map_location="cpu", weights_only=True))
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    if name.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise MissingDependency(
                "comparing .safetensors files needs the safetensors package: pip install safetensors"
            ) from None
        return load_file(str(path))
    if name.endswith(".h5"):
        return _h5_tensors(path)
    if name.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            return _h5_tensors(io.BytesIO(archive.read("model.weights.h5")))
    return {"bytes": np.frombuffer(path.read_bytes(), dtype=np.uint8)}


def _h5_tensors(source: Any) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(source, "r") as f:
            f.visititems(lambda name, item: out.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    except OSError as e:
        raise CorruptCheckpoint(f"not a readable HDF5 file: {e}") from e
    return out
