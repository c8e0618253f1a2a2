"""PreemptionWatcher: turn a preemption notice into a flag the training loop checks.

Notices come from signals (SIGTERM is what GCE, AWS, Azure, Kubernetes and the spotsim harness send; SIGINT is
Ctrl-C) and from the cloud's metadata server, which announces a preemption before the signal arrives:

- GCE: ``instance/preempted`` becomes TRUE; watched with a ``?wait_for_change=true`` long-poll, so the notice
  arrives the moment it is given. GCE gives no deadline.
- AWS: ``spot/instance-action`` answers 200 with the action and its fixed ``time`` (the deadline); polled with
  IMDSv2 tokens. The rebalance recommendation, an earlier and softer warning, is recorded in :attr:`rebalance`
  and logged as ``rebalance_recommendation`` but does not raise the flag.
- Azure: Scheduled Events lists a ``Preempt`` event whose ``NotBefore`` is the deadline. With ``approve=True``,
  :meth:`PreemptionWatcher.approve` (called after the emergency checkpoint) tells Azure to evict now rather than
  at NotBefore, so the VM stops, and the next one can start, that much sooner.

The loop then saves an ``emergency`` checkpoint and exits 0 inside the grace period instead of being killed
mid-step. The HTTP side of each cloud lives in :mod:`spotsim.metadata.clients`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeAlias

from spotsim.events import PREEMPTION_APPROVAL, PREEMPTION_NOTICE, REBALANCE_RECOMMENDATION, EventLog
from spotsim.metadata.clients import AzureClient, MetadataClient, Notice, client, discover

log = logging.getLogger(__name__)

MIN_POLL_REAL_S = 0.02  # at a high K, polls stay this far apart: each one is a request in the run log
_SignalHandler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None  # signal.signal's


def _on_the_run_clock(poll_interval_s: float) -> float:
    """The real seconds between polls: ``poll_interval_s`` of the run's simulated time under the harness."""
    try:
        k = float(os.environ.get("SPOTSIM_TIME_SCALE") or 1.0)
    except ValueError:
        k = 1.0
    return poll_interval_s if k <= 1.0 else max(min(MIN_POLL_REAL_S, poll_interval_s), poll_interval_s / k)


class PreemptionWatcher:
    """Catch preemption notices; check :attr:`preempted` in the training loop.

    Args:
        signals: signals that mean "you are being preempted" (handled, not fatal).
        cloud: which metadata server to watch. ``"auto"`` (the default) finds it from the variables the cloud
            SDKs read, ``GCE_METADATA_HOST`` (google-auth), ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore), or
            spotsim's ``SPOTSIM_METADATA_URL`` with ``SPOTSIM_METADATA_CLOUD`` (Azure when unset; Azure's clients
            have no such variable); with none set it watches signals only. On a real VM pass ``"gce"``, ``"aws"``
            or ``"azure"`` to watch that cloud's real address. None: signals only.
        gce_base, aws_base, azure_base: explicit metadata server base URLs; any of them replaces ``cloud``.
        poll_interval_s: seconds between polls (AWS, Azure), and before retrying a failed GCE long-poll. AWS
            recommends 5 s and Azure 1 s. Under the harness they are simulated seconds: divided by the run's
            ``SPOTSIM_TIME_SCALE`` K (no faster than every :data:`MIN_POLL_REAL_S`), as a loop polling every second
            on the VM would be seen on the compressed clock.
        approve: Azure only: let :meth:`approve` approve the Preempt event (off by default, as approving ends the VM).
        events: where to log the notice (default ``SPOTSIM_EVENTS`` if set).

    Attributes:
        reason, noticed_at: the first notice and when it came (``time.time()``).
        deadline: unix time of the stop, when a metadata notice gave one (AWS, Azure); else None.
        notice: the metadata notice that raised the flag, if one did.
        rebalance: AWS's rebalance recommendation, once seen.
        poll_interval_real_s: ``poll_interval_s`` on the run's clock: the real seconds between polls.

    Raises:
        InvalidOption: an unknown ``cloud`` (or ``SPOTSIM_METADATA_CLOUD``), or a base URL that is not http.
    """

    def __init__(
        self,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        *,
        cloud: str | None = "auto",
        gce_base: str | None = None,
        aws_base: str | None = None,
        azure_base: str | None = None,
        poll_interval_s: float = 1.0,
        approve: bool = False,
        events: EventLog | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        self.signals = signals
        explicit = {"gce": gce_base, "aws": aws_base, "azure": azure_base}
        self.sources = {c: b for c, b in explicit.items() if b} or discover(cloud, os.environ)
        self.poll_interval_real_s = _on_the_run_clock(poll_interval_s)
        self.events = events if events is not None else EventLog.from_env()
        self.reason: str | None = None
        self.noticed_at: float | None = None
        self.deadline: float | None = None
        self.notice: Notice | None = None
        self.rebalance: Notice | None = None
        self._approve = approve
        self._event_id: str | None = None
        self._flag = threading.Event()
        self._first = threading.Lock()  # taken once, by the first notice, and never given back
        self._stop = threading.Event()
        self._previous_handlers: dict[int, _SignalHandler] = {}
        self._clients = self._make_clients()  # here, so that a bad address fails now rather than in start()
        self._pollers: list[threading.Thread] = []

    @property
    def preempted(self) -> bool:
        return self._flag.is_set()

    def start(self) -> PreemptionWatcher:
        """Install the signal handlers (main thread only) and start watching the metadata servers, if any."""
        for sig in self.signals:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        self._stop.clear()
        self._clients = self._clients or self._make_clients()  # stop() closed the earlier ones
        for cloud, watched in self._clients.items():
            poller = threading.Thread(target=self._watch, args=(watched,), name=f"spotsim-preemption-{cloud}")
            poller.daemon = True
            poller.start()
            self._pollers.append(poller)
        return self

    def stop(self) -> None:
        """Restore the previous signal handlers and stop watching (a pending long-poll is aborted)."""
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        self._stop.set()
        for watched in self._clients.values():
            watched.close()
        for poller in self._pollers:
            poller.join(timeout=5)
        self._clients = {}
        self._pollers.clear()

    def __enter__(self) -> PreemptionWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a notice arrives (or ``timeout``); return whether one did."""
        return self._flag.wait(timeout)

    def notify(self, reason: str, *, cloud: str | None = None, deadline: float | None = None) -> None:
        """Record a notice (the first one wins) and raise the flag."""
        self._record(reason, cloud, deadline, None)

    def _record(self, reason: str, cloud: str | None, deadline: float | None, notice: Notice | None) -> None:
        # Never blocks: a signal handler may run on the main thread in the middle of this very call.
        if not self._first.acquire(blocking=False):
            return
        self.reason, self.noticed_at, self.deadline, self.notice = reason, time.time(), deadline, notice
        self._flag.set()
        left = "" if deadline is None else f" ({deadline - self.noticed_at:.1f} s to the deadline)"
        log.warning("preemption notice: %s%s", reason, left)
        if self.events:
            known = {k: v for k, v in {"cloud": cloud, "deadline": deadline}.items() if v is not None}
            self.events.emit(PREEMPTION_NOTICE, reason=reason, **known)

    def approve(self) -> bool:
        """Azure: tell the cloud the VM may be evicted now; call it after the emergency checkpoint.

        Does anything only with ``approve=True`` while watching Azure, once a Preempt event is known (if a signal
        came first, the event is looked up now). Returns whether Azure accepted the approval.
        """
        azure = next((c for c in self._clients.values() if isinstance(c, AzureClient)), None)
        if not self._approve or azure is None:
            return False
        event_id = self._event_id or next((n.event_id for n in azure.check() if n.event_id), None)
        if event_id is None:
            return False
        accepted = azure.approve(event_id)
        log.warning("preemption approval of Azure event %s: %s", event_id, "accepted" if accepted else "refused")
        if self.events:
            self.events.emit(PREEMPTION_APPROVAL, cloud="azure", event_id=event_id, accepted=accepted)
        return accepted

    def _make_clients(self) -> dict[str, MetadataClient]:
        return {
            cloud: client(cloud, base, poll_interval_s=self.poll_interval_real_s)
            for cloud, base in self.sources.items()
        }

    def _on_signal(self, signum: int, frame: object) -> None:
        self.notify(signal.Signals(signum).name)

    def _watch(self, watched: MetadataClient) -> None:
        while not self._stop.is_set() and not self._flag.is_set():
            started = time.monotonic()
            for notice in watched.check():
                self._on_notice(notice)
            self._stop.wait(max(0.0, watched.pause_s - (time.monotonic() - started)))

    def _on_notice(self, notice: Notice) -> None:
        if notice.rebalance:
            if self.rebalance is None:
                self.rebalance = notice
                log.warning("%s: the instance is at elevated risk of interruption", notice.reason)
                if self.events:
                    self.events.emit(REBALANCE_RECOMMENDATION, cloud=notice.cloud, notice_time=notice.issued_at)
            return
        self._event_id = self._event_id or notice.event_id
        self._record(notice.reason, notice.cloud, notice.deadline, notice)
