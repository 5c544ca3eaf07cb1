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
                return stack[stack.index(nxt) :] + [nxt]
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


# The package's layers, lowest first. A module may import modules of its own layer and of the layers below,
# never of a layer above (docs/architecture.md draws them). A new module is placed here by its first name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "errors",
            "options",
            "registry",
            "rng",
            "io",
            "losses",
            "memory",
            "feed",
            "inference",
            "metrics",
            "results",
            "devices",
            "distributed",
            "imaging",
            "deepmetrics",
        ),
    ),
    ("networks and data", ("nets", "data.degradations", "data.folders", "data.photos", "data.tasks", "data.tones", "data", "fisher")),
    ("configuration", ("config",)),
    ("methods and benchmarks", ("methods", "data.benchmarks")),
    ("training and evaluation", ("evaluate", "router", "train", "runfolder", "checkpoints", "board", "provenance", "samples", "")),
    ("reports", ("report", "perceptual")),
    ("runs", ("runner", "translate")),
    ("studies", ("seeds", "jobs", "studies")),
    ("command line", ("cli", "__main__")),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the module's layer: the entry naming it or its nearest parent package ("" is the
    package itself, ``assocgan``, whose public functions load trained generators)."""
    name = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    best, found = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (prefix and name.startswith(prefix + ".")):
                if len(prefix) > best:
                    best, found = len(prefix), i
    assert found is not None, f"{module}: in no layer of tests/test_architecture.py's LAYERS; place it there"
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of the graph from a module to one of a higher layer, as readable lines."""
    found = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        for target in sorted(targets):
            if layer_of(target) > here:
                found.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    return found


def test_every_module_is_in_a_layer_and_imports_none_above_it():
    upward = upward_imports(import_graph())
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    graph = import_graph()
    graph["assocgan.metrics"] = graph["assocgan.metrics"] | {"assocgan.runner"}
    assert upward_imports(graph) == ["assocgan.metrics (foundations) imports assocgan.runner (runs)"]
    assert layer_of("assocgan.methods.assoc") == layer_of("assocgan.methods") > layer_of("assocgan.config")
