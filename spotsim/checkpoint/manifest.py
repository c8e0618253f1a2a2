"""The manifest: the commit record that makes a checkpoint exist.

A checkpoint at step S is the objects under ``step-<S>/`` plus
``step-<S>/MANIFEST.json``, written last with ``create_if_absent``. The
manifest lists every object with its size and crc32c; without a valid
manifest a checkpoint does not exist, whatever else lies under its prefix.
Manifests come from a bucket and are untrusted: :meth:`Manifest.parse`
checks every field. A checkpoint that several ranks wrote together also
records their number, ``world_size`` (absent from single-process manifests).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from spotsim.errors import CorruptCheckpoint

FORMAT = "spotsim-checkpoint/1"
MANIFEST_NAME = "MANIFEST.json"
KINDS = ("periodic", "emergency", "final", "manual")
LAYOUTS = ("directory", "archive")
_STEP_DIR = re.compile(r"^step-(\d{12})/")
_OBJECT_NAME = re.compile(r"^[0-9a-f]{12}/[A-Za-z0-9._-]+$")
_CRC = re.compile(r"^[A-Za-z0-9+/]{6}==$")


def step_prefix(step: int) -> str:
    """Where the objects of the checkpoint at ``step`` live (zero-padded: lexical order is step order)."""
    return f"step-{step:012d}/"


def manifest_key(step: int) -> str:
    return step_prefix(step) + MANIFEST_NAME


def step_of(key: str) -> int | None:
    """The step a store key belongs to, or None for keys outside any checkpoint."""
    match = _STEP_DIR.match(key)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ObjectEntry:
    size: int
    crc32c: str


@dataclass(frozen=True)
class Manifest:
    step: int
    kind: str
    created: float
    framework: str
    layout: str
    spotsim_version: str
    objects: dict[str, ObjectEntry] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    world_size: int | None = None  # the ranks that wrote it; None: one process (the field is then left out)

    def to_json(self) -> bytes:
        doc = asdict(self)
        if self.world_size is None:  # single-process manifests stay as they always were
            del doc["world_size"]
        return json.dumps({"format": FORMAT, **doc}, indent=1, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def parse(cls, raw: bytes, *, expected_step: int) -> Manifest:
        """Validate and decode a manifest read from a store.

        Raises:
            CorruptCheckpoint: malformed JSON, wrong format, a field of the wrong
                type, an object name that could point elsewhere, or a step that
                differs from the one its key says.
        """
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptCheckpoint(f"manifest of step {expected_step} is not valid JSON: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CorruptCheckpoint(f"manifest of step {expected_step} is not a {FORMAT} manifest")
        try:
            manifest = cls(
                step=_typed(doc["step"], int),
                kind=_choice(doc["kind"], KINDS),
                created=float(_typed(doc["created"], (int, float))),
                framework=_typed(doc["framework"], str),
                layout=_choice(doc["layout"], LAYOUTS),
                spotsim_version=_typed(doc["spotsim_version"], str),
                objects={object_name(k): object_entry(v) for k, v in _typed(doc["objects"], dict).items()},
                metadata=_typed(doc.get("metadata", {}), dict),
                world_size=_world_size(doc["world_size"]) if "world_size" in doc else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptCheckpoint(f"manifest of step {expected_step} is malformed: {e}") from e
        if manifest.step != expected_step:
            raise CorruptCheckpoint(f"manifest under step {expected_step} claims step {manifest.step}")
        if not manifest.objects:
            raise CorruptCheckpoint(f"manifest of step {expected_step} lists no objects")
        return manifest


def _typed(value, types):
    if not isinstance(value, types) or (types is int and isinstance(value, bool)):
        raise TypeError(f"unexpected value {str(value)[:40]!r}")
    return value


def _choice(value, choices):
    if value not in choices:
        raise ValueError(f"{value!r} is not one of {choices}")
    return value


def _world_size(value) -> int:
    if _typed(value, int) < 1:
        raise ValueError(f"world_size {value} is not a positive number of ranks")
    return value


def object_name(name: str) -> str:
    """``name`` if it is a checkpoint object name (``<save id>/<file>``), else ValueError."""
    if not isinstance(name, str) or not _OBJECT_NAME.match(name) or ".." in name:
        raise ValueError(f"object name {str(name)[:60]!r} is not a checkpoint object name")
    return name


def object_entry(value) -> ObjectEntry:
    """A ``{"size", "crc32c"}`` entry read from a store, checked; ValueError or TypeError if malformed."""
    size, crc = _typed(value, dict)["size"], value["crc32c"]
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or not isinstance(crc, str)
        or not _CRC.match(crc)
    ):
        raise ValueError(f"bad object entry {str(value)[:60]}")
    return ObjectEntry(size, crc)
