"""``spotsim sweep``: live runs over a grid, run in parallel, gathered into one tidy table.

Each grid point (interval × preempt rate × kill mode × repeat) is one run, built
as a :class:`RunConfig` (:meth:`SweepConfig.run_config`), written as JSON into
its own directory and run by :mod:`spotsim.harness.sweep_run` in a process of its
own, with its own emulator and seed, so runs share nothing but the machine. The
table has one row per run: its parameters, then every scalar field of its
``summary.json``.

A run's directory is emptied before it starts, so a row never comes from an
earlier sweep. On Ctrl-C or SIGTERM the running runs get SIGTERM (each ends
its job and writes a partial summary), runs not yet started are cancelled, and
the table of the runs that finished is written before the interrupt goes on.
The runs also get SIGTERM if the sweep itself dies (parent-death signal).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from spotsim.clock import Scale
from spotsim.cost import load_prices
from spotsim.cost.prices import DEFAULT_MACHINE
from spotsim.errors import InvalidOption, SpotsimError
from spotsim.harness.config import RunConfig, check_command
from spotsim.harness.live import measure_scale
from spotsim.harness.sweep_run import RUN_FILE
from spotsim.lifeline import die_with_parent
from spotsim.preemption import KillMode, parse_schedule
from spotsim.preemption.providers import DEFAULT_PROVIDER, PROVIDERS, Provider

log = logging.getLogger(__name__)
SEED_STRIDE = 100_003  # run i of a sweep seeded S draws from seed S × SEED_STRIDE + i


@dataclass(frozen=True)
class GridPoint:
    interval_s: float
    preempt_rate: float
    kill: str
    repeat: int

    @property
    def name(self) -> str:
        return f"i{self.interval_s:g}-r{self.preempt_rate:g}-{self.kill.replace(':', '')}-{self.repeat}"


@dataclass(frozen=True)
class SweepConfig:
    """One ``spotsim sweep``: the job, the grid, and what every run shares. Durations are simulated seconds."""

    command: tuple[str, ...]
    out: Path
    intervals_s: tuple[float, ...]
    rates: tuple[float, ...]  # preemptions per hour of VM uptime
    kills: tuple[str, ...] = ("sigkill",)  # as typed: each names its rows
    repeats: int = 3
    provider: Provider = PROVIDERS[DEFAULT_PROVIDER]
    restart_delay_s: float = 0.0
    time_scale: float = 1.0  # K for every run; with work_s, measured once (measured_scale)
    work_s: float | None = None
    total_steps: int | None = None
    steps_adjustable: bool = False  # a built-in workload without --steps: more steps may be run for work_s
    scale: Scale | None = None
    machine: str = DEFAULT_MACHINE
    parallel: int = os.cpu_count() or 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.intervals_s or not self.rates or not self.kills:
            raise InvalidOption("a sweep needs at least one interval, one rate and one kill mode")
        if not all(math.isfinite(i) and i > 0 for i in self.intervals_s):
            raise InvalidOption(
                f"--intervals must be durations > 0, got {', '.join(f'{i:g}' for i in self.intervals_s)}"
            )
        for rate in self.rates:
            parse_schedule("poisson", rate)  # finite and ≥ 0, said in one line
        for kill in self.kills:
            KillMode.parse(kill)
        if self.repeats < 1 or self.parallel < 1:
            raise InvalidOption("--repeats and --parallel must be at least 1")
        if self.seed < 0:
            raise InvalidOption(f"--seed must be ≥ 0, got {self.seed}")
        load_prices().machine(self.machine)
        if self.needs_scale:
            self.probe_config()  # checks --work against the shortest interval and the steps
        # What every run shares (K, restart delay, steps) is checked where each run's settings are built.
        self.run_config(self.grid()[0], 0)

    @property
    def needs_scale(self) -> bool:
        """K is still to be chosen from ``work_s`` by measuring the job."""
        return self.work_s is not None and self.scale is None

    def grid(self) -> list[GridPoint]:
        return [
            GridPoint(i, r, k, n)
            for i, r, k, n in itertools.product(self.intervals_s, self.rates, self.kills, range(self.repeats))
        ]

    def run_config(self, point: GridPoint, index: int) -> RunConfig:
        """The settings of the grid's run number ``index`` (under ``out/runs/<point.name>``)."""
        return RunConfig(
            command=self.command,
            out=self.out / "runs" / point.name,
            schedule=parse_schedule("poisson", point.preempt_rate),
            interval_s=point.interval_s,
            kill=KillMode.parse(point.kill),
            provider=self.provider,
            restart_delay_s=self.restart_delay_s,
            time_scale=self.time_scale,
            total_steps=self.total_steps,
            seed=self.seed * SEED_STRIDE + index,
        )

    def probe_config(self) -> RunConfig:
        """The settings the job is measured under to choose K for ``work_s``: against the shortest interval."""
        return RunConfig(
            command=self.command,
            out=self.out / "probe",
            schedule=parse_schedule("poisson", 0),
            interval_s=min(self.intervals_s),
            time_scale=self.time_scale,
            work_s=self.work_s,
            total_steps=self.total_steps,
            steps_adjustable=self.steps_adjustable,
        )

    def scaled(self, scale: Scale) -> SweepConfig:
        """Every run at K chosen for ``work_s`` (a built-in workload may run more steps for it)."""
        command = self.probe_config().with_scale(scale).command
        return replace(self, command=command, time_scale=scale.k, total_steps=scale.steps, scale=scale)


def measured_scale(config: SweepConfig) -> SweepConfig:
    """The sweep at the K its ``work_s`` needs, measured once so that every run shares it."""
    scale = measure_scale(config.probe_config())
    log.info("sweep %s: clock: %s", config.out, scale.note)
    return config.scaled(scale)


class SweepRunFailed(SpotsimError):
    """A run of the sweep could not be carried out (bad settings, unreachable bucket…)."""


class _Runs:
    """The runs' processes under way, so an interrupt or a failure can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str]) -> subprocess.Popen:
        with self._lock:
            if self.stopping:
                raise SweepStopped
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - a run ends its job if the sweep dies
            )
            self._running.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(process)

    def stop(self) -> None:
        with self._lock:
            self.stopping = True
            for process in self._running:
                process.send_signal(signal.SIGTERM)


class SweepStopped(Exception):
    """A run not started because the sweep is stopping."""


def run_sweep(config: SweepConfig, *, on_done: Callable[[GridPoint, dict], None] = lambda p, s: None) -> pd.DataFrame:
    """Run the grid, ``config.parallel`` runs at a time; return the tidy table (also written as CSV and Parquet).

    Raises:
        KeyboardInterrupt: after stopping the runs and writing the table of those that finished.
        SweepRunFailed: a run could not be carried out; the others are stopped.
        InvalidOption: the command cannot be found, or K cannot be chosen for ``work_s``.
    """
    check_command(config.command)  # before anything of an earlier sweep is touched
    if config.needs_scale:
        config = measured_scale(config)
    reports = [config.out / name for name in ("sweep.csv", "sweep.parquet", "simulated.csv", "report.md")]
    for stale in [*reports, *config.out.glob("*_vs_interval.png")]:
        stale.unlink(missing_ok=True)  # an earlier sweep's report must not sit beside this one
    rows: list[dict] = []
    runs = _Runs()
    pool = ThreadPoolExecutor(max_workers=config.parallel)
    futures = {pool.submit(_one_run, config, point, i, runs): point for i, point in enumerate(config.grid())}
    try:
        for future in as_completed(futures):
            point, summary = futures[future], future.result()
            on_done(point, summary)
            rows.append(_row(point, summary))
    except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt) or a failed run: stop the rest, keep what finished
        runs.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        _write_table(rows, config.out)
        raise
    pool.shutdown()
    return _write_table(rows, config.out)


def _write_table(rows: list[dict], out: Path) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    if rows:
        table = table.sort_values(["preempt_rate", "kill", "interval_s", "repeat"]).reset_index(drop=True)
    table.to_csv(out / "sweep.csv", index=False)
    table.to_parquet(out / "sweep.parquet", index=False)
    return table


def _one_run(config: SweepConfig, point: GridPoint, index: int, runs: _Runs) -> dict:
    run = config.run_config(point, index)
    shutil.rmtree(run.out, ignore_errors=True)  # a summary left by an earlier sweep must never become a row
    run.out.mkdir(parents=True)
    settings = run.out / RUN_FILE
    settings.write_text(json.dumps({"machine": config.machine, "run": run.to_dict()}, indent=2) + "\n")
    process = runs.start([sys.executable, "-m", "spotsim.harness.sweep_run", str(settings)])
    try:
        _, stderr = process.communicate()
    finally:
        runs.finished(process)
    summary_path = run.out / "summary.json"
    if process.returncode == 130:
        raise SweepStopped
    if process.returncode == 2 or not summary_path.exists():
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {process.returncode}"
        raise SweepRunFailed(f"run {point.name} failed: {reason}")
    return json.loads(summary_path.read_text())


def _row(point: GridPoint, summary: dict) -> dict:
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {
        "run": point.name,
        "interval_s": point.interval_s,
        "preempt_rate": point.preempt_rate,
        "kill": point.kill,
        "repeat": point.repeat,
        **scalars,
    }
