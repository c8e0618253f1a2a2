"""pytest fixtures that check a training job's resumes; pytest loads them through the ``spotsim`` pytest11
entry point wherever spotsim is installed.

- ``spotsim_emulator`` (session): one embedded GCS emulator (fake-gcs-server) for the whole session.
- ``spotsim_verify``: ``spotsim_verify(command, **options)`` runs :func:`spotsim.verify` on that emulator,
  keeping its runs under the test's ``tmp_path``, and returns the :class:`spotsim.VerifyResult`::

      def test_resumes(spotsim_verify):
          assert spotsim_verify(["python", "train.py"]).resume_correct

This module is loaded in every pytest session of everyone who installs spotsim, so it imports only pytest
up front; the harness is imported, and the emulator started, when a test first asks for them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from spotsim.api import VerifyResult
    from spotsim.storage.emulator import FakeGcsServer


@pytest.fixture(scope="session")
def spotsim_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """A fake-gcs-server on 127.0.0.1 with its data under the session's temporary directory."""
    from spotsim.storage.emulator import FakeGcsServer

    with FakeGcsServer(tmp_path_factory.mktemp("spotsim-emulator")) as server:
        yield server


@pytest.fixture
def spotsim_verify(spotsim_emulator: FakeGcsServer, tmp_path) -> Callable[..., VerifyResult]:
    """``(command, **options) -> VerifyResult``: :func:`spotsim.verify` with ``out`` under ``tmp_path`` (one
    directory per call) and checkpoints on ``spotsim_emulator`` unless ``bucket`` is given."""
    from spotsim.api import verify

    calls = itertools.count(1)

    def run_verify(command, **options: Any) -> VerifyResult:
        options.setdefault("out", tmp_path / f"spotsim-verify-{next(calls)}")
        if options.get("bucket") is None:
            options.setdefault("emulator_url", spotsim_emulator.url)
        return verify(command, **options)

    return run_verify
