"""Azure's Instance Metadata Service: Scheduled Events at ``/metadata/scheduledevents``, behind ``Metadata: true``.

The notice is one Preempt event with its ``NotBefore``; ``DocumentIncarnation`` goes up whenever the document
changes (a notice, an approval, a new VM's empty list). The job may approve the event early with a POST of
``{"StartRequests": [{"EventId": ...}]}``: the event then shows ``Started`` with a blank NotBefore, as Azure's docs
describe, and :meth:`AzureMetadata.approved_at` tells the harness to evict now.
"""

from __future__ import annotations

import email.utils
import json
import threading
import uuid

from spotsim.metadata.base import Answer, CloudMetadata, Request

EVENTS_PATH = "/metadata/scheduledevents"
API_VERSION = "2020-07-01"
HEADER = {"Metadata": "true"}
# Scheduled Events versions Azure documents; other IMDS endpoints have their own lists, which are not checked here.
EVENTS_API_VERSIONS = ("2017-03-01", "2017-08-01", "2017-11-01", "2019-01-01", "2019-08-01", "2020-07-01")
VM_NAME = "spotsim-vm"
_JSON = {"Content-Type": "application/json; charset=utf-8"}


def format_time(t: float) -> str:
    # RFC 1123 ("Mon, 19 Sep 2016 18:29:47 GMT") has whole seconds, so round to the nearest one: at the harness's
    # compressed clock a 30 s notice may be well under a second real, and truncating would cost a real share of it.
    return email.utils.formatdate(round(t), usegmt=True)


def parse_time(text: str) -> float:
    return email.utils.parsedate_to_datetime(text).timestamp()


class AzureMetadata(CloudMetadata):
    cloud = "azure"

    def __init__(self, *, preemptible: bool) -> None:
        super().__init__(preemptible=preemptible)
        self._lock = threading.Lock()
        self._incarnation = 1
        self._events: list[dict] = []
        self._approved_at: float | None = None

    def env(self, url: str) -> dict[str, str]:
        return {}  # Azure's clients have no variable for another IMDS address

    def new_vm(self) -> None:
        with self._lock:
            if self._events:
                self._incarnation += 1
            self._events, self._approved_at = [], None

    def notice(self, deadline: float, event_id: str | None = None) -> None:
        event = {
            "EventId": event_id or str(uuid.uuid4()).upper(),
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": [VM_NAME],
            "EventStatus": "Scheduled",
            "NotBefore": format_time(deadline),
            "Description": "The Spot VM is being evicted.",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }
        with self._lock:
            self._incarnation += 1
            self._events, self._approved_at = [event], None

    def approved_at(self) -> float | None:
        with self._lock:
            return self._approved_at

    def answer(self, request: Request) -> Answer:
        if request.headers.get("Metadata", "").lower() != "true":
            return _json(400, {"error": "Bad request. Required metadata header not specified"})
        version = request.query.get("api-version")
        if not version:
            message = "Bad request. api-version was not specified in the request. For more information refer to "
            message += "aka.ms/azureimds"
            return _json(400, {"error": message, "newest-versions": list(EVENTS_API_VERSIONS[::-1][:3])})
        path = request.path.rstrip("/")
        if path == EVENTS_PATH:
            if version not in EVENTS_API_VERSIONS:
                return _json(400, {"error": "Bad request. api-version is invalid or was not specified in the request."})
            if request.method == "POST":
                return self._approve(request)
            return self._document() if request.method == "GET" else _json(405, {"error": "Method not allowed"})
        if request.method != "GET":
            return _json(405, {"error": "Method not allowed"})
        if path == "/metadata/instance/compute":
            return _json(200, self._compute())
        if path == "/metadata/instance":
            return _json(200, {"compute": self._compute()})
        return _json(404, {"error": "Not found"})

    def _document(self) -> Answer:
        with self._lock:
            document = {"DocumentIncarnation": self._incarnation, "Events": self._events}
            body = json.dumps(document)
            preempt = any(e["EventType"] == "Preempt" for e in self._events)
        return Answer(200, body, _JSON, notice=preempt)

    def _approve(self, request: Request) -> Answer:
        try:
            ids = [start["EventId"] for start in json.loads(request.body)["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": 'Bad request. Expected {"StartRequests": [{"EventId": ...}]}'})
        with self._lock:
            events = {e["EventId"]: e for e in self._events}
            # Azure's docs do not say how an unknown EventId is answered; 400 refuses it without counting it.
            if not ids or any(event_id not in events for event_id in ids):
                return _json(400, {"error": "Bad request. Unknown EventId"})
            if any(events[event_id]["EventStatus"] != "Started" for event_id in ids):
                for event_id in ids:
                    events[event_id].update(EventStatus="Started", NotBefore="")
                self._incarnation += 1
            if self._approved_at is None:
                self._approved_at = request.t
        return Answer(200, "", _JSON)

    def _compute(self) -> dict:
        spot = self.preemptible
        return {
            "azEnvironment": "AzurePublicCloud",
            "location": "eastus",
            "name": VM_NAME,
            "osType": "Linux",
            "priority": "Spot" if spot else "Regular",
            "evictionPolicy": "Deallocate" if spot else "",
            "resourceGroupName": "spotsim",
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "vmId": "5c08b38e-4d57-4c23-ac45-aca61037f084",
            "vmSize": "Standard_NC4as_T4_v3",
            "zone": "",
        }


def _json(status: int, body: dict) -> Answer:
    return Answer(status, json.dumps(body), _JSON)
