"""PreemptionWatcher: turn a preemption notice into a flag the training loop checks.

Notices come from signals (SIGTERM is what GCE, AWS, Kubernetes and the spotsim
harness send; SIGINT is Ctrl-C) and, optionally, from polling the cloud
metadata servers, which announce a preemption before the signal arrives:

- GCE: ``GET {gce_base}/computeMetadata/v1/instance/preempted`` with header
  ``Metadata-Flavor: Google`` answers ``TRUE`` once the VM is being preempted.
- AWS: ``GET {aws_base}/latest/meta-data/spot/instance-action`` answers 200
  (with the action and time) once a spot interruption is scheduled, 404 before.

The loop then saves an ``emergency`` checkpoint and exits 0 inside the grace
period instead of being killed mid-step.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import urllib.error
import urllib.request

from spotsim.events import EventLog

log = logging.getLogger(__name__)

GCE_METADATA_BASE = "http://metadata.google.internal"
AWS_METADATA_BASE = "http://169.254.169.254"
GCE_PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"
AWS_ACTION_PATH = "/latest/meta-data/spot/instance-action"


class PreemptionWatcher:
    """Catch preemption notices; check :attr:`preempted` in the training loop.

    Args:
        signals: signals that mean "you are being preempted" (handled, not fatal).
        gce_base, aws_base: metadata server base URLs to poll, or None not to poll
            that cloud. Use :data:`GCE_METADATA_BASE` / :data:`AWS_METADATA_BASE`
            on real VMs; tests point them at a local server.
        poll_interval_s: seconds between metadata polls.
        events: where to log the notice (default ``SPOTSIM_EVENTS`` if set).
    """

    def __init__(
        self,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        *,
        gce_base: str | None = None,
        aws_base: str | None = None,
        poll_interval_s: float = 1.0,
        events: EventLog | None = None,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        self.signals = signals
        self.gce_base, self.aws_base = gce_base, aws_base
        self.poll_interval_s = poll_interval_s
        self.events = events if events is not None else EventLog.from_env()
        self.reason: str | None = None
        self.noticed_at: float | None = None
        self._flag = threading.Event()
        self._stop = threading.Event()
        self._previous_handlers: dict[int, object] = {}
        self._poller: threading.Thread | None = None

    @property
    def preempted(self) -> bool:
        return self._flag.is_set()

    def start(self) -> PreemptionWatcher:
        """Install the signal handlers (main thread only) and start polling, if configured."""
        for sig in self.signals:
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        if self.gce_base or self.aws_base:
            self._poller = threading.Thread(target=self._poll, name="spotsim-preemption-poll", daemon=True)
            self._poller.start()
        return self

    def stop(self) -> None:
        """Restore the previous signal handlers and stop polling."""
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None

    def __enter__(self) -> PreemptionWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a notice arrives (or ``timeout``); return whether one did."""
        return self._flag.wait(timeout)

    def notify(self, reason: str) -> None:
        """Record a notice (first one wins) and raise the flag."""
        if self._flag.is_set():
            return
        self.reason, self.noticed_at = reason, time.time()
        self._flag.set()
        log.warning("preemption notice: %s", reason)
        if self.events:
            self.events.emit("preemption_notice", reason=reason)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.notify(signal.Signals(signum).name)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s) and not self._flag.is_set():
            if self.gce_base and _gce_preempted(self.gce_base):
                self.notify("GCE metadata: instance/preempted is TRUE")
            elif self.aws_base and _aws_action_scheduled(self.aws_base):
                self.notify("AWS metadata: spot instance-action scheduled")


def _get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return resp.status, resp.read(256).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""  # metadata server unreachable: no notice, try again next poll


def _gce_preempted(base: str) -> bool:
    status, body = _get(base.rstrip("/") + GCE_PREEMPTED_PATH, {"Metadata-Flavor": "Google"})
    return status == 200 and body.strip().upper() == "TRUE"


def _aws_action_scheduled(base: str) -> bool:
    status, _ = _get(base.rstrip("/") + AWS_ACTION_PATH, {})
    return status == 200
