"""The layering between spotsim's parts, asserted on the import graph that ``benchmarks/import_graph.py`` reads.

The harness and the CLI sit on top: the libraries a training job or a report uses (checkpoint, storage,
sim, report) never reach up to them, and reports only draw what they are given, so they do not run the
simulator either.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load_import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", REPO_ROOT / "benchmarks" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


import_graph = _load_import_graph()

# Each part, and the parts it must never import.
FORBIDDEN = {
    "sim": {"harness", "cli"},
    "report": {"harness", "cli", "sim"},
    "checkpoint": {"harness", "cli"},
    "storage": {"harness", "cli"},
}


@pytest.fixture(scope="module")
def graph():
    return import_graph.import_graph()


def test_no_cycle_between_parts(graph):
    assert graph.cycles() == [], _cycle_evidence(graph)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_lower_layers_never_import_the_layers_above(graph, part):
    reached = graph.imports(part) & FORBIDDEN[part]
    assert not reached, "\n".join(f"{part} -> {target}: {_where(graph.edges[part, target])}" for target in reached)


def test_the_graph_reads_every_kind_of_import(tmp_path):
    package = tmp_path / "spotsim"
    _write(package / "__init__.py", "from spotsim.core.thing import Thing\n__version__ = '1'\n")
    _write(package / "core" / "__init__.py", "from .thing import Thing\n")
    _write(package / "core" / "thing.py", "def f():\n    from ..top import g\n\nclass Thing: ...\n")
    _write(package / "top.py", "import os\nfrom spotsim import Thing\nfrom . import other\n")
    _write(package / "other.py", "from spotsim import __version__\n")
    graph = import_graph.import_graph(package)
    assert set(graph.edges) == {
        ("spotsim", "core"),  # a re-export
        ("core", "top"),  # relative, inside a function
        ("top", "core"),  # a name traced through the package's __init__ to its module
        ("top", "other"),  # `from . import module`
        ("other", "spotsim"),  # a name the package itself defines
    }
    assert graph.cycles() == [["core", "other", "spotsim", "top"]]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _cycle_evidence(graph) -> str:
    """One line per edge inside a cycle, saying where it is made."""
    inside = [(s, t) for cycle in graph.cycles() for s in cycle for t in cycle if (s, t) in graph.edges]
    return "\n".join(f"{s} -> {t}: {_where(graph.edges[s, t])}" for s, t in inside)


def _where(locations) -> str:
    return ", ".join(f"{path}:{line}" for path, line in sorted(locations))
