"""What the harness itself costs: the workload alone against the same workload under ``spotsim run``.

Two measurements, side by side in one run, repeats interleaved so machine
noise hits both alike:

* ``alone`` vs ``harness``: the torch-cnn workload run directly with the
  contract's environment set by hand (file:// checkpoints, an events file),
  against ``spotsim run --workload torch-cnn --preempt-rate 0`` with the same
  checkpoint interval and bucket. Time: wall seconds of the job process as the
  caller sees it (``alone``: ``subprocess.run``; ``harness``: the run's
  ``wall_s``, launch to exit). Target: harness ≤ 1.03 × alone.
* ``restart`` vs ``floor``: the restart overhead R the harness measures after a
  SIGKILL (relaunch to the first step after the resume), against a bare process
  that imports torch and spotsim and restores the same checkpoint, timed from
  launch to exit. Target: R ≤ 1.3 × floor.
* The save watch that lets ``spotsim verify`` kill inside a save, run in this
  process through ``run_live`` with no preemption, so only its cost shows:
  ``gs`` (the embedded emulator, direct) against ``gs-proxy`` (the same through
  the :class:`BucketProxy` every verify run uses), and ``file`` against
  ``file-polled`` (a :class:`DirectoryWatch` polling the checkpoint directory
  for the whole run — in verify it polls only from a kill point to the next
  save, so this is an upper bound). Target: each ≤ 1.03 × its pair.

Writes ``reports/harness_overhead.csv`` (one row per measurement),
``reports/harness_overhead_summary.csv`` and ``reports/harness_overhead.png``.

    python benchmarks/harness_overhead.py [--repeats 5] [--steps 4000] [--kill-at 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = [sys.executable, "-m", "spotsim.workloads.torch_cnn"]
SPOTSIM = [sys.executable, "-m", "spotsim.cli"]
FLOOR = """
import sys, time
import torch
from spotsim import CheckpointManager
with CheckpointManager(sys.argv[1]) as manager:
    restored = manager.restore_latest()
assert restored is not None and restored.step > 0
"""
TARGET_HARNESS, TARGET_RESTART = 1.03, 1.3
WATCH_PAIRS = (("gs-proxy", "gs"), ("file-polled", "file"))


def measure_alone(work: Path, steps: int, interval_steps: int) -> float:
    env = os.environ | {
        "SPOTSIM_CHECKPOINT_URI": (work / "ckpt").as_uri(), "SPOTSIM_EVENTS": str(work / "events.jsonl"),
        "SPOTSIM_OUTPUT_DIR": str(work / "output"), "SPOTSIM_CHECKPOINT_INTERVAL_STEPS": str(interval_steps),
    }  # fmt: skip
    start = time.perf_counter()
    subprocess.run([*WORKLOAD, "--steps", str(steps)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def spotsim_run(work: Path, steps: int, interval_steps: int, *extra: str) -> dict:
    cmd = [*SPOTSIM, "run", "--workload", "torch-cnn", "--steps", str(steps), "--interval-steps", str(interval_steps),
           "--bucket", (work / "ckpt").as_uri(), "--out", str(work / "run"), *extra]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads((work / "run" / "summary.json").read_text())


def measure_floor(uri: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR, uri], check=True, capture_output=True)
    return time.perf_counter() - start


def measure_watched(work: Path, method: str, steps: int, interval_steps: int) -> float:
    """Wall seconds of torch-cnn under ``run_live`` on one of the save-watch set-ups (see the docstring)."""
    import threading

    from spotsim.cost import load_prices
    from spotsim.harness import RunConfig, parse_schedule, run_live
    from spotsim.harness.save_watch import BucketProxy, DirectoryWatch
    from spotsim.storage.emulator import FakeGcsServer, ensure_bucket
    from spotsim.workloads import command

    config = RunConfig(tuple(command("torch-cnn", ["--steps", str(steps)])), work / "run",
                       parse_schedule("poisson", 0), interval_steps=interval_steps)  # fmt: skip
    machine = load_prices().machine("gcp-t4")
    if method.startswith("file"):
        uri, stop = (work / "ckpt").as_uri(), threading.Event()
        (work / "ckpt").mkdir()

        def poll() -> None:  # what an armed DirectoryWatch does, all run long
            watch = DirectoryWatch()
            while not stop.is_set():
                watch.arm(uri)
                watch.wait_for_write(0.2)

        poller = threading.Thread(target=poll, daemon=True)
        if method == "file-polled":
            poller.start()
        try:
            return run_live(config, machine, bucket=uri).summary["wall_s"]
        finally:
            stop.set()
    with FakeGcsServer(work / "emulator") as emulator:
        ensure_bucket(emulator.url, "bench")
        if method == "gs":
            return run_live(config, machine, bucket="gs://bench/run", bucket_env=emulator.env()).summary["wall_s"]
        with BucketProxy(emulator.url) as proxy:
            return run_live(config, machine, bucket="gs://bench/run", bucket_env=proxy.env(),
                            save_watch=proxy).summary["wall_s"]  # fmt: skip


def one_repeat(root: Path, repeat: int, args: argparse.Namespace) -> list[dict]:
    rows = []
    methods = ["alone", "harness", *(m for pair in WATCH_PAIRS for m in pair)]
    for method in methods if repeat % 2 == 0 else methods[::-1]:
        work = Path(tempfile.mkdtemp(dir=root))
        if method == "alone":
            seconds = measure_alone(work, args.steps, args.interval_steps)
        elif method == "harness":
            seconds = spotsim_run(work, args.steps, args.interval_steps, "--preempt-rate", "0")["wall_s"]
        else:
            seconds = measure_watched(work, method, args.steps, args.interval_steps)
        rows.append({"repeat": repeat, "method": method, "seconds": seconds})
        shutil.rmtree(work)
    # One preemption by SIGKILL halfway through; then the floor restores what that run left behind.
    work = Path(tempfile.mkdtemp(dir=root))
    summary = spotsim_run(
        work, args.steps, args.interval_steps, "--schedule", f"fixed:{args.kill_at}", "--kill", "sigkill"
    )
    if summary["preemptions"] != 1 or summary["restart_overhead_s"] is None:
        raise SystemExit(f"no single preemption and resume: lower --kill-at ({summary['interruptions']})")
    restart_s = summary["restart_overhead_s"] / summary["time_scale"]
    rows.append({"repeat": repeat, "method": "restart", "seconds": restart_s})
    rows.append({"repeat": repeat, "method": "floor", "seconds": measure_floor((work / "ckpt").as_uri())})
    shutil.rmtree(work)
    print("  ".join(f"{r['method']} {r['seconds']:.3f}s" for r in rows), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--interval-steps", type=int, default=100)
    parser.add_argument("--kill-at", type=float, default=4.0, help="seconds of uptime before the SIGKILL")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spotsim-harness-bench-") as root:
        rows = [row for repeat in range(args.repeats) for row in one_repeat(Path(root), repeat, args)]
    results = pd.DataFrame(rows)
    medians = results.groupby("method")["seconds"].median()
    row = {
        "alone_s": medians["alone"], "harness_s": medians["harness"],
        "harness_vs_alone": medians["harness"] / medians["alone"],
        "restart_s": medians["restart"], "floor_s": medians["floor"],
        "restart_vs_floor": medians["restart"] / medians["floor"],
        **{f"{watched}_vs_{plain}": medians[watched] / medians[plain] for watched, plain in WATCH_PAIRS},
        "steps": args.steps, "repeats": args.repeats, "cpus": os.cpu_count(),
    }  # fmt: skip
    summary = pd.DataFrame([row])
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "harness_overhead.csv", index=False)
    summary.to_csv(args.out / "harness_overhead_summary.csv", index=False)
    plot(results, args.out / "harness_overhead.png")
    s = summary.iloc[0]
    checks = [("harness vs alone", s.harness_vs_alone, TARGET_HARNESS),
              ("restart R vs floor", s.restart_vs_floor, TARGET_RESTART),
              *((f"{w} vs {p}", s[f"{w}_vs_{p}"], TARGET_HARNESS) for w, p in WATCH_PAIRS)]  # fmt: skip
    for name, ratio, target in checks:
        print(f"{name}: {ratio:.3f}x (target ≤ {target}x: {'met' if ratio <= target else 'NOT met'})")
    return 0


def plot(results: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, methods, title in [(axes[0], ["alone", "harness"], "torch-cnn wall time"),
                               (axes[1], ["floor", "restart"], "restart overhead R vs floor"),
                               (axes[2], ["gs", "gs-proxy", "file", "file-polled"], "save watch (verify)")]:  # fmt: skip
        data = [results.loc[results.method == m, "seconds"] for m in methods]
        ax.boxplot(data, tick_labels=methods)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("seconds (real)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
