"""``spotsim sweep``: live ``spotsim run``s over a grid, run in parallel, gathered into one tidy table.

Each grid point (interval × preempt rate × kill mode × repeat) is a separate
``spotsim run`` process with its own emulator, output directory and seed, so
runs share nothing but the machine. The table has one row per run: its
parameters, then every scalar field of its ``summary.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from spotsim.errors import InvalidOption, SpotsimError


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
    grace: str = "30s"
    restart_delay: str = "0"
    machine: str | None = None
    parallel: int = os.cpu_count() or 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.intervals_s or not self.rates or not self.kills:
            raise InvalidOption("a sweep needs at least one interval, one rate and one kill mode")
        if self.repeats < 1 or self.parallel < 1:
            raise InvalidOption("--repeats and --parallel must be at least 1")

    def grid(self) -> list[GridPoint]:
        return [
            GridPoint(i, r, k, n)
            for i, r, k, n in itertools.product(self.intervals_s, self.rates, self.kills, range(self.repeats))
        ]


class SweepRunFailed(SpotsimError):
    """A run of the sweep could not be carried out (bad settings, unreachable bucket…)."""


def run_sweep(config: SweepConfig, *, on_done: Callable[[GridPoint, dict], None] = lambda p, s: None) -> pd.DataFrame:
    """Run the grid, ``config.parallel`` runs at a time; return the tidy table (also written as CSV and Parquet)."""
    points = config.grid()
    rows = []
    with ThreadPoolExecutor(max_workers=config.parallel) as pool:
        futures = {pool.submit(_one_run, config, point, i): point for i, point in enumerate(points)}
        for future in as_completed(futures):
            point = futures[future]
            summary = future.result()
            on_done(point, summary)
            rows.append(_row(point, summary))
    table = pd.DataFrame(rows).sort_values(["preempt_rate", "kill", "interval_s", "repeat"]).reset_index(drop=True)
    table.to_csv(config.out / "sweep.csv", index=False)
    table.to_parquet(config.out / "sweep.parquet", index=False)
    return table


def _one_run(config: SweepConfig, point: GridPoint, index: int) -> dict:
    out = config.out / "runs" / point.name
    cmd = [
        sys.executable, "-m", "spotsim.cli", "run", "--interval", f"{point.interval_s:g}",
        "--preempt-rate", f"{point.preempt_rate:g}", "--kill", point.kill, "--grace", config.grace,
        "--restart-delay", config.restart_delay, "--time-scale", f"{config.time_scale:g}",
        "--seed", str(config.seed * 100_003 + index), "--out", str(out),
        *(["--machine", config.machine] if config.machine else []), *config.job_args,
    ]  # fmt: skip
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    summary_path = out / "summary.json"
    if done.returncode == 2 or not summary_path.exists():
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        raise SweepRunFailed(f"run {point.name} failed: {reason}")
    return json.loads(summary_path.read_text())


def _row(point: GridPoint, summary: dict) -> dict:
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"run": point.name, "interval_s": point.interval_s, "preempt_rate": point.preempt_rate,
            "kill": point.kill, "repeat": point.repeat, **scalars}  # fmt: skip
