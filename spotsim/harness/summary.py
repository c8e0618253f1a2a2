"""From a run log to ``summary.json``: lost work, overheads and projected cost.

Units: ``wall_s`` is real seconds; every other duration is in simulated
seconds (real × time scale K), and ``time_scale`` says what K was.

Lost work per interruption (preemption or crash) is the last step the
attempt reported minus the step the next attempt resumed from; the summary
checks ``steps_computed == final_step + lost_steps``, which fails when a job
resumes from a step it never reported (its events are not trustworthy).
"""

from __future__ import annotations

from dataclasses import asdict

from spotsim.cost import Machine, project
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import AttemptRecord


def summarize(attempts: list[AttemptRecord], config: RunConfig, machine: Machine, *, wall_s: float) -> dict:
    k = config.time_scale
    grace_real_s = config.grace_s / k
    interruptions = [
        x for i, a in enumerate(attempts) if (x := _interruption(a, _next_started(attempts, i), grace_real_s))
    ]
    preemptions = [x for x in interruptions if x["cause"] == "preempted"]
    lost_steps = sum(x["lost_steps"] for x in interruptions if x["lost_steps"] is not None)
    step_time = _step_time_s(attempts)
    completed = bool(attempts) and attempts[-1].cause == "done"
    final_step = attempts[-1].done_step if completed else max((a.last_step for a in attempts if a.started), default=0)
    steps_computed = sum(a.last_step - a.first_step for a in attempts if a.started)
    restarts = [r for a in attempts[1:] if (r := _restart_overhead(a)) is not None]
    checkpoints = [c for a in attempts for c in a.checkpoints]
    blocking_real = sum(float(c.get("blocking_s", 0.0)) for c in checkpoints)
    capacity_wait_s = sum(a.capacity_wait_s for a in attempts)
    lost_time_real = lost_steps * step_time if step_time else 0.0
    preempt_added_real = (
        lost_time_real + sum(restarts) + sum(x["notice_to_exit_s"] or 0.0 for x in preemptions)
        + sum(a.delay_s + a.capacity_wait_s for a in attempts[:-1]) / k
    )  # fmt: skip
    sim_wall_s = wall_s * k
    projection = project(
        machine,
        billed_hours=max(0.0, sim_wall_s - capacity_wait_s) / 3600,
        uninterrupted_hours=max(0.0, wall_s - preempt_added_real) * k / 3600,
    )
    return {
        "completed": completed,
        "final_step": final_step,
        "attempts": len(attempts),
        "preemptions": len(preemptions),
        "crashes": sum(1 for x in interruptions if x["cause"] in ("crash", "timeout")),
        "timeouts": sum(1 for x in interruptions if x["cause"] == "timeout"),
        "lost_steps": lost_steps,
        "lost_time_s": lost_time_real * k,
        "steps_computed": steps_computed,
        "identity_holds": steps_computed == final_step + lost_steps,
        "anomalies": _anomalies(attempts, interruptions),
        "checkpoints": len(checkpoints),
        "checkpoint_blocking_s": blocking_real * k,
        "checkpoint_persist_s": sum(float(c.get("persist_s", 0.0)) for c in checkpoints) * k,
        "checkpoint_overhead": blocking_real / wall_s if wall_s > 0 else 0.0,
        "restart_overhead_s": (sum(restarts) / len(restarts)) * k if restarts else None,
        "step_time_s": step_time * k if step_time else None,
        "startup_s": _startup_s(attempts, k),
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
        "settings": _settings(config),
        "interruptions": [_scaled(x, k) for x in interruptions],
    }


def _next_started(attempts: list[AttemptRecord], i: int) -> AttemptRecord | None:
    """The first attempt after ``i`` that got as far as its ``start`` event."""
    return next((a for a in attempts[i + 1 :] if a.started), None)


def _interruption(attempt: AttemptRecord, following: AttemptRecord | None, grace_real_s: float) -> dict | None:
    """One preemption or crash: what it cost, and for SIGTERM whether the emergency save made it.

    An attempt killed before its ``start`` event restored nothing and computed
    nothing: it loses 0 steps, and the attempt before it is charged against the
    next attempt that did start.
    """
    if attempt.cause not in ("preempted", "crash", "timeout"):
        return None
    resumed = following.first_step if following is not None else None
    notice = attempt.signals[0] if attempt.signals else None
    record = {
        "attempt": attempt.attempt,
        "cause": attempt.cause,
        "exit_code": attempt.exit_code,
        "signals": [name for _, name in attempt.signals],
        "last_step": attempt.last_step,
        "resumed_step": resumed,
        "started": attempt.started,
        "lost_steps": (attempt.last_step - resumed if attempt.started else 0) if resumed is not None else None,
        "notice_to_exit_s": attempt.exit_t - notice[0] if notice and attempt.exit_t else None,
    }
    if notice and notice[1] == "SIGTERM":
        emergency = [
            c["t"] - notice[0] for c in attempt.checkpoints if c.get("kind") == "emergency" and c["t"] >= notice[0]
        ]
        record["emergency_checkpoint"] = bool(emergency)
        # The question for a fixed grace window: was the emergency checkpoint committed before the SIGKILL?
        record["emergency_in_grace"] = bool(emergency) and emergency[0] <= grace_real_s
        record["emergency_after_s"] = emergency[0] if emergency else None
        record["exited_in_grace"] = "SIGKILL" not in record["signals"]
    return record


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


def _restart_overhead(attempt: AttemptRecord) -> float | None:
    """Real seconds from launch to the first step completed after the resume."""
    first = attempt.first_progress_t
    return first - attempt.launch_t if first is not None else None


def _startup_s(attempts: list[AttemptRecord], k: float) -> float | None:
    """The first attempt's launch to its first step (imports, data, model), simulated seconds."""
    first = attempts[0].first_progress_t if attempts else None
    return (first - attempts[0].launch_t) * k if first is not None else None


def _step_time_s(attempts: list[AttemptRecord]) -> float | None:
    """Mean real seconds per step while training (checkpoint blocking included), over all attempts."""
    seconds = steps = 0.0
    for a in attempts:
        progress = [(t, s) for t, s in a.steps if s > a.first_step]
        if len(progress) >= 2:
            seconds += progress[-1][0] - progress[0][0]
            steps += progress[-1][1] - progress[0][1]
    return seconds / steps if steps > 0 else None


def _scaled(record: dict, k: float) -> dict:
    """Real seconds to simulated ones."""
    return record | {
        key: record[key] * k for key in ("notice_to_exit_s", "emergency_after_s") if record.get(key) is not None
    }


def _settings(config: RunConfig) -> dict:
    return {
        "command": list(config.command), "schedule": config.schedule.describe(),
        "interval_s": config.interval_s, "interval_steps": config.interval_steps, "kill": str(config.kill),
        "grace_s": config.grace_s, "restart_delay_s": config.restart_delay_s, "seed": config.seed,
        "max_preemptions": config.max_preemptions, "max_crashes": config.max_crashes,
    }  # fmt: skip
