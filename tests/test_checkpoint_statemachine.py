"""A hypothesis state machine drives CheckpointManager against a simple model.

Rules save (sync or async), corrupt or delete stored objects, and restore; the
model says which checkpoints exist, which are intact, and what a restore must
return. Runs on file:// and on gs:// through the real emulator.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from spotsim import CheckpointManager
from spotsim.checkpoint.manifest import manifest_key, step_prefix

pytestmark = pytest.mark.slow  # many save/kill/restore sequences, on the emulator too
KEEP = 3


def state_for(step: int, size: int) -> dict:
    return {"w": np.random.default_rng(step).integers(0, 2**31, size, dtype=np.int64), "step": step}


class CheckpointMachine(RuleBasedStateMachine):
    target: tuple[str, dict]  # set per backend by the test below

    @initialize()
    def open_manager(self):
        uri, options = self.target
        self.uri = f"{uri}/{uuid.uuid4().hex[:10]}"
        self.manager = CheckpointManager(self.uri, keep=KEEP, store_options=options)
        self.step = 0
        self.committed: list[int] = []  # steps with a manifest, oldest first
        self.intact: dict[int, int] = {}  # step -> array size, for checkpoints that still verify

    def teardown(self):
        if hasattr(self, "manager"):
            self.manager.close()

    @rule(
        gap=st.integers(1, 3),
        size=st.sampled_from([0, 5, 3000]),
        sync=st.booleans(),
        layout=st.sampled_from(["directory", "archive"]),
    )
    def save(self, gap, size, sync, layout):
        self.step += gap
        self.manager.async_save, self.manager.layout = not sync, layout
        self.manager.save(self.step, state_for(self.step, size))
        self.committed.append(self.step)
        self.intact[self.step] = size
        for dropped in self.committed[:-KEEP]:
            self.intact.pop(dropped, None)
        self.committed = self.committed[-KEEP:]

    @precondition(lambda self: self.intact)
    @rule(data=st.data())
    def corrupt_payload(self, data):
        self.manager.wait()
        step = data.draw(st.sampled_from(sorted(self.intact)))
        key = data.draw(st.sampled_from(self._payload(step)))
        blob = self.manager.store.get_bytes(key)
        self.manager.store.put_bytes(key, blob[:-1] + bytes([blob[-1] ^ 1]) if blob else b"x")
        del self.intact[step]

    @precondition(lambda self: self.intact)
    @rule(data=st.data())
    def delete_payload_object(self, data):
        self.manager.wait()
        step = data.draw(st.sampled_from(sorted(self.intact)))
        self.manager.store.delete(data.draw(st.sampled_from(self._payload(step))))
        del self.intact[step]

    @precondition(lambda self: self.committed)
    @rule(data=st.data())
    def delete_manifest(self, data):
        self.manager.wait()
        step = data.draw(st.sampled_from(self.committed))
        self.manager.store.delete(manifest_key(step))
        self.committed.remove(step)
        self.intact.pop(step, None)

    @rule()
    def restore(self):
        restored = self.manager.restore_latest()
        if not self.intact:
            assert restored is None
            return
        newest = max(self.intact)
        assert restored is not None and restored.step == newest
        expected = state_for(newest, self.intact[newest])
        assert restored.state["step"] == newest and np.array_equal(restored.state["w"], expected["w"])

    @invariant()
    def committed_steps_match(self):
        if hasattr(self, "manager"):
            self.manager.wait()
            assert self.manager.steps() == self.committed

    def _payload(self, step: int) -> list[str]:
        return [k for k in self.manager.store.list(step_prefix(step)) if not k.endswith("MANIFEST.json")]


@pytest.mark.parametrize("backend", ["file", "gs"])
def test_checkpoint_manager_state_machine(backend, tmp_path, emulator):
    target = (
        ((tmp_path / "machine").as_uri(), {}) if backend == "file" else ("gs://machine", {"endpoint": emulator.url})
    )
    machine = type(f"CheckpointMachine_{backend}", (CheckpointMachine,), {"target": target})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30 if backend == "file" else 15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
