"""The closed forms against Daly's published examples, the Monte Carlo against the exact renewal
model, and `spotsim optimal` / `simulate` on the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from spotsim.cost import Machine, project
from spotsim.errors import InvalidOption
from spotsim.preemption import Sigkill, Sigterm, parse_schedule
from spotsim.sim import (
    Job,
    daly_interval,
    expected_wall_s,
    interval_rows,
    optimum,
    simulate,
    sweep_curves,
    young_interval,
)
from spotsim.sim.curves import GRID_POINTS

SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
MIN, HOUR = 60.0, 3600.0


@pytest.mark.parametrize(("mtbf_h", "published_min"), [(24, 117), (6, 57)])
def test_daly_worked_examples(mtbf_h, published_min):
    """Daly (2006): C = 5 min, R = 10 min; the optimum is near 117 min for M = 24 h and 57 min for M = 6 h."""
    best = optimum(5 * MIN, mtbf_h * HOUR, 10 * MIN)
    assert round(best.daly_s / MIN) == published_min
    assert best.exact_s == pytest.approx(best.daly_s, rel=1e-3)  # the higher-order estimate is that good
    assert best.exact_waste <= best.young_waste
    assert young_interval(5 * MIN, mtbf_h * HOUR) == pytest.approx(math.sqrt(2 * 5 * MIN * mtbf_h * HOUR))


def test_daly_caps_the_interval_at_m_for_expensive_checkpoints():
    assert daly_interval(3 * HOUR, 1 * HOUR) == 1 * HOUR


@pytest.mark.parametrize("tau_min", [10, 30, 60, 120])
def test_monte_carlo_matches_the_exact_expectation(tau_min):
    """Exponential preemptions: the mean wall time must agree with T = M·e^{R/M}·(e^{(τ+C)/M} − 1)·W/τ."""
    c, r, m, tau = 5 * MIN, 10 * MIN, 6 * HOUR, tau_min * MIN
    work = 24 * tau * math.ceil(HOUR / tau)  # a whole number of segments, as the formula assumes
    job = Job(work_s=work, checkpoint_s=c, restart_s=r)
    outcome = simulate(job, [tau], parse_schedule("poisson", HOUR / m), trials=20_000, seed=tau_min)
    wall = outcome.wall_s[0]
    exact = expected_wall_s(tau, c, m, r, work)
    assert abs(wall.mean() - exact) < 4 * wall.std(ddof=1) / math.sqrt(wall.size)


def test_no_preemptions_means_work_plus_checkpoints():
    job = Job(work_s=10 * HOUR, checkpoint_s=30, restart_s=60)
    outcome = simulate(job, [HOUR, 3 * HOUR], parse_schedule("poisson", 0), trials=10)
    assert np.all(outcome.wall_s[0] == 10 * HOUR + 10 * 30) and np.all(outcome.wall_s[1] == 10 * HOUR + 4 * 30)
    assert np.all(outcome.lost_s == 0) and np.all(outcome.preemptions == 0)


def test_a_grace_period_that_fits_the_save_loses_nothing():
    job = {"work_s": 20 * HOUR, "checkpoint_s": 30, "restart_s": 60}
    rate = parse_schedule("poisson", 1.0)
    sigkill = simulate(Job(**job), [HOUR], rate, trials=2000, seed=1)
    sigterm = simulate(Job(**job, grace_s=30, sigkill_fraction=0.0), [HOUR], rate, trials=2000, seed=1)
    assert sigkill.lost_s.mean() > 10 * MIN and sigterm.lost_s.mean() == 0
    assert sigterm.wall_s.mean() < sigkill.wall_s.mean()
    assert Job(**job).kill == Sigkill() and Job(**job, sigkill_fraction=0.0).kill == Sigterm()


def test_recorded_losses_are_each_preemptions_and_change_nothing_else():
    """Every preemption's lost seconds, per interval: they add up to each interval's lost work, one per
    preemption, and asking for them leaves the draws (so every other result) as they were."""
    job = Job(work_s=4 * HOUR, checkpoint_s=30, persist_s=60, restart_s=120, startup_s=90)
    intervals, schedule = [10 * MIN, HOUR], parse_schedule("poisson", 2.0)
    plain = simulate(job, intervals, schedule, trials=500, seed=3)
    recorded = simulate(job, intervals, schedule, trials=500, seed=3, record_losses=True)
    assert plain.losses_s is None and len(recorded.losses_s) == len(intervals)
    for name in ("wall_s", "billed_s", "lost_s", "checkpoints", "preemptions"):
        assert np.array_equal(getattr(plain, name), getattr(recorded, name))
    for i, tau in enumerate(intervals):
        losses = recorded.losses_s[i]
        assert losses.size == recorded.preemptions[i].sum() > 0
        assert losses.sum() == pytest.approx(recorded.lost_s[i].sum())
        assert losses.min() >= 0 and losses.max() <= 2 * tau  # a segment, and the one before while it persisted


def test_trace_replay_gaps_are_waited_but_not_billed(tmp_path):
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [1] * 6 + [0] * 3 + [1] * 1000}))
    job = Job(work_s=2 * HOUR, checkpoint_s=10, restart_s=0)
    outcome = simulate(job, [15 * MIN], parse_schedule(f"trace:{trace}", 0), trials=3)
    assert np.all(outcome.preemptions == 1)
    assert np.allclose(outcome.wall_s - outcome.billed_s, 30 * MIN)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"work_s": 0, "checkpoint_s": 1},
        {"work_s": 1, "checkpoint_s": 0},
        {"work_s": 1, "checkpoint_s": 1, "restart_s": -1},
        {"work_s": 1, "checkpoint_s": 1, "sigkill_fraction": 1.5},
    ],
)
def test_bad_jobs_are_refused(kwargs):
    with pytest.raises(InvalidOption):
        Job(**kwargs)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SPOTSIM, *args], check=False, capture_output=True, text=True, timeout=120)


def test_optimal_json():
    done = run("optimal", "--checkpoint-cost", "5m", "--mtbf", "24h", "--restart", "10m", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert round(result["daly_s"] / MIN) == 117 and result["young_s"] == pytest.approx(120 * MIN)


def test_simulate_json_rows():
    done = run("simulate", "--intervals", "10m,1h", "--work-hours", "5", "--trials", "500", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["interval_s"] for r in rows] == [600, 3600]
    for row in rows:
        assert {"interval_s", "wall_s_mean", "lost_s_mean", "spot_cost_usd_mean"} <= row.keys()
        assert row["wall_s_mean"] > 5 * HOUR and row["spot_cost_usd_mean"] > 0


def test_simulate_calibrates_from_a_live_run(tmp_path):
    (tmp_path / "summary.json").write_text(
        json.dumps({"step_time_s": 2.0, "checkpoints": 4, "checkpoint_blocking_s": 8.0, "restart_overhead_s": 90.0})
    )
    done = run("simulate", "--intervals", "30m", "--trials", "200", "--calibrate", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["lost_steps_mean"] == pytest.approx(json.loads(done.stdout)[0]["lost_s_mean"] / 2)


BAD = {
    "zero checkpoint cost": ["optimal", "--checkpoint-cost", "0", "--mtbf", "1h"],
    "negative mtbf": ["optimal", "--checkpoint-cost", "1m", "--mtbf", "-1h"],
    "both mtbf and rate": ["optimal", "--checkpoint-cost", "1m", "--mtbf", "1h", "--preempt-rate", "1"],
    "zero rate": ["optimal", "--checkpoint-cost", "1m", "--preempt-rate", "0"],
    "empty intervals": ["simulate", "--intervals", ","],
    "negative interval": ["simulate", "--intervals", "-5m"],
    "zero checkpoint cost (simulate)": ["simulate", "--intervals", "5m", "--checkpoint-cost", "0"],
    "malformed trace": ["simulate", "--intervals", "5m", "--schedule", "trace:/nonexistent.json"],
    "unknown schedule": ["simulate", "--intervals", "5m", "--schedule", "fixed:10"],
}


@pytest.mark.parametrize("args", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_exit_2(args):
    done = run(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spotsim: error:") and "Traceback" not in done.stderr


def test_a_projection_places_the_live_run_and_finds_the_best_interval():
    from spotsim.sim.projection import project_run

    job = Job(work_s=24 * 3600, checkpoint_s=60, restart_s=120, step_s=1.0, sigkill_fraction=1.0)
    schedule = parse_schedule("poisson", 0.5)
    live = {"wall_s": 30 * 3600, "lost_s": 3600.0, "spot_cost_usd": 1e9}
    projected = project_run(
        job, schedule, 300, spot_usd_per_hour=1.0, on_demand_usd_per_hour=3.0, live=live, trials=2000
    )
    wall = projected["metrics"]["wall_s"]
    assert wall["p10"] <= wall["p50"] <= wall["p90"] and wall["mean"] > job.work_s
    assert 0 < wall["live_percentile"] < 1 and projected["metrics"]["spot_cost_usd"]["live_percentile"] == 1.0
    best = projected["best"]
    exact = optimum(60, 7200, 120).exact_s
    assert best["daly_s"] == pytest.approx(daly_interval(60, 7200))
    assert exact / 1.5 <= best["optimum_s"] <= exact * 1.5  # the grid's cheapest is the renewal model's optimum
    assert best["optimum_cost_usd"] <= best["asked_cost_usd"]


def test_interval_rows_price_the_trajectories_through_the_cost_projection():
    job = Job(work_s=10 * HOUR, checkpoint_s=60, restart_s=120)
    outcome = simulate(job, [HOUR], parse_schedule("poisson", 0.5), trials=500, seed=3)
    machine = Machine("test", on_demand_usd_per_hour=3.0, spot_usd_per_hour=1.0, sources=())
    [row] = interval_rows(outcome, job, [HOUR], machine)
    priced = project(
        machine, billed_hours=outcome.billed_s[0] / 3600, uninterrupted_hours=(job.work_s + 10 * 60) / 3600
    )
    assert row["spot_cost_usd_mean"] == priced.spot_cost_usd.mean()
    assert row["on_demand_cost_usd"] == priced.on_demand_cost_usd == 3.0 * (10 * HOUR + 600) / HOUR
    assert row["savings_mean"] == pytest.approx(priced.savings.mean())


def test_sweep_curves_span_the_live_intervals_and_dalys_for_each_rate_and_kill():
    runs = [
        {
            "interval_s": tau,
            "preempt_rate": rate,
            "kill": kill,
            "step_time_s": 1.0,
            "checkpoints": 10,
            "checkpoint_blocking_s": 20.0,
            "restart_overhead_s": 30.0,
            "startup_s": 40.0,
            "final_step": 3600,
            "machine": "test",
            "spot_usd_per_hour": 0.5,
            "on_demand_usd_per_hour": 2.0,
        }
        for rate in (0.0, 12.0)
        for kill in ("sigkill", "sigterm")
        for tau in (60.0, 600.0)
    ]
    curves = sweep_curves(runs, grace_s=30, restart_delay_s=0, trials=100)
    assert curves.calibration.checkpoint_s == 2.0 and curves.calibration.work_s == 3600.0
    assert len(curves.rows) == 4 * GRID_POINTS
    assert {(row["preempt_rate"], row["kill"]) for row in curves.rows} == {(r["preempt_rate"], r["kill"]) for r in runs}
    daly = daly_interval(2.0, HOUR / 12)
    assert curves.daly_s == {12.0: daly} and curves.young_s == {12.0: young_interval(2.0, HOUR / 12)}
    for rate, shortest in ((0.0, 60.0), (12.0, daly)):  # from half the shortest to twice the longest (600 s)
        grid = [row["interval_s"] for row in curves.rows if row["preempt_rate"] == rate]
        assert grid[0] == pytest.approx(shortest / 2) and grid[-1] == pytest.approx(1200.0)
    for row in curves.rows:  # priced at the sweep's own prices
        assert row["spot_cost_usd_mean"] == pytest.approx(row["billed_hours_mean"] * 0.5)
