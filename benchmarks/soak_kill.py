"""Soak: SIGKILL a checkpointing process 1,000 times per backend with 64 MiB states.

The CI torture test (``tests/test_checkpoint_torture.py``) does the same 100
times with 16 MiB states; this is the long run. Each kill lands at a random
instant spread over about two save cycles; after every kill a fresh worker
restores and must get exactly the last committed state (never a partial,
mixed or older one). Any violation aborts with a non-zero exit.

Writes ``reports/soak_kill.csv`` (one row per backend: kills, resumes checked,
steps committed, resumes that found a commit the killed worker never got to
report, mean save cycle, wall time) and ``reports/soak_kill_env.json``.

    python benchmarks/soak_kill.py                 # 1000 kills x 64 MiB per backend (~40 min)
    python benchmarks/soak_kill.py --kills 50      # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from torture import torture  # noqa: E402

from spotsim.storage.emulator import FakeGcsServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="kills per backend")
    parser.add_argument("--size-mib", type=float, default=64, help="state size per checkpoint")
    parser.add_argument("--backends", default="file,gs")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args()
    if args.kills < 1 or args.size_mib <= 0:
        parser.error("--kills must be at least 1 and --size-mib positive")
    rows = []
    with tempfile.TemporaryDirectory(prefix="spotsim-soak-") as tmp, FakeGcsServer(Path(tmp) / "gcs") as emulator:
        for backend in args.backends.split(","):
            if backend == "file":
                uri, endpoint = (Path(tmp) / "file").as_uri(), ""
            else:
                uri, endpoint = f"gs://soak/{uuid.uuid4().hex[:8]}", emulator.url
            rows.append(soak(backend, uri, endpoint, args))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "soak_kill.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": " ".join(["python", "benchmarks/soak_kill.py", *sys.argv[1:]]),
        "finished": time.ctime(),
    }
    (args.out / "soak_kill_env.json").write_text(json.dumps(env, indent=2) + "\n")
    print(f"all {sum(r['kills'] for r in rows)} kills survived; wrote {args.out / 'soak_kill.csv'}")
    return 0


def soak(backend: str, uri: str, endpoint: str, args: argparse.Namespace) -> dict:
    started = time.monotonic()

    def progress(result) -> None:
        if result.kills % 50 == 0:
            print(f"{backend}: {result.kills}/{args.kills} kills, {result.steps_committed} commits, "
                  f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip

    result = torture(uri, endpoint, kills=args.kills, size_mib=args.size_mib, seed=args.seed, progress=progress)
    return {
        "backend": backend, "size_mib": args.size_mib, "kills": result.kills,
        "resumes_checked": result.resumes_checked, "steps_committed": result.steps_committed,
        "resumed_newer_than_reported": result.resumed_newer_than_reported,
        "mean_save_cycle_s": round(statistics.mean(result.cycle_s), 3) if result.cycle_s else None,
        "wall_s": round(time.monotonic() - started, 1),
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
