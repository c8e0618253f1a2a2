"""Kill a checkpointing process at random instants and check what survives.

Run as a script, this is the *worker*: it restores the newest checkpoint,
checks it is exactly the state saved at that step, says so on stdout, then
saves one deterministic state per step, forever, printing each commit.
:func:`torture` is the *driver*: it SIGKILLs workers at random instants spread
over whole save cycles and checks after every kill that the restore returned
the last committed state (never a partial or mixed one, never an older one).
Used by ``tests/test_checkpoint_torture.py`` and ``benchmarks/soak_kill.py``.
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

MiB = 1 << 20


def expected_state(step: int, size_mib: float) -> dict:
    """The state saved at ``step``: two arrays and scalars, all derived from the step."""
    n = int(size_mib * MiB)
    rng = np.random.default_rng(step)
    return {
        "step": step,
        "a": rng.integers(0, 256, n * 3 // 4, dtype=np.uint8),
        "b": rng.standard_normal(n // 4 // 8),
        "meta": {"tag": f"step {step}"},
    }


def same_state(restored: dict, step: int, size_mib: float) -> bool:
    expected = expected_state(step, size_mib)
    return (
        restored["step"] == step
        and restored["meta"] == expected["meta"]
        and np.array_equal(restored["a"], expected["a"])
        and np.array_equal(restored["b"], expected["b"])
    )


def worker(uri: str, endpoint: str, size_mib: float, layout: str) -> None:
    from spotsim import CheckpointManager

    options = {"endpoint": endpoint} if endpoint else {}
    with CheckpointManager(uri, keep=2, async_save=False, layout=layout, store_options=options) as manager:
        restored = manager.restore_latest()
        step = 0
        if restored is not None:
            step = restored.step
            verdict = "ok" if same_state(restored.state, step, size_mib) else "MISMATCH"
            print(f"resumed {step} {verdict}", flush=True)
        else:
            print("resumed none ok", flush=True)
        while True:
            step += 1
            manager.save(step, expected_state(step, size_mib))
            print(f"committed {step}", flush=True)


@dataclass
class TortureResult:
    kills: int = 0
    resumes_checked: int = 0
    steps_committed: int = 0
    resumed_newer_than_reported: int = 0  # killed after the commit, before it was printed
    cycle_s: list[float] = field(default_factory=list)


def torture(uri: str, endpoint: str, *, kills: int, size_mib: float, seed: int, progress=None) -> TortureResult:
    """SIGKILL ``kills`` workers at random instants; raise AssertionError on any lost or wrong state."""
    rng = random.Random(seed)
    result, last_committed, cycle = TortureResult(), 0, 0.3
    while result.kills < kills:
        layout = rng.choice(["directory", "archive"])
        lines, proc, reader = _launch(uri, endpoint, size_mib, layout)
        # What this worker resumed from is committed, printed by its predecessor or not.
        last_committed = _check_resume(_wait_for(lines, proc, "resumed"), last_committed, result)
        # Kill anywhere in the next ~2 save cycles: before, inside or after a save.
        time.sleep(rng.uniform(0, 2 * cycle))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()  # every line the worker printed before it died, read to EOF
        result.kills += 1
        commits = [int(line.split()[1]) for _, line in lines if line.startswith("committed")]
        if commits:
            last_committed = commits[-1]
            result.steps_committed += len(commits)
        # A save cycle, resume to commit and commit to commit; without one in the window, it is longer.
        marks = [t for t, line in lines if line.startswith(("resumed", "committed"))]
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        cycle = sum(gaps) / len(gaps) if gaps else cycle * 1.5
        result.cycle_s.append(cycle)
        if progress:
            progress(result)
    lines, proc, _ = _launch(uri, endpoint, size_mib, "directory")
    _check_resume(_wait_for(lines, proc, "resumed"), last_committed, result)
    proc.kill()
    proc.wait()
    return result


def _launch(uri: str, endpoint: str, size_mib: float, layout: str):
    proc = subprocess.Popen(
        [sys.executable, __file__, uri, endpoint, str(size_mib), layout],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, proc, reader


def _wait_for(lines, proc, prefix: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, line in list(lines):
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"worker never printed {prefix!r}")


def _check_resume(line: str, last_committed: int, result: TortureResult) -> int:
    _, step, verdict = line.split()
    resumed = 0 if step == "none" else int(step)
    assert verdict == "ok", f"restore of step {resumed} returned a state that was never saved as a whole"
    # A commit the worker did not live to print may exist (resumed == last + 1); an older one must not win.
    assert resumed in (last_committed, last_committed + 1), f"resumed {resumed}, last committed {last_committed}"
    result.resumed_newer_than_reported += resumed == last_committed + 1
    result.resumes_checked += 1
    return resumed


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
