"""The storage backend interface: a handful of primitives every store implements.

Public methods validate their arguments once, here, and delegate to the
underscore primitives a backend implements. Everything built on stores
(checkpoint commit, retention, latest step) uses only these methods.
"""

from __future__ import annotations

import builtins
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from spotsim.errors import InvalidKey

# Object names whose segment starts with this belong to spotsim itself
# (temporary files, upload parts): never listed, never accepted as user keys.
RESERVED_PREFIX = ".spotsim-"


MAX_KEY_BYTES = 1024  # GCS's own limit on object names, applied to every backend


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKey`.

    A key is a ``/``-separated relative path: non-empty, no empty, ``.`` or
    ``..`` segments (so it can never escape the store root), no backslashes or
    control characters, and no segment in spotsim's reserved namespace.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey("key must not be empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key is longer than {MAX_KEY_BYTES} bytes: {key[:60]!r}…")
    if any(ord(ch) < 32 or ch in "\\\x7f" for ch in key):
        raise InvalidKey(f"key {key!r} contains a backslash or control character")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(
                f"key {key!r} has an empty, '.' or '..' segment; keys are relative paths that stay inside the store"
            )
        if segment.startswith(RESERVED_PREFIX):
            raise InvalidKey(f"key {key!r} uses the reserved name prefix {RESERVED_PREFIX!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Validate a listing prefix: empty, or a key-like string (a trailing ``/`` is allowed)."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Store(ABC):
    """A flat namespace of immutable-once-written byte objects under one URI.

    Guarantees shared by all backends: a reader never observes a partially
    written object (it sees the old bytes, the new bytes, or no object), and
    :meth:`create_if_absent` has exactly one winner among racing writers.
    That call is the commit: a checkpoint writes its payload objects first and
    becomes visible when its manifest is created with :meth:`create_if_absent`.

    A backend implements :meth:`from_uri` and the underscore primitives, and is
    registered for its URI scheme (:func:`spotsim.storage.register_backend`).
    """

    scheme: ClassVar[str]

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str, **options: Any) -> Store:
        """Open the store that ``uri`` names; :func:`spotsim.storage.open_store` calls this.

        Args:
            uri: a URI of this backend's scheme.
            options: backend settings (``endpoint=`` for ``gs://``…); a backend refuses any it does not know.

        Raises:
            InvalidURI: ``uri`` is malformed for this backend.
            TypeError: an option this backend does not take.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 (a backend with nothing to release keeps this no-op)
        """Release connections or threads; the store is unusable afterwards."""

    # -- public API: validate once, then delegate --------------------------

    def put_bytes(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` under ``key``, replacing any existing object atomically."""
        self._put_bytes(check_key(key), memoryview(data).cast("B"))

    def get_bytes(self, key: str) -> bytes:
        """Return the object's bytes; raise ``ObjectNotFound`` if there is none."""
        return self._get_bytes(check_key(key))

    def get_buffer(self, key: str) -> memoryview:
        """Like :meth:`get_bytes`, as a writable buffer that arrays can view without a copy.

        Large objects land in uninitialised memory: zero-filling it first would
        be a wasted pass over every byte the download then writes.
        """
        return self._get_buffer(check_key(key))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Upload the local file at ``path`` as ``key``, replacing atomically."""
        self._put_file(check_key(key), Path(path))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Download ``key`` to ``path``; ``path`` appears only once complete."""
        self._get_file(check_key(key), Path(path))

    def list(self, prefix: str = "") -> list[str]:
        """Return the sorted keys that start with ``prefix`` (a plain string prefix)."""
        return sorted(self._list(check_prefix(prefix)))

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""
        return self._exists(check_key(key))

    def delete(self, key: str, *, missing_ok: bool = False) -> None:
        """Delete ``key``; raise ``ObjectNotFound`` if absent unless ``missing_ok``."""
        self._delete(check_key(key), missing_ok)

    def create_if_absent(self, key: str, data: bytes | bytearray | memoryview) -> bool:
        """Write ``data`` under ``key`` only if no object exists there.

        Returns True if this call created the object, False if one already
        existed. Among any number of racing writers, threads or processes,
        exactly one gets True and the stored bytes are that writer's.
        """
        return self._create_if_absent(check_key(key), memoryview(data).cast("B"))

    def clean_partial_writes(self, older_than_s: float = 3600.0) -> int:
        """Delete temporaries left by writers that died mid-write; return how many.

        Only those older than ``older_than_s`` go, so live writers are not disturbed.
        """
        return 0

    # -- primitives each backend implements --------------------------------

    def _get_buffer(self, key: str) -> memoryview:
        return memoryview(bytearray(self._get_bytes(key)))

    @abstractmethod
    def _put_bytes(self, key: str, data: memoryview) -> None: ...

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def _put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def _get_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> builtins.list[str]: ...  # `list` here is the method above

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _delete(self, key: str, missing_ok: bool) -> None: ...

    @abstractmethod
    def _create_if_absent(self, key: str, data: memoryview) -> bool: ...


def empty_buffer(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes, not zero-filled: a zero-fill is a wasted pass over
    memory that a download or snapshot overwrites anyway."""
    return np.empty(size, dtype=np.uint8).data
