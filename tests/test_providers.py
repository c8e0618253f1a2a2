"""Provider profiles: each cloud's preemption timeline, met by real jobs reading a real local metadata server.

The live tests run ``tests/jobs/metadata_job.py``, which has no SIGTERM handler and learns of its
preemption only from the metadata server, through the variables the cloud clients read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spotsim.errors import InvalidOption
from spotsim.preemption import parse_schedule
from spotsim.preemption.providers import PROVIDERS, parse_provider
from spotsim.sim.montecarlo import Job, simulate

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]


def test_each_profile_states_its_timeline():
    assert {name: (p.cloud, p.notice_s, p.grace_s) for name, p in PROVIDERS.items()} == {
        "gcp-spot": ("gce", 0.0, 30.0),
        "gcp-preemptible": ("gce", 0.0, 30.0),
        "gke": ("gce", 0.0, 15.0),
        "aws-spot": ("aws", 120.0, 30.0),
        "azure-spot": ("azure", 30.0, 0.0),
    }
    assert PROVIDERS["gcp-preemptible"].max_uptime_s == 24 * 3600
    assert PROVIDERS["aws-spot"].assumptions and PROVIDERS["azure-spot"].approvable


def test_overrides_apply_and_bad_ones_say_why():
    gcp = parse_provider("gcp-spot", notice_s=120.0)
    assert (gcp.notice_s, gcp.grace_s) == (120.0, 30.0) and "notice 120s" in gcp.describe()
    assert parse_provider("aws-spot", grace_s=5.0, rebalance_lead_s=600.0).rebalance_lead_s == 600.0
    with pytest.raises(InvalidOption, match="unknown --provider 'gcp'; use one of gcp-spot"):
        parse_provider("gcp")
    with pytest.raises(InvalidOption, match="--rebalance-lead is for aws-spot"):
        parse_provider("gke", rebalance_lead_s=60.0)
    with pytest.raises(InvalidOption, match="--notice must be a duration ≥ 0"):
        parse_provider("gcp-spot", notice_s=-1.0)


def test_the_simulator_stops_every_vm_at_the_uptime_cap():
    """Work of 30 h with no preemption at all: a 24 h cap still stops the first VM once."""
    job = Job(work_s=30 * 3600, checkpoint_s=10, step_s=1)
    never = parse_schedule("poisson", 0.0)
    free = simulate(job, [600.0], never, trials=3, seed=1)
    capped = simulate(Job(**{**job.__dict__, "max_uptime_s": 24 * 3600}), [600.0], never, trials=3, seed=1)
    assert np.all(free.preemptions == 0) and np.all(capped.preemptions == 1)


def run(tmp_path: Path, *args: str, env: dict) -> tuple[dict, list[dict]]:
    out = tmp_path / "run"
    done = subprocess.run(
        [*SPOTSIM, "run", "--out", str(out), *args, "--", sys.executable, str(JOBS / "metadata_job.py")],
        env=os.environ | {"TOTAL_STEPS": "300", "STEP_SLEEP": "0.01", "COLUMNS": "250"} | env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), events


def seen(tmp_path: Path, attempt: int) -> list[dict]:
    return json.loads((tmp_path / "run" / "output" / f"seen-{attempt}.json").read_text())


def test_gcp_notice_long_polled_the_seed_001_way_loses_nothing(tmp_path):
    """--notice 120s: preempted TRUE at t0, SIGTERM only 120 s later. The job (no SIGTERM handler) long-polls
    instance/preempted, sees TRUE within a second, saves and exits 0 before any signal; the result is
    bit-identical to an uninterrupted run."""
    summary, events = run(
        tmp_path,
        "--provider",
        "gcp-spot",
        "--notice",
        "120s",
        "--schedule",
        "fixed:2",
        "--interval-steps",
        "50",
        "--time-scale",
        "1",
        env={"CLOUD": "gce"},
    )
    assert summary["completed"] and summary["preemptions"] == 1 and summary["lost_steps"] == 0
    [preemption] = summary["interruptions"]
    assert preemption["exit"] == "before_signal" and preemption["signals"] == []
    assert preemption["notice_seen_after_real_s"] < 1.0 and preemption["emergency_before_kill"]
    assert preemption["resumed_step"] == preemption["last_step"]
    assert not any(e["event"] == "signal" for e in events)
    requests = [e for e in events if e["event"] == "metadata_request"]
    assert all(r["path"].startswith("/computeMetadata/v1/instance/preempted") for r in requests)
    assert any("wait_for_change=true" in r["path"] and r["notice"] for r in requests)
    assert summary["provider"]["name"] == "gcp-spot" and summary["provider"]["notice_s"] == 120.0

    reference = tmp_path / "reference"
    reference.mkdir()
    _, _ = run(reference, "--interval-steps", "50", "--time-scale", "1", env={"CLOUD": "gce"})
    with np.load(tmp_path / "run" / "output" / "model.npz") as a, np.load(reference / "run/output/model.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("w", "b"))


def test_aws_notice_is_404_then_a_fixed_deadline_consistent_with_k(tmp_path):
    """aws-spot at K = 60: instance-action answers 404, then the same time on every poll, 120 s / 60 = 2 s
    ahead of the job's real clock (whole seconds, as IMDS writes them). The job loses nothing."""
    summary, events = run(
        tmp_path,
        "--provider",
        "aws-spot",
        "--schedule",
        "fixed:90",
        "--interval-steps",
        "50",
        "--time-scale",
        "60",
        "--rebalance-lead",
        "60s",
        "--export-plan",
        "aws-fis",
        str(tmp_path / "plan"),
        env={"CLOUD": "aws", "POLL_S": "0.1"},
    )
    assert summary["preemptions"] == 1 and summary["lost_steps"] == 0 and summary["completed"]
    [preemption] = summary["interruptions"]
    assert preemption["exit"] == "before_signal" and preemption["emergency_before_kill"]
    polls = seen(tmp_path, 0)
    assert polls[0]["status"] == 404
    answers = [json.loads(p["body"]) for p in polls if p["status"] == 200]
    assert len(answers) >= 3 and len({a["time"] for a in answers}) == 1  # fixed: it does not slide
    assert answers[0]["action"] == "terminate"
    [notice] = [e for e in events if e["event"] == "notice"]
    deadline = np.datetime64(answers[0]["time"].rstrip("Z")).astype("datetime64[s]").astype(float)
    assert abs(deadline - notice["deadline_t"]) <= 0.5 and 1.0 <= notice["deadline_t"] - notice["t"] <= 2.5
    rebalance, notice_event = [e for e in events if e["event"] in ("rebalance", "notice")]
    assert rebalance["event"] == "rebalance" and 0.5 <= notice_event["t"] - rebalance["t"] <= 1.5  # 60 s ahead, at K 60
    # the replay plan: the one preemption, at the uptime the run's clock gave it, with AWS's 2-minute notice
    template = json.loads((tmp_path / "plan" / "fis-template-1.json").read_text())
    assert template["actions"][next(iter(template["actions"]))]["parameters"]["durationBeforeInterruption"] == "PT2M"
    assert not (tmp_path / "plan" / "fis-template-2.json").exists()
    assert f"| 1 | 0 | {round(preemption['uptime_s'])} s |" in (tmp_path / "plan" / "README.md").read_text()


def test_a_legacy_preemptible_vm_stops_at_24_hours_whatever_the_schedule_says(tmp_path):
    """gcp-preemptible with no preemption drawn at all (λ = 0): at K = 36,000 the VM still stops at 24 h of
    uptime (2.4 s of compute), announced like any preemption: TRUE with the SIGTERM, which kills this job (it has
    no handler) with at most an interval's steps lost. The next VM finishes the job."""
    summary, events = run(
        tmp_path,
        "--provider",
        "gcp-preemptible",
        "--preempt-rate",
        "0",
        "--interval-steps",
        "50",
        "--time-scale",
        "36000",
        env={"CLOUD": "gce", "TOTAL_STEPS": "350"},
    )
    assert summary["completed"] and summary["preemptions"] == 1 and summary["identity_holds"]
    [preemption] = summary["interruptions"]
    assert preemption["hard_stop"] and preemption["uptime_s"] == pytest.approx(24 * 3600, rel=0.01)
    assert preemption["signals"][0] == "SIGTERM" and 0 <= preemption["lost_steps"] <= 50
    assert [e["hard_stop"] for e in events if e["event"] == "launch"] == [True, True]


def test_azure_approval_brings_the_eviction_forward(tmp_path):
    """azure-spot at K = 1: Preempt with NotBefore 30 s ahead. The job approves after its emergency save,
    and is evicted at once, not at NotBefore."""
    summary, events = run(
        tmp_path,
        "--provider",
        "azure-spot",
        "--schedule",
        "fixed:2",
        "--interval-steps",
        "50",
        "--time-scale",
        "1",
        env={"CLOUD": "azure", "APPROVE": "1"},
    )
    assert summary["preemptions"] == 1 and summary["lost_steps"] == 0 and summary["completed"]
    [notice] = [e for e in events if e["event"] == "notice"]
    sigterm = next(e for e in events if e["event"] == "signal")
    assert sigterm["signal"] == "SIGTERM" and sigterm.get("approved")
    assert sigterm["t"] - notice["t"] < 10, "evicted at the approval, long before NotBefore (30 s)"
    [preemption] = summary["interruptions"]
    assert preemption["emergency_before_kill"] and preemption["exit"] == "killed"
    posts = [e for e in events if e["event"] == "metadata_request" and e["method"] == "POST"]
    assert posts and posts[0]["status"] == 200


def test_verify_passes_a_job_that_resumes_from_its_metadata_notice(tmp_path):
    """spotsim verify under a 120 s GCP notice: the kill is the notice alone (the job exits before any
    signal), and the resume from its emergency checkpoint is bit-exact."""
    cmd = [
        *SPOTSIM,
        "verify",
        "--provider",
        "gcp-spot",
        "--notice",
        "120s",
        "--kill",
        "sigterm",
        "--kill-steps",
        "60",
        "--artifact",
        "model.npz",
        "--out",
        str(tmp_path / "v"),
        "--",
        sys.executable,
        str(JOBS / "metadata_job.py"),
    ]
    env = os.environ | {"CLOUD": "gce", "TOTAL_STEPS": "150", "STEP_SLEEP": "0.005", "COLUMNS": "250"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads((tmp_path / "v" / "verdict.json").read_text())
    [check] = verdict["checks"]
    assert check["kills"] and check["kills"][0]["signals"] == [] and check["resumes"]
    assert "notice only" in done.stdout
