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
nodes are up (``launch``) and ends when any node is lost (``exit``, at the loss, with the ``node`` that
ended it). The survivors' agents stay up, notice the lost peer, stop their workers and wait in the
rendezvous. After the restart delay the lost node comes back as a new VM and the next attempt begins; its
start-up (``launch`` → the job's ``start``) is the survivors' noticing, the re-rendezvous and the restore:
the group's restart overhead. A survivor's workers still running :data:`DRAIN_REAL_S` after the loss hang
(a collective, or a save that waits for every rank): reported, and their node stopped as the job's crash.
A survivor preempted during a recovery is lost too and waited for. A second ``start`` in one attempt with
no node lost means torchrun restarted failed workers by itself: the job's crash. ``node_launch`` and
``node_exit`` events record each VM, for per-node billing and the timeline's lanes.

Only global rank 0 writes the job's events (``EventLog.from_env`` is silent on other ranks); the harness
reads every node's events file, so rank 0 may move between nodes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
    POLL_REAL_S,
    STOP_GRACE_REAL_S,
    AttemptEnd,
    Eviction,
    Patience,
    Progress,
    approved_early,
    capped,
    may_preempt,
    preemption_due,
    stderr_tail,
)
from spotsim.harness.torchrun import node_command
from spotsim.lifeline import Reaper, alive, children, signal_tree
from spotsim.metadata import MetadataRequest, MetadataServer
from spotsim.preemption import Lifetime, format_kill_points

log = logging.getLogger(__name__)

DRAIN_REAL_S = 120.0  # a survivor's workers must be gone this long after a loss, or they hang

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
    eviction: Eviction | None = None  # the harness preempted it (its exit is no crash): the signals to come

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


@dataclass
class _Recovery:
    """The group's wait from an attempt's exit to the next launch: the lost nodes' restart delays (and
    capacity waits), on the simulated clock at K, however long the real launches take."""

    since_t: float  # unix time the attempt ended (the loss)
    since_real: float  # the same, monotonic
    planned_real_s: float = 0.0  # until the last lost node's replacement is due
    capacity_s: float = 0.0  # the longest wait for capacity among them (unbilled)

    def plan(self, due_real: float, capacity_s: float) -> None:
        self.planned_real_s = max(self.planned_real_s, due_real - self.since_real)
        self.capacity_s = max(self.capacity_s, capacity_s)


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
        self.started = False  # the open attempt's workers reported their start
        self.recovery: _Recovery | None = None  # the group is waiting for lost nodes
        self.draining: dict[int, tuple[NodeVM, list[int], float]] = {}  # survivors' workers at a loss, deadline
        self.giving_up = False
        self.patience = Patience(config.max_crashes, "lost a node", "the group never stays up")
        self._requests: queue.SimpleQueue[tuple[int, MetadataRequest]] = queue.SimpleQueue()
        self.reaper: Reaper
        self.rendezvous: RendezvousStore
        self.metadata: list[MetadataServer] = []

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
                self._stop_all(Cause.STOPPED)
                return self.ends
            if self._timed_out():
                self._time_out()
                continue
            self._check_hangs()
            for slot in self.slots:
                if slot.up is not None:
                    self._watch(slot, slot.up)
                elif time.monotonic() >= slot.due_real and not self.giving_up:
                    self._launch_vm(slot)
            if not self.open and all(s.up is not None and s.up.eviction is None for s in self.slots):
                self._begin_attempt()
            self.on_progress(self.progress)
            time.sleep(POLL_REAL_S)

    def sim_now(self, at: float | None = None) -> float:
        """The group's simulated time: the run clock, plus the recovery under way at K× (up to its plan: real
        seconds spent launching beyond it are no restart delay)."""
        at = time.time() if at is None else at
        recovery = self.recovery
        if recovery is None:
            return self.run_clock.sim_s(at)
        waited = min(max(0.0, at - recovery.since_t), recovery.planned_real_s)
        return self.run_clock.sim_s(at) + waited * self.config.time_scale

    # -- attempts of the group ----------------------------------------------------------------------------

    def _begin_attempt(self) -> None:
        """All nodes are up: the next attempt of the group begins (after the wait for the lost nodes)."""
        if (recovery := self.recovery) is not None:
            waited = recovery.planned_real_s * self.config.time_scale
            capacity = min(recovery.capacity_s, waited)
            self._emit(RESTART_DELAY, attempt=self.attempt, delay_s=waited - capacity, capacity_wait_s=capacity)
            self.recovery = None
        self.attempt += 1
        self.open, self.started = True, False
        if self.config.schedule.kind == "steps":  # kill points belong to the group's attempts
            self._place_group_lifetime()
        vms = [s.up for s in self.slots if s.up is not None]
        placed = [vm for vm in vms if vm.lifetime.at_step is not None]
        victim = placed[0] if placed else min(vms, key=self._remaining)  # the group lives as long as its first loss
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
                drawn = self.config.schedule.lifetime(self.attempt, self.kill_rng)
                vm.lifetime = capped(drawn, self.config, self.progress.preemptions)
                vm.origin_sim_s = self.sim_now()
            elif vm.eviction is None:
                vm.lifetime = Lifetime(None)

    def _remaining(self, vm: NodeVM | None) -> float:
        """Simulated seconds until this VM's drawn preemption (inf: none drawn, or placed by step)."""
        if vm is None or vm.lifetime.uptime_s is None:
            return math.inf
        return max(0.0, vm.lifetime.uptime_s - (self.sim_now() - vm.origin_sim_s))

    def _end_attempt(self, cause: Cause, exit_code: int, *, at: float, node: int | None = None) -> None:
        """Close the open attempt as of real time ``at`` and start the group's recovery. The survivors'
        noticing of the loss is not waited for: it is part of the next attempt's start-up (R)."""
        fields: dict[str, Any] = {"node": node} if node is not None else {}
        self._emit(EXIT, t=at, attempt=self.attempt, exit_code=exit_code, cause=cause, **fields)
        progressed = self.started and (self.tail.last_step or 0) > (self.tail.resumed_step or 0)
        self.ends.append(AttemptEnd(self.attempt, cause, exit_code, progressed))
        if cause in (Cause.CRASH, Cause.TIMEOUT):
            self.progress.crashes += 1
        self.giving_up = self.giving_up or self._give_up(self.ends[-1])
        self.open = False
        self.recovery = _Recovery(at, time.monotonic() - (time.time() - at))
        for slot in self.slots:  # nodes already down (a timeout stopped them all): the group waits for them too
            if slot.up is None:
                self.recovery.plan(slot.due_real, slot.capacity_wait_s)

    def _watch_survivors(self, lost: int) -> None:
        """The survivors' workers at a loss must notice the lost peer and exit; from now on each poll checks
        (:meth:`_check_hangs`) that they do, while the group recovers."""
        deadline = time.monotonic() + DRAIN_REAL_S
        for slot in self.slots:
            if (vm := slot.up) is not None and slot.node != lost:
                self.draining[vm.node] = (vm, children(vm.pid), deadline)  # the agent's children: its workers

    def _check_hangs(self) -> None:
        """Workers still there :data:`DRAIN_REAL_S` after a peer was lost hang waiting for it (in a
        collective, or in a save that waits for every rank's files): reported, and their node is stopped as
        the job's crash (the hang ends; the node comes back as a new VM)."""
        for node, (vm, workers, deadline) in list(self.draining.items()):
            if self.slots[node].up is not vm or not any(alive(p) for p in workers):
                del self.draining[node]
            elif time.monotonic() >= deadline:
                del self.draining[node]
                reason = (
                    f"node {node}'s workers were still running {DRAIN_REAL_S:g} s after a node was lost: "
                    "they hang waiting for it (a collective or a save that waits for every rank)"
                )
                log.warning("run %s: %s", self.run_id, reason)
                self._emit(STOP, attempt=self.attempt, reason=reason, node=node, step=self.tail.last_step)
                self._stop_vm(vm)
                self._lose(self.slots[node], vm, Cause.CRASH)

    def _finish(self) -> None:
        """The job reported ``done``: every node's agent should exit now; one that lingers is stopped."""
        deadline = time.monotonic() + DONE_EXIT_WAIT_REAL_S
        for slot in self.slots:
            if (vm := slot.up) is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                vm.process.wait(max(0.0, deadline - time.monotonic()))
            if vm.process.poll() is None:
                reason = f"still running {DONE_EXIT_WAIT_REAL_S:g} s after done"
                self._emit(STOP, attempt=self.attempt, node=vm.node, reason=reason)
                self._stop_vm(vm)
            self._close_vm(slot, vm, Cause.DONE)
        self._follow_events()
        self._emit(EXIT, attempt=self.attempt, exit_code=0, cause=Cause.DONE)
        self.ends.append(AttemptEnd(self.attempt, Cause.DONE, 0))

    def _timed_out(self) -> bool:
        timeout, clock = self.config.attempt_timeout_s, self.run_clock.current
        return self.open and timeout is not None and clock is not None and clock.uptime(time.time()) >= timeout

    def _time_out(self) -> None:
        """Past ``--attempt-timeout``: every node is stopped and the attempt counts as a crash."""
        self._emit(STOP, attempt=self.attempt, reason="attempt timeout", step=self.tail.last_step)
        at, timeout = time.time(), self.config.attempt_timeout_s
        self.crash = JobCrashed(self.attempt, -signal.SIGKILL, next(self._stderrs(), ""), timeout_s=timeout)
        for slot in self.slots:
            if (vm := slot.up) is not None:
                self._stop_vm(vm)
                self._close_vm(slot, vm, Cause.TIMEOUT)
                self._schedule(slot, vm, Cause.TIMEOUT)
        self._end_attempt(Cause.TIMEOUT, -signal.SIGKILL, at=at)

    def _give_up(self, end: AttemptEnd) -> bool:
        if not self.patience.spent(end, self.progress.crashes):
            return False
        self.gave_up = self.patience.reason
        return True

    def _stop_all(self, cause: Cause) -> None:
        """End the run now: every VM is stopped, and the open attempt (or the recovery) ends with ``cause``."""
        for slot in self.slots:
            if (vm := slot.up) is not None:
                self._stop_vm(vm, sig=signal.SIGKILL)
                self._close_vm(slot, vm, cause)
        if self.open:
            self._follow_events()
            self._emit(EXIT, attempt=self.attempt, exit_code=-signal.SIGKILL, cause=cause)
            self.ends.append(AttemptEnd(self.attempt, cause, -signal.SIGKILL))
            self.open = False
        elif cause == Cause.INTERRUPTED:  # between attempts: the run ends in the recovery
            self.ends.append(AttemptEnd(self.attempt + 1, cause, -signal.SIGKILL))

    def _workers_restarted(self) -> None:
        """A second ``start`` in one attempt with every node still up: torchrun restarted the workers after
        one failed. That is the job's crash (its lost work and restore are the next attempt's), not something
        the agents may hide up to their --max-restarts."""
        reason = "the workers restarted with no node lost: torchrun restarted them after one failed"
        self._emit(STOP, attempt=self.attempt, reason=reason, step=self.tail.last_step)
        self.crash = JobCrashed(self.attempt, 1, next(self._stderrs(), ""))
        log.warning("run %s: %s", self.run_id, self.crash)
        self._end_attempt(Cause.CRASH, 1, at=time.time())
        self.recovery = None  # the same VMs go on: no restart delay
        if not self.giving_up:
            self._begin_attempt()

    def _stderrs(self) -> Iterator[str]:
        """The up VMs' stderr tails, the most recently written first (where a failure was reported)."""
        paths = sorted((vm.stderr for s in self.slots if (vm := s.up) is not None), key=lambda p: -p.stat().st_mtime)
        return (stderr_tail(p) for p in paths)

    # -- one node's VM ----------------------------------------------------------------------------------------

    def _launch_vm(self, slot: _Slot) -> None:
        vm_index, node = slot.vms, slot.node
        slot.vms += 1
        lifetime = capped(self._draw(slot, vm_index), self.config, self.progress.preemptions)
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
        attempt = self.attempt if self.open else self.attempt + 1
        env = self.base_env | {
            "SPOTSIM_RUN_ID": self.run_id,
            "SPOTSIM_ATTEMPT": str(attempt),
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
            attempt=attempt,
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

    def _join_timeout(self) -> float:
        """Real seconds the survivors wait in the rendezvous for a replacement."""
        return self.config.restart_delay_s / self.config.time_scale + JOIN_SLACK_REAL_S

    def _watch(self, slot: _Slot, vm: NodeVM) -> None:
        """One poll of an up VM: its exit, or the next step of its preemption when due."""
        if vm.process.poll() is not None:
            self._follow_events()  # its last events first: a job that reported done has finished, not crashed
            if self.tail.done_step is None:
                self._lose(slot, vm, Cause.PREEMPTED if vm.eviction is not None else Cause.CRASH)
            return
        if self.tail.done_step is not None:
            return
        uptime = self.sim_now() - vm.origin_sim_s
        if vm.eviction is None:  # a lifetime drawn before --max-preemptions was reached no longer counts
            if may_preempt(self.config, self.progress.preemptions) and preemption_due(
                vm.lifetime, uptime, self._progress()
            ):
                self._preempt(vm, uptime)
            return
        self._evict(vm, vm.eviction, uptime)

    def _progress(self) -> tuple[int, int] | None:
        if not self.open or not self.started or self.tail.last_step is None:
            return None
        return self.tail.last_step, self.tail.resumed_step or 0

    def _preempt(self, vm: NodeVM, uptime: float) -> None:
        """t0 for one node: SIGKILL without notice, or the provider's notice on that node's metadata server."""
        self.progress.preemptions += 1
        if vm.sigkill is None:
            vm.sigkill = self.config.kill.draw_sigkill(self.kill_rng)
        if vm.sigkill:
            vm.eviction = Eviction(None)
            self._signal(vm, signal.SIGKILL)
            return
        provider = self.config.provider
        vm.eviction = Eviction(uptime + provider.notice_s)
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
        self._evict(vm, vm.eviction, uptime)

    def _rate(self) -> float:
        """Simulated seconds per real second now: K while the group computes (or waits), 1 otherwise."""
        current = self.run_clock.current
        if not self.open or current is None:
            return self.config.time_scale
        return current.rate(time.time())

    def _evict(self, vm: NodeVM, eviction: Eviction, uptime: float) -> None:
        """Send the node the signal due now, if one is (:meth:`Eviction.due`)."""
        approved = eviction.sigterm_at_uptime is not None and approved_early(self.config, self.metadata[vm.node])
        if (sig := eviction.due(uptime, time.monotonic(), self.config.grace_s, approved=approved)) is not None:
            self._signal(vm, sig, approved=approved and sig == signal.SIGTERM)

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

    def _lose(self, slot: _Slot, vm: NodeVM, cause: Cause) -> None:
        """A node's VM is gone (preempted, or crashed): the attempt under way ends, the survivors wind down,
        and the node's next VM is due after the restart delay."""
        at = time.time()
        self._close_vm(slot, vm, cause, at=at)
        if cause == Cause.CRASH:
            self.crash = JobCrashed(max(self.attempt, 0), vm.process.returncode, stderr_tail(vm.stderr))
            log.warning("run %s: node %d: %s", self.run_id, vm.node, self.crash)
        if self.open:
            self._watch_survivors(vm.node)
            self._end_attempt(cause, vm.process.returncode, at=at, node=vm.node)
        elif cause == Cause.CRASH:  # between attempts: a crash of the job all the same
            self.progress.crashes += 1
            if self.progress.crashes >= self.config.max_crashes:  # the group never forms again: the run ends on it
                self.giving_up = True
                self.ends.append(AttemptEnd(self.attempt + 1, Cause.CRASH, vm.process.returncode, progressed=False))
        self._schedule(slot, vm, cause, at=at)

    def _schedule(self, slot: _Slot, vm: NodeVM, cause: Cause, *, at: float | None = None) -> None:
        """The node's next VM: due the restart delay (and a preempted VM's capacity wait) after the loss."""
        at = time.time() if at is None else at
        capacity = vm.lifetime.capacity_wait_s if cause == Cause.PREEMPTED else 0.0
        slot.capacity_wait_s = capacity
        lost_real = time.monotonic() - (time.time() - at)
        slot.due_real = lost_real + (self.config.restart_delay_s + capacity) / self.config.time_scale
        if self.recovery is not None:
            self.recovery.plan(slot.due_real, capacity)

    def _close_vm(self, slot: _Slot, vm: NodeVM, cause: Cause, *, at: float | None = None) -> None:
        """The VM is gone (as of ``at``): nothing of it outlives it (workers are signalled while the agent
        still exists)."""
        signal_tree(vm.pid, signal.SIGKILL)
        code = vm.process.wait()
        self.reaper.release(vm.pid)
        self._follow_events()
        attempt = max(self.attempt, 0)
        self._emit(NODE_EXIT, t=at, node=vm.node, vm=vm.vm, attempt=attempt, exit_code=code, cause=cause)
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
            if (vm := slot.up) is None:
                continue
            events, problems = vm.events.read_new(final=vm.process.poll() is not None)
            for event in events:
                if event["event"] == START:
                    if self.open and self.started:
                        self._workers_restarted()
                    event = event | {"attempt": self.attempt, "node": vm.node}
                    self.started = self.open
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
