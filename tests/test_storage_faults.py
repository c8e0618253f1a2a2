"""The bucket fails too: the fault proxy, and the client and checkpoint manager that survive it.

Everything is real: fake-gcs-server, the fault proxy on real sockets, google-cloud-storage and
spotsim's GCS store. The faults are drawn by the proxy, never mocked into the client.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid

import numpy as np
import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from spotsim import CheckpointManager
from spotsim.errors import InvalidOption, StoreUnavailable
from spotsim.harness.bucket import EmbeddedBucket
from spotsim.storage.emulator import ensure_bucket
from spotsim.storage.faults import PROFILES, FaultProxy, FaultSpec
from spotsim.storage.gcs import GCSStore

pytestmark = pytest.mark.slow  # injected latency, outages and retries take real seconds
MiB = 1 << 20


@pytest.fixture(autouse=True)
def bucket(emulator):
    ensure_bucket(emulator.url, "faults")


@pytest.fixture
def proxy(emulator):
    with FaultProxy(emulator.url, FaultSpec.parse("none")) as p:
        yield p


def gcs(url: str, prefix: str | None = None) -> GCSStore:
    return GCSStore("faults", prefix or uuid.uuid4().hex[:12], endpoint=url)


def state_for(step: int, n: int = 50_000) -> dict:
    rng = np.random.default_rng(step)
    return {"w": rng.standard_normal(n).astype(np.float32), "step": step}


def same_state(state: dict, step: int, n: int = 50_000) -> bool:
    return state["step"] == step and np.array_equal(state["w"], state_for(step, n)["w"])


# -- the spec -------------------------------------------------------------------


def test_each_key_parses():
    spec = FaultSpec.parse("latency=50ms,bandwidth=20MB/s,503=0.05,429=0.02,reset=0.01,outage=10m+2m,seed=7")
    assert spec == FaultSpec(0.05, 20e6, 0.05, 0.02, 0.01, (600.0, 120.0), 7)
    assert FaultSpec.parse("latency=1.5s").latency_s == 1.5
    assert FaultSpec.parse("bandwidth=512KiB/s").bandwidth == 512 * 1024
    assert FaultSpec.parse("bandwidth=1GB").bandwidth == 1e9
    assert FaultSpec.parse(spec.describe()) == spec  # describe() is parse()'s inverse


def test_profiles_and_overrides():
    assert not FaultSpec.parse("none").active and FaultSpec.parse("none").describe() == "none"
    assert all(FaultSpec.parse(name).active for name in PROFILES if name != "none")
    flaky = FaultSpec.parse("flaky")
    assert flaky.error_503 > 0 and flaky.error_429 > 0 and flaky.reset > 0 and flaky.outage is None
    hostile = FaultSpec.parse("hostile,outage=5m+30s,seed=3")
    assert hostile.outage == (300.0, 30.0) and hostile.seed == 3 and hostile.latency_s > 0 and hostile.bandwidth
    assert FaultSpec.parse("outage").in_outage(650) and not FaultSpec.parse("outage").in_outage(720)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty spec"),
        ("wobbly", "neither a profile"),
        ("jitter=5", "unknown key 'jitter'"),
        ("latency=fast", "not a duration"),
        ("latency=-5ms", "latency must be"),
        ("bandwidth=fast", "not a rate"),
        ("bandwidth=0", "positive rate"),
        ("503=1.5", "not a probability"),
        ("429=much", "not a probability"),
        ("reset=nan", "not a probability"),
        ("503=0.7,429=0.5", "add up to more than 1"),
        ("outage=10m", "START+LENGTH"),
        ("outage=10m+0", "last > 0"),
        ("seed=x", "whole number"),
    ],
)
def test_bad_specs_are_one_clear_line(text, words):
    with pytest.raises(InvalidOption) as info:
        FaultSpec.parse(text)
    assert words in str(info.value) and "\n" not in str(info.value)


# -- the proxy ------------------------------------------------------------------


def test_passes_the_plain_client_through_and_rewrites_the_emulators_address(emulator, proxy):
    client = storage.Client(project="p", credentials=AnonymousCredentials(), client_options={"api_endpoint": proxy.url})
    bucket = client.bucket("faults")
    data = os.urandom(3 * MiB + 17)
    blob = bucket.blob(f"{uuid.uuid4().hex}/plain", chunk_size=MiB)  # a resumable upload in 4 chunks
    blob.upload_from_string(data, checksum="crc32c")
    fetched = bucket.get_blob(blob.name)
    assert fetched.media_link.startswith(proxy.url) and fetched.self_link.startswith(proxy.url)
    before = proxy.requests
    assert fetched.download_as_bytes() == data  # through the mediaLink, so through the proxy
    assert proxy.requests > before
    # A chunked request body (a generator) and keep-alive on one session.
    with requests.Session() as session:
        name = f"{uuid.uuid4().hex}/chunked"
        pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
        response = session.post(
            f"{proxy.url}/upload/storage/v1/b/faults/o", params={"uploadType": "media", "name": name}, data=pieces
        )
        assert response.status_code == 200, response.text
        assert (
            session.get(f"{proxy.url}/download/storage/v1/b/faults/o/{name.replace('/', '%2F')}?alt=media").content
            == data
        )


def test_latency_is_added_to_every_request(emulator):
    def mean_request_s(url: str) -> float:
        with requests.Session() as session:
            session.get(f"{url}/storage/v1/b")
            start = time.perf_counter()
            for _ in range(5):
                assert session.get(f"{url}/storage/v1/b").status_code == 200
            return (time.perf_counter() - start) / 5

    with FaultProxy(emulator.url, FaultSpec.parse("latency=100ms")) as slow:
        added = mean_request_s(slow.url) - mean_request_s(emulator.url)
    assert 0.09 <= added <= 0.3


def test_bandwidth_is_capped(emulator):
    data = os.urandom(4 * MiB)  # 4.19 MB at 8 MB/s: ~0.52 s each way
    with FaultProxy(emulator.url, FaultSpec.parse("bandwidth=8MB/s")) as capped, gcs(capped.url) as store:
        start = time.perf_counter()
        store.put_bytes("blob", data)
        put_s = time.perf_counter() - start
        start = time.perf_counter()
        assert store.get_bytes("blob") == data
        get_s = time.perf_counter() - start
    assert 0.45 <= put_s <= 2.0 and 0.45 <= get_s <= 2.0, (put_s, get_s)


@pytest.mark.parametrize("status", ["503", "429"])
def test_errors_are_retried_and_counted_until_the_bucket_answers(emulator, proxy, tmp_path, status):
    events = tmp_path / "events.jsonl"
    seen = []
    proxy.on_fault = seen.append
    uri = f"gs://faults/{uuid.uuid4().hex[:12]}"
    with CheckpointManager(uri, async_save=False, events=events, store_options={"endpoint": proxy.url}) as m:
        proxy.spec = FaultSpec.parse(f"{status}=1.0")
        threading.Timer(0.8, lambda: setattr(proxy, "spec", FaultSpec.parse("none"))).start()
        m.save(1, state_for(1))  # periodic, synchronous: retried through the errors, then committed
        assert m.steps() == [1] and same_state(m.restore_latest().state, 1)
    checkpoint = next(json.loads(line) for line in events.read_text().splitlines() if '"checkpoint"' in line)
    assert checkpoint["retries"] == m.saves[0].retries == proxy.counts[status] >= 2
    assert {e["fault"] for e in seen} == {status} and all(e["method"] and e["path"] for e in seen)
    assert not m.failures


def test_reset_uploads_are_retried_and_land_intact(emulator):
    blobs = {f"k{i}": os.urandom(2 * MiB + i) for i in range(6)}
    with FaultProxy(emulator.url, FaultSpec.parse("reset=0.5,seed=11")) as cutting, gcs(cutting.url) as store:
        for key, data in blobs.items():
            store.put_bytes(key, data)
        assert store.create_if_absent("commit", b"manifest") is True
        assert cutting.counts["reset"] >= 2 and store.retries >= cutting.counts["reset"]
        with gcs(emulator.url, store.uri.rsplit("/", 1)[1]) as direct:  # read back past the proxy, crc checked
            assert all(direct.get_bytes(key) == data for key, data in blobs.items())
            assert direct.get_bytes("commit") == b"manifest"
    # The plain client's resumable upload, chunks cut mid-body, resumed and checked end to end. Under load a
    # seeded run once cut nothing (the client's requests are not the same from run to run), so upload fresh
    # blobs, each checked, until one was cut.
    data = os.urandom(6 * MiB + 5)
    with FaultProxy(emulator.url, FaultSpec.parse("reset=0.4,seed=3")) as cutting:
        client = storage.Client(
            project="p", credentials=AnonymousCredentials(), client_options={"api_endpoint": cutting.url}
        )
        for _ in range(5):
            blob = client.bucket("faults").blob(f"{uuid.uuid4().hex}/plain", chunk_size=MiB)
            blob.upload_from_string(data, retry=DEFAULT_RETRY, checksum="crc32c")
            assert blob.download_as_bytes(retry=DEFAULT_RETRY) == data
            if cutting.counts["reset"]:
                break
        assert cutting.counts["reset"] >= 1


def test_a_reset_upload_never_lands_half_written(emulator):
    with FaultProxy(emulator.url, FaultSpec.parse("reset=1.0,seed=1")) as cutting, gcs(cutting.url) as store:
        with gcs(emulator.url, store.uri.rsplit("/", 1)[1]) as direct:
            for write in (store.put_bytes, store.create_if_absent):
                with store.deadline(0), pytest.raises(StoreUnavailable):  # one try, cut mid-body
                    write("torn", os.urandom(3 * MiB))
                assert direct.list() == []
        assert cutting.counts["reset"] == 2


# -- the checkpoint manager keeps training -----------------------------------------


@pytest.mark.parametrize("async_save", [False, True])
def test_training_goes_on_through_an_outage(emulator, tmp_path, async_save):
    run_time = [0.0]
    events = tmp_path / "events.jsonl"
    spec = FaultSpec.parse("outage=10s+20s")
    uri = f"gs://faults/{uuid.uuid4().hex[:12]}"
    with (
        FaultProxy(emulator.url, spec, clock=lambda: run_time[0]) as p,
        CheckpointManager(
            uri,
            keep=20,
            interval_steps=1,
            async_save=async_save,
            save_deadline_s=0.6,
            events=events,
            store_options={"endpoint": p.url},
        ) as m,
    ):
        for step in range(1, 12):
            run_time[0] = {3: 12.0, 4: 15.0, 5: 18.0, 6: 31.0}.get(step, run_time[0])  # steps 3-5: in the outage
            time.sleep(0.25)  # the training step
            if m.should_save(step):
                m.save(step, state_for(step))
        m.wait()
        committed = m.steps()
        assert [s.step for s in m.saves] == committed
        assert all(same_state(m.restore(step).state, step) for step in committed)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    failed = [e for e in lines if e["event"] == "checkpoint_failed"]
    assert {1, 10, 11} <= set(committed) and 3 not in committed and all(e["skipped"] for e in failed)
    if async_save:  # a persist straddling the outage's start or end may fail or commit
        assert 3 in {e["step"] for e in failed}
    else:
        assert committed == [1, 2, 6, 7, 8, 9, 10, 11] and [e["step"] for e in failed] == [3, 4, 5]
    assert any(e["retries"] >= 1 and "cannot reach" in e["error"] for e in failed)
    assert p.counts["outage"] >= 2


def test_emergency_save_in_an_outage_reports_then_raises(emulator, tmp_path):
    events = tmp_path / "events.jsonl"
    uri = f"gs://faults/{uuid.uuid4().hex[:12]}"
    with (
        FaultProxy(emulator.url, FaultSpec.parse("none")) as p,
        CheckpointManager(
            uri, async_save=False, save_deadline_s=0.5, events=events, store_options={"endpoint": p.url}
        ) as m,
    ):
        m.save(1, state_for(1))
        p.spec = FaultSpec.parse("503=1.0")
        with pytest.raises(StoreUnavailable):
            m.save(2, state_for(2), kind="emergency")
        p.spec = FaultSpec.parse("none")
        assert m.steps() == [1] and same_state(m.restore_latest().state, 1)  # nothing committed was lost
    failed = [json.loads(line) for line in events.read_text().splitlines() if "checkpoint_failed" in line]
    assert [(e["step"], e["kind"], e["skipped"]) for e in failed] == [(2, "emergency", False)]
    assert failed[0]["retries"] >= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_under_faults_a_restore_is_a_whole_committed_checkpoint_or_none(emulator, seed):
    """Random saves (sync or async, both layouts, kinds) under heavy faults; after each, a clean
    reader restores. Every restore must be exactly a state that was saved whole, never older than
    the newest save reported committed."""
    rng = random.Random(seed)
    uri = f"gs://faults/{uuid.uuid4().hex[:12]}"
    spec = FaultSpec.parse(f"503=0.15,429=0.1,reset=0.2,seed={seed}")
    with (
        FaultProxy(emulator.url, spec) as p,
        CheckpointManager(uri, keep=2, save_deadline_s=1.0, store_options={"endpoint": p.url}) as writer,
        CheckpointManager(uri, store_options={"endpoint": emulator.url}) as reader,
    ):
        newest_committed = None
        for step in range(1, 9):
            writer.async_save, writer.layout = rng.random() < 0.5, rng.choice(["directory", "archive"])
            try:
                writer.save(step, state_for(step, 20_000), kind=rng.choice(["periodic", "periodic", "emergency"]))
                writer.wait()
            except (StoreUnavailable, OSError):
                pass  # an emergency save that the faults defeated: reported, and nothing is lost
            if any(s.step == step for s in writer.saves):
                newest_committed = step
            restored = reader.restore_latest()
            if newest_committed is None:
                assert restored is None or same_state(restored.state, restored.step, 20_000)
            else:
                assert restored.step >= newest_committed and same_state(restored.state, restored.step, 20_000)
        assert sum(p.counts.values()) >= 5


# -- the harness's bucket ---------------------------------------------------------


def test_embedded_bucket_with_faults_points_jobs_at_the_proxy(tmp_path):
    with EmbeddedBucket(faults=FaultSpec.parse("503=1.0"), root=tmp_path / "root") as bucket:
        assert bucket.env() == {"STORAGE_EMULATOR_HOST": bucket.proxy.url} and bucket.uri_prefix.startswith("gs://")
        assert requests.get(f"{bucket.url}/storage/v1/b/{bucket.bucket}").status_code == 503
        assert requests.get(f"{bucket.emulator.url}/storage/v1/b/{bucket.bucket}").status_code == 200
        faults = bucket.drain_faults()
        assert [f["fault"] for f in faults] == ["503"] and isinstance(faults[0]["t"], float)
        assert bucket.drain_faults() == [] and bucket.check() == []
    with EmbeddedBucket() as plain:
        assert plain.proxy is None and plain.env() == plain.emulator.env()
