"""EC2's instance metadata service (IMDS): ``/latest/meta-data/...``, IMDSv2 tokens optional (the default setting).

``spot/instance-action`` answers 404 until the notice, then ``{"action": "terminate", "time": ...}`` with one fixed
time on every poll (AWS's own mock, AEMM, slides it to now + 2 min on each request unless given ``--time``);
``spot/termination-time`` gives the same time, ``events/recommendations/rebalance`` the rebalance recommendation.
A new VM forgets the notice, the recommendation and every token.
"""

from __future__ import annotations

import calendar
import json
import secrets
import threading
import time

from spotsim.metadata.base import Answer, CloudMetadata, Request, listing

TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TOKEN_TTL_S = 21600
META = "/latest/meta-data/"
INSTANCE_ACTION = "spot/instance-action"
TERMINATION_TIME = "spot/termination-time"
REBALANCE = "events/recommendations/rebalance"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(t: float) -> str:
    # IMDS times have whole seconds, so round to the nearest one: at the harness's compressed clock a 120 s notice
    # may be only 2 s real, and truncating would cost up to a second of it.
    return time.strftime(_TIME_FORMAT, time.gmtime(round(t)))


def parse_time(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, _TIME_FORMAT)))


class AwsMetadata(CloudMetadata):
    cloud = "aws"
    server_header = "EC2ws"

    def __init__(self, *, preemptible: bool) -> None:
        super().__init__(preemptible=preemptible)
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> time.monotonic() when it expires
        self._time: str | None = None  # the interruption's time, once noticed
        self._rebalance: str | None = None

    def env(self, url: str) -> dict[str, str]:
        return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": url + "/"}  # botocore's variable

    def new_vm(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._time = self._rebalance = None

    def notice(self, deadline: float, event_id: str | None = None) -> None:
        with self._lock:
            self._time = format_time(deadline)

    def rebalance(self, notice_time: float) -> None:
        with self._lock:
            self._rebalance = format_time(notice_time)

    def _values(self) -> dict[str, str]:
        values = {
            "ami-id": "ami-0c02fb55956c7d316",
            "hostname": "ip-10-0-0-17.ec2.internal",
            "instance-id": "i-0a1b2c3d4e5f67890",
            "instance-life-cycle": "spot" if self.preemptible else "on-demand",
            "instance-type": "g5.xlarge",
            "local-ipv4": "10.0.0.17",
            "placement/availability-zone": "us-east-1a",
            "placement/region": "us-east-1",
        }
        if self._time is not None:
            values[INSTANCE_ACTION] = json.dumps({"action": "terminate", "time": self._time})
            values[TERMINATION_TIME] = self._time
        if self._rebalance is not None:
            values[REBALANCE] = json.dumps({"noticeTime": self._rebalance})
        return values

    def answer(self, request: Request) -> Answer:
        if request.path == TOKEN_PATH:
            return self._token(request)
        if request.method != "GET":
            return _error(405, "Method Not Allowed")
        with self._lock:
            token = request.headers.get(TOKEN_HEADER)
            if token is not None and self._tokens.get(token, 0.0) <= time.monotonic():
                return _error(401, "Unauthorized")  # IMDSv1 (no token) is allowed; a bad or expired token is not
            values = self._values()
        if request.path in ("/", "/latest", "/latest/"):
            return _text("latest" if request.path == "/" else "meta-data")
        if not (request.path + "/").startswith(META):
            return _error(404, "Not Found")
        key = request.path[len(META) :].strip("/")  # botocore asks for placement/availability-zone/ with the slash
        if key in values:
            return _text(values[key], notice=key in (INSTANCE_ACTION, TERMINATION_TIME))
        entries = listing(values, key + "/" if key else "")
        return _text("\n".join(entries)) if entries else _error(404, "Not Found")

    def _token(self, request: Request) -> Answer:
        if request.method != "PUT":
            return _error(405, "Method Not Allowed")
        if request.headers.get("X-Forwarded-For"):
            return _error(403, "Forbidden")  # IMDSv2 refuses tokens to proxied requests
        ttl = request.headers.get(TOKEN_TTL_HEADER, "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL_S:
            return _error(400, "Bad Request")
        token = secrets.token_urlsafe(42)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: ends for t, ends in self._tokens.items() if ends > now}
            self._tokens[token] = now + int(ttl)
        return Answer(200, token, {"Content-Type": "text/plain", TOKEN_TTL_HEADER: ttl})


def _text(body: str, *, notice: bool = False) -> Answer:
    return Answer(200, body, {"Content-Type": "text/plain"}, notice)


def _error(status: int, reason: str) -> Answer:
    title = f"{status} - {reason}"
    page = f'<?xml version="1.0" encoding="iso-8859-1"?>\n<html><head><title>{title}</title></head>'
    return Answer(status, f"{page}<body><h1>{title}</h1></body></html>\n", {"Content-Type": "text/html"})
