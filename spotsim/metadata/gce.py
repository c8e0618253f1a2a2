"""Compute Engine's metadata server: ``/computeMetadata/v1/...``, every request with ``Metadata-Flavor: Google``.

At the notice ``instance/preempted`` becomes TRUE and ``instance/maintenance-event`` TERMINATE_ON_HOST_MAINTENANCE;
a ``?wait_for_change=true`` long-poll on either returns the moment it flips (a Condition wakes it, nothing polls).
As on GCE, the ETag is a hash of the value, so ``last_etag`` works across requests, and ``timeout_sec`` ends a
long-poll with the unchanged value. GCE's notice carries no deadline.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping

from spotsim.metadata.base import Answer, CloudMetadata, Request, listing

ROOT = "/computeMetadata/v1/"
PREEMPTED = "instance/preempted"
MAINTENANCE_EVENT = "instance/maintenance-event"
FLAVOR_HEADER, FLAVOR = "Metadata-Flavor", "Google"  # required on requests, sent on answers
TERMINATE = "TERMINATE_ON_HOST_MAINTENANCE"

_PROJECT, _PROJECT_NUMBER, _ZONE, _NAME = "spotsim-local", "123456789012", "us-central1-a", "spotsim-vm"
_FORBIDDEN = (
    "Your client does not have permission to get URL {} from this server. Missing Metadata-Flavor:Google header."
)


def etag(value: str) -> str:
    return hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()[:16]


def _flag(value: bool) -> str:
    return "TRUE" if value else "FALSE"


class GceMetadata(CloudMetadata):
    cloud = "gce"
    server_header = "Metadata Server for VM"

    def __init__(self, *, preemptible: bool) -> None:
        super().__init__(preemptible=preemptible)
        self._changed = threading.Condition()  # guards the state below; notified on every change
        self._preempted, self._maintenance, self._closed = False, "NONE", False

    def env(self, url: str) -> dict[str, str]:
        # google-auth reads GCE_METADATA_HOST for requests and GCE_METADATA_IP for its ping; both are host:port.
        host = url.removeprefix("http://")
        return {"GCE_METADATA_HOST": host, "GCE_METADATA_IP": host}

    def new_vm(self) -> None:
        self._set(preempted=False, maintenance="NONE")

    def notice(self, deadline: float, event_id: str | None = None) -> None:
        self._set(preempted=True, maintenance=TERMINATE)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _set(self, *, preempted: bool, maintenance: str) -> None:
        with self._changed:
            self._preempted, self._maintenance = preempted, maintenance
            self._changed.notify_all()

    def _values(self) -> dict[str, str]:
        spot = self.preemptible
        return {
            "instance/id": "4520031799277581759",
            "instance/name": _NAME,
            "instance/hostname": f"{_NAME}.{_ZONE}.c.{_PROJECT}.internal",
            "instance/zone": f"projects/{_PROJECT_NUMBER}/zones/{_ZONE}",
            "instance/machine-type": f"projects/{_PROJECT_NUMBER}/machineTypes/n1-standard-4",
            PREEMPTED: _flag(self._preempted),
            MAINTENANCE_EVENT: self._maintenance,
            "instance/scheduling/preemptible": _flag(spot),
            "instance/scheduling/provisioning-model": "SPOT" if spot else "STANDARD",
            "instance/scheduling/on-host-maintenance": "TERMINATE" if spot else "MIGRATE",
            "instance/scheduling/automatic-restart": _flag(not spot),
            "project/project-id": _PROJECT,
            "project/numeric-project-id": _PROJECT_NUMBER,
        }

    def answer(self, request: Request) -> Answer:
        if request.headers.get(FLAVOR_HEADER) != FLAVOR or request.headers.get("X-Forwarded-For"):
            return _text(403, _FORBIDDEN.format(request.path))  # GCE also refuses proxied requests
        if request.method != "GET":
            return _text(405, "Method not allowed")
        if request.path == "/":
            return _text(200, "computeMetadata/\n")
        if not (request.path + "/").startswith(ROOT):
            return _text(404, "Not found")
        key = request.path[len(ROOT) :].strip("/")
        with self._changed:
            values = self._values()
            if key in values:
                return self._leaf(key, request.query)
        entries = listing(values, key + "/" if key else "")
        return _text(200, "".join(f"{e}\n" for e in entries)) if entries else _text(404, "Not found")

    def _leaf(self, key: str, query: Mapping[str, str]) -> Answer:
        """Answer one value, long-polling first if asked; called with ``_changed`` held."""
        if query.get("wait_for_change", "").lower() == "true":
            try:
                timeout = int(query["timeout_sec"]) if "timeout_sec" in query else None
            except ValueError:
                return _text(400, "timeout_sec must be a whole number of seconds")
            self._wait(key, query.get("last_etag") or etag(self._values()[key]), timeout)
            if self._closed:
                return _text(503, "metadata server stopping")
        value = self._values()[key]
        notice = (key == PREEMPTED and value == "TRUE") or (key == MAINTENANCE_EVENT and value == TERMINATE)
        return _text(200, value, etag=etag(value), notice=notice)

    def _wait(self, key: str, last_etag: str, timeout: int | None) -> None:
        """Wait until ``key``'s value no longer has ``last_etag``, the timeout passes, or the server stops."""
        ends = None if timeout is None else time.monotonic() + timeout
        while not self._closed and etag(self._values()[key]) == last_etag:
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                return
            self._changed.wait(left)


def _text(status: int, body: str, *, etag: str | None = None, notice: bool = False) -> Answer:
    headers = {FLAVOR_HEADER: FLAVOR, "Content-Type": "application/text"}
    if etag is not None:
        headers["ETag"] = etag
    return Answer(status, body, headers, notice)
