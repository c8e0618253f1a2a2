"""``spotsim sweep``: live ``spotsim run``s over a grid, run in parallel, gathered into one tidy table.

Each grid point (interval × preempt rate × kill mode × repeat) is a separate
``spotsim run`` process with its own emulator, output directory and seed, so
runs share nothing but the machine. The table has one row per run: its
parameters, then every scalar field of its ``summary.json``.

A run's directory is emptied before it starts, so a row never comes from an
earlier sweep. On Ctrl-C or SIGTERM the running runs get SIGTERM (each ends
its job and writes a partial summary), runs not yet started are cancelled, and
the table of the runs that finished is written before the interrupt goes on.
The runs also get SIGTERM if the sweep itself dies (parent-death signal).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spotsim.errors import InvalidOption, SpotsimError
from spotsim.lifeline import die_with_parent


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
    job_args: tuple[str, ...]  # `spotsim run` arguments choosing the job: --workload … or -- CMD …
    out: Path
    intervals_s: tuple[float, ...]
    rates: tuple[float, ...]
    kills: tuple[str, ...] = ("sigkill",)
    repeats: int = 3
    time_scale: float = 1.0
    provider_args: tuple[str, ...] = ()  # `spotsim run` options choosing the preemption timeline
    restart_delay: str = "0"
    machine: str | None = None
    parallel: int = os.cpu_count() or 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.intervals_s or not self.rates or not self.kills:
            raise InvalidOption("a sweep needs at least one interval, one rate and one kill mode")
        if self.repeats < 1 or self.parallel < 1:
            raise InvalidOption("--repeats and --parallel must be at least 1")
        if self.seed < 0:
            raise InvalidOption(f"--seed must be ≥ 0, got {self.seed}")

    def grid(self) -> list[GridPoint]:
        return [
            GridPoint(i, r, k, n)
            for i, r, k, n in itertools.product(self.intervals_s, self.rates, self.kills, range(self.repeats))
        ]


class SweepRunFailed(SpotsimError):
    """A run of the sweep could not be carried out (bad settings, unreachable bucket…)."""


class _Runs:
    """The ``spotsim run`` processes under way, so an interrupt or a failure can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, cmd: list[str]) -> subprocess.Popen:
        with self._lock:
            if self.stopping:
                raise SweepStopped
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=die_with_parent(signal.SIGTERM),  # a run ends its job if the sweep dies
            )  # fmt: skip
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
    """
    for stale in ("sweep.csv", "sweep.parquet", "simulated.csv", "report.md", *config.out.glob("*_vs_interval.png")):
        (config.out / stale).unlink(missing_ok=True)  # an earlier sweep's report must not sit beside this one
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
    out = config.out / "runs" / point.name
    shutil.rmtree(out, ignore_errors=True)  # a summary left by an earlier sweep must never become a row
    cmd = [
        sys.executable, "-m", "spotsim.cli", "run", "--interval", f"{point.interval_s:g}",
        "--preempt-rate", f"{point.preempt_rate:g}", "--kill", point.kill, *config.provider_args,
        "--restart-delay", config.restart_delay, "--time-scale", f"{config.time_scale:g}",
        "--seed", str(config.seed * 100_003 + index), "--out", str(out),
        *(["--machine", config.machine] if config.machine else []), *config.job_args,
    ]  # fmt: skip
    process = runs.start(cmd)
    try:
        _, stderr = process.communicate()
    finally:
        runs.finished(process)
    summary_path = out / "summary.json"
    if process.returncode == 130:
        raise SweepStopped
    if process.returncode == 2 or not summary_path.exists():
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {process.returncode}"
        raise SweepRunFailed(f"run {point.name} failed: {reason}")
    return json.loads(summary_path.read_text())


def _row(point: GridPoint, summary: dict) -> dict:
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"run": point.name, "interval_s": point.interval_s, "preempt_rate": point.preempt_rate,
            "kill": point.kill, "repeat": point.repeat, **scalars}  # fmt: skip
