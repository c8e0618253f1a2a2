"""The one place that decides what is worth retrying, and for how long.

Only transient failures are retried: throttling (429), server errors (5xx)
and broken or refused connections. Everything else (404, 403, 412, bad
requests) fails at once so the caller sees it.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable

import requests
import urllib3.exceptions
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    ConnectionError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    http.client.IncompleteRead,
    http.client.BadStatusLine,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` is a failure that may succeed if tried again."""
    if isinstance(exc, auth_exceptions.TransportError) and exc.args:
        inner = exc.args[0]
        return isinstance(inner, BaseException) and is_transient(inner)
    return isinstance(exc, _TRANSIENT_TYPES)


TRANSFER_TIMEOUT_S = 60.0  # transfers ride out a minute of throttling or a store restart
OPEN_TIMEOUT_S = 4.0  # opening a store: an unreachable endpoint should be reported within seconds


def transfer_retry(
    timeout: float | None = TRANSFER_TIMEOUT_S, on_error: Callable[[Exception], None] | None = None
) -> Retry:
    """The retry policy of every transfer: exponential backoff from 0.25 s to 8 s, transient errors only.

    Args:
        timeout: seconds after the first try past which no retry starts (a try never is cut short).
        on_error: called with each transient failure caught, before the backoff sleep; a store counts them.
    """
    return Retry(predicate=is_transient, initial=0.25, maximum=8.0, multiplier=2.0, timeout=timeout, on_error=on_error)
