"""The live harness: run a training command attempt after attempt, preempting it on schedule.

What happens when the harness preempts a job, in one place (:meth:`Supervisor._supervise`):
at the attempt's drawn uptime (or step, or inside the first save from a step
on), t0, the provider's timeline starts (:mod:`spotsim.preemption.providers`).
The run's local metadata server (:mod:`spotsim.metadata`) announces the
preemption at t0 (AWS: a rebalance recommendation may come first); SIGTERM
reaches the attempt's whole process group when the notice is over (or at an
Azure approval), and SIGKILL after the grace. A ``--kill sigkill`` preemption
has no notice: SIGKILL at t0. An exit the harness did not cause is a crash.
After a preemption it waits the restart delay (plus any capacity wait of a
replayed trace) and launches the next attempt, on a fresh local disk and a
fresh VM's metadata, until the job reports ``done``.

A job that reported ``done`` is finished: it is never preempted or relaunched,
and if it does not exit within :data:`DONE_EXIT_WAIT_REAL_S` the harness stops it.
An attempt past ``--attempt-timeout`` is stopped and counted as a crash.

All configured durations are simulated seconds. The VM's uptime runs on the
simulated clock (:mod:`spotsim.clock`): K× while the job computes, 1× while it
starts up, blocks on a checkpoint or exits, so fixed costs are never
multiplied by K. The notice runs on that clock (a 120 s notice at K = 60 is
2 s of compute); the grace, which starts with the SIGTERM, is real seconds.
Every request the job makes to the metadata server becomes a
``metadata_request`` event.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spotsim.clock import AttemptClock, RunClock
from spotsim.errors import JobCrashed
from spotsim.events import (
    EXIT,
    INTERRUPTED,
    LAUNCH,
    MALFORMED,
    METADATA_REQUEST,
    NOTICE,
    REBALANCE,
    RESTART_DELAY,
    RUN,
    SIGNAL,
    STOP,
    STORAGE_FAULT,
    Cause,
    EventLog,
)
from spotsim.harness.bucket import EmbeddedBucket
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import JobEventReader, RunLogTail
from spotsim.harness.save_watch import SaveWatch
from spotsim.lifeline import Reaper, signal_tree
from spotsim.metadata import MetadataRequest, MetadataServer
from spotsim.preemption import Lifetime, format_kill_points

log = logging.getLogger(__name__)

POLL_REAL_S = 0.02
MIN_POLL_REAL_S = 0.001
STDERR_TAIL_BYTES = 4000
DONE_EXIT_WAIT_REAL_S = 5.0  # a job may take this long to exit after `done` (TensorFlow's teardown takes ~1 s)
STOP_GRACE_REAL_S = 2.0  # between SIGTERM and SIGKILL when the harness stops a job itself
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
class Eviction:
    """One preemption in progress: the notice is out, the signals follow on the provider's timeline."""

    sigterm_at_uptime: float | None  # the SIGTERM is due at this simulated uptime; None once sent (or never)
    kill_at: float | None = None  # monotonic time of the SIGKILL after the grace
    write: str | None = None  # the save write a kill point inside a save holds

    def due(self, uptime_s: float, now: float, grace_s: float, *, approved: bool) -> signal.Signals | None:
        """The signal due now, if one is, and the timeline moved past it: SIGTERM at the end of the notice (or
        at an Azure approval), SIGKILL at the end of the grace (real seconds from the SIGTERM)."""
        if self.sigterm_at_uptime is not None:
            if uptime_s < self.sigterm_at_uptime and not approved:
                return None
            self.sigterm_at_uptime, self.kill_at = None, now + grace_s
            return signal.SIGTERM
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            return signal.SIGKILL
        return None


@dataclass
class AttemptEnd:
    attempt: int
    cause: Cause
    exit_code: int
    progressed: bool = True  # whether it computed a step beyond the one it resumed from


class Patience:
    """When a run stops relaunching: after ``max_crashes`` crashes, or when :data:`MAX_IDLE_ATTEMPTS` attempts
    in a row died before computing a step (``idle``: how they died; ``who``: what never lived long enough)."""

    def __init__(self, max_crashes: int, idle: str, who: str) -> None:
        self.max_crashes, self.idle, self.who = max_crashes, idle, who
        self.streak = 0
        self.reason: str | None = None  # why it ran out, other than crashes

    def spent(self, end: AttemptEnd, crashes: int) -> bool:
        if end.cause in (Cause.CRASH, Cause.TIMEOUT):
            return crashes >= self.max_crashes
        self.streak = self.streak + 1 if not end.progressed else 0
        if self.streak < MAX_IDLE_ATTEMPTS:
            return False
        self.reason = (
            f"{self.streak} attempts in a row {self.idle} before computing a step: {self.who} long enough under "
            "this schedule (lower --preempt-rate or --time-scale)"
        )
        return True


class Supervisor:
    """Supervises the attempts of one ``spotsim run`` (:func:`~spotsim.harness.live.run_live` is the entry point):
    launches, preemptions and the run log, driven by a :class:`RunConfig`.

    Args:
        config: the run's settings.
        env: the environment every attempt starts from (the contract's variables included).
        local_disk: the VM's local disk, given to each attempt as ``SPOTSIM_LOCAL_DIR`` and ``TMPDIR``.
        save_watch: sees saves being written, for kill points inside a save (``spotsim verify``).
        bucket: the embedded bucket the harness runs, supervised: its outages and injected faults go into the
            run log, and an attempt that dies while its emulator is down is not the job's crash.
    """

    def __init__(
        self,
        config: RunConfig,
        env: dict[str, str],
        *,
        local_disk: Path,
        save_watch: SaveWatch | None = None,
        bucket: EmbeddedBucket | None = None,
        on_progress: Callable[[Progress], None] = lambda p: None,
    ):
        self.config, self.base_env, self.on_progress = config, env, on_progress
        self.local_disk, self.save_watch, self.bucket = local_disk, save_watch, bucket
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
        self.patience = Patience(config.max_crashes, "were preempted", "no attempt lives")
        self._armed = False  # the save watch is looking for the write to kill in
        self._sigkill_draws: dict[int, bool] = {}
        self._rebalanced = False  # this attempt's rebalance recommendation is out
        self._requests: queue.SimpleQueue[MetadataRequest] = queue.SimpleQueue()  # from the server's threads

    def run(self) -> list[AttemptEnd]:
        """Run until done, a crash loop, a stall, or Ctrl-C (which ends the current attempt and returns)."""
        attempts_dir = self.config.out / "attempts"
        shutil.rmtree(attempts_dir, ignore_errors=True)  # an earlier run's files in the same --out mean nothing now
        attempts_dir.mkdir(parents=True)
        self._emit(RUN, run_id=self.run_id, command=list(self.config.command), time_scale=self.config.time_scale)
        attempt = 0
        cloud = self.config.provider.cloud
        try:
            with Reaper() as self.reaper, MetadataServer(cloud, on_request=self._requests.put) as self.metadata:
                while True:
                    end = self._attempt(attempt)
                    self.ends.append(end)
                    if end.cause == Cause.DONE or self._give_up(end):
                        return self.ends
                    if end.cause != Cause.STORAGE_OUTAGE:  # the VM is still there: only the job is relaunched
                        self._restart_delay(attempt)
                    attempt += 1
        except KeyboardInterrupt:
            self._emit(INTERRUPTED, attempt=attempt)
            if not self.ends or self.ends[-1].attempt != attempt:
                self.ends.append(AttemptEnd(attempt, Cause.INTERRUPTED, -signal.SIGKILL))
            return self.ends
        finally:
            self.run_log.close()

    # -- one attempt ----------------------------------------------------------

    def _attempt(self, attempt: int) -> AttemptEnd:
        lifetime = self._draw_lifetime(attempt)
        self._prepare_local_disk(attempt)
        self.metadata.new_vm()
        self._rebalanced = False
        self.progress.attempt, self.progress.state = attempt, "running"
        kill_point = format_kill_points((lifetime.at_step,), (lifetime.in_save,)) if lifetime.at_step else None
        self._emit(
            LAUNCH,
            attempt=attempt,
            preempt_at_s=lifetime.uptime_s,
            preempt_at_step=lifetime.at_step,
            kill_point=kill_point,
            capacity_wait_s=lifetime.capacity_wait_s,
            hard_stop=lifetime.hard_stop,
        )
        attempts_dir = self.config.out / "attempts"
        events_path = (attempts_dir / f"attempt-{attempt}.events.jsonl").absolute()
        self.job_events = JobEventReader(events_path)
        stderr_path = attempts_dir / f"attempt-{attempt}.stderr"
        with open(attempts_dir / f"attempt-{attempt}.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                list(self.config.command),
                env=self._env(attempt, events_path),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: signals reach all of it
            )
            self.reaper.watch(process.pid)
            try:
                end = self._supervise(attempt, process, lifetime)
            except KeyboardInterrupt:
                interrupted = AttemptEnd(attempt, Cause.INTERRUPTED, reap(process))
                self._end_attempt(attempt, process, interrupted)
                self.ends.append(interrupted)
                raise
        self._end_attempt(attempt, process, end)
        if end.cause in (Cause.CRASH, Cause.TIMEOUT):
            self.progress.crashes += 1
            timeout = self.config.attempt_timeout_s if end.cause == Cause.TIMEOUT else None
            self.crash = JobCrashed(attempt, end.exit_code, stderr_tail(stderr_path), timeout_s=timeout)
            log.warning("run %s: %s", self.run_id, self.crash)
        return end

    def _end_attempt(self, attempt: int, process: subprocess.Popen, end: AttemptEnd) -> None:
        _kill_group(process, signal.SIGKILL)  # children the job left behind must not outlive the VM
        process.wait()
        self.reaper.release(process.pid)
        self._follow_events(attempt, final=True)
        self._emit(EXIT, attempt=attempt, exit_code=end.exit_code, cause=end.cause)

    def _draw_lifetime(self, attempt: int) -> Lifetime:
        """This attempt's VM lifetime; once ``--max-preemptions`` is reached, VMs live forever."""
        lifetime = capped(
            self.config.schedule.lifetime(attempt, self.lifetime_rng), self.config, self.progress.preemptions
        )
        self.lifetimes.append(lifetime)
        return lifetime

    def _supervise(self, attempt: int, process: subprocess.Popen, lifetime: Lifetime) -> AttemptEnd:
        """Watch one attempt until it exits; preempt it when its simulated uptime (or kill point) is up, on the
        provider's timeline: rebalance recommendation, metadata notice, SIGTERM, SIGKILL."""
        clock = self.run_clock.attempts[-1]  # this attempt's: _attempt emitted its launch
        timeout = self.config.attempt_timeout_s
        eviction: Eviction | None = None
        signals: list[str] = []
        while process.poll() is None:
            self._follow_events(attempt)
            now, uptime = time.monotonic(), clock.uptime(time.time())
            if self.tail.done_step is not None:  # finished: never preempted, stopped if it lingers
                self._stop_after_done(attempt, process)
            elif timeout is not None and uptime >= timeout:
                self._emit(STOP, attempt=attempt, reason="attempt timeout", step=self.tail.last_step)
                return AttemptEnd(attempt, Cause.TIMEOUT, reap(process))
            elif eviction is None and preemption_due(lifetime, uptime, self._progress_of(attempt)):
                write = self._save_write(lifetime, attempt)
                if write is not False:
                    eviction = self._preempt(attempt, process, uptime, write, signals)
                continue
            elif eviction is not None and self._evict(attempt, process, eviction, uptime, now, signals):
                continue
            elif eviction is None and self._rebalance_due(lifetime, uptime):
                self._rebalance(attempt)
            time.sleep(self._poll_real_s(lifetime, clock, eviction))
        self._follow_events(attempt, final=True)
        self._disarm()
        code = process.returncode
        progressed = self.tail.attempt == attempt and (self.tail.last_step or 0) > (self.tail.resumed_step or 0)
        if self.tail.done_step is not None:
            return AttemptEnd(attempt, Cause.DONE, code)
        if eviction is not None:  # signalled, or gone on the metadata notice alone
            self.progress.preemptions += 1
            return AttemptEnd(attempt, Cause.PREEMPTED, code, progressed)
        if self.bucket is not None and self.bucket.overlaps(clock.launch_t, time.time()):
            return AttemptEnd(attempt, Cause.STORAGE_OUTAGE, code, progressed)  # the harness's bucket died, not the job
        return AttemptEnd(attempt, Cause.CRASH, code, progressed)

    def _poll_real_s(self, lifetime: Lifetime, clock: AttemptClock, eviction: Eviction | None) -> float:
        """Sleep until the next poll, or less when the next step of the preemption falls due sooner
        (at K× a poll is long)."""
        at, wait = time.time(), POLL_REAL_S
        if eviction is None and lifetime.uptime_s is not None:
            rebalance = self._rebalance_at(lifetime)
            due = lifetime.uptime_s if rebalance is None else min(lifetime.uptime_s, rebalance)
            wait = min(wait, clock.real_until(due, at))
        elif eviction is not None and eviction.sigterm_at_uptime is not None:
            wait = min(wait, clock.real_until(eviction.sigterm_at_uptime, at))
        if eviction is not None and eviction.kill_at is not None:
            wait = min(wait, eviction.kill_at - time.monotonic())
        return max(wait, MIN_POLL_REAL_S)

    def _progress_of(self, attempt: int) -> tuple[int, int] | None:
        """(step reached, step resumed from) of this attempt, once it has reported a step."""
        tail = self.tail
        if tail.attempt != attempt or tail.last_step is None:
            return None
        return tail.last_step, tail.resumed_step or 0

    def _save_write(self, lifetime: Lifetime, attempt: int) -> str | None | Literal[False]:
        """For a kill inside a save: the write to kill in (False while none has started yet).
        For any other kill point: None, preempt now."""
        if not lifetime.in_save or self.save_watch is None:
            return None
        if not self._armed:
            self.save_watch.arm(self.base_env["SPOTSIM_CHECKPOINT_URI"])
            self._armed = True
        return self.save_watch.wait_for_write(POLL_REAL_S) or False

    def _preempt(
        self, attempt: int, process: subprocess.Popen, uptime: float, write: str | None, signals: list[str]
    ) -> Eviction:
        """t0: a SIGKILL without notice, or the provider's notice (metadata, then SIGTERM when due)."""
        if self._sigkill(attempt):
            signals.append(self._signal(attempt, process, signal.SIGKILL, write))
            self._disarm()  # a held upload's response goes out only now that the signal is out
            return Eviction(None)
        provider = self.config.provider
        if provider.rebalance_lead_s is not None and not self._rebalanced:
            self._rebalance(attempt)  # a recommendation may come together with the notice
        sigterm_at = uptime + provider.notice_s
        deadline = time.time() + self.run_clock.attempts[-1].real_until(sigterm_at, time.time())
        self.metadata.notice(deadline)
        self._emit(
            NOTICE,
            attempt=attempt,
            provider=provider.name,
            cloud=provider.cloud,
            notice_s=provider.notice_s,
            deadline_t=deadline,
            step=self.tail.last_step,
        )
        self.progress.state = "noticed"
        eviction = Eviction(sigterm_at, write=write)
        self._evict(attempt, process, eviction, uptime, time.monotonic(), signals)
        return eviction

    def _evict(
        self,
        attempt: int,
        process: subprocess.Popen,
        eviction: Eviction,
        uptime: float,
        now: float,
        signals: list[str],
    ) -> bool:
        """Send the signal that is due now, if one is (:meth:`Eviction.due`). Whether one was sent."""
        approved = eviction.sigterm_at_uptime is not None and approved_early(self.config, self.metadata)
        sig = eviction.due(uptime, now, self.config.grace_s, approved=approved)
        if sig is None:
            return False
        if sig == signal.SIGTERM:
            signals.append(self._signal(attempt, process, sig, eviction.write, approved=approved))
            self._disarm()
        else:
            signals.append(self._signal(attempt, process, sig))
        return True

    def _sigkill(self, attempt: int) -> bool:
        """Whether this attempt's preemption comes without notice: drawn once, when first needed."""
        if attempt not in self._sigkill_draws:
            self._sigkill_draws[attempt] = self.config.kill.draw_sigkill(self.rng)
        return self._sigkill_draws[attempt]

    def _rebalance_at(self, lifetime: Lifetime) -> float | None:
        """The uptime at which this attempt's rebalance recommendation is due; None: none is (still) to come."""
        lead = self.config.provider.rebalance_lead_s
        if lead is None or self._rebalanced or lifetime.uptime_s is None:
            return None
        return lifetime.uptime_s - lead

    def _rebalance_due(self, lifetime: Lifetime, uptime: float) -> bool:
        return (due := self._rebalance_at(lifetime)) is not None and uptime >= due

    def _rebalance(self, attempt: int) -> None:
        """AWS's rebalance recommendation: the instance is at elevated risk (never for a SIGKILL without notice)."""
        self._rebalanced = True
        if self._sigkill(attempt):
            return
        now = time.time()
        self.metadata.rebalance(now)
        self._emit(REBALANCE, attempt=attempt, notice_t=now, step=self.tail.last_step)

    def _disarm(self) -> None:
        if self._armed and self.save_watch is not None:
            self.save_watch.release()
        self._armed = False

    def _stop_after_done(self, attempt: int, process: subprocess.Popen) -> None:
        """A job that wrote ``done`` but keeps running (one that loops forever) is stopped after a wait."""
        try:
            process.wait(DONE_EXIT_WAIT_REAL_S)
            return
        except subprocess.TimeoutExpired:
            pass
        self._emit(STOP, attempt=attempt, reason=f"still running {DONE_EXIT_WAIT_REAL_S:g} s after done")
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_REAL_S)
        except subprocess.TimeoutExpired:
            _kill_group(process, signal.SIGKILL)
            process.wait()

    def _signal(
        self,
        attempt: int,
        process: subprocess.Popen,
        sig: signal.Signals,
        write: str | None = None,
        approved: bool = False,
    ) -> str:
        details: dict[str, Any] = {"write": write} if write is not None else {}
        if approved:
            details["approved"] = True
        self._emit(
            SIGNAL,
            attempt=attempt,
            signal=sig.name,
            step=self.tail.last_step,
            in_save=write is not None,
            **details,
        )
        self.progress.state = "preempting" if sig == signal.SIGTERM else "killed"
        _kill_group(process, sig)
        return sig.name

    def _env(self, attempt: int, events: Path) -> dict[str, str]:
        disk = str(self.local_disk.absolute())
        return self.base_env | {
            "SPOTSIM_RUN_ID": self.run_id,
            "SPOTSIM_ATTEMPT": str(attempt),
            "SPOTSIM_EVENTS": str(events),
            "SPOTSIM_LOCAL_DIR": disk,
            "TMPDIR": disk,
            **self.metadata.env(),
        }

    def _prepare_local_disk(self, attempt: int) -> None:
        """A new VM's local disk is empty; ``--local-disk keep`` models a VM stopped with its boot disk."""
        if attempt == 0 or self.config.local_disk == "wipe":
            shutil.rmtree(self.local_disk, ignore_errors=True)
        self.local_disk.mkdir(parents=True, exist_ok=True)

    # -- between attempts -------------------------------------------------------

    def _give_up(self, end: AttemptEnd) -> bool:
        if not self.patience.spent(end, self.progress.crashes):
            return False
        self.gave_up = self.patience.reason
        return True

    def _restart_delay(self, attempt: int) -> None:
        """Wait for the next VM: capacity (a replayed trace's gap, unbilled), then boot (billed)."""
        capacity = self.lifetimes[attempt].capacity_wait_s if self.ends[-1].cause == Cause.PREEMPTED else 0.0
        delay = self.config.restart_delay_s
        self._emit(RESTART_DELAY, attempt=attempt, delay_s=delay, capacity_wait_s=capacity)
        self.progress.state = "waiting for a VM"
        deadline = time.monotonic() + (delay + capacity) / self.config.time_scale
        while (left := deadline - time.monotonic()) > 0:
            self.on_progress(self.progress)
            time.sleep(min(POLL_REAL_S * 5, left))

    # -- the run log --------------------------------------------------------------

    def _emit(self, event: str, *, t: float | None = None, **fields: object) -> None:
        record = {"t": time.time() if t is None else t, "event": event, **fields}
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
            self._emit(MALFORMED, attempt=attempt, problem=problem)
        if self.bucket is not None:
            for event in self.bucket.check():  # a dead emulator is restarted on the same root and port
                self._emit(event.pop("event"), attempt=attempt, **event)
            for fault in self.bucket.drain_faults():
                self._emit(STORAGE_FAULT, attempt=attempt, **fault)
        while not self._requests.empty():  # the job's requests to the metadata server, in arrival order
            request = self._requests.get()
            self._emit(METADATA_REQUEST, t=request.t, attempt=attempt, **request.to_event())
        p = self.progress
        p.step, p.checkpoints, p.lost_steps = self.tail.last_step or 0, self.tail.checkpoints, self.tail.lost_steps
        self.on_progress(p)


def approved_early(config: RunConfig, metadata: MetadataServer) -> bool:
    """An Azure job approved its Preempt event: the SIGTERM need not wait for the notice's end."""
    return config.provider.approvable and metadata.approved_at() is not None


def may_preempt(config: RunConfig, preemptions: int) -> bool:
    """Until ``--max-preemptions`` is reached."""
    return config.max_preemptions is None or preemptions < config.max_preemptions


def capped(lifetime: Lifetime, config: RunConfig, preemptions: int) -> Lifetime:
    """A drawn VM lifetime as the run allows it: none once ``--max-preemptions`` is reached, and a legacy
    preemptible VM's uptime cap (24 h), whatever the schedule."""
    if not may_preempt(config, preemptions):
        return Lifetime(None)
    cap = config.provider.max_uptime_s
    if cap is not None and lifetime.at_step is None and (lifetime.uptime_s is None or lifetime.uptime_s > cap):
        return replace(lifetime, uptime_s=cap, hard_stop=True)
    return lifetime


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
    """The job's process group and anything below it in a session of its own (a torchrun agent's workers)."""
    signal_tree(process.pid, sig)


def reap(process: subprocess.Popen) -> int:
    _kill_group(process, signal.SIGKILL)
    return process.wait()


def stderr_tail(path: Path) -> str:
    """The end of an attempt's stderr, for the crash message."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - STDERR_TAIL_BYTES))
        return f.read().decode(errors="replace")
