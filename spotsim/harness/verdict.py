"""What a ``spotsim verify`` run proves: the kills that landed, the resumes that happened, and the verdict.

A verdict means something only if a resume was really tested, so every run is
judged from its run log before its result is compared:

- **fail** — the job resumed wrongly, whatever its final tensors say: a fresh
  run whose first attempt resumed (its state lives outside the bucket prefix),
  a resume from a step never reached, a restart from 0 or a resume below the
  newest checkpoint the job had reported, an emergency checkpoint of a step
  below the one reached (stale counters), a final step other than the
  reference's, a crash (a torn checkpoint that breaks the resume), or a result
  that differs from the reference's;
- **inconclusive** — nothing was tested: no planned kill landed, or no attempt
  resumed from a committed checkpoint;
- **pass** — a kill landed, an attempt resumed from a checkpoint, and the result
  equals the reference's bit for bit.

The whole verdict fails if any run (or the reference) fails, is inconclusive if
any is, and passes only when every run passed. Exit codes: 0, 1, 3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from spotsim.events import AttemptRecord, Cause
from spotsim.harness.compare import Difference

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
EXIT_CODES = {PASS: 0, FAIL: 1, INCONCLUSIVE: 3}


@dataclass(frozen=True)
class Kill:
    """A preemption that really happened (not a planned one)."""

    attempt: int
    signals: tuple[str, ...]  # ("SIGKILL",), ("SIGTERM",), ("SIGTERM", "SIGKILL"), or () gone on the notice
    step: int | None  # the last step the job had reported when the first signal went out
    in_save: bool  # the signal went out while a save was being written
    write: str | None  # what was being written: an object name or a path under the checkpoint location


@dataclass(frozen=True)
class Resume:
    """An attempt that started from a checkpoint."""

    attempt: int
    step: int


@dataclass
class RunCheck:
    """One preempted run, compared with the reference."""

    name: str
    planned: str  # the kill points, as ``--kill-steps`` takes them
    kill: str
    kills: list[Kill] = field(default_factory=list)
    resumes: list[Resume] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)
    difference: Difference | None = None
    diagnosis: list[str] = field(default_factory=list)
    stderr_tail: str | None = None

    @property
    def outcome(self) -> str:
        if self.failures or self.difference is not None:
            return FAIL
        return INCONCLUSIVE if self.inconclusive else PASS

    @property
    def kills_in_save(self) -> int:
        return sum(k.in_save for k in self.kills)


@dataclass
class Verdict:
    """Every run's check, and what the reference run itself showed."""

    reference_steps: int
    checks: list[RunCheck]
    interval: str  # the checkpoint interval the runs were given
    reference_failures: list[str] = field(default_factory=list)
    reference_inconclusive: list[str] = field(default_factory=list)
    clock: str = "K = 1: every duration is real"  # how K was chosen, with --work

    @property
    def outcome(self) -> str:
        if self.reference_failures or any(c.outcome == FAIL for c in self.checks):
            return FAIL
        if self.reference_inconclusive or not self.checks or any(c.outcome == INCONCLUSIVE for c in self.checks):
            return INCONCLUSIVE
        return PASS

    @property
    def resume_correct(self) -> bool:
        return self.outcome == PASS

    ok = resume_correct

    @property
    def inconclusive(self) -> bool:
        return self.outcome == INCONCLUSIVE

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_json(self) -> str:
        checks = [asdict(c) | {"outcome": c.outcome, "kills_in_save": c.kills_in_save} for c in self.checks]
        body = asdict(self) | {"checks": checks}
        return json.dumps({"outcome": self.outcome, "ok": self.ok, **body}, indent=2, default=str) + "\n"


def observed(attempts: list[AttemptRecord]) -> tuple[list[Kill], list[Resume]]:
    """The kills that landed on a running job and the resumes from a checkpoint, from the run log."""
    kills = [
        Kill(
            a.attempt,
            tuple(name for _, name in a.signals),
            a.kill.get("step"),
            bool(a.kill.get("in_save")),
            a.kill.get("write"),
        )
        for a in attempts
        if a.cause == Cause.PREEMPTED and a.kill is not None
    ]
    resumes = [Resume(a.attempt, a.resumed_step) for a in attempts[1:] if a.started and a.resumed_step]
    return kills, resumes


def resume_failures(attempts: list[AttemptRecord], reference_final: int | None) -> list[str]:
    """Ways the run log shows a wrong resume, each in words with its likely cause."""
    found = first_attempt_failures(attempts)
    latest: tuple[int, int] | None = None  # (attempt, step) of the newest checkpoint reported so far
    reached = 0
    for i, a in enumerate(attempts):
        if i > 0 and a.started:
            found += _resume_problem(a, latest, reached)
        found += _stale_emergency(a)
        if a.started:
            reached = max(reached, a.last_step)
        if a.checkpoints:
            latest = (a.attempt, a.checkpoints[-1]["step"])
    last = attempts[-1] if attempts else None
    finished = last is not None and last.cause == Cause.DONE
    if reference_final is not None and last is not None and finished and last.done_step != reference_final:
        found.append(
            f"the run ended at step {last.done_step}, the reference at step {reference_final} → a resume repeats or "
            "skips work (e.g. it restarts the epoch it had finished)"
        )
    return found


def first_attempt_failures(attempts: list[AttemptRecord]) -> list[str]:
    """A fresh run (empty bucket prefix, empty local disk) must start from step 0."""
    first = attempts[0] if attempts else None
    if first is None or not first.started or not first.resumed_step:
        return []
    return [
        f"the first attempt of a fresh run resumed from step {first.resumed_step}: the job keeps its state outside "
        "SPOTSIM_CHECKPOINT_URI (a fixed local path, a leftover directory), where a new VM would not find it"
    ]


def _resume_problem(attempt: AttemptRecord, latest: tuple[int, int] | None, reached: int) -> list[str]:
    step, n = attempt.resumed_step or 0, attempt.attempt
    if step > reached:
        return [
            f"attempt {n} resumed from step {step}, which no earlier attempt reported reaching (highest: {reached})"
        ]
    if latest is None:
        return []
    saved_by, saved = latest
    if step == 0 and saved > 0:
        return [
            f"attempt {n} restarted from step 0 although attempt {saved_by} had checkpointed step {saved} "
            "→ checkpoint not found or not loaded"
        ]
    if step < saved:
        return [
            f"attempt {n} resumed from step {step}, below step {saved} that attempt {saved_by} reported "
            "checkpointed → that checkpoint was lost, or an older one was loaded"
        ]
    return []


def _stale_emergency(attempt: AttemptRecord) -> list[str]:
    """An emergency checkpoint must hold the step the job had reached when it saved."""
    found = []
    for c in attempt.checkpoints:
        if c.get("kind") != "emergency":
            continue
        reached = max((s for t, s in attempt.steps if t <= c["t"]), default=attempt.first_step)
        if c["step"] < reached:
            found.append(
                f"attempt {attempt.attempt}'s emergency checkpoint is of step {c['step']} but it had reached step "
                f"{reached} → the SIGTERM handler saves stale counters, not the live training state"
            )
    return found


def untested(kills: list[Kill], resumes: list[Resume], planned: str, committed_from: int | None) -> list[str]:
    """Why a run tested no resume, with what to change."""
    if not kills:
        waits = " (a :save point waits for a save to start, and none did)" if ":save" in planned else ""
        return [
            f"no planned kill landed (planned: {planned}): the job finished or stopped reporting steps before them"
            + waits
        ]
    if not resumes:
        after = f"after step {committed_from}" if committed_from is not None else "after the first checkpoint"
        return [
            "no attempt resumed from a committed checkpoint: no checkpoint was committed before any kill; "
            f"lower the interval (--interval / --interval-steps) or use --kill-steps {after}"
        ]
    return []
