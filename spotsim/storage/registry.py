"""Choose a store backend by URI scheme, importing it only when first used.

Backends are listed here by ``"module:Class"``, so ``import spotsim`` stays
cheap and a missing package becomes one clear line naming what to install.
:func:`register_backend` adds a scheme the same way.
"""

from __future__ import annotations

import importlib
import re
from urllib.parse import urlsplit

from spotsim.errors import InvalidOption, InvalidURI, MissingDependency
from spotsim.storage.base import Store

# scheme -> ("module:Class", what to install if the module's imports fail). google-cloud-storage is a
# core dependency (see pyproject.toml), so its absence means a broken install, not a missing extra.
KNOWN_BACKENDS: dict[str, tuple[str, str]] = {
    "file": ("spotsim.storage.local:FileStore", "spotsim"),
    "gs": ("spotsim.storage.gcs:GCSStore", "google-cloud-storage (a core dependency: pip install spotsim)"),
}

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def register_backend(scheme: str, target: str, *, install: str | None = None, replace: bool = False) -> None:
    """Open ``scheme://`` URIs with the :class:`Store` subclass ``target`` (``"module:Class"``).

    The module is imported on the first :func:`open_store` of that scheme, not here.

    Args:
        scheme: a lowercase URI scheme such as ``s3``.
        target: where the class lives, e.g. ``"mypkg.stores:S3Store"``.
        install: what to install when importing ``target`` fails (say, ``"pip install 'mypkg[s3]'"``).
        replace: allow replacing a scheme that is already registered.

    Raises:
        InvalidOption: a malformed scheme or target, or a scheme taken and ``replace`` not set.
    """
    if not _SCHEME.match(scheme):
        raise InvalidOption(f"store scheme {scheme!r} is not a lowercase URI scheme such as 's3'")
    if not _TARGET.match(target):
        raise InvalidOption(f"store backend {target!r} is not 'module:Class'")
    if scheme in KNOWN_BACKENDS and not replace:
        raise InvalidOption(f"{scheme}:// stores are already {KNOWN_BACKENDS[scheme][0]}; pass replace=True")
    module = target.partition(":")[0]
    KNOWN_BACKENDS[scheme] = (target, install or f"the package that provides {module}")


def open_store(uri: str, **options: object) -> Store:
    """Open the store named by ``uri`` (``file:///abs/dir`` or ``gs://bucket/prefix``).

    ``options`` go to the backend's :meth:`Store.from_uri` (e.g. ``endpoint=`` or
    ``workers=`` for ``gs://``).

    Raises:
        InvalidURI: unknown scheme or malformed URI.
        MissingDependency: the backend's packages are not installed.
    """
    if not isinstance(uri, str) or not uri:
        raise InvalidURI("store URI must be a non-empty string such as file:///abs/dir or gs://bucket/prefix")
    scheme = urlsplit(uri).scheme
    if scheme not in KNOWN_BACKENDS:
        known = ", ".join(f"{s}://" for s in KNOWN_BACKENDS)
        raise InvalidURI(f"unsupported store URI {uri!r}: spotsim stores support {known}")
    return _backend(scheme).from_uri(uri, **options)


def _backend(scheme: str) -> type[Store]:
    target, install = KNOWN_BACKENDS[scheme]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MissingDependency(f"{scheme}:// stores need {install}: {e}") from e
    return getattr(module, class_name)
