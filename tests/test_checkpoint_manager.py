"""CheckpointManager behaviour on both backends: commit, fallback, retention,
async errors, events, and refusal to run anything a bucket supplies."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from spotsim import CheckpointManager
from spotsim.checkpoint.manifest import manifest_key, step_prefix
from spotsim.checkpoint.policy import SaveInterval
from spotsim.checkpoint.telemetry import CheckpointListener
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


def test_save_interval_by_steps():
    every_5 = SaveInterval(steps=5)
    due = [s for s in range(13) if every_5.should_save(s, last_saved_step=None, seconds_since_save=1e9)]
    assert due == [5, 10]  # step 0 never: nothing was trained yet


def test_save_interval_by_seconds_and_either_way():
    every_60s = SaveInterval(seconds=60)
    assert not every_60s.should_save(7, last_saved_step=3, seconds_since_save=59.9)
    assert every_60s.should_save(7, last_saved_step=3, seconds_since_save=60.0)
    both = SaveInterval(seconds=60, steps=10)
    assert both.should_save(10, last_saved_step=3, seconds_since_save=1.0)  # the steps come first
    assert both.should_save(11, last_saved_step=10, seconds_since_save=61.0)  # the time comes first
    assert not both.should_save(11, last_saved_step=10, seconds_since_save=1.0)


def test_save_interval_never_saves_a_step_twice_and_without_an_interval_never():
    assert not SaveInterval(seconds=1, steps=1).should_save(4, last_saved_step=4, seconds_since_save=1e9)
    assert not any(SaveInterval().should_save(s, last_saved_step=None, seconds_since_save=1e9) for s in range(50))


@pytest.mark.parametrize("kwargs", [{"seconds": 0}, {"seconds": float("inf")}, {"steps": 0}, {"steps": 2.5}])
def test_save_interval_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        SaveInterval(**kwargs)


class Recorder(CheckpointListener):
    """Keeps every call, to check what the manager reports and in which order."""

    def __init__(self):
        self.calls = []

    def started(self, attempt, resumed_step):
        self.calls.append(("started", resumed_step))

    def restored(self, step):
        self.calls.append(("restored", step))

    def checkpoint_started(self, step, kind):
        self.calls.append(("checkpoint_started", step, kind))

    def checkpoint_finished(self, stats):
        self.calls.append(("checkpoint_finished", stats.step, stats.kind, stats.committed))

    def checkpoint_failed(self, failure):
        self.calls.append(("checkpoint_failed", failure.step, failure.skipped))

    def done(self, step):
        self.calls.append(("done", step))

    def closed(self):
        self.calls.append(("closed",))


def test_an_injected_listener_hears_the_lifecycle_and_no_run_log_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTSIM_EVENTS", str(tmp_path / "events.jsonl"))
    recorder = Recorder()
    with CheckpointManager((tmp_path / "ckpt").as_uri(), async_save=False, listener=recorder) as m:
        m.save(1, state_for(1))
        m.save(2, state_for(2), kind="final")
        m.mark_done(2)
    with CheckpointManager((tmp_path / "ckpt").as_uri(), listener=recorder) as m:
        m.restore_latest()
    assert recorder.calls == [
        ("started", None),
        ("checkpoint_started", 1, "periodic"),
        ("checkpoint_finished", 1, "periodic", True),
        ("checkpoint_started", 2, "final"),
        ("checkpoint_finished", 2, "final", True),
        ("done", 2),
        ("closed",),
        ("started", 2),
        ("restored", 2),
        ("closed",),
    ]
    assert not (tmp_path / "events.jsonl").exists()


class Counter:
    """A training object with torch's two state methods: the manager takes its state_dict() itself."""

    def __init__(self, value):
        self.value = np.arange(value, value + 4)

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def test_save_takes_a_training_state(tmp_path):
    with CheckpointManager(tmp_path.as_uri(), async_save=False) as m:
        m.save(3, Counter(7))
        restored = Counter(0)
        restored.load_state_dict(m.restore_latest().state)
    assert restored.value.tolist() == [7, 8, 9, 10]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep": 0},
        {"interval_s": 0},
        {"interval_s": float("nan")},
        {"interval_steps": 0},
        {"layout": "zip"},
        {"save_deadline_s": -1},
        {"save_deadline_s": float("inf")},
    ],
)
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


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", "0"),
        ("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", "ten"),
        ("SPOTSIM_CHECKPOINT_INTERVAL", "nan"),
        ("SPOTSIM_CHECKPOINT_KEEP", "-1"),
    ],
)
def test_from_env_with_a_bad_value_is_a_clear_error(tmp_path, monkeypatch, variable, text):
    monkeypatch.setenv("SPOTSIM_CHECKPOINT_URI", tmp_path.as_uri())
    monkeypatch.setenv(variable, text)
    with pytest.raises(CheckpointError, match=variable):
        CheckpointManager.from_env()


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
    planted = {
        "format": "spotsim-checkpoint/1",
        "step": 2,
        "kind": "periodic",
        "created": 0.0,
        "framework": "torch",
        "layout": "archive",
        "spotsim_version": "0",
        "metadata": {},
        "objects": {"abcdefabcdef/checkpoint.bin": {"size": len(bomb), "crc32c": _crc(bomb)}},
    }
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
