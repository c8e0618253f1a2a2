"""What the three clouds' metadata servers share: the request log entry, a parsed request, an answer, and the
interface each cloud's VM state implements for :class:`~spotsim.metadata.server.MetadataServer`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, overload


@dataclass(frozen=True)
class MetadataRequest:
    """One request the job made to the metadata server, for the run log.

    ``notice`` says the answer carried a preemption notice: GCE ``preempted`` TRUE (or a TERMINATE
    ``maintenance-event``), AWS ``instance-action``/``termination-time`` 200, an Azure document with a Preempt event.
    """

    t: float  # time.time() when it was answered (a long-poll: when the value flipped, or its timeout)
    cloud: str
    method: str
    path: str  # path and query as sent
    status: int
    notice: bool

    def to_event(self) -> dict:
        """The run-log fields (the harness adds ``t``, ``event`` and ``attempt``)."""
        return {
            "cloud": self.cloud,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "notice": self.notice,
        }


class Headers(Protocol):
    """A request's headers, looked up by name regardless of case (the server passes an ``email.message.Message``)."""

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str, /) -> str: ...


@dataclass(frozen=True)
class Request:
    """A request as a cloud's state sees it: path and query apart, headers case-insensitive."""

    t: float
    method: str
    path: str
    query: Mapping[str, str]
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True)
class Answer:
    status: int
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    notice: bool = False


class CloudMetadata(ABC):
    """One VM's metadata as one cloud serves it.

    Called from the harness thread (``new_vm``, ``notice``…) and from the server's request threads (``answer``),
    so implementations guard their state with a lock.
    """

    cloud: ClassVar[str]
    server_header: ClassVar[str] = "spotsim-metadata"  # the ``Server`` header, where the real service's is known

    def __init__(self, *, preemptible: bool) -> None:
        self.preemptible = preemptible

    @abstractmethod
    def answer(self, request: Request) -> Answer: ...

    @abstractmethod
    def env(self, url: str) -> dict[str, str]:
        """The variables the cloud's own clients read to find a metadata server at ``url``."""

    @abstractmethod
    def new_vm(self) -> None: ...

    @abstractmethod
    def notice(self, deadline: float, event_id: str | None) -> None: ...

    def rebalance(self, notice_time: float) -> None:  # noqa: B027 (a hook: only AWS overrides it)
        """AWS's rebalance recommendation; the other clouds have no such signal, so nothing changes."""

    def approved_at(self) -> float | None:
        """When the job approved the pending event (Azure only)."""
        return None

    def close(self) -> None:  # noqa: B027 (a hook: only GCE long-polls)
        """Wake every waiting long-poll: the server is stopping."""


def listing(keys: Iterable[str], directory: str) -> list[str]:
    """The entries right under ``directory`` ("" or ending in "/") of a flat key space, sub-directories with a
    trailing "/", as GCE and IMDS list directories; empty when there is no such directory."""
    entries: dict[str, None] = {}
    for key in keys:
        if key.startswith(directory) and key != directory:
            head, slash, _ = key[len(directory) :].partition("/")
            entries[head + slash] = None
    return list(entries)
