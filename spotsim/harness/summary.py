"""From a run log to ``summary.json``: lost work, overheads and projected cost.

Units: ``wall_s`` is real seconds; every other duration is in simulated
seconds on the phase-aware clock (:mod:`spotsim.clock`): training compute is
real × K, start-up, checkpoint blocking, the notice and everything after
``done`` count at their real duration. ``clock`` states K and each phase's
real and simulated seconds. ``checkpoint_persist_s`` is the simulated
training that passes while saves persist in the background (real × K): the
window in which a finished checkpoint is not yet durable.

Lost work per interruption (preemption or crash) is the last step the
attempt reported minus the step the next attempt resumed from; the summary
checks ``steps_computed == final_step + lost_steps``, which fails when a job
resumes from a step it never reported (its events are not trustworthy).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict

from spotsim.clock import AttemptClock, Clock, PhaseTime, RunClock, check_interval_bound
from spotsim.cost import Machine, project
from spotsim.errors import InvalidOption
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import AttemptRecord
from spotsim.sim.calibration import Calibration
from spotsim.sim.projection import project_run
from spotsim.storage.faults import FaultSpec

WORK_TOLERANCE = 0.10  # the work a run stood for may differ this much from --work before it is said


def run_clock(events: list[dict], clock: Clock) -> RunClock:
    """The run's simulated clock, fed its whole log."""
    folded = RunClock(clock)
    for event in events:
        folded.apply(event)
    return folded


def summarize(
    attempts: list[AttemptRecord], clock: RunClock, config: RunConfig, machine: Machine, *, wall_s: float
) -> dict:
    k = config.time_scale
    interruptions = [
        x for i, a in enumerate(attempts)
        if (x := _interruption(a, _next_started(attempts, i), clock.attempts[i] if i < len(clock.attempts) else None))
    ]  # fmt: skip
    preemptions = [x for x in interruptions if x["cause"] == "preempted"]
    lost_steps = sum(x["lost_steps"] for x in interruptions if x["lost_steps"] is not None)
    step_real = _step_time_s(attempts)
    step_s = step_real * k if step_real else None
    completed = bool(attempts) and attempts[-1].cause == "done"
    final_step = attempts[-1].done_step if completed else max((a.last_step for a in attempts if a.started), default=0)
    steps_computed = sum(a.last_step - a.first_step for a in attempts if a.started)
    restarts = [r for i, a in enumerate(attempts) if i > 0 and (r := _overhead(a, clock, i, step_s)) is not None]
    checkpoints = [c for a in attempts for c in a.checkpoints]
    blocking = sum(float(c.get("blocking_s", 0.0)) for c in checkpoints)
    phases = clock.phases()
    sim_wall_s = sum(p.sim_s for p in phases.values())
    capacity_wait_s = phases["capacity_wait"].sim_s
    startup_s = _overhead(attempts[0], clock, 0, step_s) if attempts else None
    uninterrupted_s = _uninterrupted_s(config, startup_s, final_step, step_s, blocking / max(len(checkpoints), 1))
    projection = project(machine, billed_hours=max(0.0, sim_wall_s - capacity_wait_s) / 3600,
                         uninterrupted_hours=uninterrupted_s / 3600)  # fmt: skip
    return {
        "completed": completed,
        "final_step": final_step,
        "attempts": len(attempts),
        "preemptions": len(preemptions),
        "crashes": sum(1 for x in interruptions if x["cause"] in ("crash", "timeout")),
        "storage_outages": sum(1 for x in interruptions if x["cause"] == "storage_outage"),
        "timeouts": sum(1 for x in interruptions if x["cause"] == "timeout"),
        "lost_steps": lost_steps,
        "lost_time_s": lost_steps * step_s if step_s else 0.0,
        "steps_computed": steps_computed,
        "identity_holds": steps_computed == final_step + lost_steps,
        "anomalies": _anomalies(attempts, interruptions),
        "warnings": _warnings(config, attempts, checkpoints, step_s=step_s, final_step=final_step, completed=completed),
        "checkpoints": len(checkpoints),
        "checkpoint_blocking_s": blocking,
        "checkpoint_persist_s": sum(float(c.get("persist_s", 0.0)) for c in checkpoints) * k,
        "checkpoint_overhead": blocking / sim_wall_s if sim_wall_s > 0 else 0.0,
        "restart_overhead_s": sum(restarts) / len(restarts) if restarts else None,
        "step_time_s": step_s,
        "startup_s": startup_s,
        "wall_s": wall_s,
        "sim_wall_s": sim_wall_s,
        "time_scale": k,
        "sim_hours": sim_wall_s / 3600,
        "capacity_wait_s": capacity_wait_s,
        **{f"{key}": value for key, value in asdict(projection).items() if key != "machine"},
        "machine": machine.name,
        "prices": list(machine.sources),
        "spot_usd_per_hour": machine.spot_usd_per_hour,
        "on_demand_usd_per_hour": machine.on_demand_usd_per_hour,
        "clock": _clock(config, phases),
        "provider": config.provider.to_dict(),
        "settings": _settings(config),
        "interruptions": interruptions,
        "metadata_requests": sum(a.metadata_requests for a in attempts),
    }


def projection_for(summary: dict, config: RunConfig) -> dict:
    """The simulator calibrated from this run, over its work at its settings (:mod:`spotsim.sim.projection`)."""
    schedule = config.schedule
    if not schedule.simulable:
        return {"skipped": f"the simulator draws poisson, weibull or trace preemptions, not {schedule.describe()}"}
    if not summary["step_time_s"]:
        return {"skipped": "the run measured no step time (fewer than 2 steps reported)"}
    calibration = Calibration.from_summaries([summary])
    # the work the live run stood for: its own steps at its measured step time (the probe's may differ)
    work_s = summary["final_step"] * calibration.step_s if summary["completed"] else config.work_s
    provider = config.provider
    # The job has the metadata notice too, if it reads the metadata server: the simulator's notice is both.
    watches = summary["metadata_requests"] > 0
    job = calibration.job(
        work_s=work_s, restart_delay_s=config.restart_delay_s,
        grace_s=config.grace_s + (provider.notice_s if watches else 0.0),
        sigkill_fraction=config.kill.sigkill_fraction, max_uptime_s=provider.max_uptime_s,
    )  # fmt: skip
    interval = config.interval_s or config.interval_steps * calibration.step_s
    live = {"wall_s": summary["sim_wall_s"], "lost_s": summary["lost_time_s"]} | {
        key: summary[key] for key in ("billed_hours", "spot_cost_usd", "savings", "preemptions")
    }
    try:
        projected = project_run(
            job, schedule, interval, spot_usd_per_hour=summary["spot_usd_per_hour"],
            on_demand_usd_per_hour=summary["on_demand_usd_per_hour"], live=live, seed=config.seed,
        )  # fmt: skip
    except InvalidOption as e:  # a job the simulator cannot finish in its bounds
        return {"skipped": str(e)}
    notes = []
    if provider.notice_s and not watches:
        notes.append(f"the job never read the metadata server: its {provider.notice_s:g} s notice is not counted")
    if config.max_preemptions is not None:
        notes.append(f"the live run stopped preempting after {config.max_preemptions}; the projection does not")
    if not summary["completed"]:
        notes.append("the live run did not finish: its figures are partial")
    return projected | {"notes": notes}


def storage_summary(attempts: list[AttemptRecord], faults: FaultSpec | None) -> dict:
    """How the bucket behaved, attempt by attempt: the faults injected, the emulator's outages, and the job's
    saves that were retried, skipped or failed (from its ``checkpoint`` and ``checkpoint_failed`` events)."""
    per_attempt = []
    for a in attempts:
        retried = sum(int(c.get("retries") or 0) > 0 for c in a.checkpoints) + sum(
            int(f.get("retries") or 0) > 0 for f in a.failed_saves
        )
        per_attempt.append({
            "attempt": a.attempt, "saves": len(a.checkpoints), "retried": retried,
            "retries": sum(int(c.get("retries") or 0) for c in [*a.checkpoints, *a.failed_saves]),
            "failed": sum(not f.get("skipped") for f in a.failed_saves),
            "skipped": sum(bool(f.get("skipped")) for f in a.failed_saves),
            "faults": dict(Counter(a.storage_faults)), "emulator_outages": len(a.storage_outages),
        })  # fmt: skip
    totals = {key: sum(p[key] for p in per_attempt) for key in ("saves", "retried", "retries", "failed", "skipped")}
    return {
        "faults": faults.describe() if faults is not None else None,
        "injected": dict(sum((Counter(a.storage_faults) for a in attempts), Counter())),
        "emulator_outages": [o for a in attempts for o in a.storage_outages],
        **totals,
        "attempts": per_attempt,
    }


def _clock(config: RunConfig, phases: dict[str, PhaseTime]) -> dict:
    return {
        "k": config.time_scale,
        "work_s": config.work_s,
        "startup_s": config.startup_s,
        "chosen": config.scale.note if config.scale else None,
        "phases": {name: {"real_s": p.real_s, "sim_s": p.sim_s} for name, p in phases.items()},
    }


def _overhead(attempt: AttemptRecord, clock: RunClock, index: int, step_s: float | None) -> float | None:
    """Simulated seconds from launch to the first step past the resume, less that step's own compute:
    spawn, imports, restore, and whatever else delays the first step (R, or the first attempt's start-up)."""
    first = attempt.first_progress_t
    if first is None or index >= len(clock.attempts):
        return None
    started = clock.attempts[index].phases(first)["startup"].sim_s
    return max(started, clock.attempts[index].uptime(first) - (step_s or 0.0))


def _uninterrupted_s(config: RunConfig, startup_s: float | None, final_step: int, step_s: float | None,
                     blocking_s: float) -> float:  # fmt: skip
    """The same job without preemptions: one start-up, its steps, and its periodic checkpoints."""
    useful = final_step * (step_s or 0.0)
    if config.interval_s is not None:
        saves = math.ceil(useful / config.interval_s) if useful > 0 else 0
    else:
        saves = final_step // config.interval_steps + 1
    return (startup_s or 0.0) + useful + saves * blocking_s


def _warnings(
    config: RunConfig, attempts: list[AttemptRecord], checkpoints: list[dict], *, step_s: float | None,
    final_step: int, completed: bool,
) -> list[str]:  # fmt: skip
    """What makes the figures less trustworthy without being the job's fault."""
    found = []
    saves = [float(c.get("blocking_s", 0.0)) + float(c.get("persist_s", 0.0)) for c in checkpoints
             if c.get("kind", "periodic") == "periodic"]  # fmt: skip
    if saves and (line := check_interval_bound(config.interval_s, config.time_scale,
                                                                       statistics.median(saves))):  # fmt: skip
        found.append(line)
    if config.scale is not None and step_s and completed:
        stood_for = final_step * step_s
        if abs(stood_for / config.work_s - 1) > WORK_TOLERANCE:
            found.append(
                f"the job stood for {stood_for / 3600:.3g} h of compute, not the {config.work_s / 3600:g} h asked: its "
                f"steps ran at {stood_for / config.work_s:.0%} of the measured time (a busy machine?); the figures "
                "and the projection are for what it did"
            )
    if line := _missed_notices(config, attempts):
        found.append(line)
    if config.time_scale != 1 and attempts and not any(a.started or a.steps for a in attempts):
        found.append("the job reported no start or step events: its compute could not be told from its start-up, "
                     "so nothing was compressed by K")  # fmt: skip
    return found


def _missed_notices(config: RunConfig, attempts: list[AttemptRecord]) -> str | None:
    """A job that polls the metadata server every P real seconds cannot see a notice that lasts less than P
    here, though on the VM (where the notice is K times longer) it would."""
    lead_real = config.provider.notice_s / config.time_scale
    missed = [a for a in attempts if a.notice_t is not None and a.notice_seen_t is None and len(a.metadata_times) > 1]
    if not missed or not lead_real:
        return None
    gaps = [b - a for x in missed for a, b in zip(x.metadata_times, x.metadata_times[1:])]
    poll = statistics.median(gaps)
    if poll <= lead_real:
        return None
    return (
        f"the job polls the metadata server every {poll:.2g} s real, but at K = {config.time_scale:,.4g} the "
        f"{config.provider.notice_s:g} s notice lasts {lead_real:.2g} s real: it missed {len(missed)} notice(s) "
        f"that it would see on the VM; poll on the simulated clock (SPOTSIM_TIME_SCALE) or lower K to "
        f"{config.provider.notice_s / poll:.3g}"
    )


def _next_started(attempts: list[AttemptRecord], i: int) -> AttemptRecord | None:
    """The first attempt after ``i`` that got as far as its ``start`` event."""
    return next((a for a in attempts[i + 1 :] if a.started), None)


def _interruption(attempt: AttemptRecord, following: AttemptRecord | None, clock: AttemptClock | None) -> dict | None:
    """One preemption or crash: what it cost and, for a preemption, how the job met it.

    An attempt killed before its ``start`` event restored nothing and computed
    nothing: it loses 0 steps, and the attempt before it is charged against the
    next attempt that did start.
    """
    if attempt.cause not in ("preempted", "crash", "timeout", "storage_outage"):
        return None
    resumed = following.first_step if following is not None else None
    first_signal = attempt.signals[0] if attempt.signals else None
    record = {
        "attempt": attempt.attempt,
        "cause": attempt.cause,
        "exit_code": attempt.exit_code,
        "signals": [name for _, name in attempt.signals],
        "last_step": attempt.last_step,
        "resumed_step": resumed,
        "started": attempt.started,
        "lost_steps": (attempt.last_step - resumed if attempt.started else 0) if resumed is not None else None,
        "notice_to_exit_s": attempt.exit_t - first_signal[0] if first_signal and attempt.exit_t else None,
    }
    if attempt.cause == "preempted":
        record |= _how_met(attempt, clock)
    return record


def _how_met(attempt: AttemptRecord, clock: AttemptClock | None) -> dict:
    """A preemption from t0 (the metadata notice, or the first signal): the VM's simulated uptime then, when
    the job saw the notice in the metadata server's request log, when its emergency checkpoint committed, and
    how it ended. Offsets from t0 are simulated seconds; ``*_real_s`` the real ones the job had."""
    signals: dict[str, float] = {}
    for t, name in attempt.signals:
        signals.setdefault(name, t)
    t0 = attempt.preempted_t
    ended = "killed" if "SIGKILL" in signals else "inside_grace" if "SIGTERM" in signals else "before_signal"
    met = {
        "exit": ended, "noticed": not attempt.without_notice, "hard_stop": attempt.hard_stop,
        "uptime_s": clock.uptime(t0) if clock is not None and t0 is not None else None,
        "metadata_requests": attempt.metadata_requests,
    }  # fmt: skip
    if t0 is None or attempt.without_notice:
        return met  # no notice at all
    after = lambda t: (clock.uptime(t) - clock.uptime(t0)) if clock is not None else t - t0  # noqa: E731
    emergency = next((c["t"] for c in attempt.checkpoints if c.get("kind") == "emergency" and c["t"] >= t0), None)
    kill_t = signals.get("SIGKILL")
    return met | {
        "notice_seen_after_s": after(attempt.notice_seen_t) if attempt.notice_seen_t else None,
        "notice_seen_after_real_s": attempt.notice_seen_t - t0 if attempt.notice_seen_t else None,
        "emergency_checkpoint": emergency is not None,
        "emergency_after_s": after(emergency) if emergency is not None else None,
        "emergency_after_real_s": emergency - t0 if emergency is not None else None,
        "emergency_before_kill": emergency is not None and (kill_t is None or emergency <= kill_t),
    }


def _anomalies(attempts: list[AttemptRecord], interruptions: list[dict]) -> list[str]:
    """Reports that contradict each other: the job's events cannot be trusted where these appear."""
    found = [
        f"attempt {x['attempt']} reported step {x['last_step']} but the next attempt resumed from {x['resumed_step']}"
        for x in interruptions if x["lost_steps"] is not None and x["lost_steps"] < 0
    ]  # fmt: skip
    if attempts and attempts[0].started and attempts[0].first_step != 0:
        found.append(
            f"the first attempt resumed from step {attempts[0].first_step}: its state outlived the bucket prefix "
            "(a leftover run, or a checkpoint outside SPOTSIM_CHECKPOINT_URI)"
        )
    for a in attempts:
        found += [f"attempt {a.attempt} wrote a malformed event ({problem})" for problem in a.malformed]
        found += [f"attempt {a.attempt} was stopped by the harness: {reason}" for reason in a.stops]
    return found


def _step_time_s(attempts: list[AttemptRecord]) -> float | None:
    """Mean real seconds of compute per step (checkpoint blocking excluded), over all attempts."""
    seconds = steps = 0.0
    for a in attempts:
        progress = [(t, s) for t, s in a.steps if s > a.first_step]
        if len(progress) >= 2:
            (t0, s0), (t1, s1) = progress[0], progress[-1]
            blocked = sum(float(c.get("blocking_s", 0.0)) for c in a.checkpoints if t0 < c["t"] <= t1)
            seconds += max(0.0, t1 - t0 - blocked)
            steps += s1 - s0
    return seconds / steps if steps > 0 else None


def _settings(config: RunConfig) -> dict:
    return {
        "command": list(config.command), "schedule": config.schedule.describe(),
        "interval_s": config.interval_s, "interval_steps": config.interval_steps, "kill": str(config.kill),
        "provider": config.provider.name, "notice_s": config.provider.notice_s,
        "grace_s": config.grace_s, "restart_delay_s": config.restart_delay_s, "seed": config.seed,
        "work_s": config.work_s, "startup_s": config.startup_s, "total_steps": config.total_steps,
        "max_preemptions": config.max_preemptions, "max_crashes": config.max_crashes,
    }  # fmt: skip
