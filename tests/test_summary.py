"""Run-log accounting on hand-written logs: lost work, the identity, restart overhead, cost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from spotsim.cost import load_prices
from spotsim.events import fold_attempts
from spotsim.harness import RunConfig, parse_schedule
from spotsim.harness.summary import RunSummary, run_clock, summarize
from spotsim.preemption.providers import parse_provider

CONFIG = RunConfig(command=("job",), out=Path("/tmp/unused"), schedule=parse_schedule("poisson", 1.0), interval_s=60)
MACHINE = load_prices().machine("gcp-t4")


def summarize_log(events: list[dict], config: RunConfig = CONFIG, wall_s: float = 20.0) -> RunSummary:
    return summarize(fold_attempts(events), run_clock(events, config.clock), config, MACHINE, wall_s=wall_s)


def log(*attempts: list[tuple]) -> list[dict]:
    """Events from compact tuples: (t, event, fields…) per attempt, with launch/exit around each."""
    events = []
    for i, (launch_t, exit_t, cause, body) in enumerate(attempts):
        events.append({"t": launch_t, "event": "launch", "attempt": i, "preempt_at_s": None})
        events += [{"t": t, "event": name, **fields} for t, name, fields in body]
        events.append(
            {"t": exit_t, "event": "exit", "attempt": i, "exit_code": 0 if cause == "done" else -9, "cause": cause}
        )
    return events


def test_lost_work_identity_and_restart_overhead():
    events = log(
        (
            0.0,
            10.0,
            "preempted",
            [
                (1, "start", {"attempt": 0, "resumed_step": None}),
                (2, "step", {"step": 10}),
                (5, "checkpoint", {"step": 40, "kind": "periodic", "blocking_s": 0.5}),
                (9, "step", {"step": 55}),
                (9.5, "signal", {"signal": "SIGKILL"}),
            ],
        ),
        (
            11.0,
            20.0,
            "done",
            [
                (12, "start", {"attempt": 1, "resumed_step": 40}),
                (12, "step", {"step": 40}),
                (13.5, "step", {"step": 41}),
                (19, "step", {"step": 100}),
                (19.5, "done", {"step": 100}),
            ],
        ),
    )
    summary = summarize_log(events)
    run, cost = summary.accounting, summary.cost
    assert run.completed and run.final_step == 100 and run.preemptions == 1
    assert run.lost_steps == 15 and run.steps_computed == 55 + 60 and run.identity_holds
    # launch at 11, first step past 40 at 13.5, less that step's own compute
    assert run.restart_overhead_s == pytest.approx(2.5 - run.step_time_s)
    assert run.step_time_s == pytest.approx((7 - 0.5 + 5.5) / (45 + 59))  # blocking is not compute
    assert run.checkpoints == 1 and run.checkpoint_overhead == pytest.approx(0.5 / 19)
    assert cost.spot_cost_usd < cost.on_demand_cost_usd * 20 / cost.uninterrupted_hours / 3600


def test_an_attempt_killed_before_it_started_loses_nothing():
    events = log(
        (
            0.0,
            5.0,
            "preempted",
            [
                (1, "start", {"attempt": 0, "resumed_step": None}),
                (2, "checkpoint", {"step": 2, "kind": "periodic"}),
                (4, "step", {"step": 3}),
            ],
        ),
        (6.0, 6.05, "preempted", []),  # SIGTERM before Python got going: no events at all
        (
            7.0,
            9.0,
            "done",
            [(8, "start", {"attempt": 2, "resumed_step": 2}), (8.5, "step", {"step": 5}), (9, "done", {"step": 5})],
        ),
    )
    summary = summarize_log(events, wall_s=9.0)
    assert [x.lost_steps for x in summary.interruptions] == [1, 0]
    run = summary.accounting
    assert run.lost_steps == 1 and run.identity_holds and run.anomalies == []


def test_a_job_resuming_ahead_of_what_it_reported_is_an_anomaly():
    events = log(
        (0.0, 5.0, "preempted", [(1, "start", {"attempt": 0, "resumed_step": None}), (4, "step", {"step": 3})]),
        (6.0, 9.0, "done", [(7, "start", {"attempt": 1, "resumed_step": 8}), (9, "done", {"step": 10})]),
    )
    run = summarize_log(events, wall_s=9.0).accounting
    assert run.lost_steps == -5
    assert run.anomalies == ["attempt 0 reported step 3 but the next attempt resumed from 8"]


def test_fixed_costs_count_at_their_real_duration_whatever_k():
    """A 2-s start-up at K = 100 is 2 simulated seconds, not 200; only compute is multiplied."""
    config = replace(CONFIG, time_scale=100.0)
    events = log(
        (
            0.0,
            4.1,
            "done",
            [
                (2.0, "start", {"attempt": 0, "resumed_step": None}),
                (2.0, "step", {"step": 0}),
                (2.01, "step", {"step": 1}),
                (4.0, "step", {"step": 201}),
                (4.0, "checkpoint", {"step": 201, "kind": "final", "blocking_s": 0.05}),
                (4.05, "done", {"step": 201}),
            ],
        ),
    )
    summary = summarize_log(events, config, wall_s=4.1)
    phases = summary.clock.phases
    assert phases["startup"].sim_s == pytest.approx(2.0) and phases["checkpoint"].sim_s == pytest.approx(0.05)
    assert phases["compute"].sim_s == pytest.approx((2.05 - 0.05) * 100)
    run = summary.accounting
    assert run.startup_s == pytest.approx(2.0, abs=0.05)
    assert run.sim_wall_s == pytest.approx(2.0 + 200 + 0.05 + 0.05)
    assert run.checkpoint_blocking_s == pytest.approx(0.05)  # real seconds, never × K


def test_a_notice_shorter_than_the_jobs_poll_is_a_warning_and_an_unseen_notice_is_not_counted_seen():
    """aws-spot at K = 600: the 120 s notice lasts 0.2 s real, and the job polls every 0.5 s: it never saw the
    notice (no answer carried it), so the record says so and the summary names the K that would let it."""
    config = replace(CONFIG, time_scale=600.0, provider=parse_provider("aws-spot"))
    polls = [
        (
            1 + 0.5 * i,
            "metadata_request",
            {"method": "GET", "path": "/latest/meta-data/spot/instance-action", "status": 404, "notice": False},
        )
        for i in range(8)
    ]
    events = log(
        (
            0.0,
            5.0,
            "preempted",
            [
                (1, "start", {"attempt": 0, "resumed_step": None}),
                (2, "step", {"step": 10}),
                *polls,
                (4.6, "notice", {"notice_s": 120.0}),
                (4.8, "signal", {"signal": "SIGTERM"}),
            ],
        ),
        (
            6.0,
            9.0,
            "done",
            [(7, "start", {"attempt": 1, "resumed_step": 0}), (8, "step", {"step": 10}), (9, "done", {"step": 10})],
        ),
    )
    summary = summarize_log(events, config)
    [preemption] = summary.interruptions
    met = preemption.preemption
    assert met.noticed and met.notice.notice_seen_after_s is None and met.exit == "inside_grace"
    [warning] = [w for w in summary.accounting.warnings if "polls the metadata server" in w]
    assert "every 0.5 s real" in warning and "lasts 0.2 s real" in warning and "lower K to 240" in warning
    # seen: the same job polling faster is not warned about
    fast = [(4.7, "metadata_request", {"method": "GET", "path": "/x", "status": 200, "notice": True})]
    events[1:1] = [{"t": t, "event": name, **fields} for t, name, fields in fast]
    events.sort(key=lambda e: e["t"])
    assert not [w for w in summarize_log(events, config).accounting.warnings if "polls the metadata server" in w]
