"""What the fault proxy costs when it injects nothing: a checkpoint saved and restored direct vs through it.

What it measures: wall-clock seconds of ``CheckpointManager.save`` (synchronous, so the whole
persist is timed) and ``restore_latest`` of one 256 MiB numpy state, against the embedded
emulator (the real fake-gcs-server on 127.0.0.1) two ways in the same run:

* ``direct``: the store talks to the emulator;
* ``proxy``: the store talks to a :class:`spotsim.storage.faults.FaultProxy` with faults ``none``
  in front of the same emulator.

As in a harness run, the proxy lives in this process and the checkpointing job in a child
process (so they do not share an interpreter lock). Each repeat times both ways back to back,
the way that goes first alternating between repeats, so machine noise hits both alike; every
restore is compared array by array with what was saved, and the objects are deleted after.

Target: the proxy adds at most 5 % to save + restore (median over repeats of the per-repeat
ratio proxy / direct).

Outputs, under ``reports/`` by default: ``proxy_overhead.csv`` (one row per timed save or
restore), ``proxy_overhead_summary.csv`` (medians and ratios), ``proxy_overhead_env.json``
(machine facts) and ``proxy_overhead.png``. From the repository root, in the project's venv::

    python benchmarks/proxy_overhead.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _shared import REPO_ROOT, print_facts, write_reports  # noqa: E402

from spotsim.storage.emulator import FakeGcsServer, ensure_bucket  # noqa: E402
from spotsim.storage.faults import FaultProxy, FaultSpec  # noqa: E402

MiB = 1 << 20
BUCKET = "bench-proxy"
MODES = ("direct", "proxy")
TARGET_RATIO = 1.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="checkpoint size in MiB")
    parser.add_argument("--repeats", type=int, default=16, help="timed save+restore pairs per mode")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports", help="output directory")
    parser.add_argument("--worker", nargs=2, metavar=("DIRECT_URL", "PROXY_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeats < 1:
        parser.error("--size-mib and --repeats must be at least 1")
    return args


def synthetic_state(size_mib: int) -> dict:
    """A model-like state: eight float32 tensors summing to ``size_mib`` MiB, and a few scalars."""
    rng = np.random.default_rng(0)
    per = size_mib * MiB // 8 // 4
    return {"layers": [rng.standard_normal(per, dtype=np.float32) for _ in range(8)], "step": 1, "lr": 3e-4}


def worker(direct: str, proxy: str, size_mib: int, repeats: int) -> None:
    """The checkpointing job: time save and restore both ways, one JSON row per line on stdout."""
    from spotsim import CheckpointManager

    state = synthetic_state(size_mib)
    urls = {"direct": direct, "proxy": proxy}
    for repeat in range(-1, repeats):  # repeat -1 warms up both ways, untimed
        for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
            uri = f"gs://{BUCKET}/{mode}-{uuid.uuid4().hex[:8]}"
            with CheckpointManager(uri, keep=1, async_save=False, store_options={"endpoint": urls[mode]}) as m:
                start = time.perf_counter()
                m.save(1, state)
                save_s = time.perf_counter() - start
                start = time.perf_counter()
                restored = m.restore_latest()
                restore_s = time.perf_counter() - start
                layers = restored.state["layers"]
                same = len(layers) == len(state["layers"])
                if not same or not all(np.array_equal(a, b) for a, b in zip(layers, state["layers"], strict=True)):
                    raise SystemExit(f"VERIFICATION FAILED: {mode} restored different bytes")
                del restored
                for key in m.store.list():
                    m.store.delete(key)
            if repeat >= 0:
                for op, seconds in (("save", save_s), ("restore", restore_s)):
                    print(json.dumps({"repeat": repeat, "mode": mode, "op": op, "seconds": seconds}), flush=True)


def run_benchmark(args: argparse.Namespace, root: Path) -> tuple[pd.DataFrame, dict]:
    with FakeGcsServer(root) as emulator, FaultProxy(emulator.url, FaultSpec.parse("none")) as proxy:
        ensure_bucket(emulator.url, BUCKET)
        command = [
            sys.executable,
            __file__,
            "--worker",
            emulator.url,
            proxy.url,
            "--size-mib",
            str(args.size_mib),
            "--repeats",
            str(args.repeats),
        ]
        rows, cpu_start = [], time.process_time()  # this process runs only the proxy (and reads the rows)
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT) as job:
            for line in job.stdout:
                row = json.loads(line)
                rows.append(row)
                print(f"repeat {row['repeat']}  {row['mode']:<6}  {row['op']:<7}  {row['seconds']:7.3f} s", flush=True)
        if job.returncode != 0:
            raise SystemExit(f"the checkpointing job failed with exit code {job.returncode}")
        proxy_cpu_s = (time.process_time() - cpu_start) / (args.repeats + 1)  # the warm-up round went through it too
        facts = {"proxy_cpu_s_per_save_restore": round(proxy_cpu_s, 4), "proxy_requests": proxy.requests}
        return pd.DataFrame(rows), facts | {"proxy_faults": dict(proxy.counts)}


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per operation (save, restore, both): median seconds each way, the median per-repeat ratio (the target's
    measure) and its range, and the ratio of the best times (least touched by other load on the machine)."""
    per_repeat = results.pivot_table(index=["repeat", "op"], columns="mode", values="seconds").reset_index()
    total = per_repeat.groupby("repeat")[list(MODES)].sum().reset_index().assign(op="save+restore")
    both = pd.concat([per_repeat, total], ignore_index=True)
    both["ratio"] = both["proxy"] / both["direct"]
    summary = both.groupby("op").agg(
        direct_s=("direct", "median"),
        proxy_s=("proxy", "median"),
        ratio=("ratio", "median"),
        ratio_min=("ratio", "min"),
        ratio_max=("ratio", "max"),
        direct_best_s=("direct", "min"),
        proxy_best_s=("proxy", "min"),
    )
    summary["best_ratio"] = summary["proxy_best_s"] / summary["direct_best_s"]
    return summary.reindex(["save", "restore", "save+restore"]).reset_index()


def print_summary(summary: pd.DataFrame, size_mib: int) -> None:
    print(f"\n{size_mib} MiB checkpoint: median seconds, and median of per-repeat ratios proxy / direct")
    print(f"{'op':<13} {'direct':>8} {'proxy':>8} {'ratio':>7} {'min':>6} {'max':>6}  {'best-of ratio':>13}")
    for s in summary.itertuples():
        print(
            f"{s.op:<13} {s.direct_s:8.3f} {s.proxy_s:8.3f} {s.ratio:7.3f} {s.ratio_min:6.3f} {s.ratio_max:6.3f}  "
            f"{s.best_ratio:13.3f}"
        )
    ratio = float(summary.set_index("op").loc["save+restore", "ratio"])
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"target (proxy adds <= {TARGET_RATIO - 1:.0%} to save+restore): {verdict} ({ratio - 1:+.1%})", flush=True)


def plot(results: pd.DataFrame, facts: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=False)
    for ax, op in zip(axes, ("save", "restore"), strict=True):
        for mode, marker in zip(MODES, ("o", "s"), strict=True):
            rows = results[(results["op"] == op) & (results["mode"] == mode)].sort_values("repeat")
            ax.plot(rows["repeat"], rows["seconds"], marker=marker, label=mode)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("repeat (interleaved; the first mode alternates)")
        ax.set_ylabel("seconds")
        ax.set_title(f"{op} of {facts['size_mib']} MiB")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"CheckpointManager direct vs through FaultProxy(none): save+restore ratio {facts['ratio']:.3f} "
        f"({facts['cpu_count']} CPUs, {facts['date'][:10]})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(*args.worker, args.size_mib, args.repeats)
        return 0
    facts = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "size_mib": args.size_mib,
        "repeats": args.repeats,
        "command": " ".join(["python", "benchmarks/proxy_overhead.py", *(argv or sys.argv[1:])]),
    }
    print_facts(facts)
    with tempfile.TemporaryDirectory(prefix="spotsim-bench-proxy-") as root:
        results, proxy_facts = run_benchmark(args, Path(root))
    summary = summarize(results)
    print_summary(summary, args.size_mib)
    print(f"proxy CPU time per save+restore: {proxy_facts['proxy_cpu_s_per_save_restore']:.3f} s")
    facts |= proxy_facts | {"ratio": float(summary.set_index("op").loc["save+restore", "ratio"])}
    write_reports("proxy_overhead", results, summary, facts, args.out, plot, floats=("%.4f", "%.4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
