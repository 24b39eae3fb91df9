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
                    "pixels", "steps", "compare", "modelspec"}),
    ("inputs", {"data", "imagesets", "preprocess", "safeload", "gate", "gate.*", "usercode", "model"}),
    ("format table", {"formats", "formats.spec", "formats.kinds"}),
    ("artifacts", {"artifacts"}),
    ("runtimes", {"backends", "backends.*"}),  # every backend file: a new runtime needs no edit here
    ("sources and writers", {"source", "quantize", "formats.*", "describe"}),  # format writers (not the table)
    ("stages", {"plan", "validate", "exportdir", "train", "deploy", "devices", "predict", "score", "score.*", "report",
                "doctor"}),
    ("commands", {"exporter", "verify", "bench", "optimize", "optimize.*"}),
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


# ---------------------------------------------------------------------------------------------
# Runtime and format knowledge lives in backends/ and formats/ (issue 22): a string constant that is a runtime's,
# a format's or a kind's name, or a format's file name, anywhere else in the package (docstrings aside) is
# knowledge outside them: read it from the tables (KINDS, FORMATS, BACKENDS and their constants) instead. JSON keys,
# CLI parameter names and package names are not names of runtimes or formats where they stand.

# Strings that are spelled like a name and are something else, each with what it is:
NOT_NAMES = {
    ("doctor.py", "onnx"): "the onnx package, whose version doctor reports",
    ("doctor.py", "onnxruntime"): "ONNX Runtime's distributions (onnxruntime, onnxruntime-gpu) and its module: "
                                  "doctor's core checks of the core install (flavours, providers)",
    ("environment.py", "onnx"): "a package whose version the fingerprint records",
    ("environment.py", "onnxruntime"): "a package whose version the fingerprint records",
    ("safeload.py", "model.pt"): "a member of torch.export's archive layout (data/sample_inputs/model.pt), not a file "
                                 "mnistkit writes",
}


# Calls whose strings name packages or CLI parameters, not runtimes or formats ("onnxruntime" the distribution,
# `checkpoint` the command's argument).
NOT_NAME_CALLS = {"library_versions", "distribution_version", "import_module", "find_spec", "require", "argument"}


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def names_outside_backends_and_formats() -> dict[str, dict[str, int]]:
    from collections import Counter

    from mnistkit.backends import BACKENDS
    from mnistkit.formats import FORMATS, KINDS

    names = set(BACKENDS) | set(FORMATS) | set(KINDS) | {n for f in FORMATS.values() for n in f.files}
    found: dict[str, Counter] = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG).as_posix()
        if rel.startswith(("backends/", "formats/")):
            continue
        tree = ast.parse(p.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        not_names = set(docstrings)  # constants that are not a runtime's or format's name where they stand:
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):  # a JSON key ({"checkpoint": path})
                not_names |= {id(k) for k in node.keys if k is not None}
            elif isinstance(node, ast.Call) and _callee(node) in NOT_NAME_CALLS:  # a package, a CLI parameter
                not_names |= {id(a) for a in ast.walk(node) if isinstance(a, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in not_names:
                found.setdefault(rel, Counter())[node.value] += 1
    return {rel: dict(c) for rel, c in found.items()}


def test_no_runtime_or_format_name_outside_backends_and_formats():
    found = names_outside_backends_and_formats()
    outside = {rel: names for rel, names in ((rel, {n: c for n, c in names.items() if (rel, n) not in NOT_NAMES})
                                             for rel, names in found.items()) if names}
    assert not outside, f"runtime or format names outside backends/ and formats/ (read them from the tables): {outside}"
    stale = [site for site in NOT_NAMES if site[1] not in found.get(site[0], {})]
    assert not stale, f"NOT_NAMES lists strings no longer there: {stale}"


def test_the_name_scan_sees_constants_and_no_new_runtime_is_outside():
    """The scan sees string constants, not docstrings: the new runtimes' names are in backends/ and formats/ only."""
    found = names_outside_backends_and_formats()
    assert found and not any(n in names for names in found.values() for n in ("ncnn", "mnn", "mnn-int8"))
