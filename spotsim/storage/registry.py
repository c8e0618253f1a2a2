"""Choose a store backend by URI scheme, importing it only when first used.

Backends that need optional packages are listed here by module path, so
``import spotsim`` stays cheap and a missing package becomes one clear line
naming the package or extra to install.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from spotsim.errors import InvalidURI, MissingDependency
from spotsim.storage.base import Store

# scheme -> (module, class, what to install if the module's imports fail)
KNOWN_BACKENDS: dict[str, tuple[str, str, str]] = {
    "file": ("spotsim.storage.local", "FileStore", "spotsim"),
    "gs": ("spotsim.storage.gcs", "GCSStore", "google-cloud-storage (pip install 'spotsim')"),
}


def open_store(uri: str, **options: object) -> Store:
    """Open the store named by ``uri`` (``file:///abs/dir`` or ``gs://bucket/prefix``).

    ``options`` go to the backend's ``from_uri`` (e.g. ``endpoint=`` or
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
    module_name, class_name, install = KNOWN_BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MissingDependency(f"{scheme}:// stores need {install}: {e}") from e
    backend: type[Store] = getattr(module, class_name)
    return backend.from_uri(uri, **options)  # type: ignore[attr-defined]
