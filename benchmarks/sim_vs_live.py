"""Simulator against live runs on the phase-aware clock: does the simulator, calibrated on other runs, predict them?

Live runs of a light job (``tests/jobs/watched_loop.py``: ~0.3 ms steps, a
restart of ~0.3 s) under Poisson SIGKILL preemptions at explicit K, one run at
a time. First come separate calibration runs (their own seeds): the first two
(the pilot) measure the checkpoint blocking C that places the intervals at
Daly's interval for C and M = 1/λ times ``--multipliers``; the rest are spread
among the live runs, so that a change in the machine's load reaches both
alike. The live runs go round the intervals in rotating order. The simulator,
calibrated only from the calibration runs (medians of step time, C, persist,
start-up, restart overhead R), runs ``--trials`` trajectories per interval.

Per interval: live mean ± standard error of wall time and lost work (per run,
and per interruption), the simulated means, their relative errors (target
≤ 10%), and a two-sample KS test of the live per-interruption losses against
the simulated ones (target p > 0.01). Lost work is compared in simulated
seconds (lost steps × the run's step time), which does not depend on the
step time. The gaps are then measured, not guessed: each component of the
wall time live against simulated, preemptions per run, restart overhead,
checkpoint cost, the step time at each interval (and the simulated wall time
with it), lifetime overshoot, compute left unreported by the kill, and the
spread of persist times behind losses of a checkpoint still persisting.

Writes ``reports/sim_vs_live.csv`` (per interval), ``sim_vs_live_runs.csv`` (per
run, calibration runs included), ``sim_vs_live_interruptions.csv``,
``sim_vs_live.png`` and ``sim_vs_live.md``.

    python benchmarks/sim_vs_live.py [--runs 70] [--calibration-runs 14] [--rate 1800] [--time-scale 2]
    python benchmarks/sim_vs_live.py --from-runs reports   # re-analyse the recorded runs, no live runs
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from spotsim.clock import MIN_INTERVAL_OVER_SAVE
from spotsim.cost import load_prices
from spotsim.cost.prices import DEFAULT_MACHINE
from spotsim.events import fold_attempts, read_events
from spotsim.harness import RunConfig, run_live
from spotsim.harness.summary import run_clock
from spotsim.preemption import Sigkill, parse_schedule
from spotsim.sim import Outcome, daly_interval, simulate
from spotsim.sim.calibration import Calibration

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB = REPO_ROOT / "tests" / "jobs" / "watched_loop.py"
TARGET_ERROR = 0.10  # simulated mean against live mean
TARGET_STDERR = 0.03  # live standard error ÷ live mean
KS_ALPHA = 0.01
PILOT_RUNS = 2
NOT_SIMULATED = ("notice", "after_done", "restart_delay", "capacity_wait")  # clock phases the simulator has no term for
GAP_LEGEND = (
    "What the simulator assumes beside what the live runs measured (seconds are simulated). Unreported: the compute "
    "between the job's last step event and the SIGKILL, which the summary's lost work omits (the kill leaves those "
    "steps unreported) while the wall time counts it; overshoot: the simulated uptime at the signal past the drawn "
    "lifetime; past interval: losses longer than τ + 2 steps, on both sides (the checkpoint before was still "
    "persisting); beyond sim window: live losses past τ + C + persist + 2 steps, which the simulator, holding persist "
    "at one value, cannot lose."
)
WALL_PARTS = ("work", "lost", "other_compute", "checkpoint_blocking", "startup_restarts", "not_simulated")
CALIBRATION_SEED = 1_000_000  # calibration runs draw other preemptions than any live run
MACHINE = load_prices().machine(DEFAULT_MACHINE)  # prices only feed the runs' projections, not compared here


@dataclass(frozen=True)
class Design:
    rate: float  # preemptions per simulated hour
    k: float
    steps: int
    step_sleep_s: float
    step_event_s: float  # real seconds between step events: what lost work is measured to
    multipliers: tuple[float, ...]
    runs: int  # live runs per interval
    calibration_runs: int
    pilot_interval_s: float
    trials: int
    seed: int

    @property
    def mean_uptime_s(self) -> float:
        return 3600.0 / self.rate

    def command(self) -> tuple[str, ...]:
        env = (f"STEP_SLEEP={self.step_sleep_s:g}", f"TOTAL_STEPS={self.steps}")
        return ("env", *env, sys.executable, str(JOB))


def main() -> int:
    args = parse_args()
    design = Design(
        rate=args.rate,
        k=args.time_scale,
        steps=args.steps,
        step_sleep_s=args.step_sleep,
        step_event_s=args.step_event,
        multipliers=tuple(float(v) for v in args.multipliers.split(",")),
        runs=args.runs,
        calibration_runs=max(args.calibration_runs, PILOT_RUNS),
        pilot_interval_s=args.pilot_interval,
        trials=args.trials,
        seed=args.seed,
    )
    started, load_before = time.monotonic(), os.getloadavg()
    if args.from_runs:
        runs, interruptions = recorded_runs(args.from_runs)
    else:
        with tempfile.TemporaryDirectory(prefix="spotsim-sim-vs-live-", dir=args.bucket_root) as work, no_timelines():
            runs, interruptions = run_all(design, Path(work))
    calibration_rows = runs[runs["role"] == "calibration"]
    calibration = Calibration.from_summaries(calibration_rows["summary"])
    pilot = Calibration.from_summaries(calibration_rows["summary"][:PILOT_RUNS])
    intervals = sorted(runs.loc[runs["role"] == "live", "interval_s"].unique())
    job = calibration.job()
    outcome = simulate(
        job,
        intervals,
        parse_schedule("poisson", design.rate),
        trials=design.trials,
        seed=design.seed,
        record_losses=True,
    )
    table = compare(runs, interruptions, outcome, calibration, intervals, design)
    gaps = measure_gaps(runs, interruptions, outcome, calibration, intervals, design)
    context = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "from_runs": args.from_runs,
        "pilot": {
            "checkpoint_s": pilot.checkpoint_s,
            "daly_s": daly_interval(pilot.checkpoint_s, design.mean_uptime_s),
        },
        "minutes": (time.monotonic() - started) / 60,
        "load": (load_before, os.getloadavg()),
        "bucket_root": args.bucket_root,
    }
    write_outputs(args.out, design, table, gaps, runs, interruptions, outcome, calibration, context)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=70, help="live runs per interval")
    parser.add_argument(
        "--calibration-runs",
        type=int,
        default=14,
        help=f"separate runs the simulator is calibrated on (the first {PILOT_RUNS} also place the intervals)",
    )
    parser.add_argument("--rate", type=float, default=1800.0, help="preemptions per simulated hour")
    parser.add_argument("--time-scale", type=float, default=2.0, help="K")
    parser.add_argument("--steps", type=int, default=20_000, help="the job's steps (its work)")
    parser.add_argument("--step-sleep", type=float, default=0.0002, help="the job's STEP_SLEEP (real seconds)")
    parser.add_argument("--step-event", type=float, default=0.0002, help="real seconds between step events")
    parser.add_argument("--multipliers", default="0.5,0.8,1.25,2", help="intervals as multiples of Daly's")
    parser.add_argument("--pilot-interval", type=float, default=0.035, help="the pilot runs' interval (simulated s)")
    parser.add_argument("--trials", type=int, default=20_000, help="simulated trajectories per interval")
    parser.add_argument("--seed", type=int, default=7)
    default_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    parser.add_argument(
        "--bucket-root",
        default=default_root,
        help="where the runs' file:// buckets live (tmpfs keeps the persist time, and so the bound on K, small)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument(
        "--from-runs",
        type=Path,
        help="re-analyse the runs recorded in this directory's "
        "sim_vs_live_runs.csv and sim_vs_live_interruptions.csv instead of running them (same settings)",
    )
    return parser.parse_args()


def recorded_runs(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-run and per-interruption rows an earlier run wrote, each run's summary rebuilt from its row as far
    as calibration reads it."""
    runs = pd.read_csv(directory / "sim_vs_live_runs.csv", keep_default_na=False, na_values=[""])
    saves = runs["checkpoints"].clip(lower=1)
    runs["summary"] = [
        {
            "step_time_s": r.step_time_s,
            "checkpoints": r.checkpoints,
            "checkpoint_blocking_s": r.checkpoint_s * n,
            "checkpoint_persist_s": r.persist_s * n,
            "restart_overhead_s": r.restart_overhead_s,
            "startup_s": r.startup_s,
            "final_step": r.final_step,
        }
        for r, n in zip(runs.itertuples(), saves, strict=False)
    ]
    return runs, pd.read_csv(directory / "sim_vs_live_interruptions.csv")


# -- live runs -------------------------------------------------------------------------


@contextlib.contextmanager
def no_timelines():
    """Skip each run's ``timeline.png``: nothing here reads it, and drawing one maps every step event onto the
    simulated axis (``RunClock.to_sim``, each call over all attempts and checkpoints): seconds per run at one
    step event per step, which would eat a tenth of the budget."""
    import spotsim.report

    drawn = spotsim.report.plot_timeline
    spotsim.report.plot_timeline = lambda *args, **kwargs: None
    try:
        yield
    finally:
        spotsim.report.plot_timeline = drawn


def run_all(design: Design, work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pilot, then rounds of live runs (one per interval, rotating order) with the other calibration runs
    spread among them. Returns per-run rows (with each ``summary``) and per-interruption rows."""
    rows, losses = [], []

    def one(role: str, interval_s: float, seed: int) -> None:
        row, lost = live_run(design, role, interval_s, seed, work)
        rows.append(row)
        losses.extend(lost)
        live = sum(r["role"] == "live" for r in rows)
        print(
            f"[{len(rows)}/{total}] {role:<11} τ {interval_s * 1000:6.1f} ms  seed {seed:<8} "
            f"wall {row['sim_wall_s']:6.1f} s  preemptions {row['preemptions']:3d}  lost {row['lost_time_s']:6.3f} s  "
            f"({row['wall_s']:.1f} s real; live {live}/{design.runs * len(design.multipliers)})",
            flush=True,
        )

    total = design.calibration_runs + design.runs * len(design.multipliers)
    for i in range(PILOT_RUNS):
        one("calibration", design.pilot_interval_s, CALIBRATION_SEED + i)
    pilot = Calibration.from_summaries(r["summary"] for r in rows)
    daly = daly_interval(pilot.checkpoint_s, design.mean_uptime_s)
    intervals = [float(f"{daly * m:.3g}") for m in design.multipliers]
    print(
        f"pilot C = {pilot.checkpoint_s * 1000:.3f} ms, M = {design.mean_uptime_s:g} s: Daly's interval "
        f"{daly * 1000:.1f} ms; intervals {', '.join(f'{t * 1000:g}' for t in intervals)} ms",
        flush=True,
    )
    spread = design.calibration_runs - PILOT_RUNS
    calibrate_in = [min(round((j + 0.5) * design.runs / spread), design.runs - 1) for j in range(spread)]
    for r in range(design.runs):
        order = intervals[r % len(intervals) :] + intervals[: r % len(intervals)]
        for j, tau in enumerate(order):
            one("live", tau, design.seed * 100_000 + r * len(intervals) + intervals.index(tau))
            for _ in range(calibrate_in.count(r) if j == 0 else 0):
                n = sum(x["role"] == "calibration" for x in rows)
                one("calibration", intervals[n % len(intervals)], CALIBRATION_SEED + n)
    return pd.DataFrame(rows), pd.DataFrame(losses)


def live_run(design: Design, role: str, interval_s: float, seed: int, work: Path) -> tuple[dict, list[dict]]:
    """One ``spotsim run`` in-process on a fresh file:// bucket; its row and one row per interruption."""
    name = f"{role}-{interval_s * 1000:g}ms-{seed}"
    out, bucket = work / "runs" / name, work / "buckets" / name
    bucket.mkdir(parents=True)
    config = RunConfig(
        command=design.command(),
        out=out,
        schedule=parse_schedule("poisson", design.rate),
        interval_s=interval_s,
        kill=Sigkill(),
        time_scale=design.k,
        seed=seed,
        total_steps=design.steps,
        step_event_interval_s=design.step_event_s,
    )
    outcome = run_live(config, MACHINE, bucket=bucket.as_uri())
    summary = outcome.summary.to_dict()  # its rows are rebuilt from CSV as dicts too
    if outcome.crash or outcome.gave_up or not summary["completed"] or not summary["identity_holds"]:
        reason = outcome.crash or outcome.gave_up or summary["anomalies"] or "did not complete"
        raise SystemExit(f"run {name} failed: {reason} (see {out})")
    kills, persist = from_run_log(out / "events.jsonl", config)
    shutil.rmtree(out)
    shutil.rmtree(bucket)
    row = run_row(role, interval_s, seed, summary, kills) | persist_quantiles(persist)
    row |= {"k": design.k, "rate": design.rate, "load_1min": os.getloadavg()[0]}  # the machine is shared
    return row, interruption_rows(role, interval_s, seed, summary, kills)


def from_run_log(events_path: Path, config: RunConfig) -> tuple[list[dict], np.ndarray]:
    """What the summary does not keep: per preemption, the lifetime overshoot (simulated uptime at the signal past
    the drawn lifetime) and the compute after the job's last step event (steps the kill leaves unreported); and
    every periodic checkpoint's persist time. All in simulated seconds."""
    events = read_events(events_path)
    attempts, clock = fold_attempts(events), run_clock(events, config.clock)
    persist = [
        float(c.get("persist_s", 0.0)) * config.time_scale
        for a in attempts
        for c in a.checkpoints
        if c.get("kind") == "periodic"
    ]
    found = []
    for attempt, attempt_clock in zip(attempts, clock.attempts, strict=False):
        if attempt.cause != "preempted" or not attempt.signals:
            continue
        signal_t = attempt.signals[0][0]
        phases = attempt_clock.phases(signal_t)
        computing = attempt.started and attempt.steps and phases["compute"].real_s > 0
        last_step_t = max([t for t, _ in attempt.steps if t <= signal_t] + [attempt_clock.start_t or signal_t])
        found.append(
            {
                "attempt": attempt.attempt,
                "overshoot_s": attempt_clock.uptime(signal_t) - attempt.preempt_at_sim_s,
                "unreported_s": (signal_t - last_step_t) * config.time_scale if computing else 0.0,
            }
        )
    return found, np.asarray(persist)


def persist_quantiles(persist: np.ndarray) -> dict:
    """The simulator holds every checkpoint's persist at one calibrated value; the live ones vary."""
    quantiles = np.percentile(persist, (50, 90, 99, 100)) if persist.size else np.full(4, np.nan)
    return dict(zip(("persist_p50_s", "persist_p90_s", "persist_p99_s", "persist_max_s"), quantiles, strict=True))


def run_row(role: str, interval_s: float, seed: int, summary: dict, kills: list[dict]) -> dict:
    phases = {name: p["sim_s"] for name, p in summary["clock"]["phases"].items()}
    saves = max(summary["checkpoints"], 1)
    return {
        "role": role,
        "interval_s": interval_s,
        "seed": seed,
        "preemptions": summary["preemptions"],
        "sim_wall_s": summary["sim_wall_s"],
        "wall_s": summary["wall_s"],
        "lost_steps": summary["lost_steps"],
        "lost_time_s": summary["lost_time_s"],
        "final_step": summary["final_step"],
        "step_time_s": summary["step_time_s"],
        "checkpoints": summary["checkpoints"],
        "checkpoint_s": summary["checkpoint_blocking_s"] / saves,
        "persist_s": summary["checkpoint_persist_s"] / saves,
        "restart_overhead_s": summary["restart_overhead_s"],
        "startup_s": summary["startup_s"],
        **{f"phase_{name}_s": seconds for name, seconds in phases.items()},
        "overshoot_s": np.mean([k["overshoot_s"] for k in kills]) if kills else np.nan,
        "unreported_s": np.mean([k["unreported_s"] for k in kills]) if kills else np.nan,
        "unreported_total_s": sum(k["unreported_s"] for k in kills),
        "warnings": " | ".join(summary["warnings"]),
        "summary": summary,
    }


def interruption_rows(role: str, interval_s: float, seed: int, summary: dict, kills: list[dict]) -> list[dict]:
    by_attempt = {k["attempt"]: k for k in kills}
    return [
        {
            "role": role,
            "interval_s": interval_s,
            "seed": seed,
            "attempt": x["attempt"],
            "started": x["started"],
            "lost_steps": x["lost_steps"],
            "lost_s": x["lost_steps"] * summary["step_time_s"],
            "step_time_s": summary["step_time_s"],
            **{key: by_attempt.get(x["attempt"], {}).get(key, np.nan) for key in ("overshoot_s", "unreported_s")},
        }
        for x in summary["interruptions"]
        if x["cause"] == "preempted"
    ]


# -- comparison ------------------------------------------------------------------------


def compare(
    runs: pd.DataFrame,
    interruptions: pd.DataFrame,
    outcome: Outcome,
    calibration: Calibration,
    intervals: list[float],
    design: Design,
) -> pd.DataFrame:
    """One row per interval: live means ± s.e., simulated means, relative errors, KS, and each target's verdict."""
    save_real_s = calibration.checkpoint_s + calibration.persist_s / design.k
    rows = []
    for i, tau in enumerate(intervals):
        live = runs[(runs["role"] == "live") & (runs["interval_s"] == tau)]
        kills = interruptions[(interruptions["role"] == "live") & (interruptions["interval_s"] == tau)]
        each = kills["lost_s"]
        wall, lost = mean_se(live["sim_wall_s"]), mean_se(live["lost_time_s"])
        per_kill = mean_se(each)
        sim_wall, sim_lost = outcome.wall_s[i].mean(), outcome.lost_s[i].mean()
        sim_per_kill = outcome.losses_s[i].mean()
        ks = ks_2samp(each.to_numpy(), outcome.losses_s[i])
        # lost work on the clock: the reported steps, and the compute after the last step event the kill cut off
        clock_lost = (live["lost_time_s"] + live["unreported_total_s"]).mean()
        clock_each = (kills["lost_s"] + kills["unreported_s"]).to_numpy()
        clock_ks = ks_2samp(clock_each, outcome.losses_s[i])
        rows.append(
            {
                "interval_s": tau,
                "real_interval_s": tau / design.k,
                "bound_ratio": tau / design.k / (MIN_INTERVAL_OVER_SAVE * save_real_s),
                "live_runs": len(live),
                "live_interruptions": len(each),
                "live_wall_s": wall[0],
                "live_wall_stderr": wall[1],
                "sim_wall_s": sim_wall,
                "wall_rel_error": rel(sim_wall, wall[0]),
                "live_lost_s": lost[0],
                "live_lost_stderr": lost[1],
                "sim_lost_s": sim_lost,
                "lost_rel_error": rel(sim_lost, lost[0]),
                "live_lost_per_interruption_s": per_kill[0],
                "live_lost_per_interruption_stderr": per_kill[1],
                "sim_lost_per_interruption_s": sim_per_kill,
                "lost_per_interruption_rel_error": rel(sim_per_kill, per_kill[0]),
                "ks_statistic": ks[0],
                "ks_p": ks[1],
                "live_clock_lost_s": clock_lost,
                "clock_lost_rel_error": rel(sim_lost, clock_lost),
                "live_clock_lost_per_interruption_s": clock_each.mean(),
                "clock_lost_per_interruption_rel_error": rel(sim_per_kill, clock_each.mean()),
                "clock_ks_statistic": clock_ks[0],
                "clock_ks_p": clock_ks[1],
                "wall_met": rel(sim_wall, wall[0]) <= TARGET_ERROR,
                "lost_met": rel(sim_lost, lost[0]) <= TARGET_ERROR,
                "ks_met": ks[1] > KS_ALPHA,
                "wall_stderr_met": wall[1] <= TARGET_STDERR * wall[0],
                "lost_stderr_met": lost[1] <= TARGET_STDERR * lost[0],
                "lost_per_interruption_stderr_met": per_kill[1] <= TARGET_STDERR * per_kill[0],
            }
        )
    return pd.DataFrame(rows)


def measure_gaps(
    runs: pd.DataFrame,
    interruptions: pd.DataFrame,
    outcome: Outcome,
    calibration: Calibration,
    intervals: list[float],
    design: Design,
) -> pd.DataFrame:
    """Per interval, what the simulator assumes beside what the live runs measured, and the wall time split into
    components (simulated s per run) that add up to the wall time on each side."""
    job = calibration.job()
    rows = []
    for i, tau in enumerate(intervals):
        live = runs[(runs["role"] == "live") & (runs["interval_s"] == tau)]
        each = interruptions[(interruptions["role"] == "live") & (interruptions["interval_s"] == tau)]
        # past τ + 2 steps (a live interval overruns τ by part of a step): the checkpoint before was still persisting
        past = tau + 2 * job.step_s
        beyond = each["lost_s"] > tau + job.checkpoint_s + job.persist_s + 2 * each["step_time_s"]
        useful = live["final_step"] * live["step_time_s"]
        sim_saves = outcome.checkpoints[i].mean() * job.checkpoint_s
        sim_restarts = outcome.wall_s[i].mean() - job.work_s - outcome.lost_s[i].mean() - sim_saves
        rows.append(
            {
                "interval_s": tau,
                "preemptions_live": live["preemptions"].mean(),
                "preemptions_sim": outcome.preemptions[i].mean(),
                "checkpoints_live": live["checkpoints"].mean(),
                "checkpoints_sim": outcome.checkpoints[i].mean(),
                "step_time_live_s": live["step_time_s"].mean(),
                "step_time_sim_s": job.step_s,
                "restart_live_s": live["restart_overhead_s"].mean(),
                "restart_sim_s": job.restart_s,
                "startup_live_s": live["startup_s"].mean(),
                "startup_sim_s": job.startup_s,
                "checkpoint_live_s": live["checkpoint_s"].mean(),
                "checkpoint_sim_s": job.checkpoint_s,
                "persist_live_s": live["persist_s"].mean(),
                "persist_sim_s": job.persist_s,
                "overshoot_live_s": each["overshoot_s"].mean(),
                "unreported_live_s": each["unreported_s"].mean(),
                "zero_loss_live": (each["lost_s"] == 0).mean(),
                "zero_loss_sim": (outcome.losses_s[i] == 0).mean(),
                "past_interval_live": (each["lost_s"] > past).mean(),
                "past_interval_sim": (outcome.losses_s[i] > past).mean(),
                "past_interval_clock": (each["lost_s"] + each["unreported_s"] > past).mean(),
                "below_quarter_live": ((each["lost_s"] > 0) & (each["lost_s"] < tau / 4)).mean(),
                "below_quarter_clock": (
                    (each["lost_s"] > 0) & (each["lost_s"] + each["unreported_s"] < tau / 4)
                ).mean(),
                "below_quarter_sim": ((outcome.losses_s[i] > 0) & (outcome.losses_s[i] < tau / 4)).mean(),
                "final_step": live["final_step"].median(),
                "beyond_sim_window_live": beyond.mean(),
                "persist_p50_live_s": live["persist_p50_s"].median(),
                "persist_p99_live_s": live["persist_p99_s"].median(),
                "persist_max_live_s": live["persist_max_s"].max(),
                **own_step_wall(runs, calibration, tau, design, live["sim_wall_s"].mean()),
                # the wall time, component by component (simulated seconds per run)
                "work_live_s": useful.mean(),
                "work_sim_s": job.work_s,
                "lost_live_s": live["lost_time_s"].mean(),
                "lost_sim_s": outcome.lost_s[i].mean(),
                "other_compute_live_s": (live["phase_compute_s"] - useful - live["lost_time_s"]).mean(),
                "other_compute_sim_s": 0.0,
                "checkpoint_blocking_live_s": live["phase_checkpoint_s"].mean(),
                "checkpoint_blocking_sim_s": sim_saves,
                "startup_restarts_live_s": live["phase_startup_s"].mean(),
                "startup_restarts_sim_s": sim_restarts,
                "not_simulated_live_s": live[[f"phase_{p}_s" for p in NOT_SIMULATED]].sum(axis=1).mean(),
                "not_simulated_sim_s": 0.0,
                "wall_live_s": live["sim_wall_s"].mean(),
                "wall_sim_s": outcome.wall_s[i].mean(),
            }
        )
    return pd.DataFrame(rows)


def own_step_wall(runs: pd.DataFrame, calibration: Calibration, tau: float, design: Design, live_wall_s: float) -> dict:
    """The simulated wall time with the step time of this interval's own calibration runs in place of all of theirs:
    how much of the wall gap is compute slowed by checkpointing at this interval."""
    own = runs[(runs["role"] == "calibration") & (runs["interval_s"] == tau)]
    if own.empty:
        return {
            "calibration_runs_here": 0,
            "step_time_here_s": np.nan,
            "wall_sim_step_here_s": np.nan,
            "wall_step_here_rel_error": np.nan,
        }
    step_s = float(own["step_time_s"].median())
    job = replace(calibration, step_s=step_s, work_s=design.steps * step_s).job()
    wall = simulate(job, [tau], parse_schedule("poisson", design.rate), trials=design.trials, seed=design.seed).wall_s
    return {
        "calibration_runs_here": len(own),
        "step_time_here_s": step_s,
        "wall_sim_step_here_s": float(wall.mean()),
        "wall_step_here_rel_error": rel(float(wall.mean()), live_wall_s),
    }


def mean_se(values: pd.Series) -> tuple[float, float]:
    values = values.dropna()
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def rel(simulated: float, live: float) -> float:
    return abs(simulated - live) / live if live > 0 else math.inf


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic and p-value: scipy's where installed, else the asymptotic one."""
    try:
        from scipy import stats
    except ImportError:
        pass
    else:
        result = stats.ks_2samp(a, b)
        return float(result.statistic), float(result.pvalue)
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size)))
    n = a.size * b.size / (a.size + b.size)
    x = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d  # Stephens' small-sample correction
    p = 2 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * x * x) for j in range(1, 101))
    return d, min(max(p, 0.0), 1.0)


# -- outputs -----------------------------------------------------------------------------


def write_outputs(
    out: Path,
    design: Design,
    table: pd.DataFrame,
    gaps: pd.DataFrame,
    runs: pd.DataFrame,
    interruptions: pd.DataFrame,
    outcome: Outcome,
    calibration: Calibration,
    context: dict,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sim_vs_live.csv", index=False)
    runs.drop(columns="summary").to_csv(out / "sim_vs_live_runs.csv", index=False)
    interruptions.to_csv(out / "sim_vs_live_interruptions.csv", index=False)
    plot(table, interruptions, outcome, design, out / "sim_vs_live.png")
    verdicts = target_lines(table)
    (out / "sim_vs_live.md").write_text(markdown(design, table, gaps, runs, calibration, context, verdicts))
    print(
        table.drop(columns=[c for c in table if c.endswith("_met")]).to_string(
            index=False, float_format=lambda v: f"{v:.4g}"
        )
    )
    print(f"calibration ({len(runs[runs['role'] == 'calibration'])} separate runs): {calibration}")
    print("\n".join(explain(gaps, table) + conclusions(gaps, table, design)))
    print("\n".join(verdicts))


def target_lines(table: pd.DataFrame) -> list[str]:
    """One "met"/"NOT met" line per target, each over every interval."""
    lines = []
    for column, _met, what in (
        ("wall_rel_error", "wall_met", f"simulated mean wall time within {TARGET_ERROR:.0%} of live"),
        ("lost_rel_error", "lost_met", f"simulated mean lost work per run within {TARGET_ERROR:.0%} of live"),
        (
            "lost_per_interruption_rel_error",
            None,
            f"simulated mean lost work per interruption within {TARGET_ERROR:.0%}",
        ),
    ):
        worst = table[column].max()
        lines.append(f"{what}: worst {worst:.1%} ({'met' if worst <= TARGET_ERROR else 'NOT met'})")
    lines.append(
        f"per-interruption lost work, KS p > {KS_ALPHA}: lowest p {table['ks_p'].min():.3g} "
        f"({'met' if table['ks_met'].all() else 'NOT met'})"
    )
    for mean, stderr, what in (
        ("live_wall_s", "live_wall_stderr", "wall time per run"),
        ("live_lost_s", "live_lost_stderr", "lost work per run"),
        ("live_lost_per_interruption_s", "live_lost_per_interruption_stderr", "lost work per interruption"),
    ):
        worst = (table[stderr] / table[mean]).max()
        lines.append(
            f"live s.e. of {what} ≤ {TARGET_STDERR:.0%}: worst {worst:.1%} "
            f"({'met' if worst <= TARGET_STDERR else 'NOT met'})"
        )
    return lines


def explain(gaps: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Each interval's gaps in words, every figure a measurement from the runs or the simulator."""
    lines = []
    for g, t in zip(gaps.to_dict("records"), table.to_dict("records"), strict=False):
        lines += [f"τ = {g['interval_s'] * 1000:g} ms: {line}" for line in (_wall_gap(g, t), _lost_gap(g, t))]
    return lines


def conclusions(gaps: pd.DataFrame, table: pd.DataFrame, design: Design) -> list[str]:
    """The gaps over all intervals, in three sentences of measurements."""
    longest = gaps.iloc[-1]
    slower = [
        (g["step_time_live_s"] - longest["step_time_live_s"])
        * g["final_step"]
        / (g["checkpoints_live"] - longest["checkpoints_live"])
        for g in gaps.iloc[:-1].to_dict("records")
    ]

    def ms(column: str, scale: float = 1000) -> str:
        return ", ".join(f"{v * scale:.3g}" for v in gaps[column])

    def pct(column: str) -> str:
        return ", ".join(f"{v:.1%}" for v in gaps[column])

    return [
        (
            f"Wall time: the live step time falls as the interval grows ({ms('step_time_live_s')} ms at "
            f"{ms('interval_s')} ms): the background persist slows the training loop, by "
            f"{', '.join(f'{v * 1000:.2f}' for v in slower)} ms of simulated compute per checkpoint beyond those at "
            f"{longest['interval_s'] * 1000:g} ms, against C = {gaps['checkpoint_sim_s'].iloc[0] * 1000:.3f} ms of "
            f"blocking. The simulator has one step time ({gaps['step_time_sim_s'].iloc[0] * 1000:.3f} ms); with the "
            f"step time of each interval's own calibration runs, its wall time is {pct('wall_step_here_rel_error')} "
            f"from live (against {', '.join(f'{v:.1%}' for v in table['wall_rel_error'])}). It also has no term for "
            f"SIGKILL to exit and the exit after done: {ms('not_simulated_live_s', 1)} s per run live."
        ),
        (
            "Lost work per interruption: the live losses are spread wider than the simulated on both sides, which the "
            f"KS test sees though the means agree within {table['lost_per_interruption_rel_error'].max():.1%}. Low "
            f"side: (0, τ/4) holds {pct('below_quarter_live')} live vs {pct('below_quarter_sim')} simulated, because "
            f"the kill leaves {ms('unreported_live_s')} ms of compute unreported (K × the harness's kill latency and "
            f"the job's last step); counted, {pct('below_quarter_clock')}. High side: past τ + 2 steps "
            f"{pct('past_interval_clock')} live (counted) vs {pct('past_interval_sim')} simulated: the simulator holds "
            f"every checkpoint's persist at {gaps['persist_sim_s'].iloc[0] * 1000:.2f} ms while live ones have p99 "
            f"{ms('persist_p99_live_s')} ms and max {ms('persist_max_live_s')} ms, so "
            f"{pct('beyond_sim_window_live')} of live losses exceed anything the simulator can lose."
        ),
        (
            f"Lost work per run = preemptions × lost per interruption: preemptions per run live ÷ simulated "
            f"{', '.join(f'{g.preemptions_live / g.preemptions_sim:.3f}' for g in gaps.itertuples())} (they follow the "
            f"wall time: a longer run is up longer at λ = {design.rate:g}/h), lifetime overshoot "
            f"{ms('overshoot_live_s')} ms, killed while restarting {pct('zero_loss_live')} live vs "
            f"{pct('zero_loss_sim')}."
        ),
    ]


def _wall_gap(g: dict, t: dict) -> str:
    parts = ", ".join(
        f"{name.replace('_', ' ')} {g[f'{name}_live_s'] - g[f'{name}_sim_s']:+.3f}" for name in WALL_PARTS
    )
    return (
        f"wall live − simulated {g['wall_live_s'] - g['wall_sim_s']:+.3f} s per run ({t['wall_rel_error']:.1%}) = "
        f"{parts} s. Step time {g['step_time_live_s'] * 1000:.3f} ms live vs {g['step_time_sim_s'] * 1000:.3f} "
        f"calibrated ({g['step_time_here_s'] * 1000:.3f} in the {g['calibration_runs_here']} calibration runs at this "
        f"interval; simulated with that step time, the wall is {g['wall_step_here_rel_error']:.1%} from live). "
        f"Preemptions per run {g['preemptions_live']:.2f} vs {g['preemptions_sim']:.2f}; restart overhead R "
        f"{g['restart_live_s']:.3f} vs {g['restart_sim_s']:.3f} s; C {g['checkpoint_live_s'] * 1000:.3f} vs "
        f"{g['checkpoint_sim_s'] * 1000:.3f} ms; not simulated (SIGKILL to exit, exit after done) "
        f"{g['not_simulated_live_s']:.3f} s."
    )


def _lost_gap(g: dict, t: dict) -> str:
    sim_mean = t["sim_lost_per_interruption_s"]
    return (
        f"lost per run live ÷ simulated {t['live_lost_s'] / t['sim_lost_s']:.3f} = preemptions "
        f"{g['preemptions_live'] / g['preemptions_sim']:.3f} × lost per interruption "
        f"{t['live_lost_per_interruption_s'] / sim_mean:.3f}. Per interruption: compute after the last step event "
        f"(unreported) {g['unreported_live_s'] * 1000:.2f} ms = {g['unreported_live_s'] / sim_mean:.1%} of the "
        f"simulated mean (counted, the mean is {t['clock_lost_per_interruption_rel_error']:.1%} off and KS p = "
        f"{t['clock_ks_p']:.3g}); lifetime overshoot {g['overshoot_live_s'] * 1000:.2f} ms; no loss (killed "
        f"restarting) {g['zero_loss_live']:.1%} live vs {g['zero_loss_sim']:.1%}; losses past τ + 2 steps (the "
        f"checkpoint before still persisting) {g['past_interval_live']:.1%} vs {g['past_interval_sim']:.1%}; persist "
        "per checkpoint p50 "
        f"{g['persist_p50_live_s'] * 1000:.2f}, p99 {g['persist_p99_live_s'] * 1000:.2f}, max "
        f"{g['persist_max_live_s'] * 1000:.1f} ms live vs {g['persist_sim_s'] * 1000:.2f} ms for every checkpoint "
        f"simulated, so {g['beyond_sim_window_live']:.1%} of live losses exceed the most the simulator can lose "
        "(τ + C + persist)."
    )


def markdown(
    design: Design,
    table: pd.DataFrame,
    gaps: pd.DataFrame,
    runs: pd.DataFrame,
    calibration: Calibration,
    context: dict,
    verdicts: list[str],
) -> str:
    shown = table[
        [
            "interval_s",
            "real_interval_s",
            "bound_ratio",
            "live_runs",
            "live_interruptions",
            "live_wall_s",
            "live_wall_stderr",
            "sim_wall_s",
            "wall_rel_error",
            "live_lost_s",
            "live_lost_stderr",
            "sim_lost_s",
            "lost_rel_error",
            "live_lost_per_interruption_s",
            "live_lost_per_interruption_stderr",
            "sim_lost_per_interruption_s",
            "lost_per_interruption_rel_error",
            "ks_statistic",
            "ks_p",
        ]
    ]
    parts = [f"{p}_{side}_s" for p in WALL_PARTS for side in ("live", "sim")]
    return "\n".join(
        [
            "# Simulator against live runs (phase-aware clock)",
            "",
            *setting_lines(design, table, runs, context),
            "",
            "## Calibration (medians of the calibration runs, simulated seconds)",
            "",
            md_table(pd.DataFrame([asdict(calibration)]), ".5g"),
            "",
            "## Results",
            "",
            md_table(shown),
            "",
            *[f"- {line}" for line in verdicts],
            "",
            "## Gaps, measured",
            "",
            *[f"- {line}" for line in conclusions(gaps, table, design)],
            "",
            "Each side's wall time split into components (simulated s per run; live from the clock's phases):",
            "",
            md_table(gaps[["interval_s", *parts]]),
            "",
            GAP_LEGEND,
            "",
            md_table(gaps.drop(columns=parts)),
            "",
            *[f"- {line}" for line in explain(gaps, table)],
            "",
            "Lost work on the clock (the summary's, plus the unreported compute) against the simulator:",
            "",
            md_table(
                table[
                    [
                        "interval_s",
                        "live_clock_lost_s",
                        "sim_lost_s",
                        "clock_lost_rel_error",
                        "live_clock_lost_per_interruption_s",
                        "sim_lost_per_interruption_s",
                        "clock_lost_per_interruption_rel_error",
                        "clock_ks_statistic",
                        "clock_ks_p",
                    ]
                ]
            ),
            "",
        ]
    )


def setting_lines(design: Design, table: pd.DataFrame, runs: pd.DataFrame, context: dict) -> list[str]:
    """The command, the machine and the design, as the report's opening lines."""
    pilot, (before, after) = context["pilot"], context["load"]
    job = f"{' '.join(design.command()[:3])} {Path(design.command()[4]).relative_to(REPO_ROOT)}"
    bound = ", ".join(
        f"{t * 1000:g} ms: {r:.2f}×" for t, r in zip(table["interval_s"], table["bound_ratio"], strict=True)
    )
    load = runs["load_1min"]
    if context["from_runs"]:
        command = context["command"].split(" --from-runs")[0]
        took = f"re-analysed from the runs recorded in {context['from_runs']} (`{context['command']}`)"
    else:
        command = context["command"]
        took = f"{context['minutes']:.1f} min in all; load average {before[0]:.2f} before, {after[0]:.2f} after"
    return [
        f"Command: `{command}`  ",
        f"Machine: {os.cpu_count()} cores (shared), {platform.platform()}, Python {platform.python_version()}.  ",
        (
            f"Runs: {len(runs)} one at a time, {runs['wall_s'].sum() / 60:.1f} min of real run time; load average "
            f"(1 min) at each run's end {load.mean():.2f} on average ({load.min():.2f}–{load.max():.2f}); {took}.  "
        ),
        f"Buckets: file:// under {context['bucket_root'] or tempfile.gettempdir()}.",
        "",
        "## Design",
        "",
        (
            f"- Job: `{job}`, {design.steps:,} steps, step events every {design.step_event_s * 1000:g} ms real (what "
            "lost work is measured to); SIGKILL preemptions (no notice: the work since the last durable checkpoint is "
            "lost)."
        ),
        (
            f"- K = {design.k:g}; λ = {design.rate:g}/h (M = {design.mean_uptime_s:g} simulated s); {design.runs} live "
            "runs per interval, one at a time, intervals in rotating order."
        ),
        (
            f"- Intervals: Daly's interval for the pilot's C = {pilot['checkpoint_s'] * 1000:.3f} ms and M = "
            f"{design.mean_uptime_s:g} s is {pilot['daly_s'] * 1000:.1f} ms; × "
            f"{', '.join(f'{m:g}' for m in design.multipliers)} → "
            f"{', '.join(f'{t * 1000:g}' for t in table['interval_s'])} ms (simulated)."
        ),
        (
            f"- Bound on K (real interval ≥ {MIN_INTERVAL_OVER_SAVE:g} × (C + persist), calibrated): real interval ÷ "
            f"bound = {bound}; below 1× the bound is broken (the harness warns)."
        ),
        (
            f"- Simulator: {design.trials:,} trajectories per interval, calibrated only on "
            f"{(runs['role'] == 'calibration').sum()} separate calibration runs (seeds from {CALIBRATION_SEED:,}; "
            f"{PILOT_RUNS} pilot runs at {design.pilot_interval_s * 1000:g} ms, the rest at the intervals, spread "
            "among the live runs)."
        ),
    ]


def md_table(frame: pd.DataFrame, fmt: str = ".4g") -> str:
    """A Markdown table (pandas' own needs the optional tabulate)."""

    def cell(v: object) -> str:
        return format(v, fmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def plot(table: pd.DataFrame, interruptions: pd.DataFrame, outcome: Outcome, design: Design, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [
        ("live_wall_s", "live_wall_stderr", "sim_wall_s", "wall time per run (simulated s)"),
        ("live_lost_s", "live_lost_stderr", "sim_lost_s", "lost work per run (simulated s)"),
    ]
    for ax, (live, err, sim, label) in zip(axes, panels, strict=False):
        ax.errorbar(table["interval_s"], table[live], yerr=table[err], fmt="o", capsize=3, label="live (mean ± s.e.)")
        ax.plot(table["interval_s"], table[sim], "s--", label="simulated, calibrated on other runs")
        ax.set_xscale("log")
        ax.set_xlabel("checkpoint interval (simulated s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax = axes[2]
    for i, row in enumerate(table.to_dict("records")):
        tau = row["interval_s"]
        live = np.sort(
            interruptions.loc[
                (interruptions["role"] == "live") & (interruptions["interval_s"] == tau), "lost_s"
            ].to_numpy()
        )
        sim = np.sort(outcome.losses_s[i])
        color = f"C{i}"
        ax.step(
            live / tau,
            np.arange(1, live.size + 1) / live.size,
            where="post",
            color=color,
            label=f"{tau * 1000:g} ms: KS p = {row['ks_p']:.2g}",
        )
        ax.plot(sim / tau, np.arange(1, sim.size + 1) / sim.size, "--", color=color, alpha=0.7)
    ax.set_xlabel("lost work per interruption ÷ τ (solid live, dashed simulated)")
    ax.set_ylabel("cumulative share")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"watched_loop, λ = {design.rate:g}/h, SIGKILL, K = {design.k:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
