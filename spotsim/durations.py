"""Durations as people type them (``90``, ``90s``, ``15m``, ``2h``), for every option that takes one.

Neutral ground: the harness, the simulator and the CLI all read durations, and none should
import another just for this.
"""

from __future__ import annotations

import math

from spotsim.errors import InvalidOption

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m`` or ``2h``.

    Args:
        text: the value as typed.
        what: the option's name, for the error message (``--grace``).

    Raises:
        InvalidOption: not a number with an optional unit, or not finite.
    """
    text = text.strip()
    factor = UNITS.get(text[-1:])
    number = text[:-1] if factor else text
    try:
        value = float(number) * (factor or 1.0)
    except ValueError:
        raise InvalidOption(f"{what} {text!r} is not a duration (e.g. 90, 90s, 15m, 2h)") from None
    if not math.isfinite(value):
        raise InvalidOption(f"{what} {text!r} is not finite")
    return value


def parse_durations(text: str, what: str) -> tuple[float, ...]:
    """Seconds from a comma-separated list such as ``5m,15m,1h``; at least one.

    Raises:
        InvalidOption: an empty list, or an item that is not a duration.
    """
    values = tuple(parse_duration(item, what) for item in text.split(",") if item.strip())
    if not values:
        raise InvalidOption(f"{what} needs one or more durations, got {text!r}")
    return values
