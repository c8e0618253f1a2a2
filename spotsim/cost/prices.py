"""The price table: on-demand and spot USD per hour per machine, with where each figure came from.

The table ships as ``prices.csv`` beside this module (columns ``machine``,
``provider``, ``description``, ``on_demand_usd_per_hour``, ``spot_usd_per_hour``,
``source``, ``date``); ``--prices FILE`` replaces it with the user's own.
Spot prices move; every figure carries its source and date so a report says
which prices it used. A machine may be a sum of rows: ``gcp-n1-standard-8+gcp-t4``
is the host VM plus one attached GPU, billed together.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from spotsim.errors import InvalidOption, UnknownMachine

DEFAULT_PRICES = Path(__file__).with_name("prices.csv")
DEFAULT_MACHINE = "gcp-n1-standard-8+gcp-t4"
COLUMNS = ("machine", "provider", "description", "on_demand_usd_per_hour", "spot_usd_per_hour", "source", "date")


@dataclass(frozen=True)
class Machine:
    name: str
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float
    sources: tuple[str, ...]


class PriceTable:
    def __init__(self, rows: dict[str, dict[str, str]], path: Path) -> None:
        self.rows, self.path = rows, path

    def machine(self, name: str) -> Machine:
        """The machine ``name``, or the sum of ``a+b`` rows (a host and its GPUs)."""
        parts = [p.strip() for p in name.split("+")]
        unknown = [p for p in parts if p not in self.rows]
        if unknown or not name.strip():
            raise UnknownMachine(
                f"unknown machine {', '.join(unknown) or repr(name)} in {self.path.name}; "
                f"known: {', '.join(sorted(self.rows))}"
            )
        rows = [self.rows[p] for p in parts]
        return Machine(
            name,
            sum(float(r["on_demand_usd_per_hour"]) for r in rows),
            sum(float(r["spot_usd_per_hour"]) for r in rows),
            tuple(f"{r['machine']}: {r['source']} ({r['date']})" for r in rows),
        )


def load_prices(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """Read and check a price table (the shipped one by default).

    Raises:
        InvalidOption: unreadable file, missing columns, or a price that is not a number ≥ 0.
    """
    path = Path(path) if path else DEFAULT_PRICES
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidOption(f"price table {path} lacks column(s) {', '.join(missing)}")
            rows = {row["machine"].strip(): row for row in reader}
    except OSError as e:
        raise InvalidOption(f"cannot read price table {path}: {e.strerror or e}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise InvalidOption(f"price table {path} is not a CSV file: {e}") from None
    for name, row in rows.items():
        for column in ("on_demand_usd_per_hour", "spot_usd_per_hour"):
            try:
                value = float(row[column])
            except (TypeError, ValueError):
                value = math.nan
            if not (math.isfinite(value) and value >= 0):
                raise InvalidOption(f"price table {path}: {column} of {name} is {row[column]!r}, not a price")
    if not rows:
        raise InvalidOption(f"price table {path} has no machines")
    return PriceTable(rows, path)
