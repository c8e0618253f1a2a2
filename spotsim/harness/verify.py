"""``spotsim verify``: prove a training job resumes bit-exactly, and say what it forgot when it does not.

One uninterrupted *reference* run, then N runs preempted at steps drawn over
the reference's progress (some exactly at its checkpoint steps, so the kill
lands inside a save), each with a fresh bucket prefix and output directory.
Every run's final result must equal the reference's bit for bit: by default
the final checkpoint's tensors, with ``artifact`` a file the job writes under
``SPOTSIM_OUTPUT_DIR``.

When a run differs, :func:`diagnose` says where it went wrong: an attempt that
restarted from step 0 although a checkpoint existed; the first checkpoint at
which the run left the reference and which parts of the state differ there;
and which kinds of state the job never put in its checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spotsim.checkpoint import CheckpointManager
from spotsim.cost import Machine
from spotsim.errors import InvalidOption, SpotsimError
from spotsim.harness.compare import Difference, artifact_tensors, compare, result_tensors
from spotsim.harness.config import KillMode, RunConfig
from spotsim.harness.live import RunOutcome, run_live, store_options
from spotsim.harness.runlog import AttemptRecord, read_run_log
from spotsim.harness.schedule import Schedule, parse_schedule

KEEP_EVERY_CHECKPOINT = "1000000"  # so a divergence can be located checkpoint by checkpoint
# Kinds of state a resume needs, as TorchState/TFState name them; absent ones are reported.
EXPECTED_PARTS = {"optimizer": "optimizer", "rng": "RNG", "data": "data position"}


class VerifySetupError(SpotsimError):
    """The check could not run: the reference run failed, or a run did not finish."""


@dataclass(frozen=True)
class RunCheck:
    name: str
    kill_steps: tuple[int, ...]
    kill: str
    difference: Difference | None
    diagnosis: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    reference_steps: int
    checks: list[RunCheck]

    @property
    def ok(self) -> bool:
        return all(c.difference is None and not c.diagnosis for c in self.checks)

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, **asdict(self)}, indent=2, default=str) + "\n"


@dataclass(frozen=True)
class VerifyConfig:
    command: tuple[str, ...]
    out: Path
    runs: int = 3
    kills_per_run: int = 2
    kill: KillMode = KillMode(1.0)
    seed: int = 0
    artifact: str | None = None
    bucket: str | None = None
    interval_steps: int | None = None
    grace_s: float = 30.0
    kill_plans: tuple[tuple[int, ...], ...] = ()  # given kill steps per run, instead of drawn ones

    def __post_init__(self) -> None:
        if any(not plan or min(plan) < 1 for plan in self.kill_plans):
            raise InvalidOption("each kill plan needs one or more steps ≥ 1")
        if self.runs < 1 or self.kills_per_run < 1:
            raise InvalidOption("--preemptions and --kills-per-run must be at least 1")
        if self.artifact is not None and (Path(self.artifact).is_absolute() or ".." in Path(self.artifact).parts):
            raise InvalidOption(f"--artifact {self.artifact!r} must be a path relative to SPOTSIM_OUTPUT_DIR")


def verify(config: VerifyConfig, machine: Machine, *, on_run: Callable[[str], None] = lambda name: None) -> Verdict:
    """Run the reference and the preempted runs; compare; diagnose."""
    rng = np.random.default_rng(config.seed)
    with _buckets(config) as (bucket_for, bucket_env):
        on_run("reference")
        never = parse_schedule("poisson", 0)
        reference = _run(config, "reference", never, bucket_for("reference"), bucket_env, machine)
        ref_attempts = read_run_log(reference.out / "events.jsonl")
        final_step = reference.summary["final_step"]
        saves = sorted({c["step"] for a in ref_attempts for c in a.checkpoints if 0 < c["step"] < final_step})
        ref_result = _result(config, reference, bucket_env)
        checks = []
        plans = config.kill_plans or [
            draw_kill_steps(rng, final_step, saves, config.kills_per_run) for _ in range(config.runs)
        ]
        for i, kill_steps in enumerate(plans):
            name = f"run-{i + 1}"
            on_run(f"{name} (kills at steps {', '.join(map(str, kill_steps))})")
            schedule = Schedule("steps", 0.0, steps=kill_steps)
            outcome = _run(config, name, schedule, bucket_for(name), bucket_env, machine)
            difference = compare(ref_result, _result(config, outcome, bucket_env))
            attempts = read_run_log(outcome.out / "events.jsonl")
            restarted = _restarted(attempts)
            diagnosis = diagnose(restarted, attempts, reference, outcome, bucket_env) if difference or restarted else []
            checks.append(RunCheck(name, kill_steps, str(config.kill), difference, diagnosis))
    verdict = Verdict(final_step, checks)
    (config.out / "verdict.json").write_text(verdict.to_json())
    return verdict


def draw_kill_steps(rng: np.random.Generator, final_step: int, saves: list[int], count: int) -> tuple[int, ...]:
    """``count`` distinct kill steps in [1, final_step): a third of them on checkpoint steps (inside a save)."""
    if final_step < 2:
        raise VerifySetupError(f"the reference run completed only {final_step} step(s): too few to preempt")
    steps: set[int] = set()
    while len(steps) < min(count, final_step - 1):
        if saves and rng.random() < 1 / 3:
            steps.add(int(rng.choice(saves)))
        else:
            steps.add(int(rng.integers(1, final_step)))
    return tuple(sorted(steps))


# -- one run ----------------------------------------------------------------------


def _run(
    config: VerifyConfig, name: str, schedule: Schedule, bucket: str, bucket_env: dict, machine: Machine
) -> RunOutcome:
    run_config = RunConfig(
        command=config.command, out=config.out / name, schedule=schedule,
        interval_s=None if config.interval_steps else 3600.0, interval_steps=config.interval_steps,
        kill=config.kill, grace_s=config.grace_s, seed=config.seed, max_crashes=0,
        step_event_interval_s=0.0,
    )  # fmt: skip
    outcome = run_live(
        run_config, machine, bucket=bucket, bucket_env=bucket_env | {"SPOTSIM_CHECKPOINT_KEEP": KEEP_EVERY_CHECKPOINT}
    )
    if outcome.interrupted:
        raise KeyboardInterrupt
    if not outcome.summary["completed"]:
        why = f": {outcome.crash}" if outcome.crash else ""
        raise VerifySetupError(f"the {name} run did not complete{why} (see {outcome.out / 'attempts'})")
    return outcome


def _result(config: VerifyConfig, outcome: RunOutcome, bucket_env: dict) -> dict[str, np.ndarray]:
    """What the run produced: its artifact's tensors, or its final checkpoint's."""
    if config.artifact is not None:
        path = outcome.out / "output" / config.artifact
        if not path.is_file():
            raise VerifySetupError(f"the job wrote no {config.artifact} under SPOTSIM_OUTPUT_DIR ({path})")
        return artifact_tensors(path)
    restored = _open(outcome, bucket_env).restore_latest()
    if restored is None:
        raise VerifySetupError(
            f"{outcome.out.name} left no spotsim checkpoint to compare; pass --artifact for a job that does not "
            "checkpoint with spotsim's CheckpointManager"
        )
    tensors = result_tensors(restored.state)
    if not tensors:
        raise VerifySetupError(f"the final checkpoint of {outcome.out.name} holds no tensors to compare")
    return tensors


def _open(outcome: RunOutcome, bucket_env: dict) -> CheckpointManager:
    uri = outcome.summary["checkpoint_uri"]
    return CheckpointManager(uri, store_options=store_options(uri, bucket_env))


@contextlib.contextmanager
def _buckets(config: VerifyConfig) -> Iterator[tuple[Callable[[str], str], dict[str, str]]]:
    """A fresh prefix per run: under ``--bucket``, or on one embedded emulator that outlives the runs."""
    tag = uuid.uuid4().hex[:8]
    if config.bucket is not None:
        yield (lambda name: f"{config.bucket.rstrip('/')}/verify-{tag}/{name}"), {}
        return
    from spotsim.storage.emulator import FakeGcsServer

    with tempfile.TemporaryDirectory(prefix="spotsim-verify-") as root, FakeGcsServer(Path(root)) as emulator:
        yield (lambda name: f"gs://spotsim-verify/{tag}/{name}"), emulator.env()


# -- diagnosis ----------------------------------------------------------------------


def _restarted(attempts: list[AttemptRecord]) -> list[str]:
    """Attempts that started from scratch although an earlier attempt had committed a checkpoint."""
    found, saved = [], None
    for a in attempts:
        if a.started and a.attempt > 0 and not a.resumed_step and saved:
            found.append(
                f"attempt {a.attempt} restarted from step 0 although step {saved} was checkpointed "
                "→ checkpoint not found or not loaded"
            )
        saved = max([saved or 0, *(c["step"] for c in a.checkpoints)]) or saved
    return found


def diagnose(
    restarted: list[str], attempts: list[AttemptRecord], reference: RunOutcome, run: RunOutcome, bucket_env: dict
) -> list[str]:
    """Why a run differs from the reference, as far as the run log and the checkpoints tell;
    ``restarted`` is what :func:`_restarted` found in the run log."""
    notes = list(restarted)
    resumes = [a.resumed_step for a in attempts if a.started and a.resumed_step]
    try:
        with _open(reference, bucket_env) as ref_manager, _open(run, bucket_env) as run_manager:
            missing = _missing_parts(run_manager)
            divergence = _divergence(ref_manager, run_manager, resumes)
    except SpotsimError:
        return notes  # not a spotsim checkpoint (a job with its own format): the run log is all there is
    if divergence is not None:
        where, right_after = divergence
        cause = (
            f"never registered with the manager: {', '.join(missing)} state" if missing
            else "model/optimizer state not (fully) restored" if right_after
            else "data order or RNG state not restored"
        )  # fmt: skip
        notes.append(f"{where} → {cause}")
    elif missing:
        notes.append(f"never registered with the manager: {', '.join(missing)} state")
    return notes


def _divergence(reference: CheckpointManager, run: CheckpointManager, resumes: list[int]) -> tuple[str, bool] | None:
    """Where, checkpoint by checkpoint after the first resume, the run left the reference; and
    whether that was already at the first checkpoint after a resume."""
    if not resumes:
        return None
    common = [s for s in sorted(set(reference.steps()) & set(run.steps())) if s >= resumes[0]]
    previous = None
    for step in common:
        difference = compare(result_tensors(reference.restore(step).state), result_tensors(run.restore(step).state))
        if difference is None:
            previous = step
            continue
        resumed_at = max(r for r in resumes if r <= step)
        parts = ", ".join(difference.parts)
        if previous is None or previous <= resumed_at:
            where = f"differs already at step {step}, the first checkpoint after the resume from step {resumed_at}"
            return f"{where} (differing: {parts})", True
        where = f"matches at the resume from step {resumed_at} and at step {previous}, drifts from step {step}"
        return f"{where} (differing: {parts})", False
    return None


def _missing_parts(run: CheckpointManager) -> list[str]:
    """Kinds of state a resume needs that the job never registered (TorchState / TFState names)."""
    restored = run.restore_latest()
    if restored is None or not isinstance(restored.state, dict):
        return []
    state = restored.state
    registered = state.get("registered") if isinstance(state.get("registered"), list) else list(state)
    if "model" not in registered:
        return []  # not an adapter's state: its part names mean nothing here
    return [label for part, label in EXPECTED_PARTS.items() if part not in registered]
