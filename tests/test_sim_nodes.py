"""The simulator's multi-node jobs (``Job(nodes=N)``, ``spotsim simulate --nodes N``): against the closed
form for Poisson preemptions, against a VM-by-VM event simulation written here, and on the command line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from cli_runner import assert_one_error_line, spotsim

from spotsim.cost import Machine
from spotsim.errors import InvalidOption
from spotsim.preemption import parse_schedule
from spotsim.preemption.schedules import weibull_scale
from spotsim.sim import Calibration, Job, daly_interval, interval_rows, simulate, sweep_curves
from spotsim.sim.montecarlo import check_budget
from spotsim.sim.nodes import Nodes

MIN, HOUR = 60.0, 3600.0
MACHINE = Machine("test", on_demand_usd_per_hour=3.0, spot_usd_per_hour=1.0, sources=())


def assert_same_mean(a: np.ndarray, b: np.ndarray, within: float = 4.0) -> None:
    """Two samples' means agree within ``within`` standard errors of their difference."""
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) <= within * se, f"{a.mean():.6g} vs {b.mean():.6g} (standard error {se:.3g})"


def test_a_poisson_group_is_one_vm_preempted_n_times_as_often():
    """N VMs each lost at rate λ: the group is interrupted at rate Nλ, so it loses work and takes time as one
    VM at Nλ does, and is billed N times its hours. Without a restart delay, so that no survivor can be lost
    while the group waits for a replacement (one VM has no survivors)."""
    job = {"work_s": 12 * HOUR, "checkpoint_s": MIN, "restart_s": 2 * MIN, "startup_s": 3 * MIN}
    group = simulate(Job(**job, nodes=4), [20 * MIN, HOUR], parse_schedule("poisson", 0.5), trials=4000, seed=1)
    one = simulate(Job(**job), [20 * MIN, HOUR], parse_schedule("poisson", 2.0), trials=4000, seed=2)
    for i in range(2):
        assert_same_mean(group.wall_s[i], one.wall_s[i])
        assert_same_mean(group.lost_s[i], one.lost_s[i])
        assert_same_mean(group.preemptions[i], one.preemptions[i])
        assert_same_mean(group.billed_s[i] / 4, one.billed_s[i])
    assert group.preemptions.mean() > 3  # the test has something to compare


@pytest.mark.parametrize("schedule", ["poisson", "weibull:0.5"])
@pytest.mark.parametrize("elastic", [False, True], ids=["whole", "elastic"])
def test_every_vm_is_billed_all_the_time_it_is_booting_or_up(schedule, elastic):
    """Without capacity waits a node always has a VM up or booting, billed: the bill is N × the wall time,
    survivors waiting for a replacement and replacements booting included."""
    job = Job(work_s=6 * HOUR, checkpoint_s=MIN, restart_s=2 * MIN, restart_delay_s=5 * MIN, nodes=3, elastic=elastic)
    outcome = simulate(job, [15 * MIN, HOUR], parse_schedule(schedule, 1.0), trials=500, seed=4)
    assert outcome.preemptions.mean() > 2
    assert np.allclose(outcome.billed_s, 3 * outcome.wall_s, rtol=1e-9)


def test_a_traced_group_is_lost_together_and_its_capacity_wait_is_not_billed(tmp_path):
    """Every node replays the trace from its own first VM, as the live harness does: they are lost together,
    wait together (unbilled) and boot together; the group takes one VM's time, billed N times."""
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": ([1] * 6 + [0] * 3) * 3 + [1] * 200}))
    job = {"work_s": 4 * HOUR, "checkpoint_s": 10, "restart_s": 60, "restart_delay_s": 120}
    schedule = parse_schedule(f"trace:{trace}", 0)
    one = simulate(Job(**job), [15 * MIN], schedule, trials=3)
    group = simulate(Job(**job, nodes=3), [15 * MIN], schedule, trials=3)
    assert np.all(group.preemptions == 3) and np.array_equal(group.wall_s, one.wall_s)
    assert np.allclose(group.billed_s, 3 * one.billed_s) and np.allclose(one.wall_s - one.billed_s, 3 * 30 * MIN)


def test_an_elastic_group_without_a_restart_delay_never_waits_for_a_replacement():
    """With D = 0 a replacement is up the moment its VM is lost: elastic or not, the group is whole again."""
    job = {"work_s": 6 * HOUR, "checkpoint_s": MIN, "restart_s": 2 * MIN, "nodes": 3}
    schedule = parse_schedule("weibull:0.7", 1.0)
    whole = simulate(Job(**job), [20 * MIN], schedule, trials=300, seed=5)
    elastic = simulate(Job(**job, elastic=True), [20 * MIN], schedule, trials=300, seed=5)
    for name in ("wall_s", "lost_s", "checkpoints", "preemptions"):
        assert np.array_equal(getattr(whole, name), getattr(elastic, name))
    assert np.allclose(whole.billed_s, elastic.billed_s) and not elastic.rejoins.any()


def test_one_node_is_the_same_elastic_or_not():
    """A single VM has no survivors to go on with: ``elastic`` changes not one float."""
    job = {"work_s": 10 * HOUR, "checkpoint_s": 30, "persist_s": 60, "restart_s": 120, "restart_delay_s": 300}
    schedule = parse_schedule("weibull:0.6", 1.5)
    whole = simulate(Job(**job, grace_s=30, sigkill_fraction=0.5), [5 * MIN, HOUR], schedule, trials=500, seed=6)
    elastic = simulate(
        Job(**job, grace_s=30, sigkill_fraction=0.5, elastic=True), [5 * MIN, HOUR], schedule, trials=500, seed=6
    )
    for name in ("wall_s", "billed_s", "lost_s", "checkpoints", "preemptions", "rejoins"):
        assert np.array_equal(getattr(whole, name), getattr(elastic, name))


# -- A VM-by-VM event simulation: the model stated once more, slowly and plainly -----------------------


@dataclass
class Trajectory:
    wall: float = 0.0
    billed: float = 0.0
    lost: float = 0.0
    preemptions: int = 0
    rejoins: int = 0
    boot: list[float] = field(default_factory=list)  # per node: its VM's boot, up and loss, absolute
    up: list[float] = field(default_factory=list)
    death: list[float] = field(default_factory=list)


def reference(job: Job, tau: float, uptime, *, redraw_survivors: bool = False) -> Trajectory:
    """One trajectory, event by event: ``uptime()`` draws a VM's uptime. Sigkill only, no persist, no trace."""
    n, d, now, left, first = job.nodes, job.restart_delay_s, 0.0, job.work_s, True
    run = Trajectory(boot=[0.0] * n, up=[0.0] * n, death=[uptime() for _ in range(n)])

    def replace(j: int, at: float) -> None:
        run.billed += at - run.boot[j]  # the lost VM: from its boot to its loss
        run.boot[j], run.up[j] = at, at + d
        run.death[j] = run.up[j] + uptime()

    while True:
        while True:  # wait for the VMs the group needs, replacing any lost meanwhile
            up = [j for j in range(n) if run.up[j] <= now]
            if (up and job.elastic) or len(up) == n:
                break
            coming = min(run.up[j] for j in range(n) if run.up[j] > now)
            j = min(up, key=lambda j: run.death[j], default=None)
            if j is not None and run.death[j] < coming:
                now = run.death[j]
                replace(j, now)
            else:
                now = coming
        loss = min(run.death[j] for j in up)
        join = min((run.up[j] for j in range(n) if run.up[j] > now), default=math.inf)
        end, share = min(loss, join), len(up) / n
        clock = now + (job.startup_s if first else job.restart_s)
        while clock <= end:  # segments of τ (the last one shorter), each with its checkpoint
            wall = min(tau, left / share)
            if clock + wall + job.checkpoint_s > end:
                run.lost += min(end - clock, tau) * share  # as the simulator, which counts up to τ
                break
            clock += wall + job.checkpoint_s
            left -= wall * share
            if left <= 1e-9:
                run.wall = clock
                run.billed += sum(max(clock - b, 0.0) for b in run.boot)  # every VM it still has
                return run
        now, first = end, False
        if join < loss:
            run.rejoins += 1
            continue
        run.preemptions += 1
        for j in up:
            if run.death[j] <= now:
                replace(j, now)
            elif redraw_survivors:  # the mistake this test guards against: a survivor made young again
                run.death[j] = now + uptime()


def weibull_uptime(shape: float, rate_per_hour: float, rng: np.random.Generator):
    scale = weibull_scale(HOUR / rate_per_hour, shape)
    return lambda: scale * rng.weibull(shape)


def references(job: Job, tau: float, trials: int, **kwargs) -> dict[str, np.ndarray]:
    uptime = weibull_uptime(0.5, 1.0, np.random.default_rng(11))
    runs = [reference(job, tau, uptime, **kwargs) for _ in range(trials)]
    return {name: np.array([getattr(r, name) for r in runs]) for name in ("wall", "billed", "lost", "preemptions")}


@pytest.mark.parametrize("elastic", [False, True], ids=["whole", "elastic"])
def test_weibull_groups_match_the_event_simulation_and_survivors_keep_their_age(elastic):
    """Weibull uptimes of shape 0.5 (young VMs are preempted most): the simulator agrees with the event
    simulation in every mean. Survivors made young again at each loss would be lost far more often: the
    event simulation with that mistake is many standard errors away, so this test would catch it."""
    job = Job(
        work_s=4 * HOUR, checkpoint_s=MIN, restart_s=3 * MIN, startup_s=2 * MIN, restart_delay_s=10 * MIN,
        nodes=3, elastic=elastic,
    )  # fmt: skip
    tau = 20 * MIN
    outcome = simulate(job, [tau], parse_schedule("weibull:0.5", 1.0), trials=4000, seed=7)
    simulated = {
        "wall": outcome.wall_s[0],
        "billed": outcome.billed_s[0],
        "lost": outcome.lost_s[0],
        "preemptions": outcome.preemptions[0],
    }
    expected = references(job, tau, 800)
    for name, values in simulated.items():
        assert_same_mean(values, expected[name])
    redrawn = references(job, tau, 800, redraw_survivors=True)
    se = math.sqrt(simulated["preemptions"].var() / 4000 + redrawn["preemptions"].var() / 800)
    assert redrawn["preemptions"].mean() - simulated["preemptions"].mean() > 8 * se


# -- Budget, options, the command line -------------------------------------------------------------


@pytest.mark.parametrize("nodes", [0, -2, 1.5, True, "2"])
def test_a_node_count_that_is_not_a_whole_number_from_1_is_refused(nodes):
    with pytest.raises(InvalidOption, match="nodes must be a whole number ≥ 1"):
        Job(work_s=HOUR, checkpoint_s=30, nodes=nodes)


def test_the_budget_counts_every_node():
    schedule, job = parse_schedule("poisson", 0.5), {"work_s": 24 * HOUR, "checkpoint_s": 60, "restart_s": 120}
    check_budget(Job(**job), [HOUR] * 50, schedule, 10_000)
    with pytest.raises(InvalidOption, match=r"of 1,000 nodes .* use fewer trials or nodes"):
        check_budget(Job(**job, nodes=1000), [HOUR] * 50, schedule, 10_000)
    with pytest.raises(InvalidOption, match="group phases .* fewer nodes"):  # 200 nodes: a loss every 36 s
        check_budget(Job(**job, nodes=200), [HOUR], schedule, 10)


def test_a_group_that_cannot_become_whole_is_refused():
    """Twenty VMs that live seconds and take an hour to come up: the group never has all of them at once."""
    job = Job(work_s=HOUR, checkpoint_s=60, restart_delay_s=HOUR, nodes=20)
    schedule, rng = parse_schedule("poisson", 3600.0), np.random.default_rng(0)
    nodes = Nodes.start(job, schedule, rng, 10)
    nodes.lose(nodes.phase()[0], schedule, rng)
    with pytest.raises(InvalidOption, match="is still not whole"):
        nodes.regroup(schedule, rng, max_rounds=50)


def test_costs_are_for_every_node_and_on_demand_for_as_many_vms():
    schedule = parse_schedule("poisson", 0)  # no preemptions: the bill is the uninterrupted hours
    for nodes in (1, 4):
        job = Job(work_s=10 * HOUR, checkpoint_s=60, nodes=nodes)
        [row] = interval_rows(simulate(job, [HOUR], schedule, trials=5), job, [HOUR], MACHINE)
        assert row["billed_hours_mean"] == pytest.approx(nodes * (10 + 10 / 60))
        assert row["on_demand_cost_usd"] == pytest.approx(3.0 * nodes * (10 + 10 / 60))
        assert row["savings_mean"] == pytest.approx(2 / 3)


def test_calibration_and_sweep_curves_take_the_node_count():
    calibration = Calibration(
        step_s=1.0, checkpoint_s=2.0, persist_s=0.0, restart_s=30.0, startup_s=40.0, work_s=3600.0
    )
    assert calibration.job().nodes == 1 and calibration.job(nodes=4).nodes == 4
    runs = [
        {
            "interval_s": 600.0, "preempt_rate": 2.0, "kill": "sigkill", "step_time_s": 1.0, "checkpoints": 6,
            "checkpoint_blocking_s": 12.0, "restart_overhead_s": 30.0, "startup_s": 40.0, "final_step": 3600,
            "machine": "test", "spot_usd_per_hour": 0.5, "on_demand_usd_per_hour": 2.0,
        }
    ]  # fmt: skip
    curves = sweep_curves(runs, grace_s=0, restart_delay_s=0, trials=200, nodes=4)
    assert curves.daly_s == {2.0: daly_interval(2.0, HOUR / (4 * 2.0))}  # 4 VMs at 2/h: the group's M is 7.5 min
    for row in curves.rows:  # on-demand: 4 VMs for the uninterrupted hours
        uninterrupted_h = (3600 + math.ceil(3600 / row["interval_s"]) * 2.0) / HOUR
        assert row["on_demand_cost_usd"] == pytest.approx(4 * 2.0 * uninterrupted_h)


def test_simulate_nodes_on_the_command_line():
    args = ["simulate", "--intervals", "20m,1h", "--work-hours", "6", "--trials", "300", "--restart-delay", "2m"]
    one = json.loads(spotsim(*args, "--json").stdout)
    group = json.loads(spotsim(*args, "--nodes", "4", "--json").stdout)
    elastic = json.loads(spotsim(*args, "--nodes", "4", "--elastic", "--json").stdout)
    for o, g, e in zip(one, group, elastic, strict=True):
        assert g["on_demand_cost_usd"] == pytest.approx(4 * o["on_demand_cost_usd"])
        assert g["preemptions_mean"] > 2 * o["preemptions_mean"] and e["preemptions_mean"] > 2 * o["preemptions_mean"]
        assert g["billed_hours_mean"] > 4 * o["billed_hours_mean"]  # 4 VMs, each longer: the group is lost more
    table = spotsim(*args, "--nodes", "4", "--elastic").stdout
    assert "4 nodes (elastic), cost for all" in " ".join(table.split())


@pytest.mark.parametrize("value", ["0", "-3"])
def test_simulate_refuses_a_bad_node_count_in_one_line(value):
    result = spotsim("simulate", "--intervals", "20m", "--nodes", value)
    assert result.exit_code == 2
    assert_one_error_line(result, f"nodes must be a whole number ≥ 1, got {value}")
