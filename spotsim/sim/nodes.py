"""The VMs of a multi-node job in the simulator: which are up, which boot, when the group computes again.

Each trajectory has one slot per node. A slot holds one VM at a time, its times relative to the
simulator's present: ``boot`` (its billing starts: a replacement boots D before it is up, after the
capacity wait that followed the VM it replaces, which is not billed), ``up`` (0 once it is up) and
``life`` (its uptime left once up). Every VM draws its own uptime from the schedule when it is
created, and a survivor keeps what is left of it: under a Weibull schedule or a trace a survivor
keeps its age (redrawing it would make it young again). A replayed trace gives every node the same
sequence of VMs, as the live harness does, so nodes that start together are lost together.

A whole group (``torchrun --nnodes=N:N``, as the live harness runs one) computes only with all N VMs
up: a phase runs to the first loss, then the group waits until every slot is up again; a survivor
lost during that wait is replaced too, and waited for. An elastic group (``--nnodes=1:N``) computes
with the VMs that are up, at their share of the throughput: its phase ends at a loss or when a
replacement joins, and it waits only when no VM is up.

Every VM is billed from its boot until it is lost or the job ends, whether the group computes or
waits. One node gives exactly the single-VM simulator's floats: the formulas below add the same
numbers in the same order (hence a whole boot billed as D, and :meth:`Nodes.regroup` returning when
the last awaited boot began rather than the wait itself).

Arrays are shaped (nodes, trajectories): numpy reduces fast across rows and slowly along short ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spotsim.errors import InvalidOption
from spotsim.preemption import Schedule

if TYPE_CHECKING:
    from spotsim.sim.montecarlo import Job


@dataclass
class Nodes:
    """The VMs of each running trajectory, one row per node."""

    job: Job
    boot: np.ndarray
    up: np.ndarray
    life: np.ndarray
    wait: np.ndarray  # the capacity wait after the VM is lost (a replayed trace's gap)
    used: np.ndarray  # VMs the slot has had, for trace replay

    @classmethod
    def start(cls, job: Job, schedule: Schedule, rng: np.random.Generator, trajectories: int) -> Nodes:
        """Every node's first VM, up at time 0 (its boot is part of the job's start-up)."""
        shape = (job.nodes, trajectories)
        zeros = np.zeros(shape)
        nodes = cls(job, zeros, zeros.copy(), zeros.copy(), zeros.copy(), np.zeros(shape, dtype=np.int64))
        nodes._draw(np.ones(shape, dtype=bool), schedule, rng)
        return nodes

    def keep(self, rows: np.ndarray) -> Nodes:
        """The trajectories selected by ``rows`` (a boolean mask)."""
        at = np.flatnonzero(rows)  # take() by index: several times faster than a mask on 2-D arrays
        return Nodes(self.job, *(a.take(at, axis=1) for a in self._arrays()))

    def phase(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | float]:
        """How long the group computes from now; where a replacement joining ends that (elastic only); the
        share of the group's throughput it computes at."""
        if not self.job.elastic:
            return self.life.min(axis=0), None, 1.0  # a whole group: every VM is up
        is_up = self.up == 0
        to_loss = np.where(is_up, self.life, np.inf).min(axis=0)
        to_join = np.where(is_up, np.inf, self.up).min(axis=0)
        # a loss at the same instant as a join wins: it may give notice
        return np.minimum(to_loss, to_join), to_join < to_loss, is_up.sum(axis=0) / self.job.nodes

    def billed_computing(self, t: np.ndarray) -> np.ndarray:
        """VM-seconds billed over a phase of length ``t`` (per trajectory): every VM up, and any boots."""
        if not self.job.elastic:
            return t * self.job.nodes
        return _billed(self.boot, self.up, t, self.job.restart_delay_s).sum(axis=0)

    def lose(self, t: np.ndarray, schedule: Schedule, rng: np.random.Generator) -> None:
        """Move the present to the end of the phase, ``t`` from now, and replace the VMs lost there."""
        if self.job.elastic:
            self._advance(t)
            lost = (self.up == 0) & (self.life <= 0)
        else:  # every VM is up, and stays up
            self.boot -= t
            self.life -= t
            lost = self.life <= 0
        self._replace(lost, 0.0, schedule, rng)

    def regroup(
        self, schedule: Schedule, rng: np.random.Generator, max_rounds: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Wait until the group can compute again, replacing the VMs lost meanwhile; the present moves there.

        Returns:
            Per trajectory: whether it waited (always, for a whole group after a loss; an elastic group only
            when no VM is up), when the boot of the last VM it waited for began (the wait is that plus D),
            and the VM-seconds billed meanwhile.

        Raises:
            InvalidOption: VMs keep being lost before their group is whole again (``max_rounds`` replacements).
        """
        waits, gap, last_boot = self._gap()
        unsettled, lost_billed = None, None
        if self.job.nodes > 1 and not self.job.elastic:  # a survivor may be lost while the group waits
            unsettled = (self.up + self.life < gap).any(axis=0)
            if unsettled.any():  # the few that are get settled apart, round after round
                some = self.keep(unsettled)
                lost_billed = some._replace_doomed(schedule, rng, max_rounds)
                waits[unsettled], gap[unsettled], last_boot[unsettled] = some._gap()
                at = np.flatnonzero(unsettled)
                for mine, theirs in zip(self._arrays(), some._arrays(), strict=True):
                    mine[:, at] = theirs
        billed = self._wait(gap)
        if lost_billed is not None:
            billed[unsettled] += lost_billed
        return waits, last_boot, billed

    def _gap(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whether each trajectory waits, how long (until all VMs are up, or elastic: any), and when the
        boot of the VM it waits for began."""
        if self.job.nodes == 1:
            return np.ones(self.up.shape[1], dtype=bool), self.up[0].copy(), self.boot[0].copy()
        if self.job.elastic:
            gap = self.up.min(axis=0)
            waits = gap > 0
        else:
            gap = self.up.max(axis=0)
            waits = np.ones(gap.size, dtype=bool)
        last_boot = np.where(self.up == gap, self.boot, -np.inf).max(axis=0)
        return waits, gap, last_boot

    def _wait(self, gap: np.ndarray) -> np.ndarray:
        """Move the present ``gap`` later; returns the VM-seconds billed meanwhile (no VM is lost in it)."""
        if self.job.elastic:
            billed = _billed(self.boot, self.up, gap, self.job.restart_delay_s).sum(axis=0)
            self._advance(gap)
            return billed
        # A whole group waits for its last VM: every boot ends inside the wait, and then all are up.
        behind = self.up - gap  # ≤ 0: how long before the end of the wait each VM came up
        billed = (np.where(self.up > 0, self.job.restart_delay_s, 0.0) - behind).sum(axis=0)
        self.boot = self.boot - gap
        self.life += behind
        self.up = np.zeros_like(self.up)
        return billed

    def _replace_doomed(self, schedule: Schedule, rng: np.random.Generator, max_rounds: int) -> np.ndarray:
        """Replace the VMs lost before their whole group is up, until none is; returns what they billed."""
        billed = np.zeros(self.up.shape[1])
        for _ in range(max_rounds):
            death = self.up + self.life
            doomed = death < self._gap()[1]
            if not doomed.any():
                return billed
            billed += np.where(doomed, _billed(self.boot, self.up, death, self.job.restart_delay_s), 0.0).sum(axis=0)
            self._replace(doomed, death, schedule, rng)
        raise InvalidOption(
            f"after {max_rounds:,} replacements a group of {self.job.nodes} nodes is still not whole: its VMs are "
            "lost faster than replacements come up; use fewer nodes, a lower preemption rate or a shorter restart delay"
        )

    def _advance(self, t: np.ndarray) -> None:
        """Move the present ``t`` later (per trajectory); a VM that came up meanwhile has lived since."""
        self.boot = self.boot - t
        up = self.up - t
        self.life = self.life + np.minimum(up, 0.0)
        self.up = np.maximum(up, 0.0)

    def _replace(self, lost: np.ndarray, at: np.ndarray | float, schedule: Schedule, rng: np.random.Generator) -> None:
        """A new VM in every ``lost`` slot, its predecessor lost ``at`` from now: capacity wait, boot D, then up."""
        boot = at + self.wait
        if lost.all():  # as for one node: no mask to apply
            self.boot, self.up = boot, boot + self.job.restart_delay_s
        else:
            np.copyto(self.boot, boot, where=lost)
            np.copyto(self.up, boot + self.job.restart_delay_s, where=lost)
        self._draw(lost, schedule, rng)

    def _draw(self, slots: np.ndarray, schedule: Schedule, rng: np.random.Generator) -> None:
        """Fresh uptimes (capped at the provider's maximum) for the VMs in ``slots``."""
        every = slots.all()  # as for one node: no mask to apply
        life, wait = schedule.draw(rng, self.used.ravel() if every else self.used[slots])
        if self.job.max_uptime_s is not None:
            life = np.minimum(life, self.job.max_uptime_s)
        if every:
            self.life, self.wait = life.reshape(self.used.shape), wait.reshape(self.used.shape)
            self.used += 1
        else:
            self.life[slots], self.wait[slots] = life, wait
            self.used[slots] += 1

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.boot, self.up, self.life, self.wait, self.used


def _billed(boot: np.ndarray, up: np.ndarray, t: np.ndarray, restart_delay_s: float) -> np.ndarray:
    """Per VM, the seconds billed from now to ``t``: the part of its boot inside, then its uptime inside.

    A boot is the D before ``up``, less what lies before now (it began earlier) or after ``t`` (not
    yet over). A VM already up has no boot left to bill.
    """
    d = restart_delay_s
    booting = np.where(up > 0, d - np.clip(up - t, 0.0, d) - np.clip(-boot, 0.0, d), 0.0)
    return booting + np.clip(t - up, 0.0, None)
