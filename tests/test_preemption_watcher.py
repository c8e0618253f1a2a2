"""PreemptionWatcher: real signals to a real job, and each cloud's metadata notices from spotsim's local servers,
found through the environment as a job under the harness finds them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spotsim import CheckpointManager, PreemptionWatcher
from spotsim.errors import InvalidOption
from spotsim.events import (
    CHECKPOINT,
    DONE,
    PREEMPTION_APPROVAL,
    PREEMPTION_NOTICE,
    REBALANCE_RECOMMENDATION,
    START,
    STEP,
    job_event_problem,
)
from spotsim.metadata import MetadataRequest, MetadataServer
from spotsim.metadata import server as server_module
from spotsim.metadata.aws import AwsMetadata
from spotsim.metadata.base import Answer, Request
from spotsim.metadata.clients import AwsClient
from spotsim.metadata.gce import GceMetadata

JOB = Path(__file__).parent / "jobs" / "watched_loop.py"


def read_events(path: Path) -> list[dict]:
    """Every line the job wrote, each a valid job event."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert not [(e, p) for e in events if (p := job_event_problem(e))]
    return events


def test_sigterm_saves_an_emergency_checkpoint_and_exits_zero(tmp_path):
    uri, events = (tmp_path / "ckpt").as_uri(), tmp_path / "events.jsonl"
    env = os.environ | {"SPOTSIM_CHECKPOINT_URI": uri, "SPOTSIM_EVENTS": str(events), "STEP_SLEEP": "0.005"}
    proc = subprocess.Popen([sys.executable, str(JOB)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    threading.Event().wait(0.5)  # let it train past a periodic checkpoint or two
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    log = read_events(events)
    notice = [e for e in log if e["event"] == PREEMPTION_NOTICE]
    emergency = [e for e in log if e["event"] == CHECKPOINT and e["kind"] == "emergency"]
    assert [n["reason"] for n in notice] == ["SIGTERM"]
    assert len(emergency) == 1 and log[-1] == emergency[0], "the emergency checkpoint is the job's last word"
    last_step = max(e["step"] for e in log if e["event"] == STEP)
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
    saved = [e["step"] for e in read_events(events) if e["event"] == CHECKPOINT][-1]

    done = subprocess.run([sys.executable, str(JOB)], env=env | {"TOTAL_STEPS": str(saved + 20)}, capture_output=True)
    assert done.returncode == 0, done.stderr
    log = read_events(events)
    starts = [e for e in log if e["event"] == START]
    assert [s["resumed_step"] for s in starts] == [None, saved]
    assert log[-1] == {"t": log[-1]["t"], "event": DONE, "step": saved + 20}


METADATA_VARIABLES = (
    "GCE_METADATA_HOST",
    "GCE_METADATA_ROOT",
    "GCE_METADATA_IP",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "SPOTSIM_METADATA_URL",
    "SPOTSIM_METADATA_CLOUD",
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No metadata variable from the outside, and the run log in a file: ``clean_env(extra)`` sets variables."""
    for name in METADATA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPOTSIM_EVENTS", str(tmp_path / "events.jsonl"))

    def setenv(variables: dict[str, str]) -> Path:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return tmp_path / "events.jsonl"

    return setenv


@pytest.fixture
def serve():
    servers: list[MetadataServer] = []

    def start(cloud: str) -> MetadataServer:
        requests: list[MetadataRequest] = []
        server = MetadataServer(cloud, on_request=requests.append).start()
        server.requests = requests
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def only_the_sdk_variable(server: MetadataServer) -> dict[str, str]:
    """What a job would have from the cloud's own SDK alone (Azure has none, so spotsim's URL without a cloud)."""
    env = server.env()
    name = {"gce": "GCE_METADATA_HOST", "aws": "AWS_EC2_METADATA_SERVICE_ENDPOINT", "azure": "SPOTSIM_METADATA_URL"}
    return {name[server.cloud]: env[name[server.cloud]]}


@pytest.mark.parametrize("variables", ["harness", "sdk"])
@pytest.mark.parametrize("cloud", ["gce", "aws", "azure"])
def test_the_watcher_finds_the_server_from_the_environment_and_reads_the_deadline(serve, clean_env, cloud, variables):
    server = serve(cloud)
    events = clean_env(server.env() if variables == "harness" else only_the_sdk_variable(server))
    with PreemptionWatcher(signals=(), poll_interval_s=0.05) as watcher:
        assert list(watcher.sources) == [cloud]
        assert not watcher.wait(0.3), "no notice while the VM is healthy"
        deadline = time.time() + 60.3
        server.notice(deadline)
        assert watcher.wait(2)
    expected = None if cloud == "gce" else float(round(deadline))  # GCE gives no deadline; the others whole seconds
    assert watcher.deadline == expected and watcher.notice.cloud == cloud
    assert watcher.reason.startswith({"gce": "GCE", "aws": "AWS", "azure": "Azure"}[cloud])
    [notice] = [e for e in read_events(events) if e["event"] == PREEMPTION_NOTICE]
    assert notice["cloud"] == cloud and notice.get("deadline") == expected
    assert all(r.status in (200, 404) for r in server.requests), "404: AWS's spot paths before the notice"


@pytest.mark.parametrize("cloud", ["gce", "aws", "azure"])
def test_a_job_under_the_harness_environment_saves_on_the_metadata_notice(serve, clean_env, tmp_path, cloud):
    """The job's default PreemptionWatcher() finds the run's server from the variables the harness sets."""
    server = serve(cloud)
    events = clean_env(server.env())
    env = os.environ | {"SPOTSIM_CHECKPOINT_URI": (tmp_path / "ckpt").as_uri(), "STEP_SLEEP": "0.005"}
    proc = subprocess.Popen([sys.executable, str(JOB)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    server.notice(time.time() + 30)
    assert proc.wait(timeout=30) == 0, "no signal: the metadata notice alone ends the job"
    log = read_events(events)
    [notice] = [e for e in log if e["event"] == PREEMPTION_NOTICE]
    assert notice["cloud"] == cloud and log[-1]["event"] == CHECKPOINT and log[-1]["kind"] == "emergency"
    assert any(r.notice for r in server.requests)


def test_gce_notice_arrives_by_long_poll_not_by_polling(serve, clean_env):
    server = serve("gce")
    clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=30) as watcher:
        time.sleep(0.3)
        assert len(server.requests) == 1, "one GET for the ETag; the long-poll is still open"
        noticed = time.monotonic()
        server.notice(time.time() + 30)
        assert watcher.wait(2) and time.monotonic() - noticed < 0.2
        assert "wait_for_change=true" in server.requests[-1].path and "last_etag=" in server.requests[-1].path
        started = time.monotonic()
    assert time.monotonic() - started < 0.5, "stop() does not wait for the long-poll"


class _NoLongPolls(GceMetadata):
    """A GCE stand-in that answers ``wait_for_change`` at once, as a simple mock would."""

    def answer(self, request: Request) -> Answer:
        return super().answer(replace(request, query={}))


def test_a_server_that_ignores_wait_for_change_is_polled_not_hammered(serve, clean_env, monkeypatch):
    monkeypatch.setitem(server_module._STATES, "gce", _NoLongPolls)
    server = serve("gce")
    clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=0.05) as watcher:
        time.sleep(0.5)
        assert 5 <= len(server.requests) <= 15
        server.notice(time.time() + 30)
        assert watcher.wait(2)


def test_stop_aborts_a_pending_gce_long_poll(serve, clean_env):
    server = serve("gce")
    clean_env(server.env())
    watcher = PreemptionWatcher(signals=(), poll_interval_s=30).start()
    time.sleep(0.3)
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 0.5 and not watcher.preempted


def test_aws_rebalance_recommendation_is_recorded_but_is_not_a_notice(serve, clean_env):
    server = serve("aws")
    events = clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=0.05) as watcher:
        server.rebalance(time.time())
        time.sleep(0.3)
        assert watcher.rebalance is not None and watcher.rebalance.issued_at is not None
        assert not watcher.preempted
        server.notice(time.time() + 120)
        assert watcher.wait(2)
    log = read_events(events)
    assert [e["event"] for e in log] == [REBALANCE_RECOMMENDATION, PREEMPTION_NOTICE]
    assert log[0]["notice_time"] == watcher.rebalance.issued_at
    puts = [r for r in server.requests if r.method == "PUT"]
    assert [(r.path, r.status) for r in puts] == [("/latest/api/token", 200)], "one IMDSv2 token for the whole run"
    assert all(r.status in (200, 404) for r in server.requests)


def test_aws_token_is_refreshed_before_it_expires(serve, clean_env, monkeypatch):
    monkeypatch.setattr(AwsClient, "TOKEN_TTL_S", 61)  # the client refreshes a minute early: every second here
    server = serve("aws")
    clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=0.1):
        time.sleep(1.5)
    assert len([r for r in server.requests if r.method == "PUT"]) >= 2
    assert not [r for r in server.requests if r.status == 401]


class _NoTokens(AwsMetadata):
    """An IMDS that refuses IMDSv2 tokens (as some proxies and older IMDS stand-ins do)."""

    def answer(self, request: Request) -> Answer:
        if request.method == "PUT":
            return Answer(403, "Forbidden")
        return super().answer(request)


def test_aws_falls_back_to_imdsv1_when_the_token_is_refused(serve, clean_env, monkeypatch):
    monkeypatch.setitem(server_module._STATES, "aws", _NoTokens)  # the real server with one refusing behaviour
    server = serve("aws")
    clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=0.05) as watcher:
        time.sleep(0.2)
        server.notice(time.time() + 120)
        assert watcher.wait(2)
    assert len([r for r in server.requests if r.method == "PUT"]) == 1, "asked once, then IMDSv1"


def test_azure_approval_after_the_emergency_checkpoint(serve, clean_env):
    server = serve("azure")
    events = clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=0.05, approve=True) as watcher:
        server.notice(time.time() + 30, event_id="E1")
        assert watcher.wait(2) and server.approved_at() is None, "noticing is not approving"
        assert watcher.approve()
    assert server.approved_at() is not None
    approval = [e for e in read_events(events) if e["event"] == PREEMPTION_APPROVAL]
    assert [(a["event_id"], a["accepted"]) for a in approval] == [("E1", True)]


def test_azure_approval_is_off_by_default_and_looks_the_event_up_after_a_signal(serve, clean_env):
    server = serve("azure")
    clean_env(server.env())
    with PreemptionWatcher(signals=(), poll_interval_s=0.05) as watcher:
        server.notice(time.time() + 30)
        assert watcher.wait(2) and not watcher.approve()
    assert server.approved_at() is None
    server.new_vm()
    with PreemptionWatcher(signals=(), poll_interval_s=30, approve=True) as watcher:
        watcher.notify("SIGTERM")  # the signal came first: the watcher has not seen the event
        server.notice(time.time() + 30)
        assert watcher.approve() and server.approved_at() is not None


def test_backward_compatible_explicit_bases(serve, clean_env):
    for cloud in ("gce", "aws"):
        server = serve(cloud)
        with PreemptionWatcher(signals=(), poll_interval_s=0.02, **{f"{cloud}_base": server.url}) as watcher:
            assert not watcher.wait(0.2)
            server.notice(time.time() + 30)
            assert watcher.wait(5)
        assert watcher.reason.startswith(cloud.upper())
        assert all(r.status in (200, 404) for r in server.requests)


def test_which_servers_are_watched(clean_env):
    assert PreemptionWatcher().sources == {}, "no variable: signals only"
    assert PreemptionWatcher(cloud="gce").sources == {"gce": "http://metadata.google.internal"}
    assert PreemptionWatcher(cloud="azure").sources == {"azure": "http://169.254.169.254"}
    clean_env({"SPOTSIM_METADATA_URL": "http://127.0.0.1:9"})
    assert PreemptionWatcher().sources == {"azure": "http://127.0.0.1:9"}
    assert PreemptionWatcher(cloud=None).sources == {}
    clean_env({"SPOTSIM_METADATA_CLOUD": "oci"})
    with pytest.raises(InvalidOption, match="SPOTSIM_METADATA_CLOUD"):
        PreemptionWatcher()
    with pytest.raises(InvalidOption, match="unknown cloud"):
        PreemptionWatcher(cloud="gcp")
    with pytest.raises(InvalidOption, match="http://host"):
        PreemptionWatcher(gce_base="https://metadata.google.internal")


def test_unreachable_metadata_server_is_not_a_notice(serve, clean_env):
    server = serve("gce")
    dead = server.url
    server.stop()
    with PreemptionWatcher(signals=(), gce_base=dead, aws_base=dead, azure_base=dead, poll_interval_s=0.02) as w:
        assert not w.wait(0.3)


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
