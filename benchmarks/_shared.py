"""What the size-sweeping benchmarks share: the repeat rule, printing the machine facts, and
writing the four report files (raw CSV, summary CSV, facts JSON, plot) under one stem."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
FEWER_REPEATS_FROM_MIB = 1024  # the largest sizes get one repeat less: each takes minutes


def repeats_for(size_mib: int, repeats: int) -> int:
    return max(1, repeats - 1) if size_mib >= FEWER_REPEATS_FROM_MIB else repeats


def print_facts(facts: dict) -> None:
    for name, value in facts.items():
        print(f"{name}: {value}")
    print(flush=True)


def write_reports(
    stem: str,
    results: pd.DataFrame,
    summary: pd.DataFrame,
    facts: dict,
    out: Path,
    plot: Callable[[pd.DataFrame, dict, Path], None],
    *,
    floats: tuple[str, str],
) -> list[Path]:
    """``{stem}.csv``, ``{stem}_summary.csv``, ``{stem}_env.json`` and ``{stem}.png``; ``floats`` are the
    CSV float formats of the raw results and the summary."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}{suffix}" for suffix in (".csv", "_summary.csv", "_env.json", ".png")]
    results.to_csv(paths[0], index=False, float_format=floats[0])
    summary.to_csv(paths[1], index=False, float_format=floats[1])
    paths[2].write_text(json.dumps(facts, indent=2) + "\n")
    plot(results, facts, paths[3])
    for path in paths:
        print(f"wrote {path}")
    return paths
