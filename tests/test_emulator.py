"""The embedded emulator: persistence across restarts, the CLI daemon, Docker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spotsim.errors import EmulatorError, EmulatorUnavailable
from spotsim.storage import open_store
from spotsim.storage.emulator import DockerFakeGcsServer, FakeGcsServer, free_port, is_ready


def test_data_survives_emulator_restart(tmp_path):
    root = tmp_path / "root"
    with FakeGcsServer(root) as first:
        with open_store("gs://persist/run", endpoint=first.url) as store:
            store.put_bytes("ckpt/step-10/model", b"weights")
            store.create_if_absent("ckpt/step-10/MANIFEST", b"manifest")
        first_url = first.url
    assert not is_ready(first_url)
    with FakeGcsServer(root) as second:
        with open_store("gs://persist/run", endpoint=second.url, create_bucket=False) as store:
            assert store.list() == ["ckpt/step-10/MANIFEST", "ckpt/step-10/model"]
            assert store.get_bytes("ckpt/step-10/model") == b"weights"
            assert store.create_if_absent("ckpt/step-10/MANIFEST", b"other") is False


def test_port_held_by_another_emulator_is_refused(tmp_path):
    with FakeGcsServer(tmp_path / "a") as first:
        with pytest.raises(EmulatorError, match="already serving"):
            FakeGcsServer(tmp_path / "b", port=first.port).start()


def test_unusable_root_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(EmulatorError, match="data directory"):
        FakeGcsServer(tmp_path / "file" / "root").start()


def run_cli(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOTSIM_HOME": str(home)}
    env.pop("STORAGE_EMULATOR_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "spotsim.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_start_status_stop_keeps_data(tmp_path):
    port = free_port()
    started = run_cli("emulator", "start", "--port", str(port), home=tmp_path)
    try:
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{port}"
        assert f"STORAGE_EMULATOR_HOST={url}" in started.stdout
        assert run_cli("emulator", "status", home=tmp_path).returncode == 0
        again = run_cli("emulator", "start", "--port", str(port), home=tmp_path)
        assert "already running" in again.stdout
        with open_store("gs://cli-bucket/x", endpoint=url) as store:
            store.put_bytes("k", b"kept")
        assert run_cli("emulator", "stop", home=tmp_path).returncode == 0
        assert not is_ready(url)
        status = run_cli("emulator", "status", home=tmp_path)
        assert status.returncode == 1 and "not running" in status.stdout
        assert run_cli("emulator", "start", "--port", str(port), home=tmp_path).returncode == 0
        with open_store("gs://cli-bucket/x", endpoint=url, create_bucket=False) as store:
            assert store.get_bytes("k") == b"kept"
    finally:
        run_cli("emulator", "stop", home=tmp_path)


def test_docker_emulator_or_skip_with_reason(tmp_path):
    server = DockerFakeGcsServer(tmp_path / "root")
    try:
        server.start()
    except EmulatorUnavailable as e:
        pytest.skip(f"Docker emulator path not testable here: {e}")
    try:
        with open_store("gs://docker-bucket/x", endpoint=server.url) as store:
            store.put_bytes("k", b"v")
            assert store.get_bytes("k") == b"v"
    finally:
        server.stop()
