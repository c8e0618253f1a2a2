"""spotsim from Python: :func:`verify` and :func:`run`, the two harness commands as functions.

Each takes the training command as a list of arguments and the command line's options, with the command
line's defaults, as keyword arguments; durations are seconds (a number) or strings such as ``"90s"`` or
``"5m"``. Each returns a typed result instead of an exit status, and raises a
:class:`~spotsim.errors.SpotsimError` for a bad option or a check that cannot run; nothing here exits the
process. ``spotsim/__init__.py`` imports this module only on first use, so a training job's
``import spotsim`` never loads the harness.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spotsim.cost import load_prices
from spotsim.cost.prices import DEFAULT_MACHINE
from spotsim.durations import parse_duration
from spotsim.errors import InvalidOption, SpotsimError
from spotsim.harness.config import RunConfig
from spotsim.harness.live import run_live
from spotsim.harness.summary import RunSummary
from spotsim.harness.verdict import Kill, Resume, RunCheck, Verdict
from spotsim.harness.verify import VerifyConfig
from spotsim.harness.verify import verify as verify_job
from spotsim.preemption import KillMode, parse_schedule
from spotsim.preemption.providers import parse_provider
from spotsim.storage.faults import FaultSpec

log = logging.getLogger(__name__)

Command = Sequence[str | os.PathLike[str]]
Duration = float | str


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found, and where it kept every run (``out``, with ``verdict.json``)."""

    verdict: Verdict
    out: Path

    @property
    def outcome(self) -> str:
        """``"pass"``, ``"fail"`` or ``"inconclusive"``."""
        return self.verdict.outcome

    @property
    def resume_correct(self) -> bool:
        """Every preempted run resumed from a checkpoint and ended bit for bit like the reference."""
        return self.verdict.resume_correct

    @property
    def inconclusive(self) -> bool:
        """No resume was really tested in some run (no kill landed, or nothing to resume from)."""
        return self.verdict.inconclusive

    @property
    def exit_code(self) -> int:
        """What ``spotsim verify`` would exit with: 0 pass, 1 fail, 3 inconclusive."""
        return self.verdict.exit_code

    @property
    def runs(self) -> tuple[RunCheck, ...]:
        """Each preempted run's check, in order."""
        return tuple(self.verdict.checks)

    @property
    def kills(self) -> tuple[Kill, ...]:
        """The kills that landed, across all runs."""
        return tuple(k for check in self.verdict.checks for k in check.kills)

    @property
    def resumes(self) -> tuple[Resume, ...]:
        """The attempts that started from a checkpoint, across all runs."""
        return tuple(r for check in self.verdict.checks for r in check.resumes)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the verdict is not a pass, one line each; empty when it passes."""
        lines = [*self.verdict.reference_failures, *self.verdict.reference_inconclusive]
        for check in self.verdict.checks:
            difference = [check.difference.describe()] if check.difference is not None else []
            notes = [*check.failures, *difference, *check.diagnosis, *check.inconclusive]
            lines += [f"{check.name}: {note}" for note in notes]
        return tuple(lines)

    def __repr__(self) -> str:  # what a failing ``assert result.resume_correct`` shows
        return f"VerifyResult(outcome={self.outcome!r}, out={str(self.out)!r}, reasons={list(self.reasons)!r})"


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` measured (``summary``; ``summary.to_dict()`` is ``summary.json``) and where it wrote it
    (``out``)."""

    summary: RunSummary
    out: Path
    crash: SpotsimError | None  # why the run gave up after ``max_crashes`` crashes (a JobCrashed), or None

    @property
    def completed(self) -> bool:
        return self.summary.accounting.completed

    @property
    def final_step(self) -> int:
        return self.summary.accounting.final_step

    @property
    def preemptions(self) -> int:
        return self.summary.accounting.preemptions

    @property
    def lost_steps(self) -> int:
        """Steps computed again after interruptions (the summary's lost work)."""
        return self.summary.accounting.lost_steps


def verify(
    command: Command,
    *,
    out: str | os.PathLike[str] | None = None,
    preemptions: int = 3,
    kills_per_run: int = 2,
    kill: str = "sigkill",
    interval: Duration | None = None,
    interval_steps: int | None = None,
    provider: str = "gcp-spot",
    notice: Duration | None = None,
    grace: Duration | None = None,
    seed: int = 0,
    kill_steps: str | Sequence[str] | None = None,
    artifact: str | None = None,
    bucket: str | None = None,
    emulator_url: str | None = None,
    attempt_timeout: Duration | None = None,
    local_disk: str = "wipe",
) -> VerifyResult:
    """Prove ``command`` resumes bit-exactly, as ``spotsim verify`` does; the options are its options.

    Args:
        command: the training command, e.g. ``["python", "train.py"]``.
        out: where every run, its events and ``verdict.json`` are kept; default: a new directory from
            :func:`tempfile.mkdtemp` (``$TMPDIR/spotsim-verify-out-*``), kept afterwards (see ``result.out``).
        interval: the checkpoint interval in real seconds; with ``interval_steps`` also None, chosen so the
            reference run makes two checkpoints or more.
        kill_steps: one run's kill points (``"120,480:save"``), or one such string per run, instead of drawn ones.
        emulator_url: a running GCS emulator (``http://127.0.0.1:PORT``) to checkpoint on, instead of starting
            one; a fresh prefix of its ``spotsim-verify`` bucket per run. Not with ``bucket``.

    Returns:
        The verdict, with ``resume_correct``, ``inconclusive``, the runs, kills and resumes.

    Raises:
        InvalidOption: a bad option, or a command that cannot be found.
        VerifySetupError: the reference run failed, or left nothing to compare.
        EmulatorError: the emulator could not be started or reached.
    """
    config = VerifyConfig(
        command=_command(command),
        out=Path(),
        runs=preemptions,
        kills_per_run=kills_per_run,
        kill=KillMode.parse(kill),
        seed=seed,
        artifact=artifact,
        bucket=bucket,
        interval_s=_seconds(interval, "interval"),
        interval_steps=interval_steps,
        provider=_provider(provider, notice, grace, None),
        kill_plans=(kill_steps,) if isinstance(kill_steps, str) else tuple(kill_steps or ()),
        attempt_timeout_s=_seconds(attempt_timeout, "attempt_timeout"),
        local_disk=local_disk,
        emulator_url=emulator_url,
    )
    config = dataclasses.replace(config, out=_out(out, "spotsim-verify-out-"))  # made only once the options are valid

    def on_run(name: str) -> None:
        log.info("verify %s: running %s", config.out, name)

    verdict = verify_job(config, load_prices().machine(DEFAULT_MACHINE), on_run=on_run)
    return VerifyResult(verdict, config.out)


def run(
    command: Command,
    *,
    interval: Duration | None = None,
    interval_steps: int | None = None,
    preempt_rate: float = 0.0,
    schedule: str = "poisson",
    trace_invert: bool = False,
    kill: str = "sigterm",
    provider: str = "gcp-spot",
    notice: Duration | None = None,
    grace: Duration | None = None,
    rebalance_lead: Duration | None = None,
    restart_delay: Duration = 0.0,
    time_scale: float = 1.0,
    work: Duration | None = None,
    steps: int | None = None,
    startup: Duration | None = None,
    seed: int = 0,
    max_preemptions: int | None = None,
    max_crashes: int = 3,
    attempt_timeout: Duration | None = None,
    local_disk: str = "wipe",
    bucket: str | None = None,
    storage_faults: str | None = None,
    machine: str = DEFAULT_MACHINE,
    prices: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Run ``command`` under preemptions and measure what they cost, as ``spotsim run`` does.

    Durations are simulated seconds; give ``interval`` and/or ``interval_steps``. Training compute runs at
    ``time_scale`` K simulated seconds per real second, or at the K that makes the job stand for ``work``
    (measured first; needs ``steps``, the command's steps in all); start-up (or ``startup``), checkpoint
    blocking and exits count at their real duration. ``out`` receives ``events.jsonl``, ``summary.json`` and
    ``timeline.png``; default: a new directory from :func:`tempfile.mkdtemp` (``$TMPDIR/spotsim-run-*``), kept
    afterwards. ``provider`` sets the preemption timeline (``notice``, ``grace``, ``rebalance_lead`` override it);
    ``storage_faults`` (a profile or spec, as ``--storage-faults``) puts a fault proxy before the embedded bucket.

    Returns:
        The summary. A job that crashed ``max_crashes`` times is a result with ``crash`` set, not an error.

    Raises:
        InvalidOption: a bad option (``InvalidSchedule``, ``UnknownMachine`` among them), an unwritable
            bucket, or a schedule under which no attempt lives long enough to compute a step.
    """
    config = RunConfig(
        command=_command(command),
        out=Path(),
        schedule=parse_schedule(schedule, preempt_rate, trace_invert=trace_invert),
        interval_s=_seconds(interval, "interval"),
        interval_steps=interval_steps,
        kill=KillMode.parse(kill),
        provider=_provider(provider, notice, grace, rebalance_lead),
        restart_delay_s=_seconds(restart_delay, "restart_delay") or 0.0,
        time_scale=time_scale,
        work_s=_seconds(work, "work"),
        total_steps=steps,
        startup_s=_seconds(startup, "startup"),
        seed=seed,
        max_preemptions=max_preemptions,
        max_crashes=max_crashes,
        attempt_timeout_s=_seconds(attempt_timeout, "attempt_timeout"),
        local_disk=local_disk,
    )
    chosen = load_prices(prices).machine(machine)
    config = dataclasses.replace(config, out=_out(out, "spotsim-run-"))
    faults = FaultSpec.parse(storage_faults) if storage_faults is not None else None
    outcome = run_live(config, chosen, bucket=bucket, storage_faults=faults)
    if outcome.interrupted:
        raise KeyboardInterrupt
    if outcome.gave_up:
        raise InvalidOption(f"{outcome.gave_up} (summary in {outcome.out / 'summary.json'})")
    return RunResult(outcome.summary, outcome.out, outcome.crash)


def _command(command: Command) -> tuple[str, ...]:
    """The command as argv strings; a single string is refused (it would be split into characters)."""
    if isinstance(command, (str, bytes)) or not command:
        raise InvalidOption(f"the command is a non-empty list of arguments (['python', 'train.py']), got {command!r}")
    try:
        return tuple(os.fspath(part) for part in command)
    except TypeError:
        raise InvalidOption(f"every part of the command must be a string or a path, got {command!r}") from None


def _provider(name: str, notice: Duration | None, grace: Duration | None, rebalance_lead: Duration | None):
    return parse_provider(
        name,
        notice_s=_seconds(notice, "notice"),
        grace_s=_seconds(grace, "grace"),
        rebalance_lead_s=_seconds(rebalance_lead, "rebalance_lead"),
    )


def _seconds(value: Duration | None, what: str) -> float | None:
    """Seconds from a number or from ``"90"``, ``"90s"``, ``"15m"``, ``"2h"``; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_duration(value, what)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f"{what} must be seconds or a duration such as '90s', got {value!r}")
    return float(value)


def _out(out: str | os.PathLike[str] | None, prefix: str) -> Path:
    return Path(out).absolute() if out is not None else Path(tempfile.mkdtemp(prefix=prefix))
