"""`spotsim run` when the bucket fails: injected faults reported per attempt, and the harness's own emulator
killed mid-run is restarted rather than blamed on the job. Real proxy, real emulator, real jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]


def test_faults_are_retried_and_reported_per_attempt(tmp_path):
    """A workload on CheckpointManager behind a proxy answering 20 % of requests 503 or 429: it completes,
    its retried saves and the injected faults are in the summary, and the accounting identity holds."""
    out = tmp_path / "out"
    job = ["--workload", "torch-mlp", "--steps", "300", "--time-scale", "1", "--interval-steps", "30"]
    faults = ["--schedule", "fixed:4", "--storage-faults", "503=0.1,429=0.1,seed=5"]
    cmd = [*SPOTSIM, "run", *job, *faults, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=os.environ | {"COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    storage = summary["storage"]
    assert summary["completed"] and summary["identity_holds"] and summary["crashes"] == 0
    assert storage["faults"] == "503=0.1,429=0.1,seed=5"
    assert storage["injected"]["503"] > 0 and storage["injected"]["429"] > 0
    assert storage["retried"] > 0 and storage["retries"] >= storage["retried"]
    assert [a["attempt"] for a in storage["attempts"]] == list(range(summary["attempts"]))
    assert sum(sum(a["faults"].values()) for a in storage["attempts"]) == sum(storage["injected"].values())
    assert "saves retried / skipped / failed" in done.stdout


def test_a_killed_emulator_is_restarted_and_never_blamed_on_the_job(tmp_path):
    """When fake-gcs-server dies in the middle of a run, the harness notices, restarts it
    on the same root and port, logs the outage, and the run completes with no crash charged to the job and
    nothing committed lost (a job using only google-cloud-storage, which does not retry its uploads)."""
    out = tmp_path / "out"
    job = [sys.executable, str(JOBS / "plain_gcs_job.py")]
    cmd = [*SPOTSIM, "run", "--interval-steps", "25", "--time-scale", "1", "--out", str(out), "--", *job]
    env = os.environ | {"TOTAL_STEPS": "500", "STEP_SLEEP": "0.01"}
    harness = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        events = out / "events.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events.exists() and '"checkpoint"' in events.read_text()):
            time.sleep(0.05)
        children = ["pgrep", "-P", str(harness.pid), "-f", "fake-gcs-server"]
        emulators = subprocess.run(children, capture_output=True, text=True).stdout.split()
        assert len(emulators) == 1, "the harness runs one emulator, as its child"
        os.kill(int(emulators[0]), signal.SIGKILL)
        stdout, stderr = harness.communicate(timeout=180)
    finally:
        harness.kill()
    assert harness.returncode == 0, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["crashes"] == 0 and summary["identity_holds"]
    [outage] = summary["storage"]["emulator_outages"]
    assert outage["restarted"] and "emulator exited" in outage["cause"]
    log = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(e["event"] == "storage_outage" for e in log)
    assert all(x["cause"] in ("preempted", "storage_outage") for x in summary["interruptions"])
