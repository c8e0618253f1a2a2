"""``spotsim run`` end to end: a bucket, the contract environment, the live run, and its outputs."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spotsim.cost import Machine
from spotsim.errors import SpotsimError
from spotsim.harness.config import RunConfig
from spotsim.harness.runlog import read_run_log
from spotsim.harness.runner import LiveRun, Progress
from spotsim.harness.summary import summarize
from spotsim.storage import open_store


@dataclass
class RunOutcome:
    summary: dict
    out: Path
    crash: SpotsimError | None
    interrupted: bool


def run_live(
    config: RunConfig,
    machine: Machine,
    *,
    bucket: str | None = None,
    bucket_env: dict[str, str] | None = None,
    on_progress: Callable[[Progress], None] = lambda p: None,
) -> RunOutcome:
    """Run ``config`` against ``bucket`` (default: a fresh prefix on the embedded emulator) and write
    ``events.jsonl``, ``summary.json`` and ``timeline.png`` under ``config.out``.

    ``bucket_env`` is extra environment for the job (and the bucket check), e.g. the
    ``STORAGE_EMULATOR_HOST`` of an emulator the caller runs."""
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "events.jsonl").unlink(missing_ok=True)  # a rerun into the same directory starts a new log
    with _checkpoint_bucket(bucket, bucket_env or {}) as (uri, store_env):
        env = os.environ | store_env | _contract_env(config, uri)
        run = LiveRun(config, env, on_progress=on_progress)
        started = time.monotonic()
        ends = run.run()
        wall_s = time.monotonic() - started
    attempts = read_run_log(config.out / "events.jsonl")
    summary = summarize(attempts, config, machine, wall_s=wall_s) | {"run_id": run.run_id, "checkpoint_uri": uri}
    interrupted = bool(ends) and ends[-1].cause == "interrupted"
    summary["interrupted"] = interrupted
    (config.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from spotsim.report import plot_timeline

    title = f"{' '.join(config.command[-3:])} · {config.schedule.describe()} · kill {config.kill}"
    plot_timeline(attempts, config.out / "timeline.png", time_scale=config.time_scale, title=title)
    crash = run.crash if ends and ends[-1].cause == "crash" else None
    return RunOutcome(summary, config.out, crash, interrupted)


def _contract_env(config: RunConfig, uri: str) -> dict[str, str]:
    env = {
        "SPOTSIM_CHECKPOINT_URI": uri,
        "SPOTSIM_EVENTS": str((config.out / "events.jsonl").absolute()),
        "SPOTSIM_OUTPUT_DIR": str((config.out / "output").absolute()),
        "SPOTSIM_STEP_EVENT_INTERVAL": str(config.step_event_interval_s),
    }
    if config.real_interval_s is not None:
        env["SPOTSIM_CHECKPOINT_INTERVAL"] = repr(config.real_interval_s)
    if config.interval_steps is not None:
        env["SPOTSIM_CHECKPOINT_INTERVAL_STEPS"] = str(config.interval_steps)
    return env


def store_options(uri: str, env: dict[str, str]) -> dict[str, str]:
    """``open_store`` options that point a ``gs://`` URI at the emulator ``env`` names, if any."""
    endpoint = env.get("STORAGE_EMULATOR_HOST")
    return {"endpoint": endpoint} if endpoint and uri.startswith("gs://") else {}


@contextlib.contextmanager
def _checkpoint_bucket(bucket: str | None, env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """(checkpoint URI, extra environment): the user's bucket checked for access, or the embedded emulator."""
    if bucket is not None:
        with open_store(bucket, **store_options(bucket, env)) as store:
            store.list("")  # fails now, in one line, if the bucket cannot be reached or read
        yield bucket, env
        return
    from spotsim.storage.emulator import FakeGcsServer

    with tempfile.TemporaryDirectory(prefix="spotsim-bucket-") as root, FakeGcsServer(Path(root)) as emulator:
        yield f"gs://spotsim-runs/{uuid.uuid4().hex[:12]}", emulator.env() | env
