"""Soak: SIGKILL a checkpointing process 1,000 times per backend with 64 MiB states.

The CI torture test (``tests/test_checkpoint_torture.py``) does the same 100
times with 16 MiB states; this is the long run. Each kill lands at a random
instant spread over about two save cycles; after every kill a fresh worker
restores and must get exactly the last committed state (never a partial,
mixed or older one). Any violation aborts with a non-zero exit.

Writes ``reports/soak_kill.csv`` (one row per backend: kills, resumes checked,
steps committed, resumes that found a commit the killed worker never got to
report, mean save cycle, wall time) and ``reports/soak_kill_env.json``.

With ``--storage-faults SPEC`` (see :mod:`spotsim.storage.faults`) the ``gs`` backend's
workers reach the emulator through a :class:`~spotsim.storage.faults.FaultProxy`: their
saves and restores meet 503s, 429s, resets mid-upload or outages as well as SIGKILLs. Saves
the bucket defeats are skipped (the manager's ``checkpoint_failed``), so a worker reports
only what it committed. Violations are counted, not asserted: ``partial_or_mixed`` (a
restore that is not exactly a state saved whole), ``lost`` (a restore older than the last
commit) and ``unexplained`` (newer than anything attempted); any of them makes the exit
status non-zero. Its reports are ``soak_kill_faults.csv`` and ``soak_kill_faults_env.json``.

    python benchmarks/soak_kill.py                 # 1000 kills x 64 MiB per backend (~40 min)
    python benchmarks/soak_kill.py --kills 50      # a quick look
    python benchmarks/soak_kill.py --backends gs --kills 200 --storage-faults 503=0.05,429=0.03,reset=0.05
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from torture import expected_state, same_state, torture  # noqa: E402

from spotsim.errors import SpotsimError  # noqa: E402
from spotsim.storage.emulator import FakeGcsServer  # noqa: E402
from spotsim.storage.faults import FAULT_KINDS, FaultProxy, FaultSpec  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="kills per backend")
    parser.add_argument("--size-mib", type=float, default=64, help="state size per checkpoint")
    parser.add_argument("--backends", default="file,gs")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--storage-faults", metavar="SPEC", help="put a fault proxy with SPEC in front of gs://")
    parser.add_argument("--worker", nargs=4, metavar=("URI", "ENDPOINT", "SIZE_MIB", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        faulty_worker(args.worker[0], args.worker[1], float(args.worker[2]), args.worker[3])
        return 0
    if args.kills < 1 or args.size_mib <= 0:
        parser.error("--kills must be at least 1 and --size-mib positive")
    try:
        faults = FaultSpec.parse(args.storage_faults) if args.storage_faults is not None else None
    except SpotsimError as e:
        parser.error(str(e))
    rows = []
    with tempfile.TemporaryDirectory(prefix="spotsim-soak-") as tmp, FakeGcsServer(Path(tmp) / "gcs") as emulator:
        for backend in args.backends.split(","):
            if backend == "file":
                rows.append(soak(backend, (Path(tmp) / "file").as_uri(), "", args))
            elif faults is None:
                rows.append(soak(backend, f"gs://soak/{uuid.uuid4().hex[:8]}", emulator.url, args))
            else:
                with FaultProxy(emulator.url, faults) as proxy:
                    rows.append(fault_soak(f"gs://soak/{uuid.uuid4().hex[:8]}", proxy, args))
    stem = "soak_kill" if faults is None else "soak_kill_faults"
    write_report(rows, args, stem)
    violations = sum(r.get("partial_or_mixed", 0) + r.get("lost", 0) + r.get("unexplained", 0) for r in rows)
    if violations:
        print(f"FAILED: {violations} restores were partial, mixed, lost or unexplained; see {args.out / stem}.csv")
        return 1
    print(f"all {sum(r['kills'] for r in rows)} kills survived; wrote {args.out / stem}.csv")
    return 0


def write_report(rows: list[dict], args: argparse.Namespace, stem: str) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(args.out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": " ".join(["python", "benchmarks/soak_kill.py", *sys.argv[1:]]),
        "storage_faults": args.storage_faults and FaultSpec.parse(args.storage_faults).describe(),
        "finished": time.ctime(),
    }
    (args.out / f"{stem}_env.json").write_text(json.dumps(env, indent=2) + "\n")


def soak(backend: str, uri: str, endpoint: str, args: argparse.Namespace) -> dict:
    started = time.monotonic()

    def progress(result) -> None:
        if result.kills % 50 == 0:
            print(
                f"{backend}: {result.kills}/{args.kills} kills, {result.steps_committed} commits, "
                f"{time.monotonic() - started:.0f} s",
                flush=True,
            )

    result = torture(uri, endpoint, kills=args.kills, size_mib=args.size_mib, seed=args.seed, progress=progress)
    return {
        "backend": backend,
        "size_mib": args.size_mib,
        "kills": result.kills,
        "resumes_checked": result.resumes_checked,
        "steps_committed": result.steps_committed,
        "resumed_newer_than_reported": result.resumed_newer_than_reported,
        "mean_save_cycle_s": round(statistics.mean(result.cycle_s), 3) if result.cycle_s else None,
        "wall_s": round(time.monotonic() - started, 1),
    }


# -- under storage faults ----------------------------------------------------------


def faulty_worker(uri: str, endpoint: str, size_mib: float, layout: str) -> None:
    """Like the torture worker, but a save the bucket defeated is reported as ``failed``, not ``committed``."""
    from spotsim import CheckpointManager

    with CheckpointManager(uri, keep=2, async_save=False, layout=layout, store_options={"endpoint": endpoint}) as m:
        restored = m.restore_latest()
        step = 0 if restored is None else restored.step
        verdict = "ok" if restored is None or same_state(restored.state, step, size_mib) else "MISMATCH"
        print(f"resumed {step if restored else 'none'} {verdict}", flush=True)
        while True:
            step += 1
            m.save(step, expected_state(step, size_mib))
            done = m.saves[-1] if m.saves and m.saves[-1].step == step else None
            print(f"committed {step} {done.retries}" if done else f"failed {step}", flush=True)


class _Worker:
    """One worker process and the lines it printed, read by a thread as they come."""

    def __init__(self, uri: str, endpoint: str, size_mib: float, layout: str) -> None:
        command = [sys.executable, __file__, "--worker", uri, endpoint, str(size_mib), layout]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.errors: collections.deque[str] = collections.deque(maxlen=20)  # drained, so a chatty worker never blocks
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def resumed(self, timeout: float = 180.0) -> str | None:
        """The worker's ``resumed`` line, or None if it died first (its restore failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line := next((line for _, line in list(self.lines) if line.startswith("resumed")), None):
                return line
            if self.proc.poll() is not None:
                self.reader.join()
                return next((line for _, line in self.lines if line.startswith("resumed")), None)
            time.sleep(0.01)
        return None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join()


def fault_soak(uri: str, proxy: FaultProxy, args: argparse.Namespace) -> dict:
    """The torture loop of ``tests/torture.py`` through a fault proxy, counting violations instead of stopping."""
    rng, started = random.Random(args.seed), time.monotonic()
    tally: collections.Counter[str] = collections.Counter()
    last_committed, last_attempted, cycle, cycles = 0, 0, 0.5, []
    while tally["kills"] < args.kills:
        worker = _Worker(uri, proxy.url, args.size_mib, rng.choice(["directory", "archive"]))
        line = worker.resumed()
        if line is None:  # its restore was defeated by the faults: not a kill, not a violation
            tally["restore_errors"] += 1
            worker.kill()
            print(f"restore failed: {''.join(worker.errors)[-300:].strip()}", flush=True)
            if tally["restore_errors"] > max(10, args.kills // 10):
                raise SystemExit("too many workers could not restore; is the bucket reachable at all?")
            continue
        last_committed = last_attempted = _check(line, last_committed, last_attempted, tally)
        time.sleep(rng.uniform(0, 2 * cycle))
        worker.kill()
        tally["kills"] += 1
        for _, printed in worker.lines:
            word, *rest = printed.split()
            if word == "committed":
                last_committed = last_attempted = int(rest[0])
                tally["steps_committed"] += 1
                tally["retries"] += int(rest[1])
            elif word == "failed":
                last_attempted = int(rest[0])
                tally["checkpoint_failures"] += 1
        last_attempted += 1  # the save it was killed in may have committed
        marks = [t for t, printed in worker.lines if printed.startswith(("resumed", "committed", "failed"))]
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        cycle = sum(gaps) / len(gaps) if gaps else cycle * 1.5
        cycles.append(cycle)
        if tally["kills"] % 50 == 0:
            print(
                f"gs+faults: {tally['kills']}/{args.kills} kills, {tally['steps_committed']} commits, "
                f"{dict(proxy.counts)} faults, {time.monotonic() - started:.0f} s",
                flush=True,
            )
    final = _Worker(uri, proxy.url, args.size_mib, "directory")
    if (line := final.resumed()) is not None:
        _check(line, last_committed, last_attempted, tally)
    final.kill()
    return {
        "backend": "gs",
        "size_mib": args.size_mib,
        "kills": tally["kills"],
        "resumes_checked": tally["resumes"],
        "steps_committed": tally["steps_committed"],
        "resumed_newer_than_reported": tally["newer"],
        "mean_save_cycle_s": round(statistics.mean(cycles), 3) if cycles else None,
        "wall_s": round(time.monotonic() - started, 1),
        "storage_faults": proxy.spec.describe(),
        "requests": proxy.requests,
        **{f"injected_{kind}": proxy.counts[kind] for kind in FAULT_KINDS},
        "retries": tally["retries"],
        "checkpoint_failures": tally["checkpoint_failures"],
        "restore_errors": tally["restore_errors"],
        "partial_or_mixed": tally["partial_or_mixed"],
        "lost": tally["lost"],
        "unexplained": tally["unexplained"],
    }


def _check(line: str, last_committed: int, last_attempted: int, tally: collections.Counter) -> int:
    """Count one resume's violations; return the step it resumed from (committed, reported or not)."""
    _, step, verdict = line.split()
    resumed = 0 if step == "none" else int(step)
    tally["resumes"] += 1
    if verdict != "ok":
        tally["partial_or_mixed"] += 1
        print(f"VIOLATION: restore of step {resumed} returned a state that was never saved whole", flush=True)
    if resumed < last_committed:
        tally["lost"] += 1
        print(f"VIOLATION: resumed {resumed}, but {last_committed} was committed", flush=True)
    elif resumed > max(last_committed, last_attempted):
        tally["unexplained"] += 1
        print(f"VIOLATION: resumed {resumed}, newer than any save attempted ({last_attempted})", flush=True)
    tally["newer"] += resumed > last_committed
    return max(resumed, last_committed)


if __name__ == "__main__":
    sys.exit(main())
