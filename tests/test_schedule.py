"""Preemption schedules, trace replay and prices: the parts of `spotsim run` that need no process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spotsim.cost import load_prices, project
from spotsim.errors import InvalidOption, InvalidSchedule, InvalidTrace, UnknownMachine
from spotsim.harness import KillMode, parse_duration, parse_schedule

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "spot-traces"


@pytest.mark.parametrize("kind", ["poisson", "weibull:0.7", "weibull:2.5"])
def test_random_uptimes_have_mean_one_over_rate(kind):
    schedule = parse_schedule(kind, 4.0).seed(7)  # 4 per hour: mean uptime 900 s
    uptimes = np.array([schedule.lifetime(i).uptime_s for i in range(40_000)])
    assert abs(uptimes.mean() - 900) < 4 * uptimes.std() / math.sqrt(len(uptimes))
    assert parse_schedule(kind, 4.0).seed(7).lifetime(0) == parse_schedule(kind, 4.0).seed(7).lifetime(0)


def test_weibull_shape_changes_the_spread_not_the_mean():
    def spread(kind: str) -> float:
        schedule = parse_schedule(kind, 1).seed(1)
        return float(np.std([schedule.lifetime(i).uptime_s for i in range(20_000)]))

    # Exponential uptimes have σ = mean (3600 s); shape 0.5 spreads them far more, shape 3 far less.
    assert spread("weibull:0.5") > 1.5 * 3600 > 3600 > 2 * spread("weibull:3")


def test_zero_rate_never_preempts_and_fixed_runs_out():
    assert parse_schedule("poisson", 0).lifetime(5).uptime_s is None
    fixed = parse_schedule("fixed:90,2m,1h", 0)
    assert [fixed.lifetime(i).uptime_s for i in range(4)] == [90, 120, 3600, None]


def test_trace_lifetimes_follow_runs_of_availability(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 30}, "data": [0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1]}))
    schedule = parse_schedule(f"trace:{path}", 0)
    lifetimes = [schedule.lifetime(i) for i in range(4)]
    assert [(x.uptime_s, x.capacity_wait_s) for x in lifetimes] == [(90, 30), (30, 60), (None, 0), (None, 0)]
    inverted = parse_schedule(f"trace:{path}", 0, trace_invert=True)
    assert inverted.lifetime(0).uptime_s == 60  # the leading zeros are now the VM's uptime


@pytest.mark.skipif(not TRACES.exists(), reason="the shared spot-traces data is not beside this checkout")
def test_recorded_traces_load():
    files = sorted(TRACES.rglob("*.json"))
    assert files
    for path in files:
        lifetimes = parse_schedule(f"trace:{path}", 0).trace.lifetimes()
        assert lifetimes and all(u is None or u > 0 for u, _ in lifetimes)


@pytest.mark.parametrize(
    "text", ["gamma", "weibull:0", "weibull:x", "fixed:", "fixed:10,-1", "fixed:nan", "trace:", "poisson:3"]
)
def test_bad_schedules_are_refused(text):
    with pytest.raises(InvalidSchedule):
        parse_schedule(text, 1.0)


@pytest.mark.parametrize("rate", [math.nan, math.inf, -0.1])
def test_bad_rates_are_refused(rate):
    with pytest.raises(InvalidSchedule):
        parse_schedule("poisson", rate)


@pytest.mark.parametrize(
    "content",
    ["[1, 0]", '{"metadata": {"gap_seconds": -1}, "data": [1]}', '{"metadata": {"gap_seconds": 5}, "data": ["1"]}'],
)
def test_malformed_traces_are_refused(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(InvalidTrace):
        parse_schedule(f"trace:{path}", 0)


def test_durations_and_kill_modes():
    assert [parse_duration(t, "x") for t in ["90", "90s", "1.5m", "2h"]] == [90, 90, 90, 7200]
    with pytest.raises(InvalidSchedule):
        parse_duration("ten", "x")
    assert str(KillMode.parse("mixed:0.25")) == "mixed:0.25" and KillMode.parse("sigkill").sigkill_fraction == 1
    rng = np.random.default_rng(0)
    share = np.mean([KillMode.parse("mixed:0.25").draw_sigkill(rng) for _ in range(4000)])
    assert 0.2 < share < 0.3
    with pytest.raises(InvalidOption):
        KillMode.parse("sigquit")


def test_shipped_prices_have_sources_and_add_up():
    table = load_prices()
    for name in [
        "gcp-t4",
        "gcp-v100",
        "gcp-a100-40gb",
        "gcp-a100-80gb",
        "gcp-l4",
        "gcp-h100",
        "gcp-n1-standard-8",
        "aws-p3.2xlarge",
    ]:
        machine = table.machine(name)
        assert 0 < machine.spot_usd_per_hour < machine.on_demand_usd_per_hour and machine.sources[0]
    host_gpu = table.machine("gcp-n1-standard-8+gcp-t4")
    assert host_gpu.on_demand_usd_per_hour == pytest.approx(0.38 + 0.35)
    cost = project(host_gpu, billed_hours=2.0, uninterrupted_hours=1.5)
    assert cost.spot_cost_usd == pytest.approx(2 * host_gpu.spot_usd_per_hour)
    assert cost.savings == pytest.approx(1 - cost.spot_cost_usd / (1.5 * host_gpu.on_demand_usd_per_hour))
    with pytest.raises(UnknownMachine, match="known:"):
        table.machine("gcp-tpu")


def test_user_price_tables_are_checked(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("machine,on_demand_usd_per_hour\nx,1\n")
    with pytest.raises(InvalidOption, match="lacks"):
        load_prices(path)
    header = "machine,provider,description,on_demand_usd_per_hour,spot_usd_per_hour,source,date\n"
    path.write_text(header + "mine,gcp,d,2.0,cheap,me,2026-01-01\n")
    with pytest.raises(InvalidOption, match="not a price"):
        load_prices(path)
    path.write_text(header + "mine,gcp,d,2.0,0.5,me,2026-01-01\n")
    assert load_prices(path).machine("mine").spot_usd_per_hour == 0.5
