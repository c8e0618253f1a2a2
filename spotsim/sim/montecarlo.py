"""A vectorised Monte Carlo of a checkpointing job on spot VMs, all intervals × trials at once.

The job needs ``work_s`` seconds of compute, done in segments of τ (the
interval) each followed by a blocking checkpoint of ``checkpoint_s`` (C); a
checkpoint becomes durable ``persist_s`` after its snapshot (an async save).
Each VM lives an uptime drawn from the schedule (exponential, Weibull, or a
replayed trace); when it dies, the work since the last durable checkpoint is
lost, the next VM comes after the restart delay D (billed: booting) plus any
capacity wait (unbilled), and the job spends R restoring before it computes
again (a VM can die during R too). A SIGTERM preemption gives ``grace_s`` of
notice: when C fits in it, the job saves an emergency checkpoint and loses
nothing. A provider's uptime cap (``max_uptime_s``) ends every VM that lives
longer.

A job of ``nodes`` VMs (data-parallel) is one group: each VM is preempted on
its own, the group loses its work when any VM is lost, and R is then the
group's re-rendezvous and restore. Which VMs are up, and when the group can
compute again, is :mod:`spotsim.sim.nodes`; cost is every VM's billed hours.

Vectorisation: one loop iteration per phase (a VM lifetime, for one node),
not per segment: the number of whole segments a phase holds is computed in
closed form, so the loop runs about (preemptions per trajectory + 1) times
for every interval and trial together. :func:`check_budget` refuses, before
any array exists, a run whose memory or loop count would be out of reach
(see the bounds below).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spotsim.cost import Machine, project, savings
from spotsim.errors import InvalidOption
from spotsim.preemption import KillMode, Schedule
from spotsim.sim.nodes import Nodes

PERCENTILES = (50, 90, 99)

# What one simulate() may cost. Measured: ~240 B per trajectory at peak, 0.07–0.17 µs per
# trajectory per VM lifetime, ~65 µs of Python per loop pass (one pass per lifetime).
# The benchmark (50 intervals × 10,000 trials, ~20 lifetimes each) uses a tenth of each.
MAX_INTERVALS = 1_000  # each costs an estimate below (~50 µs)
MAX_TRAJECTORIES = 5_000_000  # intervals × trials: ~1.2 GiB at peak
MAX_LIFETIMES = 10_000  # expected VM lifetimes of one trajectory: the loop's passes
MAX_LIFETIME_STEPS = 100_000_000  # Σ trajectories × their expected lifetimes: 10–20 s
_BYTES_PER_TRAJECTORY = 240
# Each node past the first: ~110 B more per trajectory at peak, and a pass costs about half a
# one-node pass more (a group's arrays are (nodes × trajectories)).
_BYTES_PER_NODE = 110
_PASS_COST_PER_NODE = 0.5
# The slowest of many trajectories needs several times the mean (one long segment: a
# geometric count, whose maximum over n draws is ≈ mean·ln n); past this, stop.
_LOOP_LIMIT = 20 * MAX_LIFETIMES


@dataclass(frozen=True)
class Job:
    work_s: float
    checkpoint_s: float
    persist_s: float = 0.0
    restart_s: float = 0.0
    restart_delay_s: float = 0.0
    step_s: float = 1.0  # lost work is also reported in steps
    grace_s: float = 0.0
    sigkill_fraction: float = 1.0  # share of preemptions without notice
    startup_s: float = 0.0  # the first attempt's time to its first step (imports, data, model)
    max_uptime_s: float | None = None  # every VM stops at this uptime (a legacy preemptible VM: 24 h)
    nodes: int = 1  # VMs the job runs on; cost is for all of them
    elastic: bool = False  # the group computes with the VMs it has (torchrun --nnodes=1:N), not only with all

    def __post_init__(self) -> None:
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, (int, np.integer)) or self.nodes < 1:
            raise InvalidOption(f"nodes must be a whole number ≥ 1, got {self.nodes!r}")
        if self.max_uptime_s is not None and not (np.isfinite(self.max_uptime_s) and self.max_uptime_s > 0):
            raise InvalidOption(f"max uptime must be > 0 seconds, got {self.max_uptime_s}")
        for name in (
            "work_s",
            "checkpoint_s",
            "step_s",
            "persist_s",
            "restart_s",
            "restart_delay_s",
            "grace_s",
            "startup_s",
        ):
            value, positive = getattr(self, name), name in ("work_s", "checkpoint_s", "step_s")
            if not (np.isfinite(value) and (value > 0 if positive else value >= 0)):
                label = name.removesuffix("_s").replace("_", " ")
                raise InvalidOption(f"{label} must be {'> 0' if positive else '≥ 0'} seconds, got {value}")
        if not 0.0 <= self.sigkill_fraction <= 1.0:
            raise InvalidOption(f"sigkill fraction must be from 0 to 1, got {self.sigkill_fraction}")

    @property
    def kill(self) -> KillMode:
        """The kill mode whose draws say which preemptions give notice."""
        return KillMode.from_fraction(self.sigkill_fraction)


@dataclass
class Outcome:
    """Per (interval, trial): wall, billed (VM-seconds, all nodes) and lost seconds, and checkpoints written.

    ``preemptions`` counts the times a lost VM interrupted the job (not a VM
    lost while a group waits for a replacement: no work is lost then);
    ``rejoins`` the times an elastic group restarted to take a replacement in.
    ``losses_s``, when asked for, holds per interval one flat array of every
    interruption's lost seconds (all trials together), to compare whole
    distributions with live runs' interruptions rather than only their means.
    """

    wall_s: np.ndarray
    billed_s: np.ndarray
    lost_s: np.ndarray
    checkpoints: np.ndarray
    preemptions: np.ndarray
    rejoins: np.ndarray
    losses_s: list[np.ndarray] | None = None


def simulate(
    job: Job, intervals_s: list[float], schedule: Schedule, *, trials: int, seed: int = 0, record_losses: bool = False
) -> Outcome:
    """Simulate ``trials`` trajectories for every interval; arrays are shaped (intervals, trials).

    With ``record_losses``, also each interruption's lost seconds (:attr:`Outcome.losses_s`);
    the draws, and so every other result, are the same either way.
    """
    if not intervals_s or any(not (np.isfinite(t) and t > 0) for t in intervals_s):
        raise InvalidOption(f"intervals must be a non-empty list of positive seconds, got {intervals_s}")
    if trials < 1:
        raise InvalidOption(f"trials must be ≥ 1, got {trials}")
    check_budget(job, intervals_s, schedule, trials)
    rng = np.random.default_rng(seed)
    shape = (len(intervals_s), trials)
    n = shape[0] * shape[1]
    tau_all = np.repeat(np.asarray(intervals_s, dtype=float), trials)
    left_all = np.full(n, float(job.work_s))  # work not yet durably checkpointed
    wall, billed, lost, saves, kills, rejoins = (np.zeros(n) for _ in range(6))
    nodes = Nodes.start(job, schedule, rng, n)
    idx = np.arange(n)  # trajectories still running; the loop runs once per phase
    restarting = np.zeros(n, dtype=bool)  # the first VM starts up (startup_s) instead of restoring (R)
    losses: list[tuple[np.ndarray, np.ndarray]] | None = [] if record_losses else None  # (trajectory, lost) per pass
    passes = 0
    while idx.size:
        passes += 1
        if passes > _LOOP_LIMIT:  # check_budget's estimate was far off (a schedule unlike its model)
            raise InvalidOption(
                f"stopped after {_LOOP_LIMIT:,} VM lifetimes with {idx.size:,} trajectories unfinished: "
                "use shorter intervals, a lower preemption rate or less work"
            )
        done, nodes = _one_pass(job, schedule, nodes, tau_all[idx], left_all[idx], restarting, rng)
        wall[idx] += done.wall
        billed[idx] += done.billed
        saves[idx] += done.saves
        lost[idx] += done.lost
        left_all[idx] -= done.kept
        kills[idx] += done.preempted
        if done.rejoined is not None:
            rejoins[idx] += done.rejoined
        running = ~done.finished
        if losses is not None:
            losses.append((idx[running], done.lost[running]))
        idx, restarting = idx[running], np.ones(int(running.sum()), dtype=bool)
    outcome = Outcome(
        wall_s=wall.reshape(shape),
        billed_s=billed.reshape(shape),
        lost_s=lost.reshape(shape),
        checkpoints=saves.reshape(shape),
        preemptions=kills.reshape(shape),
        rejoins=rejoins.reshape(shape),
    )
    if losses is not None:
        outcome.losses_s = _per_interval(losses, trials, len(intervals_s))
    return outcome


def _per_interval(losses: list[tuple[np.ndarray, np.ndarray]], trials: int, intervals: int) -> list[np.ndarray]:
    """Each interval's interruption losses, one flat array each, from the (trajectory, lost) pairs of every pass."""
    which = np.concatenate([trajectory for trajectory, _ in losses]) // trials
    lost = np.concatenate([lost for _, lost in losses])
    return [lost[which == i] for i in range(intervals)]


@dataclass
class _Pass:
    """What one pass added to each running trajectory; ``finished``: the job is done."""

    finished: np.ndarray
    wall: np.ndarray
    billed: np.ndarray
    saves: np.ndarray
    lost: np.ndarray
    kept: np.ndarray
    preempted: np.ndarray
    rejoined: np.ndarray | None  # only an elastic group rejoins


def _one_pass(job: Job, schedule: Schedule, nodes: Nodes, tau, left, restarting, rng) -> tuple[_Pass, Nodes]:
    """One phase of every running trajectory, then for those it did not finish the wait until the next.

    An elastic group with VMs down computes at their share of its throughput: its segments are
    still τ long, and each holds that share of τ's work.
    """
    length, joins, share = nodes.phase()
    noticed = job.kill.noticed(rng, length.size)
    if joins is not None:
        noticed &= ~joins  # a replacement joining gives no notice
    at_share = left / share if joins is not None else left  # seconds of compute the work left takes now
    finished, died = _one_lifetime(job, tau, at_share, restarting, length, noticed)
    running = ~finished.done
    wall = np.where(finished.done, finished.wall, length)
    billed = nodes.billed_computing(wall)
    nodes = nodes.keep(running)
    ended = length[running]
    nodes.lose(ended, schedule, rng)
    waited, last_boot, gap_billed = nodes.regroup(schedule, rng, _LOOP_LIMIT)
    # (length + D) + when the last awaited boot began: for one node, the single-VM simulator's very sum
    regrouped = ended + job.restart_delay_s + last_boot
    wall[running] = regrouped if joins is None else np.where(waited, regrouped, ended)
    billed[running] += gap_billed
    done = _Pass(finished.done, wall, billed, finished.saves, died.lost, died.kept, running, None)
    if joins is not None:  # elastic: interrupted by a loss or a rejoin, having computed at a share of the group
        done.lost, done.kept = died.lost * share, died.kept * share
        done.preempted, done.rejoined = running & ~joins, running & joins
    return done, nodes


@dataclass
class _Finish:
    done: np.ndarray
    wall: np.ndarray
    saves: np.ndarray


@dataclass
class _Death:
    kept: np.ndarray
    lost: np.ndarray


def _one_lifetime(job: Job, tau, left, restarting, life, noticed) -> tuple[_Finish, _Death]:
    """One lifetime (a phase, for a group) of each running trajectory: it either finishes the job or is
    interrupted; ``noticed``: where an interruption gives a SIGTERM notice."""
    c = job.checkpoint_s
    r = np.where(restarting, job.restart_s, job.startup_s)
    died_restoring = life < r  # restoring again: nothing computed on this VM
    life_after = np.maximum(life - r, 0.0)
    segments = np.ceil(left / tau)
    last = left - (segments - 1) * tau + c  # the last segment is shorter
    whole = np.floor(life_after / (tau + c))  # whole segments (work + checkpoint) this VM completes
    done = ~died_restoring & (whole >= segments - 1) & (life_after - (segments - 1) * (tau + c) >= last)
    done_in = np.where(died_restoring, 0.0, np.minimum(whole, segments - 1))
    finish_wall = r + (segments - 1) * (tau + c) + last
    # Preempted: whole segments are kept, the rest is lost unless an emergency save fits the notice.
    computed = np.where(died_restoring, 0.0, np.clip(life_after - done_in * (tau + c), 0.0, tau))
    rescued = ~done & ~died_restoring & noticed & (job.grace_s >= c) & (computed > 0)
    unsafe = _undurable(~done & ~died_restoring & ~rescued, life_after, done_in, tau, c, job.persist_s)
    kept = np.where(done, 0.0, done_in * tau - unsafe + np.where(rescued, computed, 0.0))
    lost = np.where(done | rescued, 0.0, computed + unsafe)
    saves = np.where(done, segments, done_in + rescued)
    return _Finish(done, np.where(done, finish_wall, 0.0), saves), _Death(kept, lost)


def _undurable(mask, life_after, done_in, tau, c, persist_s):
    """Work of the last whole segment whose checkpoint was still persisting when the VM died."""
    if persist_s <= 0:
        return np.zeros_like(life_after)
    since_snapshot = life_after - done_in * (tau + c)
    return np.where(mask & (done_in >= 1) & (since_snapshot < persist_s), tau, 0.0)


def check_budget(job: Job, intervals_s: list[float], schedule: Schedule, trials: int) -> None:
    """Refuse a simulation that would run out of memory or loop for hours, before it allocates anything.

    Raises:
        InvalidOption: one line naming the bound that is exceeded and what to change.
    """
    if len(intervals_s) > MAX_INTERVALS:
        raise InvalidOption(f"at most {MAX_INTERVALS:,} intervals per simulation, got {len(intervals_s):,}")
    n = len(intervals_s) * trials
    group = job.nodes > 1
    fewer_nodes = ", fewer nodes" if group else ""
    per_trajectory = _BYTES_PER_TRAJECTORY + (job.nodes - 1) * _BYTES_PER_NODE
    if n * per_trajectory > MAX_TRAJECTORIES * _BYTES_PER_TRAJECTORY:
        of_nodes = f" of {job.nodes:,} nodes" if group else ""
        raise InvalidOption(
            f"{n:,} trajectories{of_nodes} ({len(intervals_s)} intervals × {trials:,} trials) would need about "
            f"{n * per_trajectory / 2**30:,.1f} GiB (bound: {MAX_TRAJECTORIES:,} trajectories"
            f"{' of one node' if group else ''}); use fewer trials{' or nodes' if group else ''}"
        )
    survival, mean_uptime_s, most = group_survival(job, schedule)
    what, uptime = ("group phases", "mean group uptime") if group else ("VM lifetimes", "mean uptime")
    steps = 0.0
    for tau, count in Counter(intervals_s).items():
        lives = min(expected_lifetimes(job, tau, survival) * (2 if job.elastic and group else 1), most)
        if lives > MAX_LIFETIMES:
            needs = f"about {lives:,.3g}" if math.isfinite(lives) else "practically infinitely many"
            young = math.sqrt(2 * job.checkpoint_s * mean_uptime_s)
            raise InvalidOption(
                f"at interval {tau:g} s one trajectory needs {needs} {what} to do {job.work_s:g} s of work "
                f"against a {uptime} of {mean_uptime_s:.3g} s (bound: {MAX_LIFETIMES:,}); try an interval near "
                f"√(2·C·M) = {young:.3g} s, a lower preemption rate{fewer_nodes} or less work"
            )
        steps += lives * count * trials * (1 + (job.nodes - 1) * _PASS_COST_PER_NODE)
    if steps > MAX_LIFETIME_STEPS:
        raise InvalidOption(
            f"{n:,} trajectories × their {what} come to about {steps:,.3g} simulation steps "
            f"(bound: {MAX_LIFETIME_STEPS:,.0e}, 10–20 s); use fewer trials{fewer_nodes} or less work"
        )


def group_survival(job: Job, schedule: Schedule) -> tuple[Callable[[np.ndarray], np.ndarray], float, float]:
    """The schedule's :meth:`~spotsim.preemption.Schedule.survival` for the whole group: P(no VM is lost by t).

    For N fresh VMs that is S(t)^N (its mean, for Poisson, M/N); survivors that have aged make it an
    estimate for other schedules. At most ``most`` lifetimes per VM: N times as many phases (elastic: twice).
    """
    survival, mean_uptime_s, most = schedule.survival()
    nodes = job.nodes
    if nodes == 1:
        return survival, mean_uptime_s, most

    def whole(t: np.ndarray) -> np.ndarray:
        return survival(t) ** nodes

    mean = _survival_integral(whole, 0.0, 1e3 * mean_uptime_s) if math.isfinite(mean_uptime_s) else math.inf
    return whole, mean, most * nodes * (2 if job.elastic else 1)


def expected_lifetimes(job: Job, tau: float, survival: Callable[[np.ndarray], np.ndarray]) -> float:
    """VM lifetimes one trajectory needs on average: work ÷ the work one lifetime keeps (renewal reward).

    Without notice a lifetime keeps k whole segments with probability S(R + k·h),
    h = τ + C; when a SIGTERM notice fits a save it keeps what it computed, a
    share τ/h of its time after R. Within about one lifetime of the simulated
    mean for exponential uptimes (the finishing one is not counted); an
    estimate for other schedules, which the loop limit in simulate() backs up.
    """
    tau = min(tau, job.work_s)
    h, segments = tau + job.checkpoint_s, math.ceil(job.work_s / tau) if job.work_s / tau < 2**53 else math.inf
    if segments == math.inf:  # more checkpoints than a float counts: never finishes
        return math.inf
    rescued = 1 - job.sigkill_fraction if job.grace_s >= job.checkpoint_s else 0.0
    r = job.restart_s
    kept = (1 - rescued) * tau * _survival_sum(survival, r, h, segments)
    kept += rescued * tau / h * _survival_integral(survival, r, segments * h)
    return job.work_s / kept if kept > 0 else math.inf


def _survival_sum(survival: Callable[[np.ndarray], np.ndarray], start: float, h: float, terms: float) -> float:
    """Σ_{k=1..terms} S(start + k·h): the first terms summed, a long tail integrated (S decreases)."""
    head = np.arange(1.0, min(terms, 256) + 1)
    total = float(survival(start + head * h).sum())
    if terms > head.size:
        k = np.geomspace(head.size, terms, 128)
        total += _trapezoid(survival(start + k * h), k)
    return total


def _survival_integral(survival: Callable[[np.ndarray], np.ndarray], start: float, length: float) -> float:
    """∫ S(t) dt over [start, start + length], on a grid dense near ``start`` where S is largest."""
    u = np.concatenate(([0.0], np.geomspace(length * 1e-9, length, 512)))
    return _trapezoid(survival(start + u), u)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def interval_rows(outcome: Outcome, job: Job, intervals_s: list[float], machine: Machine) -> list[dict]:
    """One row per interval: means and percentiles of wall time, billing, lost work, cost (priced on ``machine``).

    Billed hours and costs are for all of the job's nodes; on-demand is as many VMs for the uninterrupted time.
    """
    rows = []
    for i, tau in enumerate(intervals_s):
        wall, billed, lost = outcome.wall_s[i], outcome.billed_s[i], outcome.lost_s[i]
        uninterrupted_s = job.work_s + np.ceil(job.work_s / tau) * job.checkpoint_s
        cost = project(machine, billed_hours=billed / 3600, uninterrupted_hours=job.nodes * uninterrupted_s / 3600)
        spot_mean = cost.spot_cost_usd.mean()
        row = {
            "interval_s": tau,
            "wall_s_mean": float(wall.mean()),
            **{f"wall_s_p{p}": float(np.percentile(wall, p)) for p in PERCENTILES},
            "wall_s_stderr": float(wall.std(ddof=1) / np.sqrt(wall.size)) if wall.size > 1 else 0.0,
            "billed_hours_mean": float(billed.mean() / 3600),
            "lost_s_mean": float(lost.mean()),
            "lost_steps_mean": float(lost.mean() / job.step_s),
            "preemptions_mean": float(outcome.preemptions[i].mean()),
            "checkpoint_overhead_mean": float((outcome.checkpoints[i] * job.checkpoint_s / wall).mean()),
            "spot_cost_usd_mean": float(spot_mean),
            "on_demand_cost_usd": float(cost.on_demand_cost_usd),
            "savings_mean": float(savings(spot_mean, cost.on_demand_cost_usd)),
        }
        rows.append(row)
    return rows
