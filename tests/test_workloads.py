"""The reference workloads under the harness contract: real subprocesses, real signals,
``file://`` checkpoints. A run SIGKILLed after a checkpoint and relaunched must end in
exactly the model of an uninterrupted run; SIGTERM must give an emergency checkpoint
and exit 0."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spotsim.errors import SpotsimError
from spotsim.workloads import WORKLOADS, UnknownWorkload, command

STEPS = 150
STEP_SLEEP = "0.01"  # stretches a run to a few seconds, so a kill lands mid-way
INTERVAL_STEPS = 20
KILL_AFTER_STEP = 40  # kill once a checkpoint at or past this step is reported: resumes mid-epoch (46 batches)
START_TIMEOUT_S = 60

# (workload, its extra arguments, the model file it writes)
RESUME_CASES = [
    pytest.param("torch-cnn", [], "model.pt", id="torch-cnn"),
    pytest.param("torch-mlp", ["--hidden", "64", "--layers", "2"], "model.pt", id="torch-mlp"),
    pytest.param("tf-cnn", [], "model.weights.h5", id="tf-cnn"),
]


@pytest.fixture
def processes():
    """Every process a test starts; any still running at teardown is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def contract_env(root: Path, *, attempt: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTSIM_")}
    env.update(
        SPOTSIM_CHECKPOINT_URI=(root / "checkpoints").as_uri(),
        SPOTSIM_EVENTS=str(root / "events.jsonl"),
        SPOTSIM_OUTPUT_DIR=str(root / "output"),
        SPOTSIM_CHECKPOINT_INTERVAL_STEPS=str(INTERVAL_STEPS),
        SPOTSIM_RUN_ID=root.name,
        SPOTSIM_ATTEMPT=str(attempt),
    )
    return env


def launch(processes, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a workload; its stderr goes next to its events file."""
    events = Path(env["SPOTSIM_EVENTS"])
    events.parent.mkdir(parents=True, exist_ok=True)
    with open(events.with_suffix(".stderr"), "ab") as log:
        proc = subprocess.Popen(command(name, args), env=env, stdout=subprocess.DEVNULL, stderr=log)
    processes.append(proc)
    return proc


def read_events(root: Path) -> list[dict]:
    path = root / "events.jsonl"
    if not path.exists():
        return []
    # A line being appended right now may be incomplete; only whole lines count.
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def stderr_of(root: Path) -> str:
    path = root / "events.stderr"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_checkpoint(proc: subprocess.Popen, root: Path, min_step: int) -> dict:
    """Block until the job reports a checkpoint at ``min_step`` or later; return its event."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = [e for e in read_events(root) if e["event"] == "checkpoint" and e["step"] >= min_step]
        if found:
            return found[0]
        assert proc.poll() is None, f"job exited ({proc.returncode}) before a checkpoint:\n{stderr_of(root)}"
        time.sleep(0.02)
    pytest.fail(f"no checkpoint at step >= {min_step} within {START_TIMEOUT_S} s:\n{stderr_of(root)}")


def finish(proc: subprocess.Popen, root: Path) -> None:
    assert proc.wait(timeout=120) == 0, stderr_of(root)


def model_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every array of a saved model, by name: torch state dicts and Keras ``.weights.h5`` files."""
    if path.suffix == ".pt":
        import torch

        return {name: tensor.numpy() for name, tensor in torch.load(path, weights_only=True).items()}
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return arrays


def assert_identical(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert expected[name].dtype == got[name].dtype and np.array_equal(expected[name], got[name]), name


def needs(*packages: str) -> None:
    """Skip unless the packages are installed (without importing them here: the jobs run in subprocesses)."""
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")


@pytest.mark.parametrize("name, extra, model_file", RESUME_CASES)
def test_sigkill_and_resume_is_bit_identical(tmp_path, processes, name, extra, model_file):
    needs(WORKLOADS[name].framework, *(["h5py"] if model_file.endswith(".h5") else []))
    args = ["--steps", str(STEPS), "--step-sleep", STEP_SLEEP, "--seed", "3", *extra]
    reference_root, preempted_root = tmp_path / "reference", tmp_path / "preempted"
    reference = launch(processes, name, args, contract_env(reference_root))  # runs alongside the preempted one
    victim = launch(processes, name, args, contract_env(preempted_root))
    wait_for_checkpoint(victim, preempted_root, KILL_AFTER_STEP)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, "the job ended before it could be killed mid-way"
    assert not any(e["event"] == "done" for e in read_events(preempted_root))

    finish(launch(processes, name, args, contract_env(preempted_root, attempt=1)), preempted_root)
    finish(reference, reference_root)

    starts = [e for e in read_events(preempted_root) if e["event"] == "start"]
    assert [s["attempt"] for s in starts] == [0, 1]
    assert KILL_AFTER_STEP <= starts[1]["resumed_step"] < STEPS, "the relaunch did not resume mid-way"
    assert [e["step"] for e in read_events(preempted_root) if e["event"] == "done"] == [STEPS]
    expected = model_tensors(reference_root / "output" / model_file)
    assert_identical(expected, model_tensors(preempted_root / "output" / model_file))


def test_sigterm_saves_an_emergency_checkpoint_and_exits_0(tmp_path, processes):
    pytest.importorskip("torch")
    job = launch(processes, "torch-cnn", ["--steps", "100000", "--step-sleep", STEP_SLEEP], contract_env(tmp_path))
    wait_for_checkpoint(job, tmp_path, INTERVAL_STEPS)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == 0, stderr_of(tmp_path)
    events = read_events(tmp_path)
    emergency = [e for e in events if e["event"] == "checkpoint" and e["kind"] == "emergency"]
    assert len(emergency) == 1 and emergency[0]["step"] > INTERVAL_STEPS
    assert not any(e["event"] == "done" for e in events)

    # A relaunch whose work is already checkpointed only writes the model and reports done.
    step = emergency[0]["step"]
    finish(launch(processes, "torch-cnn", ["--steps", str(step)], contract_env(tmp_path, attempt=1)), tmp_path)
    after = read_events(tmp_path)[len(events) :]
    assert [e["event"] for e in after if e["event"] in ("checkpoint", "done")] == ["done"]
    assert (tmp_path / "output" / "model.pt").exists()


def test_mlp_checkpoint_size_matches_its_formula(tmp_path, processes):
    pytest.importorskip("torch")
    from spotsim.workloads.torch_mlp import checkpoint_bytes

    job = launch(processes, "torch-mlp", ["--steps", "3", "--hidden", "300", "--layers", "3"], contract_env(tmp_path))
    finish(job, tmp_path)
    (final,) = [e for e in read_events(tmp_path) if e["event"] == "checkpoint"]
    assert 0 <= final["bytes"] - checkpoint_bytes(300, 3) < 64 * 1024  # the rest: RNG states, data position


def test_missing_checkpoint_uri_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTSIM_")}
    result = subprocess.run(command("torch-cnn", ["--steps", "1"]), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SPOTSIM_CHECKPOINT_URI" in lines[0]


def test_checkpoint_of_another_size_is_one_line_and_kept(tmp_path, processes):
    pytest.importorskip("torch")
    env = contract_env(tmp_path)
    finish(launch(processes, "torch-mlp", ["--steps", "2", "--hidden", "16"], env), tmp_path)
    result = subprocess.run(
        command("torch-mlp", ["--steps", "4", "--hidden", "32"]), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not fit this job" in result.stderr.strip().splitlines()[-1]
    assert (tmp_path / "checkpoints" / "step-000000000002" / "MANIFEST.json").exists()  # nothing saved is lost


@pytest.mark.parametrize(
    "module, args",
    [
        ("torch_cnn", ["--steps", "0"]),
        ("torch_cnn", ["--batch-size", "5000"]),  # more than the 1,500 training digits
        ("torch_cnn", ["--step-sleep", "nan"]),
        ("torch_mlp", ["--hidden", "8", "--checkpoint-mib", "10"]),
        ("torch_ddp", ["--batch-size", "0"]),
    ],
)
def test_bad_arguments_are_argparse_errors(module, args, capsys):
    pytest.importorskip("torch")
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"spotsim.workloads.{module}").main(args)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_checkpoint_mib_picks_the_largest_width_that_fits():
    pytest.importorskip("torch")
    from spotsim.workloads.torch_mlp import MiB, checkpoint_bytes, hidden_for

    for mib, layers in [(10, 4), (2048, 4), (100, 1)]:
        hidden = hidden_for(mib, layers)
        assert checkpoint_bytes(hidden, layers) <= mib * MiB < checkpoint_bytes(hidden + 1, layers)


# Run in a child process: building a job seeds every RNG and pins torch or TensorFlow to one thread.
WARM_UP_CHECK = """
import argparse, json, sys
import numpy as np

name = sys.argv[1]
args = argparse.Namespace(seed=3, batch_size=32, hidden=64, layers=2)
if name == "tf-cnn":
    from spotsim.checkpoint.tf_adapter import checkpoint_tensors
    from spotsim.workloads.tf_cnn import TFClassifierJob as build

    def values(job):  # weights, Adam's slots and step count (the data iterator is never touched)
        return {k: np.asarray(v) for k, v in checkpoint_tensors(job.state_dict()).items()}
else:
    import torch
    from importlib import import_module
    build = import_module("spotsim.workloads." + name.replace("-", "_")).build

    def flat(node, path=""):
        if isinstance(node, dict):
            return {k: v for key, child in node.items() for k, v in flat(child, f"{path}/{key}").items()}
        if isinstance(node, (list, tuple)):
            return {k: v for i, child in enumerate(node) for k, v in flat(child, f"{path}/{i}").items()}
        return {path: np.asarray(node.numpy() if isinstance(node, torch.Tensor) else node)}

    def values(job):  # weights, optimizer, data position, every RNG, and the gradients
        grads = {n: p.grad for n, p in job.model.named_parameters()}
        return flat(job.state_dict()) | flat({"grad": {n: g for n, g in grads.items() if g is not None}})

def differences(a, b):
    return sorted(set(a) ^ set(b)) + [k for k in a.keys() & b.keys() if not np.array_equal(a[k], b[k])]

def steps(job, n):
    for _ in range(n):
        job.train_step()
    return job

plain = values(steps(build(args), 4))
warmed = build(args)
warmed.warm_up()  # fresh, as on a first attempt
steps(warmed, 2)  # mid-run, with gradients and optimizer slots in place, as before a restore
before = values(warmed)
warmed.warm_up()
changed = differences(before, values(warmed))
print(json.dumps({"changed": changed, "trajectory": differences(plain, values(steps(warmed, 2))),
                  "compared": len(before)}))
"""


@pytest.mark.parametrize("name", [case.values[0] for case in RESUME_CASES])
def test_warm_up_leaves_training_exactly_as_it_was(name):
    """The warm-up runs before the restore on every attempt: it must change no value training reads."""
    needs(WORKLOADS[name].framework)
    result = subprocess.run(
        [sys.executable, "-c", WARM_UP_CHECK, name], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["compared"] > 10
    assert report["changed"] == [], "warm_up() changed these values"
    assert report["trajectory"] == [], "a job that warmed up trained differently"


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(UnknownWorkload) as error:
        command("resnet-9000", [])
    assert isinstance(error.value, SpotsimError) and isinstance(error.value, ValueError)
    assert all(name in str(error.value) for name in WORKLOADS)


def test_command_runs_the_module_with_this_python():
    expected = [sys.executable, "-m", "spotsim.workloads.torch_cnn", "--steps", "5"]
    assert command("torch-cnn", ["--steps", "5"]) == expected


def test_torch_ddp_runs_under_torchrun_on_one_node():
    """The harness swaps ``--standalone`` for rendezvous arguments in multi-node runs: the shape is fixed."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
    expected = [*launcher, "-m", "spotsim.workloads.torch_ddp", "--steps", "5"]
    assert command("torch-ddp", ["--steps", "5"]) == expected
    assert WORKLOADS["torch-ddp"].launcher == "torchrun"
    assert all(w.launcher is None for name, w in WORKLOADS.items() if name != "torch-ddp")


def test_registry_imports_no_framework():
    code = "import sys, spotsim.workloads; print(sorted({'torch', 'tensorflow', 'keras'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
    assert all(importlib.util.find_spec(w.module) is not None for w in WORKLOADS.values())
