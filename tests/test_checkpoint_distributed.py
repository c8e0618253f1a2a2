"""Distributed checkpoints: several ranks save one checkpoint together, rank 0 commits it.

The manager's protocol is tested in this process with ranks simulated by threads: the
:class:`~spotsim.checkpoint.distributed.Collective` is spotsim's own protocol, and a
thread barrier implements it honestly. The ``torch-ddp`` workload is tested under real
``torchrun`` with real signals: SIGKILL and resume bit for bit, a checkpoint of 2 ranks
restored at 1, an emergency checkpoint when one rank or the whole job is told to stop.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spotsim import CheckpointManager
from spotsim.checkpoint.distributed import ShardMarker, ShardsNotDurable, marker_key
from spotsim.checkpoint.manifest import Manifest, ObjectEntry, manifest_key, step_prefix
from spotsim.errors import CheckpointError, CorruptCheckpoint
from spotsim.events import EventLog
from spotsim.workloads import command

OLD_SAVE_ID = "0123456789ab"


def state_for(step: int, rows: int = 64) -> dict:
    rng = np.random.default_rng(step)
    return {"w": rng.standard_normal((rows, 32)).astype(np.float32), "b": np.arange(7.0), "step": step}


def assert_state(state: dict, step: int) -> None:
    expected = state_for(step)
    assert np.array_equal(state["w"], expected["w"]) and np.array_equal(state["b"], expected["b"])
    assert state["step"] == step


# -- the protocol, with ranks as threads ------------------------------------------------


class ThreadRanks:
    """``world_size`` ranks as threads of this process; :meth:`rank` gives each its collective."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=10)
        self.save_id = ""

    def rank(self, rank: int) -> ThreadCollective:
        return ThreadCollective(self, rank)


class ThreadCollective:
    def __init__(self, ranks: ThreadRanks, rank: int) -> None:
        self.ranks, self.rank, self.world_size = ranks, rank, ranks.world_size

    def broadcast_save_id(self, save_id: str) -> str:
        if self.rank == 0:
            self.ranks.save_id = save_id
        self.ranks.barrier.wait()
        agreed = self.ranks.save_id
        self.ranks.barrier.wait()  # every rank has read it before the next save may overwrite it
        return agreed


class FixedCollective:
    """One rank of ``world_size`` whose peers never answer: the broadcast gives ``save_id`` (or its own)."""

    def __init__(self, rank: int, world_size: int, save_id: str | None = None) -> None:
        self.rank, self.world_size, self.save_id = rank, world_size, save_id

    def broadcast_save_id(self, save_id: str) -> str:
        return self.save_id or save_id


def on_every_rank(work, world_size: int) -> list:
    """Run ``work(rank)`` in one thread per rank; return the results by rank (re-raising a rank's error)."""
    results: list = [None] * world_size

    def run(rank: int) -> None:
        try:
            results[rank] = work(rank)
        except BaseException as e:  # handed to the test's thread below
            results[rank] = e

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def save_together(uri: str, step: int, world_size: int, *, states=None, **options) -> list[CheckpointManager]:
    """Every rank saves ``step`` synchronously through its own manager; return the managers."""
    ranks = ThreadRanks(world_size)
    states = states or [state_for(step)] * world_size

    def save(rank: int) -> CheckpointManager:
        manager = CheckpointManager(uri, collective=ranks.rank(rank), async_save=False, **options)
        manager.save(step, states[rank], kind="manual", metadata={"epoch": 1})
        manager.close()
        return manager

    return on_every_rank(save, world_size)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_upload_their_shares_and_rank_0_commits(tmp_path, world_size):
    uri = (tmp_path / "ck").as_uri()
    managers = save_together(uri, 10, world_size)
    manifest = Manifest.parse((tmp_path / "ck" / manifest_key(10)).read_bytes(), expected_step=10)
    assert manifest.world_size == world_size and len(manifest.objects) == 2  # state.json and one shard
    sizes = {name.split("/")[1]: entry.size for name, entry in manifest.objects.items()}
    # Object i is rank i % world_size's: state.json rank 0's, the shard rank 1's, none for rank 2 of 3.
    total, shard = sum(sizes.values()), sizes["shard-00000.bin"]
    assert [m.saves[-1].bytes for m in managers] == [total, shard] + [0] * (world_size - 2)
    assert [m.saves[-1].committed for m in managers] == [True] + [False] * (world_size - 1)
    assert not list((tmp_path / "ck").rglob("rank-*.json")), "markers outlive their commit"
    with CheckpointManager(uri) as single:  # restores without any collective: at world size 1
        step, state, metadata = single.restore_latest()
    assert step == 10 and metadata == {"epoch": 1, "world_size": world_size}
    assert_state(state, 10)


def test_only_rank_0_reports_to_the_run_log(tmp_path):
    events = tmp_path / "events.jsonl"
    save_together((tmp_path / "ck").as_uri(), 10, 2, events=events)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in lines if e["event"] == "checkpoint"] == ["checkpoint"]
    assert len([e for e in lines if e["event"] == "start"]) == 1


def test_a_rank_that_dies_before_its_marker_fails_the_commit_within_the_timeout(tmp_path):
    uri, events = (tmp_path / "ck").as_uri(), tmp_path / "events.jsonl"
    ranks = ThreadRanks(2)

    def work(rank: int) -> tuple[CheckpointManager, float]:
        if rank == 1:  # agrees on the save id, then dies before uploading anything
            ranks.rank(1).broadcast_save_id("ffffffffffff")
            return None, 0.0
        manager = CheckpointManager(uri, collective=ranks.rank(0), commit_timeout_s=0.5, events=events)
        start = time.monotonic()
        manager.save(40, state_for(40))  # periodic, persisted in the background
        manager.wait()  # a skipped periodic save raises nothing
        return manager, time.monotonic() - start

    (manager, elapsed), _ = on_every_rank(work, 2)
    assert 0.5 <= elapsed < 5
    (failure,) = manager.failures
    assert failure.skipped and failure.error == "rank 1's shards of step 40 were not durable within 0.5 s"
    failed = [json.loads(line) for line in events.read_text().splitlines() if "checkpoint_failed" in line]
    assert failed[0]["step"] == 40 and failed[0]["skipped"] is True
    assert not (tmp_path / "ck" / manifest_key(40)).exists()


def test_an_emergency_save_whose_shards_never_come_raises(tmp_path):
    manager = CheckpointManager((tmp_path / "ck").as_uri(), collective=FixedCollective(0, 3), commit_timeout_s=0.3)
    with pytest.raises(ShardsNotDurable, match=r"^ranks 1 and 2's shards of step 7 were not durable within 0.3 s$"):
        manager.save(7, state_for(7), kind="emergency")
    assert isinstance(ShardsNotDurable("x"), TimeoutError) and manager.steps() == []


def test_an_interrupted_save_is_neither_waited_for_nor_restored(tmp_path):
    uri, store_root = (tmp_path / "ck").as_uri(), tmp_path / "ck"
    # What a save killed mid-way leaves: rank 1's objects and marker of an old save id, no manifest.
    with CheckpointManager(uri, collective=FixedCollective(1, 2, OLD_SAVE_ID), async_save=False) as rank_1:
        rank_1.save(40, state_for(99), kind="manual")
    assert (store_root / marker_key(40, OLD_SAVE_ID, 1)).exists()
    with CheckpointManager(uri) as single:
        assert single.restore_latest() is None

    # Rank 0 alone at the same step: the old save's marker does not count for its new save id.
    lone = CheckpointManager(uri, collective=FixedCollective(0, 2), commit_timeout_s=0.3, async_save=False)
    with pytest.raises(ShardsNotDurable, match="rank 1's shards of step 40"):
        lone.save(40, state_for(40), kind="manual")

    save_together(uri, 40, 2)  # the next save commits under its own id; retention drops the orphans
    with CheckpointManager(uri) as single:
        step, state, _ = single.restore_latest()
    assert step == 40
    assert_state(state, 40)
    manifest = Manifest.parse((store_root / manifest_key(40)).read_bytes(), expected_step=40)
    left = {p.relative_to(store_root).as_posix() for p in store_root.rglob("*") if p.is_file()}
    assert left == {manifest_key(40)} | {step_prefix(40) + name for name in manifest.objects}


def test_shards_of_another_state_are_refused(tmp_path):
    """Every rank must snapshot the same state; a rank whose objects differ in size fails the commit."""
    uri = (tmp_path / "ck").as_uri()
    with pytest.raises(CorruptCheckpoint, match="rank 1's shards of step 5 differ from rank 0's snapshot"):
        save_together(uri, 5, 2, states=[state_for(5), state_for(5, rows=65)])
    assert not (tmp_path / "ck" / manifest_key(5)).exists()


def test_markers_are_untrusted():
    entry = ObjectEntry(12, "AAAAAA==")
    good = ShardMarker(3, OLD_SAVE_ID, 1, 2, {f"{OLD_SAVE_ID}/shard-00000.bin": entry})
    identity = {"step": 3, "save_id": OLD_SAVE_ID, "rank": 1, "world_size": 2}
    assert ShardMarker.parse(good.to_json(), **identity) == good
    doc = json.loads(good.to_json())
    bad = [
        b"{not json",
        json.dumps({**doc, "format": "other"}).encode(),
        json.dumps({**doc, "save_id": "ffffffffffff"}).encode(),  # another save's marker
        json.dumps({**doc, "rank": 0}).encode(),
        json.dumps({**doc, "objects": {"ffffffffffff/shard-00000.bin": {"size": 1, "crc32c": "AAAAAA=="}}}).encode(),
        json.dumps({**doc, "objects": {f"{OLD_SAVE_ID}/../x": {"size": 1, "crc32c": "AAAAAA=="}}}).encode(),
        json.dumps({**doc, "objects": {f"{OLD_SAVE_ID}/a": {"size": -1, "crc32c": "AAAAAA=="}}}).encode(),
    ]
    for raw in bad:
        with pytest.raises(CorruptCheckpoint):
            ShardMarker.parse(raw, **identity)


def test_world_size_in_the_manifest_is_optional_and_strict():
    manifest = Manifest(1, "periodic", 0.0, "numpy", "directory", "0", {f"{OLD_SAVE_ID}/a": ObjectEntry(1, "AAAAAA==")})
    single = json.loads(manifest.to_json())
    assert "world_size" not in single  # single-process manifests are as they always were
    assert Manifest.parse(manifest.to_json(), expected_step=1).world_size is None
    assert Manifest.parse(json.dumps({**single, "world_size": 4}).encode(), expected_step=1).world_size == 4
    for bad in (0, -1, "2", True, None, 1.5):
        with pytest.raises(CorruptCheckpoint):
            Manifest.parse(json.dumps({**single, "world_size": bad}).encode(), expected_step=1)


def test_collective_options_are_checked(tmp_path):
    uri = (tmp_path / "ck").as_uri()
    with pytest.raises(TypeError):
        CheckpointManager(uri, collective=object())
    with pytest.raises(ValueError, match="rank 2 is not within world size 2"):
        CheckpointManager(uri, collective=FixedCollective(2, 2))
    with pytest.raises(ValueError, match="commit_timeout_s"):
        CheckpointManager(uri, collective=FixedCollective(0, 2), commit_timeout_s=0)


def test_a_bad_broadcast_save_id_is_refused(tmp_path):
    manager = CheckpointManager((tmp_path / "ck").as_uri(), collective=FixedCollective(1, 2, "../../etc"))
    with pytest.raises(CheckpointError, match="not 12 lowercase hex"):
        manager.save(1, state_for(1), kind="manual")


@pytest.mark.parametrize("rank, writes", [(None, True), ("0", True), ("1", False), ("3", False)])
def test_only_global_rank_0_writes_events(tmp_path, monkeypatch, rank, writes):
    monkeypatch.setenv("SPOTSIM_EVENTS", str(tmp_path / "events.jsonl"))
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert (EventLog.from_env() is not None) == writes


def test_torch_collective_needs_an_initialised_process_group():
    pytest.importorskip("torch")
    import torch.distributed as dist

    from spotsim.checkpoint.distributed import TorchCollective

    if dist.is_available() and dist.is_initialized():
        pytest.skip("this test process already joined a process group")
    with pytest.raises(CheckpointError, match="init_process_group"):
        TorchCollective.from_env()


def test_the_checkpoint_package_does_not_import_torch():
    code = "import sys, spotsim.checkpoint.distributed, spotsim.checkpoint; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"


# -- the torch-ddp workload under torchrun ----------------------------------------------

# Run in a child process, as a world of 1: building a job seeds every RNG and pins torch to one thread.
WARM_UP_CHECK = """
import argparse, json
import numpy as np
import torch
from spotsim.workloads import torch_ddp

def flat(node, path=""):
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in flat(child, f"{path}/{key}").items()}
    if isinstance(node, (list, tuple)):
        return {k: v for i, child in enumerate(node) for k, v in flat(child, f"{path}/{i}").items()}
    return {path: np.asarray(node.numpy() if isinstance(node, torch.Tensor) else node)}

def values(job):  # weights, optimizer, data position, every RNG, and the gradients
    grads = {n: p.grad for n, p in job.model.named_parameters() if p.grad is not None}
    return flat(job.state_dict()) | flat({"grad": grads})

def differences(a, b):
    return sorted(set(a) ^ set(b)) + [k for k in a.keys() & b.keys() if not np.array_equal(a[k], b[k])]

def steps(job, n):
    for _ in range(n):
        job.train_step()
    return job

torch_ddp.init_process_group()
args = argparse.Namespace(seed=3, batch_size=64)
plain = values(steps(torch_ddp.build(args), 4))
warmed = torch_ddp.build(args)
warmed.warm_up()
steps(warmed, 2)
before = values(warmed)
warmed.warm_up()
changed = differences(before, values(warmed))
print(json.dumps({"changed": changed, "trajectory": differences(plain, values(steps(warmed, 2))),
                  "compared": len(before)}))
"""


def test_warm_up_leaves_training_exactly_as_it_was():
    needs_torch_and_linux()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run(
        [sys.executable, "-c", WARM_UP_CHECK], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["compared"] > 10
    assert report["changed"] == [], "warm_up() changed these values"
    assert report["trajectory"] == [], "a job that warmed up trained differently"


STEPS = 150
STEP_SLEEP = "0.01"  # stretches a run to a few seconds, so a kill lands mid-way
INTERVAL_STEPS = 20
KILL_AFTER_STEP = 40  # once a checkpoint at or past this step is reported: resumes mid-epoch (23 batches)
TIMEOUT_S = 60

REFERENCE_ARGS = ["--steps", str(STEPS), "--step-sleep", STEP_SLEEP, "--seed", "3"]


def needs_torch_and_linux() -> None:
    if importlib.util.find_spec("torch") is None:  # not imported here: the jobs run in subprocesses
        pytest.skip("torch is not installed")
    if not sys.platform.startswith("linux"):
        pytest.skip("finds the workers through /proc, and they die with their agent by prctl")


@pytest.fixture
def processes():
    """Every torchrun agent a test starts, with its workers; any still running at teardown is killed."""
    started: list[subprocess.Popen] = []
    yield started
    kill_all(started)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run on 2 ranks, started once and shared: where its output and checkpoints are.

    It starts when the first test asks for it, so it runs alongside that test's own runs;
    :func:`finished` waits for it.
    """
    needs_torch_and_linux()
    root = tmp_path_factory.mktemp("reference")
    started: list[subprocess.Popen] = []
    torchrun(started, root, 2, REFERENCE_ARGS)
    yield root
    kill_all(started)


def finished(root: Path) -> Path:
    """``root`` once its run ended with ``done`` (the shared reference runs in the background)."""
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while not any(e["event"] == "done" for e in read_events(root)):
        assert time.monotonic() < deadline, f"no done event:\n{stderr_of(root)}"
        time.sleep(0.05)
    return root


def kill_all(agents: list[subprocess.Popen]) -> None:
    for agent in agents:
        for pid in [*workers_of(agent.pid).values(), agent.pid]:  # the workers first: then they are orphans
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        agent.wait()


def contract_env(root: Path, *, attempt: int = 0, checkpoints: Path | None = None) -> dict[str, str]:
    torchrun_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTSIM_") and k not in torchrun_vars}
    env.update(
        SPOTSIM_CHECKPOINT_URI=(checkpoints or root / "checkpoints").as_uri(),
        SPOTSIM_EVENTS=str(root / "events.jsonl"),
        SPOTSIM_OUTPUT_DIR=str(root / "output"),
        SPOTSIM_CHECKPOINT_INTERVAL_STEPS=str(INTERVAL_STEPS),
        SPOTSIM_RUN_ID=root.name,
        SPOTSIM_ATTEMPT=str(attempt),
    )
    return env


def torchrun(processes, root: Path, nproc: int, args: list[str], *, attempt: int = 0, **env) -> subprocess.Popen:
    """Start torch-ddp on ``nproc`` ranks, as the registry's command line does but for the rank count."""
    line = [f"--nproc-per-node={nproc}" if a == "--nproc-per-node=1" else a for a in command("torch-ddp", args)]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "stderr", "ab") as log:
        agent = subprocess.Popen(
            line,
            env=contract_env(root, attempt=attempt, **env),
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    processes.append(agent)
    return agent


def workers_of(agent: int) -> dict[int, int]:
    """The agent's worker processes by their RANK (torchrun starts each in a session of its own)."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{agent}\n" not in status.read_text():
                continue
            environ = (status.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        rank = next((item[5:] for item in environ if item.startswith(b"RANK=")), None)
        if rank is not None:
            found[int(rank)] = int(status.parent.name)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_events(root: Path) -> list[dict]:
    path = root / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def stderr_of(root: Path) -> str:
    path = root / "stderr"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def wait_for_event(agent: subprocess.Popen, root: Path, match) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if found := [e for e in read_events(root) if match(e)]:
            return found[0]
        assert agent.poll() is None, f"torchrun exited ({agent.returncode}) too soon:\n{stderr_of(root)}"
        time.sleep(0.02)
    pytest.fail(f"no such event within {TIMEOUT_S} s:\n{stderr_of(root)}")


def checkpoint_at_least(step: int):
    return lambda e: e["event"] == "checkpoint" and e["step"] >= step


def finish(agent: subprocess.Popen, root: Path) -> None:
    assert agent.wait(timeout=120) == 0, stderr_of(root)


def model(root: Path) -> dict[str, np.ndarray]:
    with np.load(root / "output" / "model.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def assert_identical(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert expected[name].dtype == got[name].dtype and np.array_equal(expected[name], got[name]), name


def test_sigkill_of_two_ranks_and_resume_is_bit_identical(tmp_path, processes, reference):
    needs_torch_and_linux()
    args, preempted_root = REFERENCE_ARGS, tmp_path / "preempted"
    victim = torchrun(processes, preempted_root, 2, args)
    wait_for_event(victim, preempted_root, checkpoint_at_least(KILL_AFTER_STEP))
    workers = workers_of(victim.pid)
    assert sorted(workers) == [0, 1]
    os.killpg(victim.pid, signal.SIGKILL)  # the agent's group: its workers are in sessions of their own
    assert victim.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers.values()), "workers outlived their torchrun agent"
    assert not any(e["event"] == "done" for e in read_events(preempted_root))

    finish(torchrun(processes, preempted_root, 2, args, attempt=1), preempted_root)

    starts = [e for e in read_events(preempted_root) if e["event"] == "start"]  # rank 0's alone
    assert [s["attempt"] for s in starts] == [0, 1]
    assert KILL_AFTER_STEP <= starts[1]["resumed_step"] < STEPS, "the relaunch did not resume mid-way"
    assert [e["step"] for e in read_events(preempted_root) if e["event"] == "done"] == [STEPS]
    assert_identical(model(finished(reference)), model(preempted_root))


def test_a_checkpoint_of_two_ranks_restores_exactly_at_one(tmp_path, processes, reference):
    needs_torch_and_linux()
    two = finished(reference)
    written = model(two)
    with CheckpointManager((two / "checkpoints").as_uri()) as manager:
        step, state, metadata = manager.restore_latest()
    assert step == STEPS and metadata["world_size"] == 2
    assert_identical(written, {name: t.numpy() for name, t in state["model"].items()})
    assert state["data"]["epoch"] == STEPS // 23 and state["data"]["consumed"] == STEPS % 23 * 64

    # One rank resumes the same checkpoint: the model it writes is the same, bit for bit.
    one = torchrun(processes, tmp_path, 1, REFERENCE_ARGS, checkpoints=two / "checkpoints")
    finish(one, tmp_path)
    assert [e["resumed_step"] for e in read_events(tmp_path) if e["event"] == "start"] == [STEPS]
    assert_identical(written, model(tmp_path))


@pytest.mark.parametrize("target", ["rank-1", "agent"])
def test_sigterm_gives_an_emergency_checkpoint_at_the_agreed_step(tmp_path, processes, target):
    """SIGTERM to one rank (its VM is going) or to torchrun (which passes it to every rank)."""
    needs_torch_and_linux()
    agent = torchrun(processes, tmp_path, 2, ["--steps", "100000", "--step-sleep", STEP_SLEEP])
    wait_for_event(agent, tmp_path, checkpoint_at_least(INTERVAL_STEPS))
    os.kill(agent.pid if target == "agent" else workers_of(agent.pid)[1], signal.SIGTERM)
    emergency = wait_for_event(agent, tmp_path, lambda e: e["event"] == "checkpoint" and e["kind"] == "emergency")
    manifest_path = tmp_path / "checkpoints" / manifest_key(emergency["step"])
    manifest = Manifest.parse(manifest_path.read_bytes(), expected_step=emergency["step"])
    assert manifest.kind == "emergency" and manifest.world_size == 2
    assert agent.wait(timeout=60) != 0  # a preempted job never ends as if it had finished
    assert not any(e["event"] == "done" for e in read_events(tmp_path))
    if target == "rank-1":
        assert "exitcode  : 143" in stderr_of(tmp_path) or "exitcode: 143" in stderr_of(tmp_path), stderr_of(tmp_path)
