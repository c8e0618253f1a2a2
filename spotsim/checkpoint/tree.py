"""The checkpoint state format: a JSON tree plus raw array bytes. No pickle, ever.

A *state* is a nested structure of dicts, lists and tuples whose leaves are
``None``, bools, ints, floats, strings, bytes, numpy arrays or torch tensors.
:func:`pack` copies every array into a few contiguous byte buffers (the only
copy a save makes, and the part of an async save that blocks training) and
describes the structure as JSON; :func:`unpack` rebuilds the state from them.
A :class:`TrainingState` is an object of live training objects that gives such
a state and takes a restored one back.

Everything read back is untrusted: node types, dtypes, shapes and offsets are
checked, and only numeric dtypes from a fixed list are accepted, so a bucket
can never make a restore execute code or read outside its buffers.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from spotsim.errors import CorruptCheckpoint
from spotsim.storage.base import empty_buffer

ALIGN = 64  # array offsets inside a shard, so restored arrays are aligned views
FORMAT = "spotsim-state/1"

# Numeric numpy dtypes a checkpoint may contain; nothing else is ever decoded.
NUMPY_DTYPES = {
    name: np.dtype(name)
    for name in [
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    ]
}


@runtime_checkable
class TrainingState(Protocol):
    """Live training objects that give a state to checkpoint and take a restored one back.

    The two methods of torch's ``state_dict``/``load_state_dict`` (and of DCP's
    ``Stateful``): ``state_dict()`` returns a state as described above, and
    ``load_state_dict(state)`` puts a restored one into the live objects.
    ``TorchState`` and ``TFState`` implement it; so does any object that
    has both methods, a torch module or optimizer included.
    """

    def state_dict(self) -> Any:
        """The state as of now (it may share memory with the live objects; a save copies it)."""

    def load_state_dict(self, state: Any) -> None:
        """Put a restored state into the live objects."""


class ArrayCodec(Protocol):
    """How one array library's arrays go into and out of raw little-endian bytes."""

    kind: str

    def describe(self, array: Any) -> tuple[str, tuple[int, ...], int]:
        """Return (dtype name, shape, nbytes)."""

    def copy_into(self, array: Any, out: memoryview) -> None:
        """Copy the array's bytes (C order, little-endian) into ``out``."""

    def load(self, data: memoryview, dtype: str, shape: tuple[int, ...]) -> Any:
        """Build an array viewing (not copying) ``data``."""


class NumpyCodec:
    kind = "numpy"

    def describe(self, array: np.ndarray) -> tuple[str, tuple[int, ...], int]:
        if array.dtype.name not in NUMPY_DTYPES:
            raise TypeError(f"numpy arrays of dtype {array.dtype} cannot be checkpointed")
        return array.dtype.name, array.shape, array.nbytes

    def copy_into(self, array: np.ndarray, out: memoryview) -> None:
        target = np.frombuffer(out, dtype=array.dtype.newbyteorder("<")).reshape(array.shape)
        np.copyto(target, array, casting="equiv")

    def load(self, data: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(data, dtype=NUMPY_DTYPES[dtype].newbyteorder("<")).reshape(shape)


_CODECS: dict[str, ArrayCodec] = {"numpy": NumpyCodec()}
# Codecs of framework arrays live in their adapter modules, imported on first
# sight of such an array, so a numpy-only user never imports a framework.
_LAZY_CODECS = {"torch": "spotsim.checkpoint.torch_adapter"}


def _codec_for_kind(kind: str) -> ArrayCodec:
    if kind not in _CODECS and kind in _LAZY_CODECS:
        _CODECS[kind] = importlib.import_module(_LAZY_CODECS[kind]).CODEC
    try:
        return _CODECS[kind]
    except KeyError:
        raise CorruptCheckpoint(f"unknown array kind {kind!r}") from None


def _codec_for(value: Any) -> ArrayCodec | None:
    if isinstance(value, np.ndarray):
        return _CODECS["numpy"]
    module = type(value).__module__.split(".")[0]
    if module in _LAZY_CODECS and type(value).__name__ in ("Tensor", "Parameter"):
        return _codec_for_kind(module)
    return None


@dataclass
class Packed:
    """A snapshotted state: the objects to persist, by name, ready to upload."""

    objects: dict[str, memoryview | bytes] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.objects.values())

    def buffers(self) -> list[memoryview]:
        """The array buffers, for :func:`pack` to recycle once this snapshot is persisted."""
        return [b for b in self.objects.values() if isinstance(b, memoryview)]


HEADER_OBJECT = "state.json"
ARCHIVE_OBJECT = "checkpoint.bin"
_ARCHIVE_MAGIC = b"SPOTSIM\x01"
_ARCHIVE_PREFIX = len(_ARCHIVE_MAGIC) + 8  # magic, then the header's length (u64, little-endian)


def pack(
    state: Any, *, archive: bool = False, shard_bytes: int = 256 << 20, recycle: list[memoryview] | None = None
) -> Packed:
    """Snapshot ``state`` into objects: copy every array once, into its final buffer.

    ``archive=False`` (the directory layout) gives ``state.json`` plus shards of
    about ``shard_bytes``; ``archive=True`` gives one ``checkpoint.bin`` holding
    the header followed by all array bytes. ``recycle`` offers the buffers of
    a snapshot that is no longer needed: refilling memory the process already
    touched skips the page faults of fresh memory, which cost as much as the copy.

    Raises:
        TypeError: a leaf of a type the format does not carry.
    """
    arrays: list[tuple[Any, ArrayCodec, dict]] = []
    tree = _encode(state, arrays, path="state")
    layout, sizes = _place(arrays, sys.maxsize if archive else shard_bytes)
    descriptors = [
        {**desc, "shard": sh, "offset": off} for (_, _, desc), (sh, off, _) in zip(arrays, layout, strict=True)
    ]
    header = json.dumps({"format": FORMAT, "tree": tree, "arrays": descriptors, "shards": sizes}).encode()
    objects: dict[str, memoryview | bytes]
    if archive:
        head = _ARCHIVE_MAGIC + len(header).to_bytes(8, "little") + header
        head += bytes(-len(head) % ALIGN)
        spare = _Spare(recycle)
        buffer = spare.take(len(head) + sum(sizes))
        buffer[: len(head)] = head
        shards, objects = [buffer[len(head) :]], {ARCHIVE_OBJECT: buffer}
    else:
        spare = _Spare(recycle)
        shards = [spare.take(size) for size in sizes]
        objects = {HEADER_OBJECT: header, **{f"shard-{i:05d}.bin": b for i, b in enumerate(shards)}}
    for (array, codec, _), (shard, offset, nbytes) in zip(arrays, layout, strict=True):
        with shards[shard][offset : offset + nbytes] as out:
            codec.copy_into(array, out)
    _zero_padding(shards, layout)
    return Packed(objects)


class _Spare:
    """Buffers offered for reuse, handed out by exact size; new ones are left uninitialised."""

    def __init__(self, buffers: list[memoryview] | None) -> None:
        self.free = list(buffers or [])

    def take(self, size: int) -> memoryview:
        for i, buffer in enumerate(self.free):
            if len(buffer) == size and not buffer.readonly:
                return self.free.pop(i)
        return empty_buffer(size)


def _zero_padding(shards: list[memoryview], layout: list[tuple[int, int, int]]) -> None:
    """Zero the alignment gaps between arrays, so no stale memory ends up in a checkpoint."""
    ends = [0] * len(shards)
    for shard, offset, nbytes in layout:
        shards[shard][ends[shard] : offset] = bytes(offset - ends[shard])
        ends[shard] = offset + nbytes
    for buffer, end in zip(shards, ends, strict=True):
        buffer[end:] = bytes(len(buffer) - end)


def unpack(objects: Mapping[str, bytes | bytearray | memoryview]) -> Any:
    """Rebuild a state from the objects :func:`pack` made; raise CorruptCheckpoint on anything odd.

    Arrays come back as views of the given buffers (pass bytearrays for writable arrays).
    """
    if ARCHIVE_OBJECT in objects:
        header, shards = _split_archive(objects[ARCHIVE_OBJECT])
    elif HEADER_OBJECT in objects:
        header = _parse_header(objects[HEADER_OBJECT])
        count = len(header["shards"])
        try:
            shards = [memoryview(objects[f"shard-{i:05d}.bin"]) for i in range(count)]
        except KeyError as e:
            raise CorruptCheckpoint(f"state shard {e} is missing") from e
    else:
        raise CorruptCheckpoint(f"no {HEADER_OBJECT} or {ARCHIVE_OBJECT} among the checkpoint objects")
    if [len(s) for s in shards] != header["shards"]:
        raise CorruptCheckpoint("shard sizes differ from the state header")
    arrays = [_load_array(d, shards) for d in header["arrays"]]
    return _decode(header.get("tree"), arrays)


def _split_archive(buffer: bytes | bytearray | memoryview) -> tuple[dict, list[memoryview]]:
    view = memoryview(buffer)
    if bytes(view[: len(_ARCHIVE_MAGIC)]) != _ARCHIVE_MAGIC or len(view) < _ARCHIVE_PREFIX:
        raise CorruptCheckpoint("checkpoint archive does not start with the spotsim magic bytes")
    length = int.from_bytes(view[len(_ARCHIVE_MAGIC) : _ARCHIVE_PREFIX], "little")
    if _ARCHIVE_PREFIX + length > len(view):
        raise CorruptCheckpoint("checkpoint archive header runs past the end of the object")
    header = _parse_header(view[_ARCHIVE_PREFIX : _ARCHIVE_PREFIX + length])
    start = _ARCHIVE_PREFIX + length
    start += -start % ALIGN
    return header, [view[start:]] if header["shards"] else []


def _parse_header(raw) -> dict:
    try:
        header = json.loads(bytes(raw))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(f"state header is not valid JSON: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CorruptCheckpoint("state header is not in the spotsim state format")
    sizes, arrays = header.get("shards"), header.get("arrays")
    if not isinstance(sizes, list) or not all(isinstance(n, int) and n >= 0 for n in sizes):
        raise CorruptCheckpoint("state header has no valid shard table")
    if not isinstance(arrays, list):
        raise CorruptCheckpoint("state header has no array table")
    return header


def _place(arrays: list, shard_bytes: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Assign each array a (shard, offset, nbytes), filling shards up to ``shard_bytes``."""
    layout, sizes = [], [0]
    for _, _, desc in arrays:
        nbytes = desc["nbytes"]
        start = -(-sizes[-1] // ALIGN) * ALIGN
        if start and start + nbytes > shard_bytes:
            sizes.append(0)
            start = 0
        layout.append((len(sizes) - 1, start, nbytes))
        sizes[-1] = start + nbytes
    return layout, sizes if arrays else []


def _encode(value: Any, arrays: list, path: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else {"t": "int", "v": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return _encode(value.item(), arrays, path)
    if isinstance(value, (bytes, bytearray)):
        return {"t": "bytes", "v": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"{path}: dict keys must be str or int, got {type(k).__name__}")
            items.append([k, _encode(v, arrays, f"{path}[{k!r}]")])
        return {"t": "dict", "v": items}
    if isinstance(value, (list, tuple)):
        encoded = [_encode(v, arrays, f"{path}[{i}]") for i, v in enumerate(value)]
        return {"t": "list" if isinstance(value, list) else "tuple", "v": encoded}
    if (codec := _codec_for(value)) is not None:
        dtype, shape, nbytes = codec.describe(value)
        arrays.append((value, codec, {"kind": codec.kind, "dtype": dtype, "shape": list(shape), "nbytes": nbytes}))
        return {"t": "array", "i": len(arrays) - 1}
    raise TypeError(
        f"{path}: cannot checkpoint a {type(value).__module__}.{type(value).__name__}; states hold dicts, "
        "lists, tuples, numbers, strings, bytes, numpy arrays and torch tensors"
    )


def _decode(node: Any, arrays: list) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if not isinstance(node, dict) or "t" not in node:
        raise CorruptCheckpoint(f"malformed state node {str(node)[:80]!r}")
    tag = node["t"]
    value: Any = node.get("v")  # untrusted: a wrong type raises TypeError or ValueError below
    try:
        if tag == "dict":
            return {_key(k): _decode(v, arrays) for k, v in value}
        if tag in ("list", "tuple"):
            items = [_decode(v, arrays) for v in value]
            return items if tag == "list" else tuple(items)
        if tag == "array":
            return arrays[node["i"]]
        if tag == "bytes":
            return base64.b64decode(value, validate=True)
        if tag == "int":
            return int(value)
        if tag == "float" and value in ("nan", "inf", "-inf"):
            return float(value)
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise CorruptCheckpoint(f"malformed {tag!r} node in state: {e}") from e
    raise CorruptCheckpoint(f"unknown state node type {tag!r}")


def _key(key: Any) -> str | int:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise CorruptCheckpoint(f"state dict key {key!r} is neither str nor int")
    return key


def _load_array(desc: Any, shards: list[memoryview]) -> Any:
    try:
        kind, dtype, shape = desc["kind"], desc["dtype"], tuple(desc["shape"])
        shard, offset, nbytes = desc["shard"], desc["offset"], desc["nbytes"]
        ints = (shard, offset, nbytes, *shape)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            raise ValueError("negative or non-integer shape or offset")
        if not 0 <= shard < len(shards) or offset + nbytes > len(shards[shard]):
            raise ValueError("array lies outside its shard")
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptCheckpoint(f"bad array descriptor {str(desc)[:120]}: {e}") from e
    codec = _codec_for_kind(kind)
    try:
        array = codec.load(shards[shard][offset : offset + nbytes], dtype, shape)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CorruptCheckpoint(f"array of kind {kind!r}, dtype {dtype!r}, shape {shape} does not decode: {e}") from e
    return array
