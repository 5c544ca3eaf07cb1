"""The package's modules import one another without circles.

The import graph is built from the sources with ``ast``: every ``import``
and ``from ... import`` of an assocgan module counts, at module level and
inside functions alike, relative imports resolved, and ``from .x import y``
where ``y`` is a submodule counts as importing that submodule.  A module
depends on the modules it names, not on its parent packages (a package's
``__init__`` is only an edge where it is named itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "assocgan"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (packages as their name)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = (PACKAGE,) + path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute dotted name a ``from`` import of ``level`` dots names."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = _resolve(module, is_package, node.level, node.module)
                subs = [f"{origin}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules]
                if len(targets) < len(subs):
                    targets.append(origin)
            for target in targets:
                if target in modules and target != module:
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of imports as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "assocgan.train" in graph
    assert "assocgan.errors" in graph["assocgan.config"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_board_and_provenance_sit_below_the_run():
    """TensorBoard streams and provenance serve runner.py and the command line: neither reaches up to them."""
    graph = import_graph()
    for part in ("assocgan.board", "assocgan.provenance"):
        assert not _reachable(graph, part) & {"assocgan.runner", "assocgan.cli", "assocgan.train"}, part
