"""What the harness itself costs: the workload alone against the same workload under ``spotsim run``.

Two measurements, side by side in one run, repeats interleaved so machine
noise hits both alike:

* ``alone`` vs ``harness``: the torch-cnn workload run directly with the
  contract's environment set by hand (file:// checkpoints, an events file),
  against ``spotsim run --workload torch-cnn --preempt-rate 0`` with the same
  checkpoint interval and bucket. Time: wall seconds of the job process as the
  caller sees it (``alone``: ``subprocess.run``; ``harness``: the run's
  ``wall_s``, launch to exit). Target: harness ≤ 1.03 × alone.
* ``restart`` vs ``floor``: the restart overhead R after a SIGKILL, in real
  seconds from the relaunch (the run log's ``launch`` event, written just
  before the process is spawned) to the first step completed after the resume,
  against a bare process that imports torch and spotsim and restores the same
  checkpoint, timed from just before its spawn to the moment the restore
  returned (its own clock). The floor stops there, not at its exit: R ends at a
  step, before any teardown, and an interpreter's teardown with torch loaded
  takes about 0.4 s that is no part of a restart. R is read from the run log
  rather than ``summary.json``, whose restart overhead is simulated time; the
  runs use K = 1 so the SIGKILL lands at ``--kill-at`` real seconds. Target:
  R ≤ 1.3 × floor. Also recorded, not targets: ``restart_startup`` (launch to
  the ``start`` event; everything after it the harness counts as training,
  × K); ``floor_exit``, the same floor process timed to its exit (what this
  benchmark called the floor until the teardown was noticed); and
  ``floor_optimizer``, the floor that also builds a torch optimizer first:
  since torch 2.x an optimizer's construction and first ``step()`` import
  ``torch._dynamo`` (about a second), which no job training with ``torch.optim``
  avoids and the floor does not pay.
* The save watch that lets ``spotsim verify`` kill inside a save, run in this
  process through ``run_live`` with no preemption, so only its cost shows:
  ``gs`` (the embedded emulator, direct) against ``gs-proxy`` (the same through
  the :class:`BucketProxy` every verify run uses), and ``file`` against
  ``file-polled`` (a :class:`DirectoryWatch` polling the checkpoint directory
  for the whole run — in verify it polls only from a kill point to the next
  save, so this is an upper bound). Target: each ≤ 1.03 × its pair.

Writes ``reports/harness_overhead.csv`` (one row per measurement),
``reports/harness_overhead_summary.csv`` and ``reports/harness_overhead.png``.
``--profile`` instead times the phases of one resumed torch-cnn attempt (the
table in ``reports/restart_profile.md``) and writes nothing.

    python benchmarks/harness_overhead.py [--repeats 5] [--steps 4000] [--kill-at 4]
    python benchmarks/harness_overhead.py --profile [--repeats 5]
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
restored_t = time.time()
assert restored is not None and restored.step > 0
print(restored_t)
"""
# The floor of a job that trains with torch.optim: building an optimizer imports torch._dynamo.
FLOOR_OPTIMIZER = FLOOR.replace("import torch\n", "import torch\ntorch.optim.Adam([torch.zeros(1)])\n")
# One resumed torch-cnn attempt, its phases timed by wrapping the workload's own functions
# (so it runs the real main loop, and runs unchanged on older versions of the workload).
PROFILE = """
import json, os, sys, time
launch_t, marks = float(sys.argv[1]), [("interpreter start", None, time.time())]
import torch
marks.append(("import torch", None, time.time()))
from spotsim.checkpoint import CheckpointManager
from spotsim.workloads import common, torch_cnn
marks.append(("import spotsim and the workload", None, time.time()))

def timed(owner, name, label):
    inner = getattr(owner, name, None)
    if inner is None:
        return
    def wrapper(*args, **kwargs):
        started = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            marks.append((label, started, time.time()))
    setattr(owner, name, wrapper)

for owner, name, label in [(torch_cnn, "build", "build"), (torch_cnn, "deterministic", "deterministic()"),
                           (common, "digits", "digits()"), (torch.optim.Adam, "__init__", "Adam()"),
                           (torch_cnn.TorchClassifierJob, "warm_up", "warm-up"),
                           (common, "resume", "restore + load"), (torch_cnn.TorchClassifierJob, "train_step", "step"),
                           (CheckpointManager, "save", "checkpoint (blocking)")]:
    timed(owner, name, label)
status = torch_cnn.main(sys.argv[2:])
print(json.dumps({"launch_t": launch_t, "marks": marks}), flush=True)
os._exit(status)
"""
TARGET_HARNESS, TARGET_RESTART = 1.03, 1.3
WATCH_PAIRS = (("gs-proxy", "gs"), ("file-polled", "file"))


def measure_alone(work: Path, steps: int, interval_steps: int) -> float:
    env = os.environ | {
        "SPOTSIM_CHECKPOINT_URI": (work / "ckpt").as_uri(),
        "SPOTSIM_EVENTS": str(work / "events.jsonl"),
        "SPOTSIM_OUTPUT_DIR": str(work / "output"),
        "SPOTSIM_CHECKPOINT_INTERVAL_STEPS": str(interval_steps),
    }
    start = time.perf_counter()
    subprocess.run([*WORKLOAD, "--steps", str(steps)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def spotsim_run(work: Path, steps: int, interval_steps: int, *extra: str) -> dict:
    """``spotsim run`` at K = 1 (real seconds are simulated ones: no probe, no scaling); its summary."""
    cmd = [
        *SPOTSIM,
        "run",
        "--workload",
        "torch-cnn",
        "--steps",
        str(steps),
        "--interval-steps",
        str(interval_steps),
        "--time-scale",
        "1",
        "--bucket",
        (work / "ckpt").as_uri(),
        "--out",
        str(work / "run"),
        *extra,
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads((work / "run" / "summary.json").read_text())


def measure_restart(run_dir: Path) -> tuple[float, float]:
    """The relaunch after the preemption: real seconds from launch to its first step past the resume, and to
    ``start``."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    launch_t = start_t = resumed = None
    for event in events:
        if event["event"] == "launch" and event.get("attempt") == 1:
            launch_t = event["t"]
        elif launch_t is not None and event["event"] == "start":
            start_t, resumed = event["t"], event.get("resumed_step") or 0
        elif start_t is not None and event["event"] == "step" and event["step"] > resumed:
            return event["t"] - launch_t, start_t - launch_t
    raise SystemExit(f"no step after a resume in {run_dir / 'events.jsonl'}")


def measure_floor(uri: str, script: str = FLOOR) -> tuple[float, float]:
    """Real seconds from just before the floor's spawn to its restore's return, and to its exit."""
    launch_t = time.time()
    done = subprocess.run([sys.executable, "-c", script, uri], check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1]) - launch_t, time.time() - launch_t


def measure_watched(work: Path, method: str, steps: int, interval_steps: int) -> float:
    """Wall seconds of torch-cnn under ``run_live`` on one of the save-watch set-ups (see the docstring)."""
    import threading

    from spotsim.cost import load_prices
    from spotsim.harness import RunConfig, parse_schedule, run_live
    from spotsim.harness.save_watch import BucketProxy, DirectoryWatch
    from spotsim.storage.emulator import FakeGcsServer, ensure_bucket
    from spotsim.workloads import command

    config = RunConfig(
        tuple(command("torch-cnn", ["--steps", str(steps)])),
        work / "run",
        parse_schedule("poisson", 0),
        interval_steps=interval_steps,
    )
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
            return run_live(config, machine, bucket=uri).summary.accounting.wall_s
        finally:
            stop.set()
    with FakeGcsServer(work / "emulator") as emulator:
        ensure_bucket(emulator.url, "bench")
        if method == "gs":
            outcome = run_live(config, machine, bucket="gs://bench/run", bucket_env=emulator.env())
            return outcome.summary.accounting.wall_s
        with BucketProxy(emulator.url) as proxy:
            outcome = run_live(config, machine, bucket="gs://bench/run", bucket_env=proxy.env(), save_watch=proxy)
            return outcome.summary.accounting.wall_s


def profile_once(root: Path, steps: int) -> dict[str, float]:
    """Seconds per phase of one attempt resumed from a checkpoint at ``steps`` (see ``PROFILE``), and the floors
    restoring what it left."""
    work = Path(tempfile.mkdtemp(dir=root))
    env = os.environ | {
        "SPOTSIM_CHECKPOINT_URI": (work / "ckpt").as_uri(),
        "SPOTSIM_EVENTS": str(work / "events.jsonl"),
        "SPOTSIM_CHECKPOINT_INTERVAL_STEPS": "1",  # the first step after the resume saves a periodic checkpoint
    }
    subprocess.run([*WORKLOAD, "--steps", str(steps)], env=env, check=True, capture_output=True)
    launch_t = time.time()
    done = subprocess.run(
        [sys.executable, "-c", PROFILE, str(launch_t), "--steps", str(steps + 3)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    marks = json.loads(done.stdout.strip().splitlines()[-1])["marks"]
    events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
    start_t = [e["t"] for e in events if e["event"] == "start"][-1]
    phases = phase_table(launch_t, start_t, marks)
    phases["floor (import torch + spotsim, restore)"] = measure_floor((work / "ckpt").as_uri())[0]
    phases["floor_optimizer (the same + torch.optim)"] = measure_floor((work / "ckpt").as_uri(), FLOOR_OPTIMIZER)[0]
    shutil.rmtree(work)
    return phases


def phase_table(launch_t: float, start_t: float, marks: list) -> dict[str, float]:
    """Durations by phase; ``other`` is whatever no phase covers before the first step (argparse, logging,
    the watcher and the store)."""
    phases: dict[str, float] = {}
    previous = launch_t
    for label, _, ended in marks[:3]:  # consecutive: interpreter, imports
        phases[label], previous = ended - previous, ended
    calls: dict[str, list[float]] = {}
    for label, started, ended in marks[3:]:
        calls.setdefault(label, []).append(ended - started)
    first_step_end = next(ended for label, _, ended in marks[3:] if label == "step")
    build = {
        "deterministic()": calls["deterministic()"][0],
        "digits()": calls["digits()"][0],
        "Adam()": calls["Adam()"][0],
    }
    phases |= {f"build: {name}": seconds for name, seconds in build.items()}
    phases["build: the rest (model, sampler)"] = calls["build"][0] - sum(build.values())
    warm_up = calls.get("warm-up", [])
    phases["warm-up (before start)"] = warm_up[0] if warm_up else 0.0
    phases["restore + load (start event inside)"] = calls["restore + load"][0]
    phases["first step"], phases["second step"] = calls["step"][0], calls["step"][1]
    phases["first checkpoint (blocking)"] = calls["checkpoint (blocking)"][0]
    accounted = sum(v for k, v in phases.items() if k not in ("second step", "first checkpoint (blocking)"))
    phases["other (argparse, logging, watcher, store)"] = (first_step_end - launch_t) - accounted
    phases["= launch -> start"] = start_t - launch_t
    phases["= start -> first step"] = first_step_end - start_t
    phases["= launch -> first step (R)"] = first_step_end - launch_t
    return phases


def profile(args: argparse.Namespace) -> int:
    """Print the median seconds per phase of ``--repeats`` resumed attempts."""
    with tempfile.TemporaryDirectory(prefix="spotsim-restart-profile-") as root:
        table = pd.DataFrame([profile_once(Path(root), 200) for _ in range(args.repeats)]).median()
    for phase, seconds in table.items():
        print(f"{phase:45s} {seconds:7.3f} s")
    r, floor = table["= launch -> first step (R)"], table["floor (import torch + spotsim, restore)"]
    print(f"R / floor {r / floor:.2f}x (medians of {args.repeats} attempts)")
    return 0


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
    restart_s, startup_s = measure_restart(work / "run")
    rows.append({"repeat": repeat, "method": "restart", "seconds": restart_s})
    rows.append({"repeat": repeat, "method": "restart_startup", "seconds": startup_s})
    floor_s, floor_exit_s = measure_floor((work / "ckpt").as_uri())
    rows.append({"repeat": repeat, "method": "floor", "seconds": floor_s})
    rows.append({"repeat": repeat, "method": "floor_exit", "seconds": floor_exit_s})
    floor_optimizer_s, _ = measure_floor((work / "ckpt").as_uri(), FLOOR_OPTIMIZER)
    rows.append({"repeat": repeat, "method": "floor_optimizer", "seconds": floor_optimizer_s})
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
    parser.add_argument("--profile", action="store_true", help="time the phases of a resumed attempt; write nothing")
    args = parser.parse_args()
    if args.profile:
        return profile(args)
    with tempfile.TemporaryDirectory(prefix="spotsim-harness-bench-") as root:
        rows = [row for repeat in range(args.repeats) for row in one_repeat(Path(root), repeat, args)]
    results = pd.DataFrame(rows)
    medians = results.groupby("method")["seconds"].median()
    row = {
        "alone_s": medians["alone"],
        "harness_s": medians["harness"],
        "harness_vs_alone": medians["harness"] / medians["alone"],
        "restart_s": medians["restart"],
        "restart_startup_s": medians["restart_startup"],
        "floor_s": medians["floor"],
        "restart_vs_floor": medians["restart"] / medians["floor"],
        "floor_exit_s": medians["floor_exit"],
        "floor_optimizer_s": medians["floor_optimizer"],
        "restart_vs_floor_optimizer": medians["restart"] / medians["floor_optimizer"],
        **{f"{watched}_vs_{plain}": medians[watched] / medians[plain] for watched, plain in WATCH_PAIRS},
        "steps": args.steps,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
    }
    summary = pd.DataFrame([row])
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "harness_overhead.csv", index=False)
    summary.to_csv(args.out / "harness_overhead_summary.csv", index=False)
    plot(results, args.out / "harness_overhead.png")
    s = summary.iloc[0]
    checks = [
        ("harness vs alone", s.harness_vs_alone, TARGET_HARNESS),
        ("restart R vs floor", s.restart_vs_floor, TARGET_RESTART),
        *((f"{w} vs {p}", s[f"{w}_vs_{p}"], TARGET_HARNESS) for w, p in WATCH_PAIRS),
    ]
    for name, ratio, target in checks:
        print(f"{name}: {ratio:.3f}x (target ≤ {target}x: {'met' if ratio <= target else 'NOT met'})")
    return 0


def plot(results: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, methods, title in [
        (axes[0], ["alone", "harness"], "torch-cnn wall time"),
        (axes[1], ["floor", "floor_optimizer", "restart"], "restart overhead R vs floor"),
        (axes[2], ["gs", "gs-proxy", "file", "file-polled"], "save watch (verify)"),
    ]:
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
