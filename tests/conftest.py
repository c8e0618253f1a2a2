"""Shared fixtures: one real fake-gcs-server per test session, stores per test; and the test tiers.

Tiers: ``make check`` (``pytest --fast``) runs the fast tier, every test marked neither ``live`` nor
``slow``; ``make test`` and CI run everything. A test is marked ``live`` here when it starts processes:
its code, a helper of ``tests/`` it calls, or one of its fixtures from ``tests/`` names ``subprocess``,
``multiprocessing`` or ``sys.executable`` (a Python command for the harness), or it asks for a fixture
that runs real jobs. The session's shared emulator does not count: it starts once, in about a second.
Modules whose tests start processes out of sight (through the library) or train real models say so with
a module-level ``pytestmark``; ``--fast`` does not even import those, which spares it the ten seconds
that importing TensorFlow and torch takes.
"""

from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from types import CodeType

import pytest

from spotsim.storage.emulator import FakeGcsServer
from spotsim.storage.gcs import GCSStore, TransferOptions
from spotsim.storage.local import FileStore

MiB = 1 << 20

# Every contract test runs against each of these. "gs-parts" forces the
# parallel composite upload path with tiny parts, so multi-part uploads,
# compose and ranged downloads are exercised on small objects too.
BACKENDS = ["file", "gs", "gs-parts"]

TESTS = Path(__file__).parent
SLOW_TIERS = frozenset({"live", "slow"})
FAST_TIER = "not live and not slow"
# Names in a test's code that mean it starts a process of its own.
PROCESS_NAMES = frozenset({"subprocess", "Popen", "multiprocessing", "executable"})
# Fixtures that run real jobs or a nested pytest session, whatever the test's own code says.
LIVE_FIXTURES = frozenset({"spotsim_verify", "pytester"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true", help=f'only the fast tier: -m "{FAST_TIER}"')


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("fast"):
        markexpr = config.getoption("markexpr")
        config.option.markexpr = f"({markexpr}) and {FAST_TIER}" if markexpr else FAST_TIER


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``--fast``, leave out a test module that is live or slow as a whole; else let pytest decide."""
    if config.getoption("fast") and collection_path.suffix == ".py" and _module_marks(collection_path) & SLOW_TIERS:
        return True
    return None


def _module_marks(path: Path) -> set[str]:
    """The marks a test module's top-level ``pytestmark = …`` names, read without importing the module."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, ast.List | ast.Tuple) else [node.value]
            return {_mark_name(mark) for mark in marks}
    return set()


def _mark_name(mark: ast.expr) -> str:
    """``pytest.mark.slow`` → ``slow``; ``pytest.mark.skipif(…)`` → ``skipif``."""
    node = mark.func if isinstance(mark, ast.Call) else mark
    return node.attr if isinstance(node, ast.Attribute) else ""


@pytest.hookimpl(tryfirst=True)  # mark before pytest deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and _starts_processes(item):
            item.add_marker(pytest.mark.live)


def _starts_processes(item: pytest.Function) -> bool:
    if LIVE_FIXTURES.intersection(item.fixturenames):
        return True
    fixtures = [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs]
    seen: set[CodeType] = set()
    return any(_names_a_process(f, seen) for f in [item.function, *fixtures])


def _names_a_process(func: Callable, seen: set[CodeType]) -> bool:
    """Whether ``func``, or a function from ``tests/`` that it refers to, names a way to start a process."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or code in seen or not _in_tests(code):
        return False
    seen.add(code)
    names = _names(code)
    if names & PROCESS_NAMES:
        return True
    helpers = (func.__globals__.get(name) for name in names)
    return any(inspect.isfunction(h) and _names_a_process(h, seen) for h in helpers)


def _in_tests(code: CodeType) -> bool:
    return Path(code.co_filename).resolve().is_relative_to(TESTS.resolve())


def _names(code: CodeType) -> set[str]:
    """Global and attribute names used by ``code`` and the functions nested in it."""
    nested = (_names(const) for const in code.co_consts if isinstance(const, CodeType))
    return set(code.co_names).union(*nested)


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
