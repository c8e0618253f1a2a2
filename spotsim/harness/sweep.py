"""``spotsim sweep``: live runs over a grid, run in parallel, gathered into one tidy table.

Each grid point (interval × preempt rate × kill mode × repeat) is one run, built
as a :class:`RunConfig` (:meth:`SweepConfig.run_config`), written as JSON into
its own directory and run by :mod:`spotsim.harness.sweep_run` in a process of its
own, with its own emulator and seed, so runs share nothing but the machine. The
table has one row per run: its parameters, then every scalar field of its
``summary.json``.

Where the runs are carried out is a :class:`RunPool`: :class:`LocalPool` runs
``--parallel`` of them at a time on this machine; ``RayPool``
(:mod:`spotsim.harness.ray_pool`, ``--ray``) makes each one a Ray task. Both
carry out a run with :func:`run_in_process` and hand back its summary as it
finishes; the table, plots and report are the same whichever ran them.

A run's directory is emptied before it starts, so a row never comes from an
earlier sweep; a run holds its directory's lock for as long as it lives, so a
retried run waits for an earlier attempt still ending its job. On Ctrl-C
or SIGTERM the running runs get SIGTERM (each ends its job and writes a partial
summary), runs not yet started are cancelled, and the table of the runs that
finished is written before the interrupt goes on. The runs also get SIGTERM if
the process that started them dies (parent-death signal).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
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
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from spotsim.clock import Scale
from spotsim.cost import load_prices
from spotsim.cost.prices import DEFAULT_MACHINE
from spotsim.errors import InvalidOption, SpotsimError
from spotsim.harness.config import RunConfig, check_command
from spotsim.harness.live import LOCK_NAME, measure_scale
from spotsim.harness.sweep_run import RUN_FILE
from spotsim.lifeline import die_with_parent
from spotsim.preemption import KillMode, parse_schedule
from spotsim.preemption.providers import DEFAULT_PROVIDER, PROVIDERS, Provider

log = logging.getLogger(__name__)
SEED_STRIDE = 100_003  # run i of a sweep seeded S draws from seed S × SEED_STRIDE + i
POLL_S = 0.2  # how often a run's process and a locked run directory are looked at


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
    nodes: int = 1  # each run a group of this many VMs (spotsim.harness.group)

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
            nodes=self.nodes,
        )

    def runs(self) -> list[SweepRun]:
        """The grid's runs, as a pool carries them out, each reserving a core per VM it emulates."""
        runs = []
        for index, point in enumerate(self.grid()):
            run = self.run_config(point, index)
            settings = {"machine": self.machine, "run": run.to_dict()}
            runs.append(SweepRun(point, settings, cpus=run.nodes))  # a multi-node run keeps a core per VM busy
        return runs

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
            nodes=self.nodes,
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


class SweepStopped(Exception):
    """A run not started, or ended early, because the sweep is stopping."""


@dataclass(frozen=True)
class SweepRun:
    """One run as a pool gets it, in plain values that travel to another process or machine (a Ray task).

    ``settings`` is what :mod:`spotsim.harness.sweep_run` reads from the run's ``run.json``.
    """

    point: GridPoint
    settings: dict[str, Any]
    cpus: int = 1  # cores the run keeps busy: one per VM it emulates

    @property
    def out(self) -> Path:
        return Path(self.settings["run"]["out"])


@dataclass(frozen=True)
class Finished:
    """A run that finished: its grid point and its summary (``summary.json``'s contents)."""

    point: GridPoint
    summary: dict[str, Any]
    retries: int = 0  # attempts lost before this one with the worker or node running them (Ray)


class RunPool(abc.ABC):
    """Where a sweep's runs are carried out, each by :func:`run_in_process`; summaries come back as runs finish.

    Lifecycle: ``with pool:`` acquires what the pool needs (threads, a Ray runtime); :meth:`run` yields a
    :class:`Finished` per run in the order they finish; leaving the ``with`` block, or :meth:`close`, ends it:
    runs under way get SIGTERM (each ends its job and writes a partial summary), runs not started are
    cancelled, and what the pool holds is released.
    """

    def __enter__(self) -> RunPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abc.abstractmethod
    def run(self, runs: Sequence[SweepRun]) -> Iterator[Finished]:
        """Carry out ``runs``; each one's summary as it finishes.

        Raises:
            SweepRunFailed: a run could not be carried out.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the runs under way, cancel the rest and release the pool; a second call does nothing."""


class LocalPool(RunPool):
    """Runs on this machine, keeping ``parallel`` cores busy (a ``--nodes`` run takes one per VM)."""

    def __init__(self, parallel: int) -> None:
        self._processes = RunProcesses()
        self._parallel = parallel
        self._threads: ThreadPoolExecutor | None = None

    def run(self, runs: Sequence[SweepRun]) -> Iterator[Finished]:
        per_run = max((run.cpus for run in runs), default=1)
        self._threads = ThreadPoolExecutor(max_workers=max(1, self._parallel // per_run))
        futures = {self._threads.submit(run_in_process, run, self._processes): run for run in runs}
        for future in as_completed(futures):
            yield Finished(futures[future].point, future.result())

    def close(self) -> None:
        self._processes.stop()
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)


class RunProcesses:
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


def run_sweep(
    config: SweepConfig,
    *,
    pool: RunPool | None = None,
    on_done: Callable[[GridPoint, dict], None] = lambda p, s: None,
) -> pd.DataFrame:
    """Run the grid in ``pool``, which the caller has entered and will leave (default: a :class:`LocalPool` of
    ``config.parallel`` runs at a time, entered and left here); return the tidy table (also written as CSV
    and Parquet).

    Raises:
        KeyboardInterrupt: after stopping the runs and writing the table of those that finished.
        SweepRunFailed: a run could not be carried out; the others are stopped.
        InvalidOption: the command cannot be found, or K cannot be chosen for ``work_s``.
    """
    check_command(config.command)  # before anything of an earlier sweep is touched
    if config.needs_scale:
        config = measured_scale(config)
    rows: list[dict] = []
    with contextlib.ExitStack() as owned:
        runs = pool if pool is not None else owned.enter_context(LocalPool(config.parallel))
        reports = [config.out / name for name in ("sweep.csv", "sweep.parquet", "simulated.csv", "report.md")]
        for stale in [*reports, *config.out.glob("*_vs_interval.png")]:
            stale.unlink(missing_ok=True)  # an earlier sweep's report must not sit beside this one
        try:
            for done in runs.run(config.runs()):
                on_done(done.point, done.summary)
                rows.append(_row(done))
        except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), a failed run: stop the rest, keep what finished
            runs.close()
            _write_table(rows, config.out)
            raise
    return _write_table(rows, config.out)


def _write_table(rows: list[dict], out: Path) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    if rows:
        table = table.sort_values(["preempt_rate", "kill", "interval_s", "repeat"]).reset_index(drop=True)
    table.to_csv(out / "sweep.csv", index=False)
    table.to_parquet(out / "sweep.parquet", index=False)
    return table


def run_in_process(run: SweepRun, processes: RunProcesses) -> dict[str, Any]:
    """Carry out ``run`` as ``python -m spotsim.harness.sweep_run`` in its emptied directory; return its summary.

    Raises:
        SweepRunFailed: the run could not be carried out (exit status 2, or no summary).
        SweepStopped: the sweep is stopping (the run was not started, or it was interrupted).
    """
    _empty_when_free(run.out, processes)
    settings = run.out / RUN_FILE
    settings.write_text(json.dumps(run.settings, indent=2) + "\n")
    process = processes.start([sys.executable, "-m", "spotsim.harness.sweep_run", str(settings)])
    try:
        stderr = _wait(process)
    finally:
        processes.finished(process)
    summary_path = run.out / "summary.json"
    if process.returncode == 130:
        raise SweepStopped
    if process.returncode == 2 or not summary_path.exists():
        reason = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {process.returncode}"
        raise SweepRunFailed(f"run {run.point.name} failed: {reason}")
    return json.loads(summary_path.read_text())


def _empty_when_free(out: Path, processes: RunProcesses) -> None:
    """Empty the run's directory once no process holds it (a run holds its directory's lock while it lives).

    A summary left by an earlier sweep must never become a row, nor one left by an earlier attempt of the
    same run: a Ray task retried while the process of its lost attempt is still ending its job waits here.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if processes.stopping:
                    raise SweepStopped from None
                time.sleep(POLL_S)
        for entry in out.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _wait(process: subprocess.Popen) -> str:
    """The run's stderr, once it exits. Polled, so that an interrupt in this thread (a cancelled Ray task)
    gets in between polls: the run then gets SIGTERM, as :meth:`RunProcesses.stop` sends, and is waited for."""
    try:
        while True:
            try:
                return process.communicate(timeout=POLL_S)[1]
            except subprocess.TimeoutExpired:
                continue
    except BaseException:
        process.send_signal(signal.SIGTERM)
        process.communicate()
        raise


def _row(done: Finished) -> dict:
    point, summary = done.point, done.summary
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {
        "run": point.name,
        "interval_s": point.interval_s,
        "preempt_rate": point.preempt_rate,
        "kill": point.kill,
        "repeat": point.repeat,
        "retries": done.retries,
        **scalars,
    }
