"""MetadataServer: one cloud's metadata server on loopback, one per run, which the harness drives.

Lifecycle: construct (binds a free port, so :attr:`~MetadataServer.url` and :meth:`~MetadataServer.env` are ready),
put ``env()`` in the job's environment, ``start()``; per attempt ``new_vm()``, then at t0 ``notice(deadline)``
(and on AWS perhaps ``rebalance()`` first); ``stop()`` at the end. Every request, bad ones included, reaches
``on_request`` once, with the status it gets, as soon as its answer is decided (before it is sent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from spotsim.metadata.aws import AwsMetadata
from spotsim.metadata.azure import AzureMetadata
from spotsim.metadata.base import Answer, CloudMetadata, MetadataRequest, Request
from spotsim.metadata.gce import GceMetadata

log = logging.getLogger(__name__)

CLOUDS = ("gce", "aws", "azure")
_STATES: dict[str, type[CloudMetadata]] = {"gce": GceMetadata, "aws": AwsMetadata, "azure": AzureMetadata}


class MetadataServer:
    """A local metadata server that speaks one cloud's paths, headers and payloads.

    Args:
        cloud: one of :data:`CLOUDS`.
        on_request: called with each request (from the server's threads).
        preemptible: what the VM says it is (GCE ``scheduling/preemptible``, AWS ``instance-life-cycle``,
            Azure ``priority``).

    Raises:
        ValueError: an unknown cloud.
    """

    def __init__(
        self, cloud: str, *, on_request: Callable[[MetadataRequest], None] = lambda r: None, preemptible: bool = True
    ) -> None:
        if cloud not in _STATES:
            raise ValueError(f"unknown cloud {cloud!r}: expected one of {', '.join(CLOUDS)}")
        self.cloud = cloud
        self._state = _STATES[cloud](preemptible=preemptible)
        self._httpd = _HttpServer(self._state, on_request)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        """The job's environment: the cloud SDK's own variables, plus spotsim's URL and cloud."""
        return {**self._state.env(self.url), "SPOTSIM_METADATA_URL": self.url, "SPOTSIM_METADATA_CLOUD": self.cloud}

    def start(self) -> MetadataServer:
        if self._thread is None:
            # A short poll interval: shutdown() waits for the serving loop to look.
            serve = lambda: self._httpd.serve_forever(poll_interval=0.05)  # noqa: E731
            self._thread = threading.Thread(target=serve, name=f"spotsim-metadata-{self.cloud}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, answering waiting long-polls 503 at once; a stopped server cannot start again."""
        self._httpd.stopping = True
        self._state.close()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> MetadataServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def new_vm(self) -> None:
        """A fresh VM for the next attempt: no notice pending, no recommendation, no approval."""
        self._state.new_vm()

    def notice(self, deadline: float, *, event_id: str | None = None) -> None:
        """Announce the preemption now; ``deadline`` is the unix time of the stop (GCE gives none)."""
        self._state.notice(deadline, event_id)

    def rebalance(self, notice_time: float) -> None:
        """AWS's rebalance recommendation, issued at ``notice_time``; the other clouds have none, so it does nothing."""
        self._state.rebalance(notice_time)

    def approved_at(self) -> float | None:
        """Azure: when the job approved the current event (``time.time()``); None before, and on other clouds."""
        return self._state.approved_at()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a waiting long-poll never holds up the harness's exit
    block_on_close = False  # nor server_close(): idle keep-alive connections end on their own timeout

    def __init__(self, state: CloudMetadata, on_request: Callable[[MetadataRequest], None]) -> None:
        self.state, self.on_request, self.stopping = state, on_request, False
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a job killed mid-request (a long-poll, at its preemption) resets its connection: expected

    def report(self, request: MetadataRequest) -> None:
        try:
            self.on_request(request)
        except Exception:
            log.exception("metadata server: on_request failed for %s %s", request.method, request.path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, every answer with a Content-Length
    timeout = 30  # seconds an idle keep-alive connection stays open
    server: _HttpServer

    def _handle(self) -> None:
        t = time.time()
        length = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        request = Request(t, self.command, parts.path or "/", query, self.headers, body)
        answer = self._answer(request)
        # Reported at the answer (a long-poll's comes when the value flips), before it is sent, so the log has
        # the request before the job can act on the answer.
        state = self.server.state
        answered = time.time()
        self.server.report(
            MetadataRequest(answered, state.cloud, self.command, self.path, answer.status, answer.notice)
        )
        self._send(answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _handle  # noqa: N815 (http.server's names)

    def _answer(self, request: Request) -> Answer:
        if self.server.stopping:
            self.close_connection = True
            return Answer(503, "metadata server stopped", {"Content-Type": "text/plain"})
        try:
            return self.server.state.answer(request)
        except Exception:
            log.exception("metadata server: failed to answer %s %s", request.method, self.path)
            return Answer(500, "internal error", {"Content-Type": "text/plain"})

    def _send(self, answer: Answer) -> None:
        data = answer.body.encode()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def version_string(self) -> str:
        return self.server.state.server_header

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        log.debug("metadata server: " + format, *args)
