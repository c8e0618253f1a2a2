"""The simulated clock on real processes: fixed costs stay real at any K, and a run lands inside its projection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "jobs" / "watched_loop.py"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]


def run(tmp_path: Path, args: str, **env: str) -> dict:
    """``spotsim run ARGS -- python watched_loop.py`` with ``env``; its summary."""
    out = tmp_path / "run"
    bucket = (tmp_path / "bucket").as_uri()
    cmd = [*SPOTSIM, "run", *args.split(), "--bucket", bucket, "--out", str(out), "--", sys.executable, str(JOB)]
    done = subprocess.run(cmd, env=os.environ | env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "summary.json").read_text())


def test_a_two_second_start_up_at_k_100_stays_two_seconds(tmp_path):
    args = "--interval-steps 50 --time-scale 100 --schedule fixed:40 --kill sigkill"
    summary = run(tmp_path, args, START_SLEEP="2", STEP_SLEEP="0.005", TOTAL_STEPS="300")
    assert summary["preemptions"] == 1 and summary["completed"]
    startup = summary["clock"]["phases"]["startup"]
    assert startup["sim_s"] == pytest.approx(startup["real_s"])  # never × K
    # 2 s of sleep plus Python, numpy and spotsim's imports; a clock that ran them at K = 100 would say ~200 s
    assert 2.0 <= summary["startup_s"] < 4.0
    assert 2.0 <= summary["restart_overhead_s"] < 4.0
    # the VM lived its 40 simulated seconds: ~2 s starting up at 1×, the rest computing at 100×
    compute_first = summary["clock"]["phases"]["compute"]["sim_s"]
    assert compute_first > 40 - 4


def test_a_declared_start_up_is_charged_in_place_of_the_measured_one(tmp_path):
    summary = run(tmp_path, "--interval-steps 50 --time-scale 100 --startup 3m", STEP_SLEEP="0.002", TOTAL_STEPS="100")
    startup = summary["clock"]["phases"]["startup"]
    assert startup["sim_s"] == pytest.approx(180.0) and startup["real_s"] < 3.0
    assert summary["startup_s"] == pytest.approx(180.0, abs=1.0)


def test_live_lost_work_falls_inside_the_projection(tmp_path):
    """Known step time, K and a seeded Poisson schedule with SIGKILLs: about 15 preemptions, each losing work."""
    args = "--interval 20 --time-scale 100 --preempt-rate 90 --kill sigkill --seed 4"
    summary = run(tmp_path, args, STEP_SLEEP="0.002", TOTAL_STEPS="3000")
    projection = summary["projection"]
    lost = projection["metrics"]["lost_s"]
    assert summary["preemptions"] >= 5 and summary["lost_time_s"] > 0
    assert projection["trials"] >= 10_000
    assert lost["p10"] <= summary["lost_time_s"] <= lost["p90"], (summary["lost_time_s"], lost)
    assert lost["live"] == summary["lost_time_s"] and 0.1 <= lost["live_percentile"] <= 0.9
    wall = projection["metrics"]["wall_s"]
    assert wall["p10"] <= summary["sim_wall_s"] <= wall["p90"], (summary["sim_wall_s"], wall)
