"""The local metadata servers: real HTTP on loopback against each cloud's paths, headers and payloads, and the
clouds' own client libraries (google-auth, botocore) finding them through their environment variables alone."""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest

from spotsim.metadata import CLOUDS, MetadataRequest, MetadataServer

GCE = {"Metadata-Flavor": "Google"}
AZURE = {"Metadata": "true"}
EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
PREEMPTED = "/computeMetadata/v1/instance/preempted"
ACTION = "/latest/meta-data/spot/instance-action"


def call(server: MetadataServer, method: str, path: str, headers=None, body: str | None = None, timeout: float = 5):
    """(status, headers, text) of one request: plain http.client, so no proxy variable gets in the way."""
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(server.url).port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def serve():
    """``serve(cloud, **kwargs)`` starts a server that records its requests in ``server.requests``."""
    servers = []

    def start(cloud: str, **kwargs) -> MetadataServer:
        requests: list[MetadataRequest] = []
        server = MetadataServer(cloud, on_request=requests.append, **kwargs).start()
        server.requests = requests
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def long_poll(server: MetadataServer, path: str) -> tuple[threading.Thread, dict]:
    """Start a GET in another thread; its (status, headers, text) and return time land in the dict."""
    result: dict = {}

    def run() -> None:
        result["answer"] = call(server, "GET", path, GCE, timeout=10)
        result["t"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# -- GCE ---------------------------------------------------------------------------


def test_gce_refuses_a_request_without_metadata_flavor(serve):
    server = serve("gce")
    for path in (PREEMPTED, "/computeMetadata/v1/", "/"):
        assert call(server, "GET", path)[0] == 403
        assert call(server, "GET", path, {"Metadata-Flavor": "google-ish"})[0] == 403
    status, headers, text = call(server, "GET", PREEMPTED, GCE)
    assert (status, text) == (200, "FALSE")
    assert headers["Metadata-Flavor"] == "Google" and headers["Content-Type"] == "application/text"
    assert headers["ETag"]


def test_gce_long_poll_returns_true_within_200_ms_of_the_notice(serve):
    server = serve("gce")
    etag_before = call(server, "GET", PREEMPTED, GCE)[1]["ETag"]
    thread, result = long_poll(server, PREEMPTED + "?wait_for_change=true")
    thread.join(0.5)
    assert thread.is_alive(), "the long-poll answers only when the value changes"
    noticed = time.monotonic()
    server.notice(time.time() + 30)
    thread.join(2)
    status, headers, text = result["answer"]
    assert (status, text) == (200, "TRUE")
    assert result["t"] - noticed < 0.2
    assert headers["ETag"] != etag_before
    assert server.requests[-1].notice


def test_gce_long_poll_with_last_etag_and_timeout_sec(serve):
    server = serve("gce")
    etag = call(server, "GET", PREEMPTED, GCE)[1]["ETag"]
    started = time.monotonic()
    status, headers, text = call(server, "GET", f"{PREEMPTED}?wait_for_change=true&last_etag={etag}&timeout_sec=1", GCE)
    assert 0.9 < time.monotonic() - started < 2, "timeout_sec ends the wait with the value unchanged"
    assert (status, text, headers["ETag"]) == (200, "FALSE", etag)
    started = time.monotonic()
    answer = call(server, "GET", f"{PREEMPTED}?wait_for_change=true&last_etag=stale&timeout_sec=5", GCE)
    assert answer[2] == "FALSE" and time.monotonic() - started < 0.5, "a stale ETag answers at once"
    assert call(server, "GET", f"{PREEMPTED}?wait_for_change=true&timeout_sec=soon", GCE)[0] == 400


def test_gce_maintenance_event_scheduling_and_identity(serve):
    server = serve("gce")
    v1 = "/computeMetadata/v1/"
    assert call(server, "GET", v1 + "instance/maintenance-event", GCE)[2] == "NONE"
    thread, result = long_poll(server, v1 + "instance/maintenance-event?wait_for_change=true&timeout_sec=5")
    thread.join(0.3)
    server.notice(time.time() + 30)
    thread.join(2)
    assert result["answer"][2] == "TERMINATE_ON_HOST_MAINTENANCE"
    assert call(server, "GET", v1 + "instance/scheduling/preemptible", GCE)[2] == "TRUE"
    for key in ("instance/id", "instance/zone", "instance/name", "project/project-id"):
        status, _, text = call(server, "GET", v1 + key, GCE)
        assert status == 200 and text
    assert "preempted" in call(server, "GET", v1 + "instance/", GCE)[2].split()
    assert call(server, "GET", v1 + "instance/no-such-key", GCE)[0] == 404
    server.new_vm()
    assert call(server, "GET", PREEMPTED, GCE)[2] == "FALSE"
    assert call(server, "GET", v1 + "instance/maintenance-event", GCE)[2] == "NONE"
    standard = serve("gce", preemptible=False)
    assert call(standard, "GET", v1 + "instance/scheduling/preemptible", GCE)[2] == "FALSE"


def test_google_auth_finds_and_reads_the_server_through_its_environment_variables(serve):
    server = serve("gce")
    server.notice(time.time() + 30)
    script = (
        "import json, google.auth.transport.requests as t\n"
        "from google.auth.compute_engine import _metadata as m\n"
        "r = t.Request()\n"
        "print(json.dumps([m.ping(r), m.is_on_gce(r), m.get(r, 'instance/preempted'), m.get_project_id(r)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GCE_", "SPOTSIM_"))}
    env.update({k: v for k, v in server.env().items() if k.startswith("GCE_")})  # google-auth's variables only
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True, "TRUE", "spotsim-local"]
    assert any(r.path == "/" and r.status == 200 for r in server.requests), "google-auth pings the root"
    assert any(r.path.endswith("instance/preempted") and r.notice for r in server.requests)


# -- AWS ---------------------------------------------------------------------------


def token(server: MetadataServer, ttl: str = "21600") -> str:
    status, headers, text = call(server, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert status == 200 and headers["X-aws-ec2-metadata-token-ttl-seconds"] == ttl
    return text


def test_aws_imdsv2_tokens_and_imdsv1(serve):
    server = serve("aws")
    header = {"X-aws-ec2-metadata-token": token(server)}
    assert call(server, "GET", "/latest/meta-data/instance-id", header)[:3:2] == (200, "i-0a1b2c3d4e5f67890")
    assert call(server, "GET", "/latest/meta-data/instance-id")[0] == 200, "IMDSv1 is allowed (optional)"
    assert call(server, "GET", "/latest/meta-data/instance-id", {"X-aws-ec2-metadata-token": "forged"})[0] == 401
    assert call(server, "PUT", "/latest/api/token")[0] == 400, "a token needs a TTL"
    for ttl in ("0", "21601", "soon"):
        assert call(server, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": ttl})[0] == 400
    assert call(server, "GET", "/latest/api/token")[0] == 405
    short = {"X-aws-ec2-metadata-token": token(server, ttl="1")}
    assert call(server, "GET", "/latest/meta-data/instance-id", short)[0] == 200
    time.sleep(1.1)
    assert call(server, "GET", "/latest/meta-data/instance-id", short)[0] == 401, "an expired token"
    assert call(server, "GET", "/latest/meta-data/instance-id")[1]["Content-Type"] == "text/plain"


def test_aws_instance_action_is_404_then_one_fixed_time(serve):
    server = serve("aws")
    header = {"X-aws-ec2-metadata-token": token(server)}
    assert call(server, "GET", ACTION, header)[0] == 404
    assert call(server, "GET", "/latest/meta-data/spot/termination-time", header)[0] == 404
    deadline = time.time() + 120.4
    server.notice(deadline)
    first = call(server, "GET", ACTION, header)
    time.sleep(1.0)
    second = call(server, "GET", ACTION, header)
    assert first[0] == 200 and first[2] == second[2], "the time does not slide between polls"
    action = json.loads(first[2])
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(round(deadline)))
    assert action == {"action": "terminate", "time": expected}
    assert call(server, "GET", "/latest/meta-data/spot/termination-time", header)[:3:2] == (200, expected)
    assert [r.notice for r in server.requests if r.path == ACTION] == [False, True, True]
    server.new_vm()
    assert call(server, "GET", ACTION)[0] == 404
    assert call(server, "GET", ACTION, header)[0] == 401, "a new VM does not know the old VM's tokens"


def test_aws_rebalance_recommendation_and_listing(serve):
    server = serve("aws")
    rebalance = "/latest/meta-data/events/recommendations/rebalance"
    assert call(server, "GET", rebalance)[0] == 404
    listing = call(server, "GET", "/latest/meta-data/")[2].split("\n")
    assert {"instance-id", "instance-life-cycle", "placement/"} <= set(listing) and "spot/" not in listing
    server.rebalance(time.time())
    status, _, text = call(server, "GET", rebalance)
    assert status == 200 and set(json.loads(text)) == {"noticeTime"}
    assert not server.requests[-1].notice, "a recommendation is not a notice"
    assert call(server, "GET", ACTION)[0] == 404
    assert call(server, "GET", "/latest/meta-data/instance-life-cycle")[2] == "spot"
    assert call(server, "GET", "/latest/meta-data/placement/availability-zone")[2] == "us-east-1a"
    server.notice(time.time() + 120)
    assert "spot/" in call(server, "GET", "/latest/meta-data/")[2].split("\n")
    assert call(server, "GET", "/latest/meta-data/spot/")[2].split("\n") == ["instance-action", "termination-time"]


def test_botocore_finds_and_reads_imds_through_its_environment_variable(serve, monkeypatch, tmp_path):
    session_module = pytest.importorskip("botocore.session", reason="boto3 is in the dev extra")
    from botocore.utils import IMDSFetcher, IMDSRegionProvider

    server = serve("aws")
    for name in [k for k in os.environ if k.startswith(("AWS_", "SPOTSIM_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.env()["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
    session = session_module.Session()
    assert IMDSRegionProvider(session).provide() == "us-east-1"

    server.notice(time.time() + 120)
    fetcher = IMDSFetcher(
        config={"ec2_metadata_service_endpoint": session.get_config_variable("ec2_metadata_service_endpoint")}
    )
    imds_token = fetcher._fetch_metadata_token()  # noqa: SLF001 (botocore's own IMDSv2 steps, as its fetchers use them)
    response = fetcher._get_request("latest/meta-data/spot/instance-action", None, token=imds_token)  # noqa: SLF001
    assert json.loads(response.text)["action"] == "terminate"
    puts = [r for r in server.requests if r.method == "PUT"]
    assert puts and all(r.status == 200 for r in puts), "botocore used IMDSv2"


# -- Azure -------------------------------------------------------------------------


def document(server: MetadataServer) -> dict:
    status, headers, text = call(server, "GET", EVENTS, AZURE)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(text)


def test_azure_needs_the_metadata_header_and_an_api_version(serve):
    server = serve("azure")
    status, _, text = call(server, "GET", EVENTS)
    assert status == 400 and "error" in json.loads(text)
    assert call(server, "GET", EVENTS, {"Metadata": "false"})[0] == 400
    assert call(server, "GET", "/metadata/scheduledevents", AZURE)[0] == 400
    assert call(server, "GET", "/metadata/scheduledevents?api-version=1999-01-01", AZURE)[0] == 400
    assert document(server) == {"DocumentIncarnation": 1, "Events": []}
    compute = json.loads(call(server, "GET", "/metadata/instance/compute?api-version=2021-02-01", AZURE)[2])
    assert compute["priority"] == "Spot" and compute["evictionPolicy"]


def test_azure_preempt_event_and_document_incarnation(serve):
    server = serve("azure")
    deadline = time.time() + 30.6
    server.notice(deadline, event_id="602d9444-d2cd-49c7-8624-8643e7171297")
    doc = document(server)
    assert doc["DocumentIncarnation"] == 2
    assert doc["Events"] == [
        {
            "EventId": "602d9444-d2cd-49c7-8624-8643e7171297",
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": ["spotsim-vm"],
            "EventStatus": "Scheduled",
            "NotBefore": email.utils.formatdate(round(deadline), usegmt=True),
            "Description": doc["Events"][0]["Description"],
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }
    ]
    assert doc["Events"][0]["NotBefore"].endswith(" GMT") and server.requests[-1].notice
    server.new_vm()
    assert document(server) == {"DocumentIncarnation": 3, "Events": []}
    server.new_vm()
    assert document(server)["DocumentIncarnation"] == 3, "an unchanged document keeps its incarnation"
    server.notice(time.time() + 30)
    assert len(document(server)["Events"][0]["EventId"]) == 36, "a uuid when no id is given"


def test_azure_approval_of_the_current_event_only(serve):
    server = serve("azure")
    server.notice(time.time() + 30, event_id="A")

    def approve(event_id: str, headers=AZURE) -> int:
        return call(server, "POST", EVENTS, headers, json.dumps({"StartRequests": [{"EventId": event_id}]}))[0]

    assert approve("B") == 400 and server.approved_at() is None, "an unknown EventId does not count"
    assert call(server, "POST", EVENTS, AZURE, "not json")[0] == 400
    assert approve("A", headers={}) == 400 and server.approved_at() is None
    before = time.time()
    assert approve("A") == 200
    assert before <= server.approved_at() <= time.time()
    doc = document(server)
    assert doc["DocumentIncarnation"] == 3 and doc["Events"][0]["EventStatus"] == "Started"
    server.new_vm()
    assert server.approved_at() is None


# -- every cloud -------------------------------------------------------------------


@pytest.mark.parametrize(
    "cloud, requests",
    [
        (
            "gce",
            [("GET", PREEMPTED, {}, 403, False), ("GET", PREEMPTED, GCE, 200, True), ("GET", "/x", GCE, 404, False)],
        ),
        ("aws", [("PUT", "/latest/api/token", {}, 400, False), ("GET", ACTION, {}, 200, True)]),
        (
            "azure",
            [("GET", EVENTS, {}, 400, False), ("GET", EVENTS, AZURE, 200, True), ("DELETE", EVENTS, AZURE, 405, False)],
        ),
    ],
)
def test_every_request_reaches_on_request_once_with_its_status(serve, cloud, requests):
    server = serve(cloud)
    server.notice(time.time() + 60)
    before = time.time()
    for method, path, headers, status, _ in requests:
        assert call(server, method, path, headers)[0] == status
    seen = [(r.method, r.path, r.status, r.notice) for r in server.requests]
    assert seen == [(method, path, status, notice) for method, path, _, status, notice in requests]
    assert all(before <= r.t <= time.time() and r.cloud == cloud for r in server.requests)
    method, path, _, status, notice = requests[-1]
    last = {"cloud": cloud, "method": method, "path": path, "status": status, "notice": notice}
    assert server.requests[-1].to_event() == last


def test_stop_is_prompt_with_a_long_poll_pending(serve):
    server = serve("gce")
    thread, result = long_poll(server, PREEMPTED + "?wait_for_change=true")
    thread.join(0.3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5
    thread.join(2)
    assert result["answer"][0] == 503 and not thread.is_alive()
    server.stop()  # twice is fine


def test_environment_names_each_clouds_own_variables():
    for cloud in CLOUDS:
        with MetadataServer(cloud) as server:
            env = server.env()
            host = server.url.removeprefix("http://")
            assert env["SPOTSIM_METADATA_URL"] == server.url and env["SPOTSIM_METADATA_CLOUD"] == cloud
            expected = {
                "gce": {"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host},
                "aws": {"AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url + "/"},
                "azure": {},
            }[cloud]
            assert {k: v for k, v in env.items() if not k.startswith("SPOTSIM_")} == expected
    with pytest.raises(ValueError, match="unknown cloud"):
        MetadataServer("oci")
