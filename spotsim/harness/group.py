"""Multi-node runs (``--nodes N``): N torchrun agents, each a VM of its own, re-formed after every loss.

Each node is one ``torchrun`` agent started in its own process group, with its own local disk, its own
metadata server and its own drawn lifetime. The agents meet through c10d rendezvous on a TCP store the
harness hosts (:class:`RendezvousStore`), so no node's loss takes the rendezvous with it. The harness
writes the rendezvous arguments into the command (:func:`node_command`); the job's own arguments are
left as they are.

A preempted node gets the provider's timeline like a single VM (:mod:`spotsim.harness.runner`): the
notice on *its* metadata server, then SIGTERM and SIGKILL to *its* processes only. Its workers are not in
its process group (torchrun starts each in a session of its own), so signals go to the agent's group and
to every process below the agent (:func:`process_tree`), as a VM's shutdown reaches every process on it.

Attempts belong to the group. An attempt is the group training from one resume: it starts when all N
nodes are up (``launch``) and ends when any node is lost (``exit``, with the ``node`` that ended it). The
survivors' agents stay up, notice the lost peer, stop their workers and wait in the rendezvous; before the
attempt's ``exit`` the harness waits for those workers to be gone (a collective that never returns is a
hang, reported and ended after :data:`DRAIN_REAL_S`). After the restart delay the lost node comes back as
a new VM, the agents re-form the group, and the next attempt begins; its start-up (``launch`` → the job's
``start``) is the re-rendezvous plus the restore. A survivor preempted during that recovery is lost too
and waited for. ``node_launch`` and ``node_exit`` events record each VM, for per-node billing and the
timeline's lanes.

Only global rank 0 writes the job's events (``EventLog.from_env`` is silent on other ranks); the harness
reads every node's events file, so rank 0 may move between nodes.
"""

from __future__ import annotations

import contextlib
import logging
import math
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
from typing import Any

import numpy as np

from spotsim.clock import RunClock
from spotsim.errors import InvalidOption, JobCrashed
from spotsim.events import (
    EXIT,
    INTERRUPTED,
    LAUNCH,
    MALFORMED,
    METADATA_REQUEST,
    NODE_EXIT,
    NODE_LAUNCH,
    NOTICE,
    RESTART_DELAY,
    RUN,
    SIGNAL,
    START,
    STOP,
    STORAGE_FAULT,
    Cause,
    EventLog,
)
from spotsim.harness.bucket import EmbeddedBucket
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import JobEventReader, RunLogTail
from spotsim.harness.runner import (
    DONE_EXIT_WAIT_REAL_S,
    MAX_IDLE_ATTEMPTS,
    POLL_REAL_S,
    STDERR_TAIL_BYTES,
    AttemptEnd,
    Progress,
    preemption_due,
)
from spotsim.harness.torchrun import node_command
from spotsim.lifeline import Reaper, alive, process_tree, signal_tree
from spotsim.metadata import MetadataRequest, MetadataServer
from spotsim.preemption import Lifetime, format_kill_points

log = logging.getLogger(__name__)

DRAIN_REAL_S = 90.0  # a survivor's workers must be gone this long after a loss, or their collective hung
STOP_GRACE_REAL_S = 2.0

JOIN_SLACK_REAL_S = 600.0  # the rendezvous waits this long for a replacement, beyond its restart delay


class RendezvousStore:
    """The c10d TCP store the agents rendezvous on, hosted by the harness for the whole run."""

    def __enter__(self) -> RendezvousStore:
        try:
            from torch.distributed import TCPStore
        except ImportError:
            raise InvalidOption("--nodes runs torchrun jobs: install torch (pip install torch)") from None
        self._store = TCPStore("127.0.0.1", 0, is_master=True, multi_tenant=True, wait_for_workers=False)
        self.endpoint = f"127.0.0.1:{self._store.port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        del self._store


# -- one node's VM ------------------------------------------------------------------------------------------


@dataclass
class NodeVM:
    """One VM of one node: its agent, its lifetime, where it is in its preemption."""

    node: int
    vm: int  # the node's VMs so far: 0 for the first
    process: subprocess.Popen
    lifetime: Lifetime
    origin_sim_s: float  # the group's simulated time its uptime counts from
    events: JobEventReader
    stderr: Path
    sigkill: bool | None = None  # drawn when first needed: a preemption without notice
    sigterm_at_uptime: float | None = None  # the notice is out; SIGTERM is due at this uptime
    kill_at: float | None = None  # monotonic time of the SIGKILL after the grace
    evicted: bool = False  # the harness preempted it: its exit is no crash

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class _Slot:
    """A node's place in the group: its VM while up, else when its next VM is due."""

    node: int
    vms: int = 0
    up: NodeVM | None = None
    due_real: float = 0.0  # monotonic time its next VM launches
    capacity_wait_s: float = 0.0  # the wait for capacity before that VM (unbilled)


class GroupSupervisor:
    """Supervises a ``--nodes N`` run: the attempts of the group, the VMs of each node, and the run log.

    Same interface as :class:`~spotsim.harness.runner.Supervisor` (``run()``, ``run_id``, ``run_clock``,
    ``crash``, ``gave_up``); attempts are the group's.
    """

    def __init__(
        self,
        config: RunConfig,
        env: dict[str, str],
        *,
        local_disk: Path,
        bucket: EmbeddedBucket | None = None,
        on_progress: Callable[[Progress], None] = lambda p: None,
    ):
        self.config, self.base_env, self.on_progress = config, env, on_progress
        self.local_disk, self.bucket = local_disk, bucket
        self.run_id = uuid.uuid4().hex[:12]
        self.run_log = EventLog(config.out / "events.jsonl")
        self.tail = RunLogTail()
        self.run_clock = RunClock(config.clock)
        self.progress = Progress()
        self.slots = [_Slot(i) for i in range(config.nodes)]
        self.kill_rng = np.random.default_rng(config.seed)
        self.node_rngs = [np.random.default_rng([config.seed, i]) for i in range(config.nodes)]
        self.ends: list[AttemptEnd] = []
        self.crash: JobCrashed | None = None
        self.gave_up: str | None = None
        self.attempt = -1
        self.open = False  # an attempt is under way (between its launch and its exit)
        self.down_since: float | None = None  # unix time the group lost its last attempt
        self.lost: list[tuple[int, float]] = []  # (node, capacity wait) of the losses since the last attempt
        self._idle_streak = 0
        self.giving_up = False
        self._requests: queue.SimpleQueue[tuple[int, MetadataRequest]] = queue.SimpleQueue()

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> list[AttemptEnd]:
        attempts_dir = self.config.out / "attempts"
        shutil.rmtree(attempts_dir, ignore_errors=True)
        attempts_dir.mkdir(parents=True)
        self._emit(
            RUN,
            run_id=self.run_id,
            command=list(self.config.command),
            time_scale=self.config.time_scale,
            nodes=self.config.nodes,
        )
        try:
            with contextlib.ExitStack() as stack:
                self.reaper = stack.enter_context(Reaper())
                self.rendezvous = stack.enter_context(RendezvousStore())
                self.metadata = [
                    stack.enter_context(MetadataServer(self.config.provider.cloud, on_request=self._request_of(i)))
                    for i in range(self.config.nodes)
                ]
                try:
                    return self._loop()
                except KeyboardInterrupt:  # Ctrl-C: every VM stops, the run log says so
                    self._emit(INTERRUPTED, attempt=max(self.attempt, 0))
                    self._stop_all(Cause.INTERRUPTED)
                    return self.ends
        finally:
            self.run_log.close()

    def _loop(self) -> list[AttemptEnd]:
        while True:
            self._follow_events()
            if self.tail.done_step is not None and self.open:
                self._finish()
                return self.ends
            if self.giving_up:
                self._stop_all(self.ends[-1].cause)
                return self.ends
            for slot in self.slots:
                if slot.up is not None:
                    self._watch(slot, slot.up)
                elif time.monotonic() >= slot.due_real and not self.giving_up:
                    self._launch_vm(slot)
            if not self.open and all(s.up is not None and not s.up.evicted for s in self.slots):
                self._begin_attempt()
            self.on_progress(self.progress)
            time.sleep(POLL_REAL_S)

    def sim_now(self, at: float | None = None) -> float:
        """The group's simulated time: the run clock, plus the recovery under way at K×."""
        at = time.time() if at is None else at
        recovering = (at - self.down_since) * self.config.time_scale if self.down_since is not None else 0.0
        return self.run_clock.sim_s(at) + recovering

    # -- attempts of the group ----------------------------------------------------------------------------

    def _begin_attempt(self) -> None:
        """All nodes are up: the next attempt of the group begins (after the wait for the lost nodes)."""
        now = time.time()
        if self.down_since is not None:
            waited = (now - self.down_since) * self.config.time_scale
            capacity = max((c for _, c in self.lost), default=0.0)
            self._emit(
                RESTART_DELAY, attempt=self.attempt, delay_s=max(0.0, waited - capacity), capacity_wait_s=capacity
            )
            self.down_since, self.lost = None, []
        self.attempt += 1
        self.open = True
        if self.config.schedule.kind == "steps":  # kill points belong to the group's attempts
            self._place_group_lifetime()
        vms = [s.up for s in self.slots if s.up is not None]
        victim = min(vms, key=self._remaining)  # the group lives as long as its shortest-lived node
        remaining = self._remaining(victim)
        kill_point = victim.lifetime.at_step
        self._emit(
            LAUNCH,
            attempt=self.attempt,
            preempt_at_s=None if math.isinf(remaining) else remaining,
            preempt_at_step=kill_point,
            kill_point=format_kill_points((kill_point,), (False,)) if kill_point else None,
            capacity_wait_s=0.0,
            hard_stop=victim.lifetime.hard_stop,
        )
        self.progress.attempt, self.progress.state = self.attempt, "running"

    def _place_group_lifetime(self) -> None:
        """Kill points (``steps:``, spotsim verify's) preempt attempt k's node k mod N, at the group's step."""
        node = self.attempt % self.config.nodes
        for slot in self.slots:
            vm = slot.up
            assert vm is not None
            if slot.node == node:
                vm.lifetime = self._capped(self.config.schedule.lifetime(self.attempt, self.kill_rng))
                vm.origin_sim_s = self.sim_now()
            elif not vm.evicted:
                vm.lifetime = Lifetime(None)

    def _remaining(self, vm: NodeVM | None) -> float:
        """Simulated seconds until this VM's drawn preemption (inf: none drawn, or placed by step)."""
        if vm is None or vm.lifetime.uptime_s is None:
            return math.inf
        return max(0.0, vm.lifetime.uptime_s - (self.sim_now() - vm.origin_sim_s))

    def _end_attempt(self, cause: Cause, exit_code: int, node: int) -> None:
        """The group lost ``node``: wait for the survivors' workers to stop, then close the attempt (a crash
        of the job if they hung instead)."""
        if self._drain(node):
            cause = Cause.CRASH
        self._follow_events()
        self._emit(EXIT, attempt=self.attempt, exit_code=exit_code, cause=cause, node=node)
        progressed = (self.tail.last_step or 0) > (self.tail.resumed_step or 0) and self.tail.attempt == self.attempt
        self.ends.append(AttemptEnd(self.attempt, cause, exit_code, progressed))
        self.giving_up = self._give_up(self.ends[-1])
        self.open = False
        self.down_since = time.time()

    def _drain(self, lost: int) -> bool:
        """Wait until the workers each survivor ran at the loss are gone: they must notice the lost peer.
        Workers still there after :data:`DRAIN_REAL_S` hang waiting for it (in a collective, or in a save
        that waits for every rank's files): reported, and their node is stopped as a crash (the hang ends;
        the node comes back as a new VM)."""
        survivors = [s.up for s in self.slots if s.up is not None and s.node != lost]
        workers = {vm.node: process_tree(vm.pid) for vm in survivors}
        deadline, hung = time.monotonic() + DRAIN_REAL_S, False
        while any(alive(p) for pids in workers.values() for p in pids) and time.monotonic() < deadline:
            self._follow_events()
            time.sleep(POLL_REAL_S)
        for vm in survivors:
            if any(alive(p) for p in workers[vm.node]):
                reason = (
                    f"node {vm.node}'s workers were still running {DRAIN_REAL_S:g} s after node {lost} was lost: "
                    "they hang waiting for it (a collective or a save that waits for every rank)"
                )
                log.warning("run %s: %s", self.run_id, reason)
                self._emit(STOP, attempt=self.attempt, reason=reason, node=vm.node, step=self.tail.last_step)
                self._stop_vm(vm)
                self._lose(self.slots[vm.node], vm, Cause.CRASH, vm.process.returncode or -signal.SIGKILL, drain=False)
                hung = True
        return hung

    def _finish(self) -> None:
        """The job reported ``done``: every node's agent should exit now; one that lingers is stopped."""
        deadline = time.monotonic() + DONE_EXIT_WAIT_REAL_S
        for slot in self.slots:
            vm = slot.up
            if vm is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                vm.process.wait(max(0.0, deadline - time.monotonic()))
            if vm.process.poll() is None:
                self._emit(
                    STOP,
                    attempt=self.attempt,
                    node=vm.node,
                    reason=f"still running {DONE_EXIT_WAIT_REAL_S:g} s after done",
                )
                self._stop_vm(vm)
            self._close_vm(slot, vm, Cause.DONE)
        self._follow_events()
        code = 0
        self._emit(EXIT, attempt=self.attempt, exit_code=code, cause=Cause.DONE)
        self.ends.append(AttemptEnd(self.attempt, Cause.DONE, code))

    def _give_up(self, end: AttemptEnd) -> bool:
        if end.cause in (Cause.CRASH, Cause.TIMEOUT):
            return self.progress.crashes >= self.config.max_crashes
        if end.cause == Cause.DONE:
            return False
        self._idle_streak = self._idle_streak + 1 if not end.progressed else 0
        if self._idle_streak >= MAX_IDLE_ATTEMPTS:
            self.gave_up = (
                f"{self._idle_streak} attempts in a row lost a node before computing a step: the group never "
                "stays up long enough under this schedule (lower --preempt-rate or --time-scale)"
            )
            return True
        return False

    def _stop_all(self, cause: Cause) -> None:
        for slot in self.slots:
            if slot.up is not None:
                vm = slot.up
                self._stop_vm(vm, sig=signal.SIGKILL)
                self._close_vm(slot, vm, cause)
        if self.open:
            self._follow_events()
            self._emit(EXIT, attempt=self.attempt, exit_code=-signal.SIGKILL, cause=cause)
            if not self.ends or self.ends[-1].attempt != self.attempt:
                self.ends.append(AttemptEnd(self.attempt, cause, -signal.SIGKILL))
            self.open = False

    # -- one node's VM ----------------------------------------------------------------------------------------

    def _launch_vm(self, slot: _Slot) -> None:
        vm_index, node = slot.vms, slot.node
        slot.vms += 1
        lifetime = self._capped(self._draw(slot, vm_index))
        self.metadata[node].new_vm()
        disk = (self.local_disk / f"node-{node}").absolute()
        if vm_index == 0 or self.config.local_disk == "wipe":
            shutil.rmtree(disk, ignore_errors=True)
        disk.mkdir(parents=True, exist_ok=True)
        stem = self.config.out / "attempts" / f"node-{node}.vm-{vm_index}"
        events = Path(f"{stem}.events.jsonl").absolute()
        command = node_command(
            self.config.command, self.config.nodes, self.rendezvous.endpoint, self.run_id, self._join_timeout()
        )
        env = self.base_env | {
            "SPOTSIM_RUN_ID": self.run_id,
            "SPOTSIM_ATTEMPT": str(max(self.attempt + (0 if self.open else 1), 0)),
            "SPOTSIM_EVENTS": str(events),
            "SPOTSIM_LOCAL_DIR": str(disk),
            "SPOTSIM_NODE": str(node),
            "SPOTSIM_NODES": str(self.config.nodes),
            "TMPDIR": str(disk),
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # the agents share the harness's store, not a node's
            **self.metadata[node].env(),
        }
        with open(f"{stem}.stdout", "wb") as stdout, open(f"{stem}.stderr", "wb") as stderr:
            process = subprocess.Popen(
                list(command),
                env=env,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a VM of its own: signals reach only its processes
            )
        self.reaper.watch(process.pid)
        slot.up = NodeVM(
            node, vm_index, process, lifetime, self.sim_now(), JobEventReader(events), Path(f"{stem}.stderr")
        )
        self._emit(
            NODE_LAUNCH,
            node=node,
            vm=vm_index,
            attempt=max(self.attempt + (0 if self.open else 1), 0),
            preempt_at_s=lifetime.uptime_s,
            capacity_wait_s=slot.capacity_wait_s,
            hard_stop=lifetime.hard_stop,
        )

    def _draw(self, slot: _Slot, vm_index: int) -> Lifetime:
        """Each node's VMs draw on the node's own generator (``fixed:T0,T1…``: every node's VM j lives Tj);
        kill points are placed per attempt instead (:meth:`_place_group_lifetime`)."""
        if self.config.schedule.kind == "steps":
            return Lifetime(None)
        return self.config.schedule.lifetime(vm_index, self.node_rngs[slot.node])

    def _may_preempt(self) -> bool:
        """Until ``--max-preemptions`` is reached (a lifetime drawn before then no longer counts)."""
        limit = self.config.max_preemptions
        return limit is None or self.progress.preemptions < limit

    def _capped(self, lifetime: Lifetime) -> Lifetime:
        if not self._may_preempt():
            return Lifetime(None)
        cap = self.config.provider.max_uptime_s
        if cap is not None and lifetime.at_step is None and (lifetime.uptime_s is None or lifetime.uptime_s > cap):
            return replace(lifetime, uptime_s=cap, hard_stop=True)
        return lifetime

    def _join_timeout(self) -> float:
        """Real seconds the survivors wait in the rendezvous for a replacement."""
        waits = self.config.restart_delay_s / self.config.time_scale
        return waits + JOIN_SLACK_REAL_S

    def _watch(self, slot: _Slot, vm: NodeVM) -> None:
        """One poll of an up VM: its exit, or the next step of its preemption when due."""
        if vm.process.poll() is not None:
            cause = Cause.PREEMPTED if vm.evicted else Cause.CRASH
            self._lose(slot, vm, cause, vm.process.returncode)
            return
        if self.tail.done_step is not None:
            return
        uptime = self.sim_now() - vm.origin_sim_s
        if vm.sigterm_at_uptime is None and vm.kill_at is None and not vm.evicted:
            if self._may_preempt() and preemption_due(vm.lifetime, uptime, self._progress()):
                self._preempt(vm, uptime)
            return
        self._evict(vm, uptime)

    def _progress(self) -> tuple[int, int] | None:
        if not self.open or self.tail.attempt != self.attempt or self.tail.last_step is None:
            return None
        return self.tail.last_step, self.tail.resumed_step or 0

    def _preempt(self, vm: NodeVM, uptime: float) -> None:
        """t0 for one node: SIGKILL without notice, or the provider's notice on that node's metadata server."""
        vm.evicted = True
        self.progress.preemptions += 1
        if vm.sigkill is None:
            vm.sigkill = self.config.kill.draw_sigkill(self.kill_rng)
        if vm.sigkill:
            self._signal(vm, signal.SIGKILL)
            return
        provider = self.config.provider
        vm.sigterm_at_uptime = uptime + provider.notice_s
        deadline = time.time() + provider.notice_s / self._rate()
        self.metadata[vm.node].notice(deadline)
        self._emit(
            NOTICE,
            attempt=self.attempt,
            node=vm.node,
            provider=provider.name,
            cloud=provider.cloud,
            notice_s=provider.notice_s,
            deadline_t=deadline,
            step=self.tail.last_step,
        )
        self.progress.state = f"node {vm.node} noticed"
        self._evict(vm, uptime)

    def _rate(self) -> float:
        """Simulated seconds per real second now: K while the group computes (or waits), 1 otherwise."""
        current = self.run_clock.current
        if not self.open or current is None:
            return self.config.time_scale
        return current.rate(time.time())

    def _evict(self, vm: NodeVM, uptime: float) -> None:
        """The SIGTERM at the end of the notice (or at an Azure approval), the SIGKILL after the grace."""
        if vm.sigterm_at_uptime is not None:
            approved = self.config.provider.approvable and self.metadata[vm.node].approved_at() is not None
            if uptime >= vm.sigterm_at_uptime or approved:
                self._signal(vm, signal.SIGTERM, approved=approved)
                vm.sigterm_at_uptime, vm.kill_at = None, time.monotonic() + self.config.grace_s
        elif vm.kill_at is not None and time.monotonic() >= vm.kill_at:
            self._signal(vm, signal.SIGKILL)
            vm.kill_at = None

    def _signal(self, vm: NodeVM, sig: signal.Signals, *, approved: bool = False) -> None:
        """A VM's shutdown: the signal reaches the agent's group and every process below the agent."""
        details: dict[str, Any] = {"approved": True} if approved else {}
        self._emit(
            SIGNAL,
            attempt=self.attempt,
            node=vm.node,
            signal=sig.name,
            step=self.tail.last_step,
            in_save=False,
            **details,
        )
        self.progress.state = f"node {vm.node} {'preempting' if sig == signal.SIGTERM else 'killed'}"
        signal_tree(vm.pid, sig)

    def _lose(self, slot: _Slot, vm: NodeVM, cause: Cause, exit_code: int, *, drain: bool = True) -> None:
        """A node's VM is gone: its attempt of the group ends, and its next VM is due after the restart delay."""
        self._close_vm(slot, vm, cause, exit_code)
        capacity = vm.lifetime.capacity_wait_s if cause == Cause.PREEMPTED else 0.0
        slot.capacity_wait_s = capacity
        self.lost.append((vm.node, capacity))
        if cause == Cause.CRASH:
            self.progress.crashes += 1
            self.crash = JobCrashed(self.attempt, exit_code, _tail(vm.stderr))
            log.warning("run %s: node %d: %s", self.run_id, vm.node, self.crash)
        if self.open and drain:  # (not drain: lost while the group winds down a loss; that attempt is ending)
            self._end_attempt(cause, exit_code, vm.node)
        # The next VM boots once the group has stopped (the restart delay counts from the attempt's exit).
        slot.due_real = time.monotonic() + (self.config.restart_delay_s + capacity) / self.config.time_scale

    def _close_vm(self, slot: _Slot, vm: NodeVM, cause: Cause, exit_code: int | None = None) -> None:
        signal_tree(vm.pid, signal.SIGKILL)  # nothing of a gone VM outlives it
        code = vm.process.wait() if exit_code is None else exit_code
        self.reaper.release(vm.pid)
        self._follow_events()
        self._emit(NODE_EXIT, node=vm.node, vm=vm.vm, attempt=max(self.attempt, 0), exit_code=code, cause=cause)
        slot.up = None

    def _stop_vm(self, vm: NodeVM, sig: signal.Signals = signal.SIGTERM) -> None:
        signal_tree(vm.pid, sig)
        try:
            vm.process.wait(STOP_GRACE_REAL_S)
        except subprocess.TimeoutExpired:
            signal_tree(vm.pid, signal.SIGKILL)
            vm.process.wait()

    # -- the run log --------------------------------------------------------------------------------------

    def _request_of(self, node: int) -> Callable[[MetadataRequest], None]:
        return lambda request: self._requests.put((node, request))

    def _emit(self, event: str, *, t: float | None = None, **fields: object) -> None:
        record = {"t": time.time() if t is None else t, "event": event, **fields}
        self.run_log.write(record)
        self.tail.apply(record)
        self.run_clock.apply(record)

    def _follow_events(self) -> None:
        """Copy every node's new job events into the run log (a ``start`` is numbered with the group's attempt)."""
        for slot in self.slots:
            vm = slot.up
            if vm is None:
                continue
            events, problems = vm.events.read_new(final=vm.process.poll() is not None)
            for event in events:
                if event["event"] == START:
                    event = event | {"attempt": self.attempt, "node": vm.node}
                self.run_log.write(event)
                self.tail.apply(event)
                self.run_clock.apply(event)
            for problem in problems:
                self._emit(MALFORMED, attempt=max(self.attempt, 0), node=vm.node, problem=problem)
        if self.bucket is not None:
            for event in self.bucket.check():
                self._emit(event.pop("event"), attempt=max(self.attempt, 0), **event)
            for fault in self.bucket.drain_faults():
                self._emit(STORAGE_FAULT, attempt=max(self.attempt, 0), **fault)
        while not self._requests.empty():
            node, request = self._requests.get()
            self._emit(METADATA_REQUEST, t=request.t, attempt=max(self.attempt, 0), node=node, **request.to_event())
        p = self.progress
        p.step, p.checkpoints, p.lost_steps = self.tail.last_step or 0, self.tail.checkpoints, self.tail.lost_steps


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - STDERR_TAIL_BYTES))
        return f.read().decode(errors="replace")
