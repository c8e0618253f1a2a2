"""The settings of one live run, validated once, before anything starts."""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spotsim.clock import Clock, Scale
from spotsim.errors import InvalidOption
from spotsim.harness.torchrun import check_torchrun
from spotsim.preemption import KillMode, Schedule, Sigterm
from spotsim.preemption.providers import DEFAULT_PROVIDER, PROVIDERS, Provider
from spotsim.preemption.schedules import SCHEDULES

LOCAL_DISK_MODES = ("wipe", "keep")


@dataclass(frozen=True)
class RunConfig:
    """One ``spotsim run``. Durations are simulated seconds; ``time_scale`` K maps them to real ones."""

    command: tuple[str, ...]
    out: Path
    schedule: Schedule
    interval_s: float | None = None
    interval_steps: int | None = None
    kill: KillMode = field(default_factory=Sigterm)
    provider: Provider = PROVIDERS[DEFAULT_PROVIDER]  # the preemption timeline: notice, grace, hard stop
    restart_delay_s: float = 0.0
    time_scale: float = 1.0  # K; with work_s, the harness chooses it (with_scale) after measuring the job
    work_s: float | None = None  # simulated compute the job stands for (--work)
    startup_s: float | None = None  # simulated start-up charged per attempt in place of the measured one
    total_steps: int | None = None  # steps the job runs in all (built-in: its --steps; needed with --work)
    steps_adjustable: bool = False  # a built-in workload without --steps: the harness may run more steps
    scale: Scale | None = None  # how K was chosen from work_s, once the job was measured
    seed: int = 0
    max_preemptions: int | None = None
    max_crashes: int = 3
    attempt_timeout_s: float | None = None  # an attempt running longer is stopped and counted as a crash
    local_disk: str = "wipe"  # the VM's local disk between attempts: wiped (a new VM) or kept (a stopped one)
    step_event_interval_s: float = 0.05  # real seconds at most; lost work is measured to within this
    nodes: int = 1  # VMs of a data-parallel group, each a torchrun agent (spotsim.harness.group)

    def __post_init__(self) -> None:
        if not self.command:
            raise InvalidOption("no training command: give --workload NAME or -- CMD ARGS…")

        if self.interval_s is None and self.interval_steps is None:
            raise InvalidOption("give a checkpoint interval: --interval SECONDS and/or --interval-steps N")
        _check(
            self.interval_s is None or _positive(self.interval_s),
            f"--interval must be > 0 seconds, got {self.interval_s}",
        )
        _check(
            self.interval_steps is None or self.interval_steps >= 1,
            f"--interval-steps must be ≥ 1, got {self.interval_steps}",
        )
        _check(
            _positive(self.restart_delay_s) or self.restart_delay_s == 0,
            f"--restart-delay must be ≥ 0, got {self.restart_delay_s}",
        )
        _check(_positive(self.time_scale), f"--time-scale must be > 0, got {self.time_scale}")
        self._check_work()
        _check(self.max_preemptions is None or self.max_preemptions >= 0, "--max-preemptions must be ≥ 0")
        _check(self.max_crashes >= 1, f"--max-crashes must be ≥ 1, got {self.max_crashes}")
        _check(self.total_steps is None or self.total_steps >= 1, f"--steps must be ≥ 1, got {self.total_steps}")
        _check(self.seed >= 0, f"--seed must be ≥ 0, got {self.seed}")
        _check(
            self.attempt_timeout_s is None or _positive(self.attempt_timeout_s),
            f"--attempt-timeout must be > 0, got {self.attempt_timeout_s}",
        )
        _check(self.local_disk in LOCAL_DISK_MODES, f"--local-disk must be wipe or keep, got {self.local_disk!r}")
        self._check_nodes()

    def _check_nodes(self) -> None:
        _check(
            isinstance(self.nodes, int) and not isinstance(self.nodes, bool) and self.nodes >= 1,
            f"--nodes must be a whole number ≥ 1, got {self.nodes}",
        )
        if self.nodes == 1:
            return
        check_torchrun(self.command, self.nodes)
        _check(
            not any(self.schedule.in_save),
            "kill points inside a save (N:save) are for single-node runs: drop :save or --nodes",
        )

    def _check_work(self) -> None:
        _check(
            self.startup_s is None or _positive(self.startup_s),
            f"--startup must be a duration > 0, got {self.startup_s}",
        )
        if self.work_s is None:
            return
        _check(_positive(self.work_s), f"--work must be a duration > 0, got {self.work_s}")
        _check(
            self.time_scale == 1.0 or self.scale is not None,
            "give --work or --time-scale, not both: --work sets K from the job's measured step time, "
            "--time-scale sets K directly",
        )
        if self.interval_s is not None and self.interval_s > self.work_s:
            raise InvalidOption(
                f"--work {self.work_s:g}s is shorter than one checkpoint interval ({self.interval_s:g}s): "
                "nothing would be checkpointed before the end"
            )
        _check(
            self.total_steps is not None,
            "--work needs the job's total steps to choose K: give --steps N (for -- CMD jobs it tells spotsim, "
            "not the job, how many steps the command runs)",
        )

    @property
    def grace_s(self) -> float:
        """SIGTERM → SIGKILL, simulated seconds (and real ones: the notice phase runs at 1×)."""
        return self.provider.grace_s

    @property
    def clock(self) -> Clock:
        return Clock(self.time_scale, self.startup_s)

    @property
    def needs_scale(self) -> bool:
        """K is still to be chosen from ``--work`` by measuring the job."""
        return self.work_s is not None and self.scale is None

    @property
    def step_event_real_s(self) -> float:
        """How often the job reports its step: a hundredth of the real interval, so lost work stays exact at any K."""
        interval = self.interval_real_s
        return (
            self.step_event_interval_s
            if interval is None
            else min(self.step_event_interval_s, max(0.002, interval / 100))
        )

    @property
    def interval_real_s(self) -> float | None:
        """The interval of training compute the job sees: the simulated one ÷ K."""
        return None if self.interval_s is None else self.interval_s / self.time_scale

    def with_scale(self, scale: Scale) -> RunConfig:
        """This run at the K chosen for its ``--work`` (a built-in workload may run more steps for it)."""
        command = self.command
        if scale.steps != self.total_steps:
            command = _with_steps(command, scale.steps)
        return replace(self, time_scale=scale.k, command=command, total_steps=scale.steps, scale=scale)

    def to_dict(self) -> dict[str, Any]:
        """These settings as plain values, for a run in a process of its own; :meth:`from_dict` reads them back.

        JSON holds them all but a replayed trace's schedule, which keeps its :class:`~spotsim.preemption.trace.Trace`.
        """
        return _fields(self) | {
            "command": list(self.command),
            "out": str(self.out),
            "schedule": {"kind": self.schedule.kind, **_fields(self.schedule)},
            "kill": self.kill.sigkill_fraction,  # names the mode exactly: 0 sigterm, 1 sigkill, else mixed
            "provider": _fields(self.provider),
            "scale": _fields(self.scale) if self.scale is not None else None,
        }

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> RunConfig:
        """The settings :meth:`to_dict` gave, validated again."""
        settings = dict(settings)
        schedule = dict(settings.pop("schedule"))
        scale = settings.pop("scale")
        settings.update(
            command=tuple(settings["command"]),
            out=Path(settings["out"]),
            schedule=_rebuilt(SCHEDULES[schedule.pop("kind")], schedule),
            kill=KillMode.from_fraction(settings["kill"]),
            provider=_rebuilt(Provider, settings["provider"]),
            scale=None if scale is None else _rebuilt(Scale, scale),
        )
        return cls(**settings)


def _fields(settings: Any) -> dict[str, Any]:
    """A frozen dataclass's fields, tuples as lists (as JSON holds them)."""
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}


def _rebuilt(cls: type, values: dict[str, Any]) -> Any:
    """The dataclass :func:`_fields` took apart."""
    return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def _with_steps(command: tuple[str, ...], steps: int) -> tuple[str, ...]:
    """A built-in workload's command with another ``--steps`` value."""
    at = command.index("--steps")
    return (*command[: at + 1], str(steps), *command[at + 2 :])


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidOption(message)


def check_command(command: tuple[str, ...]) -> None:
    """The command must exist and be executable here, before any attempt is counted."""
    if shutil.which(command[0]) is None:
        raise InvalidOption(f"command not found or not executable: {command[0]}")
