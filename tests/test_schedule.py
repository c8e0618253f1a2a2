"""Preemption schedules, kill modes, trace replay and prices: the parts of `spotsim run` that need no process."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spotsim.cost import load_prices, project
from spotsim.durations import parse_duration
from spotsim.errors import InvalidOption, InvalidSchedule, InvalidTrace, UnknownMachine
from spotsim.preemption import (
    SCHEDULES,
    TRACES_DIR,
    KillMode,
    Lifetime,
    Sigkill,
    Sigterm,
    Steps,
    parse_schedule,
    shipped_traces,
)


@pytest.mark.parametrize("kind", ["poisson", "weibull:0.7", "weibull:2.5"])
def test_random_uptimes_have_mean_one_over_rate(kind):
    schedule, rng = parse_schedule(kind, 4.0), np.random.default_rng(7)  # 4 per hour: mean uptime 900 s
    uptimes = np.array([schedule.lifetime(i, rng).uptime_s for i in range(40_000)])
    assert abs(uptimes.mean() - 900) < 4 * uptimes.std() / math.sqrt(len(uptimes))
    assert schedule.mean_uptime_s == 900
    seeded = [parse_schedule(kind, 4.0).lifetime(0, np.random.default_rng(7)) for _ in range(2)]
    assert seeded[0] == seeded[1]  # the schedule holds no generator: the caller's seed decides


@pytest.mark.parametrize("kind", ["poisson", "weibull:0.7", "weibull:2.5"])
def test_harness_and_simulator_draw_the_same_uptimes(kind):
    """Attempt after attempt (the harness) and all trajectories at once (the simulator): one distribution."""
    schedule, n = parse_schedule(kind, 4.0), 20_000
    rng = np.random.default_rng(1)
    harness = np.array([schedule.lifetime(i, rng).uptime_s for i in range(n)])
    simulator, waits = schedule.draw(np.random.default_rng(2), np.zeros(n, dtype=np.int64))
    stderr = math.sqrt(harness.var(ddof=1) / n + simulator.var(ddof=1) / n)
    assert abs(harness.mean() - simulator.mean()) < 4 * stderr and not waits.any()
    stats = pytest.importorskip("scipy.stats", reason="the two-sample KS test needs scipy")
    assert stats.ks_2samp(harness, simulator).pvalue > 1e-4


EXAMPLES = {  # kind: (--schedule text, its describe() at 4/h); every registered kind needs one
    "poisson": ("poisson", "poisson at 4/h"),
    "weibull": ("weibull:0.7", "weibull:0.7 at 4/h"),
    "fixed": ("fixed:90,2m,1h", "fixed:90,120,3600"),
    "steps": ("steps:120,480:save", "steps:120,480:save"),
    "trace": ("trace:{trace}", "trace:{trace}"),
}


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_every_registered_kind_round_trips_through_describe(kind, tmp_path):
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"metadata": {"gap_seconds": 30}, "data": [1, 1, 0, 1]}))
    text, described = (part.format(trace=trace) for part in EXAMPLES[kind])
    schedule = parse_schedule(text, 4.0)
    assert type(schedule) is SCHEDULES[kind] and schedule.kind == kind and schedule.describe() == described
    again = parse_schedule(described.removesuffix(" at 4/h"), 4.0)
    assert type(again) is type(schedule) and again.describe() == described
    assert any(schedule.in_save) == (kind == "steps")


@pytest.mark.parametrize("text", ["fixed:90", "steps:10"])
def test_the_simulator_refuses_schedules_placed_by_hand(text):
    schedule = parse_schedule(text, 1.0)
    assert not schedule.simulable
    for draw in (lambda: schedule.draw(np.random.default_rng(0), np.zeros(3)), schedule.survival):
        with pytest.raises(InvalidOption, match="draws poisson, weibull or trace preemptions, not"):
            draw()


def test_weibull_shape_changes_the_spread_not_the_mean():
    def spread(kind: str) -> float:
        schedule, rng = parse_schedule(kind, 1), np.random.default_rng(1)
        return float(np.std([schedule.lifetime(i, rng).uptime_s for i in range(20_000)]))

    # Exponential uptimes have σ = mean (3600 s); shape 0.5 spreads them far more, shape 3 far less.
    assert spread("weibull:0.5") > 1.5 * 3600 > 3600 > 2 * spread("weibull:3")


def test_zero_rate_never_preempts_and_fixed_runs_out():
    rng = np.random.default_rng(0)
    for kind in ("poisson", "weibull:2"):
        never = parse_schedule(kind, 0)
        assert never.lifetime(5, rng).uptime_s is None and never.mean_uptime_s == math.inf
        assert np.all(never.draw(rng, np.zeros(3, dtype=np.int64))[0] == np.inf)
    fixed = parse_schedule("fixed:90,2m,1h", 0)
    assert [fixed.lifetime(i, rng).uptime_s for i in range(4)] == [90, 120, 3600, None]


def test_step_kill_points_fill_their_in_save_flags():
    rng = np.random.default_rng(0)
    schedule = Steps((120, 480))
    assert schedule.in_save == (False, False) and schedule.describe() == "steps:120,480"
    assert parse_schedule("steps:120,480:save", 0).lifetime(1, rng) == Lifetime(None, at_step=480, in_save=True)
    assert schedule.lifetime(2, rng) == Lifetime(None)


def test_trace_lifetimes_follow_runs_of_availability(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 30}, "data": [0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1]}))
    schedule, rng = parse_schedule(f"trace:{path}", 0), np.random.default_rng(0)
    lifetimes = [schedule.lifetime(i, rng) for i in range(4)]
    assert [(x.uptime_s, x.capacity_wait_s) for x in lifetimes] == [(90, 30), (30, 60), (None, 0), (None, 0)]
    uptimes, waits = schedule.draw(rng, np.array([0, 1, 2, 3]))  # per trajectory: the VMs it has had
    assert uptimes.tolist() == [90, 30, math.inf, math.inf] and waits.tolist() == [30, 60, 0, 0]
    assert schedule.mean_uptime_s == 60 and schedule.survival()[2] == 4  # 3 VMs, then the trace's end
    inverted = parse_schedule(f"trace:{path}", 0, trace_invert=True)
    assert inverted.lifetime(0, rng).uptime_s == 60  # the leading zeros are now the VM's uptime


def test_shipped_traces_load_by_name():
    traces = shipped_traces()
    assert len(traces) == 19 and (TRACES_DIR / "README.md").is_file()
    for name in traces:
        schedule = parse_schedule(f"trace:{name}", 0)
        lifetimes = schedule.trace.lifetimes()
        assert lifetimes and all(u is None or u > 0 for u, _ in lifetimes)
        assert schedule.describe() == f"trace:{name}"


def test_a_shipped_trace_is_found_by_any_unique_tail_of_its_name(tmp_path):
    name = "preemption/1-node/aws-04-22-2023/us-east-1c_v100_1"
    for tail in (name, f"{name}.json", "aws-04-22-2023/us-east-1c_v100_1", "us-east-1c_v100_1"):
        assert parse_schedule(f"trace:{tail}", 0).describe() == f"trace:{name}"
    with pytest.raises(InvalidTrace, match="fits several shipped traces"):
        parse_schedule("trace:us-west-2b_v100_1", 0)  # recorded in both the preemption and availability sets
    assert parse_schedule("trace:aws-04-22-2023/us-west-2b_v100_1", 0).trace.gap_s == 32
    with pytest.raises(InvalidTrace, match="cannot read trace"):
        parse_schedule("trace:us-east-1z_v100_1", 0)
    copy = tmp_path / "us-east-1c_v100_1.json"  # a file that exists wins over a shipped name
    copy.write_text(json.dumps({"metadata": {"gap_seconds": 5}, "data": [1, 0, 1]}))
    assert parse_schedule(f"trace:{copy}", 0).describe() == f"trace:{copy}"


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
    with pytest.raises(InvalidOption):
        parse_duration("ten", "x")
    assert str(KillMode.parse("mixed:0.25")) == "mixed:0.25" and KillMode.parse("sigkill").sigkill_fraction == 1
    rng = np.random.default_rng(0)
    share = np.mean([KillMode.parse("mixed:0.25").draw_sigkill(rng) for _ in range(4000)])
    assert 0.2 < share < 0.3
    assert KillMode.parse("mixed:0") == Sigterm() and KillMode.parse("mixed:1") == Sigkill()
    assert str(KillMode.parse("mixed")) == "mixed:0.5"
    for bad in ("sigquit", "sigterm:1", "mixed:2", "mixed:x"):
        with pytest.raises(InvalidOption):
            KillMode.parse(bad)


@pytest.mark.parametrize("text", ["sigterm", "sigkill", "mixed:0.25", "mixed"])
def test_kill_modes_round_trip_and_compare_by_fraction(text):
    mode = KillMode.parse(text)
    assert type(mode).name == text.partition(":")[0]
    assert KillMode.parse(str(mode)) == mode == KillMode.from_fraction(mode.sigkill_fraction)
    assert hash(KillMode.parse(str(mode))) == hash(mode)


@pytest.mark.parametrize("text", ["sigterm", "sigkill", "mixed:0.25"])
def test_the_simulators_notices_are_uniform_draws_whatever_the_mode(text):
    """`noticed` draws n numbers even when the answer is certain, so one seed gives every mode the same uptimes."""
    mode, rng, reference = KillMode.parse(text), np.random.default_rng(3), np.random.default_rng(3)
    noticed = mode.noticed(rng, 10_000)
    assert np.array_equal(noticed, reference.random(10_000) >= mode.sigkill_fraction)
    assert rng.random() == reference.random()
    assert abs(noticed.mean() - (1 - mode.sigkill_fraction)) < 0.02


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
