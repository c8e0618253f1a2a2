"""``spotsim run`` end to end: a bucket, the contract environment, the live run, and its outputs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from spotsim.clock import RunClock, Scale, choose_scale
from spotsim.cost import Machine
from spotsim.errors import InvalidOption, JobCrashed, SpotsimError
from spotsim.events import Cause, fold_attempts, fold_nodes, read_events
from spotsim.export_plan import LocalMeasurements, MeasuredPreemption, PlannedPreemption
from spotsim.harness.accounting import PreemptionResponse
from spotsim.harness.bucket import EmbeddedBucket
from spotsim.harness.config import RunConfig, check_command
from spotsim.harness.group import GroupSupervisor
from spotsim.harness.probe import probe_job
from spotsim.harness.runner import Progress, Supervisor
from spotsim.harness.save_watch import SaveWatch
from spotsim.harness.summary import RunSummary, projection_for, run_clock, storage_summary, summarize
from spotsim.harness.torchrun import standalone_command
from spotsim.report import plot_timeline
from spotsim.storage import open_store
from spotsim.storage.faults import FaultSpec

LOCK_NAME = ".spotsim.lock"
PROBE_EVENTS = "probe.events.jsonl"  # the job's events while it was measured for --work


@dataclass
class RunOutcome:
    summary: RunSummary
    out: Path
    crash: JobCrashed | None
    interrupted: bool
    gave_up: str | None = None  # why the run stopped early, other than a crash loop


def run_live(
    config: RunConfig,
    machine: Machine,
    *,
    bucket: str | None = None,
    bucket_env: dict[str, str] | None = None,
    save_watch: SaveWatch | None = None,
    storage_faults: FaultSpec | None = None,
    on_progress: Callable[[Progress], None] = lambda p: None,
    on_scale: Callable[[Scale], None] = lambda scale: None,
) -> RunOutcome:
    """Run ``config`` against ``bucket`` (default: a fresh prefix on the embedded emulator) and write
    ``events.jsonl``, ``summary.json`` and ``timeline.png`` under ``config.out``.

    ``bucket_env`` is extra environment for the job (and the bucket check), e.g. the
    ``STORAGE_EMULATOR_HOST`` of an emulator the caller runs; ``save_watch`` sees saves
    being written, for kill points inside a save. ``storage_faults`` puts a fault proxy between the job and
    the embedded emulator (:mod:`spotsim.storage.faults`), whose outage windows run on the simulated clock.
    With ``config.work_s``, the job is first measured (:mod:`spotsim.harness.probe`) and K chosen for it,
    then given to ``on_scale``."""
    check_command(config.command)
    if any(config.schedule.in_save) and save_watch is None:
        raise InvalidOption("kill points inside a save (N:save) need a save watch: use them with spotsim verify")
    if storage_faults is not None and bucket is not None:
        raise InvalidOption("--storage-faults needs the embedded emulator: drop --bucket")
    now = _SimNow()
    with (
        out_dir(config.out),
        _checkpoint_bucket(bucket, bucket_env or {}, storage_faults, now) as (uri, store_env, own),
    ):
        _clear_outputs(config.out)
        if config.needs_scale:
            with own.faults_off() if own else contextlib.nullcontext():  # the probe measures the job, not faults
                scale = probe_scale(config, os.environ | store_env, uri)
            config = config.with_scale(scale)
            on_scale(scale)
        env = os.environ | store_env | _contract_env(config, uri)
        with tempfile.TemporaryDirectory(prefix="spotsim-vm-disk-") as disk:
            run: Supervisor | GroupSupervisor
            if config.nodes > 1:
                run = GroupSupervisor(config, env, local_disk=Path(disk), bucket=own, on_progress=on_progress)
            else:
                run = Supervisor(
                    config,
                    env,
                    local_disk=Path(disk) / "local",
                    save_watch=save_watch,
                    bucket=own,
                    on_progress=on_progress,
                )
            now.clock = run.run_clock
            started = time.monotonic()
            ends = run.run()
            wall_s = time.monotonic() - started
        events = read_events(config.out / "events.jsonl")
        attempts, clock = fold_attempts(events), run_clock(events, config.clock)
        interrupted = bool(ends) and ends[-1].cause == Cause.INTERRUPTED
        summary = replace(
            summarize(attempts, clock, config, machine, wall_s=wall_s, nodes=fold_nodes(events)),
            run_id=run.run_id,
            checkpoint_uri=uri,
            storage=storage_summary(attempts, storage_faults),
            interrupted=interrupted,
        )
        summary = replace(summary, projection=projection_for(summary, config))
        written = summary.to_dict()
        (config.out / "summary.json").write_text(json.dumps(written, indent=2) + "\n")
        title = (
            f"{' '.join(config.command[-3:])} · {config.schedule.describe()} · kill {config.kill}\n"
            f"{config.provider.describe()}"
        )
        plot_timeline(
            attempts,
            summary.interruptions,
            clock.to_sim,
            config.out / "timeline.png",
            title=title,
            time_scale=config.time_scale,
            projection=summary.projection,
            nodes=fold_nodes(events),
        )
    crash = run.crash if ends and ends[-1].cause in (Cause.CRASH, Cause.TIMEOUT) else None
    return RunOutcome(summary, config.out, crash, interrupted, run.gave_up)


def _clear_outputs(out: Path) -> None:
    """A rerun into the same directory starts afresh: nothing of an earlier run may pass for this one's."""
    for name in ("events.jsonl", "summary.json", "timeline.png", PROBE_EVENTS):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "output", ignore_errors=True)


def _contract_env(config: RunConfig, uri: str) -> dict[str, str]:
    env = {
        "SPOTSIM_CHECKPOINT_URI": uri,
        "SPOTSIM_OUTPUT_DIR": str((config.out / "output").absolute()),
        "SPOTSIM_STEP_EVENT_INTERVAL": repr(config.step_event_real_s),
        "SPOTSIM_TIME_SCALE": repr(config.time_scale),  # K: a job may poll on the simulated clock
    }
    if config.interval_real_s is not None:
        env["SPOTSIM_CHECKPOINT_INTERVAL"] = repr(config.interval_real_s)
    if config.interval_steps is not None:
        env["SPOTSIM_CHECKPOINT_INTERVAL_STEPS"] = str(config.interval_steps)
    return env


def measure_scale(config: RunConfig, *, bucket: str | None = None, bucket_env: dict[str, str] | None = None) -> Scale:
    """Measure the job once and choose K for its ``--work``: for commands whose runs must share one K
    (verify compares runs bit for bit; a sweep compares them with each other)."""
    check_command(config.command)
    with out_dir(config.out), _checkpoint_bucket(bucket, bucket_env or {}) as (uri, store_env, _):
        return probe_scale(config, os.environ | store_env, uri)


def probe_scale(config: RunConfig, env: dict[str, str], uri: str) -> Scale:
    """Measure the job on a throwaway prefix next to ``uri``, then choose K for its ``--work``."""
    # RunConfig refuses --work without the job's total steps, so a run that needs K has both
    assert config.work_s is not None and config.total_steps is not None
    probe_uri = uri.rstrip("/") + "-probe"
    events = config.out / PROBE_EVENTS
    try:
        command = standalone_command(config.command) if config.nodes > 1 else config.command
        probe = probe_job(command, env | _contract_env(config, probe_uri), events.absolute())
    finally:
        _delete_prefix(probe_uri, env)
    return choose_scale(
        config.work_s,
        step_real_s=probe.step_real_s,
        steps=config.total_steps,
        save_real_s=probe.save_real_s,
        interval_s=config.interval_s,
        can_add_steps=config.steps_adjustable,
    )


def _delete_prefix(uri: str, env: dict[str, str]) -> None:
    """The probe's checkpoints must not be found by the run (or left in the user's bucket)."""
    with open_store(uri, **store_options(uri, env)) as store:
        for key in store.list(""):
            store.delete(key)


def store_options(uri: str, env: dict[str, str]) -> dict[str, str]:
    """``open_store`` options that point a ``gs://`` URI at the emulator ``env`` names, if any."""
    endpoint = env.get("STORAGE_EMULATOR_HOST")
    return {"endpoint": endpoint} if endpoint and uri.startswith("gs://") else {}


@contextlib.contextmanager
def out_dir(path: Path) -> Iterator[Path]:
    """Hold ``path`` as this command's output directory: created, writable, and locked against a second
    spotsim command writing into it at the same time (the lock dies with the process)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = open(path / LOCK_NAME, "w")  # noqa: SIM115 (the with below closes it; here for the one-line error)
    except OSError as e:
        raise InvalidOption(f"cannot write the output directory {path}: {e.strerror or e}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidOption(
                f"another spotsim command is writing to {path}; wait for it or pick another --out"
            ) from None
        yield path


class _SimNow:
    """The run's simulated time, for the fault proxy's outage windows: 0 until the run starts."""

    clock: RunClock | None = None

    def __call__(self) -> float:
        return self.clock.sim_s(time.time()) if self.clock is not None else 0.0


@contextlib.contextmanager
def _checkpoint_bucket(
    bucket: str | None, env: dict[str, str], faults: FaultSpec | None = None, clock: Callable[[], float] | None = None
) -> Iterator[tuple[str, dict[str, str], EmbeddedBucket | None]]:
    """(checkpoint URI, extra environment, the supervised embedded bucket or None): the user's bucket
    checked for writing, or the embedded emulator (behind a fault proxy with ``faults``)."""
    if bucket is not None:
        check_writable(bucket, env)
        yield bucket, env, None
        return
    with EmbeddedBucket(faults=faults, clock=clock) as own:
        yield own.uri_prefix, own.env() | env, own


def check_writable(bucket: str, env: dict[str, str]) -> None:
    """Write and delete a probe object, so a read-only or unreachable bucket fails now, in one line,
    not as a job that crash-loops."""
    probe = f"spotsim-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        with open_store(bucket, **store_options(bucket, env)) as store:
            store.put_bytes(probe, b"")
            store.delete(probe)
    except (SpotsimError, OSError) as e:
        raise InvalidOption(f"cannot write to the bucket {bucket}: {e}") from None


def replay_plan(config: RunConfig, summary: RunSummary) -> tuple[list[PlannedPreemption], LocalMeasurements]:
    """The run's preemptions as a plan to replay on a real VM, and what the run measured to compare with."""
    provider = config.provider
    preempted = [(x.attempt, x.preemption) for x in summary.interruptions if x.preemption is not None]
    plan = [
        PlannedPreemption(attempt, p.uptime_s, provider.notice_s, provider.grace_s, sigkill=not p.noticed)
        for attempt, p in preempted
        if p.uptime_s is not None
    ]
    met = [_measured(attempt, p) for attempt, p in preempted]
    run = summary.accounting
    measured = LocalMeasurements(
        provider=provider.name,
        command=" ".join(config.command),
        interval_s=config.interval_s,
        preemptions=run.preemptions,
        lost_steps=run.lost_steps,
        lost_work_s=run.lost_time_s,
        restart_overhead_s=run.restart_overhead_s,
        checkpoint_blocking_s=run.checkpoint_blocking_s,
        emergency_saves=sum(m.emergency_committed for m in met),
        interruptions=met,
    )
    return plan, measured


def _measured(attempt: int, preemption: PreemptionResponse) -> MeasuredPreemption:
    """How the job met one preemption, as the replay's README compares it with the real VM."""
    notice = preemption.notice
    return MeasuredPreemption(
        attempt=attempt,
        noticed_after_s=notice.notice_seen_after_s if notice is not None else None,
        emergency_committed=notice is not None and notice.emergency_before_kill,
        exit=preemption.exit,
    )
