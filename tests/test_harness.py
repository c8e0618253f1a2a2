"""`spotsim run` end to end: real subprocesses, real signals, fixed schedules, measured lost work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spotsim.events import CHECKPOINT, EXIT, LAUNCH, event_problem

JOBS = Path(__file__).parent / "jobs"
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
WATCHED_LOOP = str(JOBS / "watched_loop.py")


def spotsim(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``spotsim ARGS`` in a subprocess, its output captured as text."""
    return subprocess.run([*SPOTSIM, *args], env=env, capture_output=True, text=True, timeout=timeout)


def spotsim_run(tmp_path, *args: str, job: str = "watched_loop.py", env: dict | None = None, bucket: bool = True):
    """Run ``spotsim run … -- python JOB``; return (completed process, summary or None, events)."""
    out = tmp_path / "out"
    where = ["--bucket", (tmp_path / "ckpt").as_uri()] if bucket else []
    cmd = [*SPOTSIM, "run", *args, *where, "--out", str(out), "--", sys.executable, str(JOBS / job)]
    done = subprocess.run(cmd, env=os.environ | (env or {}), capture_output=True, text=True, timeout=240)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    events_path = out / "events.jsonl"
    events = [json.loads(line) for line in events_path.read_text().splitlines()] if events_path.exists() else []
    assert not [(e, p) for e in events if (p := event_problem(e))], "every event of the run log has its schema"
    return done, summary, events


def checkpoint_steps(events: list[dict], attempt: int) -> list[int]:
    """Steps checkpointed by ``attempt`` (events between its launch and exit)."""
    inside, steps = False, []
    for e in events:
        if e["event"] == LAUNCH:
            inside = e["attempt"] == attempt
        elif inside and e["event"] == CHECKPOINT:
            steps.append(e["step"])
    return steps


def test_sigkill_loses_exactly_the_steps_since_the_last_checkpoint(tmp_path):
    env = {"TOTAL_STEPS": "400", "STEP_SLEEP": "0.004"}
    done, summary, events = spotsim_run(
        tmp_path, "--interval-steps", "40", "--schedule", "fixed:0.6,0.9", "--kill", "sigkill", env=env
    )
    assert done.returncode == 0, done.stderr
    assert summary["completed"] and summary["final_step"] == 400
    assert summary["preemptions"] == 2 and summary["attempts"] == 3 and summary["crashes"] == 0
    for preemption in summary["interruptions"]:
        saved = checkpoint_steps(events, preemption["attempt"])
        assert saved, "the kill came after at least one checkpoint"
        # The newest commit; a kill between a commit and its event leaves it unreported, one interval on.
        assert preemption["resumed_step"] in (saved[-1], saved[-1] + 40), "resumed from the last commit"
        assert preemption["lost_steps"] == preemption["last_step"] - preemption["resumed_step"] >= 0
        assert preemption["lost_steps"] <= 2 * 40, "about the steps since the last checkpoint, not more"
    assert summary["lost_steps"] == sum(p["lost_steps"] for p in summary["interruptions"])
    assert summary["identity_holds"] and summary["steps_computed"] == 400 + summary["lost_steps"]
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 10_000


def test_sigterm_with_a_long_grace_loses_nothing(tmp_path):
    env = {"TOTAL_STEPS": "300", "STEP_SLEEP": "0.004"}
    done, summary, _ = spotsim_run(
        tmp_path,
        "--interval-steps",
        "100",
        "--schedule",
        "fixed:0.5,0.5",
        "--kill",
        "sigterm",
        "--grace",
        "30",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert summary["completed"] and summary["preemptions"] == 2
    assert summary["lost_steps"] == 0 and summary["identity_holds"]
    for preemption in summary["interruptions"]:
        assert preemption["signals"] == ["SIGTERM"], "the job left inside the grace period; no SIGKILL needed"
        assert preemption["emergency_before_kill"] and preemption["resumed_step"] == preemption["last_step"]
        assert preemption["exit"] == "inside_grace"
    assert "exited inside the grace" in done.stdout and "NOT before the kill" not in done.stdout


def test_a_grace_period_too_short_for_the_save_is_reported(tmp_path):
    """The torchrun question: the emergency save does not fit a tiny window, so SIGKILL lands."""
    env = {"TOTAL_STEPS": "300", "STEP_SLEEP": "0.005", "SAVE_DELAY": "1"}  # its emergency save takes ≥ 1 s
    done, summary, _ = spotsim_run(
        tmp_path, "--interval-steps", "1000", "--schedule", "fixed:1", "--grace", "0.05", env=env
    )
    assert done.returncode == 0, done.stderr
    [preemption] = summary["interruptions"]
    assert preemption["signals"] == ["SIGTERM", "SIGKILL"] and preemption["emergency_before_kill"] is False
    assert preemption["exit"] == "killed"


def test_crash_loop_stops_at_max_crashes(tmp_path):
    done, summary, events = spotsim_run(
        tmp_path, "--interval-steps", "10", "--max-crashes", "2", env={"CRASH_AT": "5", "STEP_SLEEP": "0.001"}
    )
    assert done.returncode == 1
    assert "simulated bug at step 5" in done.stdout
    assert summary["completed"] is False and summary["crashes"] == 2 and summary["attempts"] == 2, "gives up after N"
    assert [e["exit_code"] for e in events if e["event"] == EXIT] == [1, 1]


def test_foreign_job_that_writes_events_by_hand_is_measured(tmp_path):
    env = {"TOTAL_STEPS": "200", "CHECKPOINT_EVERY": "25", "STEP_SLEEP": "0.005"}
    done, summary, _ = spotsim_run(
        tmp_path, "--interval", "60", "--schedule", "fixed:0.4,0.3", "--kill", "sigkill", job="foreign_job.py", env=env
    )
    assert done.returncode == 0, done.stderr
    assert summary["completed"] and summary["final_step"] == 200 and summary["preemptions"] == 2
    for preemption in summary["interruptions"]:
        assert preemption["resumed_step"] % 25 == 0
        assert preemption["lost_steps"] == preemption["last_step"] - preemption["resumed_step"] < 25
    assert summary["identity_holds"]


def test_trace_replay_preempts_at_the_recorded_gaps(tmp_path):
    trace = tmp_path / "trace.json"  # up 20 s, down 10 s, up 10 s, down 30 s, then up to the end
    trace.write_text(json.dumps({"metadata": {"gap_seconds": 10}, "data": [1, 1, 0, 1, 0, 0, 0] + [1] * 1000}))
    env = {"TOTAL_STEPS": "300", "STEP_SLEEP": "0.004"}
    done, summary, events = spotsim_run(
        tmp_path, "--interval-steps", "20", "--schedule", f"trace:{trace}", "--time-scale", "40", env=env
    )
    assert done.returncode == 0, done.stderr
    assert summary["completed"] and summary["preemptions"] == 2
    launches = [e["preempt_at_s"] for e in events if e["event"] == LAUNCH]
    assert launches == [20.0, 10.0, None]
    assert summary["capacity_wait_s"] == 40.0, "the trace's gaps are capacity waits, not billed"
    assert summary["billed_hours"] < summary["sim_hours"]


def test_embedded_emulator_is_the_default_bucket(tmp_path):
    env = {"TOTAL_STEPS": "120", "STEP_SLEEP": "0.004"}
    done, summary, _ = spotsim_run(tmp_path, "--interval-steps", "30", "--schedule", "fixed:0.3", env=env, bucket=False)
    assert done.returncode == 0, done.stderr
    assert summary["checkpoint_uri"].startswith("gs://") and summary["completed"] and summary["preemptions"] == 1


def test_ctrl_c_ends_the_run_and_still_writes_a_summary(tmp_path):
    out = tmp_path / "out"
    where = ["--bucket", (tmp_path / "ckpt").as_uri(), "--out", str(out)]
    cmd = [*SPOTSIM, "run", "--interval-steps", "20", *where, "--", sys.executable, WATCHED_LOOP]
    proc = subprocess.Popen(
        cmd, env=os.environ | {"STEP_SLEEP": "0.01"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    events = out / "events.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (events.exists() and f'"{CHECKPOINT}"' in events.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and not summary["completed"] and summary["final_step"] > 0
    assert b"Traceback" not in stderr


BAD_INPUT = {
    "zero interval": ["--interval", "0"],
    "negative interval": ["--interval", "-5"],
    "no interval": [],
    "NaN rate": ["--interval", "60", "--preempt-rate", "nan"],
    "negative rate": ["--interval", "60", "--preempt-rate", "-1"],
    "unknown workload": ["--interval", "60", "--workload", "resnet-9000"],
    "unreadable trace": ["--interval", "60", "--schedule", "trace:/nonexistent/trace.json"],
    "unknown schedule": ["--interval", "60", "--schedule", "gamma:2"],
    "unknown machine": ["--interval", "60", "--machine", "gcp-tpu-v9"],
    "bad kill mode": ["--interval", "60", "--kill", "mixed:2"],
    "bad time scale": ["--interval", "60", "--time-scale", "0"],
    "unreachable bucket": ["--interval", "60", "--bucket", "gs://nowhere/run"],
    "unknown option taken for the command": ["--interval", "60", "--cloud", "gcp"],
    "unknown provider": ["--interval", "60", "--provider", "gcp"],
    "rebalance lead on gcp": ["--interval", "60", "--rebalance-lead", "1m"],
    "bad export kind": ["--interval", "60", "--export-plan", "ibm", "plan"],
    "bad storage faults": ["--interval", "60", "--storage-faults", "503=2"],
    "storage faults on a user bucket": ["--interval", "60", "--storage-faults", "flaky", "--bucket", "file:///tmp/x"],
    "negative seed": ["--interval", "60", "--seed", "-1"],
    "zero max crashes": ["--interval", "60", "--max-crashes", "0"],
    "bad local disk": ["--interval", "60", "--local-disk", "maybe"],
    "zero attempt timeout": ["--interval", "60", "--attempt-timeout", "0"],
    "seed as a float": ["--interval", "60", "--seed", "1.5"],
    "kill inside a save outside verify": ["--interval", "60", "--schedule", "steps:10:save"],
    "zero work": ["--interval", "60", "--work", "0", "--steps", "100"],
    "negative work": ["--interval", "60", "--work=-2h", "--steps", "100"],
    "NaN work": ["--interval", "60", "--work", "nan", "--steps", "100"],
    "zero startup": ["--interval", "60", "--startup", "0"],
    "NaN startup": ["--interval", "60", "--startup", "nan"],
    "work and time scale": ["--interval", "60", "--work", "24h", "--steps", "100", "--time-scale", "10"],
    "work shorter than an interval": ["--interval", "1h", "--work", "30m", "--steps", "100"],
    "work without the command's steps": ["--interval", "60", "--work", "24h"],
}


@pytest.mark.parametrize("args", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_and_exit_2(tmp_path, args):
    env = os.environ | {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}  # nothing listens on port 9
    if "--workload" not in args:
        args = [*args, "--", sys.executable, WATCHED_LOOP]
    done = subprocess.run(
        [*SPOTSIM, "run", *args, "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:"), done.stderr


def test_a_k_bound_that_cannot_be_met_is_one_line_naming_the_way_out(tmp_path):
    """A command of fixed length cannot stand for 24 h at a 1-s interval: the measured save is too slow."""
    env = os.environ | {"TOTAL_STEPS": "2000", "STEP_SLEEP": "0.002"}
    where = ["--bucket", (tmp_path / "b").as_uri(), "--out", str(tmp_path / "out")]
    work = ["--interval", "1", "--work", "24h", "--steps", "2000"]
    done = spotsim("run", *work, *where, "--", sys.executable, WATCHED_LOOP, env=env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "may be at most" in lines[0] and "--interval ≥" in lines[0], done.stderr


def test_malformed_trace_is_refused(tmp_path):
    trace = tmp_path / "bad.json"
    for content in [
        "not json",
        '{"metadata": {}, "data": [1, 0]}',
        '{"metadata": {"gap_seconds": 30}, "data": [0, 0]}',
    ]:
        trace.write_text(content)
        schedule = ["--schedule", f"trace:{trace}"]
        done = spotsim(
            "run", "--interval", "60", *schedule, "--out", str(tmp_path / "o"), "--", sys.executable, "-c", "pass"
        )
        assert done.returncode == 2 and done.stderr.startswith("spotsim: error: trace"), done.stderr


@pytest.mark.slow
def test_tf_cnn_runs_under_the_harness(tmp_path):
    out = tmp_path / "out"
    workload = ["--workload", "tf-cnn", "--steps", "300"]
    schedule = ["--interval-steps", "50", "--schedule", "steps:120", "--kill", "sigterm"]
    done = spotsim("run", *workload, *schedule, "--out", str(out), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] and summary["final_step"] == 300 and summary["preemptions"] == 1
    [preemption] = summary["interruptions"]
    assert preemption["emergency_before_kill"] and summary["lost_steps"] == 0 and summary["identity_holds"]
    assert (out / "output" / "model.weights.h5").stat().st_size > 0


def one_error_line(done: subprocess.CompletedProcess, says: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:") and says in lines[0], done.stderr


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["/nonexistent/cmd"], "command not found or not executable: /nonexistent/cmd"),
        ([WATCHED_LOOP], "not executable"),  # a script without its execute bit
        (["no-such-program-anywhere"], "command not found"),
    ],
)
def test_a_command_that_cannot_run_is_one_line(tmp_path, command, says):
    done = spotsim("run", "--interval", "60", "--out", str(tmp_path / "o"), "--", *command)
    one_error_line(done, says)
    assert not (tmp_path / "o" / "summary.json").exists()


def test_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "o").write_text("keep me")
    done = spotsim("run", "--interval", "60", "--out", str(tmp_path / "o"), "--", sys.executable, WATCHED_LOOP)
    one_error_line(done, "cannot write the output directory")
    assert (tmp_path / "o").read_text() == "keep me", "nothing already saved is lost"


def test_out_on_a_read_only_filesystem_is_one_line(tmp_path, unwritable_root):
    done = spotsim("run", "--interval", "60", "--out", str(unwritable_root / "o"), "--", sys.executable, WATCHED_LOOP)
    one_error_line(done, "cannot write the output directory")


def test_a_read_only_bucket_is_caught_before_the_first_attempt(tmp_path, unwritable_root):
    where = ["--bucket", unwritable_root.as_uri(), "--out", str(tmp_path / "o")]
    done = spotsim("run", "--interval", "60", *where, "--", sys.executable, WATCHED_LOOP)
    one_error_line(done, "cannot write to the bucket")
    assert not (tmp_path / "o" / "attempts").exists(), "no attempt was launched"


def test_a_schedule_that_leaves_no_room_stops_with_one_line(tmp_path):
    """λ = 10⁶/h preempts every attempt within milliseconds: stop after a streak of attempts without a step."""
    done, summary, _ = spotsim_run(tmp_path, "--interval", "60", "--preempt-rate", "1e6", "--kill", "sigkill")
    one_error_line(done, "attempts in a row were preempted before computing a step")
    assert summary is not None and summary["attempts"] == 10 and not summary["completed"]


def test_exit_0_without_done_is_reported_as_such(tmp_path):
    out = tmp_path / "out"
    done = spotsim(
        "run", "--interval", "60", "--max-crashes", "1", "--out", str(out), "--", sys.executable, "-c", "pass"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "exited with status 0 without reporting `done`" in " ".join(done.stdout.split())


UNTRUSTED_JOB = """
import json, os, sys, time
with open(os.environ["SPOTSIM_EVENTS"], "a") as f:
    f.write(json.dumps({"t": time.time(), "event": "start", "attempt": 0, "resumed_step": None}) + "\\n")
    f.write("not json at all\\n")
    f.write(json.dumps({"event": "step", "step": 3}) + "\\n")                       # no "t"
    f.write(json.dumps({"t": time.time(), "event": "checkpoint", "step": "garbage"}) + "\\n")
    f.write(json.dumps({"t": time.time(), "event": "step", "step": 5}) + "\\n")
    f.write(json.dumps({"t": time.time(), "event": "step", "step": 6}))             # no newline, then dies
sys.exit(1)
"""


def test_job_output_is_untrusted_and_never_swallows_the_harness_events(tmp_path):
    out = tmp_path / "out"
    args = ["--interval", "60", "--max-crashes", "1", "--out", str(out)]
    done = spotsim("run", *args, "--", sys.executable, "-c", UNTRUSTED_JOB)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]  # every line parses
    assert [e["event"] for e in events if e["event"] in (LAUNCH, EXIT)] == [LAUNCH, EXIT], "exit not lost"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crashes"] == 1 and summary["checkpoints"] == 0, "a garbage checkpoint is not counted"
    assert summary["final_step"] == 6, "a whole last line without its newline is still read"
    malformed = [a for a in summary["anomalies"] if "malformed event" in a]
    assert len(malformed) == 3, summary["anomalies"]
    assert (out / "timeline.png").stat().st_size > 10_000


def test_a_rerun_into_the_same_out_keeps_nothing_of_the_earlier_run(tmp_path):
    """An earlier run's model under output/ must never pass for this run's (verify --artifact compares it)."""
    out = tmp_path / "out"
    (out / "output").mkdir(parents=True)
    (out / "output" / "model.npz").write_bytes(b"from an earlier run")
    (out / "summary.json").write_text("{}")
    done = spotsim(
        "run", "--interval", "60", "--max-crashes", "1", "--out", str(out), "--", sys.executable, "-c", "pass"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert not (out / "output" / "model.npz").exists()
    assert json.loads((out / "summary.json").read_text())["attempts"] == 1
