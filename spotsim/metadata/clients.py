"""Clients of the three metadata servers: what PreemptionWatcher polls (and, on Azure, approves with).

Each speaks its cloud's protocol as the cloud's own agents do; paths, headers and time formats come from the server
modules, so the two sides cannot drift. :func:`discover` finds the servers from the variables the cloud SDKs read.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlencode, urlsplit

from spotsim.errors import InvalidOption
from spotsim.metadata import aws, azure, gce
from spotsim.metadata.server import CLOUDS

log = logging.getLogger(__name__)

REAL_BASES = {
    "gce": "http://metadata.google.internal",
    "aws": "http://169.254.169.254",
    "azure": "http://169.254.169.254",
}


@dataclass(frozen=True)
class Notice:
    """What a metadata server announced."""

    cloud: str
    reason: str
    deadline: float | None = None  # unix time of the stop, where the cloud gives one (AWS, Azure)
    event_id: str | None = None  # Azure: the event to approve
    rebalance: bool = False  # AWS's rebalance recommendation: an earlier, softer warning, not a preemption
    issued_at: float | None = None  # the cloud's own time of a rebalance recommendation (noticeTime)


class MetadataClient(Protocol):
    """One cloud's watcher side: ``check()`` once (a poll, or a GCE long-poll), then wait ``pause_s``."""

    cloud: str
    pause_s: float  # how long to wait after a check before the next

    def check(self) -> list[Notice]: ...

    def close(self) -> None: ...


def discover(cloud: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The metadata servers to watch, ``{cloud: base URL}``.

    ``"auto"``: those named in ``environ``: ``GCE_METADATA_HOST`` (google-auth's), ``AWS_EC2_METADATA_SERVICE_ENDPOINT``
    (botocore's), and ``SPOTSIM_METADATA_URL`` for ``SPOTSIM_METADATA_CLOUD`` (Azure when unset, as Azure's clients
    have no variable); none when none is set. A cloud's name: that cloud, at its variable's address if set, else at
    the real one. None: no metadata server.

    Raises:
        InvalidOption: an unknown cloud, as the argument or in ``SPOTSIM_METADATA_CLOUD``.
    """
    if cloud is None:
        return {}
    if cloud != "auto" and cloud not in CLOUDS:
        raise InvalidOption(f"unknown cloud {cloud!r}: expected 'auto', None or one of {', '.join(CLOUDS)}")
    found: dict[str, str] = {}
    if url := environ.get("SPOTSIM_METADATA_URL"):
        named = environ.get("SPOTSIM_METADATA_CLOUD") or "azure"
        if named not in CLOUDS:
            raise InvalidOption(f"SPOTSIM_METADATA_CLOUD={named!r}: expected one of {', '.join(CLOUDS)}")
        found[named] = url
    if host := environ.get("GCE_METADATA_HOST") or environ.get("GCE_METADATA_ROOT"):
        found.setdefault("gce", f"http://{host}")
    if endpoint := environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        found.setdefault("aws", endpoint)
    if cloud == "auto":
        return found
    return {cloud: found.get(cloud, REAL_BASES[cloud])}


def client(cloud: str, base: str, *, poll_interval_s: float) -> MetadataClient:
    return _CLIENTS[cloud](base, poll_interval_s=poll_interval_s)


@dataclass(frozen=True)
class Response:
    status: int  # 0: no answer (unreachable, timed out, aborted)
    headers: Mapping[str, str]  # names in lower case
    text: str


class HttpClient:
    """Requests to one metadata server; ``close()`` from another thread aborts those in flight, so a long-poll
    never holds up the watcher's stop."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidOption(f"a metadata server address is http://host[:port], got {base!r}")
        self._host, self._port, self._prefix = parts.hostname, parts.port or 80, parts.path.rstrip("/")
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._closed = False

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: str | None = None, timeout_s: float = 2.0
    ) -> Response:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
        with self._lock:
            if self._closed:
                return Response(0, {}, "")
            self._open.add(connection)
        try:
            connection.request(method, self._prefix + path, body=body, headers=dict(headers))
            response = connection.getresponse()
            text = response.read(1 << 16).decode(errors="replace")
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        except (OSError, http.client.HTTPException):
            return Response(0, {}, "")  # no server (yet, or any more): no notice, try again next time
        finally:
            with self._lock:
                self._open.discard(connection)
            connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = [connection.sock for connection in self._open if connection.sock is not None]
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


class GceClient:
    """Watches ``instance/preempted``: one GET for the value and its ETag, then ``?wait_for_change=true`` long-polls
    with ``last_etag``, which the server answers the moment the value changes (or after ``long_poll_s``)."""

    cloud = "gce"

    def __init__(self, base: str, *, poll_interval_s: float, long_poll_s: int = 60) -> None:
        self.http, self.poll_interval_s, self.long_poll_s = HttpClient(base), poll_interval_s, long_poll_s
        self._etag: str | None = None
        self.pause_s = poll_interval_s

    def check(self) -> list[Notice]:
        path, timeout, long_poll = gce.ROOT + gce.PREEMPTED, 2.0, self._etag is not None
        if long_poll:
            query = {"wait_for_change": "true", "last_etag": self._etag, "timeout_sec": self.long_poll_s}
            path, timeout = f"{path}?{urlencode(query)}", timeout + self.long_poll_s
        started = time.monotonic()
        response = self.http.request("GET", path, {gce.FLAVOR_HEADER: gce.FLAVOR}, timeout_s=timeout)
        self._etag = response.headers.get("etag") if response.status == 200 else None
        # Long-poll at once after the plain GET or a long-poll that waited; after an error, or from a server
        # that ignores wait_for_change, wait poll_interval_s first, so nothing spins.
        waited = not long_poll or time.monotonic() - started >= self.long_poll_s / 2
        self.pause_s = 0.0 if self._etag and waited else self.poll_interval_s
        if response.status == 200 and response.text.strip() == "TRUE":
            return [Notice("gce", "GCE metadata: instance/preempted is TRUE")]
        return []

    def close(self) -> None:
        self.http.close()


class AwsClient:
    """Polls ``spot/instance-action`` and the rebalance recommendation with an IMDSv2 token (refreshed a minute
    before it expires), falling back to IMDSv1 when the token PUT is refused (403, 404, 405), as botocore does."""

    cloud = "aws"
    TOKEN_TTL_S = aws.MAX_TOKEN_TTL_S

    def __init__(self, base: str, *, poll_interval_s: float) -> None:
        self.http, self.pause_s = HttpClient(base), poll_interval_s
        self._token: str | None = None
        self._token_expires = 0.0  # time.monotonic()
        self._v1 = False
        self._rebalance_seen = False

    def check(self) -> list[Notice]:
        headers = self._token_header()
        notices = []
        if not self._rebalance_seen:
            response = self.http.request("GET", aws.META + aws.REBALANCE, headers)
            if response.status == 200:
                self._rebalance_seen = True
                notices.append(_rebalance(response.text))
        response = self.http.request("GET", aws.META + aws.INSTANCE_ACTION, headers)
        if response.status == 401:
            self._token = None  # expired, or an earlier VM's: a new one next time
        elif response.status == 200:
            notices.append(_instance_action(response.text))
        return notices

    def _token_header(self) -> dict[str, str]:
        if self._v1:
            return {}
        if self._token is None or time.monotonic() >= self._token_expires:
            self._token = None
            response = self.http.request("PUT", aws.TOKEN_PATH, {aws.TOKEN_TTL_HEADER: str(self.TOKEN_TTL_S)})
            if response.status == 200:
                self._token, self._token_expires = response.text, time.monotonic() + self.TOKEN_TTL_S - 60
            elif response.status in (403, 404, 405):
                log.info("IMDSv2 token refused (HTTP %d): using IMDSv1", response.status)
                self._v1 = True
        return {aws.TOKEN_HEADER: self._token} if self._token else {}

    def close(self) -> None:
        self.http.close()


def _instance_action(text: str) -> Notice:
    try:
        action = json.loads(text)
        when, deadline = action["time"], aws.parse_time(action["time"])
        what = action["action"]
    except (ValueError, KeyError, TypeError):
        return Notice("aws", "AWS metadata: spot instance-action scheduled (unreadable)")  # a 200 is the notice
    return Notice("aws", f"AWS metadata: spot instance-action {what} at {when}", deadline)


def _rebalance(text: str) -> Notice:
    try:
        issued_at = aws.parse_time(json.loads(text)["noticeTime"])
    except (ValueError, KeyError, TypeError):
        issued_at = None
    return Notice("aws", "AWS metadata: rebalance recommendation", rebalance=True, issued_at=issued_at)


class AzureClient:
    """Polls Scheduled Events for a Preempt event, and approves it with a POST of ``StartRequests``."""

    cloud = "azure"
    PATH = f"{azure.EVENTS_PATH}?api-version={azure.API_VERSION}"

    def __init__(self, base: str, *, poll_interval_s: float) -> None:
        self.http, self.pause_s = HttpClient(base), poll_interval_s

    def check(self) -> list[Notice]:
        response = self.http.request("GET", self.PATH, azure.HEADER)
        try:
            events = json.loads(response.text)["Events"] if response.status == 200 else []
        except (ValueError, KeyError, TypeError):
            return []
        for event in events:
            if isinstance(event, dict) and event.get("EventType") == "Preempt":
                not_before = event.get("NotBefore") or ""  # blank once the event has started
                reason = f"Azure scheduled event: Preempt, not before {not_before or 'now'}"
                return [Notice("azure", reason, _not_before(not_before), event_id=event.get("EventId"))]
        return []

    def approve(self, event_id: str) -> bool:
        """Tell Azure the VM is ready: the eviction may start now instead of at NotBefore. Whether it was accepted."""
        body = json.dumps({"StartRequests": [{"EventId": event_id}]})
        headers = {**azure.HEADER, "Content-Type": "application/json"}
        return self.http.request("POST", self.PATH, headers, body=body).status == 200

    def close(self) -> None:
        self.http.close()


def _not_before(text: str) -> float | None:
    try:
        return azure.parse_time(text) if text else None
    except (ValueError, TypeError):
        return None


_CLIENTS = {"gce": GceClient, "aws": AwsClient, "azure": AzureClient}
