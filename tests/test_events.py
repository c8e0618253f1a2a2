"""The run log's contract: the wire names, the schema of every event kind, and the fold into attempts."""

from __future__ import annotations

import math

import pytest

from spotsim import events
from spotsim.events import (
    CHECKPOINT,
    DONE,
    EXIT,
    HARNESS_EVENTS,
    JOB_EVENTS,
    LAUNCH,
    METADATA_REQUEST,
    NOTICE,
    RESTART_DELAY,
    SCHEMA,
    SIGNAL,
    START,
    STEP,
    AttemptRecord,
    EventLog,
    event_problem,
    fold_attempts,
    fold_nodes,
    job_event_problem,
    read_run_log,
)
from spotsim.harness.runlog import JobEventReader

T = 1_700_000_000.0

# The names on the wire are the contract with jobs written in any language: they never change.
WIRE_NAMES = {
    "START": "start",
    "STEP": "step",
    "CHECKPOINT_START": "checkpoint_start",
    "CHECKPOINT": "checkpoint",
    "CHECKPOINT_FAILED": "checkpoint_failed",
    "DONE": "done",
    "PREEMPTION_NOTICE": "preemption_notice",
    "PREEMPTION_APPROVAL": "preemption_approval",
    "REBALANCE_RECOMMENDATION": "rebalance_recommendation",
    "RUN": "run",
    "LAUNCH": "launch",
    "REBALANCE": "rebalance",
    "NOTICE": "notice",
    "SIGNAL": "signal",
    "METADATA_REQUEST": "metadata_request",
    "STORAGE_FAULT": "storage_fault",
    "STORAGE_OUTAGE": "storage_outage",
    "MALFORMED": "malformed",
    "STOP": "stop",
    "EXIT": "exit",
    "RESTART_DELAY": "restart_delay",
    "INTERRUPTED": "interrupted",
    "NODE_LAUNCH": "node_launch",
    "NODE_EXIT": "node_exit",
}

# One event of each kind, with the fields its writer puts in it.
JOB_WRITTEN = [
    {"event": "start", "attempt": 1, "resumed_step": 40},
    {"event": "start", "attempt": 0, "resumed_step": None},
    {"event": "step", "step": 41},
    {"event": "checkpoint_start", "step": 50, "kind": "emergency"},
    {
        "event": "checkpoint",
        "step": 50,
        "kind": "periodic",
        "blocking_s": 0.01,
        "persist_s": 0.2,
        "bytes": 4096,
        "retries": 0,
    },
    {"event": "checkpoint_failed", "step": 60, "kind": "periodic", "error": "503", "retries": 3, "skipped": True},
    {"event": "done", "step": 100},
    {"event": "preemption_notice", "reason": "SIGTERM"},
    {"event": "preemption_notice", "reason": "AWS metadata: spot instance-action", "cloud": "aws", "deadline": T + 120},
    {"event": "preemption_approval", "cloud": "azure", "event_id": "A1B2", "accepted": True},
    {"event": "rebalance_recommendation", "cloud": "aws", "notice_time": None},
]
HARNESS_WRITTEN = [
    {"event": "run", "run_id": "0123456789ab", "command": ["python", "train.py"], "time_scale": 60.0},
    {
        "event": "launch",
        "attempt": 0,
        "preempt_at_s": 3600.0,
        "preempt_at_step": None,
        "kill_point": None,
        "capacity_wait_s": 0.0,
        "hard_stop": False,
    },
    {
        "event": "launch",
        "attempt": 1,
        "preempt_at_s": None,
        "preempt_at_step": 120,
        "kill_point": "120:save",
        "capacity_wait_s": 30.0,
        "hard_stop": False,
    },
    {"event": "rebalance", "attempt": 0, "notice_t": T, "step": 10},
    {
        "event": "notice",
        "attempt": 0,
        "provider": "aws-spot",
        "cloud": "aws",
        "notice_s": 120.0,
        "deadline_t": T + 2,
        "step": None,
    },
    {"event": "signal", "attempt": 0, "signal": "SIGTERM", "step": 12, "in_save": True, "write": "step-12/state"},
    {"event": "signal", "attempt": 0, "signal": "SIGTERM", "step": 12, "in_save": False, "approved": True},
    {
        "event": "metadata_request",
        "attempt": 0,
        "cloud": "gce",
        "method": "GET",
        "path": "/x",
        "status": 200,
        "notice": False,
    },
    {"event": "storage_fault", "attempt": 0, "fault": "503", "method": "POST", "path": "/upload/storage/v1/b/b/o"},
    {
        "event": "storage_outage",
        "attempt": 0,
        "cause": "emulator process gone",
        "down_since": T,
        "down_s": 0.4,
        "restarted": True,
    },
    {
        "event": "storage_outage",
        "attempt": 0,
        "cause": "emulator exited with code 1",
        "down_since": T,
        "restarted": False,
        "error": "no port",
    },
    {"event": "malformed", "attempt": 0, "problem": "not JSON: 'garbage'"},
    {"event": "stop", "attempt": 0, "reason": "attempt timeout", "step": None},
    {"event": "stop", "attempt": 0, "reason": "still running 5 s after done"},
    {"event": "exit", "attempt": 0, "exit_code": -9, "cause": "preempted"},
    {"event": "restart_delay", "attempt": 0, "delay_s": 60.0, "capacity_wait_s": 0.0},
    {"event": "interrupted", "attempt": 2},
    {
        "event": "node_launch",
        "node": 1,
        "vm": 2,
        "attempt": 3,
        "preempt_at_s": 900.0,
        "capacity_wait_s": 0.0,
        "hard_stop": False,
    },
    {"event": "node_exit", "node": 1, "vm": 2, "attempt": 3, "exit_code": -9, "cause": "preempted"},
]


def test_the_names_on_the_wire_never_change():
    assert {name: getattr(events, name) for name in WIRE_NAMES} == WIRE_NAMES
    assert set(SCHEMA) == set(WIRE_NAMES.values())
    assert not set(JOB_EVENTS) & set(HARNESS_EVENTS), "each kind has one writer"


def test_every_kind_has_an_example_here():
    assert {e["event"] for e in JOB_WRITTEN} == set(JOB_EVENTS)
    assert {e["event"] for e in HARNESS_WRITTEN} == set(HARNESS_EVENTS)


@pytest.mark.parametrize("event", JOB_WRITTEN + HARNESS_WRITTEN, ids=lambda e: e["event"])
def test_each_kind_as_its_writer_writes_it_validates(event):
    assert event_problem({"t": T, **event}) is None


@pytest.mark.parametrize("event", JOB_WRITTEN, ids=lambda e: e["event"])
def test_a_job_may_write_its_own_kinds(event):
    assert job_event_problem({"t": T, **event}) is None


@pytest.mark.parametrize("event", HARNESS_WRITTEN, ids=lambda e: e["event"])
def test_a_job_may_not_write_the_harness_kinds(event):
    assert "harness event" in job_event_problem({"t": T, **event})


MALFORMED_JOB_EVENTS = {
    "not an object": ([{"event": "step"}], "not a JSON object"),
    "no name": ({"t": T, "step": 3}, 'no "event" name'),
    "no t": ({"event": "step", "step": 3}, 'step event without a numeric "t"'),
    "t not finite": ({"t": math.inf, "event": "step", "step": 3}, 'without a numeric "t"'),
    "step missing": ({"t": T, "event": "done"}, 'done event whose "step" is not a whole number ≥ 0: None'),
    "step text": ({"t": T, "event": "checkpoint", "step": "garbage"}, "not a whole number ≥ 0: 'garbage'"),
    "step negative": ({"t": T, "event": "step", "step": -1}, "not a whole number ≥ 0: -1"),
    "step a bool": ({"t": T, "event": "step", "step": True}, "not a whole number ≥ 0: True"),
    "step a float": ({"t": T, "event": "step", "step": 2.5}, "not a whole number ≥ 0: 2.5"),
    "resumed step negative": ({"t": T, "event": "start", "resumed_step": -3}, "a whole number ≥ 0 or null: -3"),
    "negative blocking": ({"t": T, "event": "checkpoint", "step": 5, "blocking_s": -1.0}, '"blocking_s" is not a'),
    "persist as text": ({"t": T, "event": "checkpoint", "step": 5, "persist_s": "1s"}, "a duration ≥ 0: '1s'"),
    "a harness kind": ({"t": T, "event": "exit", "exit_code": 0, "cause": "done"}, "exit is a harness event"),
}


@pytest.mark.parametrize(("event", "says"), MALFORMED_JOB_EVENTS.values(), ids=MALFORMED_JOB_EVENTS.keys())
def test_a_malformed_job_event_is_rejected_with_its_reason(event, says):
    assert says in job_event_problem(event)


def test_a_jobs_own_kinds_and_extra_fields_pass_unread():
    assert job_event_problem({"t": T, "event": "eval", "loss": "n/a"}) is None
    assert job_event_problem({"t": T, "event": "step", "step": 3, "loss": 0.5, "epoch": "one"}) is None


def test_a_jobs_informative_fields_may_be_spelled_its_own_way():
    """Only the fields the harness computes with are checked; a foreign job's attempt or size may differ."""
    assert job_event_problem({"t": T, "event": "start", "attempt": "0", "resumed_step": None}) is None
    assert job_event_problem({"t": T, "event": "checkpoint", "step": 5, "bytes": 1.5, "kind": None}) is None
    assert event_problem({"t": T, "event": "checkpoint", "step": 5, "bytes": 1.5}) is not None  # the full schema


def test_nan_in_a_job_event_makes_the_line_malformed_not_the_run_fail(tmp_path):
    events = tmp_path / "attempt.events.jsonl"
    events.write_text('{"t": 1, "event": "step", "step": 3, "loss": NaN}\n{"t": 2, "event": "step", "step": 4}\n')
    valid, problems = JobEventReader(events).read_new()
    assert [e["step"] for e in valid] == [4]
    assert len(problems) == 1 and problems[0].startswith("not JSON")


def ev(t: float, name: str, **fields: object) -> dict:
    return {"t": t, "event": name, **fields}


# Two attempts: the first noticed (it saw the notice, saved an emergency checkpoint, got its SIGTERM), the second
# resumed from that checkpoint and finished. The job's event before the first launch belongs to no attempt.
LOG = [
    ev(0.0, STEP, step=99),
    ev(1.0, LAUNCH, attempt=0, preempt_at_s=600.0, capacity_wait_s=0.0, hard_stop=False),
    ev(2.0, START, attempt=0, resumed_step=None),
    ev(3.0, STEP, step=10),
    ev(4.0, CHECKPOINT, step=20, kind="periodic", blocking_s=0.1, persist_s=0.2),
    ev(5.0, STEP, step=25),
    ev(5.5, NOTICE, attempt=0, provider="aws-spot", cloud="aws", notice_s=120.0, deadline_t=7.0, step=25),
    ev(5.6, METADATA_REQUEST, attempt=0, cloud="aws", method="GET", path="/x", status=404, notice=False),
    ev(5.8, METADATA_REQUEST, attempt=0, cloud="aws", method="GET", path="/x", status=200, notice=True),
    ev(6.0, CHECKPOINT, step=27, kind="emergency", blocking_s=0.3, persist_s=0.3),
    ev(7.0, SIGNAL, attempt=0, signal="SIGTERM", step=27, in_save=False),
    ev(7.2, EXIT, attempt=0, exit_code=0, cause="preempted"),
    ev(7.3, RESTART_DELAY, attempt=0, delay_s=60.0, capacity_wait_s=30.0),
    ev(8.0, LAUNCH, attempt=1, preempt_at_s=None, capacity_wait_s=0.0, hard_stop=False),
    ev(9.0, START, attempt=1, resumed_step=27),
    ev(9.5, STEP, step=27),
    ev(10.0, STEP, step=40),
    ev(11.0, DONE, step=50),
    ev(11.5, EXIT, attempt=1, exit_code=0, cause="done"),
]


def test_the_fold_gives_each_attempt_its_events():
    first, second = fold_attempts(LOG)
    assert (first.attempt, first.launch_t, first.exit_t, first.cause) == (0, 1.0, 7.2, "preempted")
    assert first.preempt_at_sim_s == 600.0
    assert first.started and first.first_step == 0 and first.last_step == 27
    assert first.steps == [(3.0, 10), (5.0, 25)], "the step before the first launch belongs to no attempt"
    assert [(c["step"], c["kind"]) for c in first.checkpoints] == [(20, "periodic"), (27, "emergency")]
    assert first.notice_t == first.preempted_t == 5.5 and not first.without_notice
    assert first.notice_seen_t == 5.8 and first.metadata_requests == 2
    assert first.signals == [(7.0, "SIGTERM")] and first.kill["event"] == NOTICE
    assert (first.delay_sim_s, first.capacity_wait_sim_s) == (60.0, 30.0)
    assert (second.resumed_step, second.first_step, second.done_step, second.last_step) == (27, 27, 50, 50)
    assert second.first_progress_t == 10.0 and second.cause == "done" and second.preempt_at_sim_s is None


def test_a_sigkill_without_notice_is_t0_of_its_preemption():
    [attempt] = fold_attempts([ev(1.0, LAUNCH, attempt=0), ev(2.0, SIGNAL, signal="SIGKILL"), ev(2.1, EXIT)])
    assert attempt.without_notice and attempt.preempted_t == 2.0 and not attempt.started


def test_the_writer_and_the_reader_round_trip(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    for event in LOG:
        log.write(event)
    log.close()
    with open(path, "a") as f:
        f.write("not json\n")  # a torn or foreign line is skipped, not fatal
    assert read_run_log(path) == fold_attempts(LOG)
    assert all(isinstance(a, AttemptRecord) for a in read_run_log(path))


def test_the_node_fold_pairs_each_vms_launch_with_its_exit():
    log = [
        {"t": 1.0, "event": "node_launch", "node": 0, "vm": 0, "preempt_at_s": 5.0, "capacity_wait_s": 0},
        {
            "t": 1.0,
            "event": "node_launch",
            "node": 1,
            "vm": 0,
            "attempt": 0,
            "preempt_at_s": None,
            "capacity_wait_s": 0,
        },
        {"t": 6.0, "event": "node_exit", "node": 0, "vm": 0, "exit_code": -9, "cause": "preempted"},
        {
            "t": 7.0,
            "event": "node_launch",
            "node": 0,
            "vm": 1,
            "attempt": 1,
            "preempt_at_s": None,
            "capacity_wait_s": 2,
        },
        {"t": 9.0, "event": "node_exit", "node": 1, "vm": 0, "exit_code": 0, "cause": "done"},
    ]
    vms = fold_nodes(log)
    assert [(v.node, v.vm, v.launch_t, v.exit_t, v.cause) for v in vms] == [
        (0, 0, 1.0, 6.0, "preempted"),
        (1, 0, 1.0, 9.0, "done"),
        (0, 1, 7.0, None, None),
    ]
    assert vms[0].preempt_at_sim_s == 5.0 and vms[2].capacity_wait_sim_s == 2.0
    assert fold_nodes(JOB_WRITTEN) == [], "a single-node run has no node VMs"
