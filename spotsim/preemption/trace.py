"""Recorded spot traces: the JSON format of the public spot-traces data set.

A trace file is ``{"metadata": {"gap_seconds": G}, "data": [v, …], "prices": [...]?}``
with one value per tick of G seconds. spotsim reads a value > 0 as "a spot VM
was running (obtainable) in this tick" and 0 as "none: preempted, or no
capacity". That reading fits the recorded files: the GCP files are almost all
1 (a VM that stayed up for 45 hours), which makes no sense read as
"preempted". Some analyses read the files the other way round; ``invert=True``
(``--trace-invert``) swaps the meaning.

Replay: the run of 1s starting at the first available tick is attempt 0's
uptime; the run of 0s after it is the wait for capacity before attempt 1's VM
exists; and so on. A trace that ends while up leaves the last attempt running.

Recorded traces ship in :data:`TRACES_DIR` (source and license in its README);
``trace:NAME`` finds one by its path there without ``.json``, or by any unique
tail of it: ``aws-04-22-2023/us-east-1c_v100_1`` or ``us-east-1c_v100_1``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotsim.errors import InvalidTrace

TRACES_DIR = Path(__file__).parent / "traces"


@dataclass(frozen=True)
class Trace:
    gap_s: float
    up: np.ndarray  # bool per tick
    source: str

    def lifetimes(self) -> list[tuple[float | None, float]]:
        """(uptime_s, capacity_wait_s) per attempt, in replay order; the last uptime may be None."""
        runs = _runs(self.up)
        while runs and not runs[0][0]:
            runs.pop(0)  # the replay starts when a VM is first obtainable
        lifetimes = []
        for i in range(0, len(runs), 2):
            _, up_ticks = runs[i]
            ends_up = i + 1 >= len(runs)
            wait_ticks = 0 if ends_up else runs[i + 1][1]
            lifetimes.append((None if ends_up else up_ticks * self.gap_s, wait_ticks * self.gap_s))
        return lifetimes

    @property
    def hours(self) -> float:
        return len(self.up) * self.gap_s / 3600


def shipped_traces() -> dict[str, Path]:
    """The recorded traces that ship with spotsim: name (path under :data:`TRACES_DIR`, no ``.json``) → file."""
    return {
        path.relative_to(TRACES_DIR).with_suffix("").as_posix(): path for path in sorted(TRACES_DIR.rglob("*.json"))
    }


def find_trace(name: str | Path) -> tuple[Path, str]:
    """The file a ``trace:`` argument means, and the name to report it by.

    An existing file wins; otherwise a shipped trace whose name is ``name`` or ends with ``/name``.
    Anything else comes back as a path, for :func:`load_trace` to report as unreadable.

    Raises:
        InvalidTrace: ``name`` is the tail of several shipped traces.
    """
    path = Path(name)
    if path.is_file():
        return path, str(name)
    wanted = str(name).removesuffix(".json")
    shipped = shipped_traces()
    matches = [n for n in shipped if n == wanted or n.endswith(f"/{wanted}")]
    if len(matches) > 1:
        raise InvalidTrace(
            f"trace name {wanted!r} fits several shipped traces ({', '.join(matches)}): name its folder too"
        )
    if matches:
        return shipped[matches[0]], matches[0]
    return path, str(name)


def load_trace(path: str | Path, *, invert: bool = False) -> Trace:
    """Read and check a trace file, given by path or by the name of a shipped trace (:func:`find_trace`).

    Raises:
        InvalidTrace: unreadable, not JSON, not in the format above, or an ambiguous name.
    """
    path, source = find_trace(path)
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise InvalidTrace(f"cannot read trace {path}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidTrace(f"trace {path} is not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict) or not isinstance(doc.get("data"), list):
        raise InvalidTrace(f"trace {path} needs a 'metadata' object and a 'data' list")
    gap = doc["metadata"].get("gap_seconds")
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not math.isfinite(gap) or gap <= 0:
        raise InvalidTrace(f"trace {path}: metadata.gap_seconds must be a positive number, got {gap!r}")
    data = doc["data"]
    if not data or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in data):
        raise InvalidTrace(f"trace {path}: data must be a non-empty list of counts ≥ 0")
    up = np.asarray(data, dtype=float) > 0
    if invert:
        up = ~up
    if not up.any():
        raise InvalidTrace(f"trace {path} never has a VM available{' (inverted)' if invert else ''}")
    return Trace(float(gap), up, source)


def _runs(values: np.ndarray) -> list[tuple[bool, int]]:
    """Run-length encoding: [(value, length), …]."""
    edges = np.flatnonzero(np.diff(values.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [len(values)]]))
    return [(bool(values[s]), int(n)) for s, n in zip(starts, lengths, strict=True)]
