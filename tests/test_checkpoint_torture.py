"""Torture: SIGKILL a saving process at random instants, ≥ 100 times per backend.

Every restore must return exactly the last committed state: never a partial or
mixed one, and never an older one (no committed checkpoint lost).
"""

from __future__ import annotations

import os
import uuid

import pytest
from torture import torture

KILLS = int(os.environ.get("SPOTSIM_TORTURE_KILLS", "100"))
SIZE_MIB = 16


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["file", "gs"])
def test_sigkill_at_random_instants_never_loses_or_mixes_state(backend, tmp_path, emulator):
    if backend == "file":
        uri, endpoint = (tmp_path / "torture").as_uri(), ""
    else:
        uri, endpoint = f"gs://torture/{uuid.uuid4().hex[:10]}", emulator.url
    result = torture(uri, endpoint, kills=KILLS, size_mib=SIZE_MIB, seed=1234)
    assert result.kills == KILLS and result.resumes_checked == KILLS + 1
    # Kills spread over save cycles, not bunched before the first save: about one commit per kill.
    assert result.steps_committed >= KILLS // 5, f"only {result.steps_committed} commits in {KILLS} kills"
