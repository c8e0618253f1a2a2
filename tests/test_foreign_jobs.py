"""Jobs spotsim did not write (``tests/jobs/``), each with the verdict ``spotsim verify`` or ``spotsim run`` must give.

Every job follows the contract by hand with numpy and, on ``gs://``, the plain google-cloud-storage
client. A pass must mean a resume was tested and came out identical; a job whose resume was never
tested is inconclusive (exit 3); a wrong resume fails (exit 1) with the anomaly in words, even when
the final tensors happen to match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
FAST = {"TOTAL_STEPS": "120", "STEP_SLEEP": "0.008"}


def verify(tmp_path: Path, job: str, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = [
        *SPOTSIM,
        "verify",
        "--artifact",
        "model.npz",
        *args,
        "--out",
        str(tmp_path / "v"),
        "--",
        sys.executable,
        str(JOBS / job),
    ]
    done = subprocess.run(
        cmd, env=os.environ | FAST | {"COLUMNS": "300"} | (env or {}), capture_output=True, text=True, timeout=300
    )
    path = tmp_path / "v" / "verdict.json"
    return done, json.loads(path.read_text()) if path.exists() else {}


# (job, verify options, extra env, exit status, words the output must hold)
CASES = {
    "plain client, correct": ("plain_gcs_job.py", ["--preemptions", "2"], {}, 0, "resume-correct"),
    "plain client, SIGTERM": ("plain_gcs_job.py", ["--preemptions", "1", "--kill", "sigterm"], {}, 0, "resume-correct"),
    "no step events": ("no_step_events.py", [], {}, 3, "the job reports no step events, so kills cannot be placed"),
    "no checkpoint before the kill": (
        "step_interval_only.py",
        ["--interval-steps", "100", "--preemptions", "1"],
        {"TOTAL_STEPS": "48"},
        3,
        "no checkpoint was committed before any kill",
    ),
    "fixed local path": (
        "fixed_local_dir.py",
        ["--preemptions", "1"],
        {},
        1,
        "the first attempt of a fresh run resumed from step 120",
    ),
    "stale-counter SIGTERM handler": (
        "stale_sigterm_handler.py",
        ["--kill", "sigterm", "--kill-steps", "60"],
        {},
        1,
        "emergency checkpoint is of step 0 but it had reached step",
    ),
    "repeats an epoch": (
        "repeats_an_epoch.py",
        ["--kill-steps", "50"],
        {},
        1,
        "the run ended at step 240, the reference at step 200",
    ),
    "resumes behind its last checkpoint": (
        "resume_behind.py",
        ["--interval-steps", "20", "--kill-steps", "90"],
        {},
        1,
        "resumed from step 60, below step 80",
    ),
    "torn in-place save on gs://": (
        "inplace_save.py",
        ["--interval-steps", "20", "--kill-steps", "50:save"],
        {},
        1,
        "corrupt checkpoint",
    ),
}


@pytest.mark.parametrize(("job", "args", "env", "status", "says"), CASES.values(), ids=CASES.keys())
def test_verdict(tmp_path, job, args, env, status, says):
    if job == "fixed_local_dir.py":
        env = env | {"FIXED_CKPT_DIR": str(tmp_path / "fixed")}
    done, verdict = verify(tmp_path, job, *args, env=env)
    assert done.returncode == status, done.stdout + done.stderr
    assert says in done.stdout, done.stdout
    assert "Traceback" not in done.stderr
    assert verdict["outcome"] == {0: "pass", 1: "fail", 3: "inconclusive"}[status]
    if status == 0:  # a pass names the kills that landed and the resumes that happened
        assert all(c["kills"] and c["resumes"] for c in verdict["checks"]), verdict


def test_a_torn_checkpoint_that_crashes_the_resume_fails_and_the_other_runs_still_run(tmp_path):
    """A kill inside an in-place save on file:// tears the file; the resume crashes on it. That is the job's
    bug: exit 1 (not a set-up error), which kill landed inside which save, the stderr tail, every run run."""
    bucket = (tmp_path / "bucket").as_uri()
    args = ["--bucket", bucket, "--interval-steps", "20"]
    done, verdict = verify(tmp_path, "inplace_save.py", *args, "--kill-steps", "50:save", env={"SAVE_SLOW": "0.03"})
    assert done.returncode == 1, done.stdout + done.stderr
    [check] = verdict["checks"]
    assert check["outcome"] == "fail" and check["kills_in_save"] == 1
    assert check["kills"][0]["in_save"] and "checkpoint.bin" in check["kills"][0]["write"]
    assert (
        "inside a save (writing checkpoint.bin)" in done.stdout
        and "a checkpoint the job cannot resume from" in done.stdout
    )
    assert "corrupt checkpoint" in check["stderr_tail"]


@pytest.mark.parametrize(("layout", "status"), [("per-step", 0), ("in-place", 1)])
def test_torch_distributed_checkpoint(tmp_path, layout, status):
    """A real framework's own checkpointing: DCP saved over one directory, as its tutorial does, tears when a
    kill lands inside the save; one directory per step with an atomic `latest` pointer survives it."""
    args = [
        "--bucket",
        (tmp_path / "b").as_uri(),
        "--artifact",
        "model.pt",
        "--interval-steps",
        "20",
        "--kill-steps",
        "50:save",
    ]
    cmd = [
        *SPOTSIM,
        "verify",
        *args,
        "--out",
        str(tmp_path / "v"),
        "--",
        sys.executable,
        str(JOBS / "torch_dcp_job.py"),
    ]
    done = subprocess.run(
        cmd, env=os.environ | {"DCP_LAYOUT": layout, "COLUMNS": "300"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == status, done.stdout + done.stderr
    [check] = json.loads((tmp_path / "v" / "verdict.json").read_text())["checks"]
    write = check["kills"][0]["write"]
    assert check["kills_in_save"] == 1 and (".distcp" in write or ".metadata" in write), check["kills"]
    if status:
        assert "a checkpoint the job cannot resume from" in done.stdout
    else:
        assert check["resumes"] and check["resumes"][0]["step"] == 40, "the torn save of step 60 was never loaded"


@pytest.mark.slow
def test_keras_backup_and_restore_repeats_the_epoch_it_resumes_in(tmp_path):
    """Keras's own BackupAndRestore, saving every 10 batches of 20-batch epochs: killed at batch 15, the resume
    starts epoch 0 over from its first batch (Keras 3.15), so 10 steps are trained twice."""
    args = [
        "--bucket",
        (tmp_path / "b").as_uri(),
        "--artifact",
        "model.weights.h5",
        "--interval-steps",
        "10",
        "--kill-steps",
        "15",
    ]
    cmd = [
        *SPOTSIM,
        "verify",
        *args,
        "--out",
        str(tmp_path / "v"),
        "--",
        sys.executable,
        str(JOBS / "keras_backup_job.py"),
    ]
    done = subprocess.run(cmd, env=os.environ | {"COLUMNS": "300"}, capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, done.stdout + done.stderr
    [check] = json.loads((tmp_path / "v" / "verdict.json").read_text())["checks"]
    assert check["resumes"] == [{"attempt": 1, "step": 10}]
    assert "the run ended at step 90, the reference at step 80" in done.stdout


def test_drawn_runs_all_run_after_a_crash(tmp_path):
    args = ["--interval-steps", "20", "--preemptions", "3", "--kills-per-run", "1", "--seed", "4"]
    done, verdict = verify(tmp_path, "inplace_save.py", *args)
    assert len(verdict["checks"]) == 3, "a crash in one run does not skip the others"
    assert done.returncode in (0, 1) and verdict["outcome"] in ("pass", "fail"), done.stdout + done.stderr


# -- the harness on foreign jobs -------------------------------------------------------------


def run(tmp_path: Path, job: str, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    cmd = [*SPOTSIM, "run", *args, "--out", str(out), "--", sys.executable, str(JOBS / job)]
    done = subprocess.run(cmd, env=os.environ | FAST | (env or {}), capture_output=True, text=True, timeout=120)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return done, summary


def test_a_plain_client_job_runs_on_the_default_bucket(tmp_path):
    """The default emulator bucket exists: a job using only google-cloud-storage needs no extra step."""
    done, summary = run(
        tmp_path, "plain_gcs_job.py", "--interval-steps", "20", "--schedule", "steps:60,90", "--kill", "sigkill"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary["completed"] and summary["crashes"] == 0 and summary["preemptions"] == 2
    assert summary["checkpoint_uri"].startswith("gs://spotsim-runs/") and summary["identity_holds"]


def test_a_job_that_wrote_done_is_never_relaunched(tmp_path):
    """A preemption due while the job takes its time to exit after `done` (TensorFlow: ~1 s) changes nothing."""
    done, summary = run(
        tmp_path,
        "plain_gcs_job.py",
        "--interval-steps",
        "20",
        "--schedule",
        "fixed:6",
        "--kill",
        "sigkill",
        env={"TOTAL_STEPS": "20", "AFTER_DONE": "slow-exit", "SLOW_EXIT": "8"},
    )
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    done_t = next(e["t"] for e in events if e["event"] == "done")
    exit_t = next(e["t"] for e in events if e["event"] == "exit")
    launch_t = next(e["t"] for e in events if e["event"] == "launch")
    assert done_t < launch_t + 6 < exit_t, "the preemption fell due between `done` and the exit"
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary["completed"] and summary["attempts"] == 1 and summary["preemptions"] == 0
    assert summary["lost_steps"] == 0


def test_a_job_that_loops_after_done_is_stopped(tmp_path):
    done, summary = run(tmp_path, "plain_gcs_job.py", "--interval-steps", "20", env={"AFTER_DONE": "loop"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary["completed"] and summary["attempts"] == 1
    assert any("still running 5 s after done" in a for a in summary["anomalies"]), summary["anomalies"]
    assert summary["wall_s"] < 30
