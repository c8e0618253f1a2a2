"""Bad URIs, unreachable stores and missing credentials: one clear error each."""

from __future__ import annotations

import os

import pytest

from spotsim.errors import InvalidKey, InvalidURI, StoreAccessDenied, StoreUnavailable
from spotsim.storage import open_store
from spotsim.storage.emulator import free_port
from spotsim.storage.local import FileStore


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://", "names no bucket"),
        ("gs:///prefix", "names no bucket"),
        ("gs://UPPER/x", "invalid bucket name 'UPPER'"),
        ("gs://ab", "invalid bucket name"),
        ("gs://-bucket/x", "invalid bucket name"),
        ("gs://bucket/a/../b", "'..'"),
        ("s3://x", "support file://, gs://"),
        ("x", "support file://, gs://"),
        ("", "non-empty"),
        ("file://relative", "not absolute"),
        ("file://relative/dir", "not absolute"),
        ("file:relative", "no absolute path"),
    ],
)
def test_bad_uri_is_one_clear_error(uri, says):
    with pytest.raises(InvalidURI) as info:
        open_store(uri)
    assert isinstance(info.value, ValueError)
    assert says in str(info.value)
    assert "\n" not in str(info.value)


def test_file_uri_forms(tmp_path):
    assert open_store(tmp_path.as_uri()).root == tmp_path.resolve()
    assert open_store(f"file://localhost{tmp_path}").root == tmp_path.resolve()


def test_file_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(OSError):
        open_store((tmp_path / "f").as_uri())


def test_symlink_cannot_lead_a_key_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    store = FileStore(tmp_path / "root")
    os.symlink(outside, tmp_path / "root" / "link")
    with pytest.raises(InvalidKey, match="outside the store root"):
        store.get_bytes("link/secret")
    with pytest.raises(InvalidKey):
        store.put_bytes("link/new", b"x")
    assert not (outside / "new").exists()


def test_unreachable_endpoint_is_store_unavailable():
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(StoreUnavailable, match="cannot reach") as info:
        open_store("gs://some-bucket/run", endpoint=dead)
    assert isinstance(info.value, ConnectionError)


def test_missing_bucket_is_not_created_unless_asked(emulator):
    from spotsim.errors import BucketNotFound

    with pytest.raises(BucketNotFound, match="does not exist"):
        open_store("gs://never-created-bucket/x", endpoint=emulator.url, create_bucket=False)


def test_real_gcs_without_credentials_says_how_to_log_in(monkeypatch, tmp_path):
    # A real bucket cannot be reached from here; what is tested is that, with no
    # credentials anywhere, the error says what to do instead of a traceback.
    for var in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # skip probing a GCE metadata server
    with pytest.raises(StoreAccessDenied, match="gcloud auth application-default login"):
        open_store("gs://some-bucket/run")
