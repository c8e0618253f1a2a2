"""The live harness: run a training command attempt after attempt, preempting it on schedule.

What happens when the harness kills a job, in one place (:meth:`LiveRun._supervise`):
at the attempt's drawn uptime (or step, or inside the first save from a step
on) the harness sends SIGTERM to the attempt's whole process group (the
notice), waits the grace period, then SIGKILLs the group; with
``--kill sigkill`` it sends SIGKILL at once. An exit the harness did not cause
is a crash. After a preemption it waits the restart delay (plus any capacity
wait of a replayed trace) and launches the next attempt, on a fresh local disk,
until the job reports ``done``.

A job that reported ``done`` is finished: it is never preempted or relaunched,
and if it does not exit within :data:`DONE_EXIT_WAIT_S` the harness stops it.
An attempt past ``--attempt-timeout`` is stopped and counted as a crash.

All configured durations are simulated seconds. The VM's uptime runs on the
simulated clock (:mod:`spotsim.clock`): K× while the job computes, 1× while it
starts up, blocks on a checkpoint or exits, so fixed costs are never
multiplied by K; the grace is real seconds too.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotsim.clock import AttemptClock, RunClock
from spotsim.errors import JobCrashed
from spotsim.events import EventLog
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import JobEventReader, RunLogTail
from spotsim.harness.save_watch import SaveWatch
from spotsim.lifeline import Reaper
from spotsim.preemption import Lifetime, format_kill_points

log = logging.getLogger(__name__)

POLL_S = 0.02
MIN_POLL_S = 0.001
STDERR_TAIL_BYTES = 4000
DONE_EXIT_WAIT_S = 5.0  # real seconds a job may take to exit after `done` (TensorFlow's teardown takes ~1 s)
STOP_GRACE_S = 2.0  # real seconds between SIGTERM and SIGKILL when the harness stops a job itself
MAX_IDLE_ATTEMPTS = 10  # consecutive attempts preempted before computing a step: the schedule leaves no room


@dataclass
class Progress:
    """What the live display shows; updated as events arrive."""

    attempt: int = 0
    step: int = 0
    preemptions: int = 0
    crashes: int = 0
    lost_steps: int = 0
    checkpoints: int = 0
    state: str = "starting"


@dataclass
class AttemptEnd:
    attempt: int
    cause: str  # "done" | "preempted" | "crash" | "timeout" | "interrupted"
    exit_code: int
    progressed: bool = True  # whether it computed a step beyond the one it resumed from


class LiveRun:
    """One ``spotsim run``: attempts, preemptions and the run log, driven by a :class:`RunConfig`.

    Args:
        config: the run's settings.
        env: the environment every attempt starts from (the contract's variables included).
        local_disk: the VM's local disk, given to each attempt as ``SPOTSIM_LOCAL_DIR`` and ``TMPDIR``.
        save_watch: sees saves being written, for kill points inside a save (``spotsim verify``).
    """

    def __init__(
        self, config: RunConfig, env: dict[str, str], *, local_disk: Path, save_watch: SaveWatch | None = None,
        on_progress: Callable[[Progress], None] = lambda p: None,
    ):  # fmt: skip
        self.config, self.base_env, self.on_progress = config, env, on_progress
        self.local_disk, self.save_watch = local_disk, save_watch
        self.run_id = uuid.uuid4().hex[:12]
        self.run_log = EventLog(config.out / "events.jsonl")
        self.tail = RunLogTail()
        self.run_clock = RunClock(config.clock)
        self.progress = Progress()
        self.rng = np.random.default_rng(config.seed)
        self.lifetime_rng = np.random.default_rng(config.seed)
        self.ends: list[AttemptEnd] = []
        self.lifetimes: list[Lifetime] = []
        self.crash: JobCrashed | None = None
        self.gave_up: str | None = None  # why the run stopped before the job finished, other than crashes
        self._idle_streak = 0
        self._armed = False  # the save watch is looking for the write to kill in

    def run(self) -> list[AttemptEnd]:
        """Run until done, a crash loop, a stall, or Ctrl-C (which ends the current attempt and returns)."""
        attempts_dir = self.config.out / "attempts"
        shutil.rmtree(attempts_dir, ignore_errors=True)  # an earlier run's files in the same --out mean nothing now
        attempts_dir.mkdir(parents=True)
        self._emit("run", run_id=self.run_id, command=list(self.config.command), time_scale=self.config.time_scale)
        attempt = 0
        try:
            with Reaper() as self.reaper:
                while True:
                    end = self._attempt(attempt)
                    self.ends.append(end)
                    if end.cause == "done" or self._give_up(end):
                        return self.ends
                    self._restart_delay(attempt)
                    attempt += 1
        except KeyboardInterrupt:
            self._emit("interrupted", attempt=attempt)
            if not self.ends or self.ends[-1].attempt != attempt:
                self.ends.append(AttemptEnd(attempt, "interrupted", -signal.SIGKILL))
            return self.ends
        finally:
            self.run_log.close()

    # -- one attempt ----------------------------------------------------------

    def _attempt(self, attempt: int) -> AttemptEnd:
        lifetime = self._draw_lifetime(attempt)
        self._prepare_local_disk(attempt)
        self.progress.attempt, self.progress.state = attempt, "running"
        kill_point = format_kill_points((lifetime.at_step,), (lifetime.in_save,)) if lifetime.at_step else None
        self._emit(
            "launch", attempt=attempt, preempt_at_s=lifetime.uptime_s, preempt_at_step=lifetime.at_step,
            kill_point=kill_point, capacity_wait_s=lifetime.capacity_wait_s,
        )  # fmt: skip
        attempts_dir = self.config.out / "attempts"
        events_path = (attempts_dir / f"attempt-{attempt}.events.jsonl").absolute()
        self.job_events = JobEventReader(events_path)
        stderr_path = attempts_dir / f"attempt-{attempt}.stderr"
        with open(attempts_dir / f"attempt-{attempt}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                list(self.config.command), env=self._env(attempt, events_path), stdout=stdout, stderr=stderr,
                stdin=subprocess.DEVNULL, start_new_session=True,  # its own process group: signals reach all of it
            )  # fmt: skip
            self.reaper.watch(process.pid)
            try:
                end = self._supervise(attempt, process, lifetime)
            except KeyboardInterrupt:
                interrupted = AttemptEnd(attempt, "interrupted", reap(process))
                self._end_attempt(attempt, process, interrupted)
                self.ends.append(interrupted)
                raise
        self._end_attempt(attempt, process, end)
        if end.cause in ("crash", "timeout"):
            self.progress.crashes += 1
            timeout = self.config.attempt_timeout_s if end.cause == "timeout" else None
            self.crash = JobCrashed(attempt, end.exit_code, _tail(stderr_path), timeout_s=timeout)
            log.warning("run %s: %s", self.run_id, self.crash)
        return end

    def _end_attempt(self, attempt: int, process: subprocess.Popen, end: AttemptEnd) -> None:
        _kill_group(process, signal.SIGKILL)  # children the job left behind must not outlive the VM
        process.wait()
        self.reaper.release(process.pid)
        self._follow_events(attempt, final=True)
        self._emit("exit", attempt=attempt, exit_code=end.exit_code, cause=end.cause)

    def _draw_lifetime(self, attempt: int) -> Lifetime:
        """This attempt's VM lifetime; once ``--max-preemptions`` is reached, VMs live forever."""
        lifetime = self.config.schedule.lifetime(attempt, self.lifetime_rng)
        limit = self.config.max_preemptions
        if limit is not None and self.progress.preemptions >= limit:
            lifetime = Lifetime(None)
        self.lifetimes.append(lifetime)
        return lifetime

    def _supervise(self, attempt: int, process: subprocess.Popen, lifetime: Lifetime) -> AttemptEnd:
        """Watch one attempt until it exits; preempt it when its simulated uptime (or kill point) is up."""
        clock = self.run_clock.current
        timeout = self.config.attempt_timeout_s
        kill_at: float | None = None
        signals: list[str] = []
        while process.poll() is None:
            self._follow_events(attempt)
            now, uptime = time.monotonic(), clock.uptime(time.time())
            if self.tail.done_step is not None:  # finished: never preempted, stopped if it lingers
                self._stop_after_done(attempt, process)
            elif timeout is not None and uptime >= timeout:
                self._emit("stop", attempt=attempt, reason="attempt timeout", step=self.tail.last_step)
                return AttemptEnd(attempt, "timeout", reap(process))
            elif not signals and preemption_due(lifetime, uptime, self._progress_of(attempt)):
                write = self._save_write(lifetime, attempt)
                if write is not False:
                    kill_at = self._preempt(attempt, process, now, write, signals)
                continue
            elif kill_at is not None and now >= kill_at:
                signals.append(self._signal(attempt, process, signal.SIGKILL))
                kill_at = None
            time.sleep(self._poll_s(lifetime, clock, signals, kill_at))
        self._follow_events(attempt, final=True)
        self._disarm()
        code = process.returncode
        progressed = self.tail.attempt == attempt and (self.tail.last_step or 0) > (self.tail.resumed_step or 0)
        if self.tail.done_step is not None:
            return AttemptEnd(attempt, "done", code)
        if signals:
            self.progress.preemptions += 1
            return AttemptEnd(attempt, "preempted", code, progressed)
        return AttemptEnd(attempt, "crash", code, progressed)

    def _poll_s(self, lifetime: Lifetime, clock: AttemptClock, signals: list[str], kill_at: float | None) -> float:
        """Sleep until the next poll, or less when the preemption falls due sooner (at K× a poll is long)."""
        wait = POLL_S
        if not signals and lifetime.uptime_s is not None:
            wait = min(wait, clock.real_until(lifetime.uptime_s, time.time()))
        if kill_at is not None:
            wait = min(wait, kill_at - time.monotonic())
        return max(wait, MIN_POLL_S)

    def _progress_of(self, attempt: int) -> tuple[int, int] | None:
        """(step reached, step resumed from) of this attempt, once it has reported a step."""
        tail = self.tail
        if tail.attempt != attempt or tail.last_step is None:
            return None
        return tail.last_step, tail.resumed_step or 0

    def _save_write(self, lifetime: Lifetime, attempt: int) -> str | None | bool:
        """For a kill inside a save: the write to kill in (False while none has started yet).
        For any other kill point: None, preempt now."""
        if not lifetime.in_save or self.save_watch is None:
            return None
        if not self._armed:
            self.save_watch.arm(self.base_env["SPOTSIM_CHECKPOINT_URI"])
            self._armed = True
        return self.save_watch.wait_for_write(POLL_S) or False

    def _preempt(self, attempt: int, process: subprocess.Popen, now: float, write: str | None, signals: list[str]):
        """Send the notice (or the SIGKILL); return when the SIGKILL after the grace is due, if it is."""
        sigkill = self.config.kill.draw_sigkill(self.rng)
        signals.append(self._signal(attempt, process, signal.SIGKILL if sigkill else signal.SIGTERM, write))
        self._disarm()  # a held upload's response goes out only now that the signal is out
        return None if sigkill else now + self.config.grace_s  # the grace is a fixed cost: real seconds

    def _disarm(self) -> None:
        if self._armed:
            self.save_watch.release()
            self._armed = False

    def _stop_after_done(self, attempt: int, process: subprocess.Popen) -> None:
        """A job that wrote ``done`` but keeps running (seed 001 loops forever) is stopped after a wait."""
        try:
            process.wait(DONE_EXIT_WAIT_S)
            return
        except subprocess.TimeoutExpired:
            pass
        self._emit("stop", attempt=attempt, reason=f"still running {DONE_EXIT_WAIT_S:g} s after done")
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait()

    def _signal(self, attempt: int, process: subprocess.Popen, sig: signal.Signals, write: str | None = None) -> str:
        self._emit(
            "signal", attempt=attempt, signal=sig.name, step=self.tail.last_step, in_save=write is not None,
            **({"write": write} if write is not None else {}),
        )  # fmt: skip
        self.progress.state = "preempting" if sig == signal.SIGTERM else "killed"
        _kill_group(process, sig)
        return sig.name

    def _env(self, attempt: int, events: Path) -> dict[str, str]:
        disk = str(self.local_disk.absolute())
        return self.base_env | {
            "SPOTSIM_RUN_ID": self.run_id, "SPOTSIM_ATTEMPT": str(attempt), "SPOTSIM_EVENTS": str(events),
            "SPOTSIM_LOCAL_DIR": disk, "TMPDIR": disk,
        }  # fmt: skip

    def _prepare_local_disk(self, attempt: int) -> None:
        """A new VM's local disk is empty; ``--local-disk keep`` models a VM stopped with its boot disk."""
        if attempt == 0 or self.config.local_disk == "wipe":
            shutil.rmtree(self.local_disk, ignore_errors=True)
        self.local_disk.mkdir(parents=True, exist_ok=True)

    # -- between attempts -------------------------------------------------------

    def _give_up(self, end: AttemptEnd) -> bool:
        """After ``--max-crashes`` crashes, or when attempt after attempt dies before computing a step."""
        if end.cause in ("crash", "timeout"):
            return self.progress.crashes >= self.config.max_crashes
        self._idle_streak = self._idle_streak + 1 if not end.progressed else 0
        if self._idle_streak >= MAX_IDLE_ATTEMPTS:
            self.gave_up = (
                f"{self._idle_streak} attempts in a row were preempted before computing a step: no attempt lives "
                "long enough under this schedule (lower --preempt-rate or --time-scale)"
            )
            return True
        return False

    def _restart_delay(self, attempt: int) -> None:
        """Wait for the next VM: capacity (a replayed trace's gap, unbilled), then boot (billed)."""
        capacity = self.lifetimes[attempt].capacity_wait_s if self.ends[-1].cause == "preempted" else 0.0
        delay = self.config.restart_delay_s
        self._emit("restart_delay", attempt=attempt, delay_s=delay, capacity_wait_s=capacity)
        self.progress.state = "waiting for a VM"
        deadline = time.monotonic() + (delay + capacity) / self.config.time_scale
        while (left := deadline - time.monotonic()) > 0:
            self.on_progress(self.progress)
            time.sleep(min(POLL_S * 5, left))

    # -- the run log --------------------------------------------------------------

    def _emit(self, event: str, **fields: object) -> None:
        record = {"t": time.time(), "event": event, **fields}
        self.run_log.write(record)
        self.tail.apply(record)
        self.run_clock.apply(record)

    def _follow_events(self, attempt: int, *, final: bool = False) -> None:
        """Copy the job's new, valid events into the run log; a malformed one becomes an anomaly."""
        events, problems = self.job_events.read_new(final=final)
        for event in events:
            self.run_log.write(event)
            self.tail.apply(event)
            self.run_clock.apply(event)
        for problem in problems:
            self._emit("malformed", attempt=attempt, problem=problem)
        p = self.progress
        p.step, p.checkpoints, p.lost_steps = self.tail.last_step or 0, self.tail.checkpoints, self.tail.lost_steps
        self.on_progress(p)


def preemption_due(lifetime: Lifetime, uptime_s: float, progress: tuple[int, int] | None) -> bool:
    """The kill decision, a pure timer: the VM's simulated uptime has reached its drawn lifetime, or the
    attempt has reported the kill point's step (beyond the step it resumed from)."""
    if lifetime.uptime_s is not None and uptime_s >= lifetime.uptime_s:
        return True
    if lifetime.at_step is None or progress is None:
        return False
    reached, resumed = progress
    return reached >= lifetime.at_step and reached > resumed


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def reap(process: subprocess.Popen) -> int:
    _kill_group(process, signal.SIGKILL)
    return process.wait()


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - STDERR_TAIL_BYTES))
        return f.read().decode(errors="replace")
