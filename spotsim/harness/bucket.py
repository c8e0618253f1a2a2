"""The run's bucket, supervised: the embedded emulator, optionally behind a fault proxy, restarted if it dies.

A job's save that fails because the emulator died is the harness's failure, not the job's.
:class:`EmbeddedBucket` owns the emulator for one run; the harness calls :meth:`~EmbeddedBucket.check`
from its supervision loop, which brings a dead emulator back on the same root and port (committed
objects survive on the root) and reports the outage, and uses :meth:`~EmbeddedBucket.overlaps` to
tell whether an attempt's crash fell inside one.

    with EmbeddedBucket(faults=FaultSpec.parse("flaky"), clock=run_clock) as bucket:
        env = os.environ | bucket.env() | contract_env(bucket.uri_prefix)
        while job_runs():
            events += bucket.check() + bucket.drain_faults()
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from spotsim.errors import EmulatorError
from spotsim.events import STORAGE_OUTAGE
from spotsim.storage.emulator import FakeGcsServer, ensure_bucket
from spotsim.storage.faults import FaultProxy, FaultSpec

DEFAULT_BUCKET = "spotsim-runs"


class EmbeddedBucket:
    """The embedded emulator on a temporary root, its bucket created, optionally behind a :class:`FaultProxy`.

    Args:
        bucket: the bucket to create.
        faults: put a fault proxy with this spec between the job and the emulator; None: no proxy.
        clock: run time in seconds for the proxy's ``outage`` windows (the harness passes simulated time).
        root: the emulator's data directory (default: a temporary one, removed on exit).

    Attributes:
        uri_prefix: a fresh ``gs://bucket/<id>`` for this run's checkpoints.
        down_since: while the emulator is down, the last time (``time.time()``) it was seen alive; else None.
        outages: (down_since, restarted_at) of every emulator outage so far.
        emulator, proxy: the parts, for tests and diagnostics.
    """

    def __init__(
        self,
        *,
        bucket: str = DEFAULT_BUCKET,
        faults: FaultSpec | None = None,
        clock: Callable[[], float] | None = None,
        root: str | Path | None = None,
    ) -> None:
        self.bucket, self.faults, self._clock = bucket, faults, clock
        self.uri_prefix = f"gs://{bucket}/{uuid.uuid4().hex[:12]}"
        self.down_since: float | None = None
        self.outages: list[tuple[float, float]] = []
        self.emulator: FakeGcsServer | None = None
        self.proxy: FaultProxy | None = None
        self._root = root
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._last_alive = 0.0
        self._cause = ""
        self._fault_events: list[dict] = []
        self._lock = threading.Lock()

    def start(self) -> EmbeddedBucket:
        root = self._root
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="spotsim-bucket-")
            root = self._tmp.name
        try:
            self.emulator = FakeGcsServer(Path(root)).start()
            ensure_bucket(self.emulator.url, self.bucket)  # a job using the plain client expects the bucket to exist
            if self.faults is not None:
                self.proxy = FaultProxy(self.emulator.url, self.faults, clock=self._clock, on_fault=self._record_fault)
                self.proxy.start()
        except BaseException:
            self.close()
            raise
        self._last_alive = time.time()
        return self

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.emulator is not None:
            self.emulator.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBucket:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """What jobs talk to: the proxy when there is one, else the emulator."""
        return self.proxy.url if self.proxy is not None else self._started().url

    def env(self) -> dict[str, str]:
        """The job's storage environment: ``STORAGE_EMULATOR_HOST`` pointing at :attr:`url`."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    def check(self) -> list[dict]:
        """Restart the emulator if it died; return what happened as run-log events.

        Cheap when all is well (one ``poll``); call it every 20 ms–1 s. A restart blocks
        until the emulator answers again (a fraction of a second; at most ~15 s). One
        ``storage_outage`` event per outage, once it is over: ``cause``, ``down_since``
        (the last time it was seen alive, so the window errs wide), ``down_s`` and
        ``restarted`` (True). If the restart fails, the event says ``restarted: False``
        with the ``error``, :attr:`down_since` stays set and the next call tries again.
        """
        now = time.time()
        emulator = self._started()
        if emulator.alive():
            self._last_alive = now
            return []
        if self.down_since is None:  # first noticed now
            code = emulator.exit_code()
            self._cause = "emulator process gone" if code is None else f"emulator exited with code {code}"
            self.down_since = self._last_alive
        outage = {"event": STORAGE_OUTAGE, "cause": self._cause, "down_since": self.down_since}
        try:
            emulator.restart()
        except Exception as e:
            return [{"t": time.time(), **outage, "restarted": False, "error": str(e)}]
        restarted_at = time.time()
        down_s = round(restarted_at - self.down_since, 3)
        event = {"t": restarted_at, **outage, "down_s": down_s, "restarted": True}
        self.outages.append((self.down_since, restarted_at))
        self.down_since, self._last_alive = None, restarted_at
        return [event]

    def _started(self) -> FakeGcsServer:
        if self.emulator is None:
            raise EmulatorError("the bucket's emulator is not started: use start() or a with block")
        return self.emulator

    def overlaps(self, start: float, end: float) -> bool:
        """Whether the emulator was down at any time in [start, end] (``time.time()`` values)."""
        windows = [*self.outages, *([(self.down_since, time.time())] if self.down_since is not None else [])]
        return any(lo <= end and start <= hi for lo, hi in windows)

    @contextlib.contextmanager
    def faults_off(self) -> Iterator[None]:
        """No faults for a while (the probe measures the job, not the bucket's failures)."""
        if self.proxy is None:
            yield
            return
        spec, self.proxy.spec = self.proxy.spec, FaultSpec()
        try:
            yield
        finally:
            self.proxy.spec = spec

    def drain_faults(self) -> list[dict]:
        """The proxy's injected faults since the last call, each ``{"t", "fault", "method", "path"}``."""
        with self._lock:
            events, self._fault_events = self._fault_events, []
        return events

    def _record_fault(self, event: dict) -> None:
        with self._lock:
            self._fault_events.append({"t": time.time(), **event})
