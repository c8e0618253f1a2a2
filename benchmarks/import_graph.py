"""spotsim's import graph between its parts, read from the source with ``ast``; writes ``reports/import_graph.md``.

A part is a subpackage (``spotsim.harness.runner`` belongs to ``harness``), a top-level module (``cli``,
``api``, ``events``, ``clock``…) or ``spotsim`` itself, the package's public surface in ``__init__.py``.
Every import counts: at module level, inside functions (the lazy imports that keep ``import spotsim``
light) and under ``if TYPE_CHECKING:``, since each is a dependency a reader has to know about. Relative
imports are resolved against the importing module, and a name imported from a package's ``__init__`` is
traced to the module it re-exports. ``tests/test_architecture.py`` asserts the layering on the same graph.

    python benchmarks/import_graph.py [--out reports/import_graph.md]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "spotsim"


@dataclass(frozen=True)
class SourceModule:
    name: str  # dotted, as imported
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass
class ImportGraph:
    """Edges between parts, each with the import statements (path, line) that make it."""

    edges: dict[tuple[str, str], set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))

    @property
    def parts(self) -> list[str]:
        return sorted({part for edge in self.edges for part in edge})

    def imports(self, part: str) -> set[str]:
        return {target for source, target in self.edges if source == part}

    def cycles(self) -> list[list[str]]:
        """The parts that import one another in a circle: strongly connected components of two or more."""
        return [sorted(c) for c in _strongly_connected(self.parts, self.imports) if len(c) > 1]


def read_modules(package_dir: Path) -> dict[str, SourceModule]:
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = SourceModule(name, path, ast.parse(path.read_text(), filename=str(path)))
    return modules


def part_of(module: str) -> str | None:
    """``spotsim.harness.runner`` → ``harness``; ``spotsim`` → ``spotsim``; a module outside spotsim → None."""
    names = module.split(".")
    if names[0] != PACKAGE:
        return None
    return names[1] if len(names) > 1 else PACKAGE


def import_graph(package_dir: Path = REPO_ROOT / PACKAGE) -> ImportGraph:
    modules = read_modules(package_dir)
    exports = {m.name: _reexports(m, modules) for m in modules.values() if m.is_package}
    graph = ImportGraph()
    for module in modules.values():
        source = part_of(module.name)
        assert source is not None  # every module read is one of spotsim's own
        for target_module, line in _imports(module, modules, exports):
            target = part_of(target_module)
            if target is not None and target != source:
                graph.edges[source, target].add((str(module.path.relative_to(package_dir.parent)), line))
    return graph


def _imports(
    module: SourceModule, modules: dict[str, SourceModule], exports: dict[str, dict[str, str]]
) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in ``module``."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            for alias in node.names:
                yield _imported_from(base, alias.name, modules, exports), node.lineno


def _absolute(node: ast.ImportFrom, module: SourceModule) -> str:
    """The module a ``from … import`` reads from, with a relative one resolved against ``module``."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".")
    if not module.is_package:
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_from(base: str, name: str, modules: dict[str, SourceModule], exports: dict[str, dict[str, str]]) -> str:
    """``from base import name``: the submodule ``base.name``, the module a package re-exports ``name`` from,
    or ``base`` itself."""
    if f"{base}.{name}" in modules:
        return f"{base}.{name}"
    return exports.get(base, {}).get(name, base)


def _reexports(package: SourceModule, modules: dict[str, SourceModule]) -> dict[str, str]:
    """Name → module, for each name a package's ``__init__`` imports from another of spotsim's modules."""
    names = {}
    for node in ast.walk(package.tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                names[alias.asname or alias.name] = _imported_from(base, alias.name, modules, exports={})
    return names


def _strongly_connected(nodes: list[str], successors) -> list[list[str]]:
    """Tarjan's algorithm; the graph is a few dozen nodes, so recursion depth is no concern."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(successors(node)):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            components.append(component)

    for node in nodes:
        if node not in index:
            visit(node)
    return components


def markdown(graph: ImportGraph) -> str:
    cycles = graph.cycles()
    lines = [
        "# Import graph between spotsim's parts",
        "",
        "Generated by `python benchmarks/import_graph.py` from the source (every import, at module level, inside",
        "functions and under `TYPE_CHECKING`); `tests/test_architecture.py` asserts the layering on the same graph.",
        "",
        "Cycles: " + ("; ".join(" ↔ ".join(c) for c in cycles) if cycles else "none") + ".",
        "",
        "| from | imports | where |",
        "| --- | --- | --- |",
    ]
    for (source, target), where in sorted(graph.edges.items()):
        lines.append(f"| {source} | {target} | {_where(where)} |")
    return "\n".join(lines) + "\n"


def _where(locations: set[tuple[str, int]], shown: int = 3) -> str:
    first = [f"`{path}:{line}`" for path, line in sorted(locations)[:shown]]
    more = len(locations) - shown
    return ", ".join(first) + (f" and {more} more" if more > 0 else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "import_graph.md")
    args = parser.parse_args()
    graph = import_graph()
    for source, target in sorted(graph.edges):
        print(f"{source} -> {target}")
    cycles = graph.cycles()
    print("cycles: " + ("; ".join(" <-> ".join(c) for c in cycles) if cycles else "none"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(graph))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
