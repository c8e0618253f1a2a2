"""The phase-aware clock on hand-written event streams: compute × K, every fixed cost × 1."""

from __future__ import annotations

import math

import pytest

from spotsim.clock import Clock, RunClock, check_interval_bound, choose_scale
from spotsim.errors import InvalidOption
from spotsim.events import CHECKPOINT, CHECKPOINT_START, DONE, EXIT, LAUNCH, RESTART_DELAY, SIGNAL, START, STEP


def fold(clock: Clock, *events: tuple) -> RunClock:
    folded = RunClock(clock)
    for t, name, *fields in events:
        folded.apply({"t": t, "event": name, **(fields[0] if fields else {})})
    return folded


def test_only_compute_is_multiplied_by_k():
    run = fold(
        Clock(k=100),
        (0.0, LAUNCH),
        (2.0, START),
        (3.0, STEP, {"step": 10}),
        (4.0, CHECKPOINT, {"step": 20, "blocking_s": 0.5}),
        (6.0, DONE, {"step": 40}),
        (6.5, EXIT),
    )
    phases = run.phases()
    assert phases["startup"].sim_s == pytest.approx(2.0)  # spawn, imports, restore: real seconds
    assert phases["checkpoint"].sim_s == pytest.approx(0.5)
    assert phases["compute"].real_s == pytest.approx(3.5) and phases["compute"].sim_s == pytest.approx(350)
    assert phases["after_done"].sim_s == pytest.approx(0.5)
    assert run.sim_s() == pytest.approx(2 + 350 + 0.5 + 0.5)


def test_a_preempted_attempt_stops_computing_at_the_notice_and_waits_are_simulated():
    run = fold(
        Clock(k=10),
        (0.0, LAUNCH),
        (1.0, START),
        (3.0, SIGNAL, {"signal": "SIGTERM"}),
        (3.2, EXIT),
        (3.2, RESTART_DELAY, {"delay_s": 120, "capacity_wait_s": 30}),
        (3.3, LAUNCH),
        (4.3, START),
        (5.3, DONE, {"step": 1}),
        (5.3, EXIT),
    )
    phases = run.phases()
    assert phases["compute"].sim_s == pytest.approx(20 + 10)
    assert phases["notice"].sim_s == pytest.approx(0.2)  # the emergency save and exit count as they took
    assert phases["restart_delay"].sim_s == 120 and phases["capacity_wait"].sim_s == 30
    assert run.attempts[1].uptime(4.8) == pytest.approx(1.0 + 5.0)


def test_uptime_accrues_at_one_while_starting_and_at_k_while_computing():
    run = fold(Clock(k=50), (0.0, LAUNCH), (1.0, START))
    attempt = run.current
    assert attempt.uptime(0.5) == pytest.approx(0.5) and attempt.rate(0.5) == 1
    assert attempt.uptime(1.1) == pytest.approx(1.0 + 5.0) and attempt.rate(1.1) == 50
    assert attempt.real_until(11.0, 1.1) == pytest.approx(0.1)


def test_a_synchronous_save_in_progress_counts_at_one_so_no_deadline_falls_inside_it():
    """An emergency save starts at 2.0 s: while it holds the loop the uptime grows 1 s per second, not K,
    and once its checkpoint event arrives the interval is the checkpoint's blocking time."""
    run = fold(Clock(k=100), (0.0, LAUNCH), (1.0, START), (2.0, CHECKPOINT_START, {"step": 5}))
    attempt = run.current
    assert attempt.uptime(2.5) == pytest.approx(1.0 + 100.0 + 0.5) and attempt.rate(2.5) == 1
    assert attempt.real_until(1.0 + 100.0 + 1.0, 2.5) == pytest.approx(0.5)
    attempt.apply({"t": 3.0, "event": CHECKPOINT, "step": 5, "kind": "emergency", "blocking_s": 1.0})
    assert attempt.uptime(3.5) == pytest.approx(1.0 + 100.0 + 1.0 + 50.0) and attempt.rate(3.5) == 100


def test_a_declared_startup_replaces_the_measured_one():
    run = fold(Clock(k=10, startup_s=90.0), (0.0, LAUNCH), (2.0, START), (3.0, DONE, {"step": 5}), (3.0, EXIT))
    assert run.phases()["startup"].real_s == pytest.approx(2.0)
    assert run.phases()["startup"].sim_s == pytest.approx(90.0)
    assert run.current.uptime(1.0) == pytest.approx(1.0)  # not started yet: capped by the declaration, not past it


def test_a_job_without_start_events_computes_from_its_first_step():
    run = fold(Clock(k=10), (0.0, LAUNCH), (1.0, STEP, {"step": 1}), (2.0, EXIT))
    assert run.phases()["startup"].sim_s == pytest.approx(1.0) and run.phases()["compute"].sim_s == pytest.approx(10)


def test_to_sim_is_monotone_across_attempts_and_waits():
    run = fold(
        Clock(k=5),
        (0.0, LAUNCH),
        (1.0, START),
        (2.0, SIGNAL, {"signal": "SIGKILL"}),
        (2.0, EXIT),
        (2.0, RESTART_DELAY, {"delay_s": 60}),
        (3.0, LAUNCH),
        (4.0, START),
        (5.0, DONE, {"step": 1}),
        (5.0, EXIT),
    )
    times = [i / 10 for i in range(0, 60)]
    mapped = [run.to_sim(t) for t in times]
    assert mapped == sorted(mapped)
    assert mapped[-1] == pytest.approx(run.sim_s())


def test_k_is_work_over_real_compute_when_the_bound_allows_it():
    scale = choose_scale(86_400, step_real_s=0.002, steps=15_000, save_real_s=0.001, interval_s=300, can_add_steps=True)
    assert scale.k == pytest.approx(86_400 / 30) and scale.steps == 15_000


def test_a_bound_k_runs_more_steps_for_a_built_in_workload():
    scale = choose_scale(86_400, step_real_s=0.002, steps=15_000, save_real_s=0.02, interval_s=300, can_add_steps=True)
    assert scale.k <= 300 / (10 * 0.02) and scale.steps > 15_000
    assert scale.steps * 0.002 * scale.k == pytest.approx(86_400)
    assert "bounded" in scale.note


def test_a_bound_that_cannot_be_met_names_the_largest_k_and_the_shortest_interval():
    with pytest.raises(InvalidOption, match=r"at most 1,500 .*--interval ≥ 576s"):
        choose_scale(86_400, step_real_s=0.002, steps=15_000, save_real_s=0.02, interval_s=300, can_add_steps=False)


def test_an_explicit_k_that_crowds_the_saves_is_said_in_one_line():
    assert check_interval_bound(300, 60, 0.01) is None
    line = check_interval_bound(300, 6000, 0.01)
    assert line is not None and "K ≤ 3,000" in line and "\n" not in line


@pytest.mark.parametrize("k", [0, -1, math.nan, math.inf])
def test_k_must_be_positive_and_finite(k):
    with pytest.raises(InvalidOption):
        Clock(k=k)
