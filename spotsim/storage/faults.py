"""The bucket fails too: a fault-injecting HTTP reverse proxy in front of a GCS emulator.

:class:`FaultProxy` listens on 127.0.0.1 and forwards every request to the emulator
(fake-gcs-server), streaming bodies both ways, except where :class:`FaultSpec` says to
fail it. A job points ``STORAGE_EMULATOR_HOST`` at the proxy (:meth:`FaultProxy.env`)
and meets the failures a real bucket has, through its real client.

A spec is a profile name or comma-separated ``key=value`` items, read left to right
(a profile sets every key, later items override it), e.g. ``flaky``, ``503=0.05,seed=7``
or ``hostile,outage=5m+30s``:

==================  =====================================================================
``latency=50ms``    added before every request is forwarded or answered (``ms``, ``s``, ``m``).
``bandwidth=20MB/s``  cap on body bytes, shared by all connections, each direction apart
                    (a full-duplex link): uploads together get 20 MB/s, downloads too.
                    Units B, KB, MB, GB (10^3) and KiB, MiB, GiB (2^10); ``/s`` optional.
``503=0.05``        probability a request is answered 503 (``backendError``) instead of
                    being forwarded; ``429=0.02`` the same with 429 (``rateLimitExceeded``).
                    Both answer like GCS: a JSON error body, after reading the request body.
``reset=0.02``      probability an upload (a request with a body) is cut: part of the body
                    is forwarded, then both connections are closed with SO_LINGER 0, so the
                    client sees ECONNRESET and the emulator a truncated body.
``outage=10m+2m``   from 10 min of run time, for 2 min, every new request is answered 503:
                    a GCS outage is an unhealthy frontend (5xx), not a refused connection.
                    (A dead emulator, refused connections, is :class:`~spotsim.harness.bucket.
                    EmbeddedBucket`'s part; the proxy passes it on as a reset connection.)
``seed=7``          seeds the draws (default: fresh randomness).
==================  =====================================================================

Profiles: ``none`` (forward only), ``flaky`` (``503=0.03,429=0.02,reset=0.01``), ``slow``
(``latency=50ms,bandwidth=20MB/s``), ``outage`` (``outage=10m+2m``), ``hostile`` (all at once:
``latency=20ms,bandwidth=50MB/s,503=0.03,429=0.02,reset=0.01,outage=10m+2m``).

Run time, for ``outage``, is the proxy's ``clock()``: seconds since the proxy started unless the
harness passes its simulated run time. Resumable-upload ``Location`` headers and the links in
JSON bodies name the emulator; the proxy rewrites them to itself, or a client would bypass it.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import math
import os
import random
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from spotsim.durations import parse_duration
from spotsim.errors import InvalidOption

log = logging.getLogger(__name__)

FAULT_KINDS = ("503", "429", "reset", "outage")
PROFILES = {
    "none": "",
    "flaky": "503=0.03,429=0.02,reset=0.01",
    "slow": "latency=50ms,bandwidth=20MB/s",
    "outage": "outage=10m+2m",
    "hostile": "latency=20ms,bandwidth=50MB/s,503=0.03,429=0.02,reset=0.01,outage=10m+2m",
}
_KEYS = ("latency", "bandwidth", "503", "429", "reset", "outage", "seed")
_RATE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([kmg]i?)?b?(?:/s)?$", re.IGNORECASE)
_RATE_UNITS = {None: 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}


@dataclass(frozen=True)
class FaultSpec:
    """What the proxy does to traffic; see the module docstring for the text form.

    Attributes:
        latency_s: seconds added to every request.
        bandwidth: bytes per second per direction, shared by all connections; None: uncapped.
        error_503, error_429: probability a request is answered with that status.
        reset: probability an upload's connection is reset in the middle of its body.
        outage: (start_s, length_s) of run time during which every request is answered 503.
        seed: seed of the draws; None draws fresh randomness.
    """

    latency_s: float = 0.0
    bandwidth: float | None = None
    error_503: float = 0.0
    error_429: float = 0.0
    reset: float = 0.0
    outage: tuple[float, float] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise InvalidOption(f"storage faults: latency must be a duration ≥ 0, got {self.latency_s!r}")
        if self.bandwidth is not None and not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise InvalidOption(f"storage faults: bandwidth must be a positive rate, got {self.bandwidth!r}")
        for key, p in (("503", self.error_503), ("429", self.error_429), ("reset", self.reset)):
            if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                raise InvalidOption(f"storage faults: {key}={p!r} is not a probability between 0 and 1")
        if self.error_503 + self.error_429 > 1.0:
            raise InvalidOption(f"storage faults: 503={self.error_503} and 429={self.error_429} add up to more than 1")
        if self.outage is not None:
            start, length = self.outage
            if not (math.isfinite(start) and math.isfinite(length) and start >= 0 and length > 0):
                raise InvalidOption(f"storage faults: outage must start at ≥ 0 and last > 0 s, got {self.outage!r}")

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Read a spec (``flaky``, ``503=0.05,seed=7``, ``hostile,outage=5m+30s``…).

        Raises:
            InvalidOption: an unknown profile or key, or a value out of range; one line.
        """
        if not isinstance(text, str) or not text.strip():
            raise InvalidOption(f"storage faults: empty spec; use a profile ({', '.join(PROFILES)}) or key=value items")
        values: dict[str, Any] = {}
        for item in (part.strip() for part in text.split(",")):
            if item in PROFILES:
                values = {f.name: f.default for f in fields(cls)}
                values.update(_items(PROFILES[item]) if PROFILES[item] else {})
            elif "=" in item:
                values.update(_items(item))
            else:
                raise InvalidOption(
                    f"storage faults {text!r}: {item!r} is neither a profile ({', '.join(PROFILES)}) "
                    f"nor key=value (keys: {', '.join(_KEYS)})"
                )
        return cls(**values)

    @property
    def active(self) -> bool:
        """Whether this spec does anything to traffic."""
        return self != replace(FaultSpec(), seed=self.seed)

    def in_outage(self, t: float) -> bool:
        return self.outage is not None and self.outage[0] <= t < self.outage[0] + self.outage[1]

    def describe(self) -> str:
        """The spec as text that :meth:`parse` reads back (``none`` when inactive)."""
        items = []
        if self.latency_s:
            items.append(f"latency={self.latency_s * 1000:g}ms")
        if self.bandwidth is not None:
            items.append(f"bandwidth={self.bandwidth / 1e6:g}MB/s")
        items += [
            f"{k}={p:g}" for k, p in (("503", self.error_503), ("429", self.error_429), ("reset", self.reset)) if p
        ]
        if self.outage is not None:
            items.append(f"outage={self.outage[0]:g}s+{self.outage[1]:g}s")
        if self.seed is not None:
            items.append(f"seed={self.seed}")
        return ",".join(items) if self.active else ",".join(["none", *items])


def _items(text: str) -> dict[str, Any]:
    """``key=value`` items as FaultSpec fields."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in _KEYS:
            raise InvalidOption(f"storage faults: unknown key {key!r} (keys: {', '.join(_KEYS)})")
        if key == "latency":
            values["latency_s"] = _duration(value, "latency")
        elif key == "bandwidth":
            values["bandwidth"] = _rate(value)
        elif key in ("503", "429", "reset"):
            values[{"503": "error_503", "429": "error_429"}.get(key, key)] = _probability(key, value)
        elif key == "outage":
            values["outage"] = _window(value)
        else:
            try:
                values["seed"] = int(value)
            except ValueError:
                raise InvalidOption(f"storage faults: seed={value!r} is not a whole number") from None
    return values


def _duration(text: str, what: str) -> float:
    if text.endswith("ms"):
        return parse_duration(text[:-2], f"storage faults: {what}") / 1000.0
    return parse_duration(text, f"storage faults: {what}")


def _rate(text: str) -> float:
    match = _RATE.match(text)
    if not match:
        raise InvalidOption(f"storage faults: bandwidth={text!r} is not a rate (e.g. 20MB/s, 512KiB/s)")
    unit = match.group(2).lower() if match.group(2) else None
    return float(match.group(1)) * _RATE_UNITS[unit]


def _probability(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidOption(f"storage faults: {key}={text!r} is not a probability between 0 and 1") from None


def _window(text: str) -> tuple[float, float]:
    start, plus, length = text.partition("+")
    if not plus:
        raise InvalidOption(f"storage faults: outage={text!r} is not START+LENGTH (e.g. 10m+2m)")
    return _duration(start, "outage start"), _duration(length, "outage length")


# -- the proxy ----------------------------------------------------------------

_BUFFER = 1 << 20  # bytes relayed per read
_SPLICE = hasattr(os, "splice")  # Linux: bodies move socket -> pipe -> socket inside the kernel, never copied here
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_MAX_HEAD = 64 << 10
_MAX_JSON_REWRITE = 16 << 20  # JSON bodies up to this size have the emulator's address rewritten
_ERRORS = {
    "503": ("Service Unavailable", "backendError", "We encountered an internal error. Please try again."),
    "429": ("Too Many Requests", "rateLimitExceeded", "The rate of requests exceeds the rate limit. Slow down."),
}


class _Dropped(Exception):
    """The exchange cannot go on: a peer closed or reset, or a fault cut it. Abort both connections."""


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 that injects the faults of ``spec`` into traffic to ``upstream``.

    Args:
        upstream: the emulator's URL (``http://127.0.0.1:PORT``).
        spec: the faults; :attr:`spec` may be replaced while the proxy runs.
        clock: seconds of run time, the time base of ``outage`` (default: since :meth:`start`).
        on_fault: called with ``{"fault", "method", "path"}`` for every injected fault, from a proxy thread.

    Attributes:
        counts: faults injected so far by kind (``"503"``, ``"429"``, ``"reset"``, ``"outage"``).
        requests: requests seen so far.
    """

    def __init__(
        self,
        upstream: str,
        spec: FaultSpec,
        *,
        clock: Callable[[], float] | None = None,
        on_fault: Callable[[dict], None] = lambda event: None,
    ) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise InvalidOption(f"the fault proxy needs an http://host:port upstream, got {upstream!r}")
        self.upstream = f"http://{parts.hostname}:{parts.port}"
        self._upstream_address = (parts.hostname, parts.port)
        self.on_fault = on_fault
        self.counts: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.port = 0
        self._clock = clock
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._pacers = {"up": _Pacer(), "down": _Pacer()}
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self.spec = spec

    @property
    def spec(self) -> FaultSpec:
        return self._spec

    @spec.setter
    def spec(self, spec: FaultSpec) -> None:
        with self._lock:
            self._spec = spec
            if spec.seed is not None:
                self._rng.seed(spec.seed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a client needs to reach the emulator through this proxy."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    def now(self) -> float:
        """Run time in seconds, as ``outage`` windows count it."""
        return self._clock() if self._clock is not None else time.monotonic() - self._started

    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._started = time.monotonic()
        threading.Thread(target=self._accept, args=(listener,), name=f"spotsim-faults-{self.port}", daemon=True).start()
        log.info("fault proxy %s -> %s with %s", self.url, self.upstream, self.spec.describe())
        return self

    def close(self) -> None:
        """Stop accepting and drop every open connection (their threads then end)."""
        if self._listener is not None:
            _shutdown(self._listener)  # wakes the accepting thread, which close() alone does not
            self._listener.close()
            self._listener = None
        with self._lock:
            doomed, self._open = list(self._open), set()
        for sock in doomed:
            _shutdown(sock)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- threads ----------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), name="spotsim-faults-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        connection = _Connection(self, client)
        try:
            connection.serve()
        except (_Dropped, OSError) as e:
            log.debug("proxy connection dropped: %s", e)
            connection.abort()
        except Exception:  # a proxy bug must not kill the harness, but must be seen
            log.exception("fault proxy connection failed")
            connection.abort()
        finally:
            connection.close()

    def _track(self, sock: socket.socket, *, add: bool = True) -> None:
        with self._lock:
            (self._open.add if add else self._open.discard)(sock)

    # -- decisions ----------------------------------------------------------

    def _draw(self, method: str, target: str, has_body: bool) -> tuple[str | None, float]:
        """Decide one request's fault; return it with the spec's latency."""
        spec = self.spec
        fault: str | None
        with self._lock:
            self.requests += 1
            if spec.outage is not None and spec.in_outage(self.now()):  # the run clock only when it matters
                fault = "outage"
            else:
                u = self._rng.random()
                fault = "503" if u < spec.error_503 else "429" if u < spec.error_503 + spec.error_429 else None
                if fault is None and has_body and spec.reset and self._rng.random() < spec.reset:
                    fault = "reset"
            if fault is not None:
                self.counts[fault] += 1
        if fault is not None:
            try:
                self.on_fault({"fault": fault, "method": method, "path": target.split("?", 1)[0]})
            except Exception:
                log.exception("on_fault callback failed")
        return fault, spec.latency_s

    def _cut_point(self, length: int | None) -> int:
        """How many body bytes a reset upload forwards first: anywhere before its end."""
        with self._lock:
            return self._rng.randrange(length) if length else self._rng.randrange(1, 4 * _BUFFER)

    def _pace(self, direction: str, n: int) -> None:
        rate = self.spec.bandwidth
        if rate is not None:
            self._pacers[direction].take(n, rate)


class _Pacer:
    """A shared token bucket: callers sleep so that bytes pass at ``rate`` on average."""

    _BURST_S = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0.0

    def take(self, n: int, rate: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now - self._BURST_S) + n / rate
            delay = self._next - now - self._BURST_S
        if delay > 0:
            time.sleep(delay)


class _Reader:
    """Buffered reads from one socket: heads and lines parsed, bodies passed straight through."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self._buffer: memoryview | None = None  # for bodies that are paced, cut or rewritten, so not spliced
        self._pipe: tuple[int, int] | None = None

    @property
    def _scratch(self) -> memoryview:
        if self._buffer is None:
            self._buffer = memoryview(bytearray(_BUFFER))
        return self._buffer

    def close(self) -> None:
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def head(self) -> bytes | None:
        """The next message head (through the blank line); None if the peer closed between messages."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise _Dropped("message head too large")
            if not self._fill():
                if self.buf.strip():
                    raise _Dropped("closed in the middle of a message head")
                return None
        head = bytes(self.buf[: end + 4])
        del self.buf[: end + 4]
        return head

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > _MAX_HEAD or not self._fill():
                raise _Dropped("bad or truncated chunk header")
        line = bytes(self.buf[: end + 2])
        del self.buf[: end + 2]
        return line

    def relay(self, n: int, out: Callable[[memoryview], None]) -> None:
        """Pass exactly ``n`` bytes to ``out``."""
        if self.buf:
            take = min(n, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            out(memoryview(piece))
            n -= take
        if n and _SPLICE and isinstance(out, _SocketSink) and not out.paced:
            self._splice(n, out.sock)
            return
        while n:
            got = self.sock.recv_into(self._scratch[: min(n, _BUFFER)])
            if not got:
                raise _Dropped("peer closed in the middle of a body")
            out(self._scratch[:got])
            n -= got

    def _splice(self, n: int, dst: socket.socket) -> None:
        """Move ``n`` bytes from this socket to ``dst`` through a pipe, without copying them into Python."""
        if self._pipe is None:
            self._pipe = os.pipe()
            with contextlib.suppress(OSError):  # the default pipe size works, in more calls
                fcntl.fcntl(self._pipe[1], _F_SETPIPE_SZ, _BUFFER)
        pipe_out, pipe_in = self._pipe
        src, dst_fd = self.sock.fileno(), dst.fileno()
        while n:
            got = os.splice(src, pipe_in, min(n, _BUFFER))
            if not got:
                raise _Dropped("peer closed in the middle of a body")
            n -= got
            while got:
                got -= os.splice(pipe_out, dst_fd, got)

    def relay_to_eof(self, out: Callable[[memoryview], None]) -> None:
        if self.buf:
            out(memoryview(bytes(self.buf)))
            self.buf.clear()
        while got := self.sock.recv_into(self._scratch):
            out(self._scratch[:got])

    def relay_chunked(
        self, out: Callable[[memoryview], None], at_end: Callable[[], None] = lambda: None, *, decode: bool = False
    ) -> None:
        """Pass a chunked body through unchanged, or only its data if ``decode``; ``at_end`` runs before
        its last chunk is passed."""
        frame = (lambda data: None) if decode else out
        while True:
            line = self.line()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise _Dropped(f"bad chunk size {line[:40]!r}") from None
            if size == 0:
                at_end()
                frame(memoryview(line))
                while (trailer := self.line()) != b"\r\n":
                    frame(memoryview(trailer))
                frame(memoryview(b"\r\n"))
                return
            frame(memoryview(line))
            self.relay(size, out)
            if self.line() != b"\r\n":
                raise _Dropped("chunk data not followed by CRLF")
            frame(memoryview(b"\r\n"))

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)


@dataclass
class _Head:
    """A parsed HTTP/1.1 message head: start line and headers, in order."""

    start: str
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, raw: bytes) -> _Head:
        lines = raw.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            if line:
                name, colon, value = line.partition(":")
                if not colon:
                    raise _Dropped(f"bad header line {line[:60]!r}")
                headers.append((name.strip(), value.strip()))
        return cls(lines[0], headers)

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def without(self, *names: str) -> list[tuple[str, str]]:
        lowered = {n.lower() for n in names}
        return [(k, v) for k, v in self.headers if k.lower() not in lowered]

    def encode(self, headers: list[tuple[str, str]] | None = None) -> bytes:
        lines = [self.start, *(f"{k}: {v}" for k, v in (self.headers if headers is None else headers)), "", ""]
        return "\r\n".join(lines).encode("latin-1")

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.get("Transfer-Encoding") or "").lower()

    @property
    def length(self) -> int | None:
        value = self.get("Content-Length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            raise _Dropped(f"bad Content-Length {value!r}") from None

    @property
    def wants_close(self) -> bool:
        return "close" in (self.get("Connection") or "").lower() or self.start.endswith("HTTP/1.0")


class _Connection:
    """One client connection and its upstream connection, request by request."""

    def __init__(self, proxy: FaultProxy, client: socket.socket) -> None:
        self.proxy, self.client = proxy, client
        self.reader = _Reader(client)
        self.up_reader: _Reader | None = None  # the upstream connection, while it lives

    def serve(self) -> None:
        while (raw := self.reader.head()) is not None:
            request = _Head.parse(raw)
            method, target = (request.start.split(" ") + ["", ""])[:2]
            has_body = request.chunked or bool(request.length)
            fault, latency_s = self.proxy._draw(method, target, has_body)
            if latency_s:
                time.sleep(latency_s)
            if (request.get("Expect") or "").lower() == "100-continue":
                self._send_client(b"HTTP/1.1 100 Continue\r\n\r\n")
            if fault in ("503", "429", "outage"):
                self._relay_body(request, lambda data: self.proxy._pace("up", len(data)))  # read and dropped
                self._answer_error("503" if fault == "outage" else fault, fault, request.wants_close)
                keep = not request.wants_close
            else:
                keep = self._forward(method, request, cut=fault == "reset")
            if not keep:
                return

    def _forward(self, method: str, request: _Head, *, cut: bool) -> bool:
        """Send one request upstream and its answer back; return whether both connections stay open."""
        up = self._upstream()
        up.sock.sendall(request.encode(request.without("Expect")))
        out: _SocketSink | _Cutoff = _SocketSink(self.proxy, up.sock, "up")
        if cut:
            out = _Cutoff(out, self.proxy._cut_point(None if request.chunked else request.length))
        self._relay_body(request, out, at_end=getattr(out, "end", lambda: None))
        while True:
            raw = up.head()
            if raw is None:
                raise _Dropped("upstream closed before answering")
            response = _Head.parse(raw)
            status = int(response.start.split(" ")[1]) if response.start.count(" ") else 0
            if not 100 <= status < 200:
                break
            if status != 100:  # 100 Continue was already given to the client
                self._send_client(raw)
        return self._relay_response(up, method, response, status) and not request.wants_close

    def _relay_response(self, up: _Reader, method: str, response: _Head, status: int) -> bool:
        headers = [(k, self._rewrite(v) if k.lower() == "location" else v) for k, v in response.headers]
        bodiless = method == "HEAD" or status in (204, 304)
        length = None if bodiless else response.length
        is_json = "json" in (response.get("Content-Type") or "").lower()
        to_client = _SocketSink(self.proxy, self.client, "down")
        if not bodiless and is_json and (response.chunked or (length is not None and length <= _MAX_JSON_REWRITE)):
            received = bytearray()
            if response.chunked:
                up.relay_chunked(received.extend, decode=True)
            elif length is not None:
                up.relay(length, received.extend)
            body = self._rewrite(received.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
            headers = [*_Head(response.start, headers).without("Content-Length", "Transfer-Encoding")]
            headers.append(("Content-Length", str(len(body))))
            self._send_client(response.encode(headers))
            to_client(memoryview(body))
            return not response.wants_close
        self._send_client(response.encode(headers))
        if bodiless:
            pass
        elif response.chunked:
            up.relay_chunked(to_client)
        elif length is not None:
            up.relay(length, to_client)
        else:  # delimited by the upstream closing
            up.relay_to_eof(to_client)
            return False
        return not response.wants_close

    def _relay_body(self, request: _Head, out, at_end: Callable[[], None] = lambda: None) -> None:
        if request.chunked:
            self.reader.relay_chunked(out, at_end)
        elif request.length:
            self.reader.relay(request.length, out)
            at_end()

    def _answer_error(self, status: str, fault: str, close: bool) -> None:
        reason, why, message = _ERRORS[status]
        error = {"message": message, "domain": "global", "reason": why}
        body = json.dumps({"error": {"code": int(status), "message": message, "errors": [error]}}).encode()
        head = _Head(
            f"HTTP/1.1 {status} {reason}",
            [
                ("Content-Type", "application/json; charset=UTF-8"),
                ("Content-Length", str(len(body))),
                ("X-Spotsim-Fault", fault),
                *([("Connection", "close")] if close else []),
            ],
        )
        self._send_client(head.encode() + body)

    def _upstream(self) -> _Reader:
        """The upstream connection, reused while it lives; a new one if the emulator closed it."""
        if self.up_reader is not None and select.select([self.up_reader.sock], [], [], 0)[0]:
            self._drop_upstream()  # readable while idle: the emulator closed it
        if self.up_reader is None:
            try:
                sock = socket.create_connection(self.proxy._upstream_address, timeout=10)
            except OSError as e:  # a client cannot see a refused connect through a proxy: a reset is closest
                raise _Dropped(f"upstream {self.proxy.upstream} unreachable: {e}") from e
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.proxy._track(sock)
            self.up_reader = _Reader(sock)
        return self.up_reader

    def _rewrite(self, text: str) -> str:
        return text.replace(self.proxy.upstream, self.proxy.url)

    def _send_client(self, data: bytes) -> None:
        self.client.sendall(data)

    def abort(self) -> None:
        """Reset both connections (SO_LINGER 0): the client sees ECONNRESET, the emulator a cut body."""
        upstream = self.up_reader.sock if self.up_reader is not None else None
        for sock in (self.client, upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self._drop_upstream()
        self.proxy._track(self.client, add=False)
        self.reader.close()
        self.client.close()

    def _drop_upstream(self) -> None:
        if self.up_reader is not None:
            self.proxy._track(self.up_reader.sock, add=False)
            self.up_reader.close()
            self.up_reader.sock.close()
            self.up_reader = None


class _SocketSink:
    """Bytes out to one socket, paced to the spec's bandwidth when it has one."""

    def __init__(self, proxy: FaultProxy, sock: socket.socket, direction: str) -> None:
        self.proxy, self.sock, self.direction = proxy, sock, direction

    @property
    def paced(self) -> bool:
        return self.proxy.spec.bandwidth is not None

    def __call__(self, data: memoryview) -> None:
        rate = self.proxy.spec.bandwidth
        if rate is None:
            self.sock.sendall(data)
            return
        step = max(16 << 10, int(rate / 50))  # small slices pace smoothly
        for lo in range(0, len(data), step):
            piece = data[lo : lo + step]
            self.proxy._pace(self.direction, len(piece))
            self.sock.sendall(piece)


class _Cutoff:
    """Passes on the first ``after`` bytes of a body, then raises :class:`_Dropped`: an injected reset."""

    def __init__(self, out: Callable[[memoryview], None], after: int) -> None:
        self.out, self.left = out, after

    def __call__(self, data: memoryview) -> None:
        if len(data) < self.left:
            self.out(data)
            self.left -= len(data)
            return
        if self.left:
            self.out(data[: self.left])
        raise _Dropped("injected reset in the middle of an upload")

    def end(self) -> None:
        raise _Dropped("injected reset before the end of an upload")


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
