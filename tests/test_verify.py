"""`spotsim verify` end to end: resume-correct jobs pass under drawn kill schedules, broken ones are
caught with the right diagnosis, and bad input is one line with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotsim.cost import load_prices
from spotsim.harness import KillMode
from spotsim.harness.verify import VerifyConfig, verify

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
MACHINE = load_prices().machine("gcp-t4")


def workload(name: str, steps: int) -> tuple[str, ...]:
    from spotsim.workloads import command

    return tuple(command(name, ["--steps", str(steps)]))


def kill_plans(steps: int, interval: int):
    """One run's kill points: 1–3 distinct steps after the first checkpoint is surely committed (an
    earlier kill only restarts from scratch, which proves nothing), each at that step or inside the
    first save from that step on."""
    points = st.dictionaries(st.integers(2 * interval + 1, steps - 1), st.booleans(), min_size=1, max_size=3)
    return points.map(lambda p: ",".join(f"{s}:save" if p[s] else str(s) for s in sorted(p)))


@pytest.mark.slow
# Each framework and each kill mode once (the cross product doubled the time and found nothing more).
@pytest.mark.parametrize(("name", "steps", "kill"), [("torch-cnn", 400, "sigkill"), ("tf-cnn", 300, "sigterm")])
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_workload_resumes_bit_exactly_under_drawn_kills(tmp_path_factory, name, steps, kill, data):
    plan = data.draw(kill_plans(steps, 50), label="kill steps")
    out = tmp_path_factory.mktemp("verify")
    config = VerifyConfig(workload(name, steps), out, kill=KillMode.parse(kill), interval_steps=50, kill_plans=(plan,))
    verdict = verify(config, MACHINE)
    assert verdict.ok, verdict.to_json()
    [check] = verdict.checks
    assert check.kills and check.resumes, "a pass means a kill landed and an attempt resumed"
    assert len(check.kills) == len(plan.split(",")), "every kill point landed (a final save always comes)"
    assert check.kills_in_save == plan.count(":save"), "each :save point killed inside a save"
    summary = json.loads((out / "run-1" / "summary.json").read_text())
    assert summary["preemptions"] == len(check.kills) and summary["completed"]
    assert [r.step for r in check.resumes] == [x["resumed_step"] for x in summary["interruptions"]]


def spotsim_verify(tmp_path, *args: str, bug: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"COLUMNS": "250"} | ({"BUG": bug} if bug else {})
    job = ["--", sys.executable, str(JOBS / "broken_resume.py")] if bug else []
    cmd = [*SPOTSIM, "verify", *args, "--out", str(tmp_path / "v"), *job]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


BROKEN = {
    "optimizer": "never registered with the manager: optimizer state",
    "rng-data": "never registered with the manager: RNG, data position state",
    "never-load": "restarted from step 0 although attempt 0 had checkpointed step",
}


@pytest.mark.parametrize("bug", BROKEN)
def test_broken_resume_is_caught_with_its_diagnosis(tmp_path, bug):
    done = spotsim_verify(tmp_path, "--interval-steps", "20", "--preemptions", "1", "--kill-steps", "70,150", bug=bug)
    assert done.returncode == 1, done.stdout + done.stderr
    assert BROKEN[bug] in done.stdout and "NOT resume-correct" in done.stdout
    verdict = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert verdict["outcome"] == "fail" and verdict["checks"][0]["planned"] == "70,150"
    landed = [k["step"] for k in verdict["checks"][0]["kills"]]
    assert len(landed) == 2 and landed[0] >= 70 and landed[1] >= 150, f"the kills that landed, where: {landed}"
    if bug != "never-load":  # that one trains from scratch each time and ends identical: only its log betrays it
        assert "first: model/" in done.stdout and "differs already at step" in done.stdout


def test_the_correct_version_of_that_job_passes(tmp_path):
    done = spotsim_verify(tmp_path, "--interval-steps", "20", "--preemptions", "1", bug="none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resume-correct: 1 preempted run resumed and match" in done.stdout


def test_with_work_every_run_shares_one_measured_k(tmp_path):
    done = spotsim_verify(
        tmp_path, "--work", "2h", "--steps", "300", "--interval-steps", "20", "--preemptions", "1", bug="none"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads((tmp_path / "v" / "verdict.json").read_text())
    assert verdict["clock"].startswith("K = ") and "2 h of work in 300 steps" in verdict["clock"]
    k = float(verdict["clock"].split()[2].rstrip(",:").replace(",", ""))
    for run in ("reference", "run-1"):
        summary = json.loads((tmp_path / "v" / run / "summary.json").read_text())
        assert summary["time_scale"] == pytest.approx(k, rel=1e-3)


def test_artifact_comparison(tmp_path):
    done = spotsim_verify(
        tmp_path, "--workload", "torch-cnn", "--steps", "300", "--preemptions", "1", "--artifact", "model.pt"
    )
    assert done.returncode == 0, done.stdout + done.stderr


BAD = {
    "unknown workload": ["--workload", "nope"],
    "absolute artifact": ["--artifact", "/etc/passwd"],
    "no runs": ["--preemptions", "0"],
    "bad kill steps": ["--kill-steps", "ten"],
    "bad kill point": ["--kill-steps", "10:later"],
    "negative seed": ["--seed", "-1"],
    "zero interval": ["--interval", "0"],
    "in-save kills on a real bucket": ["--kill-steps", "10:save", "--bucket", "gs://some-bucket/x"],
    "bad kill mode": ["--kill", "sigstop"],
    "work without an interval": ["--work", "1h"],
    "zero work": ["--work", "0", "--interval-steps", "20"],
}


@pytest.mark.parametrize("args", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_exit_2(tmp_path, args):
    done = spotsim_verify(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:") and "Traceback" not in done.stderr


def test_a_job_without_spotsim_checkpoints_needs_an_artifact(tmp_path):
    env = os.environ | {"TOTAL_STEPS": "60", "STEP_SLEEP": "0.001"}
    cmd = [
        *SPOTSIM,
        "verify",
        "--preemptions",
        "1",
        "--bucket",
        (tmp_path / "b").as_uri(),
        "--out",
        str(tmp_path / "v"),
        "--",
        sys.executable,
        str(JOBS / "foreign_job.py"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pass --artifact" in done.stderr, done.stderr
