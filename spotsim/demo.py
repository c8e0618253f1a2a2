"""``spotsim storage-demo``: the storage layer end to end on the embedded emulator.

Shows the three properties checkpointing relies on: large objects move fast
and byte-exact, a commit object has exactly one winner among racing writers,
and data survives an emulator restart (as a bucket outlives a preempted VM).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spotsim.errors import SpotsimError
from spotsim.storage import open_store
from spotsim.storage.emulator import FakeGcsServer

BUCKET_URI = "gs://spotsim-demo/run"
MiB = 1 << 20


def run_demo(console: Console, *, size_mib: int, root: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="spotsim-demo-") as scratch_dir:
        scratch = Path(scratch_dir)
        emulator_root = root.absolute() if root else scratch / "emulator"
        source = _random_file(scratch / "source.bin", size_mib)
        table = Table(title=f"spotsim storage demo — fake-gcs-server at 127.0.0.1, data in {emulator_root}")
        table.add_column("check")
        table.add_column("result", justify="right")
        with FakeGcsServer(emulator_root) as emulator:
            console.print(f"emulator: fake-gcs-server at {emulator.url}")
            with open_store(BUCKET_URI, endpoint=emulator.url) as store:
                _round_trip(console, table, store, source, scratch, size_mib)
                _commit_race(console, table, store)
                _plain_client_round_trip(console, table, emulator.url, source, scratch, size_mib)
        with FakeGcsServer(emulator_root) as emulator, open_store(BUCKET_URI, endpoint=emulator.url) as store:
            console.print(f"emulator restarted at {emulator.url}; reading the object back")
            survived = _sha256(_fetch(store, "demo/object.bin", scratch)) == _sha256(source)
            table.add_row("object survives emulator restart", "yes" if survived else "NO")
        console.print(table)
        if not survived:
            raise SpotsimError("the object read after the emulator restart differs from the one written")


def _round_trip(console: Console, table: Table, store, source: Path, scratch: Path, size_mib: int) -> None:
    with console.status(f"spotsim store: uploading {size_mib} MiB in parallel parts…"):
        put_s = _timed(lambda: store.put_file("demo/object.bin", source))
    with console.status(f"spotsim store: downloading {size_mib} MiB in parallel ranges…"):
        get_s = _timed(lambda: store.get_file("demo/object.bin", scratch / "copy.bin"))
    if _sha256(scratch / "copy.bin") != _sha256(source):
        raise SpotsimError("the downloaded object differs from the uploaded file")
    table.add_row(f"spotsim put {size_mib} MiB", f"{size_mib / put_s:,.0f} MiB/s")
    table.add_row(f"spotsim get {size_mib} MiB (byte-exact)", f"{size_mib / get_s:,.0f} MiB/s")


def _plain_client_round_trip(console: Console, table: Table, url: str, source: Path, scratch: Path, size_mib: int):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="demo", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
    blob = client.bucket("spotsim-demo").blob("plain/object.bin")
    with console.status(f"plain client: upload_from_filename of {size_mib} MiB…"):
        put_s = _timed(lambda: blob.upload_from_filename(source))
    with console.status(f"plain client: download_to_filename of {size_mib} MiB…"):
        get_s = _timed(lambda: blob.download_to_filename(scratch / "plain.bin"))
    blob.delete()
    table.add_row("plain client put (for comparison)", f"{size_mib / put_s:,.0f} MiB/s")
    table.add_row("plain client get (for comparison)", f"{size_mib / get_s:,.0f} MiB/s")


def _commit_race(console: Console, table: Table, store) -> None:
    writers = 16
    with console.status(f"{writers} writers racing to create one commit object…"), ThreadPoolExecutor(writers) as pool:
        won = list(pool.map(lambda i: store.create_if_absent("demo/COMMIT", f"writer {i}".encode()), range(writers)))
    winner = won.index(True) if won.count(True) == 1 else None
    stored = store.get_bytes("demo/COMMIT").decode()
    ok = winner is not None and stored == f"writer {winner}"
    table.add_row(f"create_if_absent race, {writers} writers", f"{won.count(True)} winner" + ("" if ok else " — WRONG"))
    if not ok:
        raise SpotsimError(f"commit race had {won.count(True)} winners; stored {stored!r}")


def _fetch(store, key: str, scratch: Path) -> Path:
    path = scratch / "restarted.bin"
    store.get_file(key, path)
    return path


def _random_file(path: Path, size_mib: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(MiB))
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
