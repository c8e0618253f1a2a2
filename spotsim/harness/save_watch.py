"""Seeing a save while it is being written, so a kill can land inside it.

A job reports a checkpoint only once it is saved, so a kill placed "at a
checkpoint step" lands just before the save starts and never tears it. To kill
*inside* a save, the harness watches the checkpoint location itself:

- :class:`BucketProxy` sits between the jobs and the embedded emulator (jobs get
  its address as ``STORAGE_EMULATOR_HOST``). When armed, the first upload
  request into the watched bucket goes through to the bucket, and then its
  *response is held*: the harness is told and sends its signal before the job
  learns that the object landed. A save of several objects (payload, then a
  manifest; or shards overwritten in place) is cut after its first object, the
  most damaging instant; after a SIGTERM the save goes on and the job gets its
  notice mid-save.
- :class:`DirectoryWatch` polls a ``file://`` checkpoint directory for new or
  growing files. It cannot hold a write, so a small save may go further before
  the kill lands; the run log records what was seen.

Both implement :class:`SaveWatch`, which the runner uses in
:meth:`~spotsim.harness.runner.Supervisor._supervise`.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from spotsim.errors import InvalidURI

HOLD_LIMIT_S = 5.0  # a held upload goes on by itself after this, so a harness bug cannot hang a job
_UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/([^/]+)/o")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}


class SaveWatch(Protocol):
    """Arm, wait for the first write of a save, signal the job, release."""

    def arm(self, location: str) -> None:
        """Start watching ``location`` (the run's checkpoint URI) for a write from now on."""

    def wait_for_write(self, timeout: float) -> str | None:
        """The first write seen since :meth:`arm` (an object name or path), waiting up to ``timeout`` s."""

    def release(self) -> None:
        """Let a held write go on (the signal is out), and stop watching."""


class BucketProxy:
    """A reverse proxy in front of a GCS emulator that can hold the first upload of a save.

    Args:
        upstream: the emulator's URL (``http://127.0.0.1:PORT``).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._armed_bucket: str | None = None
        self._write: str | None = None
        self._seen = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="spotsim-bucket-proxy", daemon=True)

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}

    def __enter__(self) -> BucketProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    # -- SaveWatch ----------------------------------------------------------------

    def arm(self, location: str) -> None:
        with self._lock:
            self._armed_bucket = urlparse(location).netloc
            self._write = None
            self._seen.clear()
            self._released.clear()

    def wait_for_write(self, timeout: float) -> str | None:
        return self._write if self._seen.wait(timeout) else None

    def release(self) -> None:
        with self._lock:
            self._armed_bucket = None
        self._released.set()

    # -- called by request threads ------------------------------------------------------

    def _hold_if_first_write(self, method: str, path: str) -> None:
        """Hold the response to the first upload into the armed bucket until the harness has signalled."""
        match = _UPLOAD_PATH.match(path)
        if method not in ("POST", "PUT") or match is None:
            return
        with self._lock:
            if self._armed_bucket != unquote(match.group(1)) or self._seen.is_set():
                return
            self._write = _describe_upload(path)
            self._seen.set()
        self._released.wait(HOLD_LIMIT_S)


def _describe_upload(path: str) -> str:
    """The object an upload request names (``?name=…``), or its kind when the name is in the body."""
    query = dict(part.partition("=")[::2] for part in urlparse(path).query.split("&"))
    if "name" in query:
        return unquote(query["name"])
    return f"an object ({query.get('uploadType', 'upload')} upload, name in the body)"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a job killed mid-request resets its connection: that is the point, not an error to print


def _handler_for(proxy: BucketProxy) -> type[BaseHTTPRequestHandler]:
    upstream = urlparse(proxy.upstream)
    if upstream.hostname is None:
        raise InvalidURI(f"the emulator URL {proxy.upstream!r} names no host")
    host: str = upstream.hostname

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the storage client expects
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would flood the harness's stderr

        def _forward(self) -> None:
            try:
                body = self._read_body()
            except (ConnectionError, OSError):
                self.close_connection = True  # the job died mid-upload: nothing reaches the bucket
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = upstream.netloc
            response, payload = self._exchange(body, headers)
            proxy._hold_if_first_write(self.command, self.path)  # landed; the job does not know yet
            self.send_response_only(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() in _HOP_BY_HOP or key.lower() == "content-length":
                    continue
                self.send_header(key, value.replace(proxy.upstream, proxy.url) if key.lower() == "location" else value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _read_body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                    parts.append(self._read_exactly(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():
                    pass  # trailers
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
            return self._read_exactly(length) if length else None

        def _read_exactly(self, size: int) -> bytes:
            data = self.rfile.read(size)
            if len(data) < size:
                raise ConnectionError("the client closed the connection mid-body")
            return data

        def _exchange(self, body: bytes | None, headers: dict) -> tuple[http.client.HTTPResponse, bytes]:
            """Send the request upstream on this client's kept-alive connection, reconnecting once if the
            emulator closed it meanwhile."""
            for retry in (False, True):
                if retry or getattr(self, "_upstream", None) is None:
                    self._upstream = http.client.HTTPConnection(host, upstream.port, timeout=300)
                try:
                    self._upstream.request(self.command, self.path, body=body, headers=headers)
                    response = self._upstream.getresponse()
                    return response, response.read()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    self._upstream.close()
                    if retry:
                        raise
            raise AssertionError("unreachable")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    return Handler


class DirectoryWatch:
    """Polls a ``file://`` checkpoint directory for files that appear or grow after :meth:`arm`."""

    POLL_S = 0.002

    def __init__(self) -> None:
        self._root: Path | None = None
        self._before: dict[str, tuple[int, int]] = {}

    def arm(self, location: str) -> None:
        self._root = Path(unquote(urlparse(location).path))
        self._before = _files(self._root)

    def wait_for_write(self, timeout: float) -> str | None:
        if self._root is None:
            return None
        deadline = time.monotonic() + timeout
        while True:
            now = _files(self._root)
            changed = next((path for path, stat in now.items() if self._before.get(path) != stat), None)
            if changed is not None or time.monotonic() >= deadline:
                return changed
            time.sleep(self.POLL_S)

    def release(self) -> None:
        self._root = None


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, modification time in ns)."""
    found: dict[str, tuple[int, int]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue  # renamed or removed while we looked
            found[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
    return found
