"""The state format rejects anything but plain data: it is read from untrusted buckets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spotsim.checkpoint import tree
from spotsim.errors import CorruptCheckpoint


def header_with(**changes) -> bytes:
    packed = tree.pack({"a": np.arange(4, dtype=np.int32)})
    header = json.loads(packed.objects["state.json"])
    header.update(changes)
    return json.dumps(header).encode()


def shard() -> bytearray:
    return bytearray(np.arange(4, dtype=np.int32).tobytes())


@pytest.mark.parametrize(
    "tree_node",
    [{"t": "pickle", "v": "gASV"}, {"t": "dict", "v": [[{"k": 1}, 2]]}, {"t": "array", "i": 7}, [1, 2], {"x": 1}],
)
def test_unknown_or_malformed_nodes_are_rejected(tree_node):
    with pytest.raises(CorruptCheckpoint):
        tree.unpack({"state.json": header_with(tree=tree_node), "shard-00000.bin": shard()})


@pytest.mark.parametrize(
    "array",
    [
        {"kind": "numpy", "dtype": "object", "shape": [4], "shard": 0, "offset": 0, "nbytes": 16},
        {"kind": "numpy", "dtype": "int32", "shape": [5], "shard": 0, "offset": 0, "nbytes": 20},
        {"kind": "numpy", "dtype": "int32", "shape": [4], "shard": 0, "offset": 8, "nbytes": 16},
        {"kind": "numpy", "dtype": "int32", "shape": [-4], "shard": 0, "offset": 0, "nbytes": 16},
        {"kind": "numpy", "dtype": "int32", "shape": [4], "shard": 3, "offset": 0, "nbytes": 16},
        {"kind": "pickle", "dtype": "int32", "shape": [4], "shard": 0, "offset": 0, "nbytes": 16},
    ],
)
def test_bad_array_descriptors_are_rejected(array):
    with pytest.raises(CorruptCheckpoint):
        tree.unpack({"state.json": header_with(arrays=[array]), "shard-00000.bin": shard()})


def test_unsupported_leaf_types_fail_at_save_time():
    with pytest.raises(TypeError, match="cannot checkpoint"):
        tree.pack({"f": lambda: 1})
    with pytest.raises(TypeError, match="dtype object"):
        tree.pack({"o": np.array([object()])})


def test_plain_values_round_trip_exactly():
    state = {1: (2**64, -0.0, float("inf"), float("nan")), "s": ["x", None, True, b"\x00"], "e": np.zeros((0, 2))}
    restored = tree.unpack({k: bytearray(v) for k, v in tree.pack(state).objects.items()})
    assert restored[1][0] == 2**64 and str(restored[1][1]) == "-0.0" and restored[1][2] == float("inf")
    assert restored[1][3] != restored[1][3] and restored["s"] == state["s"] and restored["e"].shape == (0, 2)


@pytest.mark.parametrize("archive", [False, True])
def test_recycled_buffers_are_refilled_and_padding_is_zeroed(archive):
    state = {"a": np.arange(3, dtype=np.int8), "b": np.arange(5, dtype=np.float64), "c": np.ones(7, np.int16)}
    first = tree.pack(state, archive=archive, shard_bytes=64)
    dirty = first.buffers()
    for buffer in dirty:
        buffer[:] = b"\xff" * len(buffer)  # stale bytes a fresh snapshot must not leak
    second = tree.pack(state, archive=archive, shard_bytes=64, recycle=dirty)
    assert {id(b.obj) for b in second.buffers()} == {id(b.obj) for b in dirty}, "same-size buffers are reused"
    fresh = tree.pack(state, archive=archive, shard_bytes=64)
    assert {k: bytes(v) for k, v in second.objects.items()} == {k: bytes(v) for k, v in fresh.objects.items()}
    restored = tree.unpack(second.objects)
    assert all(np.array_equal(restored[k], state[k]) for k in state)
