"""From a run log to ``summary.json``: a :class:`RunSummary` of the accounting, the cost and the settings.

Units: ``wall_s`` is real seconds; every other duration is in simulated
seconds on the phase-aware clock (:mod:`spotsim.clock`): training compute is
real × K, start-up, checkpoint blocking, the notice and everything after
``done`` count at their real duration. ``clock`` states K and each phase's
real and simulated seconds. ``checkpoint_persist_s`` is the simulated
training that passes while saves persist in the background (real × K): the
window in which a finished checkpoint is not yet durable.

:func:`summarize` composes three parts: the accounting
(:mod:`spotsim.harness.accounting`: lost work, interruptions, overheads and
the identity that checks them), the cost (:func:`price`) and the settings
the run was made with. :meth:`RunSummary.to_dict` is ``summary.json``;
files read back from disk stay plain dicts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

from spotsim.clock import Clock, PhaseTime, RunClock
from spotsim.cost import Machine, project
from spotsim.errors import InvalidOption
from spotsim.events import AttemptRecord, NodeVMRecord, StorageOutageEvent
from spotsim.harness.accounting import Accounting, Interruption, NodeAccounting, account, interruptions_of, per_node
from spotsim.harness.config import RunConfig
from spotsim.sim.calibration import Calibration
from spotsim.sim.projection import project_run
from spotsim.storage.faults import FaultSpec

__all__ = ["ClockSummary", "Interruption", "RunCost", "RunSettings", "RunSummary", "StorageSummary", "summarize"]


@dataclass(frozen=True)
class RunCost:
    """The run's spot bill against the same job on demand without preemptions."""

    billed_hours: float  # simulated VM-hours on spot (every node's), less the lost nodes' waits for capacity
    uninterrupted_hours: float  # one start-up, the steps and the periodic checkpoints
    spot_cost_usd: float
    on_demand_cost_usd: float
    savings: float  # fraction of the on-demand cost saved (negative: spot cost more)
    machine: str
    prices: list[str]  # where the price-table row came from
    spot_usd_per_hour: float
    on_demand_usd_per_hour: float
    nodes: int = 1  # VMs billed side by side (a --nodes group)


@dataclass(frozen=True)
class ClockSummary:
    """K, the work and start-up it was chosen for, and each phase's real and simulated seconds."""

    k: float
    work_s: float | None
    startup_s: float | None
    chosen: str | None  # how K was chosen, when --work chose it
    phases: dict[str, PhaseTime]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunSettings:
    """The options the run was made with."""

    command: list[str]
    schedule: str
    interval_s: float | None
    interval_steps: int | None
    kill: str
    provider: str
    notice_s: float
    grace_s: float
    restart_delay_s: float
    seed: int
    work_s: float | None
    startup_s: float | None
    total_steps: int | None
    max_preemptions: int | None
    max_crashes: int | None
    nodes: int = 1


@dataclass(frozen=True)
class AttemptStorage:
    """One attempt's saves against the bucket, and the faults it met."""

    attempt: int
    saves: int
    retried: int  # saves that needed at least one retry
    retries: int
    failed: int
    skipped: int
    faults: dict[str, int]  # injected faults by kind
    emulator_outages: int


@dataclass(frozen=True)
class StorageSummary:
    """How the bucket behaved: the faults asked and injected, the emulator's outages, the saves' totals."""

    faults: str | None
    injected: dict[str, int]
    emulator_outages: list[StorageOutageEvent]
    saves: int
    retried: int
    retries: int
    failed: int
    skipped: int
    attempts: list[AttemptStorage]


@dataclass(frozen=True)
class RunSummary:
    """What a live run measured. The fields from ``run_id`` on are set by the live run, not by
    :func:`summarize`; ``projection`` is the simulator's (:func:`projection_for`)."""

    accounting: Accounting
    cost: RunCost
    clock: ClockSummary
    provider: dict
    settings: RunSettings
    interruptions: list[Interruption]
    metadata_requests: int  # the job's requests to the metadata server
    run_id: str | None = None
    checkpoint_uri: str | None = None
    storage: StorageSummary | None = None
    interrupted: bool | None = None  # Ctrl-C or SIGTERM stopped the run
    projection: dict | None = None
    nodes: list[NodeAccounting] = field(default_factory=list)  # a --nodes run's per-node figures

    def to_dict(self) -> dict:
        """``summary.json``: the accounting's and the cost's figures at the top level, then the nested records."""
        return {
            **asdict(self.accounting),
            **asdict(self.cost),
            "clock": self.clock.to_dict(),
            "provider": self.provider,
            "settings": asdict(self.settings),
            "interruptions": [x.to_dict() for x in self.interruptions],
            "metadata_requests": self.metadata_requests,
            "run_id": self.run_id,
            "checkpoint_uri": self.checkpoint_uri,
            "storage": asdict(self.storage) if self.storage is not None else None,
            "interrupted": self.interrupted,
            "projection": self.projection,
            **({"nodes": [asdict(n) for n in self.nodes]} if self.nodes else {}),
        }


def run_clock(events: list[dict], clock: Clock) -> RunClock:
    """The run's simulated clock, fed its whole log."""
    folded = RunClock(clock)
    for event in events:
        folded.apply(event)
    return folded


def summarize(
    attempts: list[AttemptRecord],
    clock: RunClock,
    config: RunConfig,
    machine: Machine,
    *,
    wall_s: float,
    nodes: list[NodeVMRecord] | None = None,
) -> RunSummary:
    """The accounting of ``attempts`` (and of a ``--nodes`` run's VMs), their cost on ``machine`` and the
    settings of ``config``."""
    interruptions = interruptions_of(attempts, clock)
    accounting = account(attempts, clock, config, interruptions, wall_s=wall_s)
    node_rows = per_node(nodes or [], interruptions, clock.to_sim, config.restart_delay_s)
    node_hours = sum(n.billed_hours for n in node_rows) if node_rows else None
    return RunSummary(
        nodes=node_rows,
        accounting=accounting,
        cost=price(accounting, config, machine, node_hours=node_hours),
        clock=clock_summary(config, clock.phases()),
        provider=config.provider.to_dict(),
        settings=settings(config),
        interruptions=interruptions,
        metadata_requests=sum(a.metadata_requests for a in attempts),
    )


def price(accounting: Accounting, config: RunConfig, machine: Machine, *, node_hours: float | None = None) -> RunCost:
    """Spot is billed for the simulated wall time less the waits for capacity; on-demand for the same job
    without preemptions. A group (``node_hours``: its nodes' own bills, :func:`per_node`) is billed VM by
    VM: survivors wait for a lost node's replacement on the bill, only the lost node's wait for capacity is
    free."""
    billed_s = max(0.0, accounting.sim_wall_s - accounting.capacity_wait_s)
    if node_hours is not None:
        billed_s = node_hours * 3600
    uninterrupted_s = config.nodes * _uninterrupted_s(config, accounting)
    bill = project(machine, billed_hours=billed_s / 3600, uninterrupted_hours=uninterrupted_s / 3600)
    return RunCost(
        billed_hours=bill.billed_hours,
        uninterrupted_hours=bill.uninterrupted_hours,
        spot_cost_usd=bill.spot_cost_usd,
        on_demand_cost_usd=bill.on_demand_cost_usd,
        savings=bill.savings,
        machine=machine.name,
        prices=list(machine.sources),
        spot_usd_per_hour=machine.spot_usd_per_hour,
        on_demand_usd_per_hour=machine.on_demand_usd_per_hour,
        nodes=config.nodes,
    )


def _uninterrupted_s(config: RunConfig, accounting: Accounting) -> float:
    """The same job without preemptions: one start-up, its steps, and its periodic checkpoints."""
    useful = accounting.final_step * (accounting.step_time_s or 0.0)
    if config.interval_s is not None:
        saves = math.ceil(useful / config.interval_s) if useful > 0 else 0
    else:
        assert config.interval_steps is not None  # RunConfig asks for one interval or the other
        saves = accounting.final_step // config.interval_steps + 1
    return (accounting.startup_s or 0.0) + useful + saves * accounting.blocking_per_checkpoint_s


def clock_summary(config: RunConfig, phases: dict[str, PhaseTime]) -> ClockSummary:
    return ClockSummary(
        k=config.time_scale,
        work_s=config.work_s,
        startup_s=config.startup_s,
        chosen=config.scale.note if config.scale else None,
        phases=phases,
    )


def settings(config: RunConfig) -> RunSettings:
    return RunSettings(
        command=list(config.command),
        schedule=config.schedule.describe(),
        interval_s=config.interval_s,
        interval_steps=config.interval_steps,
        kill=str(config.kill),
        provider=config.provider.name,
        notice_s=config.provider.notice_s,
        grace_s=config.grace_s,
        restart_delay_s=config.restart_delay_s,
        seed=config.seed,
        work_s=config.work_s,
        startup_s=config.startup_s,
        total_steps=config.total_steps,
        max_preemptions=config.max_preemptions,
        max_crashes=config.max_crashes,
        nodes=config.nodes,
    )


def projection_for(summary: RunSummary, config: RunConfig) -> dict:
    """The simulator calibrated from this run, over its work at its settings (:mod:`spotsim.sim.projection`)."""
    schedule = config.schedule
    if not schedule.simulable:
        return {"skipped": f"the simulator draws poisson, weibull or trace preemptions, not {schedule.describe()}"}
    run = summary.accounting
    if not run.step_time_s:
        return {"skipped": "the run measured no step time (fewer than 2 steps reported)"}
    calibration = Calibration.from_summaries([summary.to_dict()])
    # the work the live run stood for: its own steps at its measured step time (the probe's may differ)
    work_s = run.final_step * calibration.step_s if run.completed else config.work_s
    provider = config.provider
    # The job has the metadata notice too, if it reads the metadata server: the simulator's notice is both.
    watches = summary.metadata_requests > 0
    job = calibration.job(
        work_s=work_s,
        restart_delay_s=config.restart_delay_s,
        grace_s=config.grace_s + (provider.notice_s if watches else 0.0),
        sigkill_fraction=config.kill.sigkill_fraction,
        max_uptime_s=provider.max_uptime_s,
        nodes=config.nodes,
    )
    interval = config.interval_s or (config.interval_steps or 0) * calibration.step_s  # RunConfig asks for one
    cost = summary.cost
    live = {
        "wall_s": run.sim_wall_s,
        "lost_s": run.lost_time_s,
        "billed_hours": cost.billed_hours,
        "spot_cost_usd": cost.spot_cost_usd,
        "savings": cost.savings,
        "preemptions": run.preemptions,
    }
    try:
        projected = project_run(
            job,
            schedule,
            interval,
            spot_usd_per_hour=cost.spot_usd_per_hour,
            on_demand_usd_per_hour=cost.on_demand_usd_per_hour,
            live=live,
            seed=config.seed,
        )
    except InvalidOption as e:  # a job the simulator cannot finish in its bounds
        return {"skipped": str(e)}
    return projected | {"notes": _projection_notes(run, config, watches=watches)}


def _projection_notes(run: Accounting, config: RunConfig, *, watches: bool) -> list[str]:
    """Where the live run and the projection measure different things."""
    notes = []
    provider = config.provider
    if provider.notice_s and not watches:
        notes.append(f"the job never read the metadata server: its {provider.notice_s:g} s notice is not counted")
    if config.max_preemptions is not None:
        notes.append(f"the live run stopped preempting after {config.max_preemptions}; the projection does not")
    if not run.completed:
        notes.append("the live run did not finish: its figures are partial")
    return notes


def storage_summary(attempts: list[AttemptRecord], faults: FaultSpec | None) -> StorageSummary:
    """How the bucket behaved, attempt by attempt: the faults injected, the emulator's outages, and the job's
    saves that were retried, skipped or failed (from its ``checkpoint`` and ``checkpoint_failed`` events)."""
    per_attempt = [_attempt_storage(a) for a in attempts]
    return StorageSummary(
        faults=faults.describe() if faults is not None else None,
        injected=dict(sum((Counter(a.storage_faults) for a in attempts), Counter())),
        emulator_outages=[o for a in attempts for o in a.storage_outages],
        saves=sum(p.saves for p in per_attempt),
        retried=sum(p.retried for p in per_attempt),
        retries=sum(p.retries for p in per_attempt),
        failed=sum(p.failed for p in per_attempt),
        skipped=sum(p.skipped for p in per_attempt),
        attempts=per_attempt,
    )


def _attempt_storage(a: AttemptRecord) -> AttemptStorage:
    saves = [*a.checkpoints, *a.failed_saves]
    return AttemptStorage(
        attempt=a.attempt,
        saves=len(a.checkpoints),
        retried=sum(int(s.get("retries") or 0) > 0 for s in saves),
        retries=sum(int(s.get("retries") or 0) for s in saves),
        failed=sum(not f.get("skipped") for f in a.failed_saves),
        skipped=sum(bool(f.get("skipped")) for f in a.failed_saves),
        faults=dict(Counter(a.storage_faults)),
        emulator_outages=len(a.storage_outages),
    )
