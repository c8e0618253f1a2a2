"""PreemptionWatcher: real signals to a real job, and metadata-server notices from a local server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from spotsim import CheckpointManager, PreemptionWatcher
from spotsim.checkpoint.watcher import AWS_ACTION_PATH, GCE_PREEMPTED_PATH

JOB = Path(__file__).parent / "jobs" / "watched_loop.py"


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigterm_saves_an_emergency_checkpoint_and_exits_zero(tmp_path):
    uri, events = (tmp_path / "ckpt").as_uri(), tmp_path / "events.jsonl"
    env = os.environ | {"SPOTSIM_CHECKPOINT_URI": uri, "SPOTSIM_EVENTS": str(events), "STEP_SLEEP": "0.005"}
    proc = subprocess.Popen([sys.executable, str(JOB)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    threading.Event().wait(0.5)  # let it train past a periodic checkpoint or two
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    log = read_events(events)
    notice = [e for e in log if e["event"] == "preemption_notice"]
    emergency = [e for e in log if e["event"] == "checkpoint" and e["kind"] == "emergency"]
    assert [n["reason"] for n in notice] == ["SIGTERM"]
    assert len(emergency) == 1 and log[-1] == emergency[0], "the emergency checkpoint is the job's last word"
    last_step = max(e["step"] for e in log if e["event"] == "step")
    assert emergency[0]["step"] == last_step, "no step done before the notice may be lost"

    with CheckpointManager(uri) as manager:
        step, state, _ = manager.restore_latest()
    assert step == last_step and np.array_equal(state["w"], np.full(1024, float(step)))


def test_a_resumed_job_continues_from_the_emergency_checkpoint(tmp_path):
    uri, events = (tmp_path / "ckpt").as_uri(), tmp_path / "events.jsonl"
    env = os.environ | {"SPOTSIM_CHECKPOINT_URI": uri, "SPOTSIM_EVENTS": str(events), "STEP_SLEEP": "0.002"}
    first = subprocess.Popen([sys.executable, str(JOB)], env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "ready"
    first.send_signal(signal.SIGINT)  # Ctrl-C is a notice too
    assert first.wait(timeout=30) == 0
    saved = [e["step"] for e in read_events(events) if e["event"] == "checkpoint"][-1]

    done = subprocess.run([sys.executable, str(JOB)], env=env | {"TOTAL_STEPS": str(saved + 20)}, capture_output=True)
    assert done.returncode == 0, done.stderr
    log = read_events(events)
    starts = [e for e in log if e["event"] == "start"]
    assert [s["resumed_step"] for s in starts] == [None, saved]
    assert log[-1] == {"t": log[-1]["t"], "event": "done", "step": saved + 20}


class MetadataServer(ThreadingHTTPServer):
    """Answers like the GCE and AWS metadata servers; ``preempt()`` flips both to "preempted"."""

    def __init__(self) -> None:
        self.preempted = False
        self.requests: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _MetadataHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _MetadataHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server: MetadataServer = self.server
        server.requests.append((self.path, self.headers.get("Metadata-Flavor")))
        if self.path == GCE_PREEMPTED_PATH:
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._answer(403, "missing Metadata-Flavor header")
            return self._answer(200, "TRUE" if server.preempted else "FALSE")
        if self.path == AWS_ACTION_PATH and server.preempted:
            return self._answer(200, '{"action": "terminate", "time": "2026-11-26T12:00:00Z"}')
        self._answer(404, "not found")

    def _answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def metadata():
    server = MetadataServer()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("cloud", ["gce", "aws"])
def test_metadata_notice_raises_the_flag(metadata, cloud):
    base = {"gce_base": metadata.url} if cloud == "gce" else {"aws_base": metadata.url}
    with PreemptionWatcher(signals=(), poll_interval_s=0.02, **base) as watcher:
        assert not watcher.wait(0.2), "no notice while the server says the VM is healthy"
        polls = len(metadata.requests)
        assert polls >= 2
        metadata.preempted = True
        assert watcher.wait(5)
    assert watcher.reason.startswith("GCE" if cloud == "gce" else "AWS")
    if cloud == "gce":
        assert all(flavor == "Google" for _, flavor in metadata.requests)


def test_unreachable_metadata_server_is_not_a_notice(metadata):
    dead = metadata.url
    metadata.shutdown()
    metadata.server_close()
    with PreemptionWatcher(signals=(), gce_base=dead, aws_base=dead, poll_interval_s=0.02) as watcher:
        assert not watcher.wait(0.3)


def test_signal_handlers_are_restored_and_first_notice_wins():
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionWatcher(signals=(signal.SIGUSR1,)) as watcher:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert watcher.wait(5) and watcher.reason == "SIGUSR1"
        watcher.notify("later notice")
        assert watcher.reason == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


def test_bad_poll_interval_is_refused():
    with pytest.raises(ValueError, match="poll_interval_s"):
        PreemptionWatcher(poll_interval_s=0)
