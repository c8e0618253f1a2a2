"""Shared fixtures: one real fake-gcs-server per test session, stores per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

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


def _writable(directory: Path) -> bool:
    try:
        (directory / "probe").touch()
    except OSError:
        return False
    (directory / "probe").unlink()
    return True


@pytest.fixture
def unwritable_root(tmp_path):
    """A read-only directory, even for root; else (say, no chattr and no mount) one that cannot be created.

    The tests run as root, whom chmod does not stop: an immutable flag or a read-only
    bind mount does. When neither is possible here, the fallback is a root under a
    regular file, whose creation fails: the same error path, though not a read-only one.
    """
    root = tmp_path / "ro"
    root.mkdir()
    undo: list[list[str]] = []
    os.chmod(root, 0o555)
    for make, unmake in ((["chattr", "+i"], ["chattr", "-i"]), (["mount", "--bind", "-o", "ro", root], ["umount"])):
        if not _writable(root) or shutil.which(make[0]) is None:
            continue
        if subprocess.run([*make, str(root)], capture_output=True).returncode == 0:
            undo.append([*unmake, str(root)])
    if _writable(root):
        (tmp_path / "file").write_bytes(b"")
        root = tmp_path / "file" / "root"
    yield root
    for command in reversed(undo):
        subprocess.run(command, capture_output=True)
    os.chmod(tmp_path / "ro", 0o755)
