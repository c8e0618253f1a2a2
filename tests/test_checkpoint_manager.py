"""CheckpointManager behaviour on both backends: commit, fallback, retention,
async errors, events, and refusal to run anything a bucket supplies."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from spotsim import CheckpointManager
from spotsim.checkpoint.manifest import manifest_key, step_prefix
from spotsim.errors import CheckpointError, CorruptCheckpoint, StoreUnavailable
from spotsim.storage import open_store


def state_for(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {"w": rng.standard_normal((64, 32)).astype(np.float32), "step": step, "tag": f"s{step}", "b": b"\x00\x01"}


def assert_state(state: dict, step: int) -> None:
    expected = state_for(step)
    assert np.array_equal(state["w"], expected["w"]) and state["step"] == step and state["tag"] == f"s{step}"


def manager(target, **kwargs) -> CheckpointManager:
    uri, options = target
    return CheckpointManager(uri, store_options=options, **kwargs)


@pytest.mark.parametrize("async_save", [True, False])
@pytest.mark.parametrize("layout", ["directory", "archive"])
def test_save_restore_round_trip(checkpoint_target, async_save, layout):
    with manager(checkpoint_target, async_save=async_save, layout=layout) as m:
        assert m.restore_latest() is None
        m.save(10, state_for(10), metadata={"epoch": 1, "loss": 0.5})
        step, state, metadata = m.restore_latest()
    assert step == 10 and metadata == {"epoch": 1, "loss": 0.5}
    assert_state(state, 10)


def test_fallback_past_corrupt_and_incomplete_checkpoints(checkpoint_target, caplog):
    with manager(checkpoint_target, keep=5, async_save=False) as m:
        for step in (1, 2, 3, 4):
            m.save(step, state_for(step))
        store = m.store
        shard = next(k for k in store.list(step_prefix(4)) if k.endswith("shard-00000.bin"))
        store.put_bytes(shard, b"\xff" * len(store.get_bytes(shard)))  # bit rot in the newest
        store.delete(next(k for k in store.list(step_prefix(3)) if k.endswith("state.json")))  # lost object
        store.put_bytes(manifest_key(2), b"{not json")  # garbled manifest
        with caplog.at_level(logging.WARNING):
            step, state, _ = m.restore_latest()
    assert step == 1
    assert_state(state, 1)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "step 4 is unusable" in messages and "step 3 is unusable" in messages and "step 2 is unusable" in messages


def test_payload_without_manifest_does_not_exist(checkpoint_target):
    with manager(checkpoint_target, async_save=False) as m:
        m.save(5, state_for(5))
        # What a writer killed just before its commit leaves behind:
        m.store.put_bytes(f"{step_prefix(9)}abcdefabcdef/state.json", b"{}")
        assert m.steps() == [5]
        assert m.restore_latest().step == 5
        m.save(6, state_for(6))  # garbage collection after a commit removes the orphan
        assert not m.store.list(step_prefix(9))


def test_retention_keeps_the_newest(checkpoint_target):
    with manager(checkpoint_target, keep=2) as m:
        for step in range(1, 6):
            m.save(step, state_for(step))
        m.wait()
        assert m.steps() == [4, 5]
        assert all(k.startswith((step_prefix(4), step_prefix(5))) for k in m.store.list())


def test_failed_save_keeps_the_previous_checkpoint_and_raises_once(checkpoint_target, monkeypatch):
    with manager(checkpoint_target, keep=1) as m:
        m.save(1, state_for(1))
        m.wait()

        def refuse(key, data):
            raise OSError("disk full")

        monkeypatch.setattr(m.store, "create_if_absent", refuse)  # fault injection into a real store
        m.save(2, state_for(2))
        with pytest.raises(CheckpointError, match="disk full"):
            m.wait()
        m.wait()  # raised once only
        monkeypatch.undo()
        assert m.steps() == [1]
        assert_state(m.restore_latest().state, 1)


@pytest.mark.parametrize("async_save", [True, False])
def test_a_periodic_save_the_store_cannot_take_is_skipped_and_training_goes_on(
    checkpoint_target, tmp_path, monkeypatch, async_save
):
    events = tmp_path / "events.jsonl"
    with manager(checkpoint_target, keep=1, async_save=async_save, events=events) as m:
        m.save(1, state_for(1))
        m.wait()

        def unreachable(key, data):
            raise StoreUnavailable("cannot reach the bucket: 503 after retries")

        monkeypatch.setattr(m.store, "put_bytes", unreachable)  # fault injection into a real store
        m.save(2, state_for(2))
        m.wait()  # nothing raised: the save was skipped
        with pytest.raises(StoreUnavailable):
            m.save(3, state_for(3), kind="emergency")  # the caller of an emergency save must know
        monkeypatch.undo()
        assert m.steps() == [1] and m.store.list(step_prefix(2)) == []  # nothing committed was deleted
        m.save(4, state_for(4))  # the next periodic save succeeds
        m.wait()
        assert m.steps() == [4]
        assert [(f.step, f.kind, f.skipped) for f in m.failures] == [(2, "periodic", True), (3, "emergency", False)]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    failed = [e for e in lines if e["event"] == "checkpoint_failed"]
    assert [(e["step"], e["kind"], e["skipped"], e["retries"]) for e in failed] == [
        (2, "periodic", True, 0),
        (3, "emergency", False, 0),
    ]
    assert "503 after retries" in failed[0]["error"]
    assert [(e["step"], e["retries"]) for e in lines if e["event"] == "checkpoint"] == [(1, 0), (4, 0)]


def test_emergency_save_waits_for_the_inflight_persist(checkpoint_target):
    with manager(checkpoint_target, keep=3) as m:
        m.save(1, state_for(1))
        m.save(2, state_for(2), kind="emergency")
        assert m.steps() == [1, 2]  # both committed by the time save() returned
        assert [s.kind for s in m.saves] == ["periodic", "emergency"]


def test_saving_a_committed_step_again_changes_nothing(checkpoint_target):
    with manager(checkpoint_target, async_save=False) as m:
        m.save(3, state_for(3))
        m.save(3, state_for(99))
        assert_state(m.restore_latest().state, 3)


def test_should_save_by_steps_and_time(checkpoint_target, monkeypatch):
    with manager(checkpoint_target, interval_steps=5) as m:
        assert [s for s in range(1, 13) if m.should_save(s)] == [5, 10]
    clock = [100.0]
    monkeypatch.setattr("spotsim.checkpoint.manager.time.monotonic", lambda: clock[0])
    with manager(checkpoint_target, interval_s=300) as m:
        assert not m.should_save(1)
        clock[0] += 301
        assert m.should_save(2)
        m.save(2, state_for(2))
        assert not m.should_save(3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep": 0}, {"interval_s": 0}, {"interval_s": float("nan")}, {"interval_steps": 0}, {"layout": "zip"},
        {"save_deadline_s": -1}, {"save_deadline_s": float("inf")},
    ],
)  # fmt: skip
def test_bad_options(tmp_path, kwargs):
    with pytest.raises(ValueError):
        CheckpointManager(tmp_path.as_uri(), **kwargs)


def test_from_env_and_events(tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("SPOTSIM_CHECKPOINT_URI", (tmp_path / "ckpt").as_uri())
    monkeypatch.setenv("SPOTSIM_CHECKPOINT_INTERVAL", "2.5")
    monkeypatch.setenv("SPOTSIM_EVENTS", str(events))
    monkeypatch.setenv("SPOTSIM_ATTEMPT", "1")
    with CheckpointManager.from_env() as m:
        assert m.interval_s == 2.5
        assert m.restore_latest() is None
        m.should_save(1)
        m.save(2, state_for(2))
        m.mark_done(3)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["attempt"] == 1 and lines[0]["resumed_step"] is None
    checkpoint = next(e for e in lines if e["event"] == "checkpoint")
    assert checkpoint["step"] == 2 and checkpoint["kind"] == "periodic" and checkpoint["bytes"] > 8192
    assert checkpoint["blocking_s"] >= 0 and checkpoint["persist_s"] > 0
    steps = [e["step"] for e in lines if e["event"] == "step"]
    assert steps[-1] == 3 and 2 in steps  # the step before the checkpoint is always written
    assert lines[-1] == {**lines[-1], "event": "done", "step": 3}
    assert all(isinstance(e["t"], float) for e in lines)


def test_from_env_without_uri_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SPOTSIM_CHECKPOINT_URI", raising=False)
    with pytest.raises(CheckpointError, match="SPOTSIM_CHECKPOINT_URI"):
        CheckpointManager.from_env()


class Detonator:
    """Unpickling this runs code: exactly what a checkpoint must never do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_in_the_bucket_never_runs(checkpoint_target, tmp_path):
    import pickle

    marker = tmp_path / "PWNED"
    uri, options = checkpoint_target
    with manager(checkpoint_target, async_save=False, layout="archive") as m:
        m.save(1, state_for(1))
    # An attacker (or a torch.save-based tool) plants a newer "checkpoint" whose
    # payload is a pickle, with a manifest that checks out byte for byte.
    bomb = pickle.dumps({"model": Detonator(marker)})
    planted = {"format": "spotsim-checkpoint/1", "step": 2, "kind": "periodic", "created": 0.0,
               "framework": "torch", "layout": "archive", "spotsim_version": "0", "metadata": {},
               "objects": {"abcdefabcdef/checkpoint.bin": {"size": len(bomb), "crc32c": _crc(bomb)}}}  # fmt: skip
    with open_store(uri, **options) as store:
        store.put_bytes(f"{step_prefix(2)}abcdefabcdef/checkpoint.bin", bomb)
        store.put_bytes(manifest_key(2), json.dumps(planted).encode())
    with manager(checkpoint_target) as m:
        with pytest.raises(CorruptCheckpoint, match="magic"):
            m.restore(2)
        restored = m.restore_latest()
    assert restored.step == 1 and not marker.exists()


def _crc(data: bytes) -> str:
    from spotsim.storage.crc import crc32c_of, to_b64

    return to_b64(crc32c_of(data))
