"""The package's import graph has no cycle, counting imports inside functions too (they still couple)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mnistkit"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG).with_suffix("").parts
        name = ".".join(("mnistkit", *parts)).removesuffix(".__init__")
        modules[name] = p
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnistkit"):
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import quantize` imports the submodule, not the package
                sub = f"{target}.{alias.name}"
                candidate = sub if sub in modules else target
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert "mnistkit.bench" in graph and graph["mnistkit.bench"], "the graph reader found no imports"
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# The package's layers, bottom to top (the README's architecture section says the same in prose). A module
# imports only from its own layer or below; within a layer the graph is acyclic (test above).
LAYERS = [
    ("foundation", {"_version", "errors", "signals", "capture", "console", "fileio", "environment", "tables", "onnx_compat",
                    "pixels", "steps", "compare"}),
    ("inputs", {"data", "imagesets", "preprocess", "safeload", "gate", "gate.*", "usercode", "model"}),
    ("format table", {"formats", "formats.spec", "formats.kinds"}),
    ("artifacts", {"artifacts"}),
    ("runtimes", {"backends", "backends.*"}),  # every backend file: a new runtime needs no edit here
    ("sources and writers", {"source", "quantize", "formats.*", "describe"}),  # format writers (not the table)
    ("stages", {"plan", "validate", "exportdir", "train", "deploy", "devices", "predict", "score", "report", "doctor"}),
    ("commands", {"exporter", "verify", "bench", "optimize"}),
    ("presentation", {"ui", "demo", "serve"}),
    ("shell", {"cli", "__main__", ""}),  # "" is the package itself (mnistkit.export)
]


def layer_of(modules) -> dict[str, int]:
    """Each module's layer: its own entry, else its package's "pkg.*" entry."""
    exact = {("mnistkit." + m).rstrip("."): i for i, (_, mods) in enumerate(LAYERS) for m in mods if "*" not in m}
    packages = {"mnistkit." + m[:-2]: i for i, (_, mods) in enumerate(LAYERS) for m in mods if m.endswith(".*")}
    out = {}
    for m in modules:
        if m in exact:
            out[m] = exact[m]
        elif m.rsplit(".", 1)[0] in packages:
            out[m] = packages[m.rsplit(".", 1)[0]]
    return out


def test_every_module_has_a_layer():
    graph = import_graph()
    layer = layer_of(graph)
    missing = sorted(set(graph) - set(layer))
    assert not missing, f"modules without a layer in LAYERS: {missing}"
    named = {("mnistkit." + m).rstrip(".") for _, mods in LAYERS for m in mods if "*" not in m}
    stale = sorted(named - set(graph))
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def upward_imports(graph: dict[str, set[str]], layer: dict[str, int]) -> list[tuple[str, str]]:
    """(module, what it imports) for every import of a higher layer."""
    return [(m, t) for m, targets in sorted(graph.items()) for t in sorted(targets) if layer[t] > layer[m]]


def test_no_upward_import():
    graph = import_graph()
    layer = layer_of(graph)
    upward = [f"{m} ({LAYERS[layer[m]][0]}) imports {t} ({LAYERS[layer[t]][0]})" for m, t in upward_imports(graph, layer)]
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import():
    assert upward_imports({"a": {"b"}, "b": set()}, {"a": 0, "b": 1}) == [("a", "b")]
    assert upward_imports({"a": set(), "b": {"a"}}, {"a": 0, "b": 1}) == []
