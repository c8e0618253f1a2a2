"""``spotsim verify``: prove a training job resumes bit-exactly, and say what it forgot when it does not.

One uninterrupted *reference* run, then N runs preempted at kill points drawn
over the reference's progress, each with a fresh bucket prefix, output
directory and local disk. A third of the kill points land *inside a save*:
the harness watches the checkpoint location and kills while the first write of
a save is in flight (:mod:`spotsim.harness.save_watch`). Every run is judged
from its run log first (:mod:`spotsim.harness.verdict`: the kills that landed,
the resumes that happened, wrong resumes), then its final result must equal
the reference's bit for bit: by default the final checkpoint's tensors, with
``artifact`` a file the job writes under ``SPOTSIM_OUTPUT_DIR``.

Checkpoint interval: given (``interval_s`` real seconds and/or
``interval_steps``), or chosen so the reference makes at least two checkpoints
before its end: the reference runs with :data:`PROBE_INTERVAL_REAL_S`, and if that
left fewer than two, once more at a quarter of its measured training time (the
two uninterrupted runs must then agree, or the job is not deterministic).

When a run differs, :func:`diagnose` says where it went wrong: the first
checkpoint at which the run left the reference and which parts of the state
differ there, and which kinds of state the job never put in its checkpoints.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from spotsim.checkpoint import CheckpointManager
from spotsim.clock import Scale
from spotsim.cost import Machine
from spotsim.errors import InvalidOption, JobCrashed, SpotsimError
from spotsim.events import AttemptRecord, read_run_log
from spotsim.harness.compare import artifact_tensors, compare, result_tensors
from spotsim.harness.config import RunConfig, check_command
from spotsim.harness.live import RunOutcome, out_dir, probe_scale, run_live, store_options
from spotsim.harness.save_watch import BucketProxy, DirectoryWatch, SaveWatch
from spotsim.harness.verdict import RunCheck, Verdict, first_attempt_failures, observed, resume_failures, untested
from spotsim.preemption import (
    KillMode,
    Schedule,
    Sigkill,
    Steps,
    format_kill_points,
    parse_kill_points,
    parse_schedule,
)
from spotsim.preemption.providers import DEFAULT_PROVIDER, PROVIDERS, Provider

KEEP_EVERY_CHECKPOINT = "1000000"  # so a divergence can be located checkpoint by checkpoint
# Kinds of state a resume needs, as TorchState/TFState name them; absent ones are reported.
EXPECTED_PARTS = {"optimizer": "optimizer", "rng": "RNG", "data": "data position"}
PROBE_INTERVAL_REAL_S = 10.0  # real seconds: the reference's first interval when none is given
MIN_CHECKPOINTS = 2  # in the reference before its final step, so kills can be followed by resumes
REFERENCE_TIMEOUT_S = 7200.0  # real seconds an uninterrupted reference attempt may take by default
RUN_TIMEOUT_FACTOR, RUN_TIMEOUT_MIN_S = 3.0, 60.0  # a preempted run's attempts: 3 × the reference, ≥ 60 s


class VerifySetupError(SpotsimError):
    """The check could not run: the reference run failed, or there is nothing to compare."""


@dataclass(frozen=True)
class VerifyConfig:
    command: tuple[str, ...]
    out: Path
    runs: int = 3
    kills_per_run: int = 2
    kill: KillMode = Sigkill()
    seed: int = 0
    artifact: str | None = None
    bucket: str | None = None
    interval_s: float | None = None  # simulated (= real without --work); None: from interval_steps or the reference
    interval_steps: int | None = None
    provider: Provider = PROVIDERS[DEFAULT_PROVIDER]
    kill_plans: tuple[str, ...] = ()  # given kill points per run ("120,480:save"), instead of drawn ones
    attempt_timeout_s: float | None = None  # default: REFERENCE_TIMEOUT_S, then a multiple of the reference
    local_disk: str = "wipe"
    emulator_url: str | None = None  # a running GCS emulator to use instead of starting one (with bucket None)
    work_s: float | None = None  # simulated compute the job stands for: K is measured once and shared by every run
    total_steps: int | None = None  # the job's steps in all (needed with work_s)
    steps_adjustable: bool = False  # a built-in workload: more steps may be run for work_s
    scale: Scale | None = None  # K chosen for work_s, once measured
    nodes: int = 1  # a --nodes group: each run's kill points fall on its nodes in turn

    def __post_init__(self) -> None:
        if self.bucket is not None and self.emulator_url is not None:
            raise InvalidOption("give a bucket or an emulator URL, not both")
        for plan in self.kill_plans:
            parse_kill_points(plan)  # raises InvalidSchedule, an InvalidOption, with the reason
        if self.runs < 1 or self.kills_per_run < 1:
            raise InvalidOption("--preemptions and --kills-per-run must be at least 1")
        if self.artifact is not None and (Path(self.artifact).is_absolute() or ".." in Path(self.artifact).parts):
            raise InvalidOption(f"--artifact {self.artifact!r} must be a path relative to SPOTSIM_OUTPUT_DIR")
        auto = self.interval_s is None and self.interval_steps is None
        if self.work_s is not None and auto:
            raise InvalidOption("--work needs --interval (simulated, like --work) or --interval-steps")
        if self.work_s is not None:
            self.probe_config()  # checks --work against the interval and the steps
        # The options every run shares are checked where every run's settings are built: RunConfig.
        self.run_config(
            "check",
            parse_schedule("poisson", 0),
            interval_s=PROBE_INTERVAL_REAL_S if auto else self.interval_s,
            timeout_s=self.attempt_timeout_s,
        )

    def run_config(
        self, name: str, schedule: Schedule, *, interval_s: float | None, timeout_s: float | None
    ) -> RunConfig:
        """The settings of one of verify's runs (under ``out/name``)."""
        return RunConfig(
            command=self.command,
            out=self.out / name,
            schedule=schedule,
            interval_s=interval_s,
            interval_steps=self.interval_steps,
            kill=self.kill,
            provider=self.provider,
            seed=self.seed,
            max_crashes=1,
            attempt_timeout_s=timeout_s,
            local_disk=self.local_disk,
            step_event_interval_s=0.0,
            time_scale=self.scale.k if self.scale else 1.0,
            nodes=self.nodes,
        )

    def probe_config(self) -> RunConfig:
        """The settings the job is measured under to choose K for ``work_s``."""
        return replace(
            self.run_config("probe", parse_schedule("poisson", 0), interval_s=self.interval_s, timeout_s=None),
            time_scale=1.0,
            work_s=self.work_s,
            total_steps=self.total_steps,
            steps_adjustable=self.steps_adjustable,
        )

    def scaled(self, scale: Scale) -> VerifyConfig:
        """Every run at K chosen for ``work_s`` (a built-in workload may run more steps for it)."""
        return replace(self, command=self.probe_config().with_scale(scale).command, scale=scale)

    @property
    def time_scale(self) -> float:
        return self.scale.k if self.scale else 1.0


@dataclass
class Reference:
    """The uninterrupted run every preempted run is compared with."""

    outcome: RunOutcome
    attempts: list[AttemptRecord]
    result: dict[str, np.ndarray]
    interval_s: float | None
    interval_steps: int | None

    @property
    def final_step(self) -> int:
        return self.outcome.summary.accounting.final_step

    @property
    def committed_by(self) -> list[int]:
        """For each checkpoint before the final step: the step the job had reached when it reported it
        (by then the checkpoint was surely committed)."""
        steps = [(t, s) for a in self.attempts for t, s in a.steps]
        return [
            max((s for t, s in steps if t <= c["t"]), default=c["step"])
            for a in self.attempts
            for c in a.checkpoints
            if 0 < c["step"] < self.final_step
        ]

    def describe_interval(self) -> str:
        parts = [
            f"{self.interval_s:.3g} s" if self.interval_s else "",
            f"{self.interval_steps} steps" if self.interval_steps else "",
        ]
        return " or ".join(p for p in parts if p)


@dataclass
class Buckets:
    """Where each run checkpoints, the environment its job gets, and the watch that sees saves."""

    uri_for: Callable[[str], str]
    env: dict[str, str]
    watch: SaveWatch | None


def verify(config: VerifyConfig, machine: Machine, *, on_run: Callable[[str], None] = lambda name: None) -> Verdict:
    """Run the reference and the preempted runs; judge each; compare; diagnose. Writes ``verdict.json``."""
    rng = np.random.default_rng(config.seed)
    check_command(config.command)
    with out_dir(config.out), _buckets(config) as buckets:
        if config.work_s is not None and config.scale is None:
            on_run("the job, measured for --work")
            scale = probe_scale(config.probe_config(), buckets.env, buckets.uri_for("probe"))
            config = config.scaled(scale)
            on_run(f"every run at {scale.note}")
        if buckets.watch is None and any(":save" in plan for plan in config.kill_plans):
            raise InvalidOption("kills inside saves need the embedded emulator or a file:// bucket, not a real bucket")
        reference, (failures, inconclusive) = _reference(config, buckets, machine, on_run)
        verdict = Verdict(reference.final_step, [], reference.describe_interval(), failures, inconclusive)
        if config.scale is not None:
            verdict.clock = config.scale.note
        if not failures and not inconclusive:
            plans = config.kill_plans or [
                draw_kill_points(
                    rng, reference, config.kills_per_run, in_save=buckets.watch is not None and config.nodes == 1
                )
                for _ in range(config.runs)
            ]
            for i, plan in enumerate(plans):
                name = f"run-{i + 1}"
                on_run(f"{name} (kill points {plan})")
                verdict.checks.append(_check_run(config, name, plan, reference, buckets, machine))
        (config.out / "verdict.json").write_text(verdict.to_json())
    return verdict


def draw_kill_points(rng: np.random.Generator, reference: Reference, count: int, *, in_save: bool) -> str:
    """``count`` kill points over the reference's progress, after its first checkpoint was surely committed
    (an earlier kill only restarts from scratch, which proves nothing); a third inside saves when the
    checkpoint location can be watched."""
    final = reference.final_step
    committed = reference.committed_by
    earliest = min(committed) + 1 if committed else 1
    if final - earliest < 1:
        earliest = 1
    in_save = in_save and bool(committed)  # a job that reports no checkpoint may never save: kill at steps
    points: dict[int, bool] = {}
    while len(points) < min(count, final - earliest):
        points.setdefault(int(rng.integers(earliest, final)), in_save and rng.random() < 1 / 3)
    steps = tuple(sorted(points))
    return format_kill_points(steps, tuple(points[s] for s in steps))


# -- the reference ----------------------------------------------------------------------


def _reference(
    config: VerifyConfig, buckets: Buckets, machine: Machine, on_run: Callable[[str], None]
) -> tuple[Reference, tuple[list[str], list[str]]]:
    """The reference run, with an interval that gives it checkpoints to resume from; and what it already
    shows: (failures, inconclusive causes)."""
    auto = config.interval_s is None and config.interval_steps is None
    interval_s = PROBE_INTERVAL_REAL_S if auto else config.interval_s
    on_run("reference")
    reference = _reference_run(config, "reference", interval_s, buckets, machine)
    if failures := first_attempt_failures(reference.attempts):
        return reference, ([f"reference: {f}" for f in failures], [])
    if reference.final_step < 2:
        return reference, ([], [f"the reference completed only {reference.final_step} step(s): too few to preempt"])
    if not any(a.steps for a in reference.attempts):
        return reference, (
            [],
            [
                'the job reports no step events, so kills cannot be placed: write {"event": "step", "step": N} to '
                "$SPOTSIM_EVENTS as it trains (see the contract), or use spotsim's CheckpointManager"
            ],
        )
    if auto and len(reference.committed_by) < MIN_CHECKPOINTS:
        span = _training_span(reference.attempts)
        on_run(f"reference again, checkpointing every {span / 4:.3g} s (a quarter of its {span:.3g} s of training)")
        first, reference = reference, _reference_run(config, "reference-2", max(span / 4, 0.01), buckets, machine)
        if failures := first_attempt_failures(reference.attempts):
            return reference, ([f"reference-2: {f}" for f in failures], [])
        if (difference := compare(first.result, reference.result)) is not None:
            why = (
                f"two uninterrupted runs ended differently ({difference.describe()}): the job is not deterministic, "
                "so a resume cannot be judged bit for bit; seed every RNG and use deterministic kernels"
            )
            return reference, ([], [why])
    if reference.attempts[0].checkpoints and not reference.committed_by:
        why = (
            f"the reference committed no checkpoint before its final step {reference.final_step}, so no kill can be "
            "followed by a resume: lower the interval (--interval / --interval-steps)"
        )
        return reference, ([], [why])
    return reference, ([], [])


def _reference_run(
    config: VerifyConfig, name: str, interval_s: float | None, buckets: Buckets, machine: Machine
) -> Reference:
    timeout = config.attempt_timeout_s or REFERENCE_TIMEOUT_S * config.time_scale  # the clock runs at K
    never = parse_schedule("poisson", 0)
    outcome = _run(config, name, never, buckets, machine, interval_s=interval_s, timeout_s=timeout)
    if not outcome.summary.accounting.completed:
        why = f": {outcome.crash}" if outcome.crash else ""
        raise VerifySetupError(f"the {name} run did not complete{why} (see {outcome.out / 'attempts'})")
    result = _result(config, outcome, buckets.env)
    if isinstance(result, str):
        raise VerifySetupError(result)
    attempts = read_run_log(outcome.out / "events.jsonl")
    return Reference(outcome, attempts, result, interval_s, config.interval_steps)


def _training_span(attempts: list[AttemptRecord]) -> float:
    """Real seconds from the first step event to the last event of the (single) attempt."""
    a = attempts[0]
    first = a.steps[0][0] if a.steps else a.launch_t
    return max((a.exit_t or first) - first, 0.0)


# -- one preempted run ----------------------------------------------------------------


def _check_run(
    config: VerifyConfig, name: str, plan: str, reference: Reference, buckets: Buckets, machine: Machine
) -> RunCheck:
    steps, in_save = parse_kill_points(plan)
    schedule = Steps(steps, in_save)
    timeout = config.attempt_timeout_s or max(
        RUN_TIMEOUT_MIN_S * config.time_scale, RUN_TIMEOUT_FACTOR * reference.outcome.summary.accounting.sim_wall_s
    )  # simulated seconds, like the uptime it is compared with
    outcome = _run(config, name, schedule, buckets, machine, interval_s=reference.interval_s, timeout_s=timeout)
    attempts = read_run_log(outcome.out / "events.jsonl")
    kills, resumes = observed(attempts)
    check = RunCheck(name, plan, str(config.kill), kills, resumes)
    check.failures = resume_failures(attempts, reference.final_step)
    if outcome.crash is not None:
        check.failures.append(_crash_failure(outcome.crash, kills))
        check.stderr_tail = outcome.crash.stderr_tail
    elif outcome.summary.accounting.completed:
        result = _result(config, outcome, buckets.env)
        if isinstance(result, str):
            check.failures.append(result)
        else:
            check.difference = compare(reference.result, result)
    if check.failures or check.difference is not None:
        completed = outcome.summary.accounting.completed
        check.diagnosis = diagnose(attempts, reference.outcome, outcome, buckets.env) if completed else []
    else:
        committed = reference.committed_by
        check.inconclusive = untested(kills, resumes, plan, min(committed) if committed else None)
    return check


def _crash_failure(crash: JobCrashed, kills: list) -> str:
    """A crash in a preempted run is the job's bug (most often a torn checkpoint it cannot load)."""
    before = [k for k in kills if k.attempt < crash.attempt]
    if not before:
        return f"{crash} (before any kill: the job is not reliable even uninterrupted)"
    last = before[-1]
    where = f"inside a save (writing {last.write})" if last.in_save else f"at step {last.step}"
    return f"{crash} — after the kill of attempt {last.attempt} {where}: a checkpoint the job cannot resume from"


def _run(
    config: VerifyConfig,
    name: str,
    schedule: Schedule,
    buckets: Buckets,
    machine: Machine,
    *,
    interval_s: float | None,
    timeout_s: float,
) -> RunOutcome:
    run_config = config.run_config(name, schedule, interval_s=interval_s, timeout_s=timeout_s)
    env = buckets.env | {"SPOTSIM_CHECKPOINT_KEEP": KEEP_EVERY_CHECKPOINT}
    outcome = run_live(run_config, machine, bucket=buckets.uri_for(name), bucket_env=env, save_watch=buckets.watch)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome


def _result(config: VerifyConfig, outcome: RunOutcome, bucket_env: dict) -> dict[str, np.ndarray] | str:
    """What the run produced (its artifact's tensors, or its final checkpoint's), or why there is nothing."""
    if config.artifact is not None:
        path = outcome.out / "output" / config.artifact
        if not path.is_file():
            return f"the {outcome.out.name} run wrote no {config.artifact} under SPOTSIM_OUTPUT_DIR ({path})"
        return artifact_tensors(path)
    try:
        restored = _open(outcome, bucket_env).restore_latest()
    except SpotsimError as e:
        return f"the final checkpoint of the {outcome.out.name} run cannot be read: {e}"
    if restored is None:
        return (
            f"the {outcome.out.name} run left no spotsim checkpoint to compare; pass --artifact for a job that does "
            "not checkpoint with spotsim's CheckpointManager"
        )
    tensors = result_tensors(restored.state)
    return tensors or f"the final checkpoint of the {outcome.out.name} run holds no tensors to compare"


def _open(outcome: RunOutcome, bucket_env: dict) -> CheckpointManager:
    uri = outcome.summary.checkpoint_uri
    assert uri is not None  # a live run's summary always names its bucket
    return CheckpointManager(uri, store_options=store_options(uri, bucket_env))


@contextlib.contextmanager
def _buckets(config: VerifyConfig) -> Iterator[Buckets]:
    """A fresh prefix per run: under ``--bucket``, or on one emulator (``emulator_url``'s, or an embedded one
    that outlives the runs), behind the proxy that sees saves being written."""
    tag = uuid.uuid4().hex[:8]
    if config.bucket is not None:
        base = config.bucket.rstrip("/")
        watch = DirectoryWatch() if base.startswith("file://") else None
        yield Buckets(lambda name: f"{base}/verify-{tag}/{name}", {}, watch)
        return
    from spotsim.storage.emulator import FakeGcsServer, ensure_bucket

    with contextlib.ExitStack() as stack:
        url = config.emulator_url
        if url is None:
            root = stack.enter_context(tempfile.TemporaryDirectory(prefix="spotsim-verify-"))
            url = stack.enter_context(FakeGcsServer(Path(root))).url
        ensure_bucket(url, "spotsim-verify")
        with BucketProxy(url) as proxy:
            yield Buckets(lambda name: f"gs://spotsim-verify/{tag}/{name}", proxy.env(), proxy)


# -- diagnosis ----------------------------------------------------------------------


def diagnose(attempts: list[AttemptRecord], reference: RunOutcome, run: RunOutcome, bucket_env: dict) -> list[str]:
    """Why a run differs from the reference, as far as its checkpoints tell (spotsim checkpoints only)."""
    notes: list[str] = []
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
            f"never registered with the manager: {', '.join(missing)} state"
            if missing
            else "model/optimizer state not (fully) restored"
            if right_after
            else "data order or RNG state not restored"
        )
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
    listed = state.get("registered")
    registered = listed if isinstance(listed, list) else list(state)
    if "model" not in registered:
        return []  # not an adapter's state: its part names mean nothing here
    return [label for part, label in EXPECTED_PARTS.items() if part not in registered]
