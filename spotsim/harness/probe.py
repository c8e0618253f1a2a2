"""Measure a job before its run: step time and one save's cost, so ``--work`` can pick K.

The probe runs the command once under the contract, on its own checkpoint
prefix and local disk, checkpointing every :data:`PROBE_INTERVAL_REAL_S`
seconds, until it has trained for :data:`PROBE_COMPUTE_REAL_S` and written
:data:`PROBE_CHECKPOINTS` checkpoints (or finished); then it is killed and
its checkpoints are deleted. Its step time excludes the first step (warm-up)
and the checkpoints' blocking time.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from spotsim.errors import InvalidOption
from spotsim.events import CHECKPOINT, DONE, START, STEP
from spotsim.harness.runlog import JobEventReader
from spotsim.harness.runner import reap
from spotsim.lifeline import Reaper

PROBE_INTERVAL_REAL_S = 0.25
PROBE_COMPUTE_REAL_S = 2.0
PROBE_CHECKPOINTS = 3
PROBE_TIMEOUT_REAL_S = 300.0
POLL_REAL_S = 0.05


@dataclass(frozen=True)
class Probe:
    """What the probe measured."""

    step_real_s: float  # per step, blocking excluded
    blocking_real_s: float  # median per periodic checkpoint
    persist_real_s: float  # median per periodic checkpoint
    startup_real_s: float  # launch to the `start` event
    steps: int

    @property
    def save_real_s(self) -> float:
        return self.blocking_real_s + self.persist_real_s


def probe_job(command: tuple[str, ...], env: dict[str, str], events_path: Path) -> Probe:
    """Run ``command`` briefly and measure it (``env`` holds the contract's variables, a probe-only URI).

    Raises:
        InvalidOption: the job reported too few steps to measure, or exited with an error first.
    """
    reader = JobEventReader(events_path)
    events: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="spotsim-probe-") as disk, Reaper() as reaper:
        stderr_path = Path(disk) / "stderr"
        probe_env = env | {
            "SPOTSIM_EVENTS": str(events_path),
            "SPOTSIM_CHECKPOINT_INTERVAL": repr(PROBE_INTERVAL_REAL_S),
            "SPOTSIM_STEP_EVENT_INTERVAL": "0.002",
            "SPOTSIM_RUN_ID": "probe",
            "SPOTSIM_ATTEMPT": "0",
            "SPOTSIM_LOCAL_DIR": str(Path(disk) / "local"),
            "TMPDIR": str(Path(disk) / "local"),
        }
        probe_env.pop("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", None)
        (Path(disk) / "local").mkdir()
        launched = time.time()
        with open(stderr_path, "wb") as stderr_file:
            process = subprocess.Popen(
                list(command),
                env=probe_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                start_new_session=True,
            )
        reaper.watch(process.pid)
        deadline = time.monotonic() + PROBE_TIMEOUT_REAL_S
        try:
            while process.poll() is None and time.monotonic() < deadline and not _enough(events):
                events += reader.read_new()[0]
                time.sleep(POLL_REAL_S)
        finally:
            reap(process)  # the whole group: a job's children must not outlive it
            reaper.release(process.pid)
        events += reader.read_new(final=True)[0]
        stderr = stderr_path.read_text(errors="replace").strip()
    return _measure(events, launched, process.returncode, stderr)


def _enough(events: list[dict]) -> bool:
    steps = [e for e in events if e["event"] == STEP]
    saves = sum(1 for e in events if e["event"] == CHECKPOINT)
    trained = steps[-1]["t"] - steps[0]["t"] if len(steps) >= 2 else 0.0
    finished = any(e["event"] == DONE for e in events)
    return finished or (trained >= PROBE_COMPUTE_REAL_S and saves >= PROBE_CHECKPOINTS)


def _measure(events: list[dict], launched: float, code: int | None, stderr: str) -> Probe:
    steps = [(float(e["t"]), e["step"]) for e in events if e["event"] == STEP]
    steps = [(t, s) for t, s in steps if s > 0]
    checkpoints = [e for e in events if e["event"] == CHECKPOINT and e.get("kind", "periodic") == "periodic"]
    if len(steps) < 2 or steps[-1][1] <= steps[0][1]:
        tail = stderr.splitlines()[-1] if stderr else f"exit status {code}"
        raise InvalidOption(
            f"cannot choose K for --work: the job reported {len(steps)} step events while it was measured "
            f"({tail}); give --time-scale K instead"
        )
    (t0, s0), (t1, s1) = steps[0], steps[-1]
    blocked = sum(float(c.get("blocking_s", 0.0)) for c in checkpoints if t0 < c["t"] <= t1)
    starts = [float(e["t"]) for e in events if e["event"] == START]
    return Probe(
        step_real_s=max(t1 - t0 - blocked, 1e-9) / (s1 - s0),
        blocking_real_s=_median(c.get("blocking_s") for c in checkpoints),
        persist_real_s=_median(c.get("persist_s") for c in checkpoints),
        startup_real_s=(starts[0] if starts else t0) - launched,
        steps=s1,
    )


def _median(values) -> float:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return statistics.median(numbers) if numbers else 0.0
