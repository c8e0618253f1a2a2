"""gs:// specifics: end-to-end checksums, upload parts, transfer options."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from spotsim.errors import IntegrityError
from spotsim.storage.gcs import GCSStore, TransferOptions

MiB = 1 << 20


def test_bytes_corrupted_in_the_bucket_are_detected(emulator):
    with GCSStore("integrity", "run", endpoint=emulator.url, options=TransferOptions(part_size=MiB)) as store:
        store.put_bytes("model", bytes(range(256)) * 12_000)  # ~3 MiB: read in ranged parts
        # Flip one byte behind the emulator's back; its recorded crc32c stays.
        # (fake-gcs-server versions lay objects out as nested or escaped paths.)
        bucket_dir = emulator.root / "integrity"
        path = next(
            p for p in bucket_dir.rglob("*") if p.is_file() and p.name in ("model", quote("run/model", safe=""))
        )
        with open(path, "r+b") as f:
            f.seek(2 * MiB + 5)
            byte = f.read(1)
            f.seek(2 * MiB + 5)
            f.write(bytes([byte[0] ^ 0xFF]))
        with pytest.raises(IntegrityError, match="crc32c"):
            store.get_bytes("model")


def test_composite_upload_leaves_no_parts(emulator):
    options = TransferOptions(workers=4, part_size=MiB, composite_upload=True)
    with GCSStore("parts", "run", endpoint=emulator.url, options=options) as store:
        store.put_bytes("big", b"x" * (5 * MiB + 1))
        assert store.clean_partial_writes(older_than_s=0) == 0
        names = [b.name for b in store._client.list_blobs("parts")]
        assert names == ["run/big"]


def test_parts_left_by_a_dead_writer_are_cleaned(emulator):
    with GCSStore("orphans", "run", endpoint=emulator.url) as store:
        # What a writer killed between part uploads and compose leaves behind.
        for i in range(3):
            store._bucket.blob(f"run/.spotsim-parts/deadbeef/{i:05d}").upload_from_string(b"part")
        store.put_bytes("kept", b"v")
        assert store.list() == ["kept"]
        assert store.clean_partial_writes(older_than_s=3600) == 0
        assert store.clean_partial_writes(older_than_s=0) == 3
        assert [b.name for b in store._client.list_blobs("orphans")] == ["run/kept"]


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"part_size": 1000}, {"part_size": 0}])
def test_bad_transfer_options(kwargs):
    with pytest.raises(ValueError):
        TransferOptions(**kwargs)
