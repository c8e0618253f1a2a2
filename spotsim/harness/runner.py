"""The live harness: run a training command attempt after attempt, preempting it on schedule.

What happens when the harness kills a job, in one place (:meth:`LiveRun._supervise`):
at the attempt's drawn uptime the harness sends SIGTERM to the attempt's whole
process group (the notice), waits the grace period, then SIGKILLs the group;
with ``--kill sigkill`` it sends SIGKILL at once. An exit the harness did not
cause is a crash. After a preemption it waits the restart delay (plus any
capacity wait of a replayed trace) and launches the next attempt, until the
job reports ``done``.

All configured durations are simulated seconds; the live run divides them by
the time scale K.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotsim.errors import JobCrashed
from spotsim.events import EventLog
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import RunLogTail
from spotsim.harness.schedule import Lifetime

log = logging.getLogger(__name__)

POLL_S = 0.02
STDERR_TAIL_BYTES = 4000


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
    cause: str  # "done" | "preempted" | "crash" | "interrupted"
    exit_code: int


class LiveRun:
    """One ``spotsim run``: attempts, preemptions and the run log, driven by a :class:`RunConfig`."""

    def __init__(
        self, config: RunConfig, env: dict[str, str], *, on_progress: Callable[[Progress], None] = lambda p: None
    ):
        self.config, self.base_env, self.on_progress = config, env, on_progress
        self.run_id = uuid.uuid4().hex[:12]
        self.events_path = config.out / "events.jsonl"
        self.run_log = EventLog(self.events_path)
        self.tail = RunLogTail(self.events_path)
        self.progress = Progress()
        self.rng = np.random.default_rng(config.seed)
        self.ends: list[AttemptEnd] = []
        self.lifetimes: list[Lifetime] = []
        self.crash: JobCrashed | None = None

    def run(self) -> list[AttemptEnd]:
        """Run until done, a crash loop, or Ctrl-C (which ends the current attempt and returns)."""
        (self.config.out / "attempts").mkdir(parents=True, exist_ok=True)
        self.run_log.emit(
            "run", run_id=self.run_id, command=list(self.config.command), time_scale=self.config.time_scale
        )
        attempt = 0
        try:
            while True:
                end = self._attempt(attempt)
                self.ends.append(end)
                if end.cause == "done" or self._crash_loop(end):
                    return self.ends
                self._restart_delay(attempt)
                attempt += 1
        except KeyboardInterrupt:
            self.run_log.emit("interrupted", attempt=attempt)
            if not self.ends or self.ends[-1].attempt != attempt:
                self.ends.append(AttemptEnd(attempt, "interrupted", -signal.SIGKILL))
            return self.ends
        finally:
            self.run_log.close()

    # -- one attempt ----------------------------------------------------------

    def _attempt(self, attempt: int) -> AttemptEnd:
        lifetime = self._draw_lifetime(attempt)
        self.progress.attempt, self.progress.state = attempt, "running"
        self.run_log.emit(
            "launch", attempt=attempt, preempt_at_s=lifetime.uptime_s, preempt_at_step=lifetime.at_step,
            capacity_wait_s=lifetime.capacity_wait_s,
        )  # fmt: skip
        stdout = open(self.config.out / "attempts" / f"attempt-{attempt}.stdout", "wb")
        stderr_path = self.config.out / "attempts" / f"attempt-{attempt}.stderr"
        with stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                list(self.config.command), env=self._env(attempt), stdout=stdout, stderr=stderr,
                stdin=subprocess.DEVNULL, start_new_session=True,  # its own process group: signals reach all of it
            )  # fmt: skip
            try:
                end = self._supervise(attempt, process, lifetime)
            except KeyboardInterrupt:
                _kill_group(process, signal.SIGKILL)
                process.wait()
                self.run_log.emit("exit", attempt=attempt, exit_code=process.returncode, cause="interrupted")
                self.ends.append(AttemptEnd(attempt, "interrupted", process.returncode))
                raise
        _kill_group(process, signal.SIGKILL)  # children the job left behind must not outlive the VM
        self.run_log.emit("exit", attempt=attempt, exit_code=end.exit_code, cause=end.cause)
        if end.cause == "crash":
            self.progress.crashes += 1
            self.crash = JobCrashed(attempt, end.exit_code, _tail(stderr_path))
            log.warning("run %s: %s", self.run_id, self.crash)
        return end

    def _draw_lifetime(self, attempt: int) -> Lifetime:
        """This attempt's VM lifetime; once ``--max-preemptions`` is reached, VMs live forever."""
        lifetime = self.config.schedule.lifetime(attempt)
        limit = self.config.max_preemptions
        if limit is not None and self.progress.preemptions >= limit:
            lifetime = Lifetime(None)
        self.lifetimes.append(lifetime)
        return lifetime

    def _supervise(self, attempt: int, process: subprocess.Popen, lifetime: Lifetime) -> AttemptEnd:
        """Watch one attempt until it exits; preempt it when its uptime is up."""
        scale = self.config.time_scale
        launched = time.monotonic()
        notice_at = launched + lifetime.uptime_s / scale if lifetime.uptime_s is not None else None
        kill_at: float | None = None
        signals: list[str] = []
        while process.poll() is None:
            self._follow_events()
            now = time.monotonic()
            if not signals and (
                (notice_at is not None and now >= notice_at) or self._reached(lifetime.at_step, attempt)
            ):
                if self.config.kill.draw_sigkill(self.rng):
                    signals.append(self._signal(attempt, process, signal.SIGKILL))
                else:
                    signals.append(self._signal(attempt, process, signal.SIGTERM))
                    kill_at = now + self.config.grace_s / scale
            elif kill_at is not None and now >= kill_at:
                signals.append(self._signal(attempt, process, signal.SIGKILL))
                kill_at = None
            time.sleep(POLL_S)
        self._follow_events()
        code = process.returncode
        if signals:
            self.progress.preemptions += 1
            return AttemptEnd(attempt, "preempted", code)
        if self.tail.done_step is not None and code == 0:
            return AttemptEnd(attempt, "done", code)
        return AttemptEnd(attempt, "crash", code)

    def _reached(self, step: int | None, attempt: int) -> bool:
        """Whether this attempt has reported progress to ``step`` (or past its resume point)."""
        tail = self.tail
        if step is None or tail.attempt != attempt or tail.last_step is None:
            return False
        return tail.last_step >= step and tail.last_step > (tail.resumed_step or 0)

    def _signal(self, attempt: int, process: subprocess.Popen, sig: signal.Signals) -> str:
        self.run_log.emit("signal", attempt=attempt, signal=sig.name, step=self.tail.last_step)
        self.progress.state = "preempting" if sig == signal.SIGTERM else "killed"
        _kill_group(process, sig)
        return sig.name

    def _env(self, attempt: int) -> dict[str, str]:
        return self.base_env | {"SPOTSIM_RUN_ID": self.run_id, "SPOTSIM_ATTEMPT": str(attempt)}

    # -- between attempts -------------------------------------------------------

    def _crash_loop(self, end: AttemptEnd) -> bool:
        return end.cause == "crash" and self.progress.crashes > self.config.max_crashes

    def _restart_delay(self, attempt: int) -> None:
        """Wait for the next VM: capacity (a replayed trace's gap, unbilled), then boot (billed)."""
        capacity = self.lifetimes[attempt].capacity_wait_s if self.ends[-1].cause == "preempted" else 0.0
        delay = self.config.restart_delay_s
        self.run_log.emit("restart_delay", attempt=attempt, delay_s=delay, capacity_wait_s=capacity)
        self.progress.state = "waiting for a VM"
        self._sleep_following((delay + capacity) / self.config.time_scale)

    def _sleep_following(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._follow_events()
            time.sleep(min(POLL_S * 5, left))

    def _follow_events(self) -> None:
        if self.tail.read_new():
            p = self.progress
            p.step, p.checkpoints, p.lost_steps = self.tail.last_step or 0, self.tail.checkpoints, self.tail.lost_steps
        self.on_progress(self.progress)


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - STDERR_TAIL_BYTES))
        return f.read().decode(errors="replace")
