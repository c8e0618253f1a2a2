"""Shared fixtures: one real fake-gcs-server per test session, stores per test."""

from __future__ import annotations

import uuid

import pytest

from spotsim.storage.emulator import FakeGcsServer
from spotsim.storage.gcs import GCSStore, TransferOptions
from spotsim.storage.local import FileStore

MiB = 1 << 20

# Every contract test runs against each of these. "gs-parts" forces the
# parallel composite upload path with tiny parts, so multi-part uploads,
# compose and ranged downloads are exercised on small objects too.
BACKENDS = ["file", "gs", "gs-parts"]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    with FakeGcsServer(tmp_path_factory.mktemp("emulator-root")) as server:
        yield server


def make_store(kind: str, tmp_path, emulator_url: str):
    if kind == "file":
        return FileStore(tmp_path / "store")
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    if kind == "gs":
        return GCSStore("contract", prefix, endpoint=emulator_url, options=TransferOptions(workers=4, part_size=MiB))
    options = TransferOptions(workers=4, part_size=MiB, composite_upload=True)
    return GCSStore("contract", prefix, endpoint=emulator_url, options=options)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, emulator):
    with make_store(request.param, tmp_path, emulator.url) as s:
        yield s


@pytest.fixture(params=["file", "gs"])
def checkpoint_target(request, tmp_path, emulator):
    """(uri, store_options) of an empty checkpoint location on each backend."""
    if request.param == "file":
        return (tmp_path / "ckpt").as_uri(), {}
    return f"gs://checkpoints/{uuid.uuid4().hex[:12]}", {"endpoint": emulator.url}
