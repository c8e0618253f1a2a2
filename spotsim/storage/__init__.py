"""Crash-safe object stores chosen by URI scheme.

``open_store("file:///abs/dir")`` and ``open_store("gs://bucket/prefix")`` return
a :class:`Store`; :func:`register_backend` adds a scheme; :mod:`spotsim.storage.emulator`
runs the embedded GCS emulator.
"""

from spotsim.storage.base import Store, check_key
from spotsim.storage.registry import KNOWN_BACKENDS, open_store, register_backend

__all__ = ["KNOWN_BACKENDS", "Store", "check_key", "open_store", "register_backend"]
